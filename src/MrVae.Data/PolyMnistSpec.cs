using System.Text.Json;
using System.Text.Json.Serialization;

namespace MrVae.Data;

/// <summary>Where one member modality draws a factor's digit: top-left corner and square size in its 28 × 28 image.</summary>
public sealed record FactorPlacement(int Modality, int X, int Y, int Size);

/// <summary>One digit label shared by its member modalities (each draws its own MNIST instance of that label).</summary>
public sealed record SharedFactor(string Name, FactorPlacement[] Placements)
{
    /// <summary>Sorted member modalities. Written to spec.json for readers; ignored on load (placements decide).</summary>
    public int[] Members => Placements.Select(p => p.Modality).Distinct().OrderBy(m => m).ToArray();
}

/// <summary>
/// A PolyMNIST sharing structure. Vanilla and extended (docs/setup.md, "Datasets") are built in; any other comes from
/// a JSON file of the same shape. The ground truth for relation recovery is the list of member sets.
/// </summary>
public sealed record PolyMnistSpec(string Name, int Modalities, SharedFactor[] Factors)
{
    public const int Side = 28;
    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, ReadCommentHandling = JsonCommentHandling.Skip,
        PropertyNameCaseInsensitive = true, AllowTrailingCommas = true,
    };

    public static PolyMnistSpec Vanilla(int modalities = 5) => new("polymnist", modalities,
        [new SharedFactor("digit", Enumerable.Range(0, modalities).Select(j => new FactorPlacement(j, 0, 0, Side)).ToArray())]);

    /// <summary>
    /// Extended PolyMNIST: the main digit (18 × 18, lower centre) in every modality, and on a ring each pair
    /// {k, k+1 mod M} shares a corner digit (10 × 10): top-right in modality k, top-left in modality k+1.
    /// </summary>
    public static PolyMnistSpec Extended(int modalities = 5, int mainSize = 18, int cornerSize = 10)
    {
        if (modalities < 3) throw new ArgumentOutOfRangeException(nameof(modalities), "extended PolyMNIST needs a ring of at least 3 modalities");
        if (mainSize + cornerSize > Side || 2 * cornerSize > Side)
            throw new ArgumentOutOfRangeException(nameof(mainSize), $"a {mainSize}x{mainSize} main digit and {cornerSize}x{cornerSize} corners do not fit a 28x28 image side by side");
        var factors = new List<SharedFactor>
        {
            new("digit", Enumerable.Range(0, modalities).Select(j => new FactorPlacement(j, (Side - mainSize) / 2, Side - mainSize, mainSize)).ToArray()),
        };
        for (int k = 0; k < modalities; k++)
        {
            int next = (k + 1) % modalities;
            factors.Add(new($"corner-{k}-{next}", [new(k, Side - cornerSize, 0, cornerSize), new(next, 0, 0, cornerSize)]));
        }
        return new PolyMnistSpec("polymnist-extended", modalities, factors.ToArray());
    }

    public static PolyMnistSpec Builtin(string name) => TryBuiltin(name, out var spec) ? spec!
        : VectorSpec.TryBuiltin(name, out _)
            ? throw new DataFormatException($"'{name}' is a vector dataset, not PolyMNIST images: this needs polymnist, polymnist-extended or the path of a JSON sharing spec")
            : throw new DataFormatException($"unknown dataset '{name}': use polymnist, polymnist-extended or the path of a JSON sharing spec");

    public static bool TryBuiltin(string name, out PolyMnistSpec? spec)
    {
        spec = name switch
        {
            "polymnist" or "vanilla" => Vanilla(),
            "polymnist-extended" or "extended" => Extended(),
            _ => null,
        };
        return spec is not null;
    }

    /// <summary>A built-in name or the path of a JSON spec file.</summary>
    public static PolyMnistSpec Resolve(string nameOrPath) =>
        nameOrPath.EndsWith(".json", StringComparison.OrdinalIgnoreCase) || File.Exists(nameOrPath) ? Load(nameOrPath) : Builtin(nameOrPath);

    /// <summary>Ground-truth member sets, one per factor (sorted modality ids).</summary>
    [JsonIgnore] public IReadOnlyList<int[]> SharedMemberSets => Factors.Select(f => f.Members).ToArray();

    public static PolyMnistSpec Load(string path)
    {
        if (!File.Exists(path)) throw new DataFormatException($"sharing spec {path} not found: check the path");
        PolyMnistSpec? spec;
        string text;
        try { text = File.ReadAllText(path); }
        catch (IOException e) { throw new DataFormatException($"sharing spec {path} cannot be read ({e.Message}); check the path", e); }
        // A vector spec has no placements: say what it is rather than which field is missing. Malformed JSON falls
        // through to the error below; an unknown "kind" or a non-object is rejected by KindOfJson.
        if (IsVectorSpec(text, path))
            throw new DataFormatException($"{path} is a vector dataset spec (\"kind\": \"vector\"), not PolyMNIST images; use it where vector data is accepted (`mrvae data make` reads both kinds)");
        try { spec = JsonSerializer.Deserialize<PolyMnistSpec>(text, Json); }
        catch (JsonException e) { throw new DataFormatException($"sharing spec {path} is not valid JSON ({e.Message.ReplaceLineEndings(" ")}); see docs/design.md, \"Sharing specs and the dataset cache\", for the format", e); }
        if (spec is null) throw new DataFormatException($"sharing spec {path} is empty");
        spec.Validate(path);
        return spec;
    }

    static bool IsVectorSpec(string text, string path)
    {
        try { return DatasetSpecs.KindOfJson(text, path) == DatasetKind.Vectors; }
        catch (DataFormatException e) when (e.InnerException is JsonException) { return false; }
    }

    public void Save(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, JsonSerializer.Serialize(this, Json));
    }

    public void Validate(string source)
    {
        string Bad(string what) => $"sharing spec {source}: {what}";
        if (string.IsNullOrWhiteSpace(Name)) throw new DataFormatException(Bad("needs a 'name'"));
        if (Modalities < 1) throw new DataFormatException(Bad("'modalities' must be at least 1"));
        if (Factors is null || Factors.Length == 0) throw new DataFormatException(Bad("needs at least one factor in 'factors'"));
        foreach (var f in Factors)
        {
            if (f is null) throw new DataFormatException(Bad("'factors' holds a null entry"));
            if (string.IsNullOrWhiteSpace(f.Name)) throw new DataFormatException(Bad("every factor needs a 'name'"));
            if (f.Placements is null || f.Placements.Length == 0) throw new DataFormatException(Bad($"factor '{f.Name}' has no 'placements'"));
            foreach (var p in f.Placements)
            {
                if (p is null) throw new DataFormatException(Bad($"factor '{f.Name}' has a null placement"));
                if (p.Modality < 0 || p.Modality >= Modalities) throw new DataFormatException(Bad($"factor '{f.Name}' names modality {p.Modality}, outside 0..{Modalities - 1}"));
                if (p.Size < 4 || p.X < 0 || p.Y < 0 || p.X + p.Size > Side || p.Y + p.Size > Side)
                    throw new DataFormatException(Bad($"factor '{f.Name}' placement in modality {p.Modality} (x={p.X}, y={p.Y}, size={p.Size}) does not fit a 28x28 image"));
            }
            if (f.Members.Length != f.Placements.Length) throw new DataFormatException(Bad($"factor '{f.Name}' places a modality twice"));
        }
        var names = Factors.Select(f => f.Name).GroupBy(n => n).FirstOrDefault(g => g.Count() > 1);
        if (names is not null) throw new DataFormatException(Bad($"factor name '{names.Key}' is used twice"));
        for (int j = 0; j < Modalities; j++)
            if (!Factors.Any(f => f.Members.Contains(j))) throw new DataFormatException(Bad($"modality {j} shows no factor"));
    }
}
