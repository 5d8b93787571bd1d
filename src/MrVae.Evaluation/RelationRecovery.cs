using MrVae.Data;
using MrVae.Model;

namespace MrVae.Evaluation;

/// <summary>
/// One shared subset of mrVAE's inferred structure: E_q[n_A] under the membership posterior and n_A of the most
/// probable structure; found where the latter is at least one (<see cref="VectorEvaluator.FoundRule"/>).
/// </summary>
public sealed record SubsetSize(int[] Subset, double MeanSize, int MostProbableSize, bool SharedInSpec)
{
    public string Name => SubsetFamily.Format(Subset);
    public bool Found => MostProbableSize >= 1;
}

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

    static string Key(IEnumerable<int> s) => string.Join(",", s.Distinct().OrderBy(x => x));

    /// <summary>The ground-truth shared member sets of a spec (|A| ≥ 2, distinct, sorted).</summary>
    public static int[][] Truth(PolyMnistSpec spec) =>
        spec.SharedMemberSets.Where(s => s.Length >= 2).GroupBy(Key).Select(g => g.First().OrderBy(x => x).ToArray()).ToArray();

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

    public static RecoveryScore Score(IEnumerable<SubsetSize> sizes, PolyMnistSpec spec) =>
        Score(sizes.Where(s => s.Found).Select(s => s.Subset), Truth(spec));

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
