using System.Text.Json;
using MrVae.Data;
using MrVae.Model.Training;

namespace MrVae.Model.Tests;

/// <summary>CI-sized training on real extended PolyMNIST.</summary>
public sealed class PolyMnistTrainingTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-polymnist-" + Guid.NewGuid().ToString("N"));
    public void Dispose() { if (Directory.Exists(root)) Directory.Delete(root, recursive: true); }

    static MultimodalDataset Dataset(PolyMnistSplit split) =>
        new(split.Pixels.Select(p => (ModalityImages?)new ModalityImages(p, split.Count)).ToArray());

    [Fact]
    public void MrVaeLossFallsOnExtendedPolyMnistAndRepeatsExactly()
    {
        var mnist = MnistLocator.Resolve(null);
        var spec = PolyMnistSpec.Extended();
        var train = Dataset(PolyMnistGenerator.Generate(spec, MnistIdx.Load(mnist, train: true), 320, seed: 1));
        var test = Dataset(PolyMnistGenerator.Generate(spec, MnistIdx.Load(mnist, train: false), 64, seed: 1, streamOffset: 1));
        var config = new ModelConfig { Modalities = 5, LatentDim = 8, EncoderHidden = 64 };
        double before = 0, after = 0;
        foreach (var name in new[] { "a", "b" })
        {
            var options = new TrainOptions { RunDirectory = Path.Combine(root, name), BatchSize = 32, Epochs = 3, Seed = 7, LearningRate = 1e-3, TestSamples = 64 };
            using var trainer = new LocalTrainer(config, options, train, test);
            before = trainer.TestLoss();
            trainer.Run();
            after = trainer.TestLoss();
        }
        Assert.True(after < 0.9 * before, $"test loss went from {before:F0} to {after:F0}");
        string Losses(string run) => string.Join("\n", File.ReadLines(Path.Combine(root, run, LocalTrainer.MetricsFile))
            .Select(l => { var d = JsonSerializer.Deserialize<Dictionary<string, double>>(l)!; d.Remove("step_ms"); return JsonSerializer.Serialize(d); }));
        Assert.Equal(Losses("a"), Losses("b"));
        Assert.Equal(30, File.ReadLines(Path.Combine(root, "a", LocalTrainer.MetricsFile)).Count());
    }
}
