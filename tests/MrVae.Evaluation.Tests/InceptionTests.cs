using MrVae.Model;
using MrVae.Model.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Evaluation.Tests;

/// <summary>The InceptionV3 feature network on random weights: shapes, torchvision's parameter names, loading, FID.</summary>
public sealed class InceptionTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-inception-" + Guid.NewGuid().ToString("N"));
    public InceptionTests() => Directory.CreateDirectory(root);
    public void Dispose() => Directory.Delete(root, recursive: true);

    [Fact]
    public void PoolFeaturesOfPolyMnistSizedImagesAre2048WideAndNamedAsTorchvision()
    {
        using var net = Seeds.Construct(1, "inception", () => new InceptionV3Features());
        net.eval();
        var names = net.state_dict().Keys.ToHashSet();
        // A few of torchvision inception_v3's names, parameters and BatchNorm buffers alike.
        Assert.Contains("Conv2d_1a_3x3.conv.weight", names);
        Assert.Contains("Conv2d_4a_3x3.bn.running_var", names);
        Assert.Contains("Mixed_5b.branch_pool.conv.weight", names);
        Assert.Contains("Mixed_6e.branch7x7dbl_5.bn.bias", names);
        Assert.Contains("Mixed_7a.branch7x7x3_4.conv.weight", names);
        Assert.Contains("Mixed_7c.branch3x3dbl_3b.bn.running_mean", names);
        Assert.DoesNotContain(names, n => n.StartsWith("fc.", StringComparison.Ordinal));
        // torchvision's inception_v3 has 27,161,264 parameters, of which fc holds 2,049,000 and AuxLogits 3,326,696.
        long parameters = net.parameters().Sum(p => p.numel());
        Assert.Equal(27_161_264L - 2_049_000 - 3_326_696, parameters);
        Assert.Equal([384L, 384, 3, 1], net.state_dict()["Mixed_7c.branch3x3_2b.conv.weight"].shape);

        using var _ = no_grad();
        var features = net.forward(rand([2, 3, 28, 28], generator: new Generator(3)));
        Assert.Equal([2L, InceptionV3Features.FeatureWidth], features.shape);
        Assert.True(features.isfinite().all().ToBoolean());
        Assert.True((features >= 0).all().ToBoolean(), "pool features come after a ReLU");
    }

    [Fact]
    public void SavedWeightsLoadToTheSameFeaturesAndIncompleteFilesFailClearly()
    {
        string path = Path.Combine(root, "inception.dat");
        using var net = Seeds.Construct(2, "inception", () => new InceptionV3Features());
        net.eval();
        net.save(path);
        using var loaded = InceptionV3Features.Load(path);
        using var _ = no_grad();
        var x = rand([1, 3, 28, 28], generator: new Generator(4));
        Assert.Equal(0, (net.forward(x) - loaded.forward(x)).abs().max().ToDouble(), 6);

        Assert.Throws<FileNotFoundException>(() => InceptionV3Features.Load(Path.Combine(root, "missing.dat")));
        // A state dict of another network (here a digit classifier) lacks Inception's tensors.
        string other = Path.Combine(root, "other.dat");
        using (var classifier = new DigitClassifier()) classifier.save(other);
        var e = Assert.Throws<MrVae.Data.UserInputException>(() => InceptionV3Features.Load(other));
        Assert.Contains("exportsd.py", e.Message);
    }

    [Fact]
    public void FidOfASetWithItselfIsZeroAndGrowsWithAShift()
    {
        using var net = Seeds.Construct(5, "inception", () => new InceptionV3Features());
        net.eval();
        using var _ = no_grad();
        var gen = new Generator(6);
        var real = rand([10, 3, 28, 28], generator: gen) * 0.5;
        var realFeatures = net.forward(real).to(float64);
        var shifted = net.forward((real + 0.4).clamp(0, 1)).to(float64);
        Assert.Equal(0, Frechet.Distance(realFeatures, realFeatures), 6);
        double fid = Frechet.Distance(realFeatures, shifted);
        Assert.True(fid > 0);
        // The formula's mean term alone is a lower bound (the covariance term is a squared Bures distance, ≥ 0).
        var diff = realFeatures.mean([0]) - shifted.mean([0]);
        Assert.True(fid >= diff.dot(diff).ToDouble() - 1e-6);
    }

    /// <summary>Returns the test images themselves for every output (brightened when asked): a perfect or a shifted generator.</summary>
    sealed class EchoGenerator(LabelledSplit split, float shift) : IConditionalGenerator
    {
        public int Modalities => split.Modalities;
        public Tensor[] Generate(Tensor?[] x, bool[] inputs, IReadOnlyList<long> ids) =>
            Enumerable.Range(0, Modalities).Select(j => (split.Images[j].Batch(ids) + shift).clamp(0, 1)).ToArray();
    }

    [Fact]
    public void FidOfThePapersRowsComparesGenerationsWithTheSameRealTuples()
    {
        var rng = new Random(7);
        var pixels = Enumerable.Range(0, 2).Select(_ => { var p = new byte[7 * ModalityImages.ImageBytes]; rng.NextBytes(p); return new ModalityImages(p, 7); }).ToArray();
        var split = new LabelledSplit(pixels, new int[7], 7, 1);
        using var net = Seeds.Construct(8, "inception", () => new InceptionV3Features());
        (int, int)[] cells = [(2, 0)];
        // 5 tuples in batches of 3: the last batch is partial. Identical sets: 0 up to the eigendecompositions' round-off.
        double perfect = InceptionFid.Compute(new EchoGenerator(split, 0), net, split, cells, samples: 5, batchSize: 3)[(2, 0)];
        double shifted = InceptionFid.Compute(new EchoGenerator(split, 0.3f), net, split, cells, samples: 5, batchSize: 3)[(2, 0)];
        Assert.True(shifted > 0, $"FID {shifted}");
        Assert.True(Math.Abs(perfect) < 1e-3 * shifted, $"FID of identical sets {perfect}, of shifted ones {shifted}");
    }
}
