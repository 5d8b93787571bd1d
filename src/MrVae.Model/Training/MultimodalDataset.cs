using static TorchSharp.torch;

namespace MrVae.Model.Training;

/// <summary>One modality's images in memory: Count × 3 × 28 × 28 bytes (CHW per image).</summary>
public sealed class ModalityImages
{
    public const int ImageBytes = 3 * 28 * 28;
    public byte[] Pixels { get; }
    public int Count { get; }

    public ModalityImages(byte[] pixels, int count)
    {
        if (pixels.Length != (long)count * ImageBytes)
            throw new ArgumentException($"expected {count} images of 3x28x28 = {(long)count * ImageBytes} bytes, got {pixels.Length}: the shard has the wrong shape");
        Pixels = pixels; Count = count;
    }

    /// <summary>The images at <paramref name="ids"/> as a float tensor in [0, 1], B × 3 × 28 × 28.</summary>
    public Tensor Batch(IReadOnlyList<long> ids, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        var buffer = new float[ids.Count * ImageBytes];
        for (int b = 0; b < ids.Count; b++)
        {
            long id = ids[b];
            if (id < 0 || id >= Count) throw new ArgumentOutOfRangeException(nameof(ids), $"sample id {id} outside 0..{Count - 1}");
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
    public ModalityImages?[] Modalities { get; }
    public int Count { get; }

    public MultimodalDataset(ModalityImages?[] modalities)
    {
        Modalities = modalities;
        var counts = modalities.Where(m => m is not null).Select(m => m!.Count).Distinct().ToArray();
        if (counts.Length == 0) throw new ArgumentException("a dataset needs at least one modality");
        if (counts.Length > 1) throw new ArgumentException($"modalities have different sample counts ({string.Join(", ", counts)}): the shards do not belong to one dataset");
        Count = counts[0];
    }

    public bool[] Present => Modalities.Select(m => m is not null).ToArray();
}
