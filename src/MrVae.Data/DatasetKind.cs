using System.Text.Json;

namespace MrVae.Data;

/// <summary>What a dataset holds: PolyMNIST images (<see cref="PolyMnistSpec"/>) or linear-Gaussian vectors (<see cref="VectorSpec"/>).</summary>
public enum DatasetKind { Images, Vectors }

/// <summary>A dataset spec of either kind, as <see cref="DatasetSpecs.Resolve"/> found it: exactly one of the two specs is set.</summary>
public sealed record DatasetSpec(DatasetKind Kind, PolyMnistSpec? Images, VectorSpec? Vectors)
{
    public string Name => Kind == DatasetKind.Images ? Images!.Name : Vectors!.Name;
    public int Modalities => Kind == DatasetKind.Images ? Images!.Modalities : Vectors!.Modalities;

    /// <summary>Ground-truth member sets, one per factor (sorted modality ids).</summary>
    public IReadOnlyList<int[]> SharedMemberSets => Kind == DatasetKind.Images ? Images!.SharedMemberSets : Vectors!.SharedMemberSets;
}

/// <summary>Dataset names and spec files of both kinds.</summary>
public static class DatasetSpecs
{
    public const string KindProperty = "kind";
    public const string ImagesKindName = "images";

    /// <summary>Every built-in dataset name, images first.</summary>
    public static readonly string[] BuiltinNames = ["polymnist", "polymnist-extended", .. VectorSpec.BuiltinNames];

    /// <summary>A built-in name (either kind) or the path of a JSON spec file, whose "kind" decides (absent: images).</summary>
    public static DatasetSpec Resolve(string nameOrPath)
    {
        if (LooksLikePath(nameOrPath))
            return KindOfSpecFile(nameOrPath) == DatasetKind.Vectors
                ? new DatasetSpec(DatasetKind.Vectors, null, VectorSpec.Load(nameOrPath))
                : new DatasetSpec(DatasetKind.Images, PolyMnistSpec.Load(nameOrPath), null);
        if (VectorSpec.TryBuiltin(nameOrPath, out var vector)) return new DatasetSpec(DatasetKind.Vectors, null, vector);
        if (PolyMnistSpec.TryBuiltin(nameOrPath, out var images)) return new DatasetSpec(DatasetKind.Images, images, null);
        throw new DataFormatException($"unknown dataset '{nameOrPath}': use {string.Join(", ", BuiltinNames)} or the path of a JSON spec file");
    }

    /// <summary>Same rule as <see cref="PolyMnistSpec.Resolve"/>: a .json name or an existing file is a path.</summary>
    public static bool LooksLikePath(string nameOrPath) =>
        nameOrPath.EndsWith(".json", StringComparison.OrdinalIgnoreCase) || File.Exists(nameOrPath);

    /// <summary>The kind a spec file declares ("kind": "images" or "vector"; absent: images).</summary>
    public static DatasetKind KindOfSpecFile(string path)
    {
        if (!File.Exists(path)) throw new DataFormatException($"dataset spec {path} not found: check the path");
        string text;
        try { text = File.ReadAllText(path); }
        catch (IOException e) { throw new DataFormatException($"dataset spec {path} cannot be read ({e.Message}); check the path", e); }
        return KindOfJson(text, path);
    }

    /// <summary>The "kind" of a spec's JSON text (any key case; absent or null: images).</summary>
    internal static DatasetKind KindOfJson(string text, string source)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(text, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }); }
        catch (JsonException e) { throw new DataFormatException($"dataset spec {source} is not valid JSON ({e.Message.ReplaceLineEndings(" ")}); see docs/design.md, \"Sharing specs and the dataset cache\", for the format", e); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new DataFormatException($"dataset spec {source} is not a JSON object; see docs/design.md, \"Sharing specs and the dataset cache\", for the format");
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (!p.Name.Equals(KindProperty, StringComparison.OrdinalIgnoreCase)) continue;
                if (p.Value.ValueKind == JsonValueKind.Null) return DatasetKind.Images;
                string? kind = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString() : null;
                if (string.Equals(kind, ImagesKindName, StringComparison.OrdinalIgnoreCase)) return DatasetKind.Images;
                if (string.Equals(kind, VectorSpec.KindName, StringComparison.OrdinalIgnoreCase)) return DatasetKind.Vectors;
                throw new DataFormatException($"dataset spec {source}: unknown \"kind\" {p.Value.GetRawText()}; use \"images\" (PolyMNIST, the default) or \"vector\"");
            }
            return DatasetKind.Images;
        }
    }
}

/// <summary>A generated dataset directory of either kind.</summary>
public static class DatasetDirectory
{
    /// <summary>The kind of the dataset in <paramref name="dir"/>, from its spec.json.</summary>
    public static DatasetKind KindOf(string dir) => DatasetSpecs.KindOfSpecFile(SpecPath(dir));

    /// <summary>The spec of the dataset in <paramref name="dir"/>, whichever its kind.</summary>
    public static DatasetSpec LoadSpec(string dir) => KindOf(dir) == DatasetKind.Vectors
        ? new DatasetSpec(DatasetKind.Vectors, null, VectorStore.LoadSpec(dir))
        : new DatasetSpec(DatasetKind.Images, PolyMnistStore.LoadSpec(dir), null);

    /// <summary>DIR/spec.json; a <see cref="DataFormatException"/> naming the fix when there is none.</summary>
    internal static string SpecPath(string dir)
    {
        string path = Path.Combine(dir, PolyMnistStore.SpecFile);
        if (!File.Exists(path)) throw new DataFormatException($"{dir} holds no generated dataset (no {PolyMnistStore.SpecFile}); create it with `mrvae data make --out {dir}`");
        return path;
    }
}
