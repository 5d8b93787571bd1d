using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using MrVae.Data;
using MrVae.Model;
using MrVae.Model.Objectives;
using MrVae.Model.Training;
using static TorchSharp.torch;

namespace MrVae.Evaluation;

public sealed record EvalOptions
{
    public required string RunDirectory { get; init; }
    public required string DataDirectory { get; init; }
    public required string OutputDirectory { get; init; }
    /// <summary>Checkpoint name under RUNDIR/checkpoints (best: the lowest test loss, the paper's model selection).</summary>
    public string Checkpoint { get; init; } = "best";
    public CrossModalSettings CrossModal { get; init; } = new();
    public long Seed { get; init; }
    /// <summary>Where the digit classifiers live (default DATA/classifiers).</summary>
    public string? ClassifierDirectory { get; init; }
    public ClassifierTraining Classifiers { get; init; } = new();
    /// <summary>Training tuples for the latent probe (test: <see cref="CrossModalSettings.Samples"/>).</summary>
    public int ProbeTrainSamples { get; init; } = 5000;
    /// <summary>Evaluate even when the data's sharing structure differs from the one the run was trained on.</summary>
    public bool AllowOtherData { get; init; }
    /// <summary>Importance samples K per test tuple for the test log-likelihood (0: not estimated).</summary>
    public int LikelihoodSamples { get; init; } = 100;
    /// <summary>Test tuples for the test log-likelihood (the first N).</summary>
    public int LikelihoodTuples { get; init; } = 500;
    /// <summary>TorchSharp-format state dict of torchvision's inception_v3: FID is computed too (null: FD only).</summary>
    public string? InceptionWeights { get; init; }
}

/// <summary>
/// `mrvae eval`: loads a run's checkpoint and the dataset, trains (or reuses) the digit classifiers, measures
/// coherence, FD, the learned relation and the latent probe, and writes report.json, report.md and PNGs.
/// </summary>
public static class Evaluator
{
    public const string ReportJson = "report.json", ReportMarkdown = "report.md";

    /// <summary>The model's name as papers write it.</summary>
    public static string DisplayName(ModelKind kind) => kind switch
    {
        ModelKind.MrVae => "mrVAE", ModelKind.MoPoE => "MoPoE", ModelKind.Mvae => "MVAE", ModelKind.Mmvae => "MMVAE", _ => kind.ToString(),
    };

    /// <summary>RUNDIR/checkpoints/NAME, checked, with its state; a missing "best" falls back to "final" (distributed runs).</summary>
    public static (string Directory, CheckpointState State) ResolveCheckpoint(string runDirectory, string name)
    {
        if (!Directory.Exists(runDirectory))
            throw new UserInputException($"run directory {runDirectory} not found: pass the --out directory of `mrvae train`");
        string checkpoints = Path.Combine(runDirectory, "checkpoints");
        var available = Directory.Exists(checkpoints)
            ? Directory.GetDirectories(checkpoints).Where(d => File.Exists(Path.Combine(d, CheckpointDirectory.StateFile))).Select(Path.GetFileName).Order().ToArray()
            : [];
        if (available.Length == 0)
            throw new UserInputException($"run {runDirectory} has no checkpoint (no checkpoints/*/state.json): let `mrvae train --out {runDirectory}` finish an evaluation first");
        string chosen = name;
        if (!available.Contains(name))
        {
            if (name == "best" && available.Contains("final")) chosen = "final";
            else throw new UserInputException($"run {runDirectory} has no checkpoint '{name}' (it has: {string.Join(", ", available)}); pass --checkpoint {available[0]}");
        }
        return CheckpointDirectory.Read(Path.Combine(checkpoints, chosen));
    }

    public static MultimodalVae LoadModel(string checkpointDirectory, ModelConfig config)
    {
        var model = new MultimodalVae(config, 0);
        try { model.load(Path.Combine(checkpointDirectory, "model.bin")); }
        catch (Exception e)
        {
            model.Dispose();
            throw new CheckpointException($"checkpoint {checkpointDirectory}/model.bin cannot be loaded ({e.Message.ReplaceLineEndings(" ")}); it is damaged or from another mrvae version: retrain or pick another --checkpoint", e);
        }
        model.eval();
        return model;
    }

    public static Evaluation Run(EvalOptions options, Action<string>? log = null)
    {
        var total = Stopwatch.StartNew();
        var (checkpointDir, state) = ResolveCheckpoint(options.RunDirectory, options.Checkpoint);
        var spec = PolyMnistStore.LoadSpec(options.DataDirectory);
        if (state.Model.Modalities != spec.Modalities)
            throw new DataFormatException($"run {options.RunDirectory} was trained on {state.Model.Modalities} modalities but {options.DataDirectory} ({spec.Name}) has {spec.Modalities}: pass the dataset the run was trained on with --data");
        var dataCheck = CheckData(options.RunDirectory, options.DataDirectory, options.AllowOtherData, log);
        var train = LabelledSplit.Load(options.DataDirectory, "train", spec);
        var test = LabelledSplit.Load(options.DataDirectory, "test", spec);
        using var classifiers = ClassifierSet.LoadOrTrain(options.DataDirectory, spec, train, test, options.Classifiers, options.ClassifierDirectory, log);
        using var model = LoadModel(checkpointDir, state.Model);
        log?.Invoke($"evaluating {state.Model.Kind} D={state.Model.LatentDim} from {checkpointDir} (step {state.Step}) on {Math.Min(options.CrossModal.Samples, test.Count)} test tuples per input subset");
        var info = new EvaluationInfo(options.RunDirectory, Path.GetFileName(checkpointDir), state, options.DataDirectory, train.Count, test.Count);
        var evaluation = Evaluate(model, spec, classifiers, train, test, options, info, log);
        evaluation.Report["data"]!.AsObject()["fingerprint"] = dataCheck;
        var timing = evaluation.Report["timing"]!.AsObject();
        timing["classifier_train_seconds"] = classifiers.Reused ? 0 : Math.Round(classifiers.TrainSeconds, 1);
        timing["total_seconds"] = Math.Round(total.Elapsed.TotalSeconds, 1);
        Write(evaluation, options.OutputDirectory, options.RunDirectory, spec, model.Config, log);
        return evaluation;
    }

    /// <summary>
    /// Compares the data a run was trained on (RUNDIR/config.json, train.data) with <paramref name="dataDir"/>: another
    /// sharing structure is an error (unless <paramref name="allowOther"/>), other data of the same structure (seed,
    /// size, MNIST) a warning; both are recorded. Runs from before fingerprints were recorded only get the data's.
    /// </summary>
    public static JsonObject CheckData(string runDir, string dataDir, bool allowOther, Action<string>? log = null)
    {
        var evaluated = DatasetFingerprint.Of(dataDir);
        var result = new JsonObject { ["evaluated"] = JsonSerializer.SerializeToNode(evaluated, CheckpointDirectory.Json) };
        var trained = TrainingData(runDir);
        if (trained is null)
        {
            result["training"] = null;
            result["matches_training"] = null;
            result["warning"] = $"{runDir} records no training-data fingerprint (config.json from an older mrvae): cannot check that --data is the training data";
            log?.Invoke("warning: " + result["warning"]);
            return result;
        }
        result["training"] = JsonSerializer.SerializeToNode(trained, CheckpointDirectory.Json);
        string? difference = trained.Difference(evaluated);
        result["matches_training"] = difference is null;
        if (difference is null) return result;
        if (trained.IsDifferentStructure(evaluated) && !allowOther)
            throw new DataFormatException($"{difference}: pass the dataset the run was trained on with --data (or --allow-other-data to evaluate anyway)");
        result["warning"] = difference;
        log?.Invoke("warning: " + difference);
        return result;
    }

    /// <summary>The training data's fingerprint recorded in RUNDIR/config.json, or null when there is none.</summary>
    public static DatasetFingerprint? TrainingData(string runDir)
    {
        string path = Path.Combine(runDir, LocalTrainer.ConfigFile);
        if (!File.Exists(path)) return null;
        try
        {
            var node = JsonNode.Parse(File.ReadAllText(path))?["train"]?["data"];
            return node is null ? null : node.Deserialize<DatasetFingerprint>(CheckpointDirectory.Json);
        }
        catch (JsonException) { return null; }
    }

    public sealed record EvaluationInfo(string RunDirectory, string Checkpoint, CheckpointState State, string DataDirectory, int TrainCount, int TestCount);

    /// <summary>Every measurement, as the report.json object and the generation results.</summary>
    public static Evaluation Evaluate(MultimodalVae model, PolyMnistSpec spec, ClassifierSet classifiers, LabelledSplit train, LabelledSplit test,
        EvalOptions options, EvaluationInfo? info = null, Action<string>? log = null)
    {
        int m = spec.Modalities, main = PolyMnistGenerator.MainFactor(spec);
        var watch = Stopwatch.StartNew();
        var generator = new ModelGenerator(model, Seeds.Generator(options.Seed, "evaluation/generate"));
        var paperFd = PaperFdRows(m);
        var cross = CrossModal.Run(generator, classifiers, test, options.CrossModal, paperFd, log);
        double crossSeconds = watch.Elapsed.TotalSeconds;

        var report = new JsonObject
        {
            ["model"] = new JsonObject
            {
                ["kind"] = model.Config.Kind.ToString().ToLowerInvariant(), ["latent"] = model.Config.LatentDim,
                ["run"] = info?.RunDirectory, ["checkpoint"] = info?.Checkpoint, ["step"] = info?.State.Step, ["test_loss"] = info?.State.TestLoss,
                ["config"] = JsonNode.Parse(JsonSerializer.Serialize(model.Config, CheckpointDirectory.Json)),
            },
            ["data"] = new JsonObject
            {
                ["dir"] = info?.DataDirectory, ["spec"] = spec.Name, ["modalities"] = m, ["train"] = train.Count, ["test"] = test.Count,
                ["shared_member_sets"] = new JsonArray(RelationRecovery.Truth(spec).Select(s => (JsonNode?)SubsetFamily.Format(s)).ToArray()),
            },
            ["samples"] = cross.Samples,
            ["seed"] = options.Seed,
            ["classifier_accuracy"] = ClassifierJson(classifiers, main),
            ["coherence"] = CoherenceJson(cross, spec, main),
            ["fd"] = FdJson(cross, paperFd, m, classifiers, train, test, options.CrossModal.Samples),
        };
        report["relation"] = model.Coordinator is MrVaeObjective structure ? RelationJson(structure, model.Config, spec) : null;
        watch.Restart();
        var joint = JointCoherence.Run(model, classifiers, spec, options.CrossModal.Samples, Seeds.Generator(options.Seed, "evaluation/prior"), options.CrossModal.BatchSize, options.CrossModal.GridSamples);
        report["joint_coherence"] = JointCoherence.Json(joint, spec, v => Round(v));
        double jointSeconds = watch.Elapsed.TotalSeconds;
        report["test_log_likelihood"] = null;
        double likelihoodSeconds = 0;
        if (options.LikelihoodSamples > 0)
        {
            watch.Restart();
            var (mean, error) = TestLikelihood.Run(model, test, options.LikelihoodTuples, options.LikelihoodSamples, Seeds.Generator(options.Seed, "evaluation/likelihood"));
            report["test_log_likelihood"] = new JsonObject
            {
                ["mean_nats"] = Round(mean, 2), ["standard_error"] = Round(error, 2),
                ["importance_samples"] = options.LikelihoodSamples, ["tuples"] = Math.Min(options.LikelihoodTuples, test.Count),
                ["estimator"] = "IWAE: log (1/K) sum_k p(X|z_k) p(z_k) / q(z_k|X), z_k from the joint posterior given all modalities (mrVAE: its most probable structure); continuous pixel densities, so values above 0 are possible",
            };
            likelihoodSeconds = watch.Elapsed.TotalSeconds;
            log?.Invoke($"test log-likelihood (IWAE, K = {options.LikelihoodSamples}): {mean:F1} ± {error:F1} nats ({likelihoodSeconds:F0} s)");
        }
        watch.Restart();
        report["latent_probe"] = ProbeJson(model, spec, train, test, options, main);
        log?.Invoke($"latent probe: {watch.Elapsed.TotalSeconds:F0} s");
        var timing = new JsonObject
        {
            ["cross_modal_seconds"] = Math.Round(crossSeconds, 1), ["joint_coherence_seconds"] = Math.Round(jointSeconds, 1),
            ["likelihood_seconds"] = Math.Round(likelihoodSeconds, 1), ["probe_seconds"] = Math.Round(watch.Elapsed.TotalSeconds, 1),
        };
        report["fid"] = null;
        if (options.InceptionWeights is { } weights)
        {
            watch.Restart();
            using var inception = InceptionV3Features.Load(weights);
            var fid = InceptionFid.Compute(new ModelGenerator(model, Seeds.Generator(options.Seed, "evaluation/fid")), inception, test, paperFd, options.CrossModal.Samples, log: log);
            var rows = new JsonObject();
            foreach (var (mask, j) in paperFd) rows[Subsets.PaperName(mask, j, m)] = Round(fid[(mask, j)], 2);
            report["fid"] = new JsonObject
            {
                ["paper_rows"] = rows, ["samples"] = Math.Min(options.CrossModal.Samples, test.Count), ["weights"] = weights,
                ["features"] = "InceptionV3 pool features (2048), images resized to 299x299 and scaled to [-1, 1]",
            };
            timing["fid_seconds"] = Math.Round(watch.Elapsed.TotalSeconds, 1);
        }
        report["timing"] = timing;
        return new Evaluation(report, cross, joint.Grid);
    }

    /// <summary>The report.json object and the generation results behind it (for the PNGs).</summary>
    public sealed record Evaluation(JsonObject Report, CrossModalResult Cross, List<(string Label, byte[][] Images)>? PriorGrid = null);

    public static (int Mask, int Output)[] PaperFdRows(int m) =>
        m >= 3 ? [(Subsets.Mask([0]), 0), (Subsets.Mask([1]), 0), (Subsets.Mask([1, 2]), 0)]
        : m == 2 ? [(Subsets.Mask([0]), 0), (Subsets.Mask([1]), 0)] : [(1, 0)];

    static int[] PaperCoherenceMasks(int m) => Enumerable.Range(1, Math.Min(3, m)).Select(k => (1 << k) - 1).ToArray();

    static JsonObject ClassifierJson(ClassifierSet classifiers, int main)
    {
        var o = new JsonObject();
        foreach (var t in classifiers.Targets) o[t.Name] = Round(classifiers.TestAccuracy[t.Name]);
        if (main >= 0) o["main_mean"] = Round(classifiers.MainAccuracy());
        var others = classifiers.Targets.Where(t => t.Factor != main).Select(t => classifiers.TestAccuracy[t.Name]).ToArray();
        if (others.Length > 0) o["other_positions_mean"] = Round(others.Average());
        return o;
    }

    internal static JsonObject CoherenceJson(CrossModalResult cross, PolyMnistSpec spec, int main)
    {
        int m = cross.Modalities;
        var o = new JsonObject();
        var mainMap = new JsonObject();
        var paper = new JsonObject();
        if (main >= 0)
        {
            foreach (int mask in CrossModal.SubsetMasks(m))
                for (int j = 0; j < m; j++) mainMap[Subsets.Key(mask, j, m)] = Round(cross.Accuracy[(mask, j, main)]);
            foreach (int mask in PaperCoherenceMasks(m)) paper[Subsets.PaperName(mask, 0, m)] = Round(cross.Accuracy[(mask, 0, main)]);
            var byCount = new JsonObject();
            for (int k = 1; k <= m; k++)
            {
                var cells = CrossModal.SubsetMasks(m).Where(mask => System.Numerics.BitOperations.PopCount((uint)mask) == k)
                    .SelectMany(mask => Enumerable.Range(0, m).Where(j => (mask >> j & 1) == 0 || k == m).Select(j => cross.Accuracy[(mask, j, main)])).ToArray();
                if (cells.Length > 0) byCount[k.ToString(CultureInfo.InvariantCulture)] = Round(cells.Average());
            }
            o["main_mean_by_input_count"] = byCount;
        }
        o["main"] = mainMap;
        o["paper_rows"] = paper;
        var otherFactors = Enumerable.Range(0, spec.Factors.Length).Where(f => f != main).ToArray();
        if (otherFactors.Length > 0)
        {
            var corner = new JsonObject();
            foreach (var ((mask, j, f), acc) in cross.Accuracy.OrderBy(k => k.Key.Mask).ThenBy(k => k.Key.Output).ThenBy(k => k.Key.Factor))
                if (f != main) corner[$"{Subsets.Key(mask, j, m)}:{spec.Factors[f].Name}"] = Round(acc);
            o["corner"] = corner;
            // Single input i → output j ≠ i: a factor of j is inferable when i shows it too.
            var shared = new List<double>(); var unshared = new List<double>(); var self = new List<double>();
            var rows = new JsonArray();
            for (int i = 0; i < m; i++)
                for (int j = 0; j < m; j++)
                {
                    var fs = otherFactors.Where(f => spec.Factors[f].Members.Contains(j) && cross.Accuracy.ContainsKey((1 << i, j, f))).ToArray();
                    if (fs.Length == 0) continue;
                    if (i == j) { self.AddRange(fs.Select(f => cross.Accuracy[(1 << i, j, f)])); continue; }
                    var sharedF = fs.Where(f => spec.Factors[f].Members.Contains(i)).ToArray();
                    var unsharedF = fs.Where(f => !spec.Factors[f].Members.Contains(i)).ToArray();
                    shared.AddRange(sharedF.Select(f => cross.Accuracy[(1 << i, j, f)]));
                    unshared.AddRange(unsharedF.Select(f => cross.Accuracy[(1 << i, j, f)]));
                    if (sharedF.Length == 0) continue;
                    rows.Add(new JsonObject
                    {
                        ["in"] = i, ["out"] = j,
                        ["shared"] = new JsonObject(sharedF.Select(f => KeyValuePair.Create(spec.Factors[f].Name, (JsonNode?)Round(cross.Accuracy[(1 << i, j, f)])))),
                        ["unshared"] = new JsonObject(unsharedF.Select(f => KeyValuePair.Create(spec.Factors[f].Name, (JsonNode?)Round(cross.Accuracy[(1 << i, j, f)])))),
                    });
                }
            o["corner_summary"] = new JsonObject
            {
                ["shared_mean"] = shared.Count > 0 ? Round(shared.Average()) : null,
                ["unshared_mean"] = unshared.Count > 0 ? Round(unshared.Average()) : null,
                ["self_mean"] = self.Count > 0 ? Round(self.Average()) : null,
                ["chance"] = 0.1,
                ["rows"] = rows,
            };
        }
        return o;
    }

    static JsonObject FdJson(CrossModalResult cross, (int Mask, int Output)[] paperRows, int m, ClassifierSet classifiers, LabelledSplit train, LabelledSplit test, int samples)
    {
        var paper = new JsonObject();
        foreach (var (mask, j) in paperRows) paper[Subsets.PaperName(mask, j, m)] = Round(cross.Fd[(mask, j)], 2);
        var matrix = new JsonObject();
        foreach (var ((mask, j), v) in cross.Fd.OrderBy(k => CrossModal.SubsetMasks(m).ToList().IndexOf(k.Key.Mask)).ThenBy(k => k.Key.Output))
            matrix[Subsets.Key(mask, j, m)] = Round(v, 2);
        // The floor: real training images vs the same number of real test images.
        var reference = new JsonObject();
        int n = Math.Min(Math.Min(samples, test.Count), train.Count);
        if (n >= 2)
            foreach (int j in paperRows.Select(r => r.Output).Distinct())
            {
                using var a = new MomentAccumulator(classifiers.FeatureWidth(j));
                using var b = new MomentAccumulator(classifiers.FeatureWidth(j));
                for (int start = 0; start < n; start += 500)
                {
                    using var scope = NewDisposeScope();
                    var ids = LabelledSplit.Range(start, Math.Min(500, n - start));
                    a.Add(classifiers.Features(j, train.Images[j].Batch(ids)));
                    b.Add(classifiers.Features(j, test.Images[j].Batch(ids)));
                }
                reference[$"out={j}"] = Round(Frechet.Distance(a, b), 2);
            }
        return new JsonObject
        {
            ["features"] = "penultimate layer (128 per digit position) of the project's digit classifiers of the output modality, concatenated",
            ["samples"] = cross.Samples,
            ["paper_rows"] = paper,
            ["matrix"] = matrix,
            ["real_train_vs_test"] = reference,
        };
    }

    /// <summary>mrVAE's structure (its membership posterior; it does not depend on the input) against the spec.</summary>
    static JsonObject RelationJson(MrVaeObjective structure, ModelConfig config, PolyMnistSpec spec)
    {
        var truth = RelationRecovery.Truth(spec);
        var (sizes, rows) = RelationRecovery.Infer(structure, truth);
        var membership = new JsonArray(rows.Select(r => (JsonNode?)new JsonArray(r.Select(x => (JsonNode?)x).ToArray())).ToArray());
        var score = RelationRecovery.ScoreFound(sizes, truth);
        var pairs = RelationRecovery.PairMatrix(sizes, spec.Modalities);
        return new JsonObject
        {
            ["subsets"] = new JsonArray(sizes.Select(s => (JsonNode?)new JsonObject
            {
                ["subset"] = s.Name, ["mean_size"] = Round(s.MeanSize, 3), ["most_probable_size"] = s.MostProbableSize,
                ["found"] = s.Found, ["shared_in_spec"] = s.SharedInSpec,
            }).ToArray()),
            ["rule"] = RelationRecovery.FoundRule,
            ["precision"] = score.Precision is { } p ? Round(p) : null,
            ["recall"] = score.Recall is { } r ? Round(r) : null,
            ["predicted"] = score.Predicted, ["truth"] = score.Truth, ["true_positives"] = score.TruePositives,
            ["missed"] = new JsonArray(score.Missed.Select(s => (JsonNode?)SubsetFamily.Format(s)).ToArray()),
            ["spurious"] = new JsonArray(score.Spurious.Select(s => (JsonNode?)SubsetFamily.Format(s)).ToArray()),
            ["private_mean"] = new JsonArray(Enumerable.Range(0, spec.Modalities).Select(j =>
                (JsonNode?)Round(config.LatentDim - sizes.Where(s => s.Subset.Contains(j)).Sum(s => s.MeanSize), 3)).ToArray()),
            ["pair_shared_dims"] = new JsonArray(Enumerable.Range(0, spec.Modalities).Select(i =>
                (JsonNode?)new JsonArray(Enumerable.Range(0, spec.Modalities).Select(j => (JsonNode?)Round(pairs[i, j], 3)).ToArray())).ToArray()),
            ["membership"] = membership,
        };
    }

    static JsonObject ProbeJson(MultimodalVae model, PolyMnistSpec spec, LabelledSplit train, LabelledSplit test, EvalOptions options, int main)
    {
        int m = spec.Modalities;
        int nTrain = Math.Min(options.ProbeTrainSamples, train.Count), nTest = Math.Min(options.CrossModal.Samples, test.Count);
        var trainMu = LatentProbe.EncodeMeans(model, train, nTrain);
        var testMu = LatentProbe.EncodeMeans(model, test, nTest);
        try
        {
            var probeSubsets = Enumerable.Range(0, m).Select(j => new[] { j }).ToList();
            foreach (int k in new[] { 2, 3, m }.Where(k => k >= 2 && k <= m).Distinct()) probeSubsets.Add(Enumerable.Range(0, k).ToArray());
            var mainMap = new JsonObject();
            var factorMap = new JsonObject();
            var trainIds = LabelledSplit.Range(0, nTrain);
            var testIds = LabelledSplit.Range(0, nTest);
            foreach (var subset in probeSubsets)
            {
                using var scope = NewDisposeScope();
                var xtr = LatentProbe.Features(trainMu, subset);
                var xte = LatentProbe.Features(testMu, subset);
                string name = "in=" + string.Join(",", subset);
                if (main >= 0)
                    mainMap[name] = Round(LatentProbe.FitAndScore(xtr, train.LabelTensor(trainIds, main), xte, test.LabelTensor(testIds, main), seed: options.Seed));
                if (subset.Length == 1)
                    for (int f = 0; f < spec.Factors.Length; f++)
                        if (f != main)
                            factorMap[$"{name}:{spec.Factors[f].Name}"] = Round(LatentProbe.FitAndScore(xtr, train.LabelTensor(trainIds, f), xte, test.LabelTensor(testIds, f), seed: options.Seed));
            }
            var o = new JsonObject { ["main"] = mainMap, ["train_samples"] = nTrain, ["test_samples"] = nTest, ["features"] = "encoder means mu_j, concatenated over the input subset, standardised" };
            if (factorMap.Count > 0) o["factors"] = factorMap;
            return o;
        }
        finally
        {
            foreach (var t in trainMu) t.Dispose();
            foreach (var t in testMu) t.Dispose();
        }
    }

    static JsonNode? Round(double v, int digits = 4) => double.IsFinite(v) ? JsonValue.Create(Math.Round(v, digits)) : null;

    static readonly JsonSerializerOptions WriteOptions = new() { WriteIndented = true, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

    /// <summary>Writes report.json, report.md and the PNGs into <paramref name="outDir"/>.</summary>
    public static void Write(Evaluation evaluation, string outDir, string? runDirectory, PolyMnistSpec spec, ModelConfig config, Action<string>? log = null)
    {
        Directory.CreateDirectory(outDir);
        var figures = new List<string>();
        var (report, cross, priorGrid) = evaluation;
        int m = spec.Modalities;
        if (cross is not null)
        {
            string samplesDir = Path.Combine(outDir, "samples");
            Directory.CreateDirectory(samplesDir);
            foreach (var (mask, rows) in cross.Grids)
                Plots.SampleGrid($"{DisplayName(config.Kind)}: generated from {{{Subsets.Name(mask, m)}}} (first rows: inputs)", rows)
                    .Save(Path.Combine(samplesDir, $"in-{Subsets.Name(mask, m).Replace(',', '-')}.png"));
            if (priorGrid is { Count: > 0 })
                Plots.SampleGrid($"{DisplayName(config.Kind)}: generated from the prior (joint coherence)", priorGrid).Save(Path.Combine(samplesDir, "prior.png"));
            CoherenceHeatmap(report, cross, spec, config).Save(Path.Combine(outDir, "coherence.png"));
            figures.Add("coherence.png");
            if (report["relation"] is JsonObject)
            {
                RelationHeatmap(report, config, spec).Save(Path.Combine(outDir, "relation_heatmap.png"));
                PairHeatmap(report, spec, config).Save(Path.Combine(outDir, "relation_pairs.png"));
                figures.Add("relation_heatmap.png"); figures.Add("relation_pairs.png");
            }
        }
        if (runDirectory is not null && Plots.TrainingCurves(runDirectory, $"training: {DisplayName(config.Kind)} D={config.LatentDim} ({Path.GetFileName(Path.GetFullPath(runDirectory).TrimEnd('/'))})") is { } curves)
        {
            curves.Save(Path.Combine(outDir, "training_curves.png"));
            figures.Add("training_curves.png");
        }
        report["figures"] = new JsonArray(figures.Select(f => (JsonNode?)f).ToArray());
        File.WriteAllText(Path.Combine(outDir, ReportJson), report.ToJsonString(WriteOptions));
        File.WriteAllText(Path.Combine(outDir, ReportMarkdown), Markdown(report, spec, config, cross));
        log?.Invoke($"report: {Path.Combine(outDir, ReportMarkdown)} ({figures.Count} figures, {cross?.Grids.Count ?? 0} sample grids in samples/)");
    }

    static Canvas CoherenceHeatmap(JsonObject report, CrossModalResult cross, PolyMnistSpec spec, ModelConfig config)
    {
        int m = spec.Modalities, main = PolyMnistGenerator.MainFactor(spec);
        var masks = CrossModal.SubsetMasks(m);
        var values = new double[masks.Length, m];
        for (int r = 0; r < masks.Length; r++)
            for (int j = 0; j < m; j++) values[r, j] = main >= 0 ? cross.Accuracy[(masks[r], j, main)] : double.NaN;
        return Plots.Heatmap($"{DisplayName(config.Kind)}: main-digit coherence", masks.Select(k => $"in {{{Subsets.Name(k, m)}}}").ToArray(),
            Enumerable.Range(0, m).Select(j => $"x{j}").ToArray(), values, 0, 1, showValues: true, cell: 30,
            footer: "rows: input subset, columns: generated modality; accuracy of the digit classifier");
    }

    /// <summary>The membership posterior q(j ∈ A_d): one row per latent position, one column per modality.</summary>
    static Canvas RelationHeatmap(JsonObject report, ModelConfig config, PolyMnistSpec spec)
    {
        int m = spec.Modalities;
        var rows = report["relation"]!["membership"]!.AsArray();
        var values = new double[rows.Count, m];
        var labels = new string[rows.Count];
        var truth = RelationRecovery.Truth(spec).Select(t => string.Join(",", t)).ToHashSet();
        var marks = new bool[rows.Count];
        for (int d = 0; d < rows.Count; d++)
        {
            for (int j = 0; j < m; j++) values[d, j] = rows[d]![j]!.GetValue<double>();
            var members = Enumerable.Range(0, m).Where(j => values[d, j] >= 0.5).ToArray();
            labels[d] = $"d{d} {(members.Length == 0 ? "{}" : SubsetFamily.Format(members))}";
            marks[d] = members.Length >= 2 && truth.Contains(string.Join(",", members));
        }
        return Plots.Heatmap($"{DisplayName(config.Kind)}: membership q(j in A_d)", labels, Enumerable.Range(0, m).Select(j => $"x{j}").ToArray(), values, 0, 1,
            rowMarks: marks, cell: 14,
            footer: "rows: latent position d and its most probable member set (* shared in spec.json); columns: modality; colour: q(j in A_d)");
    }

    static Canvas PairHeatmap(JsonObject report, PolyMnistSpec spec, ModelConfig config)
    {
        int m = spec.Modalities;
        var rows = report["relation"]!["pair_shared_dims"]!.AsArray();
        var values = new double[m, m];
        double max = 1;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++)
            {
                values[i, j] = i == j ? double.NaN : rows[i]![j]?.GetValue<double>() ?? double.NaN;
                if (i != j && double.IsFinite(values[i, j])) max = Math.Max(max, values[i, j]);
            }
        return Plots.Heatmap($"{DisplayName(config.Kind)}: latent dims shared per pair", Enumerable.Range(0, m).Select(j => $"x{j}").ToArray(),
            Enumerable.Range(0, m).Select(j => $"x{j}").ToArray(), values, 0, max, showValues: true, cell: 40,
            footer: "sum of mean n_A over subsets containing both");
    }

    static string F(JsonNode? n, string format = "F3") => n is null ? "–" : n.GetValue<double>().ToString(format, CultureInfo.InvariantCulture);

    static string Markdown(JsonObject report, PolyMnistSpec spec, ModelConfig config, CrossModalResult? cross)
    {
        int m = spec.Modalities, main = PolyMnistGenerator.MainFactor(spec);
        var md = new StringBuilder();
        var model = report["model"]!; var data = report["data"]!;
        md.Append($"# Evaluation: {DisplayName(config.Kind)} (D = {config.LatentDim})\n\n");
        md.Append($"Run `{model["run"]}`, checkpoint `{model["checkpoint"]}` (step {model["step"]}, test loss {F(model["test_loss"], "F1")}); ");
        md.Append($"data `{data["dir"]}` ({spec.Name}: {data["train"]} train / {data["test"]} test tuples); {report["samples"]} test tuples per input subset, seed {report["seed"]}.\n\n");
        if (data["fingerprint"]?["warning"] is { } warning) md.Append($"**Warning:** {warning}.\n\n");
        md.Append("## Digit classifiers (test accuracy)\n\n| classifier | accuracy |\n|---|---|\n");
        foreach (var (k, v) in report["classifier_accuracy"]!.AsObject()) md.Append($"| {k} | {F(v)} |\n");
        var coh = report["coherence"]!;
        md.Append("\n## Coherence (main digit)\n\nThe paper's rows:\n\n| input → output | accuracy |\n|---|---|\n");
        foreach (var (k, v) in coh["paper_rows"]!.AsObject()) md.Append($"| {k} | {F(v)} |\n");
        if (coh["main_mean_by_input_count"] is JsonObject byCount)
        {
            md.Append("\nMean over cells with k inputs (outputs not among the inputs; with all inputs, every output):\n\n| k | accuracy |\n|---|---|\n");
            foreach (var (k, v) in byCount) md.Append($"| {k} | {F(v)} |\n");
        }
        if (cross is not null && main >= 0)
        {
            md.Append("\nFull matrix (rows: input subset, columns: generated modality):\n\n| input |" + string.Concat(Enumerable.Range(0, m).Select(j => $" x{j} |")) + "\n|---|" + string.Concat(Enumerable.Repeat("---|", m)) + "\n");
            foreach (int mask in CrossModal.SubsetMasks(m))
                md.Append($"| {{{Subsets.Name(mask, m)}}} |" + string.Concat(Enumerable.Range(0, m).Select(j => $" {cross.Accuracy[(mask, j, main)]:F3} |")) + "\n");
            md.Append("\n![coherence](coherence.png)\n");
        }
        if (coh["corner_summary"] is JsonObject cs)
        {
            md.Append($"\n## Corner-digit coherence\n\nFrom one modality to another: a corner digit the input shows too (shared) should be reproduced; one it does not show (unshared) sits at chance ({cs["chance"]}).\n\n");
            md.Append($"Mean shared {F(cs["shared_mean"])}, mean unshared {F(cs["unshared_mean"])}, self-reconstruction {F(cs["self_mean"])}.\n\n| input → output | shared corner | accuracy | other corner | accuracy |\n|---|---|---|---|---|\n");
            foreach (var row in cs["rows"]!.AsArray())
            {
                var sh = row!["shared"]!.AsObject().ToArray(); var un = row["unshared"]!.AsObject().ToArray();
                for (int k = 0; k < Math.Max(sh.Length, un.Length); k++)
                    md.Append($"| x{row["in"]}→x{row["out"]} | {(k < sh.Length ? sh[k].Key : "")} | {(k < sh.Length ? F(sh[k].Value) : "")} | {(k < un.Length ? un[k].Key : "")} | {(k < un.Length ? F(un[k].Value) : "")} |\n");
            }
        }
        if (report["joint_coherence"] is JsonObject joint)
        {
            md.Append($"\n## Joint coherence\n\n{joint["samples"]} samples from the prior: {joint["definition"]}.\n\n| factor | members | agreement | chance |\n|---|---|---|---|\n");
            foreach (var (name, f) in joint["factors"]!.AsObject()) md.Append($"| {name} | {{{f!["members"]}}} | {F(f["agreement"])} | {F(f["chance"], "G3")} |\n");
            md.Append("\n![prior samples](samples/prior.png)\n");
        }
        if (report["test_log_likelihood"] is JsonObject ll)
            md.Append($"\n## Test log-likelihood\n\n{F(ll["mean_nats"], "F1")} ± {F(ll["standard_error"], "F1")} nats per tuple on {ll["tuples"]} test tuples, K = {ll["importance_samples"]} ({ll["estimator"]}).\n");
        var fd = report["fd"]!;
        md.Append($"\n## Sample quality: FD\n\nFréchet distance on {fd["features"]}; {fd["samples"]} generated vs real test images (lower is better; not FID).\n\n| input → output | FD |\n|---|---|\n");
        foreach (var (k, v) in fd["paper_rows"]!.AsObject()) md.Append($"| {k} | {F(v, "F2")} |\n");
        foreach (var (k, v) in fd["real_train_vs_test"]!.AsObject()) md.Append($"| real train vs real test ({k}) | {F(v, "F2")} |\n");
        if (report["fid"] is JsonObject fid)
        {
            md.Append($"\n## Sample quality: FID\n\nFréchet distance on {fid["features"]} (weights `{fid["weights"]}`); {fid["samples"]} generated vs real test images.\n\n| input → output | FID |\n|---|---|\n");
            foreach (var (k, v) in fid["paper_rows"]!.AsObject()) md.Append($"| {k} | {F(v, "F2")} |\n");
        }
        if (report["relation"] is JsonObject rel)
        {
            md.Append($"\n## Learned relation\n\nPer shared subset, E_q[n_A] (expected latent positions under the membership posterior) and n_A of the most probable structure; {rel["rule"]}.\n");
            md.Append($"Precision {F(rel["precision"])}, recall {F(rel["recall"])} ({rel["true_positives"]} of {rel["predicted"]} recovered subsets are in spec.json, which has {rel["truth"]}).");
            if (rel["missed"]!.AsArray().Count > 0) md.Append($" Missed: {string.Join(" ", rel["missed"]!.AsArray())}.");
            md.Append("\n\n| subset | E_q[n_A] | most probable n_A | found | shared in spec |\n|---|---|---|---|---|\n");
            foreach (var s in rel["subsets"]!.AsArray().OrderByDescending(s => s!["mean_size"]!.GetValue<double>()))
                md.Append($"| {s!["subset"]} | {F(s["mean_size"], "F2")} | {s["most_probable_size"]} | {((bool)s["found"]! ? "yes" : "")} | {((bool)s["shared_in_spec"]! ? "yes" : "")} |\n");
            md.Append("\n![relation](relation_heatmap.png)\n\n![pairs](relation_pairs.png)\n");
        }
        else md.Append("\n## Learned relation\n\nOnly mrVAE infers a sharing structure; this model has none.\n");
        var probe = report["latent_probe"]!;
        md.Append($"\n## Latent probe\n\nLinear softmax classifier on {probe["features"]}: {probe["train_samples"]} training tuples, {probe["test_samples"]} test tuples.\n\n| input | main digit accuracy |\n|---|---|\n");
        foreach (var (k, v) in probe["main"]!.AsObject()) md.Append($"| {k} | {F(v)} |\n");
        if (probe["factors"] is JsonObject pf)
        {
            md.Append("\n| input:factor | accuracy |\n|---|---|\n");
            foreach (var (k, v) in pf) md.Append($"| {k} | {F(v)} |\n");
        }
        md.Append("\n## Figures\n\n");
        if (report["figures"]!.AsArray().Any(f => (string)f! == "training_curves.png")) md.Append("![training curves](training_curves.png)\n\n");
        if (cross is not null)
        {
            md.Append("Sample grids per input subset are in `samples/` (rows: the given inputs, then every generated modality). The paper's rows:\n\n");
            foreach (int mask in PaperCoherenceMasks(m).Concat(PaperFdRows(m).Select(r => r.Mask)).Distinct())
                md.Append($"![from {{{Subsets.Name(mask, m)}}}](samples/in-{Subsets.Name(mask, m).Replace(',', '-')}.png)\n\n");
        }
        return md.ToString();
    }
}
