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
        evaluation.Report.Data.Fingerprint = dataCheck;
        var timing = evaluation.Report.Timing;
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
    public static EvaluationReport.FingerprintCheck CheckData(string runDir, string dataDir, bool allowOther, Action<string>? log = null)
    {
        var fingerprint = DatasetFingerprint.Of(dataDir);
        var evaluated = JsonSerializer.SerializeToNode(fingerprint, CheckpointDirectory.Json);
        var trained = TrainingData(runDir);
        if (trained is null)
        {
            string missing = $"{runDir} records no training-data fingerprint (config.json from an older mrvae): cannot check that --data is the training data";
            log?.Invoke("warning: " + missing);
            return new() { Evaluated = evaluated, Warning = missing };
        }
        string? difference = trained.Difference(fingerprint);
        var result = new EvaluationReport.FingerprintCheck
        {
            Evaluated = evaluated, Training = JsonSerializer.SerializeToNode(trained, CheckpointDirectory.Json), MatchesTraining = difference is null, Warning = difference,
        };
        if (difference is null) return result;
        if (trained.IsDifferentStructure(fingerprint) && !allowOther)
            throw new DataFormatException($"{difference}: pass the dataset the run was trained on with --data (or --allow-other-data to evaluate anyway)");
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

        var relation = model.Coordinator is MrVaeObjective structure ? Relation(model, structure, spec, test, options.CrossModal.Samples) : null;
        watch.Restart();
        var joint = JointCoherence.Run(model, classifiers, spec, options.CrossModal.Samples, Seeds.Generator(options.Seed, "evaluation/prior"), options.CrossModal.BatchSize, options.CrossModal.GridSamples);
        var jointReport = JointCoherence.Report(joint, spec, v => Round(v));
        double jointSeconds = watch.Elapsed.TotalSeconds;
        EvaluationReport.LikelihoodSection? likelihood = null;
        double likelihoodSeconds = 0;
        if (options.LikelihoodSamples > 0)
        {
            watch.Restart();
            var (mean, error) = TestLikelihood.Run(model, test, options.LikelihoodTuples, options.LikelihoodSamples, Seeds.Generator(options.Seed, "evaluation/likelihood"));
            likelihood = new()
            {
                MeanNats = Round(mean, 2), StandardError = Round(error, 2),
                ImportanceSamples = options.LikelihoodSamples, Tuples = Math.Min(options.LikelihoodTuples, test.Count),
                Estimator = "IWAE: log (1/K) sum_k p(X|z_k) p(z_k) / q(z_k|X), z_k from the joint posterior given all modalities (mrVAE: its most probable structure); continuous pixel densities, so values above 0 are possible",
            };
            likelihoodSeconds = watch.Elapsed.TotalSeconds;
            log?.Invoke($"test log-likelihood (IWAE, K = {options.LikelihoodSamples}): {mean:F1} ± {error:F1} nats ({likelihoodSeconds:F0} s)");
        }
        watch.Restart();
        var probe = Probe(model, spec, train, test, options, main);
        log?.Invoke($"latent probe: {watch.Elapsed.TotalSeconds:F0} s");
        var timing = new Dictionary<string, double>
        {
            ["cross_modal_seconds"] = Math.Round(crossSeconds, 1), ["joint_coherence_seconds"] = Math.Round(jointSeconds, 1),
            ["likelihood_seconds"] = Math.Round(likelihoodSeconds, 1), ["probe_seconds"] = Math.Round(watch.Elapsed.TotalSeconds, 1),
        };
        EvaluationReport.FidSection? fidReport = null;
        if (options.InceptionWeights is { } weights)
        {
            watch.Restart();
            using var inception = InceptionV3Features.Load(weights);
            var fid = InceptionFid.Compute(new ModelGenerator(model, Seeds.Generator(options.Seed, "evaluation/fid")), inception, test, paperFd, options.CrossModal.Samples, log: log);
            fidReport = new()
            {
                PaperRows = paperFd.ToDictionary(r => Subsets.PaperName(r.Mask, r.Output, m), r => Round(fid[r], 2)),
                Samples = Math.Min(options.CrossModal.Samples, test.Count), Weights = weights,
                Features = "InceptionV3 pool features (2048), images resized to 299x299 and scaled to [-1, 1]",
            };
            timing["fid_seconds"] = Math.Round(watch.Elapsed.TotalSeconds, 1);
        }
        var report = new EvaluationReport
        {
            Model = new()
            {
                Kind = model.Config.Kind.ToString().ToLowerInvariant(), Latent = model.Config.LatentDim,
                Run = info?.RunDirectory, Checkpoint = info?.Checkpoint, Step = info?.State.Step, TestLoss = info?.State.TestLoss,
                Config = JsonNode.Parse(JsonSerializer.Serialize(model.Config, CheckpointDirectory.Json)),
            },
            Data = new()
            {
                Dir = info?.DataDirectory, Spec = spec.Name, Modalities = m, Train = train.Count, Test = test.Count,
                SharedMemberSets = RelationRecovery.Truth(spec).Select(SubsetFamily.Format).ToArray(),
            },
            Samples = cross.Samples,
            Seed = options.Seed,
            ClassifierAccuracy = ClassifierAccuracy(classifiers, main),
            Coherence = Coherence(cross, spec, main),
            Fd = Fd(cross, paperFd, m, classifiers, train, test, options.CrossModal.Samples),
            Relation = relation,
            JointCoherence = jointReport,
            TestLogLikelihood = likelihood,
            LatentProbe = probe,
            Fid = fidReport,
            Timing = timing,
        };
        return new Evaluation(report, cross, joint.Grid);
    }

    /// <summary>The report and the generation results behind it (for the PNGs).</summary>
    public sealed record Evaluation(EvaluationReport Report, CrossModalResult Cross, List<(string Label, byte[][] Images)>? PriorGrid = null);

    public static (int Mask, int Output)[] PaperFdRows(int m) =>
        m >= 3 ? [(Subsets.Mask([0]), 0), (Subsets.Mask([1]), 0), (Subsets.Mask([1, 2]), 0)]
        : m == 2 ? [(Subsets.Mask([0]), 0), (Subsets.Mask([1]), 0)] : [(1, 0)];

    static int[] PaperCoherenceMasks(int m) => Enumerable.Range(1, Math.Min(3, m)).Select(k => (1 << k) - 1).ToArray();

    static Dictionary<string, double?> ClassifierAccuracy(ClassifierSet classifiers, int main)
    {
        var o = classifiers.Targets.ToDictionary(t => t.Name, t => Round(classifiers.TestAccuracy[t.Name]));
        if (main >= 0) o["main_mean"] = Round(classifiers.MainAccuracy());
        var others = classifiers.Targets.Where(t => t.Factor != main).Select(t => classifiers.TestAccuracy[t.Name]).ToArray();
        if (others.Length > 0) o["other_positions_mean"] = Round(others.Average());
        return o;
    }

    /// <summary>The coherence section as JSON (what report.json holds under "coherence").</summary>
    internal static JsonObject CoherenceJson(CrossModalResult cross, PolyMnistSpec spec, int main)
        => JsonSerializer.SerializeToNode(Coherence(cross, spec, main), EvaluationReport.Json)!.AsObject();

    static EvaluationReport.CoherenceSection Coherence(CrossModalResult cross, PolyMnistSpec spec, int main)
    {
        int m = cross.Modalities;
        var mainMap = new Dictionary<string, double?>();
        var paper = new Dictionary<string, double?>();
        Dictionary<string, double?>? byCount = null, corner = null;
        EvaluationReport.CornerSummary? summary = null;
        if (main >= 0)
        {
            foreach (int mask in CrossModal.SubsetMasks(m))
                for (int j = 0; j < m; j++) mainMap[Subsets.Key(mask, j, m)] = Round(cross.Accuracy[(mask, j, main)]);
            foreach (int mask in PaperCoherenceMasks(m)) paper[Subsets.PaperName(mask, 0, m)] = Round(cross.Accuracy[(mask, 0, main)]);
            byCount = new Dictionary<string, double?>();
            for (int k = 1; k <= m; k++)
            {
                var cells = CrossModal.SubsetMasks(m).Where(mask => System.Numerics.BitOperations.PopCount((uint)mask) == k)
                    .SelectMany(mask => Enumerable.Range(0, m).Where(j => (mask >> j & 1) == 0 || k == m).Select(j => cross.Accuracy[(mask, j, main)])).ToArray();
                if (cells.Length > 0) byCount[k.ToString(CultureInfo.InvariantCulture)] = Round(cells.Average());
            }
        }
        var otherFactors = Enumerable.Range(0, spec.Factors.Length).Where(f => f != main).ToArray();
        if (otherFactors.Length > 0)
        {
            corner = new Dictionary<string, double?>();
            foreach (var ((mask, j, f), acc) in cross.Accuracy.OrderBy(k => k.Key.Mask).ThenBy(k => k.Key.Output).ThenBy(k => k.Key.Factor))
                if (f != main) corner[$"{Subsets.Key(mask, j, m)}:{spec.Factors[f].Name}"] = Round(acc);
            // Single input i → output j ≠ i: a factor of j is inferable when i shows it too.
            var shared = new List<double>(); var unshared = new List<double>(); var self = new List<double>();
            var rows = new List<EvaluationReport.CornerRow>();
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
                    rows.Add(new()
                    {
                        In = i, Out = j,
                        Shared = sharedF.ToDictionary(f => spec.Factors[f].Name, f => Round(cross.Accuracy[(1 << i, j, f)])),
                        Unshared = unsharedF.ToDictionary(f => spec.Factors[f].Name, f => Round(cross.Accuracy[(1 << i, j, f)])),
                    });
                }
            summary = new()
            {
                SharedMean = shared.Count > 0 ? Round(shared.Average()) : null,
                UnsharedMean = unshared.Count > 0 ? Round(unshared.Average()) : null,
                SelfMean = self.Count > 0 ? Round(self.Average()) : null,
                Chance = 0.1,
                Rows = rows,
            };
        }
        return new() { MainMeanByInputCount = byCount, Main = mainMap, PaperRows = paper, Corner = corner, CornerSummary = summary };
    }

    static EvaluationReport.FdSection Fd(CrossModalResult cross, (int Mask, int Output)[] paperRows, int m, ClassifierSet classifiers, LabelledSplit train, LabelledSplit test, int samples)
    {
        var paper = new Dictionary<string, double?>();
        foreach (var (mask, j) in paperRows) paper[Subsets.PaperName(mask, j, m)] = Round(cross.Fd[(mask, j)], 2);
        var matrix = new Dictionary<string, double?>();
        foreach (var ((mask, j), v) in cross.Fd.OrderBy(k => CrossModal.SubsetMasks(m).ToList().IndexOf(k.Key.Mask)).ThenBy(k => k.Key.Output))
            matrix[Subsets.Key(mask, j, m)] = Round(v, 2);
        // The floor: real training images vs the same number of real test images.
        var reference = new Dictionary<string, double?>();
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
        return new()
        {
            Features = "penultimate layer (128 per digit position) of the project's digit classifiers of the output modality, concatenated",
            Samples = cross.Samples, PaperRows = paper, Matrix = matrix, RealTrainVsTest = reference,
        };
    }

    /// <summary>
    /// mrVAE's structure (its membership posterior; it does not depend on the input) against the spec, with what each
    /// encoder says at each position and how far each member agrees with the others, on the first <paramref name="count"/> test tuples.
    /// </summary>
    public static EvaluationReport.ImageRelation Relation(MultimodalVae model, MrVaeObjective structure, PolyMnistSpec spec, LabelledSplit test, int count)
    {
        var config = model.Config;
        var members = structure.MostProbableMembers();
        var (information, agreement, predictability) = EncoderInformation.Compute(model, test.ToDataset(), count, members);
        var truth = RelationRecovery.Truth(spec);
        var (sizes, rows) = RelationRecovery.Infer(structure, truth);
        var score = RelationRecovery.ScoreFound(sizes, truth);
        var pairs = RelationRecovery.PairMatrix(sizes, spec.Modalities);
        return new()
        {
            Subsets = sizes.Select(s => new EvaluationReport.RelationSubset
            {
                Subset = s.Name, MeanSize = Round(s.MeanSize, 3), MostProbableSize = s.MostProbableSize, Found = s.Found, SharedInSpec = s.SharedInSpec,
            }).ToList(),
            Rule = RelationRecovery.FoundRule,
            Precision = score.Precision is { } p ? Round(p) : null,
            Recall = score.Recall is { } r ? Round(r) : null,
            Predicted = score.Predicted, Truth = score.Truth, TruePositives = score.TruePositives,
            Missed = score.Missed.Select(SubsetFamily.Format).ToArray(),
            Spurious = score.Spurious.Select(SubsetFamily.Format).ToArray(),
            PrivateMean = Enumerable.Range(0, spec.Modalities).Select(j => Round(config.LatentDim - sizes.Where(s => s.Subset.Contains(j)).Sum(s => s.MeanSize), 3)).ToArray(),
            PairSharedDims = Enumerable.Range(0, spec.Modalities).Select(i => Enumerable.Range(0, spec.Modalities).Select(j => Round(pairs[i, j], 3)).ToArray()).ToArray(),
            Membership = rows,
            Information = information,
            Agreement = agreement,
            Predictability = predictability,
        };
    }

    static EvaluationReport.ProbeSection Probe(MultimodalVae model, PolyMnistSpec spec, LabelledSplit train, LabelledSplit test, EvalOptions options, int main)
    {
        int m = spec.Modalities;
        int nTrain = Math.Min(options.ProbeTrainSamples, train.Count), nTest = Math.Min(options.CrossModal.Samples, test.Count);
        var trainMu = LatentProbe.EncodeMeans(model, train, nTrain);
        var testMu = LatentProbe.EncodeMeans(model, test, nTest);
        try
        {
            var probeSubsets = Enumerable.Range(0, m).Select(j => new[] { j }).ToList();
            foreach (int k in new[] { 2, 3, m }.Where(k => k >= 2 && k <= m).Distinct()) probeSubsets.Add(Enumerable.Range(0, k).ToArray());
            var mainMap = new Dictionary<string, double?>();
            var factorMap = new Dictionary<string, double?>();
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
            return new()
            {
                Main = mainMap, TrainSamples = nTrain, TestSamples = nTest, Features = "encoder means mu_j, concatenated over the input subset, standardised",
                Factors = factorMap.Count > 0 ? factorMap : null,
                Subspaces = model.Coordinator is MrVaeObjective structure ? SubspaceProbe(structure, spec, train, test, trainMu, testMu, nTrain, nTest, options.Seed) : null,
            };
        }
        finally
        {
            foreach (var t in trainMu) t.Dispose();
            foreach (var t in testMu) t.Dispose();
        }
    }

    /// <summary>
    /// Where each factor of the spec lives in mrVAE's code: per member j of the factor, the probe's accuracy from μ_j at
    /// the positions whose most probable member set is exactly the factor's members (its subspace, which is what
    /// crosses to the other members) and at j's private positions (what only j's own reconstruction can use).
    /// </summary>
    static List<EvaluationReport.SubspaceProbe> SubspaceProbe(MrVaeObjective structure, PolyMnistSpec spec, LabelledSplit train, LabelledSplit test,
        Tensor[] trainMu, Tensor[] testMu, int nTrain, int nTest, long seed)
    {
        var isMember = structure.MostProbableMembers();
        int positions = isMember.Length;
        var memberSets = isMember.Select(row => Enumerable.Range(0, row.Length).Where(j => row[j]).ToArray()).ToArray();
        var trainIds = LabelledSplit.Range(0, nTrain);
        var testIds = LabelledSplit.Range(0, nTest);
        var result = new List<EvaluationReport.SubspaceProbe>();
        for (int f = 0; f < spec.Factors.Length; f++)
        {
            var members = spec.Factors[f].Members;
            long[] shared = Enumerable.Range(0, positions).Where(d => memberSets[d].SequenceEqual(members)).Select(d => (long)d).ToArray();
            var perMember = new Dictionary<string, EvaluationReport.SubspaceAccuracy>();
            foreach (int j in members)
            {
                long[] own = Enumerable.Range(0, positions).Where(d => memberSets[d].Length == 0 || memberSets[d].SequenceEqual(new[] { j })).Select(d => (long)d).ToArray();
                perMember[$"in={j}"] = new()
                {
                    Subspace = Score(shared, j), Private = Score(own, j), PrivatePositions = own.Length,
                };
            }
            result.Add(new() { Factor = spec.Factors[f].Name, Members = SubsetFamily.Format(members), SubspacePositions = shared.Length, ByMember = perMember });

            double? Score(long[] columns, int j)
            {
                if (columns.Length == 0) return null;
                using var scope = NewDisposeScope();
                using var index = tensor(columns);
                return Round(LatentProbe.FitAndScore(trainMu[j].index_select(1, index), train.LabelTensor(trainIds, f),
                    testMu[j].index_select(1, index), test.LabelTensor(testIds, f), seed: seed));
            }
        }
        return result;
    }

    static double? Round(double v, int digits = 4) => EvaluationReport.Round(v, digits);

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
            if (report.Relation is not null)
            {
                figures.AddRange(WriteRelationFigures(report.Relation, outDir, spec, config));
            }
        }
        if (runDirectory is not null && Plots.TrainingCurves(runDirectory, $"training: {DisplayName(config.Kind)} D={config.LatentDim} ({Path.GetFileName(Path.GetFullPath(runDirectory).TrimEnd('/'))})") is { } curves)
        {
            curves.Save(Path.Combine(outDir, "training_curves.png"));
            figures.Add("training_curves.png");
        }
        report.Figures = figures;
        File.WriteAllText(Path.Combine(outDir, ReportJson), report.ToJson());
        File.WriteAllText(Path.Combine(outDir, ReportMarkdown), Markdown(report, spec, config, cross));
        log?.Invoke($"report: {Path.Combine(outDir, ReportMarkdown)} ({figures.Count} figures, {cross?.Grids.Count ?? 0} sample grids in samples/)");
    }

    /// <summary>The membership, pair and information heatmaps of <paramref name="relation"/> into <paramref name="outDir"/>; their file names.</summary>
    static List<string> WriteRelationFigures(EvaluationReport.ImageRelation relation, string outDir, PolyMnistSpec spec, ModelConfig config)
    {
        RelationHeatmap(relation, config, spec).Save(Path.Combine(outDir, "relation_heatmap.png"));
        PairHeatmap(relation, spec, config).Save(Path.Combine(outDir, "relation_pairs.png"));
        var figures = new List<string> { "relation_heatmap.png", "relation_pairs.png" };
        if (relation.Information is not null)
        {
            InformationHeatmap(relation, config, spec).Save(Path.Combine(outDir, "relation_information.png"));
            figures.Add("relation_information.png");
        }
        return figures;
    }

    public const string RelationJson = "relation.json";

    /// <summary>
    /// mrVAE's inferred relation alone (seconds, no classifiers: for a run in progress): <see cref="RelationJson"/> and the
    /// relation figures in the output directory, measured on <see cref="CrossModalSettings.Samples"/> test tuples.
    /// </summary>
    public static (EvaluationReport.ImageRelation Relation, long Step) RelationOnly(EvalOptions options, Action<string>? log = null)
    {
        var (checkpointDir, state) = ResolveCheckpoint(options.RunDirectory, options.Checkpoint);
        if (state.Model.Kind != ModelKind.MrVae)
            throw new UserInputException($"run {options.RunDirectory} is a {state.Model.Kind} run, which infers no relation: --relation-only is for mrVAE runs (drop it for the full evaluation)");
        var spec = PolyMnistStore.LoadSpec(options.DataDirectory);
        if (state.Model.Modalities != spec.Modalities)
            throw new DataFormatException($"run {options.RunDirectory} was trained on {state.Model.Modalities} modalities but {options.DataDirectory} ({spec.Name}) has {spec.Modalities}: pass the dataset the run was trained on with --data");
        CheckData(options.RunDirectory, options.DataDirectory, options.AllowOtherData, log);
        var test = LabelledSplit.Load(options.DataDirectory, "test", spec);
        using var model = LoadModel(checkpointDir, state.Model);
        log?.Invoke($"relation of {checkpointDir} (step {state.Step}) on {Math.Min(options.CrossModal.Samples, test.Count)} test tuples");
        var relation = Relation(model, (MrVaeObjective)model.Coordinator, spec, test, options.CrossModal.Samples);
        Directory.CreateDirectory(options.OutputDirectory);
        File.WriteAllText(Path.Combine(options.OutputDirectory, RelationJson), JsonSerializer.Serialize(relation, EvaluationReport.Json));
        var figures = WriteRelationFigures(relation, options.OutputDirectory, spec, model.Config);
        log?.Invoke($"relation: {Path.Combine(options.OutputDirectory, RelationJson)} and {string.Join(", ", figures)}");
        return (relation, state.Step);
    }

    static Canvas CoherenceHeatmap(EvaluationReport report, CrossModalResult cross, PolyMnistSpec spec, ModelConfig config)
    {
        int m = spec.Modalities, main = PolyMnistGenerator.MainFactor(spec);
        var masks = CrossModal.SubsetMasks(m);
        var values = new double[masks.Length, m];
        for (int r = 0; r < masks.Length; r++)
            for (int j = 0; j < m; j++) values[r, j] = main >= 0 ? cross.Accuracy[(masks[r], j, main)] : double.NaN;
        return Plots.Heatmap($"{DisplayName(config.Kind)}: main-digit coherence", masks.Select(k => $"in {{{Subsets.Name(k, m)}}}").ToArray(),
            ModalityLabels(m), values, 0, 1, showValues: true, cell: 30,
            footer: "rows: input subset, columns: generated modality; accuracy of the digit classifier");
    }

    /// <summary>The membership posterior q(j ∈ A_d): one row per latent position, one column per modality.</summary>
    static Canvas RelationHeatmap(EvaluationReport.ImageRelation relation, ModelConfig config, PolyMnistSpec spec)
        => PositionHeatmap($"{DisplayName(config.Kind)}: membership q(j in A_d)", relation.Membership, 1, relation, config, spec,
            "rows: latent position d and its most probable member set (* shared in spec.json); columns: modality; colour: q(j in A_d)");

    /// <summary>
    /// What each modality's encoder says about its input at each position (nats), beside the membership: a member that
    /// says nothing, or an informed modality left out, shows here.
    /// </summary>
    static Canvas InformationHeatmap(EvaluationReport.ImageRelation relation, ModelConfig config, PolyMnistSpec spec)
    {
        var information = relation.Information!;
        return PositionHeatmap($"{DisplayName(config.Kind)}: information I(x_j; z_d), nats", information, Math.Max(0.5, information.Max(row => row.Max())),
            relation, config, spec, "rows: latent position d and its most probable member set, as in relation_heatmap.png; columns: modality");
    }

    /// <summary>One row per latent position (labelled by <see cref="PositionLabels"/>), one column per modality, colours from 0 to <paramref name="max"/>.</summary>
    static Canvas PositionHeatmap(string title, double[][] rows, double max, EvaluationReport.ImageRelation relation, ModelConfig config, PolyMnistSpec spec, string footer)
    {
        int m = spec.Modalities;
        var values = new double[rows.Length, m];
        for (int d = 0; d < rows.Length; d++)
            for (int j = 0; j < m; j++) values[d, j] = rows[d][j];
        var (labels, marks) = PositionLabels(relation.Membership, config, spec);
        return Plots.Heatmap(title, labels, ModalityLabels(m), values, 0, max, rowMarks: marks, cell: 14, footer: footer);
    }

    static string[] ModalityLabels(int modalities) => Enumerable.Range(0, modalities).Select(j => $"x{j}").ToArray();

    /// <summary>
    /// Each position's label: its members (q ≥ 0.5), "unshared" for a shareable position without any, "private" for
    /// the positions the model keeps private (ModelConfig.PrivatePositions); marked where the member set is shared in the spec.
    /// </summary>
    static (string[] Labels, bool[] Marks) PositionLabels(double[][] membership, ModelConfig config, PolyMnistSpec spec)
    {
        var truth = RelationRecovery.Truth(spec).Select(t => string.Join(",", t)).ToHashSet();
        int shareable = config.LatentDim - config.PrivatePositions;
        var labels = new string[membership.Length];
        var marks = new bool[membership.Length];
        for (int d = 0; d < membership.Length; d++)
        {
            var members = Enumerable.Range(0, spec.Modalities).Where(j => membership[d][j] >= 0.5).ToArray();
            labels[d] = $"d{d} {(d >= shareable ? "private" : members.Length == 0 ? "unshared" : SubsetFamily.Format(members))}";
            marks[d] = members.Length >= 2 && truth.Contains(string.Join(",", members));
        }
        return (labels, marks);
    }

    static Canvas PairHeatmap(EvaluationReport.ImageRelation relation, PolyMnistSpec spec, ModelConfig config)
    {
        int m = spec.Modalities;
        var rows = relation.PairSharedDims;
        var values = new double[m, m];
        double max = 1;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++)
            {
                values[i, j] = i == j ? double.NaN : rows[i][j] ?? double.NaN;
                if (i != j && double.IsFinite(values[i, j])) max = Math.Max(max, values[i, j]);
            }
        return Plots.Heatmap($"{DisplayName(config.Kind)}: latent dims shared per pair", ModalityLabels(m), ModalityLabels(m), values, 0, max, showValues: true, cell: 40,
            footer: "sum of mean n_A over subsets containing both");
    }

    static string F(double? v, string format = "F3") => v is not { } x ? "–" : x.ToString(format, CultureInfo.InvariantCulture);

    static string Markdown(EvaluationReport report, PolyMnistSpec spec, ModelConfig config, CrossModalResult? cross)
    {
        int m = spec.Modalities, main = PolyMnistGenerator.MainFactor(spec);
        var md = new StringBuilder();
        var (model, data) = (report.Model, report.Data);
        md.Append($"# Evaluation: {DisplayName(config.Kind)} (D = {config.LatentDim})\n\n");
        md.Append($"Run `{model.Run}`, checkpoint `{model.Checkpoint}` (step {model.Step}, test loss {F(model.TestLoss, "F1")}); ");
        md.Append($"data `{data.Dir}` ({spec.Name}: {data.Train} train / {data.Test} test tuples); {report.Samples} test tuples per input subset, seed {report.Seed}.\n\n");
        if (data.Fingerprint?.Warning is { } warning) md.Append($"**Warning:** {warning}.\n\n");
        md.Append("## Digit classifiers (test accuracy)\n\n| classifier | accuracy |\n|---|---|\n");
        foreach (var (k, v) in report.ClassifierAccuracy) md.Append($"| {k} | {F(v)} |\n");
        var coh = report.Coherence;
        md.Append("\n## Coherence (main digit)\n\n");
        if (main < 0) md.Append("No digit is shared by every modality in this dataset, so there is no main digit and none of the paper's rows; the corner-digit coherence below covers every digit.\n");
        else
        {
            md.Append("The paper's rows:\n\n| input → output | accuracy |\n|---|---|\n");
            foreach (var (k, v) in coh.PaperRows) md.Append($"| {k} | {F(v)} |\n");
        }
        if (coh.MainMeanByInputCount is { } byCount)
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
        if (coh.CornerSummary is { } cs)
        {
            md.Append($"\n## Corner-digit coherence\n\nFrom one modality to another: a corner digit the input shows too (shared) should be reproduced; one it does not show (unshared) sits at chance ({cs.Chance.ToString(CultureInfo.InvariantCulture)}).\n\n");
            md.Append($"Mean shared {F(cs.SharedMean)}, mean unshared {F(cs.UnsharedMean)}, self-reconstruction {F(cs.SelfMean)}.\n\n| input → output | shared corner | accuracy | other corner | accuracy |\n|---|---|---|---|---|\n");
            foreach (var row in cs.Rows)
            {
                var sh = row.Shared.ToArray(); var un = row.Unshared.ToArray();
                for (int k = 0; k < Math.Max(sh.Length, un.Length); k++)
                    md.Append($"| x{row.In}→x{row.Out} | {(k < sh.Length ? sh[k].Key : "")} | {(k < sh.Length ? F(sh[k].Value) : "")} | {(k < un.Length ? un[k].Key : "")} | {(k < un.Length ? F(un[k].Value) : "")} |\n");
            }
        }
        var joint = report.JointCoherence;
        md.Append($"\n## Joint coherence\n\n{joint.Samples} samples from the prior: {joint.Definition}.\n\n| factor | members | agreement | chance |\n|---|---|---|---|\n");
        foreach (var (name, f) in joint.Factors) md.Append($"| {name} | {{{f.Members}}} | {F(f.Agreement)} | {F(f.Chance, "G3")} |\n");
        md.Append("\n![prior samples](samples/prior.png)\n");
        if (report.TestLogLikelihood is { } ll)
            md.Append($"\n## Test log-likelihood\n\n{F(ll.MeanNats, "F1")} ± {F(ll.StandardError, "F1")} nats per tuple on {ll.Tuples} test tuples, K = {ll.ImportanceSamples} ({ll.Estimator}).\n");
        var fd = report.Fd;
        md.Append($"\n## Sample quality: FD\n\nFréchet distance on {fd.Features}; {fd.Samples} generated vs real test images (lower is better; not FID).\n\n| input → output | FD |\n|---|---|\n");
        foreach (var (k, v) in fd.PaperRows) md.Append($"| {k} | {F(v, "F2")} |\n");
        foreach (var (k, v) in fd.RealTrainVsTest) md.Append($"| real train vs real test ({k}) | {F(v, "F2")} |\n");
        if (report.Fid is { } fid)
        {
            md.Append($"\n## Sample quality: FID\n\nFréchet distance on {fid.Features} (weights `{fid.Weights}`); {fid.Samples} generated vs real test images.\n\n| input → output | FID |\n|---|---|\n");
            foreach (var (k, v) in fid.PaperRows) md.Append($"| {k} | {F(v, "F2")} |\n");
        }
        if (report.Relation is { } rel)
        {
            md.Append($"\n## Learned relation\n\nPer shared subset, E_q[n_A] (expected latent positions under the membership posterior) and n_A of the most probable structure; {rel.Rule}.\n");
            md.Append($"Precision {F(rel.Precision)}, recall {F(rel.Recall)} ({rel.TruePositives} of {rel.Predicted} recovered subsets are in spec.json, which has {rel.Truth}).");
            if (rel.Missed.Length > 0) md.Append($" Missed: {string.Join(" ", rel.Missed)}.");
            md.Append("\n\n| subset | E_q[n_A] | most probable n_A | found | shared in spec |\n|---|---|---|---|---|\n");
            foreach (var s in rel.Subsets.OrderByDescending(s => s.MeanSize ?? double.NegativeInfinity))
                md.Append($"| {s.Subset} | {F(s.MeanSize, "F2")} | {s.MostProbableSize} | {(s.Found ? "yes" : "")} | {(s.SharedInSpec ? "yes" : "")} |\n");
            md.Append("\n![relation](relation_heatmap.png)\n\n![pairs](relation_pairs.png)\n");
            if (report.Relation.Information is not null) md.Append("\n![information](relation_information.png)\n");
        }
        else md.Append("\n## Learned relation\n\nOnly mrVAE infers a sharing structure; this model has none.\n");
        var probe = report.LatentProbe;
        md.Append($"\n## Latent probe\n\nLinear softmax classifier on {probe.Features}: {probe.TrainSamples} training tuples, {probe.TestSamples} test tuples.\n\n| input | main digit accuracy |\n|---|---|\n");
        foreach (var (k, v) in probe.Main) md.Append($"| {k} | {F(v)} |\n");
        if (probe.Factors is { } pf)
        {
            md.Append("\n| input:factor | accuracy |\n|---|---|\n");
            foreach (var (k, v) in pf) md.Append($"| {k} | {F(v)} |\n");
        }
        if (probe.Subspaces is { } subspaces)
        {
            md.Append("\nWhere each factor lives: the probe from a member's μ at the factor's own subspace (the positions whose members are exactly the factor's; what crosses to the other members) and at the member's private positions.\n\n| factor | members | subspace positions | member | from the subspace | from private positions |\n|---|---|---|---|---|---|\n");
            foreach (var f in subspaces)
                foreach (var (member, a) in f.ByMember)
                    md.Append($"| {f.Factor} | {f.Members} | {f.SubspacePositions} | {member} | {F(a.Subspace)} | {F(a.Private)} ({a.PrivatePositions}) |\n");
        }
        md.Append("\n## Figures\n\n");
        if (report.Figures?.Contains("training_curves.png") == true) md.Append("![training curves](training_curves.png)\n\n");
        if (cross is not null)
        {
            md.Append("Sample grids per input subset are in `samples/` (rows: the given inputs, then every generated modality). The paper's rows:\n\n");
            foreach (int mask in PaperCoherenceMasks(m).Concat(PaperFdRows(m).Select(r => r.Mask)).Distinct())
                md.Append($"![from {{{Subsets.Name(mask, m)}}}](samples/in-{Subsets.Name(mask, m).Replace(',', '-')}.png)\n\n");
        }
        return md.ToString();
    }
}
