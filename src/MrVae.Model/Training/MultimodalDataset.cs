using MrVae.Data;
using static TorchSharp.torch;

namespace MrVae.Model.Training;

/// <summary>One modality's samples of one split in memory, read by sample id.</summary>
public abstract class ModalityShard
{
    public abstract int Count { get; }

    /// <summary>The samples at <paramref name="ids"/> as a float tensor, B × (the sample's shape).</summary>
    public abstract Tensor Batch(IReadOnlyList<long> ids, ScalarType dtype = ScalarType.Float32, Device? device = null);

    /// <summary>Reads modality <paramref name="modality"/>'s shard of <paramref name="split"/> from a dataset directory of either kind.</summary>
    public static ModalityShard Load(string dir, string split, int modality)
    {
        if (DatasetDirectory.KindOf(dir) == DatasetKind.Vectors)
        {
            var values = VectorStore.LoadModality(dir, split, modality, out int count, out int dim);
            return new ModalityVectors(values, count, dim);
        }
        return new ModalityImages(PolyMnistStore.LoadModality(dir, split, modality, out int n), n);
    }

    protected static void CheckId(long id, int count)
    {
        if (id < 0 || id >= count) throw new ArgumentOutOfRangeException(nameof(id), $"sample id {id} outside 0..{count - 1}");
    }
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
            CheckId(ids[b], Count);
            Array.Copy(Values, ids[b] * Dim, buffer, (long)b * Dim, Dim);
        }
        var t = tensor(buffer, [ids.Count, Dim]);
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
            long id = ids[b];
            CheckId(id, Count);
            int src = checked((int)(id * ImageBytes)), dst = b * ImageBytes;
            for (int k = 0; k < ImageBytes; k++) buffer[dst + k] = Pixels[src + k] / 255f;
        }
        var t = tensor(buffer, [ids.Count, 3, 28, 28]);
        return dtype == ScalarType.Float32 && device is null ? t : t.to(dtype, device ?? CPU);
    }
}

/// <summary>A split's modalities (null where a modality is absent) with the same sample count.</summary>
public sealed class MultimodalDataset
{
    public ModalityShard?[] Modalities { get; }
    public int Count { get; }

    public MultimodalDataset(ModalityShard?[] modalities)
    {
        Modalities = modalities;
        var counts = modalities.Where(m => m is not null).Select(m => m!.Count).Distinct().ToArray();
        if (counts.Length == 0) throw new UserInputException("a dataset needs at least one modality");
        if (counts.Length > 1) throw new UserInputException($"modalities have different sample counts ({string.Join(", ", counts)}): the shards do not belong to one dataset");
        Count = counts[0];
    }

    public bool[] Present => Modalities.Select(m => m is not null).ToArray();

    /// <summary>Reads every modality's shard of a split into memory.</summary>
    public static MultimodalDataset Load(string dir, string split, int modalities)
        => new(Enumerable.Range(0, modalities).Select(j => (ModalityShard?)ModalityShard.Load(dir, split, j)).ToArray());
}
