using System.Text.Json;
using System.Text.Json.Serialization;

namespace MrVae.Data;

/// <summary>A Gaussian latent factor of <paramref name="Dim"/> dimensions observed by every modality in <paramref name="Members"/>.</summary>
public sealed record VectorFactor(string Name, int[] Members, int Dim);

/// <summary>
/// A vector dataset with a known linear-Gaussian structure (spec.json with "kind": "vector"). Modality j sees
/// s_j = (the factors whose members contain j, in spec order; then <paramref name="PrivateDim"/> private values),
/// all N(0, 1) and independent, through a random linear map: x_j = W_j s_j + <paramref name="Noise"/>·ε,
/// W_j ∈ R^{ObservedDim × dim(s_j)}. The ground truth for relation recovery is the list of member sets, and
/// <see cref="VectorModel.OptimalR2"/> gives the exact best cross-prediction.
/// </summary>
public sealed record VectorSpec(string Name, int Modalities, int ObservedDim, int PrivateDim, double Noise, VectorFactor[] Factors)
{
    public const string KindName = "vector";
    internal static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, ReadCommentHandling = JsonCommentHandling.Skip,
        PropertyNameCaseInsensitive = true, AllowTrailingCommas = true,
    };

    /// <summary>Always "vector"; written first in spec.json so that a reader can tell the kind of a dataset.</summary>
    [JsonPropertyOrder(-1)] public string Kind => KindName;

    /// <summary>The built-in names, each a 5-modality, 20-dimensional, noise-0.1 structure with 2-dimensional factors.</summary>
    public static readonly string[] BuiltinNames = ["synthetic-ring", "synthetic-star", "synthetic-chain"];

    /// <summary>Factor "all" {0..4} plus the ring pairs {k, k+1 mod 5} (p01, p12, p23, p34, p40).</summary>
    public static VectorSpec Ring() => Preset("synthetic-ring", true, Enumerable.Range(0, 5).Select(k => (k, (k + 1) % 5)));

    /// <summary>Factor "all" {0..4} plus the hub pairs {0, k}, k = 1..4 (p01, p02, p03, p04).</summary>
    public static VectorSpec Star() => Preset("synthetic-star", true, Enumerable.Range(1, 4).Select(k => (0, k)));

    /// <summary>No factor shared by all; the chain pairs {0,1}, {1,2}, {2,3}, {3,4}.</summary>
    public static VectorSpec Chain() => Preset("synthetic-chain", false, Enumerable.Range(0, 4).Select(k => (k, k + 1)));

    static VectorSpec Preset(string name, bool all, IEnumerable<(int A, int B)> pairs)
    {
        const int modalities = 5, dim = 2;
        var factors = new List<VectorFactor>();
        if (all) factors.Add(new VectorFactor("all", Enumerable.Range(0, modalities).ToArray(), dim));
        foreach (var (a, b) in pairs)
        {
            var members = new[] { a, b }.Order().ToArray();
            // The name keeps the pair's ring order (p40 for {0,4} on the ring); the members are sorted.
            factors.Add(new VectorFactor($"p{a}{b}", members, dim));
        }
        return new VectorSpec(name, modalities, ObservedDim: 20, PrivateDim: 2, Noise: 0.1, factors.ToArray());
    }

    public static bool TryBuiltin(string name, out VectorSpec? spec)
    {
        spec = name switch
        {
            "synthetic-ring" or "ring" => Ring(),
            "synthetic-star" or "star" => Star(),
            "synthetic-chain" or "chain" => Chain(),
            _ => null,
        };
        return spec is not null;
    }

    public static VectorSpec Builtin(string name) => TryBuiltin(name, out var spec) ? spec!
        : throw new DataFormatException($"unknown vector dataset '{name}': use {string.Join(", ", BuiltinNames)} or the path of a JSON spec with \"kind\": \"vector\"");

    /// <summary>A built-in name or the path of a JSON spec file of kind "vector".</summary>
    public static VectorSpec Resolve(string nameOrPath) => DatasetSpecs.LooksLikePath(nameOrPath) ? Load(nameOrPath) : Builtin(nameOrPath);

    /// <summary>A built-in vector name or a vector spec file: true and the spec; anything else (an image dataset, an unknown name): false.</summary>
    public static bool TryResolve(string nameOrPath, out VectorSpec? spec)
    {
        spec = null;
        if (!DatasetSpecs.LooksLikePath(nameOrPath)) return TryBuiltin(nameOrPath, out spec);
        if (DatasetSpecs.KindOfSpecFile(nameOrPath) != DatasetKind.Vectors) return false;
        spec = Load(nameOrPath);
        return true;
    }

    /// <summary>Ground-truth member sets, one per factor (sorted modality ids).</summary>
    [JsonIgnore] public IReadOnlyList<int[]> SharedMemberSets => Factors.Select(f => f.Members.Order().ToArray()).ToArray();

    /// <summary>Factor indices (spec order) that modality <paramref name="modality"/> observes.</summary>
    public int[] FactorsOf(int modality) => Enumerable.Range(0, Factors.Length).Where(f => Factors[f].Members.Contains(modality)).ToArray();

    /// <summary>dim(s_j): the dims of the factors modality j observes plus the private dims.</summary>
    public int LatentDim(int modality) => FactorsOf(modality).Sum(f => Factors[f].Dim) + PrivateDim;

    /// <summary>Values per tuple in factors.bin: every factor's dims in spec order, then each modality's private dims.</summary>
    [JsonIgnore] public int TrueLatentWidth => Factors.Sum(f => f.Dim) + Modalities * PrivateDim;

    public static VectorSpec Load(string path)
    {
        if (!File.Exists(path)) throw new DataFormatException($"vector spec {path} not found: check the path");
        string text;
        try { text = File.ReadAllText(path); }
        catch (IOException e) { throw new DataFormatException($"vector spec {path} cannot be read ({e.Message}); check the path", e); }
        var kind = DatasetSpecs.KindOfJson(text, path);
        if (kind != DatasetKind.Vectors)
            throw new DataFormatException($"spec {path} describes an image dataset (no \"kind\": \"vector\"); load it as a PolyMNIST spec, or add \"kind\": \"vector\" with the vector fields");
        VectorSpec? spec;
        try { spec = JsonSerializer.Deserialize<VectorSpec>(text, Json); }
        catch (JsonException e) { throw new DataFormatException($"vector spec {path} is not valid JSON ({e.Message.ReplaceLineEndings(" ")}); see docs/design.md, \"Sharing specs and the dataset cache\", for the format", e); }
        if (spec is null) throw new DataFormatException($"vector spec {path} is empty");
        spec.Validate(path);
        return spec;
    }

    public void Save(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, JsonSerializer.Serialize(this, Json));
    }

    /// <summary>Throws a <see cref="DataFormatException"/> naming <paramref name="source"/> and the first problem.</summary>
    public void Validate(string source)
    {
        string Bad(string what) => $"vector spec {source}: {what}";
        if (string.IsNullOrWhiteSpace(Name)) throw new DataFormatException(Bad("needs a 'name'"));
        if (Modalities < 1) throw new DataFormatException(Bad("'modalities' must be at least 1"));
        if (ObservedDim < 1) throw new DataFormatException(Bad("'observed_dim' must be at least 1"));
        if (PrivateDim < 0) throw new DataFormatException(Bad("'private_dim' must be 0 or more"));
        if (!(Noise > 0) || !double.IsFinite(Noise)) throw new DataFormatException(Bad($"'noise' must be a positive number (the standard deviation of the observation noise), not {Noise}"));
        if (Factors is null) throw new DataFormatException(Bad("needs a 'factors' list (it may be empty when private_dim is at least 1)"));
        foreach (var f in Factors)
        {
            if (f is null) throw new DataFormatException(Bad("'factors' holds a null entry"));
            if (string.IsNullOrWhiteSpace(f.Name)) throw new DataFormatException(Bad("every factor needs a 'name'"));
            if (f.Members is null) throw new DataFormatException(Bad($"factor '{f.Name}' has no 'members'"));
            foreach (int m in f.Members)
                if (m < 0 || m >= Modalities) throw new DataFormatException(Bad($"factor '{f.Name}' names modality {m}, outside 0..{Modalities - 1}"));
            if (f.Members.Distinct().Count() != f.Members.Length) throw new DataFormatException(Bad($"factor '{f.Name}' lists a member twice"));
            if (f.Members.Length < 2)
                throw new DataFormatException(Bad($"factor '{f.Name}' has {f.Members.Length} member(s); a shared factor needs at least two (use 'private_dim' for what one modality sees alone)"));
            if (f.Dim < 1) throw new DataFormatException(Bad($"factor '{f.Name}' has 'dim' {f.Dim}; it must be at least 1"));
        }
        var names = Factors.Select(f => f.Name).GroupBy(n => n).FirstOrDefault(g => g.Count() > 1);
        if (names is not null) throw new DataFormatException(Bad($"factor name '{names.Key}' is used twice"));
        var sets = Factors.GroupBy(f => string.Join(",", f.Members.Order())).FirstOrDefault(g => g.Count() > 1);
        if (sets is not null)
            throw new DataFormatException(Bad($"factors {string.Join(" and ", sets.Select(f => $"'{f.Name}'"))} have the same members {{{sets.Key}}}; merge them into one factor with the sum of their dims"));
        for (int j = 0; j < Modalities; j++)
        {
            int latent = LatentDim(j);
            if (latent == 0) throw new DataFormatException(Bad($"modality {j} observes no factor and 'private_dim' is 0: it would be pure noise; add it to a factor or raise private_dim"));
            if (latent > ObservedDim)
                throw new DataFormatException(Bad($"modality {j} has {latent} latent dims (its factors plus private_dim) but 'observed_dim' is {ObservedDim}; raise observed_dim to at least {latent} so that its map is injective"));
        }
    }
}
