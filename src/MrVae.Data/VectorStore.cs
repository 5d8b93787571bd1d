using System.Buffers.Binary;
using System.Text.Json;

namespace MrVae.Data;

/// <summary>
/// A generated vector dataset on disk: DIR/spec.json (the <see cref="VectorSpec"/>, "kind": "vector"; written
/// last, so a directory with spec.json is complete), DIR/model.json (seed and the maps W_j, enough to recompute
/// <see cref="VectorModel.OptimalR2"/>), and per split DIR/SPLIT/modality-J.bin (one file per modality) and
/// DIR/SPLIT/factors.bin (the true latent values). Each .bin file: 4-byte magic ("PMVC" values, "PMVF" factors),
/// int32 format version (1), int32 count, int32 values per tuple, then count × that many float32, row-major; all
/// little-endian.
/// </summary>
public static class VectorStore
{
    const int Version = 1, HeaderBytes = 16;   // Version: of model.json
    static readonly byte[] ValueMagic = "PMVC"u8.ToArray(), FactorMagic = "PMVF"u8.ToArray();
    public const string ModelFile = "model.json", FactorsFile = "factors.bin";
    /// <summary>The "format" field of model.json.</summary>
    public const string ModelFormat = "mrvae-vector-model";
    const string Fix = CacheFile.Fix;

    /// <summary>Generates both splits (train stream 0, test stream 1, the same maps) and saves them; returns the model.</summary>
    public static VectorModel Make(string dir, VectorSpec spec, int train, int test, int seed)
    {
        if (train < 1 || test < 1) throw new UserInputException("--train and --test must be at least 1");
        var model = VectorModel.Create(spec, seed);
        Save(dir, model, VectorGenerator.Generate(model, train, seed), VectorGenerator.Generate(model, test, seed, streamOffset: 1));
        return model;
    }

    public static void Save(string dir, VectorModel model, VectorSplit train, VectorSplit test)
    {
        var spec = model.Spec;
        foreach (var (name, split) in new[] { ("train", train), ("test", test) })
            if (split.Modalities != spec.Modalities || split.Count < 1 || split.Values.Any(v => v.Length != split.Count * spec.ObservedDim)
                || split.Factors.Length != split.Count * spec.TrueLatentWidth)
                throw new ArgumentException($"the {name} split ({split.Modalities} modalities, {split.Count} tuples) does not fit the spec ({spec.Modalities} modalities of {spec.ObservedDim} values, {spec.TrueLatentWidth} true latent values per tuple)");
        Directory.CreateDirectory(dir);
        File.Delete(Path.Combine(dir, PolyMnistStore.SpecFile));   // an interrupted rewrite leaves no spec.json, so no half-old dataset
        SampleIds.DeleteFiles(dir);                                // a dataset with missing modalities made here before: its ids
        foreach (var (name, split) in new[] { ("train", train), ("test", test) })
        {
            string splitDir = Path.Combine(dir, name);
            Directory.CreateDirectory(splitDir);
            // Shards of modalities a previous dataset in this directory had and this one lacks, and an image dataset's labels.
            for (int j = split.Modalities; File.Exists(ModalityPath(dir, name, j)); j++) File.Delete(ModalityPath(dir, name, j));
            File.Delete(PolyMnistStore.LabelsPath(dir, name));
            for (int j = 0; j < split.Modalities; j++)
                WriteFloats(ModalityPath(dir, name, j), ValueMagic, split.Count, spec.ObservedDim, split.Values[j]);
            WriteFloats(FactorsPath(dir, name), FactorMagic, split.Count, spec.TrueLatentWidth, split.Factors);
        }
        WriteTextAtomically(ModelPath(dir), JsonSerializer.Serialize(ModelDocument.Of(model), VectorSpec.Json));
        WriteTextAtomically(Path.Combine(dir, PolyMnistStore.SpecFile), JsonSerializer.Serialize(spec, VectorSpec.Json));   // last: a directory with spec.json is complete
    }

    public static string ModalityPath(string dir, string split, int modality) => PolyMnistStore.ModalityPath(dir, split, modality);
    public static string FactorsPath(string dir, string split) => Path.Combine(dir, split, FactorsFile);
    public static string ModelPath(string dir) => Path.Combine(dir, ModelFile);

    public static VectorSpec LoadSpec(string dir)
    {
        string path = DatasetDirectory.SpecPath(dir);
        if (DatasetDirectory.KindOf(dir) != DatasetKind.Vectors)
            throw new DataFormatException($"{dir} holds PolyMNIST images (no \"kind\": \"vector\" in {PolyMnistStore.SpecFile}), not vector data; use a directory made with a vector dataset ({string.Join(", ", VectorSpec.BuiltinNames)})");
        return VectorSpec.Load(path);
    }

    /// <summary>The generating model from model.json, checked against spec.json.</summary>
    public static VectorModel LoadModel(string dir)
    {
        var spec = LoadSpec(dir);
        string path = ModelPath(dir);
        if (!File.Exists(path)) throw new DataFormatException($"{path} not found; {Fix}");
        ModelDocument? doc;
        try { doc = JsonSerializer.Deserialize<ModelDocument>(File.ReadAllText(path), VectorSpec.Json); }
        catch (JsonException e) { throw new DataFormatException($"{path} is not valid JSON ({e.Message.ReplaceLineEndings(" ")}); {Fix}", e); }
        catch (IOException e) { throw new DataFormatException($"{path} cannot be read ({e.Message}); check the path", e); }
        if (doc is null) throw new DataFormatException($"{path} is empty; {Fix}");
        if (doc.Format != ModelFormat) throw new DataFormatException($"{path}: not a vector model file (format '{doc.Format}', expected '{ModelFormat}'); {Fix}");
        if (doc.Version != Version) throw new DataFormatException($"{path}: model format version {doc.Version}, this build reads version {Version}; {Fix}");
        var maps = doc.ToMaps(out string? shapeProblem);
        shapeProblem ??= VectorModel.ShapeProblem(spec, maps);
        if (shapeProblem is not null) throw new DataFormatException($"{path} does not match {PolyMnistStore.SpecFile}: {shapeProblem}; {Fix}");
        return new VectorModel(spec, doc.Seed, maps!);
    }

    /// <summary>One modality's values of one split, Count × Dim float32 (row-major); reads only that modality's file.</summary>
    public static float[] LoadModality(string dir, string split, int modality, out int count, out int dim)
        => ReadFloats(ModalityPath(dir, CheckSplit(split), modality), ValueMagic, out count, out dim);

    /// <summary>The true latent values of one split, Count × Width (see <see cref="VectorSplit"/> for the layout).</summary>
    public static float[] LoadFactors(string dir, string split, out int count, out int width)
        => ReadFloats(FactorsPath(dir, CheckSplit(split)), FactorMagic, out count, out width);

    /// <summary>The count and width a shard's header names, without reading its body.</summary>
    internal static (int Count, int Dim) ReadShape(string path, bool factors)
    {
        using var file = CacheFile.Open(path);
        return ReadShape(file, path, factors ? FactorMagic : ValueMagic);
    }

    /// <summary>Files only a vector dataset writes; <see cref="PolyMnistStore.Save"/> removes them from a directory it takes over.</summary>
    internal static void DeleteVectorOnlyFiles(string dir)
    {
        File.Delete(ModelPath(dir));
        foreach (var split in PolyMnistStore.Splits)
            if (Directory.Exists(Path.Combine(dir, split))) File.Delete(FactorsPath(dir, split));
    }

    static string CheckSplit(string split) => PolyMnistStore.Splits.Contains(split) ? split : throw new ArgumentException($"unknown split '{split}': use train or test");

    /// <summary>The shard's count and width, from its checked header.</summary>
    static (int Count, int Dim) ReadShape(FileStream file, string path, byte[] magic)
    {
        var header = CacheFile.ReadHeader(file, path, magic, HeaderBytes, "vector dataset file");
        int count = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(8)), dim = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(12));
        if (count < 0) throw new DataFormatException($"{path}: header names a negative count; {Fix}");
        if (dim < 1) throw new DataFormatException($"{path}: header names {dim} values per tuple; {Fix}");
        return (count, dim);
    }

    static float[] ReadFloats(string path, byte[] magic, out int count, out int dim)
    {
        using var file = CacheFile.Open(path);
        (count, dim) = ReadShape(file, path, magic);
        var body = CacheFile.ReadBody(file, path, HeaderBytes, count, 4L * dim);
        var result = new float[body.Length / 4];
        for (int i = 0; i < result.Length; i++) result[i] = BinaryPrimitives.ReadSingleLittleEndian(body.AsSpan(4 * i));
        return result;
    }

    static void WriteFloats(string path, byte[] magic, int count, int dim, float[] values)
    {
        var body = new byte[4L * values.Length];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(body.AsSpan(4 * i), values[i]);
        CacheFile.WriteAtomically(path, CacheFile.Header(magic, count, dim), body);
    }

    static void WriteTextAtomically(string path, string text)
    {
        string tmp = path + ".tmp";
        File.WriteAllText(tmp, text);
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>model.json: format, version, seed, noise, and per modality its map W_j as rows of values.</summary>
    sealed record ModelDocument(string Format, int Version, int Seed, double Noise, MapDocument[] Maps)
    {
        public static ModelDocument Of(VectorModel model) => new(ModelFormat, VectorStore.Version, model.Seed, model.Spec.Noise,
            Enumerable.Range(0, model.Spec.Modalities).Select(j =>
            {
                var w = model.Maps[j];
                int rows = w.GetLength(0), columns = w.GetLength(1);
                var values = new double[rows][];
                for (int r = 0; r < rows; r++) { values[r] = new double[columns]; for (int c = 0; c < columns; c++) values[r][c] = w[r, c]; }
                return new MapDocument(j, rows, columns, model.LatentNames(j), values);
            }).ToArray());

        public double[][,]? ToMaps(out string? problem)
        {
            problem = null;
            if (Maps is null) { problem = "no 'maps'"; return null; }
            var result = new double[Maps.Length][,];
            for (int j = 0; j < Maps.Length; j++)
            {
                var map = Maps[j];
                if (map is null || map.Values is null) { problem = $"map {j} has no 'values'"; return null; }
                if (map.Modality != j) { problem = $"map {j} is for modality {map.Modality}"; return null; }
                int rows = map.Values.Length, columns = rows == 0 ? 0 : map.Values[0]?.Length ?? 0;
                if (rows != map.Rows || columns != map.Columns || map.Values.Any(r => r is null || r.Length != columns))
                { problem = $"map {j}'s values are not the {map.Rows}x{map.Columns} its header names"; return null; }
                result[j] = new double[rows, columns];
                for (int r = 0; r < rows; r++)
                    for (int c = 0; c < columns; c++) result[j][r, c] = map.Values[r][c];
            }
            return result;
        }
    }

    /// <summary>W_j: Rows (observed_dim) × Columns (its latent dims, named in Latent), row-major.</summary>
    sealed record MapDocument(int Modality, int Rows, int Columns, string[] Latent, double[][] Values);
}
