using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace MrVae.Data;

/// <summary>
/// Sample ids of a dataset with missing modalities (`data make --missing P`): every training tuple gets an opaque
/// 64-bit id, and each modality's training shard holds only the tuples it observes, in tuple order, with their ids
/// in DIR/train/modality-J.ids. DIR/train/tuples.ids lists every tuple's id (the data maker's index: evaluation
/// reads it to find a row's labels; nodes do not need it). Without these files (a complete dataset) a sample's id
/// is its position. The test split is always complete. Files: magic "PMID", int32 version 1, int32 count, then
/// count × int64, little-endian.
/// </summary>
public static class SampleIds
{
    static readonly byte[] Magic = "PMID"u8.ToArray();
    const string FileKind = "sample id file";
    public const string TuplesFile = "tuples.ids";
    /// <summary>DIR/missing.json: the probability and seed the training tuples' modalities were dropped with, and what each modality kept.</summary>
    public const string MissingFile = "missing.json";
    /// <summary>The environment variables that hold the shared secret for keyed ids: the secret itself, or the path of a file holding it.</summary>
    public const string SecretVariable = "MRVAE_ID_SECRET", SecretFileVariable = "MRVAE_ID_SECRET_FILE";

    public static string ModalityPath(string dir, string split, int modality) => Path.Combine(dir, split, $"modality-{modality}.ids");
    public static string TuplesPath(string dir) => Path.Combine(dir, "train", TuplesFile);

    /// <summary>The ids of modality <paramref name="modality"/>'s rows in <paramref name="split"/>; null when the shard is complete (ids are positions).</summary>
    public static long[]? LoadModality(string dir, string split, int modality)
    {
        string path = ModalityPath(dir, split, modality);
        return File.Exists(path) ? Read(path) : null;
    }

    /// <summary>Every training tuple's id in tuple order; null for a complete dataset (ids are positions).</summary>
    public static long[]? LoadTuples(string dir) => File.Exists(TuplesPath(dir)) ? Read(TuplesPath(dir)) : null;

    public static long[] Read(string path)
    {
        using var file = CacheFile.Open(path);
        var header = CacheFile.ReadHeader(file, path, Magic, 12, FileKind);
        int count = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(8));
        var body = CacheFile.ReadBody(file, path, 12, count, 8);
        var ids = new long[count];
        for (int i = 0; i < count; i++) ids[i] = BinaryPrimitives.ReadInt64LittleEndian(body.AsSpan(8 * i));
        return ids;
    }

    public static void Write(string path, long[] ids)
    {
        var body = new byte[8L * ids.Length];
        for (int i = 0; i < ids.Length; i++) BinaryPrimitives.WriteInt64LittleEndian(body.AsSpan(8 * i), ids[i]);
        CacheFile.WriteAtomically(path, CacheFile.Header(Magic, ids.Length), body);
    }

    /// <summary>
    /// Opaque, distinct ids for <paramref name="count"/> tuples: a bijective mix of (a hash of the dataset's spec and
    /// seed) + t, so another dataset or seed gives other ids and a shard of it is told apart at attach.
    /// </summary>
    public static long[] Generate(string specJson, int seed, int count)
    {
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes($"{specJson}\n{seed}\nsample-ids"));
        ulong basis = BinaryPrimitives.ReadUInt64LittleEndian(hash);
        var ids = new long[count];
        for (int t = 0; t < count; t++) ids[t] = (long)Mix(basis + (ulong)t);
        return ids;
    }

    /// <summary>SplitMix64's finaliser: a bijection on 64-bit values, so distinct inputs give distinct ids.</summary>
    static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>
    /// Which modalities each training tuple keeps: each is dropped with <paramref name="probability"/> (seeded), and a
    /// tuple that would lose all of them keeps one drawn uniformly. Returns keep[t][j].
    /// </summary>
    public static bool[][] DrawAvailability(int tuples, int modalities, double probability, int seed)
    {
        if (!(probability >= 0 && probability < 1)) throw new UserInputException($"--missing must be at least 0 and below 1, not {probability}");
        var rng = new Random(HashCode.Combine(seed, 0x6d697373));   // "miss": its own stream, apart from the generator's
        var keep = new bool[tuples][];
        for (int t = 0; t < tuples; t++)
        {
            keep[t] = new bool[modalities];
            for (int j = 0; j < modalities; j++) keep[t][j] = rng.NextDouble() >= probability;
            if (!keep[t].Any(k => k)) keep[t][rng.Next(modalities)] = true;
        }
        return keep;
    }

    /// <summary>
    /// Turns the complete training split in <paramref name="dir"/> into one with missing modalities: each modality's
    /// shard keeps the rows of the tuples that observe it (<see cref="DrawAvailability"/>) and gets their ids. Labels
    /// and true factors stay complete (indexed by tuple, see <see cref="TuplesFile"/>). spec.json is removed first and
    /// written back last, so an interrupted run leaves no half-made dataset. Returns each modality's training count.
    /// </summary>
    public static int[] ApplyMissing(string dir, double probability, int seed)
    {
        if (probability == 0) return [];
        var specPath = DatasetDirectory.SpecPath(dir);
        var specText = File.ReadAllText(specPath);
        var spec = DatasetDirectory.LoadSpec(dir);
        bool vectors = spec.Kind == DatasetKind.Vectors;
        File.Delete(specPath);
        int m = spec.Modalities, tuples = -1;
        var rows = new List<(byte[] Header, byte[] Body, int ItemBytes)>();
        for (int j = 0; j < m; j++)
        {
            string path = PolyMnistStore.ModalityPath(dir, "train", j);
            var bytes = File.ReadAllBytes(path);
            int headerBytes = vectors ? 16 : 20;
            int count = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(8));
            if (tuples >= 0 && count != tuples) throw new DataFormatException($"{path}: {count} tuples where modality 0 has {tuples}; {CacheFile.Fix}");
            tuples = count;
            rows.Add((bytes[..headerBytes], bytes[headerBytes..], (bytes.Length - headerBytes) / Math.Max(count, 1)));
        }
        var ids = Generate(specText, seed, tuples);
        var keep = DrawAvailability(tuples, m, probability, seed);
        var counts = new int[m];
        for (int j = 0; j < m; j++)
        {
            var (header, body, item) = rows[j];
            var kept = Enumerable.Range(0, tuples).Where(t => keep[t][j]).ToArray();
            var newBody = new byte[(long)kept.Length * item];
            for (int r = 0; r < kept.Length; r++) Buffer.BlockCopy(body, kept[r] * item, newBody, r * item, item);
            BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8), kept.Length);
            CacheFile.WriteAtomically(PolyMnistStore.ModalityPath(dir, "train", j), header, newBody);
            Write(ModalityPath(dir, "train", j), kept.Select(t => ids[t]).ToArray());
            counts[j] = kept.Length;
        }
        Write(TuplesPath(dir), ids);
        File.WriteAllText(Path.Combine(dir, MissingFile), JsonSerializer.Serialize(new { probability, seed, tuples, kept = counts }));
        File.WriteAllText(specPath, specText);   // last: a directory with spec.json is complete
        return counts;
    }

    /// <summary>Removes the files of a dataset with missing modalities (before a dataset is made again in the same directory).</summary>
    public static void DeleteFiles(string dir)
    {
        File.Delete(Path.Combine(dir, MissingFile));
        foreach (var split in PolyMnistStore.Splits)
        {
            string d = Path.Combine(dir, split);
            if (!Directory.Exists(d)) continue;
            foreach (var f in Directory.EnumerateFiles(d, "*.ids")) File.Delete(f);
        }
    }

    /// <summary>The "missing" field of a JSON spec file (absent: 0).</summary>
    public static double MissingOfSpecFile(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(path), new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        foreach (var p in doc.RootElement.EnumerateObject())
            if (p.Name.Equals("missing", StringComparison.OrdinalIgnoreCase))
                return p.Value.ValueKind == JsonValueKind.Number ? p.Value.GetDouble()
                    : throw new DataFormatException($"dataset spec {path}: \"missing\" must be a number in [0, 1), the probability that a training tuple lacks a modality");
        return 0;
    }

    /// <summary>
    /// The shared secret for keyed ids from <see cref="SecretVariable"/> or the file named by <see cref="SecretFileVariable"/>
    /// (never a command-line argument: those are visible to every user of the machine); null when neither is set.
    /// </summary>
    public static byte[]? SecretFromEnvironment()
    {
        string? file = Environment.GetEnvironmentVariable(SecretFileVariable);
        if (!string.IsNullOrEmpty(file))
        {
            // All surrounding whitespace goes: the key must not depend on how each party wrote the file.
            var text = SecretFile.Read(file, SecretFileVariable, "the run's shared id secret").Trim();
            return Encoding.UTF8.GetBytes(text);
        }
        string? value = Environment.GetEnvironmentVariable(SecretVariable);
        return string.IsNullOrEmpty(value) ? null : Encoding.UTF8.GetBytes(value);
    }

    /// <summary>
    /// The key a node gives the coordinator for sample <paramref name="id"/>: the id itself, or with a shared secret
    /// the first 8 bytes of HMAC-SHA256(secret, id), so the coordinator can align nodes without learning their ids.
    /// </summary>
    public static long Key(long id, byte[]? secret)
    {
        if (secret is null) return id;
        Span<byte> data = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(data, id);
        Span<byte> mac = stackalloc byte[32];
        HMACSHA256.HashData(secret, data, mac);
        return BinaryPrimitives.ReadInt64LittleEndian(mac);
    }
}
