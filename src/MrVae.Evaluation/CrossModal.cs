using MrVae.Data;
using MrVae.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Evaluation;

/// <summary>Conditional generation: from the modalities marked in <c>inputs</c>, every modality's images.</summary>
public interface IConditionalGenerator
{
    int Modalities { get; }
    /// <summary>Images per modality (B × 3 × 28 × 28 in [0, 1]).</summary>
    Tensor[] Generate(Tensor?[] x, bool[] inputs, IReadOnlyList<long> ids);
}

/// <summary>A trained model's own subset path (<see cref="MultimodalVae.Generate"/>), latents sampled.</summary>
public sealed class ModelGenerator(MultimodalVae model, Generator generator, bool sampleLatents = true) : IConditionalGenerator
{
    public int Modalities => model.Config.Modalities;

    public Tensor[] Generate(Tensor?[] x, bool[] inputs, IReadOnlyList<long> ids)
    {
        model.eval();
        return model.Generate(x, inputs, generator, sampleLatents);
    }
}

/// <summary>Input subsets as bit masks over modalities, and their names.</summary>
public static class Subsets
{
    public static int[] Members(int mask, int modalities) => Enumerable.Range(0, modalities).Where(j => (mask >> j & 1) == 1).ToArray();
    public static int Mask(IEnumerable<int> members) => members.Aggregate(0, (m, j) => m | 1 << j);
    public static string Name(int mask, int modalities) => string.Join(",", Members(mask, modalities));
    /// <summary>"in=0,1->out=2" (the report's key for one cell of the coherence matrix).</summary>
    public static string Key(int mask, int output, int modalities) => $"in={Name(mask, modalities)}->out={output}";
    /// <summary>The paper's notation: "x0->x0" for one input, "X{0,1}->x0" for several.</summary>
    public static string PaperName(int mask, int output, int modalities)
    {
        var m = Members(mask, modalities);
        return (m.Length == 1 ? $"x{m[0]}" : $"X{{{string.Join(",", m)}}}") + $"->x{output}";
    }
}

public sealed record CrossModalSettings
{
    /// <summary>Test tuples per input subset (the first N of the test split).</summary>
    public int Samples { get; init; } = 1000;
    public int BatchSize { get; init; } = 250;
    /// <summary>Samples per subset kept for the sample grids.</summary>
    public int GridSamples { get; init; } = 8;
    /// <summary>Compute FD for every (input subset, output) cell, not only the paper's rows (one eigendecomposition per cell).</summary>
    public bool FullFdMatrix { get; init; }
}

/// <summary>What one pass of conditional generation over every non-empty input subset measured.</summary>
public sealed class CrossModalResult
{
    public int Modalities { get; init; }
    public int Samples { get; init; }
    /// <summary>Accuracy per (input mask, output modality, factor) for every factor the output shows.</summary>
    public Dictionary<(int Mask, int Output, int Factor), double> Accuracy { get; } = new();
    /// <summary>FD of generated vs real test images per (input mask, output modality).</summary>
    public Dictionary<(int Mask, int Output), double> Fd { get; } = new();
    /// <summary>Per subset mask: the grid rows (label, images as CHW bytes).</summary>
    public Dictionary<int, List<(string Label, byte[][] Images)>> Grids { get; } = new();
}

/// <summary>
/// Coherence, FD and sample grids in one pass: for every non-empty input subset A, generate all modalities of the
/// first N test tuples from X_A, classify each output with the digit classifiers (accuracy against the true labels
/// of every factor that output shows), and accumulate classifier features for the Fréchet distance against the
/// real test images of the same tuples.
/// </summary>
public static class CrossModal
{
    public static CrossModalResult Run(IConditionalGenerator generator, ClassifierSet classifiers, LabelledSplit test,
        CrossModalSettings settings, IReadOnlyCollection<(int Mask, int Output)> fdCells, Action<string>? log = null)
    {
        int m = generator.Modalities;
        if (test.Modalities != m) throw new DataFormatException($"the model has {m} modalities, the data {test.Modalities}");
        int n = Math.Min(settings.Samples, test.Count);
        if (n < 2) throw new ArgumentException("need at least two test samples (FD needs a covariance)");
        var result = new CrossModalResult { Modalities = m, Samples = n };
        var factorsOf = Enumerable.Range(0, m).Select(j => classifiers.Targets.Where(t => t.Modality == j).Select(t => t.Factor).ToArray()).ToArray();
        var correct = new Dictionary<(int, int, int), long>();
        var cells = settings.FullFdMatrix
            ? SubsetMasks(m).SelectMany(mask => Enumerable.Range(0, m).Select(j => (mask, j))).ToHashSet()
            : fdCells.ToHashSet();
        var fake = cells.ToDictionary(c => c, c => new MomentAccumulator(classifiers.FeatureWidth(c.Item2)));
        var real = cells.Select(c => c.Item2).Distinct().ToDictionary(j => j, j => new MomentAccumulator(classifiers.FeatureWidth(j)));
        try
        {
            // Real features once per output modality.
            for (int start = 0; start < n; start += settings.BatchSize)
            {
                using var scope = NewDisposeScope();
                var ids = LabelledSplit.Range(start, Math.Min(settings.BatchSize, n - start));
                foreach (var (j, acc) in real) acc.Add(classifiers.Features(j, test.Images[j].Batch(ids)));
            }
            foreach (int mask in SubsetMasks(m))
            {
                var inputs = Enumerable.Range(0, m).Select(j => (mask >> j & 1) == 1).ToArray();
                for (int start = 0; start < n; start += settings.BatchSize)
                {
                    using var scope = NewDisposeScope();
                    var ids = LabelledSplit.Range(start, Math.Min(settings.BatchSize, n - start));
                    var x = Enumerable.Range(0, m).Select(j => inputs[j] ? test.Images[j].Batch(ids) : null).ToArray();
                    var images = generator.Generate(x, inputs, ids);
                    for (int j = 0; j < m; j++)
                    {
                        foreach (int f in factorsOf[j])
                        {
                            long hits = classifiers.Predict(j, f, images[j]).eq(test.LabelTensor(ids, f)).sum().ToInt64();
                            correct[(mask, j, f)] = correct.GetValueOrDefault((mask, j, f)) + hits;
                        }
                        if (fake.TryGetValue((mask, j), out var acc)) acc.Add(classifiers.Features(j, images[j]));
                    }
                    if (start == 0) result.Grids[mask] = GridRows(x, images, inputs, Math.Min(settings.GridSamples, ids.Length));
                    foreach (var t in images) t.Dispose();
                }
                log?.Invoke($"generated from {{{Subsets.Name(mask, m)}}}: coherence of x0's digits " + string.Join(", ",
                    classifiers.Targets.Where(t => t.Modality == 0).Select(t => $"{t.FactorName} {(double)correct.GetValueOrDefault((mask, 0, t.Factor)) / n:F3}")));
            }
            foreach (var (key, hits) in correct) result.Accuracy[key] = (double)hits / n;
            // One eigendecomposition per real distribution, one per generated one.
            var reference = real.ToDictionary(kv => kv.Key, kv =>
            {
                var (mean, cov) = kv.Value.Moments();
                return (Mean: mean, Cov: cov, Root: Frechet.SqrtPsd(cov));
            });
            foreach (var ((mask, j), acc) in fake)
            {
                using var scope = NewDisposeScope();
                var (mean, cov) = acc.Moments();
                var r = reference[j];
                result.Fd[(mask, j)] = Frechet.Distance(r.Mean, r.Cov, mean, cov, r.Root);
            }
            foreach (var r in reference.Values) { r.Mean.Dispose(); r.Cov.Dispose(); r.Root.Dispose(); }
        }
        finally
        {
            foreach (var a in fake.Values) a.Dispose();
            foreach (var a in real.Values) a.Dispose();
        }
        return result;
    }

    /// <summary>Every non-empty subset mask, by size then lexicographically ({0}, {1}, …, {0,1}, …).</summary>
    public static int[] SubsetMasks(int modalities) => Enumerable.Range(1, (1 << modalities) - 1)
        .OrderBy(mask => System.Numerics.BitOperations.PopCount((uint)mask))
        .ThenBy(mask => Subsets.Name(mask, modalities), StringComparer.Ordinal).ToArray();

    static List<(string, byte[][])> GridRows(Tensor?[] x, Tensor[] outputs, bool[] inputs, int count)
    {
        var rows = new List<(string, byte[][])>();
        for (int j = 0; j < inputs.Length; j++)
            if (inputs[j]) rows.Add(($"input x{j}", ToBytes(x[j]!, count)));
        for (int j = 0; j < outputs.Length; j++) rows.Add(($"gen x{j}", ToBytes(outputs[j], count)));
        return rows;
    }

    public static byte[][] ToBytes(Tensor images, int count)
    {
        var values = images.narrow(0, 0, count).detach().cpu().to(float32).contiguous().data<float>().ToArray();
        const int size = PolyMnistSplit.ImageBytes;
        return Enumerable.Range(0, count).Select(i => ImageGrid.FromFloats(values.AsSpan(i * size, size))).ToArray();
    }
}
