using System.Text.Json.Nodes;
using MrVae.Data;
using MrVae.Model;
using MrVae.Model.Training;
using Xunit.Abstractions;

namespace MrVae.Evaluation.Tests;

/// <summary>`mrvae eval`'s engine on a tiny trained run over a dataset directory, as the command line calls it.</summary>
[Collection(PolyMnistCollection.Name)]
public sealed class EndToEndTests(PolyMnistFixture data, ITestOutputHelper output) : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-eval-" + Guid.NewGuid().ToString("N"));
    public void Dispose() { if (Directory.Exists(root)) Directory.Delete(root, recursive: true); }

    static readonly ClassifierTraining QuickClassifiers = new() { Epochs = 1, BatchSize = 64, LearningRate = 2e-3, MaxTrainSamples = 1500 };

    string TrainRun(string dataDir, ModelKind kind, string name)
    {
        var (train, test) = data.Extended;
        var config = new ModelConfig { Kind = kind, Modalities = 5, LatentDim = 6, EncoderHidden = 32 };
        var options = new TrainOptions { RunDirectory = Path.Combine(root, name), BatchSize = 32, Steps = 12, EvaluateEvery = 6, Seed = 1, LearningRate = 1e-3, TestSamples = 64 };
        using var trainer = new LocalTrainer(config, options, train.ToDataset(), test.ToDataset());
        trainer.Run();
        return options.RunDirectory;
    }

    EvalOptions Options(string run, string dataDir, string outDir) => new()
    {
        RunDirectory = run, DataDirectory = dataDir, OutputDirectory = outDir, Seed = 2,
        CrossModal = new CrossModalSettings { Samples = 48, BatchSize = 48, GridSamples = 4 },
        Classifiers = QuickClassifiers, ProbeTrainSamples = 400, LikelihoodSamples = 4, LikelihoodTuples = 16,
    };

    [Fact]
    public void EvalOfATinyMrVaeRunWritesTheReportAndReusesClassifiers()
    {
        string dataDir = Path.Combine(root, "data");
        data.SaveExtended(dataDir);
        string run = TrainRun(dataDir, ModelKind.MrVae, "mrvae");
        var logs = new List<string>();
        string outDir = Path.Combine(root, "report");
        Evaluator.Run(Options(run, dataDir, outDir), logs.Add);
        foreach (var l in logs) output.WriteLine(l);

        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, Evaluator.ReportJson)))!.AsObject();
        var main = report["coherence"]!["main"]!.AsObject();
        Assert.Equal(31 * 5, main.Count);
        Assert.InRange(main["in=0,1->out=0"]!.GetValue<double>(), 0, 1);
        Assert.Equal(31 * 5 * 2, report["coherence"]!["corner"]!.AsObject().Count);
        Assert.NotNull(report["coherence"]!["corner"]!["in=0->out=1:corner-0-1"]);
        Assert.NotNull(report["coherence"]!["corner_summary"]!["shared_mean"]);
        Assert.Equal(["x0->x0", "X{0,1}->x0", "X{0,1,2}->x0"], report["coherence"]!["paper_rows"]!.AsObject().Select(p => p.Key));
        var fd = report["fd"]!["paper_rows"]!.AsObject();
        Assert.Equal(["x0->x0", "x1->x0", "X{1,2}->x0"], fd.Select(p => p.Key));
        Assert.All(fd, p => Assert.True(p.Value!.GetValue<double>() > 0));
        Assert.True(report["fd"]!["real_train_vs_test"]!["out=0"]!.GetValue<double>() < fd["x0->x0"]!.GetValue<double>(), "real images should be closer to real images than an untrained model's samples");
        var relation = report["relation"]!.AsObject();
        Assert.Equal(26, relation["subsets"]!.AsArray().Count);
        Assert.True(relation.ContainsKey("precision") && relation.ContainsKey("recall"));
        Assert.Equal(6, relation["truth"]!.GetValue<int>());
        Assert.Equal(6, relation["subsets"]!.AsArray().Count(s => s!["shared_in_spec"]!.GetValue<bool>()));
        Assert.Equal(15 + 2, report["classifier_accuracy"]!.AsObject().Count);   // 15 positions, main mean, other mean
        Assert.Equal(5 + 3, report["latent_probe"]!["main"]!.AsObject().Count);   // singles, {0,1}, {0,1,2}, all
        // Each factor's subspace is the relation's most probable subspace of its member set, probed from each member.
        var subspaces = report["latent_probe"]!["subspaces"]!.AsArray();
        Assert.Equal(6, subspaces.Count);
        foreach (var s in subspaces)
        {
            var size = relation["subsets"]!.AsArray().Single(r => r!["subset"]!.GetValue<string>() == s!["members"]!.GetValue<string>())!["most_probable_size"]!.GetValue<int>();
            Assert.Equal(size, s!["subspace_positions"]!.GetValue<int>());
            var byMember = s["by_member"]!.AsObject();
            Assert.Equal(s["members"]!.GetValue<string>().Count(c => c == ',') + 1, byMember.Count);
            Assert.All(byMember, p => Assert.Equal(size == 0, p.Value!["subspace"] is null));
        }
        foreach (var png in new[] { "coherence.png", "relation_heatmap.png", "relation_pairs.png", "relation_information.png", "training_curves.png", "samples/in-0.png", "samples/in-1-2.png", "samples/in-0-1-2-3-4.png" })
            Assert.True(File.Exists(Path.Combine(outDir, png)), png);
        Assert.Equal(31 + 1, Directory.GetFiles(Path.Combine(outDir, "samples")).Length);   // every input subset, and the prior
        Assert.Equal(6, report["joint_coherence"]!["factors"]!.AsObject().Count);
        Assert.InRange(report["joint_coherence"]!["main"]!.GetValue<double>(), 0, 1);
        Assert.Equal(4, report["test_log_likelihood"]!["importance_samples"]!.GetValue<int>());
        Assert.True(double.IsFinite(report["test_log_likelihood"]!["mean_nats"]!.GetValue<double>()));
        string md = File.ReadAllText(Path.Combine(outDir, Evaluator.ReportMarkdown));
        Assert.Contains("## Learned relation", md);
        Assert.Contains("relation_heatmap.png", md);
        Assert.Contains("| corner-0-1 | {0,1} |", md);   // where each factor lives
        Assert.True(File.Exists(Path.Combine(dataDir, "classifiers", ClassifierSet.ManifestFile)));
        Assert.Contains(logs, l => l.StartsWith("training digit classifiers", StringComparison.Ordinal));

        // The relation alone (no classifiers) is the full report's relation, with its figures.
        string relationDir = Path.Combine(root, "relation");
        var (alone, step) = Evaluator.RelationOnly(Options(run, dataDir, relationDir));
        Assert.Equal(relation.ToJsonString(), JsonNode.Parse(File.ReadAllText(Path.Combine(relationDir, Evaluator.RelationJson)))!.ToJsonString());
        Assert.Equal(report["model"]!["step"]!.GetValue<long>(), step);
        Assert.Equal(6, alone.Agreement!.Length);
        foreach (var png in new[] { "relation_heatmap.png", "relation_pairs.png", "relation_information.png" })
            Assert.True(File.Exists(Path.Combine(relationDir, png)), png);

        // A second evaluation (MoPoE) of the same data reuses the classifiers, and has no relation.
        string mopoe = TrainRun(dataDir, ModelKind.MoPoE, "mopoe");
        logs.Clear();
        var second = Evaluator.Run(Options(mopoe, dataDir, Path.Combine(root, "report-mopoe")) with { Checkpoint = "last" }, logs.Add);
        Assert.Contains(logs, l => l.StartsWith("reusing digit classifiers", StringComparison.Ordinal));
        Assert.Null(second.Report.Relation);
        Assert.Null(second.Report.LatentProbe.Subspaces);
        Assert.Equal(report["classifier_accuracy"]!.ToJsonString(), second.Report.ToJsonObject()["classifier_accuracy"]!.ToJsonString());
        Assert.Equal("last", second.Report.Model.Checkpoint);
        var refused = Assert.Throws<UserInputException>(() => Evaluator.RelationOnly(Options(mopoe, dataDir, Path.Combine(root, "relation-mopoe")) with { Checkpoint = "last" }));
        Assert.Contains("--relation-only is for mrVAE runs", refused.Message);
    }

    [Fact]
    public void MissingRunsCheckpointsAndMismatchedDataFailWithOneClearMessage()
    {
        var missing = Assert.Throws<UserInputException>(() => Evaluator.ResolveCheckpoint(Path.Combine(root, "nope"), "best"));
        Assert.Contains("not found", missing.Message);
        Directory.CreateDirectory(Path.Combine(root, "empty"));
        Assert.Contains("no checkpoint", Assert.Throws<UserInputException>(() => Evaluator.ResolveCheckpoint(Path.Combine(root, "empty"), "best")).Message);

        // A three-modality dataset for a five-modality run.
        string small = Path.Combine(root, "three");
        var spec = PolyMnistSpec.Vanilla(3);
        var mnist = MnistIdx.Load(MnistLocator.Resolve(null), train: false);
        PolyMnistStore.Save(small, spec, PolyMnistGenerator.Generate(spec, mnist, 20, 0), PolyMnistGenerator.Generate(spec, mnist, 10, 0, 1));
        string run = Path.Combine(root, "run");
        new LocalTrainerProbe().WriteCheckpoint(run);
        var e = Assert.Throws<DataFormatException>(() => Evaluator.Run(Options(run, small, Path.Combine(root, "out"))));
        Assert.Contains("5 modalities", e.Message);
        Assert.Contains("--data", e.Message);
        var named = Assert.Throws<UserInputException>(() => Evaluator.ResolveCheckpoint(run, "epoch-3"));
        Assert.Contains("pass --checkpoint", named.Message);
        Assert.Contains("no generated dataset", Assert.Throws<DataFormatException>(() => Evaluator.Run(Options(run, Path.Combine(root, "nodata"), Path.Combine(root, "out")))).Message);
    }

    [Fact]
    public void EvaluationChecksTheRunsTrainingDataFingerprint()
    {
        string dataDir = Path.Combine(root, "data");
        data.SaveExtended(dataDir);
        // config.json as a training run writes it (the trainer writes it when it starts).
        string run = Path.Combine(root, "run");
        var (train, test) = data.Extended;
        var config = new ModelConfig { Modalities = 5, LatentDim = 4, EncoderHidden = 16 };
        using (new LocalTrainer(config, new TrainOptions { RunDirectory = run, BatchSize = 8, Steps = 1, Data = DatasetFingerprint.Of(dataDir) }, train.ToDataset(), test.ToDataset())) { }

        var same = Evaluator.CheckData(run, dataDir, allowOther: false);
        Assert.True(same.MatchesTraining);
        Assert.Null(same.Warning);

        // The same structure made with another seed: evaluated, with a warning.
        var mnist = MnistIdx.Load(MnistLocator.Resolve(null), train: false);
        var spec = PolyMnistSpec.Extended();
        string reseeded = Path.Combine(root, "reseeded");
        PolyMnistStore.Save(reseeded, spec, PolyMnistGenerator.Generate(spec, mnist, 30, 7), PolyMnistGenerator.Generate(spec, mnist, 10, 7, 1));
        var logs = new List<string>();
        var other = Evaluator.CheckData(run, reseeded, allowOther: false, logs.Add);
        Assert.False(other.MatchesTraining);
        Assert.Contains("another seed", other.Warning);
        Assert.Contains(logs, l => l.StartsWith("warning:", StringComparison.Ordinal));

        // Another structure: an error unless allowed.
        string vanilla = Path.Combine(root, "vanilla");
        var vspec = PolyMnistSpec.Vanilla();
        PolyMnistStore.Save(vanilla, vspec, PolyMnistGenerator.Generate(vspec, mnist, 30, 3), PolyMnistGenerator.Generate(vspec, mnist, 10, 3, 1));
        var e = Assert.Throws<DataFormatException>(() => Evaluator.CheckData(run, vanilla, allowOther: false));
        Assert.Contains("--allow-other-data", e.Message);
        Assert.False(Evaluator.CheckData(run, vanilla, allowOther: true).MatchesTraining);

        // A run without a recorded fingerprint: evaluated, with a warning that it cannot be checked.
        File.WriteAllText(Path.Combine(run, LocalTrainer.ConfigFile), "{\"model\": {}, \"train\": {}}");
        Assert.Contains("no training-data fingerprint", Evaluator.CheckData(run, dataDir, allowOther: false).Warning);
    }

    sealed class LocalTrainerProbe
    {
        public void WriteCheckpoint(string run)
        {
            var config = new ModelConfig { Modalities = 5, LatentDim = 4, EncoderHidden = 16 };
            using var model = new MultimodalVae(config, 0);
            CheckpointDirectory.WriteAtomically(Path.Combine(run, "checkpoints", "best"), new CheckpointState { Step = 0, Model = config },
                dir => model.save(Path.Combine(dir, "model.bin")));
        }
    }
}
