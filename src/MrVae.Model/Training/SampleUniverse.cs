using MrVae.Data;
using MrVae.Model.Numerics;
using static TorchSharp.torch;

namespace MrVae.Model.Training;

/// <summary>A shard's samples as its node reports them: how many, and their keys (null: the positions 0..Count−1).</summary>
public sealed record ShardKeys(int Count, long[]? Keys)
{
    public IEnumerable<long> All => Keys ?? Enumerable.Range(0, Count).Select(i => (long)i);
}

/// <summary>
/// The training samples of a run: the union of its modalities' sample keys, sorted (the schedule's positions index
/// it), and which modality holds which key. Complete shards of one size keep the positions as keys, as before
/// missing modalities existed. Only the coordinator (or the single-process trainer) holds one: a member never learns
/// which keys the others hold.
/// </summary>
public sealed class SampleUniverse
{
    readonly Dictionary<int, HashSet<long>?> held = new();

    /// <summary>The sorted union of keys; null when the samples are the positions 0..Count−1.</summary>
    public long[]? Keys { get; }
    public int Count { get; }

    public SampleUniverse(long[]? keys, int count)
    {
        if (keys is not null && keys.Length != count) throw new ArgumentException("keys and count disagree", nameof(keys));
        Keys = keys; Count = count;
    }

    /// <summary>
    /// The universe of the given shards (indexed by modality; null where absent): the positions when every shard is
    /// complete and addressed by position (then all must have one size), else the union of keys. A shard that shares
    /// no key with the others is refused: it is not part of the same dataset.
    /// </summary>
    public static SampleUniverse Of(IReadOnlyList<ShardKeys?> shards)
    {
        var present = Enumerable.Range(0, shards.Count).Where(j => shards[j] is not null).ToArray();
        if (present.Length == 0) throw new UserInputException("a dataset needs at least one modality");
        SampleUniverse universe;
        if (present.All(j => shards[j]!.Keys is null))
        {
            var counts = present.Select(j => shards[j]!.Count).Distinct().ToArray();
            if (counts.Length > 1)
                throw new UserInputException($"modality shards disagree on the training size ({string.Join(", ", counts)}): they are not one dataset (give every node the shards of one `mrvae data make`)");
            universe = new SampleUniverse(null, counts[0]);
        }
        else
        {
            var union = present.SelectMany(j => shards[j]!.All).Distinct().Order().ToArray();
            universe = new SampleUniverse(union, union.Length);
        }
        foreach (int j in present) universe.held[j] = shards[j]!.Keys is null && universe.Keys is null ? null : shards[j]!.All.ToHashSet();
        if (present.Length > 1)
            foreach (int j in present)
            {
                var set = universe.held[j];
                if (set is null) continue;
                bool shared = present.Where(k => k != j).Any(k => universe.held[k] is { } other ? set.Overlaps(other) : set.Any(key => key >= 0 && key < shards[k]!.Count));
                if (!shared) throw NoSharedIds(j, present.Where(k => k != j));
            }
        return universe;
    }

    static UserInputException NoSharedIds(int modality, IEnumerable<int> others) => new(
        $"modality {modality}'s shard shares no sample ids with modalities {string.Join(",", others)}: it belongs to another dataset (another `mrvae data make`, spec or --seed) " +
        $"or its node uses another id secret ({SampleIds.SecretVariable}); give every node the shards of one dataset and the same secret");

    /// <summary>
    /// Adds (or replaces) what <paramref name="modality"/> holds, for a member that attaches to a running run. Refused
    /// when it shares no key with the run's samples, or (complete shards) has another size. Returns a note when some
    /// of its keys are not among the run's samples (those are never asked for), else null.
    /// </summary>
    public string? Join(int modality, ShardKeys shard)
    {
        if (Keys is null && shard.Keys is null)
        {
            if (shard.Count != Count)
                throw new UserInputException($"modality {modality}'s shard has {shard.Count} training samples, the run's others {Count}: it is not part of this dataset");
            held[modality] = null;
            return null;
        }
        var set = shard.All.ToHashSet();
        int inside = Keys is null ? set.Count(k => k >= 0 && k < Count) : set.Count(k => Array.BinarySearch(Keys, k) >= 0);
        if (inside == 0) throw NoSharedIds(modality, held.Keys.Where(k => k != modality).Order());
        held[modality] = set;
        return inside < set.Count ? $"{set.Count - inside} of its {set.Count} sample ids are not among the run's samples and are not trained" : null;
    }

    /// <summary>The key at schedule position <paramref name="position"/>.</summary>
    public long Key(long position) => Keys is null ? position : Keys[position];

    public bool Holds(int modality, long key)
        => held.TryGetValue(modality, out var set) && (set is null ? key >= 0 && key < Count : set.Contains(key));

    /// <summary>
    /// The batch at schedule <paramref name="positions"/> for <paramref name="members"/> (ascending): which member
    /// holds which of its samples; samples no member holds are left out.
    /// </summary>
    public BatchPlan Plan(long[] positions, int[] members, int modalities)
    {
        var keys = positions.Select(Key).ToArray();
        var holds = new bool[keys.Length, modalities];
        var kept = new List<int>();
        for (int b = 0; b < keys.Length; b++)
        {
            bool any = false;
            foreach (int j in members) any |= holds[b, j] = Holds(j, keys[b]);
            if (any) kept.Add(b);
        }
        var rows = new int[]?[modalities];
        foreach (int j in members)
            rows[j] = Enumerable.Range(0, kept.Count).Where(r => holds[kept[r], j]).ToArray();
        return new BatchPlan(kept.Select(b => keys[b]).ToArray(), rows);
    }
}

/// <summary>One step's batch: its sample keys and, per member modality, the batch rows it holds (null: not a member).</summary>
public sealed class BatchPlan(long[] keys, int[]?[] rows)
{
    public long[] Keys { get; } = keys;
    public int[]?[] Rows { get; } = rows;
    public int Size => Keys.Length;

    /// <summary>The keys member <paramref name="modality"/> encodes, in batch order.</summary>
    public long[] KeysOf(int modality) => Rows[modality]!.Select(r => Keys[r]).ToArray();

    /// <summary>Whether <paramref name="modality"/> holds every sample of the batch.</summary>
    public bool Complete(int modality) => Rows[modality]!.Length == Size;

    /// <summary>The per-sample availability mask (B × M, 0/1).</summary>
    public Tensor Available(ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        int m = Rows.Length;
        var data = new float[Size * m];
        for (int j = 0; j < m; j++)
            if (Rows[j] is { } r)
                foreach (int b in r) data[b * m + j] = 1f;
        return ManagedArrays.ToTensor(data, [Size, m]).to(dtype, device ?? CPU);
    }

    /// <summary>A member's B_j × … rows spread into a B × … tensor, zeros where it holds no sample (the tensor itself when it holds all).</summary>
    public Tensor Spread(int modality, Tensor part)
    {
        if (Complete(modality)) return part.alias();
        using var index = tensor(Rows[modality]!.Select(r => (long)r).ToArray(), device: part.device);
        long[] shape = [Size, .. part.shape.Skip(1)];
        using var empty = zeros(shape, dtype: part.dtype, device: part.device);
        return empty.index_copy(0, index, part);
    }

    /// <summary>The rows of a V × B × … tensor that <paramref name="modality"/> holds (V × B_j × …).</summary>
    public Tensor Pick(int modality, Tensor views)
    {
        if (Complete(modality)) return views.alias();
        using var index = tensor(Rows[modality]!.Select(r => (long)r).ToArray(), device: views.device);
        return views.index_select(1, index);
    }
}
