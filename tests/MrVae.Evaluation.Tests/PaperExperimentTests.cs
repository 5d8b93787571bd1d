using System.Text.Json.Nodes;
using MrVae.Model;
using MrVae.Data;

namespace MrVae.Evaluation.Tests;

public sealed class PaperExperimentTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-experiment-" + Guid.NewGuid().ToString("N"));
    public void Dispose() { if (Directory.Exists(root)) Directory.Delete(root, recursive: true); }

    [Fact, Trait("Category", "Slow")]   // trains four runs and evaluates them: about a minute
    public void AMicroBudgetWritesBothTablesBesideThePapersFiguresAndReusesFinishedRuns()
    {
        var micro = new ExperimentBudget("micro", Train: 160, Test: 48, Latent: 4, Batch: 32, Epochs: 1, LearningRate: 1e-3,
            Samples: 24, ClassifierEpochs: 1, ProbeTrain: 100, EqualDigitWeight: true);
        var options = new ExperimentOptions { OutputDirectory = root, Budget = micro, Models = [ModelKind.MrVae, ModelKind.MoPoE], Datasets = ["polymnist-extended"], Settings = ["BetaSize=0.5", "SubsetOwnDropout=0.25"] };
        var logs = new List<string>();
        var results = PaperExperiment.Run(options, logs.Add);
        var runs = results["runs"]!.AsObject();
        Assert.Equal(["polymnist-extended-mrvae", "polymnist-extended-mopoe"], runs.Select(r => r.Key));
        Assert.Equal(PaperExperiment.CoherenceRows, runs["polymnist-extended-mrvae"]!["coherence"]!.AsObject().Select(p => p.Key));
        Assert.Equal(PaperExperiment.FdRows, runs["polymnist-extended-mopoe"]!["fd"]!.AsObject().Select(p => p.Key));
        Assert.NotNull(runs["polymnist-extended-mrvae"]!["relation"]);
        Assert.Null(runs["polymnist-extended-mopoe"]!["relation"]);
        Assert.NotNull(runs["polymnist-extended-mopoe"]!["corner"]!["shared_mean"]);

        // A --set reaches every model's run that has the setting, and the tables say so.
        JsonNode Model(string run) => JsonNode.Parse(File.ReadAllText(Path.Combine(root, "runs", run, "config.json")))!["model"]!;
        double Setting(string run, string name) => Model(run)[name]!.GetValue<double>();
        Assert.Equal(0.5, Setting("polymnist-extended-mrvae", "beta_size"));
        Assert.Equal(0.5, Setting("polymnist-extended-mopoe", "beta_size"));
        // mrVAE's structure switches reach mrVAE only: MoPoE would refuse them.
        Assert.Equal((0.25, 0.0), (Setting("polymnist-extended-mrvae", "subset_own_dropout"), Setting("polymnist-extended-mopoe", "subset_own_dropout")));
        // Every model weighs the digits alike, with the squares of the dataset's spec: one main digit and two corners per modality.
        foreach (var run in new[] { "polymnist-extended-mrvae", "polymnist-extended-mopoe" })
        {
            var model = Model(run);
            Assert.True(model["equal_digit_weight"]!.GetValue<bool>());
            Assert.Equal(15, model["digit_squares"]!.AsArray().Count);
        }

        string tables = File.ReadAllText(Path.Combine(root, "tables.md"));
        Assert.Contains("mrVAE's structure-prior weight β_n = 0.5, model settings BetaSize=0.5, SubsetOwnDropout=0.25 (mrVAE's structure switches reach mrVAE only)", tables);
        Assert.Contains("## PolyMNIST extended: coherence (Table 1b)", tables);
        Assert.Contains("so every digit weighs as much", tables);
        Assert.Contains("| input → output | mrVAE | MoPoE | mrVAE (paper) | MoPoE (paper) |", tables);
        Assert.Matches(@"\| x0->x0 \| [0-9.]+ \| [0-9.]+ \| 0\.40 \| 0\.31 \|", tables);
        Assert.Matches(@"\| X\{1,2\}->x0 \| [0-9.]+ \| [0-9.]+ \| 189\.0 \| 311\.6 \|", tables);
        Assert.True(File.Exists(Path.Combine(root, "reports", "polymnist-extended-mrvae", "relation_heatmap.png")));
        Assert.Equal("micro", JsonNode.Parse(File.ReadAllText(Path.Combine(root, "results.json")))!["budget"]!["name"]!.GetValue<string>());

        // Again: the data, classifiers and finished trainings are reused.
        logs.Clear();
        PaperExperiment.Run(options, logs.Add);
        Assert.DoesNotContain(logs, l => l.StartsWith("making", StringComparison.Ordinal));
        Assert.Equal(2, logs.Count(l => l.Contains("reusing the finished run")));
        Assert.Equal(2, logs.Count(l => l.StartsWith("reusing digit classifiers", StringComparison.Ordinal)));
    }

    [Fact]
    public void BudgetsAreNamedAndUnknownOnesFailClearly()
    {
        Assert.Equal(ExperimentBudget.Ci, ExperimentBudget.Named("CI"));
        Assert.Equal(64, ExperimentBudget.Named("full").Latent);
        Assert.Contains("use ci, quick, medium or full", Assert.Throws<UserInputException>(() => ExperimentBudget.Named("huge")).Message);
        Assert.Equal(12, PaperExperiment.Paper.Count);
    }
}
