using MrVae.Data;
using MrVae.Model.Numerics;
using static TorchSharp.torch;

namespace MrVae.Model.Training;

/// <summary>One modality's samples of one split in memory, read by sample id.</summary>
public abstract class ModalityShard
{
    public abstract int Count { get; }
    /// <summary>What the shard is, for errors (its file).</summary>
    public string Source { get; init; } = "the shard";
    long[]? keys;
    Dictionary<long, int>? rowOf;

    /// <summary>The key of every row (see <see cref="SampleIds.Key"/>); null when rows are addressed by position.</summary>
    public long[]? Keys => keys;

    /// <summary>Every row's key: <see cref="Keys"/>, or the positions 0..Count−1.</summary>
    public long[] KeyList() => keys ?? Enumerable.Range(0, Count).Select(i => (long)i).ToArray();

    /// <summary>
    /// Addresses rows by key from now on: the key of each row's sample id (<paramref name="ids"/>, null: the
    /// positions), keyed with <paramref name="secret"/> when there is one. Without both, rows stay addressed by position.
    /// </summary>
    public ModalityShard WithIds(long[]? ids, byte[]? secret)
    {
        if (ids is null && secret is null) { keys = null; rowOf = null; return this; }
        if (ids is not null && ids.Length != Count)
            throw new UserInputException($"{Source}: {ids.Length} sample ids for {Count} samples; re-run `mrvae data make` for this directory");
        var k = new long[Count];
        for (int i = 0; i < Count; i++) k[i] = SampleIds.Key(ids?[i] ?? i, secret);
        var map = new Dictionary<long, int>(Count);
        for (int i = 0; i < Count; i++)
            if (!map.TryAdd(k[i], i)) throw new UserInputException($"{Source}: sample id {k[i]} appears twice; re-run `mrvae data make` for this directory");
        keys = k; rowOf = map;
        return this;
    }

    /// <summary>The row of sample <paramref name="key"/>; asked for a sample it does not hold, the shard fails loudly.</summary>
    protected int Row(long key)
    {
        if (rowOf is not null)
            return rowOf.TryGetValue(key, out int row) ? row : throw new MissingSampleException(Source, key, Count);
        if (key < 0 || key >= Count) throw new MissingSampleException(Source, key, Count);
        return (int)key;
    }

    /// <summary>The samples at <paramref name="ids"/> as a float tensor, B × (the sample's shape).</summary>
    public abstract Tensor Batch(IReadOnlyList<long> ids, ScalarType dtype = ScalarType.Float32, Device? device = null);

    /// <summary>Reads modality <paramref name="modality"/>'s shard of <paramref name="split"/> from a dataset directory of either kind.</summary>
    public static ModalityShard Load(string dir, string split, int modality)
    {
        string source = $"modality {modality}'s {split} shard ({PolyMnistStore.ModalityPath(dir, split, modality)})";
        ModalityShard shard;
        if (DatasetDirectory.KindOf(dir) == DatasetKind.Vectors)
        {
            var values = VectorStore.LoadModality(dir, split, modality, out int count, out int dim);
            shard = new ModalityVectors(values, count, dim) { Source = source };
        }
        else shard = new ModalityImages(PolyMnistStore.LoadModality(dir, split, modality, out int n), n) { Source = source };
        // The test split is complete and addressed by position; the training split by its ids (keyed with the secret).
        return split == "train" ? shard.WithIds(SampleIds.LoadModality(dir, split, modality), SampleIds.SecretFromEnvironment()) : shard;
    }
}

/// <summary>A node was asked for a sample its shard does not hold: the coordinator's view of its ids is not its data.</summary>
public sealed class MissingSampleException(string source, long key, int count)
    : UserInputException($"{source} does not hold sample {key} (it holds {count} samples): the coordinator asked for a sample this node never reported; its shard changed since it attached, or the nodes use different id secrets ({SampleIds.SecretVariable})")
{
    public long Key { get; } = key;
}

/// <summary>One vector modality in memory: Count × Dim float32 values, row-major.</summary>
public sealed class ModalityVectors : ModalityShard
{
    public float[] Values { get; }
    public int Dim { get; }
    public override int Count { get; }

    public ModalityVectors(float[] values, int count, int dim)
    {
        if (values.Length != (long)count * dim)
            throw new UserInputException($"expected {count} vectors of {dim} values = {(long)count * dim}, got {values.Length}: the shard has the wrong shape");
        Values = values; Count = count; Dim = dim;
    }

    public override Tensor Batch(IReadOnlyList<long> ids, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        var buffer = new float[ids.Count * Dim];
        for (int b = 0; b < ids.Count; b++)
        {
            Array.Copy(Values, (long)Row(ids[b]) * Dim, buffer, (long)b * Dim, Dim);
        }
        var t = ManagedArrays.ToTensor(buffer, [ids.Count, Dim]);
        return dtype == ScalarType.Float32 && device is null ? t : t.to(dtype, device ?? CPU);
    }
}

/// <summary>One modality's images in memory: Count × 3 × 28 × 28 bytes (CHW per image).</summary>
public sealed class ModalityImages : ModalityShard
{
    public const int ImageBytes = 3 * 28 * 28;
    public byte[] Pixels { get; }
    public override int Count { get; }

    public ModalityImages(byte[] pixels, int count)
    {
        if (pixels.Length != (long)count * ImageBytes)
            throw new UserInputException($"expected {count} images of 3x28x28 = {(long)count * ImageBytes} bytes, got {pixels.Length}: the shard has the wrong shape");
        Pixels = pixels; Count = count;
    }

    /// <summary>The images at <paramref name="ids"/> as a float tensor in [0, 1], B × 3 × 28 × 28.</summary>
    public override Tensor Batch(IReadOnlyList<long> ids, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        var buffer = new float[ids.Count * ImageBytes];
        for (int b = 0; b < ids.Count; b++)
        {
            int src = checked(Row(ids[b]) * ImageBytes), dst = b * ImageBytes;
            for (int k = 0; k < ImageBytes; k++) buffer[dst + k] = Pixels[src + k] / 255f;
        }
        var t = ManagedArrays.ToTensor(buffer, [ids.Count, 3, 28, 28]);
        return dtype == ScalarType.Float32 && device is null ? t : t.to(dtype, device ?? CPU);
    }
}

/// <summary>
/// A split's modalities (null where a modality is absent): complete shards of one sample count addressed by position,
/// or shards keyed by sample id (missing modalities per sample), aligned by <see cref="Samples"/>.
/// </summary>
public sealed class MultimodalDataset
{
    public ModalityShard?[] Modalities { get; }
    /// <summary>The samples: the union of the shards' keys.</summary>
    public SampleUniverse Samples { get; }
    public int Count => Samples.Count;

    public MultimodalDataset(ModalityShard?[] modalities)
    {
        Modalities = modalities;
        if (modalities.All(m => m is null)) throw new UserInputException("a dataset needs at least one modality");
        Samples = SampleUniverse.Of(modalities.Select(m => m is null ? null : new ShardKeys(m.Count, m.Keys)).ToArray());
    }

    public bool[] Present => Modalities.Select(m => m is not null).ToArray();

    /// <summary>Reads every modality's shard of a split into memory.</summary>
    public static MultimodalDataset Load(string dir, string split, int modalities)
        => new(Enumerable.Range(0, modalities).Select(j => (ModalityShard?)ModalityShard.Load(dir, split, j)).ToArray());
}
