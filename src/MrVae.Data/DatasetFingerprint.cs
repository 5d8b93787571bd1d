using System.Security.Cryptography;
using System.Text.Json.Serialization;

namespace MrVae.Data;

/// <summary>
/// What identifies a generated dataset directory, cheaply: the sharing structure (SHA-256 of spec.json), the split
/// sizes, and a content hash over both splits' labels and the header and first 64 KiB of every modality shard
/// (labels and crops both depend on the generation seed, so another seed or another MNIST gives another hash
/// without reading hundreds of MB). A run records it in config.json; evaluation compares it with its --data.
/// </summary>
public sealed record DatasetFingerprint(
    [property: JsonPropertyName("spec")] string Spec,
    [property: JsonPropertyName("spec_sha256")] string SpecSha256,
    [property: JsonPropertyName("train")] int? Train,
    [property: JsonPropertyName("test")] int? Test,
    [property: JsonPropertyName("content_sha256")] string? ContentSha256)
{
    const int ShardPrefixBytes = 64 * 1024;

    /// <summary>
    /// The fingerprint of <paramref name="dir"/>, either kind. Needs only spec.json: where the shards are elsewhere (a cluster's
    /// client sees only the spec) the counts and the content hash are null.
    /// </summary>
    public static DatasetFingerprint Of(string dir)
    {
        // Vector data (kind "vector"): the same hash over model.json (whole), factors.bin and the shards (prefixes);
        // the counts come from the modality-0 shard headers.
        bool vectors = DatasetDirectory.KindOf(dir) == DatasetKind.Vectors;
        var spec = DatasetDirectory.LoadSpec(dir);
        string specHash = Hex(SHA256.HashData(File.ReadAllBytes(Path.Combine(dir, PolyMnistStore.SpecFile))));
        var files = new List<string>();
        var whole = new HashSet<string>();
        if (vectors) { files.Add(VectorStore.ModelPath(dir)); whole.Add(files[^1]); }
        foreach (var split in PolyMnistStore.Splits)
        {
            if (vectors) files.Add(VectorStore.FactorsPath(dir, split));
            else { files.Add(PolyMnistStore.LabelsPath(dir, split)); whole.Add(files[^1]); }
            for (int j = 0; j < spec.Modalities; j++) files.Add(PolyMnistStore.ModalityPath(dir, split, j));
        }
        // Missing modalities per sample: which tuples each modality keeps (absent for complete data, whose hash is unchanged).
        if (File.Exists(SampleIds.TuplesPath(dir)))
            for (int j = 0; j < spec.Modalities; j++) { files.Add(SampleIds.ModalityPath(dir, "train", j)); whole.Add(files[^1]); }
        if (!files.All(File.Exists)) return new DatasetFingerprint(spec.Name, specHash, null, null, null);

        int train, test;
        if (vectors)
        {
            // The tuples: factors.bin stays complete when modalities are missing per sample.
            train = VectorStore.ReadShape(VectorStore.FactorsPath(dir, "train"), factors: true).Count;
            test = VectorStore.ReadShape(VectorStore.FactorsPath(dir, "test"), factors: true).Count;
        }
        else
        {
            PolyMnistStore.LoadLabels(dir, "train", out train, out _);
            PolyMnistStore.LoadLabels(dir, "test", out test, out _);
        }
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[ShardPrefixBytes];
        foreach (var path in files)
        {
            using var file = File.OpenRead(path);
            // Labels and the model whole (small); shards by prefix. The length goes in too: a truncated file is other data.
            long take = whole.Contains(path) ? file.Length : Math.Min(file.Length, ShardPrefixBytes);
            sha.AppendData(BitConverter.GetBytes(file.Length));
            for (long done = 0; done < take;)
            {
                int read = file.Read(buffer, 0, (int)Math.Min(buffer.Length, take - done));
                if (read == 0) break;
                sha.AppendData(buffer, 0, read);
                done += read;
            }
        }
        return new DatasetFingerprint(spec.Name, specHash, train, test, Hex(sha.GetHashAndReset()));
    }

    /// <summary>
    /// How <paramref name="evaluated"/> (the data an evaluation reads) relates to this fingerprint (the data a run
    /// was trained on): null when they are the same data as far as both fingerprints tell, else a sentence.
    /// <see cref="IsDifferentStructure"/> says whether the sharing structure itself differs.
    /// </summary>
    public string? Difference(DatasetFingerprint evaluated)
    {
        if (IsDifferentStructure(evaluated))
            return $"the run was trained on '{Spec}' (spec.json {SpecSha256[..12]}) but the evaluation data is '{evaluated.Spec}' (spec.json {evaluated.SpecSha256[..12]})";
        if (ContentSha256 is null || evaluated.ContentSha256 is null) return null;
        if (ContentSha256 == evaluated.ContentSha256) return null;
        return $"the run was trained on other '{Spec}' data ({Train} train / {Test} test tuples, content {ContentSha256[..12]}) than the evaluation reads ({evaluated.Train} / {evaluated.Test}, content {evaluated.ContentSha256[..12]}): another seed, size or MNIST";
    }

    public bool IsDifferentStructure(DatasetFingerprint evaluated) => SpecSha256 != evaluated.SpecSha256;

    static string Hex(byte[] hash) => Convert.ToHexString(hash).ToLowerInvariant();
}
