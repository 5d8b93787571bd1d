using MrVae.Data;

namespace MrVae.Data.Tests;

public sealed class DatasetFingerprintTests : IDisposable
{
    readonly string root = TestData.TempDir();
    public void Dispose() => Directory.Delete(root, recursive: true);

    string Make(string name, PolyMnistSpec spec, int seed, int train = 40, int test = 20)
    {
        string dir = Path.Combine(root, name);
        PolyMnistStore.Save(dir, spec, PolyMnistGenerator.Generate(spec, TestData.Train, train, seed),
            PolyMnistGenerator.Generate(spec, TestData.Test, test, seed, streamOffset: 1));
        return dir;
    }

    [Fact]
    public void SameDataMatchesAndAnotherSeedSizeOrStructureDoesNot()
    {
        var vanilla = PolyMnistSpec.Vanilla();
        var a = DatasetFingerprint.Of(Make("a", vanilla, 1));
        var again = DatasetFingerprint.Of(Make("a-again", vanilla, 1));
        Assert.Equal(a, again);
        Assert.Equal(("polymnist", 40, 20), (a.Spec, a.Train, a.Test));
        Assert.Null(a.Difference(again));

        // Same structure, another seed: other labels and crops, a warning-level difference.
        var seed = DatasetFingerprint.Of(Make("seed", vanilla, 2));
        Assert.Equal(a.SpecSha256, seed.SpecSha256);
        Assert.NotEqual(a.ContentSha256, seed.ContentSha256);
        Assert.False(a.IsDifferentStructure(seed));
        Assert.Contains("another seed", a.Difference(seed));

        // Same seed, more training tuples.
        var larger = DatasetFingerprint.Of(Make("larger", vanilla, 1, train: 50));
        Assert.NotEqual(a.ContentSha256, larger.ContentSha256);
        Assert.Contains("50", a.Difference(larger));

        // Another sharing structure.
        var extended = DatasetFingerprint.Of(Make("ext", PolyMnistSpec.Extended(), 1));
        Assert.True(a.IsDifferentStructure(extended));
        Assert.Contains("polymnist-extended", a.Difference(extended));
    }

    [Fact]
    public void ImagesBeyondTheLabelsChangeTheContentHash()
    {
        string dir = Make("pixels", PolyMnistSpec.Vanilla(), 3);
        var before = DatasetFingerprint.Of(dir);
        // Flip one pixel of modality 2's first test image: same labels and counts, other images.
        string shard = PolyMnistStore.ModalityPath(dir, "test", 2);
        var bytes = File.ReadAllBytes(shard);
        bytes[20 + 100] ^= 0xFF;
        File.WriteAllBytes(shard, bytes);
        Assert.NotEqual(before.ContentSha256, DatasetFingerprint.Of(dir).ContentSha256);
    }

    [Fact]
    public void ASpecOnlyDirectoryHasOnlyTheStructureAndMatchesTheFullData()
    {
        string full = Make("full", PolyMnistSpec.Extended(), 4);
        string specOnly = Path.Combine(root, "client");
        Directory.CreateDirectory(specOnly);
        File.Copy(Path.Combine(full, PolyMnistStore.SpecFile), Path.Combine(specOnly, PolyMnistStore.SpecFile));
        var client = DatasetFingerprint.Of(specOnly);
        Assert.Null(client.ContentSha256);
        Assert.Null(client.Train);
        Assert.Equal(DatasetFingerprint.Of(full).SpecSha256, client.SpecSha256);
        Assert.Null(client.Difference(DatasetFingerprint.Of(full)));
    }
}
