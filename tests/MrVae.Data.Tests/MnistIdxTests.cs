using System.IO.Compression;
using MrVae.Data;

namespace MrVae.Data.Tests;

public class MnistIdxTests
{
    [Fact]
    public void ReadsRealMnistWithKnownLabelCounts()
    {
        Assert.Equal(60000, TestData.Train.Count);
        Assert.Equal(10000, TestData.Test.Count);
        Assert.Equal(6742, TestData.Train.Labels.Count(l => l == 1));
        Assert.Equal(1135, TestData.Test.Labels.Count(l => l == 1));
    }

    [Fact]
    public void RawAndGzipFilesReadTheSame()
    {
        var dir = RawCopy();
        Assert.False(File.Exists(Path.Combine(dir, "t10k-images-idx3-ubyte.gz")));
        var fromRaw = MnistIdx.Load(dir, train: false);
        Assert.Equal(TestData.Test.Images, fromRaw.Images);
        Assert.Equal(TestData.Test.Labels, fromRaw.Labels);
    }

    static string RawCopy()
    {
        var dir = TestData.TempDir();
        foreach (var name in new[] { "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte" })
        {
            using var gz = new GZipStream(File.OpenRead(Path.Combine(TestData.MnistDir, name + ".gz")), CompressionMode.Decompress);
            using var raw = File.Create(Path.Combine(dir, name));
            gz.CopyTo(raw);
        }
        return dir;
    }

    [Fact]
    public void WrongMagicIsRejectedNamingTheFile()
    {
        var dir = RawCopy();
        var path = Path.Combine(dir, "t10k-images-idx3-ubyte");
        var bytes = File.ReadAllBytes(path); bytes[3] = 0x01; File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<DataFormatException>(() => MnistIdx.Load(dir, train: false));
        Assert.Contains("magic", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void TruncatedImagesAreRejected()
    {
        var dir = RawCopy();
        var path = Path.Combine(dir, "t10k-images-idx3-ubyte");
        var bytes = File.ReadAllBytes(path); File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        var e = Assert.Throws<DataFormatException>(() => MnistIdx.Load(dir, train: false));
        Assert.Contains("truncated", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void TruncatedGzipIsRejected()
    {
        var dir = TestData.TempDir();
        foreach (var name in new[] { "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz" })
            File.Copy(Path.Combine(TestData.MnistDir, name), Path.Combine(dir, name));
        var path = Path.Combine(dir, "t10k-images-idx3-ubyte.gz");
        var bytes = File.ReadAllBytes(path); File.WriteAllBytes(path, bytes[..(bytes.Length / 3)]);
        var e = Assert.Throws<DataFormatException>(() => MnistIdx.Load(dir, train: false));
        Assert.Contains(path, e.Message);
        Assert.Contains("mrvae data mnist", e.Message);
    }

    [Fact]
    public void WrongImageDimensionsAreRejected()
    {
        var dir = RawCopy();
        var path = Path.Combine(dir, "t10k-images-idx3-ubyte");
        var bytes = File.ReadAllBytes(path); bytes[11] = 32; File.WriteAllBytes(path, bytes);   // rows = 32
        var e = Assert.Throws<DataFormatException>(() => MnistIdx.Load(dir, train: false));
        Assert.Contains("32x28", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void CountMismatchBetweenImagesAndLabelsIsRejected()
    {
        var dir = RawCopy();
        var path = Path.Combine(dir, "t10k-labels-idx1-ubyte");
        var bytes = File.ReadAllBytes(path);
        bytes[6] = 0; bytes[7] = 100;                 // header now claims fewer labels
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<DataFormatException>(() => MnistIdx.Load(dir, train: false));
        Assert.Contains("do not belong together", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void MissingFilesNameTheFix()
    {
        var e = Assert.Throws<DataFormatException>(() => MnistIdx.Load(TestData.TempDir(), train: true));
        Assert.Contains("mrvae data mnist", e.Message);
        Assert.Contains("train-images-idx3-ubyte", e.Message);
    }
}
