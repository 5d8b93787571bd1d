using System.Buffers.Binary;
using MrVae.Data;

namespace MrVae.Data.Tests;

/// <summary>
/// Vector datasets with a known linear-Gaussian structure: the generator against the model's exact moments, the
/// exact optimal R² against least squares fitted on samples, and the store, specs and kinds.
/// </summary>
public sealed class VectorDataTests : IDisposable
{
    readonly string root = TestData.TempDir();
    public void Dispose() => Directory.Delete(root, recursive: true);

    // ---- presets and specs ----

    [Fact]
    public void PresetsHaveTheDocumentedMemberSetsAndShapes()
    {
        Assert.Equal(new[] { new[] { 0, 1, 2, 3, 4 }, [0, 1], [1, 2], [2, 3], [3, 4], [0, 4] }, VectorSpec.Ring().SharedMemberSets);
        Assert.Equal(new[] { "all", "p01", "p12", "p23", "p34", "p40" }, VectorSpec.Ring().Factors.Select(f => f.Name));
        Assert.Equal(new[] { new[] { 0, 1, 2, 3, 4 }, [0, 1], [0, 2], [0, 3], [0, 4] }, VectorSpec.Star().SharedMemberSets);
        Assert.Equal(new[] { new[] { 0, 1 }, [1, 2], [2, 3], [3, 4] }, VectorSpec.Chain().SharedMemberSets);
        foreach (var spec in new[] { VectorSpec.Ring(), VectorSpec.Star(), VectorSpec.Chain() })
        {
            spec.Validate(spec.Name);
            Assert.Equal((5, 20, 2, 0.1), (spec.Modalities, spec.ObservedDim, spec.PrivateDim, spec.Noise));
            Assert.All(spec.Factors, f => Assert.Equal(2, f.Dim));
            Assert.Equal(spec.Name, DatasetSpecs.Resolve(spec.Name).Name);
            Assert.Equal(DatasetKind.Vectors, DatasetSpecs.Resolve(spec.Name).Kind);
        }
        // Ring: every modality sees "all" and its two ring pairs; star: the hub sees all five factors.
        Assert.All(Enumerable.Range(0, 5), j => Assert.Equal(2 + 2 + 2 + 2, VectorSpec.Ring().LatentDim(j)));
        Assert.Equal(2 * 5 + 2, VectorSpec.Star().LatentDim(0));
        Assert.Equal(2 + 2 + 2, VectorSpec.Star().LatentDim(3));
        Assert.Equal(2 + 2, VectorSpec.Chain().LatentDim(0));
        Assert.Equal(6 * 2 + 5 * 2, VectorSpec.Ring().TrueLatentWidth);
    }

    [Theory]
    [InlineData("\"factors\":[{\"name\":\"a\",\"members\":[0,5],\"dim\":2}]", "modality 5, outside 0..4")]
    [InlineData("\"factors\":[{\"name\":\"a\",\"members\":[-1,2],\"dim\":2}]", "modality -1, outside 0..4")]
    [InlineData("\"factors\":[{\"name\":\"a\",\"members\":[3],\"dim\":2}]", "needs at least two")]
    [InlineData("\"factors\":[{\"name\":\"a\",\"members\":[1,1],\"dim\":2}]", "member twice")]
    [InlineData("\"factors\":[{\"name\":\"a\",\"members\":[0,1],\"dim\":2},{\"name\":\"a\",\"members\":[1,2],\"dim\":2}]", "'a' is used twice")]
    [InlineData("\"factors\":[{\"name\":\"a\",\"members\":[0,1],\"dim\":2},{\"name\":\"b\",\"members\":[1,0],\"dim\":1}]", "same members {0,1}")]
    [InlineData("\"factors\":[{\"name\":\"a\",\"members\":[0,1],\"dim\":0}]", "'dim' 0")]
    [InlineData("\"factors\":[{\"name\":\"a\",\"members\":[0,1],\"dim\":19}]", "raise observed_dim to at least 21")]
    [InlineData("\"factors\":[{\"name\":\"a\",\"members\":[0,1]}], \"private_dim\": 0", "'dim' 0")]
    [InlineData("\"noise\": 0, \"factors\":[{\"name\":\"a\",\"members\":[0,1],\"dim\":2}]", "'noise' must be a positive number")]
    [InlineData("\"factors\":[null]", "null entry")]
    public void MalformedVectorSpecsAreRejectedWithOneSentence(string fields, string expected)
    {
        // Defaults that the fields may override: 5 modalities of 20 values, private_dim 2, noise 0.1.
        var path = Path.Combine(root, "bad.json");
        string json = "{\"kind\":\"vector\",\"name\":\"x\",\"modalities\":5,\"observed_dim\":20," + fields + "}";
        if (!fields.Contains("private_dim")) json = json.Replace("\"observed_dim\":20,", "\"observed_dim\":20,\"private_dim\":2,");
        if (!fields.Contains("noise")) json = json.Replace("\"name\":\"x\",", "\"name\":\"x\",\"noise\":0.1,");
        File.WriteAllText(path, json);
        var e = Assert.Throws<DataFormatException>(() => VectorSpec.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void AModalityWithNothingToObserveIsRejected()
    {
        var spec = new VectorSpec("x", 3, 4, 0, 0.1, [new VectorFactor("a", [0, 1], 1)]);
        var e = Assert.Throws<DataFormatException>(() => spec.Validate("x"));
        Assert.Contains("modality 2 observes no factor", e.Message);
        // With private dims it is valid: a modality may share nothing.
        (spec with { PrivateDim = 1 }).Validate("x");
    }

    [Fact]
    public void SpecJsonRoundTripsWithItsKindAndResolvesByPath()
    {
        var path = Path.Combine(root, "star.json");
        VectorSpec.Star().Save(path);
        var json = File.ReadAllText(path);
        Assert.Contains("\"kind\": \"vector\"", json);
        Assert.Contains("\"observed_dim\": 20", json);
        Assert.Contains("\"private_dim\": 2", json);
        var back = VectorSpec.Load(path);
        Assert.Equal(VectorSpec.Star().SharedMemberSets, back.SharedMemberSets);
        Assert.Equal((5, 20, 2, 0.1), (back.Modalities, back.ObservedDim, back.PrivateDim, back.Noise));
        Assert.Equal(DatasetKind.Vectors, DatasetSpecs.KindOfSpecFile(path));
        Assert.Equal("synthetic-star", DatasetSpecs.Resolve(path).Vectors!.Name);
        Assert.True(VectorSpec.TryResolve(path, out var resolved));
        Assert.Equal("synthetic-star", resolved!.Name);

        // Any key case, comments, trailing commas: like the image specs.
        File.WriteAllText(path, "{ \"Kind\": \"Vector\", \"Name\": \"y\", // comment\n \"Modalities\": 2, \"Observed_Dim\": 3, \"Noise\": 0.5, \"Factors\": [{\"Name\": \"s\", \"Members\": [1, 0], \"Dim\": 3},], }");
        var y = VectorSpec.Load(path);
        Assert.Equal(new[] { new[] { 0, 1 } }, y.SharedMemberSets);
        Assert.Equal(0, y.PrivateDim);
    }

    [Fact]
    public void KindsAreToldApartAndEachLoaderRefusesTheOtherKind()
    {
        string images = Path.Combine(root, "images"), vectors = Path.Combine(root, "vectors");
        Directory.CreateDirectory(images);
        PolyMnistSpec.Vanilla().Save(Path.Combine(images, PolyMnistStore.SpecFile));
        VectorStore.Make(vectors, VectorSpec.Chain(), 5, 5, seed: 1);
        Assert.Equal(DatasetKind.Images, DatasetDirectory.KindOf(images));
        Assert.Equal(DatasetKind.Vectors, DatasetDirectory.KindOf(vectors));
        Assert.Equal("polymnist", DatasetDirectory.LoadSpec(images).Name);
        Assert.Equal("synthetic-chain", DatasetDirectory.LoadSpec(vectors).Name);

        var e1 = Assert.Throws<DataFormatException>(() => PolyMnistStore.LoadSpec(vectors));
        Assert.Contains("vector data", e1.Message);
        Assert.Contains(vectors, e1.Message);
        var e2 = Assert.Throws<DataFormatException>(() => VectorStore.LoadSpec(images));
        Assert.Contains("PolyMNIST images", e2.Message);
        var e3 = Assert.Throws<DataFormatException>(() => PolyMnistSpec.Load(Path.Combine(vectors, PolyMnistStore.SpecFile)));
        Assert.Contains("vector dataset spec", e3.Message);
        var e4 = Assert.Throws<DataFormatException>(() => VectorSpec.Load(Path.Combine(images, PolyMnistStore.SpecFile)));
        Assert.Contains("image dataset", e4.Message);
        Assert.Contains("not PolyMNIST", Assert.Throws<DataFormatException>(() => PolyMnistSpec.Builtin("synthetic-ring")).Message);

        // "kind": "images" is explicit images; any other kind is an error naming both.
        var spec = Path.Combine(root, "k.json");
        File.WriteAllText(spec, "{\"kind\": \"images\", \"name\": \"v\", \"modalities\": 1, \"factors\": [{\"name\": \"d\", \"placements\": [{\"modality\": 0, \"x\": 0, \"y\": 0, \"size\": 28}]}]}");
        Assert.Equal(DatasetKind.Images, DatasetSpecs.KindOfSpecFile(spec));
        Assert.Equal("v", DatasetSpecs.Resolve(spec).Images!.Name);
        Assert.False(VectorSpec.TryResolve(spec, out _));
        File.WriteAllText(spec, "{\"kind\": \"audio\"}");
        Assert.Contains("\"vector\"", Assert.Throws<DataFormatException>(() => DatasetSpecs.KindOfSpecFile(spec)).Message);

        Assert.Equal(DatasetKind.Images, DatasetSpecs.Resolve("polymnist-extended").Kind);
        Assert.False(VectorSpec.TryResolve("polymnist", out _));
        Assert.Contains("synthetic-ring", Assert.Throws<DataFormatException>(() => DatasetSpecs.Resolve("synthetic-square")).Message);
        Assert.Contains("mrvae data make", Assert.Throws<DataFormatException>(() => DatasetDirectory.KindOf(Path.Combine(root, "none"))).Message);
    }

    // ---- the generating model against samples ----

    [Fact]
    public void EmpiricalCovarianceMatchesTheModelWithinSamplingError()
    {
        const int n = 20000;
        var model = VectorModel.Create(VectorSpec.Ring(), seed: 5);
        var split = VectorGenerator.Generate(model, n, seed: 5);
        int d = model.Spec.ObservedDim;
        // (0,0) variance, (0,1) two shared factors, (0,2) only "all", (3,4) "all" and p34.
        foreach (var (i, j) in new[] { (0, 0), (0, 1), (0, 2), (3, 4) })
        {
            var exact = model.Covariance(i, j);
            var empirical = EmpiricalCovariance(split.Values[i], split.Values[j], n, d);
            var si = model.Covariance(i, i); var sj = model.Covariance(j, j);
            double worst = 0;
            for (int a = 0; a < d; a++)
                for (int b = 0; b < d; b++)
                {
                    // Var of a product of jointly Gaussian zero-mean variables: σ_a² σ_b² + σ_ab².
                    double se = Math.Sqrt((si[a, a] * sj[b, b] + exact[a, b] * exact[a, b]) / n);
                    worst = Math.Max(worst, Math.Abs(empirical[a, b] - exact[a, b]) / se);
                }
            Assert.True(worst < 5, $"Cov(x{i}, x{j}): an entry is {worst:F1} standard errors from the model");
        }
        // A diagonal block is the maps' Gram matrix plus noise²: about 1 + 0.01 per dimension on average.
        double trace = 0;
        var c00 = model.Covariance(0, 0);
        for (int a = 0; a < d; a++) trace += c00[a, a];
        Assert.InRange(trace / d, 0.6, 1.4);
        Assert.Equal(model.Covariance(0, 1)[3, 7], model.Covariance(1, 0)[7, 3], 12);
    }

    [Fact]
    public void ModalitiesSharingNoFactorAreUncorrelatedExactly()
    {
        var model = VectorModel.Create(VectorSpec.Chain(), seed: 2);
        Assert.All(Flatten(model.Covariance(0, 2)), v => Assert.Equal(0.0, v));
        Assert.Equal(0.0, model.OptimalR2([2], 0));
        Assert.Equal(0.0, model.OptimalR2([2, 3, 4], 0));
        Assert.Equal(0.0, model.OptimalR2([], 1));
        Assert.True(model.OptimalR2([1], 0) > 0.2);
    }

    [Fact]
    public void TrueFactorsAndMapsReproduceTheValuesUpToTheNoise()
    {
        const int n = 4000;
        var spec = VectorSpec.Star();
        var model = VectorModel.Create(spec, seed: 8);
        var split = VectorGenerator.Generate(model, n, seed: 8, streamOffset: 1);
        int width = spec.TrueLatentWidth, d = spec.ObservedDim;
        Assert.Equal(width, split.FactorWidth);
        // factors.bin layout, built here from the spec: every factor in spec order, then each modality's privates.
        int privates = spec.Factors.Sum(f => f.Dim);
        for (int j = 0; j < spec.Modalities; j++)
        {
            var columns = new List<int>();
            int offset = 0;
            foreach (var f in spec.Factors)
            {
                if (f.Members.Contains(j)) columns.AddRange(Enumerable.Range(offset, f.Dim));
                offset += f.Dim;
            }
            columns.AddRange(Enumerable.Range(privates + j * spec.PrivateDim, spec.PrivateDim));
            var w = model.Maps[j];
            Assert.Equal(columns.Count, w.GetLength(1));
            double residual = 0;
            for (int t = 0; t < n; t++)
                for (int a = 0; a < d; a++)
                {
                    double predicted = 0;
                    for (int c = 0; c < columns.Count; c++) predicted += w[a, c] * split.Factors[t * width + columns[c]];
                    double r = split.Values[j][t * d + a] - predicted;
                    residual += r * r;
                }
            // The residual is the noise: variance 0.1² per value.
            Assert.InRange(residual / (n * d), 0.0095, 0.0105);
        }
        // The latent values are independent standard normals.
        var cov = EmpiricalCovariance(split.Factors, split.Factors, n, width);
        for (int a = 0; a < width; a++)
            for (int b = 0; b < width; b++) Assert.True(Math.Abs(cov[a, b] - (a == b ? 1 : 0)) < 0.08, $"latent cov[{a},{b}] = {cov[a, b]:F3}");
    }

    [Theory]
    [InlineData("synthetic-ring", new[] { 1 }, 0)]
    [InlineData("synthetic-ring", new[] { 1, 4 }, 0)]
    [InlineData("synthetic-ring", new[] { 2 }, 0)]
    [InlineData("synthetic-star", new[] { 1, 2, 3, 4 }, 0)]
    [InlineData("synthetic-star", new[] { 2 }, 1)]
    [InlineData("synthetic-chain", new[] { 1, 3 }, 2)]
    [InlineData("synthetic-chain", new[] { 3, 4 }, 0)]
    public void OptimalR2MatchesLeastSquaresFittedOnSamples(string dataset, int[] inputs, int output)
    {
        var model = VectorModel.Create(VectorSpec.Builtin(dataset), seed: 13);
        var train = VectorGenerator.Generate(model, 20000, seed: 13);
        var test = VectorGenerator.Generate(model, 20000, seed: 13, streamOffset: 1);
        double exact = model.OptimalR2(inputs, output);
        double fitted = LeastSquaresR2(train, test, inputs, output, model.Spec.ObservedDim);
        Assert.True(Math.Abs(exact - fitted) < 0.01, $"{dataset} {{{string.Join(",", inputs)}}} -> {output}: exact R² {exact:F4}, least squares on samples {fitted:F4}");
        Assert.InRange(exact, 0, 1);
    }

    [Fact]
    public void MoreSharedInputsPredictBetter()
    {
        var model = VectorModel.Create(VectorSpec.Ring(), seed: 1);
        double one = model.OptimalR2([1], 0), two = model.OptimalR2([1, 4], 0), far = model.OptimalR2([2], 0), all = model.OptimalR2([1, 2, 3, 4], 0);
        // x1 shares "all" and p01 with x0; x2 only "all"; x1 and x4 together carry all three of x0's shared factors.
        Assert.True(far < one && one < two && two <= all + 1e-12, $"R² {far:F3} < {one:F3} < {two:F3} <= {all:F3}");
        // x0's private values and noise are unpredictable: R² stays clearly below 1.
        Assert.True(all < 0.9);
        Assert.Throws<ArgumentException>(() => model.OptimalR2([0, 1], 0));
        Assert.Throws<ArgumentException>(() => model.OptimalR2([1, 1], 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.OptimalR2([5], 0));
    }

    [Fact]
    public void SameSeedIsIdenticalAndADifferentSeedDiffers()
    {
        var spec = VectorSpec.Ring();
        var a = VectorGenerator.Generate(VectorModel.Create(spec, 4), 100, 4);
        var b = VectorGenerator.Generate(VectorModel.Create(spec, 4), 100, 4);
        var c = VectorGenerator.Generate(VectorModel.Create(spec, 5), 100, 5);
        var testStream = VectorGenerator.Generate(VectorModel.Create(spec, 4), 100, 4, streamOffset: 1);
        for (int j = 0; j < 5; j++) Assert.Equal(a.Values[j], b.Values[j]);
        Assert.Equal(a.Factors, b.Factors);
        Assert.Equal(Flatten(VectorModel.Create(spec, 4).Maps[2]), Flatten(VectorModel.Create(spec, 4).Maps[2]));
        Assert.NotEqual(Flatten(VectorModel.Create(spec, 4).Maps[2]), Flatten(VectorModel.Create(spec, 5).Maps[2]));
        Assert.NotEqual(a.Values[0], c.Values[0]);
        Assert.NotEqual(a.Factors, testStream.Factors);
        // A fixed value: the maps do not change between runs, machines or .NET versions (seeded System.Random is stable).
        // Pinned: a change here changes every stored vector dataset of that seed.
        Assert.Equal(0.03390893678262265, VectorModel.Create(spec, 4).Maps[0][0, 0]);
    }

    // ---- the store ----

    [Fact]
    public void StoreRoundTripsValuesFactorsAndTheModel()
    {
        string dir = Path.Combine(root, "ring");
        var model = VectorModel.Create(VectorSpec.Ring(), seed: 6);
        var train = VectorGenerator.Generate(model, 50, 6);
        var test = VectorGenerator.Generate(model, 20, 6, streamOffset: 1);
        VectorStore.Save(dir, model, train, test);
        for (int j = 0; j < 5; j++)
        {
            Assert.Equal(train.Values[j], VectorStore.LoadModality(dir, "train", j, out int count, out int dim));
            Assert.Equal((50, 20), (count, dim));
            Assert.Equal(test.Values[j], VectorStore.LoadModality(dir, "test", j, out count, out _));
            Assert.Equal(20, count);
        }
        Assert.Equal(test.Factors, VectorStore.LoadFactors(dir, "test", out int n, out int width));
        Assert.Equal((20, 22), (n, width));
        Assert.Equal(VectorSpec.Ring().SharedMemberSets, VectorStore.LoadSpec(dir).SharedMemberSets);

        var loaded = VectorStore.LoadModel(dir);
        Assert.Equal(6, loaded.Seed);
        for (int j = 0; j < 5; j++) Assert.Equal(Flatten(model.Maps[j]), Flatten(loaded.Maps[j]));
        Assert.Equal(model.OptimalR2([1, 4], 0), loaded.OptimalR2([1, 4], 0));

        // The header: magic, version 1, count, dim, then float32 little-endian.
        var bytes = File.ReadAllBytes(VectorStore.ModalityPath(dir, "train", 3));
        Assert.Equal("PMVC"u8.ToArray(), bytes[..4]);
        Assert.Equal(new[] { 1, 50, 20 }, new[] { 4, 8, 12 }.Select(o => BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(o))));
        Assert.Equal(train.Values[3][7], BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(16 + 4 * 7)));
        Assert.Equal(16 + 50 * 20 * 4, bytes.Length);
        Assert.Equal("PMVF"u8.ToArray(), File.ReadAllBytes(VectorStore.FactorsPath(dir, "train"))[..4]);
    }

    [Fact]
    public void StoreDetectsTruncationAndForeignFilesNamingTheFile()
    {
        string dir = Path.Combine(root, "chain");
        VectorStore.Make(dir, VectorSpec.Chain(), 30, 10, seed: 2);
        var shard = VectorStore.ModalityPath(dir, "train", 3);
        var bytes = File.ReadAllBytes(shard);
        File.WriteAllBytes(shard, bytes[..^8]);
        var e = Assert.Throws<DataFormatException>(() => VectorStore.LoadModality(dir, "train", 3, out _, out _));
        Assert.Contains(shard, e.Message);
        Assert.Contains("truncated", e.Message);
        Assert.Contains("mrvae data make", e.Message);
        File.WriteAllBytes(shard, bytes[..10]);
        Assert.Contains("truncated header", Assert.Throws<DataFormatException>(() => VectorStore.LoadModality(dir, "train", 3, out _, out _)).Message);
        // The other shards still load: each modality reads only its own file.
        VectorStore.LoadModality(dir, "train", 4, out int count, out _);
        Assert.Equal(30, count);

        var factors = VectorStore.FactorsPath(dir, "test");
        var fbytes = File.ReadAllBytes(factors);
        fbytes[4] = 9;
        File.WriteAllBytes(factors, fbytes);
        var v = Assert.Throws<DataFormatException>(() => VectorStore.LoadFactors(dir, "test", out _, out _));
        Assert.Contains("version 9", v.Message);
        Assert.Contains("factors.bin", v.Message);
        // A values shard is not a factors file, nor an image shard.
        File.Copy(VectorStore.ModalityPath(dir, "test", 0), factors, overwrite: true);
        Assert.Contains("wrong magic", Assert.Throws<DataFormatException>(() => VectorStore.LoadFactors(dir, "test", out _, out _)).Message);
        Assert.Contains("wrong magic", Assert.Throws<DataFormatException>(() => PolyMnistStore.LoadModality(dir, "test", 0, out _)).Message);
        File.AppendAllText(VectorStore.ModalityPath(dir, "test", 1), "x");
        Assert.Contains("trailing bytes", Assert.Throws<DataFormatException>(() => VectorStore.LoadModality(dir, "test", 1, out _, out _)).Message);
    }

    [Fact]
    public void ModelJsonThatDoesNotFitTheSpecIsRejected()
    {
        string dir = Path.Combine(root, "m");
        VectorStore.Make(dir, VectorSpec.Ring(), 5, 5, seed: 3);
        string path = VectorStore.ModelPath(dir);
        // Modality 0's map loses its last column: 20x7 where the ring needs 20x8.
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!;
        var map = json["maps"]![0]!;
        map["columns"] = 7;
        foreach (var row in map["values"]!.AsArray()) row!.AsArray().RemoveAt(7);
        File.WriteAllText(path, json.ToJsonString());
        var e = Assert.Throws<DataFormatException>(() => VectorStore.LoadModel(dir));
        Assert.Contains("modality 0", e.Message);
        Assert.Contains("20x8", e.Message);
        File.WriteAllText(path, "{ nope");
        Assert.Contains("not valid JSON", Assert.Throws<DataFormatException>(() => VectorStore.LoadModel(dir)).Message);
        File.Delete(path);
        Assert.Contains("model.json not found", Assert.Throws<DataFormatException>(() => VectorStore.LoadModel(dir)).Message);
    }

    [Fact]
    public void RewritesRemoveTheFilesOfAnEarlierDataset()
    {
        string dir = Path.Combine(root, "rw");
        VectorStore.Make(dir, VectorSpec.Ring(), 6, 6, seed: 1);
        var three = new VectorSpec("three", 3, 6, 1, 0.2, [new VectorFactor("s", [0, 2], 2)]);
        VectorStore.Make(dir, three, 7, 4, seed: 1);
        Assert.False(File.Exists(VectorStore.ModalityPath(dir, "train", 3)));
        Assert.False(File.Exists(VectorStore.ModalityPath(dir, "test", 4)));
        Assert.Equal(3, VectorStore.LoadSpec(dir).Modalities);
        VectorStore.LoadModality(dir, "test", 2, out int n, out int dim);
        Assert.Equal((4, 6), (n, dim));
        Assert.Equal(3, VectorStore.LoadModel(dir).Maps.Count);
        Assert.Empty(Directory.GetFiles(dir, "*.tmp", SearchOption.AllDirectories));

        // Images over vectors: no model.json or factors.bin left behind; vectors over images: no labels.bin.
        var vanilla = PolyMnistSpec.Vanilla(2);
        PolyMnistStore.Save(dir, vanilla, PolyMnistGenerator.Generate(vanilla, TestData.Train, 3, 1), PolyMnistGenerator.Generate(vanilla, TestData.Test, 3, 1, 1));
        Assert.False(File.Exists(VectorStore.ModelPath(dir)));
        Assert.False(File.Exists(VectorStore.FactorsPath(dir, "train")));
        Assert.Equal(DatasetKind.Images, DatasetDirectory.KindOf(dir));
        VectorStore.Make(dir, three, 7, 4, seed: 1);
        Assert.False(File.Exists(PolyMnistStore.LabelsPath(dir, "test")));
        Assert.Equal(DatasetKind.Vectors, DatasetDirectory.KindOf(dir));
    }

    [Fact]
    public void FingerprintCoversVectorData()
    {
        string Make(string name, VectorSpec spec, int seed, int train = 40)
        {
            string dir = Path.Combine(root, name);
            VectorStore.Make(dir, spec, train, 20, seed);
            return dir;
        }
        var a = DatasetFingerprint.Of(Make("a", VectorSpec.Ring(), 1));
        var again = DatasetFingerprint.Of(Make("again", VectorSpec.Ring(), 1));
        Assert.Equal(a, again);
        Assert.Equal(("synthetic-ring", 40, 20), (a.Spec, a.Train, a.Test));
        Assert.NotNull(a.ContentSha256);

        var seed = DatasetFingerprint.Of(Make("seed", VectorSpec.Ring(), 2));
        Assert.False(a.IsDifferentStructure(seed));
        Assert.Contains("another seed", a.Difference(seed));
        Assert.NotEqual(a.ContentSha256, DatasetFingerprint.Of(Make("larger", VectorSpec.Ring(), 1, train: 41)).ContentSha256);
        Assert.True(a.IsDifferentStructure(DatasetFingerprint.Of(Make("star", VectorSpec.Star(), 1))));

        // One value of one shard changed: another content hash.
        string dir = Path.Combine(root, "a");
        var shard = VectorStore.ModalityPath(dir, "test", 4);
        var bytes = File.ReadAllBytes(shard);
        bytes[16 + 4 * 5] ^= 0x40;
        File.WriteAllBytes(shard, bytes);
        Assert.NotEqual(a.ContentSha256, DatasetFingerprint.Of(dir).ContentSha256);

        // spec.json alone (a cluster client): the structure only.
        string client = Path.Combine(root, "client");
        Directory.CreateDirectory(client);
        File.Copy(Path.Combine(dir, PolyMnistStore.SpecFile), Path.Combine(client, PolyMnistStore.SpecFile));
        var c = DatasetFingerprint.Of(client);
        Assert.Null(c.ContentSha256);
        Assert.Null(c.Train);
        Assert.Equal(a.SpecSha256, c.SpecSha256);
    }

    // ---- independent computations ----

    static double[] Flatten(double[,] m) => m.Cast<double>().ToArray();

    /// <summary>Sample covariance of rows of x (n × d) and y (n × d), around the sample means.</summary>
    static double[,] EmpiricalCovariance(float[] x, float[] y, int n, int d)
    {
        var mx = new double[d]; var my = new double[d];
        for (int t = 0; t < n; t++)
            for (int a = 0; a < d; a++) { mx[a] += x[t * d + a]; my[a] += y[t * d + a]; }
        for (int a = 0; a < d; a++) { mx[a] /= n; my[a] /= n; }
        var c = new double[d, d];
        for (int t = 0; t < n; t++)
            for (int a = 0; a < d; a++)
            {
                double u = x[t * d + a] - mx[a];
                for (int b = 0; b < d; b++) c[a, b] += u * (y[t * d + b] - my[b]);
            }
        for (int a = 0; a < d; a++)
            for (int b = 0; b < d; b++) c[a, b] /= n - 1;
        return c;
    }

    /// <summary>
    /// Ordinary least squares of x_output on [1, x_inputs] fitted on <paramref name="train"/> (normal equations,
    /// Gauss–Jordan with partial pivoting), and its pooled R² on <paramref name="test"/>: 1 − Σ residual² / Σ (y − ȳ)².
    /// </summary>
    static double LeastSquaresR2(VectorSplit train, VectorSplit test, int[] inputs, int output, int d)
    {
        int p = 1 + inputs.Length * d;
        void Row(VectorSplit s, int t, double[] row)
        {
            row[0] = 1;
            for (int k = 0; k < inputs.Length; k++)
                for (int a = 0; a < d; a++) row[1 + k * d + a] = s.Values[inputs[k]][t * d + a];
        }
        var xtx = new double[p, p + d];   // [XᵀX | XᵀY]
        var row = new double[p];
        for (int t = 0; t < train.Count; t++)
        {
            Row(train, t, row);
            for (int a = 0; a < p; a++)
            {
                for (int b = 0; b < p; b++) xtx[a, b] += row[a] * row[b];
                for (int c = 0; c < d; c++) xtx[a, p + c] += row[a] * train.Values[output][t * d + c];
            }
        }
        for (int col = 0; col < p; col++)
        {
            int pivot = col;
            for (int r = col + 1; r < p; r++) if (Math.Abs(xtx[r, col]) > Math.Abs(xtx[pivot, col])) pivot = r;
            for (int c = 0; c < p + d; c++) (xtx[col, c], xtx[pivot, c]) = (xtx[pivot, c], xtx[col, c]);
            double diag = xtx[col, col];
            for (int c = 0; c < p + d; c++) xtx[col, c] /= diag;
            for (int r = 0; r < p; r++)
            {
                if (r == col || xtx[r, col] == 0) continue;
                double factor = xtx[r, col];
                for (int c = 0; c < p + d; c++) xtx[r, c] -= factor * xtx[col, c];
            }
        }
        var mean = new double[d];
        for (int t = 0; t < test.Count; t++)
            for (int c = 0; c < d; c++) mean[c] += test.Values[output][t * d + c];
        for (int c = 0; c < d; c++) mean[c] /= test.Count;
        double residual = 0, total = 0;
        for (int t = 0; t < test.Count; t++)
        {
            Row(test, t, row);
            for (int c = 0; c < d; c++)
            {
                double predicted = 0;
                for (int a = 0; a < p; a++) predicted += row[a] * xtx[a, p + c];
                double y = test.Values[output][t * d + c];
                residual += (y - predicted) * (y - predicted);
                total += (y - mean[c]) * (y - mean[c]);
            }
        }
        return 1 - residual / total;
    }
}
