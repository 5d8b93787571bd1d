using System.Text.Json;
using MrVae.Model.Training;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

public sealed class LocalTrainerTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-trainer-" + Guid.NewGuid().ToString("N"));

    public void Dispose() { if (Directory.Exists(root)) Directory.Delete(root, recursive: true); }

    /// <summary>A small multimodal set: each sample has a class whose bar position every modality shows in its own colour.</summary>
    internal static MultimodalDataset Synthetic(int modalities, int count, int seed)
    {
        var rng = new Random(seed);
        var classes = Enumerable.Range(0, count).Select(_ => rng.Next(4)).ToArray();
        var shards = new ModalityImages?[modalities];
        for (int j = 0; j < modalities; j++)
        {
            var pixels = new byte[count * ModalityImages.ImageBytes];
            for (int i = 0; i < count; i++)
                for (int c = 0; c < 3; c++)
                    for (int y = 0; y < 28; y++)
                        for (int x = 0; x < 28; x++)
                        {
                            bool bar = x / 7 == classes[i];
                            int value = bar ? 60 + 60 * ((c + j) % 3) : rng.Next(30);
                            pixels[i * ModalityImages.ImageBytes + (c * 28 + y) * 28 + x] = (byte)value;
                        }
            shards[j] = new ModalityImages(pixels, count);
        }
        return new MultimodalDataset(shards);
    }

    static ModelConfig SmallConfig(ModelKind kind = ModelKind.MrVae) => new()
    {
        Kind = kind, Modalities = 3, LatentDim = 6, EncoderHidden = 32,
    };

    TrainOptions Options(string name, long steps) => new()
    {
        RunDirectory = Path.Combine(root, name), BatchSize = 8, Steps = steps, Seed = 42, LearningRate = 1e-3, EvaluateEvery = 1000, TestSamples = 16,
    };

    static List<Dictionary<string, double>> ReadMetrics(string runDir) =>
        File.ReadAllLines(Path.Combine(runDir, LocalTrainer.MetricsFile))
            .Where(l => !l.Contains("\"event\""))
            .Select(l => JsonSerializer.Deserialize<Dictionary<string, double>>(l)!)
            .Select(d => { d.Remove("step_ms"); return d; })
            .ToList();

    static double[] Parameters(LocalTrainer trainer) =>
        trainer.Model.parameters().SelectMany(p => p.detach().cpu().data<float>().ToArray()).Select(v => (double)v).ToArray();

    [Theory]
    [InlineData(ModelKind.MrVae)]
    [InlineData(ModelKind.MoPoE)]
    public void SameSeedGivesIdenticalMetrics(ModelKind kind)
    {
        var data = Synthetic(3, 40, 1);
        using (var a = new LocalTrainer(SmallConfig(kind), Options("a", 4), data, null)) a.Run();
        using (var b = new LocalTrainer(SmallConfig(kind), Options("b", 4), data, null)) b.Run();
        var ma = ReadMetrics(Path.Combine(root, "a")); var mb = ReadMetrics(Path.Combine(root, "b"));
        Assert.Equal(4, ma.Count);
        for (int i = 0; i < ma.Count; i++) Assert.Equal(ma[i], mb[i]);
        Assert.All(ma, m => Assert.True(m.ContainsKey("loss") && m.ContainsKey("rec_0") && m.ContainsKey("kl_structure")
                                         || kind != ModelKind.MrVae));
    }

    [Fact]
    public void ResumeFromCheckpointReproducesAnUninterruptedRun()
    {
        var data = Synthetic(3, 40, 2);
        double[] uninterrupted;
        using (var a = new LocalTrainer(SmallConfig(), Options("full", 6), data, null))
        {
            a.Run();
            uninterrupted = Parameters(a);
        }
        var options = Options("resumed", 6);
        using (var b = new LocalTrainer(SmallConfig(), options, data, null))
        {
            for (int i = 0; i < 3; i++) b.RunStep();
            b.SaveCheckpoint("last", null);
        }
        double[] resumed;
        using (var c = new LocalTrainer(SmallConfig(), options with { Resume = true }, data, null))
        {
            Assert.Equal(3, c.Step);
            c.Run();
            resumed = Parameters(c);
        }
        Assert.Equal(uninterrupted, resumed);
        Assert.Equal(ReadMetrics(Path.Combine(root, "full")), ReadMetrics(Path.Combine(root, "resumed")));
    }

    [Fact]
    public void ACheckpointInterruptedWhileWritingLeavesThePreviousOneLoadable()
    {
        var data = Synthetic(3, 40, 3);
        var options = Options("crash", 4);
        using (var t = new LocalTrainer(SmallConfig(), options, data, null))
        {
            t.RunStep();
            t.SaveCheckpoint("last", null);
            t.RunStep();
            Assert.Throws<IOException>(() => CheckpointDirectory.WriteAtomically(
                Path.Combine(t.CheckpointsDirectory, "last"),
                new CheckpointState { Step = t.Step, Model = t.Model.Config },
                dir => { File.WriteAllText(Path.Combine(dir, "model.bin"), "half"); throw new IOException("disk full (simulated)"); }));
        }
        using var resumed = new LocalTrainer(SmallConfig(), options with { Resume = true }, data, null);
        Assert.Equal(1, resumed.Step);
        resumed.RunStep();   // the surviving checkpoint loads and trains on
    }

    [Fact]
    public void ResumingWithAnotherConfigurationNamesTheSettingsThatDiffer()
    {
        var data = Synthetic(3, 40, 4);
        var options = Options("other-config", 2);
        using (var t = new LocalTrainer(SmallConfig() with { ConditionalPrivatePrior = true }, options, data, null)) t.Run();
        var e = Assert.Throws<CheckpointException>(() => new LocalTrainer(SmallConfig() with { Beta = 1 }, options with { Resume = true }, data, null));
        // The checkpoint's values of exactly the two settings that differ, which --set gives back.
        Assert.Contains("(Beta=2.5, ConditionalPrivatePrior=true)", e.Message);
        Assert.Contains("--set NAME=VALUE", e.Message);
    }

    [Fact]
    public void CorruptCheckpointGivesAClearError()
    {
        var data = Synthetic(3, 40, 4);
        var options = Options("corrupt", 2);
        using (var t = new LocalTrainer(SmallConfig(), options, data, null)) t.Run();
        File.WriteAllText(Path.Combine(root, "corrupt", "checkpoints", "last", "model.bin"), "not a model");
        var e = Assert.Throws<CheckpointException>(() => new LocalTrainer(SmallConfig(), options with { Resume = true }, data, null));
        Assert.Contains("damaged", e.Message);
    }

    [Fact]
    public void LossFallsOnStructuredData()
    {
        var data = Synthetic(3, 64, 5);
        using var t = new LocalTrainer(SmallConfig(), Options("falls", 40), data, Synthetic(3, 16, 6));
        double before = t.TestLoss();
        var result = t.Run();
        double after = t.TestLoss();
        Assert.True(after < 0.9 * before, $"test loss went from {before:F1} to {after:F1}");
        Assert.NotNull(result.BestTestLoss);
        Assert.True(File.Exists(Path.Combine(root, "falls", "checkpoints", "best", CheckpointDirectory.StateFile)));
    }

    [Fact]
    public void ADivergedRunNamesTheStepAndTermAndKeepsTheLastGoodCheckpoint()
    {
        var data = Synthetic(3, 40, 7);
        var options = Options("diverged", 40) with { LearningRate = 1e4, EvaluateEvery = 1 };
        NonFiniteException e;
        using (var t = new LocalTrainer(SmallConfig(ModelKind.MoPoE), options, data, Synthetic(3, 16, 8)))
            e = Assert.Throws<NonFiniteException>(() => t.Run());
        Assert.Contains($"step {e.Step}: {e.Where} is ", e.Message);
        Assert.Contains("--lr", e.Message);
        // Every line of the run's record is still JSON, and the last one says where it diverged.
        var lines = File.ReadAllLines(Path.Combine(root, "diverged", LocalTrainer.MetricsFile)).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.Equal("diverged", lines[^1].GetProperty("event").GetString());
        Assert.Equal(e.Step, lines[^1].GetProperty("step").GetInt64());
        Assert.Equal(e.Step, lines.Count(l => !l.TryGetProperty("event", out _)));   // steps 0 … e.Step − 1 were trained
        // The last checkpoint is one from before the divergence, and it loads with finite weights.
        using var resumed = new LocalTrainer(SmallConfig(ModelKind.MoPoE), options with { Resume = true }, data, null);
        Assert.True(resumed.Step <= e.Step, $"checkpoint at step {resumed.Step}, diverged at {e.Step}");
        Assert.All(Parameters(resumed), v => Assert.True(double.IsFinite(v)));
    }

    [Fact]
    public void SkippingNonFiniteStepsLeavesThemOutAndStopsAfterTooManyInARow()
    {
        var data = Synthetic(3, 40, 9);
        var options = Options("skipping", 60) with { LearningRate = 1e4, OnNonFinite = NonFiniteAction.Skip };
        using var t = new LocalTrainer(SmallConfig(ModelKind.MoPoE), options, data, null);
        var e = Assert.Throws<NonFiniteException>(() => t.Run());
        Assert.Contains($"{NonFinite.MaxSkippedInARow} steps in a row were skipped", e.Message);
        var events = File.ReadAllLines(Path.Combine(root, "skipping", LocalTrainer.EventsFile)).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.Equal(NonFinite.MaxSkippedInARow, events.Count(x => x.GetProperty("event").GetString() == "skipped"));
        Assert.Equal("diverged", events[^1].GetProperty("event").GetString());
    }

    [Fact]
    public void ACheckpointWithOneFlippedByteIsRefusedByNameAndNotLoaded()
    {
        var data = Synthetic(3, 40, 10);
        var options = Options("flipped", 2);
        using (var t = new LocalTrainer(SmallConfig(), options, data, null)) t.Run();
        foreach (var file in new[] { "model.bin", "optimizer.bin", CheckpointDirectory.StateFile })
        {
            string path = Path.Combine(root, "flipped", "checkpoints", "last", file);
            var bytes = File.ReadAllBytes(path);
            bytes[bytes.Length / 2] ^= 0x10;
            File.WriteAllBytes(path, bytes);
            var e = Assert.Throws<CheckpointException>(() => new LocalTrainer(SmallConfig(), options with { Resume = true }, data, null));
            Assert.Contains(path, e.Message);
            Assert.Contains("damaged", e.Message);
            bytes[bytes.Length / 2] ^= 0x10;
            File.WriteAllBytes(path, bytes);
        }
        using var intact = new LocalTrainer(SmallConfig(), options with { Resume = true }, data, null);   // restored bytes: loads again
        Assert.Equal(2, intact.Step);
    }
}
