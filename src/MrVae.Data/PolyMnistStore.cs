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
        {
            string splitDir = Path.Combine(dir, name);
            Directory.CreateDirectory(splitDir);
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
            WriteAtomically(Path.Combine(splitDir, "labels.bin"), lheader, body);
        }
        spec.Save(Path.Combine(dir, SpecFile));   // last: a directory with spec.json is complete
    }

    public static string ModalityPath(string dir, string split, int modality) => Path.Combine(dir, split, $"modality-{modality}.bin");

    public static PolyMnistSpec LoadSpec(string dir)
    {
        string path = Path.Combine(dir, SpecFile);
        if (!File.Exists(path)) throw new DataFormatException($"{dir} holds no generated dataset (no {SpecFile}); create it with `mrvae data make --out {dir}`");
        return PolyMnistSpec.Load(path);
    }

    public static byte[] LoadModality(string dir, string split, int modality, out int count)
    {
        CheckSplit(split);
        string path = ModalityPath(dir, split, modality);
        var data = ReadFile(path);
        Check(data, path, ImageMagic, 20);
        count = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(8));
        int channels = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(12)), side = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(16));
        if (channels != 3 || side != 28) throw new DataFormatException($"{path}: images are {channels}x{side}x{side}, expected 3x28x28; {Fix}");
        long expected = 20L + (long)count * PolyMnistSplit.ImageBytes;
        if (data.Length != expected) throw new DataFormatException($"{path}: {data.Length} bytes where the header promises {expected} (truncated or corrupt); {Fix}");
        return data.AsSpan(20).ToArray();
    }

    public static int[] LoadLabels(string dir, string split, out int count, out int factors)
    {
        CheckSplit(split);
        string path = Path.Combine(dir, split, "labels.bin");
        var data = ReadFile(path);
        Check(data, path, LabelMagic, 16);
        count = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(8));
        factors = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(12));
        long expected = 16L + 4L * count * factors;
        if (data.Length != expected) throw new DataFormatException($"{path}: {data.Length} bytes where the header promises {expected} (truncated or corrupt); {Fix}");
        var labels = new int[count * factors];
        for (int i = 0; i < labels.Length; i++) labels[i] = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(16 + 4 * i));
        return labels;
    }

    static void CheckSplit(string split)
    {
        if (!Splits.Contains(split)) throw new ArgumentException($"unknown split '{split}': use train or test");
    }

    static byte[] ReadFile(string path)
    {
        if (!File.Exists(path)) throw new DataFormatException($"{path} not found; {Fix}");
        return File.ReadAllBytes(path);
    }

    static void Check(byte[] data, string path, byte[] magic, int headerBytes)
    {
        if (data.Length < headerBytes) throw new DataFormatException($"{path}: truncated header; {Fix}");
        if (!data.AsSpan(0, 4).SequenceEqual(magic)) throw new DataFormatException($"{path}: not a PolyMNIST cache file (wrong magic); {Fix}");
        int version = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(4));
        if (version != Version) throw new DataFormatException($"{path}: cache format version {version}, this build reads {Version}; {Fix}");
    }

    static void WriteAtomically(string path, byte[] header, byte[] body)
    {
        string tmp = path + ".tmp";
        using (var f = File.Create(tmp)) { f.Write(header); f.Write(body); }
        File.Move(tmp, path, overwrite: true);
    }
}
