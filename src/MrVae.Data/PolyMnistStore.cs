using System.Buffers.Binary;

namespace MrVae.Data;

/// <summary>
/// The generated dataset on disk: DIR/spec.json, and per split DIR/SPLIT/modality-J.bin (one file per modality,
/// so a modality node reads only its own shard) and DIR/SPLIT/labels.bin. Each file: 4-byte magic, format
/// version, shape, then the raw bytes (images) or int32 labels, little-endian.
/// </summary>
public static class PolyMnistStore
{
    const string FileKind = "PolyMNIST cache file";
    static readonly byte[] ImageMagic = "PMIM"u8.ToArray(), LabelMagic = "PMLB"u8.ToArray();
    public const string SpecFile = "spec.json";
    public static readonly string[] Splits = ["train", "test"];
    const string Fix = CacheFile.Fix;

    public static void Save(string dir, PolyMnistSpec spec, PolyMnistSplit train, PolyMnistSplit test)
    {
        foreach (var (name, split) in new[] { ("train", train), ("test", test) })
            if (split.Modalities != spec.Modalities || split.Factors != spec.Factors.Length)
                throw new ArgumentException($"the {name} split has {split.Modalities} modalities and {split.Factors} factors, the spec {spec.Modalities} and {spec.Factors.Length}");
        Directory.CreateDirectory(dir);
        File.Delete(Path.Combine(dir, SpecFile));   // an interrupted rewrite leaves no spec.json, so no half-old dataset
        VectorStore.DeleteVectorOnlyFiles(dir);     // a vector dataset made here before: its model and true factors
        SampleIds.DeleteFiles(dir);                 // a dataset with missing modalities made here before: its ids
        foreach (var (name, split) in new[] { ("train", train), ("test", test) })
        {
            string splitDir = Path.Combine(dir, name);
            Directory.CreateDirectory(splitDir);
            // Shards of modalities a previous dataset in this directory had and this one lacks.
            for (int j = split.Modalities; File.Exists(ModalityPath(dir, name, j)); j++) File.Delete(ModalityPath(dir, name, j));
            for (int j = 0; j < split.Modalities; j++)
            {
                CacheFile.WriteAtomically(ModalityPath(dir, name, j), CacheFile.Header(ImageMagic, split.Count, 3, 28), split.Pixels[j]);
            }
            var body = new byte[split.Labels.Length * 4];
            for (int i = 0; i < split.Labels.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(body.AsSpan(i * 4), split.Labels[i]);
            CacheFile.WriteAtomically(LabelsPath(dir, name), CacheFile.Header(LabelMagic, split.Count, split.Factors), body);
        }
        spec.Save(Path.Combine(dir, SpecFile));   // last: a directory with spec.json is complete
    }

    public static string ModalityPath(string dir, string split, int modality) => Path.Combine(dir, split, $"modality-{modality}.bin");

    public static PolyMnistSpec LoadSpec(string dir)
    {
        string path = DatasetDirectory.SpecPath(dir);
        if (DatasetDirectory.KindOf(dir) == DatasetKind.Vectors)
            throw new DataFormatException($"{dir} holds vector data (\"kind\": \"vector\" in {SpecFile}), not PolyMNIST images; use a directory made with an image dataset (polymnist, polymnist-extended)");
        return PolyMnistSpec.Load(path);
    }

    /// <summary>One modality's images of one split, Count × 3 × 28 × 28 bytes (CHW); reads only that modality's file.</summary>
    public static byte[] LoadModality(string dir, string split, int modality, out int count)
    {
        CheckSplit(split);
        string path = ModalityPath(dir, split, modality);
        using var file = CacheFile.Open(path);
        var header = CacheFile.ReadHeader(file, path, ImageMagic, 20, FileKind);
        count = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(8));
        int channels = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(12)), side = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(16));
        if (channels != 3 || side != 28) throw new DataFormatException($"{path}: images are {channels}x{side}x{side}, expected 3x28x28; {Fix}");
        return CacheFile.ReadBody(file, path, 20, count, PolyMnistSplit.ImageBytes);
    }

    /// <summary>Labels of one split, Count × Factors (row-major, factor order of spec.json).</summary>
    public static int[] LoadLabels(string dir, string split, out int count, out int factors)
    {
        CheckSplit(split);
        string path = LabelsPath(dir, split);
        using var file = CacheFile.Open(path);
        var header = CacheFile.ReadHeader(file, path, LabelMagic, 16, FileKind);
        count = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(8));
        factors = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(12));
        if (factors < 1) throw new DataFormatException($"{path}: header names {factors} factors; {Fix}");
        var body = CacheFile.ReadBody(file, path, 16, count, 4L * factors);
        var labels = new int[body.Length / 4];
        for (int i = 0; i < labels.Length; i++) labels[i] = BinaryPrimitives.ReadInt32LittleEndian(body.AsSpan(4 * i));
        return labels;
    }

    public static string LabelsPath(string dir, string split) => Path.Combine(dir, split, "labels.bin");

    static void CheckSplit(string split)
    {
        if (!Splits.Contains(split)) throw new ArgumentException($"unknown split '{split}': use train or test");
    }
}
