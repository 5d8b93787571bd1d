using MrVae.Data;
using MrVae.Model;
using MrVae.Model.Training;
using Xunit.Abstractions;

namespace MrVae.Evaluation.Tests;

/// <summary>
/// mrVAE on vector data whose sharing structure is known exactly: training with the vector defaults recovers it,
/// and `mrvae eval`'s report reads as documented.
/// </summary>
public sealed class VectorEvaluationTests(ITestOutputHelper output) : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-vector-" + Guid.NewGuid().ToString("N"));
    public void Dispose() { if (Directory.Exists(root)) Directory.Delete(root, recursive: true); }

    string Train(string dataDir, ModelKind kind, VectorSpec spec)
    {
        var defaults = TrainingDefaults.Vectors;
        var config = new ModelConfig
        {
            Kind = kind, Modalities = spec.Modalities, LatentDim = defaults.LatentDim, Beta = defaults.Beta,
            Likelihood = defaults.Likelihood, LikelihoodScale = 0.1, ObservedDim = spec.ObservedDim,
        };
        var options = new TrainOptions { RunDirectory = Path.Combine(root, kind.ToString()), Steps = defaults.Steps, Seed = 0, LearningRate = defaults.LearningRate, TestSamples = 500 };
        using var trainer = new LocalTrainer(config, options, MultimodalDataset.Load(dataDir, "train", spec.Modalities), MultimodalDataset.Load(dataDir, "test", spec.Modalities));
        trainer.Run();
        return options.RunDirectory;
    }

    [Fact, Trait("Category", "Slow")]   // trains mrVAE until it finds the ring: about a minute
    public void MrVaeRecoversTheRingAndPredictsNearTheGaussianOptimum()
    {
        string dataDir = Path.Combine(root, "ring");
        var spec = VectorSpec.Ring();
        VectorStore.Make(dataDir, spec, train: 10000, test: 1000, seed: 0);
        string run = Train(dataDir, ModelKind.MrVae, spec);
        var report = VectorEvaluator.Run(new EvalOptions { RunDirectory = run, DataDirectory = dataDir, OutputDirectory = Path.Combine(root, "report") });
        output.WriteLine(File.ReadAllText(Path.Combine(root, "report", Evaluator.ReportMarkdown)));

        var relation = report.Relation!;
        Assert.Equal(1.0, relation.Precision);
        Assert.Equal(1.0, relation.Recall);
        Assert.All(relation.Subsets.Where(s => s.SharedInSpec), s => Assert.Equal(2, s.MostProbableSize));   // every factor has 2 dimensions
        Assert.True(report.Prediction.MeanRatioSingle >= 0.9, $"mean r2/r2_optimal {report.Prediction.MeanRatioSingle}");
        // No prediction beats the generating model's optimum beyond sampling error (1000 test samples).
        foreach (var (key, r2) in report.Prediction.R2) Assert.True(r2 <= report.Prediction.R2Optimal[key] + 0.03, $"{key}: r2 {r2} above the optimum {report.Prediction.R2Optimal[key]}");
        // Modalities 0 and 2 share only the 2-dimensional full-set factor: predicting one from the other uses it alone.
        Assert.InRange(report.Prediction.R2["in=0->out=2"], 0.9 * report.Prediction.R2Optimal["in=0->out=2"], 1);

        var again = VectorReport.FromJson(File.ReadAllText(Path.Combine(root, "report", Evaluator.ReportJson)));
        Assert.Equal(report.Prediction.R2, again.Prediction.R2);
        Assert.Equal(report.Relation!.Subsets.Select(s => s.MostProbableSize), again.Relation!.Subsets.Select(s => s.MostProbableSize));
    }
}
