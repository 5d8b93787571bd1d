namespace MrVae.Model;

/// <summary>
/// The family 𝒜 of shared subsets (|A| ≥ 2) over M modalities, in the fixed processing order of model.md:
/// size descending, then lexicographic. Also index tables over every (subset, member) pair and every
/// (subset, member, input) triple.
/// </summary>
public sealed class SubsetFamily
{
    public int Modalities { get; }
    /// <summary>Shared subsets as sorted modality ids, in processing order.</summary>
    public IReadOnlyList<int[]> Subsets { get; }

    /// <summary>(subset, member) pairs, flattened: pair p belongs to subset PairSubset[p] and member PairMember[p].</summary>
    public int[] PairSubset { get; }
    public int[] PairMember { get; }
    /// <summary>Index of the first pair of subset s (pairs of a subset are contiguous, members ascending).</summary>
    public int[] SubsetPairOffset { get; }

    /// <summary>(subset, member j, input i) triples, grouped by pair: triple t belongs to pair TriplePair[t] and reads z_{TripleInput[t]}.</summary>
    public int[] TriplePair { get; }
    public int[] TripleInput { get; }

    public int PairCount => PairSubset.Length;
    public int TripleCount => TriplePair.Length;

    public SubsetFamily(int modalities, IEnumerable<int[]> subsets)
    {
        if (modalities < 1) throw new ArgumentOutOfRangeException(nameof(modalities), "need at least one modality");
        Modalities = modalities;
        var list = new List<int[]>();
        var seen = new HashSet<string>();
        foreach (var raw in subsets)
        {
            var s = raw.Distinct().OrderBy(x => x).ToArray();
            if (s.Length < 2) throw new ArgumentException($"shared subset {{{string.Join(",", raw)}}} needs at least two members");
            if (s[0] < 0 || s[^1] >= modalities)
                throw new ArgumentException($"shared subset {{{string.Join(",", raw)}}} names a modality outside 0..{modalities - 1}");
            if (seen.Add(string.Join(",", s))) list.Add(s);
        }
        list.Sort(CompareProcessingOrder);
        Subsets = list;

        var pairSubset = new List<int>(); var pairMember = new List<int>(); var offsets = new List<int>();
        var triplePair = new List<int>(); var tripleInput = new List<int>();
        for (int s = 0; s < list.Count; s++)
        {
            offsets.Add(pairSubset.Count);
            foreach (int j in list[s])
            {
                int p = pairSubset.Count;
                pairSubset.Add(s); pairMember.Add(j);
                foreach (int i in list[s]) { triplePair.Add(p); tripleInput.Add(i); }
            }
        }
        PairSubset = pairSubset.ToArray(); PairMember = pairMember.ToArray(); SubsetPairOffset = offsets.ToArray();
        TriplePair = triplePair.ToArray(); TripleInput = tripleInput.ToArray();
    }

    /// <summary>Every subset of size 2..maxOrder (default: all 2^M − M − 1 of them).</summary>
    public static SubsetFamily All(int modalities, int? maxOrder = null)
    {
        int order = Math.Min(maxOrder ?? modalities, modalities);
        var subsets = new List<int[]>();
        for (int mask = 1; mask < (1 << modalities); mask++)
        {
            var members = Enumerable.Range(0, modalities).Where(j => (mask & (1 << j)) != 0).ToArray();
            if (members.Length >= 2 && members.Length <= order) subsets.Add(members);
        }
        return new SubsetFamily(modalities, subsets);
    }

    /// <summary>Number of shared subsets that contain modality j.</summary>
    public int CountContaining(int j) => Subsets.Count(s => s.Contains(j));

    public static string Format(IEnumerable<int> members) => "{" + string.Join(",", members) + "}";

    static int CompareProcessingOrder(int[] a, int[] b)
    {
        if (a.Length != b.Length) return b.Length.CompareTo(a.Length);
        for (int k = 0; k < a.Length; k++)
            if (a[k] != b[k]) return a[k].CompareTo(b[k]);
        return 0;
    }

    /// <summary>All non-empty subsets of {0..M-1} as bit masks, ascending (used by MoPoE and subset training).</summary>
    public static int[] NonEmptyMasks(int modalities) => Enumerable.Range(1, (1 << modalities) - 1).ToArray();
}
