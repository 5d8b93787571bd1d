namespace MrVae.Model;

/// <summary>
/// The family 𝒜 of shared subsets (|A| ≥ 2) over M modalities, in a fixed order: size descending, then lexicographic.
/// </summary>
public sealed class SubsetFamily
{
    public int Modalities { get; }
    /// <summary>Shared subsets as sorted modality ids, in the family's order.</summary>
    public IReadOnlyList<int[]> Subsets { get; }

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
        list.Sort(CompareOrder);
        Subsets = list;
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

    public static string Format(IEnumerable<int> members) => "{" + string.Join(",", members) + "}";

    static int CompareOrder(int[] a, int[] b)
    {
        if (a.Length != b.Length) return b.Length.CompareTo(a.Length);
        for (int k = 0; k < a.Length; k++)
            if (a[k] != b[k]) return a[k].CompareTo(b[k]);
        return 0;
    }
}
