using System.Buffers.Binary;

namespace MrVae.Data;

/// <summary>
/// The generated dataset on disk: DIR/spec.json, and per split DIR/SPLIT/modality-J.bin (one file per modality,
/// so a modality node reads only its own shard) and DIR/SPLIT/labels.bin. Each file: 4-byte magic, format
/// version, shape, then the raw bytes (images) or int32 labels, little-endian.
/// </summary>
public static class PolyMnistStore
{
    const int Version = 1;
    static readonly byte[] ImageMagic = "PMIM"u8.ToArray(), LabelMagic = "PMLB"u8.ToArray();
    public const string SpecFile = "spec.json";
    public static readonly string[] Splits = ["train", "test"];
    const string Fix = "re-run `mrvae data make` for this directory";

    public static void Save(string dir, PolyMnistSpec spec, PolyMnistSplit train, PolyMnistSplit test)
    {
        foreach (var (name, split) in new[] { ("train", train), ("test", test) })
            if (split.Modalities != spec.Modalities || split.Factors != spec.Factors.Length)
                throw new ArgumentException($"the {name} split has {split.Modalities} modalities and {split.Factors} factors, the spec {spec.Modalities} and {spec.Factors.Length}");
        Directory.CreateDirectory(dir);
        File.Delete(Path.Combine(dir, SpecFile));   // an interrupted rewrite leaves no spec.json, so no half-old dataset
        VectorStore.DeleteVectorOnlyFiles(dir);     // a vector dataset made here before: its model and true factors
        foreach (var (name, split) in new[] { ("train", train), ("test", test) })
        {
            string splitDir = Path.Combine(dir, name);
            Directory.CreateDirectory(splitDir);
            // Shards of modalities a previous dataset in this directory had and this one lacks.
            for (int j = split.Modalities; File.Exists(ModalityPath(dir, name, j)); j++) File.Delete(ModalityPath(dir, name, j));
            for (int j = 0; j < split.Modalities; j++)
            {
                var header = new byte[20];
                ImageMagic.CopyTo(header, 0);
                BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(4), Version);
                BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8), split.Count);
                BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(12), 3);
                BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(16), 28);
                WriteAtomically(ModalityPath(dir, name, j), header, split.Pixels[j]);
            }
            var lheader = new byte[16];
            LabelMagic.CopyTo(lheader, 0);
            BinaryPrimitives.WriteInt32LittleEndian(lheader.AsSpan(4), Version);
            BinaryPrimitives.WriteInt32LittleEndian(lheader.AsSpan(8), split.Count);
            BinaryPrimitives.WriteInt32LittleEndian(lheader.AsSpan(12), split.Factors);
            var body = new byte[split.Labels.Length * 4];
            for (int i = 0; i < split.Labels.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(body.AsSpan(i * 4), split.Labels[i]);
            WriteAtomically(LabelsPath(dir, name), lheader, body);
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
        using var file = Open(path);
        var header = ReadHeader(file, path, ImageMagic, 20);
        count = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(8));
        int channels = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(12)), side = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(16));
        if (channels != 3 || side != 28) throw new DataFormatException($"{path}: images are {channels}x{side}x{side}, expected 3x28x28; {Fix}");
        return ReadBody(file, path, 20, count, PolyMnistSplit.ImageBytes);
    }

    /// <summary>Labels of one split, Count × Factors (row-major, factor order of spec.json).</summary>
    public static int[] LoadLabels(string dir, string split, out int count, out int factors)
    {
        CheckSplit(split);
        string path = LabelsPath(dir, split);
        using var file = Open(path);
        var header = ReadHeader(file, path, LabelMagic, 16);
        count = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(8));
        factors = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(12));
        if (factors < 1) throw new DataFormatException($"{path}: header names {factors} factors; {Fix}");
        var body = ReadBody(file, path, 16, count, 4L * factors);
        var labels = new int[body.Length / 4];
        for (int i = 0; i < labels.Length; i++) labels[i] = BinaryPrimitives.ReadInt32LittleEndian(body.AsSpan(4 * i));
        return labels;
    }

    public static string LabelsPath(string dir, string split) => Path.Combine(dir, split, "labels.bin");

    static void CheckSplit(string split)
    {
        if (!Splits.Contains(split)) throw new ArgumentException($"unknown split '{split}': use train or test");
    }

    static FileStream Open(string path)
    {
        if (!File.Exists(path)) throw new DataFormatException($"{path} not found; {Fix}");
        return File.OpenRead(path);
    }

    static byte[] ReadHeader(FileStream file, string path, byte[] magic, int headerBytes)
    {
        var header = new byte[headerBytes];
        if (file.Length < headerBytes) throw new DataFormatException($"{path}: truncated header ({file.Length} bytes); {Fix}");
        file.ReadExactly(header);
        if (!header.AsSpan(0, 4).SequenceEqual(magic)) throw new DataFormatException($"{path}: not a PolyMNIST cache file of this kind (wrong magic); {Fix}");
        int version = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(4));
        if (version != Version) throw new DataFormatException($"{path}: cache format version {version}, this build reads version {Version}; {Fix}");
        return header;
    }

    static byte[] ReadBody(FileStream file, string path, int headerBytes, int count, long itemBytes)
    {
        if (count < 0) throw new DataFormatException($"{path}: header names a negative count; {Fix}");
        long expected = headerBytes + count * itemBytes;
        if (file.Length != expected)
            throw new DataFormatException($"{path}: {file.Length} bytes where the header promises {expected} ({(file.Length < expected ? "truncated" : "trailing bytes")}); {Fix}");
        if (expected - headerBytes > Array.MaxLength) throw new DataFormatException($"{path}: {count} items are too many for one array; generate fewer tuples");
        var body = new byte[expected - headerBytes];
        file.ReadExactly(body);
        return body;
    }

    static void WriteAtomically(string path, byte[] header, byte[] body)
    {
        string tmp = path + ".tmp";
        using (var f = File.Create(tmp)) { f.Write(header); f.Write(body); }
        File.Move(tmp, path, overwrite: true);
    }
}
