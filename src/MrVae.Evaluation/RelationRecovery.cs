using MrVae.Data;
using System.Text.Json.Serialization;
using MrVae.Model;
using MrVae.Model.Objectives;
using static TorchSharp.torch;

namespace MrVae.Evaluation;

/// <summary>
/// One shared subset of mrVAE's inferred structure: E_q[n_A] under the membership posterior and n_A of the most
/// probable structure; found where the latter is at least one (<see cref="VectorEvaluator.FoundRule"/>).
/// </summary>
public sealed record SubsetSize(
    [property: JsonPropertyName("members")] int[] Subset,
    [property: JsonPropertyName("mean_size")] double MeanSize,
    [property: JsonPropertyName("most_probable_size")] int MostProbableSize,
    [property: JsonPropertyName("true")] bool SharedInSpec)
{
    [JsonIgnore] public string Name => SubsetFamily.Format(Subset);
    [JsonPropertyName("found")] public bool Found => MostProbableSize >= 1;
}

/// <summary>mrVAE's inferred structure: every shared subset's sizes, and the membership posterior q(j ∈ A_d) (D × M).</summary>
public sealed record InferredStructure(SubsetSize[] Subsets, double[][] Membership);

/// <summary>Precision and recall of a recovered sharing structure (null where the denominator is empty).</summary>
public sealed record RecoveryScore(double? Precision, double? Recall, int TruePositives, int Predicted, int Truth)
{
    public int[][] Missed { get; init; } = [];
    public int[][] Spurious { get; init; } = [];
}

/// <summary>
/// The learned relation against the data's ground truth: the predicted structure is every shared subset A that is
/// found (<see cref="SubsetSize.Found"/>); the truth is the spec's member sets with at least two members (the main
/// digit's full set included). Precision = |predicted ∩ truth| / |predicted|, recall = |predicted ∩ truth| / |truth|.
/// </summary>
public static class RelationRecovery
{
    /// <summary>The rule by which a subset counts as found; a posterior at its prior never passes it (docs/model.md).</summary>
    public const string FoundRule = "found: the most probable structure gives the subset at least one latent position (a position's most probable member set is {j : q(j in A_d) >= 1/2}); a posterior at its prior (rho < 1/2) gives no position two members";

    static string Key(IEnumerable<int> s) => string.Join(",", s.Distinct().OrderBy(x => x));

    /// <summary>The ground-truth shared member sets of a spec (|A| ≥ 2, distinct, sorted).</summary>
    public static int[][] Truth(PolyMnistSpec spec) => Truth(spec.SharedMemberSets);

    /// <summary>Ground-truth shared member sets (|A| ≥ 2, distinct, sorted) from a spec's member sets.</summary>
    public static int[][] Truth(IEnumerable<int[]> memberSets) =>
        memberSets.Where(s => s.Length >= 2).GroupBy(Key).Select(g => g.First().OrderBy(x => x).ToArray()).ToArray();

    /// <summary>mrVAE's structure (its membership posterior; it does not depend on the input), each subset marked against <paramref name="truth"/>.</summary>
    public static InferredStructure Infer(MrVaeObjective structure, IEnumerable<int[]> truth)
    {
        var keys = truth.Select(Key).ToHashSet();
        var mean = structure.ExpectedSizes();
        var mostProbable = structure.MostProbableSizes();
        var sizes = structure.Family.Subsets.Select((s, i) => new SubsetSize(s, Math.Round(mean[i], 4), mostProbable[i], keys.Contains(Key(s)))).ToArray();
        using var g = structure.Membership().to(ScalarType.Float64).cpu();
        var membership = Enumerable.Range(0, (int)g.shape[0]).Select(d => g[d].data<double>().ToArray().Select(x => Math.Round(x, 3)).ToArray()).ToArray();
        return new InferredStructure(sizes, membership);
    }

    public static RecoveryScore Score(IEnumerable<int[]> predicted, IEnumerable<int[]> truth)
    {
        var p = predicted.Select(Key).ToHashSet();
        var t = truth.Select(Key).ToHashSet();
        int hit = p.Count(t.Contains);
        int[][] Parse(IEnumerable<string> keys) => keys.Order().Select(k => k.Split(',').Select(int.Parse).ToArray()).ToArray();
        return new RecoveryScore(p.Count == 0 ? null : (double)hit / p.Count, t.Count == 0 ? null : (double)hit / t.Count, hit, p.Count, t.Count)
        {
            Missed = Parse(t.Where(k => !p.Contains(k))),
            Spurious = Parse(p.Where(k => !t.Contains(k))),
        };
    }

    public static RecoveryScore ScoreFound(IEnumerable<SubsetSize> sizes, IEnumerable<int[]> truth) =>
        Score(sizes.Where(s => s.Found).Select(s => s.Subset), truth);

    /// <summary>Per modality pair (i, j), i ≠ j: Σ over subsets containing both of E_q[n_A] (latent positions they share).</summary>
    public static double[,] PairMatrix(IEnumerable<SubsetSize> sizes, int modalities)
    {
        var m = new double[modalities, modalities];
        foreach (var s in sizes)
            foreach (int i in s.Subset)
                foreach (int j in s.Subset)
                    if (i != j) m[i, j] += s.MeanSize;
        return m;
    }
}
