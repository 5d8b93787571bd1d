using System.Buffers.Binary;
using MrVae.Data;

namespace MrVae.Cli.Tests;

/// <summary>`mrvae data make` and `mrvae data grid` run as a user runs them: a separate process.</summary>
public sealed class DataCommandTests : IDisposable
{
    readonly string temp = Path.Combine(Path.GetTempPath(), "mrvae-data-cli-" + Guid.NewGuid().ToString("N"));
    public DataCommandTests() => Directory.CreateDirectory(temp);
    public void Dispose() => Directory.Delete(temp, recursive: true);

    static (int Exit, string Stdout, string Stderr) Run(params string[] args)
    {
        var (exit, stdout, stderr) = CliProcess.Run(CliProcess.StartInfo(args, columns: 400));
        return (exit, stdout.Trim(), stderr.Trim());
    }

    [Fact]
    public void MakeFromASpecFileReportsTheMembersAndGridHasOneRowPerModality()
    {
        var specPath = Path.Combine(temp, "three.json");
        new PolyMnistSpec("three", 3,
        [
            new SharedFactor("digit", [new(0, 0, 0, 28), new(1, 0, 0, 28), new(2, 0, 0, 28)]),
            new SharedFactor("pair", [new(0, 18, 0, 10), new(2, 0, 18, 10)]),
        ]).Save(specPath);
        string data = Path.Combine(temp, "three"), png = Path.Combine(temp, "three.png");

        var make = Run("data", "make", "--dataset", specPath, "--out", data, "--train", "40", "--test", "12", "--seed", "2");
        Assert.Equal(0, make.Exit);
        Assert.Equal("", make.Stderr);
        Assert.Contains("three: 3 modalities, seed 2, 40 train + 12 test tuples", make.Stdout);
        Assert.Contains("{0,2}", make.Stdout);
        Assert.Equal(new[] { new[] { 0, 1, 2 }, new[] { 0, 2 } }, PolyMnistStore.LoadSpec(data).SharedMemberSets);
        PolyMnistStore.LoadModality(data, "test", 2, out int tests);
        Assert.Equal(12, tests);

        var grid = Run("data", "grid", "--data", data, "--out", png, "--count", "5", "--scale", "2");
        Assert.Equal(0, grid.Exit);
        var file = File.ReadAllBytes(png);
        Assert.Equal(5 * (56 + 2) + 2, BinaryPrimitives.ReadInt32BigEndian(file.AsSpan(16)));   // IHDR width
        Assert.Equal(3 * (56 + 2) + 2, BinaryPrimitives.ReadInt32BigEndian(file.AsSpan(20)));   // IHDR height

        // The same command again is byte-identical: generation is deterministic by seed.
        var first = File.ReadAllBytes(PolyMnistStore.ModalityPath(data, "train", 1));
        Assert.Equal(0, Run("data", "make", "--dataset", specPath, "--out", data, "--train", "40", "--test", "12", "--seed", "2").Exit);
        Assert.Equal(first, File.ReadAllBytes(PolyMnistStore.ModalityPath(data, "train", 1)));
    }

    [Fact]
    public void MakeVectorDataNeedsNoMnistReportsTheFactorsAndGridRefusesIt()
    {
        string data = Path.Combine(temp, "chain");
        // --mnist names a directory without MNIST: vector data must not look for it.
        var make = Run("data", "make", "--dataset", "synthetic-chain", "--out", data, "--train", "30", "--test", "10", "--seed", "1", "--mnist", temp);
        Assert.Equal(0, make.Exit);
        Assert.Equal("", make.Stderr);
        Assert.Contains("synthetic-chain: 5 modalities, seed 1, 30 train + 10 test tuples", make.Stdout);
        Assert.Contains("p34  {3,4}  dim 2", make.Stdout);
        Assert.DoesNotContain("MNIST", make.Stdout);
        Assert.Equal(DatasetKind.Vectors, DatasetDirectory.KindOf(data));
        VectorStore.LoadModality(data, "test", 4, out int count, out int dim);
        Assert.Equal((10, 20), (count, dim));
        Assert.Equal(VectorSpec.Chain().SharedMemberSets, VectorStore.LoadSpec(data).SharedMemberSets);

        // A spec file of kind "vector".
        var specPath = Path.Combine(temp, "pair.json");
        new VectorSpec("pair", 3, 4, 1, 0.2, [new VectorFactor("s", [2, 0], 3)]).Save(specPath);
        string pair = Path.Combine(temp, "pair");
        var fromFile = Run("data", "make", "--dataset", specPath, "--out", pair, "--train", "5", "--test", "5");
        Assert.Equal(0, fromFile.Exit);
        Assert.Contains("pair: 3 modalities, seed 0, 5 train + 5 test tuples", fromFile.Stdout);
        Assert.Contains("s  {0,2}  dim 3", fromFile.Stdout);
        var model = VectorStore.LoadModel(pair);
        Assert.Equal((4, 1), (model.LatentDim(0), model.LatentDim(1)));   // factor s (3) + private (1); modality 1 private only
        Assert.Equal(0.0, model.OptimalR2([1], 0));

        var grid = Run("data", "grid", "--data", data, "--out", Path.Combine(temp, "x.png"));
        Assert.Equal(1, grid.Exit);
        Assert.Single(grid.Stderr.Split('\n'));
        Assert.Contains("vector data has no images", grid.Stderr);
        Assert.False(File.Exists(Path.Combine(temp, "x.png")));
    }

    [Fact]
    public void GridOnATruncatedCacheIsOneLineNamingTheFix()
    {
        string data = Path.Combine(temp, "v");
        Assert.Equal(0, Run("data", "make", "--dataset", "polymnist", "--out", data, "--train", "8", "--test", "8").Exit);
        var shard = PolyMnistStore.ModalityPath(data, "test", 3);
        File.WriteAllBytes(shard, File.ReadAllBytes(shard)[..500]);
        var r = Run("data", "grid", "--data", data, "--out", Path.Combine(temp, "x.png"));
        Assert.Equal(1, r.Exit);
        Assert.Equal("", r.Stdout);
        Assert.Single(r.Stderr.Split('\n'));
        Assert.Contains("modality-3.bin", r.Stderr);
        Assert.Contains("re-run `mrvae data make`", r.Stderr);
    }

    [Fact]
    public void GridOnAMissingDatasetAndMakeWithMissingMnistAreOneLine()
    {
        var grid = Run("data", "grid", "--data", Path.Combine(temp, "none"), "--out", Path.Combine(temp, "x.png"));
        Assert.Equal(1, grid.Exit);
        Assert.Single(grid.Stderr.Split('\n'));
        Assert.Contains("mrvae data make", grid.Stderr);

        var make = Run("data", "make", "--dataset", "polymnist", "--out", Path.Combine(temp, "d"), "--mnist", temp);
        Assert.Equal(1, make.Exit);
        Assert.Single(make.Stderr.Split('\n'));
        Assert.Contains("train-images-idx3-ubyte", make.Stderr);
        Assert.Contains("mrvae data mnist", make.Stderr);
        Assert.DoesNotContain("   at ", make.Stderr);
    }

    [Fact]
    public void OutOfRangeCountsAreUsageErrors()
    {
        var r = Run("data", "make", "--dataset", "polymnist", "--out", Path.Combine(temp, "d"), "--train", "0");
        Assert.NotEqual(0, r.Exit);
        Assert.Contains("--train must be at least 1", r.Stderr);
        Assert.False(Directory.Exists(Path.Combine(temp, "d")));
    }
}
