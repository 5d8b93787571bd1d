using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using MrVae.Data;
using MrVae.Model;
using MrVae.Model.Training;

namespace MrVae.Evaluation;

/// <summary>
/// One experiment size: data, architecture width, training length, pixel likelihood and evaluation effort, equal
/// for every model. ci and quick use a Gaussian likelihood (σ = 0.1): with model.md's Laplace (b = 0.75) no model
/// learns digits within a few hundred steps (coherence at chance, decoders draw the background), see README.
/// </summary>
public sealed record ExperimentBudget(string Name, int Train, int Test, int Latent, int Batch, int Epochs, double LearningRate,
    int Samples, int ClassifierEpochs, int ProbeTrain, PixelLikelihood Likelihood = PixelLikelihood.Laplace, double LikelihoodScale = 0.75,
    int LikelihoodSamples = 100, int LikelihoodTuples = 500, long WarmupSteps = 0, bool EqualDigitWeight = false)
{
    public static readonly ExperimentBudget Ci = new("ci", Train: 2000, Test: 500, Latent: 16, Batch: 64, Epochs: 2, LearningRate: 1e-3,
        Samples: 200, ClassifierEpochs: 5, ProbeTrain: 1000, Likelihood: PixelLikelihood.Gaussian, LikelihoodScale: 0.1, LikelihoodSamples: 16, LikelihoodTuples: 100);
    public static readonly ExperimentBudget Quick = new("quick", Train: 16000, Test: 2000, Latent: 16, Batch: 128, Epochs: 5, LearningRate: 1e-3,
        Samples: 1000, ClassifierEpochs: 5, ProbeTrain: 5000, Likelihood: PixelLikelihood.Gaussian, LikelihoodScale: 0.1);
    /// <summary>
    /// Where every model learns the main digit of extended PolyMNIST: 12 epochs of 30000 tuples at batch 64 (5616
    /// steps), lr 1.5e-3, D = 64 (mrVAE never shares half of it, as the image defaults). More, smaller steps learn more
    /// per tuple than batch 128 at the same cost per tuple (docs/experiments.md, 2026-12-04).
    /// β and mrVAE's β_n warm up over the first 1500 steps: without it the structure prior prunes mrVAE's shared
    /// positions before the digit is learned (docs/experiments.md, fourth and fifth sessions).
    /// Every digit weighs alike (<see cref="ModelConfig.EqualDigitWeight"/>): with extended PolyMNIST's 10 × 10 corners
    /// weighed by their pixels, mrVAE found at most one of the five ring pairs (docs/experiments.md, fifteenth session).
    /// </summary>
    public static readonly ExperimentBudget Medium = new("medium", Train: 30000, Test: 2000, Latent: 64, Batch: 64, Epochs: 12, LearningRate: 1.5e-3,
        Samples: 1000, ClassifierEpochs: 3, ProbeTrain: 5000, Likelihood: PixelLikelihood.Gaussian, LikelihoodScale: 0.1, LikelihoodSamples: 64, LikelihoodTuples: 250,
        WarmupSteps: 1500, EqualDigitWeight: true);
    /// <summary>
    /// The paper's scale and model.md's likelihood (not run on the development machines). The warm-up covers the same
    /// quarter of the run as medium's: without one the structure prior prunes shared positions before the digit is
    /// learned (medium's evidence; not measured at this scale).
    /// </summary>
    public static readonly ExperimentBudget Full = new("full", Train: 60000, Test: 10000, Latent: 64, Batch: 256, Epochs: 50, LearningRate: 5e-4,
        Samples: 10000, ClassifierEpochs: 10, ProbeTrain: 10000, WarmupSteps: 3000);

    public static ExperimentBudget Named(string name) => name.ToLowerInvariant() switch
    {
        "ci" => Ci, "quick" => Quick, "medium" => Medium, "full" => Full,
        _ => throw new UserInputException($"unknown budget '{name}': use ci, quick, medium or full"),
    };

    public ModelConfig Model(ModelKind kind, int modalities) => TrainingDefaults.Images.ForMrVae(new()
    {
        Kind = kind, Modalities = modalities, LatentDim = Latent, Likelihood = Likelihood, LikelihoodScale = LikelihoodScale,
        BetaWarmupSteps = WarmupSteps, StructureWarmupSteps = WarmupSteps, EqualDigitWeight = EqualDigitWeight,
    });
}

public sealed record ExperimentOptions
{
    public required string OutputDirectory { get; init; }
    public required ExperimentBudget Budget { get; init; }
    public long Seed { get; init; }
    /// <summary>MNIST directory (null: the usual lookup).</summary>
    public string? Mnist { get; init; }
    public ModelKind[] Models { get; init; } = [ModelKind.MrVae, ModelKind.MoPoE, ModelKind.Mvae, ModelKind.Mmvae];
    public string[] Datasets { get; init; } = ["polymnist", "polymnist-extended"];
    /// <summary>Model options NAME=VALUE applied to every model's configuration (<see cref="ModelConfig.WithSettings"/>).</summary>
    public string[] Settings { get; init; } = [];
    /// <summary>Every training step of every run, with the run's name (dataset-model), e.g. for a progress bar.</summary>
    public Action<string, StepReport>? OnStep { get; init; }
}

/// <summary>
/// `mrvae experiment paper`: the paper's Tables 1 and 2 (coherence and sample quality of mrVAE vs MoPoE on vanilla
/// and extended PolyMNIST), measured for mrVAE, MoPoE, MVAE and MMVAE trained with the same architecture, latent
/// size, optimiser, seed and number of steps, and written beside the paper's figures.
/// </summary>
public static class PaperExperiment
{
    /// <summary>The paper's figures (workshop paper, Tables 1–2): coherence (accuracy) and FID, for mrVAE and MoPoE.</summary>
    public static readonly Dictionary<(string Dataset, string Table, string Row), (double MrVae, double MoPoE)> Paper = new()
    {
        [("polymnist", "coherence", "x0->x0")] = (0.50, 0.47),
        [("polymnist", "coherence", "X{0,1}->x0")] = (0.51, 0.51),
        [("polymnist", "coherence", "X{0,1,2}->x0")] = (0.51, 0.53),
        [("polymnist-extended", "coherence", "x0->x0")] = (0.40, 0.31),
        [("polymnist-extended", "coherence", "X{0,1}->x0")] = (0.44, 0.32),
        [("polymnist-extended", "coherence", "X{0,1,2}->x0")] = (0.44, 0.32),
        [("polymnist", "fd", "x0->x0")] = (105.8, 108.7),
        [("polymnist", "fd", "x1->x0")] = (129.9, 216.6),
        [("polymnist", "fd", "X{1,2}->x0")] = (139.6, 221.5),
        [("polymnist-extended", "fd", "x0->x0")] = (95.1, 157.9),
        [("polymnist-extended", "fd", "x1->x0")] = (182.4, 265.5),
        [("polymnist-extended", "fd", "X{1,2}->x0")] = (189.0, 311.6),
    };

    public static readonly string[] CoherenceRows = ["x0->x0", "X{0,1}->x0", "X{0,1,2}->x0"];
    public static readonly string[] FdRows = ["x0->x0", "x1->x0", "X{1,2}->x0"];

    public static string ModelName(ModelKind kind) => kind.ToString().ToLowerInvariant();

    public static string DisplayName(ModelKind kind) => Evaluator.DisplayName(kind);

    static string Warmup(ModelConfig c) =>
        (c.BetaWarmupSteps > 0 ? $", β warm-up {c.BetaWarmupSteps} steps" : "")
        + (c.Kind != ModelKind.MrVae ? "" : $", β_n {c.BetaSize}" + (c.StructureWarmupSteps > 0 ? $", β_n warm-up {c.StructureWarmupSteps} steps" : ""));

    /// <summary>A model's configuration in this experiment: the budget's, with the user's --set values applied (mrVAE's structure switches to mrVAE only).</summary>
    static ModelConfig Config(ExperimentOptions options, ModelKind kind, PolyMnistSpec spec) =>
        options.Budget.Model(kind, spec.Modalities).WithDigitSquares(spec).WithSettings(options.Settings).WithStructureOptionsForMrVaeOnly();

    /// <summary>Refuses an unknown dataset or a --set that a model of the experiment does not accept, before any data are made or any run trains.</summary>
    public static void Validate(ExperimentOptions options)
    {
        foreach (var dataset in options.Datasets)
        {
            var spec = PolyMnistSpec.Resolve(dataset);
            foreach (var kind in options.Models) Config(options, kind, spec).Validated();
        }
    }

    /// <summary>Every dataset one after another, each written as its part, then the parts joined (<see cref="Combine"/>).</summary>
    public static JsonObject Run(ExperimentOptions options, Action<string>? log = null)
    {
        var total = Stopwatch.StartNew();
        foreach (var dataset in options.Datasets) RunPart(options, dataset, log);
        return Combine(options, total.Elapsed, log);
    }

    /// <summary>
    /// One dataset's runs, written to <c>parts/NAME.json</c>: the work of one process of `experiment paper --parallel`,
    /// which <see cref="Combine"/> joins into the tables.
    /// </summary>
    public static JsonObject RunPart(ExperimentOptions options, string dataset, Action<string>? log = null)
    {
        var runs = new JsonObject();
        foreach (var (name, run) in RunDataset(options, dataset, log)) runs[name] = run;
        string file = PartFile(options, dataset);
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        File.WriteAllText(file, runs.ToJsonString(Indented));
        return runs;
    }

    /// <summary>Joins the parts of every dataset (in the order of the options) into results.json and tables.md.</summary>
    public static JsonObject Combine(ExperimentOptions options, TimeSpan wall, Action<string>? log = null)
    {
        var runs = new JsonObject();
        foreach (var dataset in options.Datasets)
        {
            string file = PartFile(options, dataset);
            if (!File.Exists(file)) throw new InvalidOperationException($"the experiment's part for {dataset} is missing: {file}");
            foreach (var (name, run) in JsonNode.Parse(File.ReadAllText(file))!.AsObject().ToList()) runs[name] = run?.DeepClone();
        }
        var results = new JsonObject
        {
            ["budget"] = JsonNode.Parse(JsonSerializer.Serialize(options.Budget, CheckpointDirectory.Json)),
            ["seed"] = options.Seed,
            ["models"] = new JsonArray(options.Models.Select(k => (JsonNode?)ModelName(k)).ToArray()),
            ["runs"] = runs,
            ["wall_seconds"] = Math.Round(wall.TotalSeconds, 1),
        };
        File.WriteAllText(Path.Combine(options.OutputDirectory, "results.json"), results.ToJsonString(Indented));
        File.WriteAllText(Path.Combine(options.OutputDirectory, "tables.md"), Tables(results, options));
        log?.Invoke($"tables: {Path.Combine(options.OutputDirectory, "tables.md")} ({wall.TotalMinutes:F1} min in all)");
        return results;
    }

    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    static string PartFile(ExperimentOptions options, string dataset) =>
        Path.Combine(options.OutputDirectory, "parts", PolyMnistSpec.Resolve(dataset).Name + ".json");

    static IEnumerable<(string Name, JsonObject Run)> RunDataset(ExperimentOptions options, string dataset, Action<string>? log)
    {
        var b = options.Budget;
        Directory.CreateDirectory(options.OutputDirectory);
        var spec = PolyMnistSpec.Resolve(dataset);
        string dataDir = Path.Combine(options.OutputDirectory, "data", spec.Name);
        if (!DataMatches(dataDir, spec, b))
        {
            string mnist = MnistLocator.Resolve(options.Mnist);
            log?.Invoke($"making {spec.Name}: {b.Train} train / {b.Test} test tuples in {dataDir}");
            var trainSplit = PolyMnistGenerator.Generate(spec, MnistIdx.Load(mnist, train: true), b.Train, (int)options.Seed);
            var testSplit = PolyMnistGenerator.Generate(spec, MnistIdx.Load(mnist, train: false), b.Test, (int)options.Seed, streamOffset: 1);
            PolyMnistStore.Save(dataDir, spec, trainSplit, testSplit);
        }
        var train = LabelledSplit.Load(dataDir, "train", spec);
        var test = LabelledSplit.Load(dataDir, "test", spec);
        foreach (var kind in options.Models)
        {
            string name = $"{spec.Name}-{ModelName(kind)}";
            string runDir = Path.Combine(options.OutputDirectory, "runs", name);
            var config = Config(options, kind, spec);
            var trainOptions = new TrainOptions
            {
                RunDirectory = runDir, BatchSize = b.Batch, Epochs = b.Epochs, Seed = options.Seed, LearningRate = b.LearningRate,
                TestSamples = Math.Min(b.Test, 1000), Data = DatasetFingerprint.Of(dataDir),
            };
            var watch = Stopwatch.StartNew();
            TrainResult? trained = null;
            if (TrainedAlready(runDir, config, b, train.Count)) log?.Invoke($"{name}: reusing the finished run in {runDir}");
            else
            {
                using var trainer = new LocalTrainer(config, trainOptions, train.ToDataset(), test.ToDataset());
                long every = Math.Max(1, trainer.TotalSteps / 10);
                log?.Invoke($"{name}: training {trainer.TotalSteps} steps (D={config.LatentDim}, batch {b.Batch}, {b.Epochs} epochs, lr {b.LearningRate}{Warmup(config)})");
                trained = trainer.Run(r =>
                {
                    options.OnStep?.Invoke(name, r);
                    if ((r.Step + 1) % every == 0 || r.Step + 1 == r.TotalSteps)
                        log?.Invoke($"{name}: step {r.Step + 1}/{r.TotalSteps} loss {r.Terms["loss"]:F1} ({r.StepMilliseconds:F0} ms/step)");
                });
            }
            double trainSeconds = watch.Elapsed.TotalSeconds;
            watch.Restart();
            var evaluation = Evaluator.Run(new EvalOptions
            {
                RunDirectory = runDir, DataDirectory = dataDir, OutputDirectory = Path.Combine(options.OutputDirectory, "reports", name),
                Seed = options.Seed, CrossModal = new CrossModalSettings { Samples = b.Samples },
                Classifiers = new ClassifierTraining { Epochs = b.ClassifierEpochs }, ProbeTrainSamples = b.ProbeTrain,
                LikelihoodSamples = b.LikelihoodSamples, LikelihoodTuples = b.LikelihoodTuples,
            }, log);
            var report = evaluation.Report;
            JsonNode? Node<T>(T value) => JsonSerializer.SerializeToNode(value, EvaluationReport.Json);
            yield return (name, new JsonObject
            {
                ["dataset"] = spec.Name, ["model"] = ModelName(kind),
                ["train_seconds"] = trained is null ? null : Math.Round(trainSeconds, 1),
                ["median_step_ms"] = trained is null ? null : Math.Round(trained.MedianStepMilliseconds, 1),
                ["eval_seconds"] = Math.Round(watch.Elapsed.TotalSeconds, 1),
                ["test_loss"] = report.Model.TestLoss,
                ["coherence"] = Node(report.Coherence.PaperRows),
                ["coherence_x1_to_x0"] = report.Coherence.Main.GetValueOrDefault("in=1->out=0"),
                ["coherence_mean_by_input_count"] = Node(report.Coherence.MainMeanByInputCount),
                ["joint_coherence"] = report.JointCoherence.Main,
                ["test_log_likelihood"] = report.TestLogLikelihood?.MeanNats,
                ["corner"] = report.Coherence.CornerSummary is { } cs
                    ? new JsonObject { ["shared_mean"] = cs.SharedMean, ["unshared_mean"] = cs.UnsharedMean } : null,
                ["fd"] = Node(report.Fd.PaperRows),
                ["fd_real_floor"] = report.Fd.RealTrainVsTest.GetValueOrDefault("out=0"),
                ["relation"] = report.Relation is { } rel
                    ? new JsonObject
                    {
                        ["precision"] = rel.Precision, ["recall"] = rel.Recall,
                        ["found"] = new JsonObject(rel.Subsets.Where(x => x.Found).Select(x => KeyValuePair.Create(x.Subset, (JsonNode?)x.MostProbableSize))),
                    } : null,
                ["latent_probe"] = Node(report.LatentProbe.Main),
                ["classifier_main_accuracy"] = report.ClassifierMainMean,
                ["classifier_corner_accuracy"] = report.ClassifierOtherPositionsMean,
            });
        }
    }

    static bool DataMatches(string dir, PolyMnistSpec spec, ExperimentBudget b)
    {
        if (!File.Exists(Path.Combine(dir, PolyMnistStore.SpecFile))) return false;
        try
        {
            var existing = PolyMnistStore.LoadSpec(dir);
            PolyMnistStore.LoadLabels(dir, "train", out int train, out _);
            PolyMnistStore.LoadLabels(dir, "test", out int test, out _);
            return existing.Name == spec.Name && train == b.Train && test == b.Test;
        }
        catch (DataFormatException) { return false; }
    }

    static bool TrainedAlready(string runDir, ModelConfig config, ExperimentBudget b, int trainCount)
    {
        string state = Path.Combine(runDir, "checkpoints", "last", CheckpointDirectory.StateFile);
        if (!File.Exists(state)) return false;
        try
        {
            var (_, s) = CheckpointDirectory.Read(Path.Combine(runDir, "checkpoints", "last"));
            long steps = (long)b.Epochs * (trainCount / b.Batch);   // TrainingSchedule: whole batches per epoch
            return s.Model == config && s.Step >= steps && File.Exists(Path.Combine(runDir, "checkpoints", "best", CheckpointDirectory.StateFile));
        }
        catch (CheckpointException) { return false; }
    }

    static string F(JsonNode? n, string format) => n is null ? "–" : n.GetValue<double>().ToString(format, CultureInfo.InvariantCulture);

    /// <summary>The two tables per dataset, ours beside the paper's, plus what the paper did not report.</summary>
    public static string Tables(JsonObject results, ExperimentOptions options)
    {
        var b = options.Budget;
        var md = new StringBuilder();
        md.Append($"# Paper tables, budget `{b.Name}`\n\n");
        bool mrvae = options.Models.Contains(ModelKind.MrVae);
        var mrvaeConfig = Config(options, ModelKind.MrVae, PolyMnistSpec.Vanilla());
        md.Append($"Every model: D = {mrvaeConfig.LatentDim}, {b.Epochs} epochs of {b.Train} training tuples (batch {b.Batch}, Adam lr {b.LearningRate}), {b.Likelihood} likelihood with scale {b.LikelihoodScale}{(mrvaeConfig.EqualDigitWeight ? " (each digit's square at scale × side / largest side, so every digit weighs as much)" : "")}, seed {options.Seed}, ");
        if (mrvae) md.Append($"mrVAE's structure-prior weight β_n = {mrvaeConfig.BetaSize}, ");
        if (b.WarmupSteps > 0) md.Append($"β{(mrvae ? " and β_n" : "")} warmed up linearly over the first {b.WarmupSteps} steps, ");
        if (options.Settings.Length > 0) md.Append($"model settings {string.Join(", ", options.Settings)} (mrVAE's structure switches reach mrVAE only), ");
        md.Append($"checkpoint with the lowest test loss; evaluated on {b.Samples} test tuples per input subset. Digit classifiers: {b.ClassifierEpochs} epochs on the same training split. ");
        md.Append($"Wall time {F(results["wall_seconds"], "F0")} s.\n\n");
        md.Append("Paper columns: Sutter & Vogt's workshop paper, Tables 1 and 2 (mrVAE and MoPoE only). Our sample quality is FD on the project's digit-classifier features, ");
        md.Append("the paper's is FID on Inception features: compare orderings, not magnitudes.\n\n");
        var runs = results["runs"]!.AsObject();
        foreach (var spec in options.Datasets.Select(PolyMnistSpec.Resolve))
        {
            string dataset = spec.Name;
            string title = dataset switch { "polymnist" => "PolyMNIST vanilla", "polymnist-extended" => "PolyMNIST extended", _ => $"PolyMNIST spec '{dataset}'" };
            string table = dataset switch { "polymnist" => "a", "polymnist-extended" => "b", _ => "" };
            var models = options.Models.Where(k => runs.ContainsKey($"{dataset}-{ModelName(k)}")).ToArray();
            JsonNode Run(ModelKind k) => runs[$"{dataset}-{ModelName(k)}"]!;
            string header = "| input → output |" + string.Concat(models.Select(k => $" {DisplayName(k)} |")) + " mrVAE (paper) | MoPoE (paper) |\n|---|" + string.Concat(Enumerable.Repeat("---|", models.Length + 2)) + "\n";
            string PaperCells(string kind, string row, string format) => Paper.TryGetValue((dataset, kind, row), out var p)
                ? $" {p.MrVae.ToString(format, CultureInfo.InvariantCulture)} | {p.MoPoE.ToString(format, CultureInfo.InvariantCulture)} |" : " – | – |";
            md.Append($"## {title}: coherence (Table 1{table})\n\n{header}");
            foreach (var row in CoherenceRows)
                md.Append($"| {row} |" + string.Concat(models.Select(k => $" {F(Run(k)["coherence"]![row], "F3")} |")) + PaperCells("coherence", row, "F2") + "\n");
            md.Append($"\n## {title}: sample quality (Table 2{table}; ours FD, paper FID)\n\n{header}");
            foreach (var row in FdRows)
                md.Append($"| {row} |" + string.Concat(models.Select(k => $" {F(Run(k)["fd"]![row], "F1")} |")) + PaperCells("fd", row, "F1") + "\n");
            md.Append($"| real train vs real test (FD floor) |" + string.Concat(models.Select(k => $" {F(Run(k)["fd_real_floor"], "F1")} |")) + " | |\n");
            md.Append($"\n### {title}: beyond the paper\n\n| model | x1→x0 | mean coherence, 1 input → others | joint coherence (prior) | corner shared / unshared | relation precision / recall | latent probe x0 / all | test log-likelihood (IWAE, K = {b.LikelihoodSamples}) | test loss | train s | eval s |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
            foreach (var k in models)
            {
                var r = Run(k);
                var probe = r["latent_probe"]!.AsObject();
                md.Append($"| {DisplayName(k)} | {F(r["coherence_x1_to_x0"], "F3")} | {F(r["coherence_mean_by_input_count"]?["1"], "F3")} | {F(r["joint_coherence"], "F3")} | ");
                md.Append(r["corner"] is JsonObject c ? $"{F(c["shared_mean"], "F3")} / {F(c["unshared_mean"], "F3")}" : "–");
                md.Append(" | ");
                md.Append(r["relation"] is JsonObject rel ? $"{F(rel["precision"], "F2")} / {F(rel["recall"], "F2")}" : "–");
                md.Append($" | {F(probe.FirstOrDefault().Value, "F3")} / {F(probe.LastOrDefault().Value, "F3")} | {F(r["test_log_likelihood"], "F0")} | {F(r["test_loss"], "F0")} | {F(r["train_seconds"], "F0")} | {F(r["eval_seconds"], "F0")} |\n");
            }
            foreach (var k in models)
                if (Run(k)["relation"]?["found"] is JsonObject found)
                    md.Append($"\n{DisplayName(k)}'s inferred relation (subsets with at least one position in the most probable structure, and their n_A): {string.Join(", ", found.Select(p => $"{p.Key} {p.Value}"))}; truth: {string.Join(" ", RelationRecovery.Truth(spec).Select(SubsetFamily.Format))}.\n");
            var any = models.Select(Run).FirstOrDefault();
            if (any is not null)
            {
                md.Append($"\nDigit classifiers (test accuracy): main digit {F(any["classifier_main_accuracy"], "F3")}");
                if (any["classifier_corner_accuracy"] is not null) md.Append($", corner digits {F(any["classifier_corner_accuracy"], "F3")}");
                md.Append(". Chance is 0.1.\n\n");
            }
            md.Append($"Reports: {string.Join(", ", models.Select(k => $"[`{dataset}-{ModelName(k)}`](reports/{dataset}-{ModelName(k)}/report.md)"))}.\n\n");
        }
        return md.ToString();
    }
}
