using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using MrVae.Data;
using MrVae.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MrVae.Evaluation;

/// <summary>
/// The coherence classifier of docs/setup.md (MoPoE's PolyMNIST classifier): Conv(3→10,k4,s2,p1) Dropout2d ReLU
/// Conv(10→20,k4,s2,p1) Dropout2d ReLU Flatten Linear(980→128) Dropout ReLU Linear(128→10). Its 128-wide
/// penultimate activations are the features of the Fréchet distance.
/// </summary>
public sealed class DigitClassifier : Module<Tensor, Tensor>
{
    public const int FeatureWidth = 128;
    readonly Sequential trunk;
    readonly Linear head;

    public DigitClassifier(double dropout2d = 0.25, double dropout = 0.5) : base(nameof(DigitClassifier))
    {
        trunk = Sequential(
            Conv2d(3, 10, 4, stride: 2, padding: 1), Dropout2d(dropout2d), ReLU(),
            Conv2d(10, 20, 4, stride: 2, padding: 1), Dropout2d(dropout2d), ReLU(),
            Flatten(),
            Linear(980, FeatureWidth), Dropout(dropout), ReLU());
        head = Linear(FeatureWidth, 10);
        RegisterComponents();
    }

    /// <summary>Penultimate activations (B × 128).</summary>
    public Tensor Features(Tensor x) => trunk.forward(x);

    public override Tensor forward(Tensor x)
    {
        using var h = trunk.forward(x);
        return head.forward(h);
    }
}

/// <summary>
/// One digit position: the label of factor <see cref="Factor"/> as modality <see cref="Modality"/> shows it at
/// <see cref="Placement"/>. The classifier sees that square cropped and resized to 28 × 28 (bilinear), so a corner
/// digit fills its input as the main digit does.
/// </summary>
public sealed record DigitTarget(int Modality, int Factor, string FactorName, FactorPlacement Placement)
{
    public string Name => $"m{Modality}-{FactorName}";

    /// <summary>The classifier's input for images of this modality (B × 3 × 28 × 28).</summary>
    public Tensor Prepare(Tensor images)
    {
        var p = Placement;
        if (p.X == 0 && p.Y == 0 && p.Size == PolyMnistSpec.Side) return images.alias();
        using var crop = images.narrow(2, p.Y, p.Size).narrow(3, p.X, p.Size);
        return nn.functional.interpolate(crop, size: [PolyMnistSpec.Side, PolyMnistSpec.Side], mode: InterpolationMode.Bilinear, align_corners: false);
    }

    /// <summary>Every placement of every factor: one classifier per modality and digit position.</summary>
    public static IReadOnlyList<DigitTarget> For(PolyMnistSpec spec) =>
        spec.Factors.SelectMany((f, i) => f.Placements.Select(p => new DigitTarget(p.Modality, i, f.Name, p)))
            .OrderBy(t => t.Modality).ThenBy(t => t.Factor).ToArray();
}

public sealed record ClassifierTraining
{
    public int Epochs { get; init; } = 10;
    public int BatchSize { get; init; } = 128;
    public double LearningRate { get; init; } = 1e-3;
    public long Seed { get; init; }
    /// <summary>At most this many training tuples (null: the whole training split).</summary>
    public int? MaxTrainSamples { get; init; }
}

/// <summary>What classifiers.json records per classifier.</summary>
public sealed record ClassifierEntry(int Modality, int Factor, string Name, string File, double TestAccuracy);

public sealed record ClassifierManifest
{
    public const int CurrentFormat = 1;
    public int FormatVersion { get; init; } = CurrentFormat;
    public required string Spec { get; init; }
    /// <summary>SHA-256 of spec.json and train/labels.bin: the classifiers belong to exactly this data.</summary>
    public required string DataFingerprint { get; init; }
    public int TrainSamples { get; init; }
    public int TestSamples { get; init; }
    public required ClassifierTraining Training { get; init; }
    public double TrainSeconds { get; init; }
    public required ClassifierEntry[] Classifiers { get; init; }
}

/// <summary>
/// The digit classifiers of a dataset: one per modality and digit position (vanilla: the main digit of each
/// modality; extended: also both corner digits), trained on the training split, scored on the test split, saved
/// beside the data (DATA/classifiers/) and reused while the data is unchanged.
/// </summary>
public sealed class ClassifierSet : IDisposable
{
    public const string ManifestFile = "classifiers.json";
    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public PolyMnistSpec Spec { get; }
    public IReadOnlyList<DigitTarget> Targets { get; }
    /// <summary>Test accuracy per target name.</summary>
    public IReadOnlyDictionary<string, double> TestAccuracy => accuracy;
    public double TrainSeconds { get; private set; }
    /// <summary>True when this set was read from disk rather than trained now.</summary>
    public bool Reused { get; private set; }
    readonly Dictionary<(int Modality, int Factor), DigitClassifier> nets = new();
    readonly Dictionary<string, double> accuracy = new();

    ClassifierSet(PolyMnistSpec spec)
    {
        Spec = spec;
        Targets = DigitTarget.For(spec);
        foreach (var t in Targets)
            nets[(t.Modality, t.Factor)] = Seeds.Construct(0, $"classifier/{t.Name}", () => new DigitClassifier());
    }

    public DigitTarget Target(int modality, int factor) =>
        Targets.FirstOrDefault(t => t.Modality == modality && t.Factor == factor)
        ?? throw new ArgumentException($"modality {modality} does not show factor {factor}");

    public bool Has(int modality, int factor) => nets.ContainsKey((modality, factor));

    /// <summary>Logits (B × 10) of the classifier for <paramref name="factor"/> on images of <paramref name="modality"/> (evaluation mode, no grad).</summary>
    public Tensor Logits(int modality, int factor, Tensor images)
    {
        using var _ = no_grad();
        var net = nets[(modality, factor)];
        net.eval();
        using var input = Target(modality, factor).Prepare(images);
        return net.forward(input);
    }

    public Tensor Predict(int modality, int factor, Tensor images)
    {
        using var logits = Logits(modality, factor, images);
        return logits.argmax(1);
    }

    /// <summary>Penultimate features of every classifier of <paramref name="modality"/>, concatenated (B × 128·positions).</summary>
    public Tensor Features(int modality, Tensor images)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var parts = Targets.Where(t => t.Modality == modality).Select(t =>
        {
            var net = nets[(t.Modality, t.Factor)];
            net.eval();
            return net.Features(t.Prepare(images));
        }).ToArray();
        return cat(parts, 1).MoveToOuterDisposeScope();
    }

    public int FeatureWidth(int modality) => Targets.Count(t => t.Modality == modality) * DigitClassifier.FeatureWidth;

    /// <summary>Trains every classifier on <paramref name="train"/> and scores it on <paramref name="test"/>.</summary>
    public static ClassifierSet Train(PolyMnistSpec spec, LabelledSplit train, LabelledSplit test, ClassifierTraining options, Action<string>? log = null)
    {
        if (train.Modalities != spec.Modalities || train.Factors != spec.Factors.Length)
            throw new UserInputException($"the training split has {train.Modalities} modalities and {train.Factors} factors, the spec {spec.Modalities} and {spec.Factors.Length}");
        var set = new ClassifierSet(spec);
        var watch = Stopwatch.StartNew();
        int count = Math.Min(train.Count, options.MaxTrainSamples ?? int.MaxValue);
        for (int j = 0; j < spec.Modalities; j++)
        {
            var targets = set.Targets.Where(t => t.Modality == j).ToArray();
            var optimizers = targets.Select(t => optim.Adam(set.nets[(t.Modality, t.Factor)].parameters(), lr: options.LearningRate)).ToArray();
            manual_seed(Seeds.Derive(options.Seed, $"classifier-dropout/{j}"));
            var rng = new Random(unchecked((int)Seeds.Derive(options.Seed, $"classifier-order/{j}")));
            var order = Enumerable.Range(0, count).Select(i => (long)i).ToArray();
            for (int epoch = 0; epoch < options.Epochs; epoch++)
            {
                rng.Shuffle(order);
                for (int start = 0; start < count; start += options.BatchSize)
                {
                    var ids = order.AsSpan(start, Math.Min(options.BatchSize, count - start)).ToArray();
                    // No GC inside libtorch calls (TorchSharp's temporary Scalars; see NativeCallGuard).
                    MrVae.Model.Runtime.NativeCallGuard.Run(() =>
                    {
                        using var scope = NewDisposeScope();
                        var x = train.Images[j].Batch(ids);
                        for (int k = 0; k < targets.Length; k++)
                        {
                            var net = set.nets[(targets[k].Modality, targets[k].Factor)];
                            net.train();
                            optimizers[k].zero_grad();
                            var loss = nn.functional.cross_entropy(net.forward(targets[k].Prepare(x)), train.LabelTensor(ids, targets[k].Factor));
                            loss.backward();
                            optimizers[k].step();
                        }
                    });
                }
            }
            foreach (var o in optimizers) o.Dispose();
            foreach (var t in targets)
            {
                set.accuracy[t.Name] = set.Accuracy(t, test);
                log?.Invoke($"classifier {t.Name}: test accuracy {set.accuracy[t.Name]:F3}");
            }
        }
        set.TrainSeconds = watch.Elapsed.TotalSeconds;
        return set;
    }

    /// <summary>Accuracy of one classifier on a labelled split (all of it).</summary>
    public double Accuracy(DigitTarget target, LabelledSplit split, int batchSize = 500)
    {
        long correct = 0;
        for (int start = 0; start < split.Count; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var ids = LabelledSplit.Range(start, Math.Min(batchSize, split.Count - start));
            var predicted = Predict(target.Modality, target.Factor, split.Images[target.Modality].Batch(ids));
            correct += predicted.eq(split.LabelTensor(ids, target.Factor)).sum().ToInt64();
        }
        return (double)correct / split.Count;
    }

    /// <summary>Mean test accuracy of the main digit's classifiers (over modalities), or NaN without a main digit.</summary>
    public double MainAccuracy()
    {
        int main = PolyMnistGenerator.MainFactor(Spec);
        var values = Targets.Where(t => t.Factor == main).Select(t => accuracy[t.Name]).ToArray();
        return values.Length == 0 ? double.NaN : values.Average();
    }

    public void Save(string dir, ClassifierManifest manifest)
    {
        Directory.CreateDirectory(dir);
        foreach (var t in Targets) nets[(t.Modality, t.Factor)].save(Path.Combine(dir, t.Name + ".bin"));
        File.WriteAllText(Path.Combine(dir, ManifestFile), JsonSerializer.Serialize(manifest, Json));   // last: marks the set complete
    }

    /// <summary>The manifest in <paramref name="dir"/>, or null when there is none or it cannot be read.</summary>
    public static ClassifierManifest? ReadManifest(string dir)
    {
        string path = Path.Combine(dir, ManifestFile);
        if (!File.Exists(path)) return null;
        try { return JsonSerializer.Deserialize<ClassifierManifest>(File.ReadAllText(path), Json); }
        catch (JsonException) { return null; }
    }

    public static ClassifierSet Load(string dir, PolyMnistSpec spec, ClassifierManifest manifest)
    {
        var set = new ClassifierSet(spec) { Reused = true, TrainSeconds = manifest.TrainSeconds };
        foreach (var t in set.Targets)
        {
            var entry = manifest.Classifiers.FirstOrDefault(e => e.Name == t.Name)
                ?? throw new DataFormatException($"{dir}/{ManifestFile} lacks classifier {t.Name}; delete {dir} to retrain");
            string file = Path.Combine(dir, entry.File);
            try { set.nets[(t.Modality, t.Factor)].load(file); }
            catch (Exception e) when (e is not DataFormatException)
            {
                throw new DataFormatException($"classifier {file} cannot be read ({e.Message}); delete {dir} to retrain", e);
            }
            set.accuracy[t.Name] = entry.TestAccuracy;
        }
        return set;
    }

    /// <summary>SHA-256 over spec.json and train/labels.bin of a dataset directory.</summary>
    public static string Fingerprint(string dataDir)
    {
        using var sha = SHA256.Create();
        foreach (var path in new[] { Path.Combine(dataDir, PolyMnistStore.SpecFile), PolyMnistStore.LabelsPath(dataDir, "train") })
        {
            var bytes = File.ReadAllBytes(path);
            sha.TransformBlock(bytes, 0, bytes.Length, null, 0);
        }
        sha.TransformFinalBlock([], 0, 0);
        return Convert.ToHexString(sha.Hash!).ToLowerInvariant();
    }

    /// <summary>
    /// The classifiers of the dataset in <paramref name="dataDir"/>: read from <paramref name="classifierDir"/>
    /// (default DATA/classifiers) when they were trained on this very data with these options, else trained on its
    /// training split, scored on its test split and saved there.
    /// </summary>
    public static ClassifierSet LoadOrTrain(string dataDir, PolyMnistSpec spec, LabelledSplit train, LabelledSplit test,
        ClassifierTraining options, string? classifierDir = null, Action<string>? log = null)
    {
        string dir = classifierDir ?? Path.Combine(dataDir, "classifiers");
        string fingerprint = Fingerprint(dataDir);
        var manifest = ReadManifest(dir);
        if (manifest is not null && manifest.FormatVersion == ClassifierManifest.CurrentFormat && manifest.DataFingerprint == fingerprint && manifest.Training == options)
        {
            log?.Invoke($"reusing digit classifiers from {dir} (trained {manifest.TrainSamples} tuples, {options.Epochs} epochs)");
            return Load(dir, spec, manifest);
        }
        log?.Invoke(manifest is null
            ? $"training digit classifiers ({DigitTarget.For(spec).Count}) on {Math.Min(train.Count, options.MaxTrainSamples ?? int.MaxValue)} training tuples, {options.Epochs} epochs -> {dir}"
            : $"the classifiers in {dir} belong to other data or options: retraining");
        var set = Train(spec, train, test, options, log);
        try
        {
            set.Save(dir, new ClassifierManifest
            {
                Spec = spec.Name, DataFingerprint = fingerprint, TrainSamples = Math.Min(train.Count, options.MaxTrainSamples ?? int.MaxValue),
                TestSamples = test.Count, Training = options, TrainSeconds = Math.Round(set.TrainSeconds, 1),
                Classifiers = set.Targets.Select(t => new ClassifierEntry(t.Modality, t.Factor, t.Name, t.Name + ".bin", set.accuracy[t.Name])).ToArray(),
            });
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A read-only dataset directory: evaluate anyway, the classifiers are just not kept.
            log?.Invoke($"could not keep the classifiers in {dir} ({e.Message}); pass --classifiers DIR to reuse them next time");
        }
        return set;
    }

    public void Dispose()
    {
        foreach (var n in nets.Values) n.Dispose();
    }
}
