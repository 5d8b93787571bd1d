using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Runtime;
using Orleans.Runtime.Hosting;
using Orleans.Storage;

namespace MrVae.Storage;

/// <summary>
/// Grain state as one file per (grain, state name) under a directory. Every write goes to a temporary file in the
/// same directory, is flushed to disk and then renamed over the old file, so a crash or full disk mid-write leaves
/// the previous state whole. Files carry a magic, a format version, an etag and a SHA-256 of the payload: a damaged
/// or foreign file is reported by name instead of being read as garbage.
/// </summary>
public sealed class FileGrainStorage(string name, string directory, IGrainStorageSerializer serializer) : IGrainStorage
{
    public const int FormatVersion = 1;
    static readonly byte[] Magic = "MRVAEGS\n"u8.ToArray();
    const int HeaderLength = 8 + 4 + 8 + 8;   // magic, format version, etag, payload length
    const int HashLength = 32;

    public string Name { get; } = name;
    public string Directory { get; } = Path.GetFullPath(directory);

    /// <summary>Test hook: wraps the stream a write goes through (to simulate a crash mid-write).</summary>
    internal Func<Stream, Stream>? WrapWriteStream { get; set; }

    public string PathFor(string stateName, GrainId grainId)
    {
        // Readable, and unique even where sanitising maps two keys to one name.
        string raw = $"{grainId}.{stateName}";
        var safe = new StringBuilder(raw.Length);
        foreach (char c in raw) safe.Append(char.IsAsciiLetterOrDigit(c) || c is '-' or '.' or '_' ? c : '_');
        string hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(raw)))[..12];
        return Path.Combine(Directory, $"{safe}.{hash}.state");
    }

    public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        string path = PathFor(stateName, grainId);
        if (!File.Exists(path))
        {
            grainState.State = Activator.CreateInstance<T>();
            grainState.ETag = null;
            grainState.RecordExists = false;
            return Task.CompletedTask;
        }
        var (etag, payload) = ReadFile(path);
        try { grainState.State = serializer.Deserialize<T>(new BinaryData(payload)); }
        catch (Exception e)
        {
            throw new GrainStateCorruptException($"grain state {path} ({grainId}, '{stateName}') cannot be decoded as {typeof(T).Name} ({e.Message}): " +
                "it was written by an incompatible mrvae version; delete it to start that grain fresh", e);
        }
        grainState.ETag = etag.ToString();
        grainState.RecordExists = true;
        return Task.CompletedTask;
    }

    public async Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        string path = PathFor(stateName, grainId);
        System.IO.Directory.CreateDirectory(Directory);
        long current = File.Exists(path) ? ReadFile(path).ETag : 0;
        string? expected = File.Exists(path) ? current.ToString() : null;
        if (grainState.ETag != expected)
            throw new InconsistentStateException($"grain storage '{Name}': {path} was written by another activation (etag {expected ?? "none"}, this one holds {grainState.ETag ?? "none"})", expected, grainState.ETag);

        byte[] payload = serializer.Serialize(grainState.State).ToArray();
        long etag = current + 1;
        string temporary = $"{path}.writing-{Guid.NewGuid():N}";
        try
        {
            await using (var file = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous))
            {
                var output = WrapWriteStream?.Invoke(file) ?? file;
                var header = new byte[HeaderLength];
                Magic.CopyTo(header, 0);
                BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8), FormatVersion);
                BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(12), etag);
                BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(20), payload.LongLength);
                await output.WriteAsync(header);
                await output.WriteAsync(payload);
                await output.WriteAsync(SHA256.HashData(payload));
                await output.FlushAsync();
                file.Flush(flushToDisk: true);
            }
            File.Move(temporary, path, overwrite: true);   // rename(2): atomic on one file system
        }
        finally
        {
            if (File.Exists(temporary)) File.Delete(temporary);
        }
        grainState.ETag = etag.ToString();
        grainState.RecordExists = true;
    }

    public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        File.Delete(PathFor(stateName, grainId));
        grainState.ETag = null;
        grainState.RecordExists = false;
        grainState.State = Activator.CreateInstance<T>();
        return Task.CompletedTask;
    }

    static (long ETag, byte[] Payload) ReadFile(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        string Damaged(string why) => $"grain state {path} is damaged ({why}); delete it to start that grain fresh, or restore it from a backup";
        if (bytes.Length < HeaderLength + HashLength || !bytes.AsSpan(0, 8).SequenceEqual(Magic))
            throw new GrainStateCorruptException(Damaged("not an mrvae grain state file"));
        int version = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(8));
        if (version != FormatVersion)
            throw new GrainStateCorruptException($"grain state {path} has format version {version}, this build reads {FormatVersion}: use a matching mrvae version");
        long etag = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(12));
        long length = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(20));
        if (length != bytes.Length - HeaderLength - HashLength) throw new GrainStateCorruptException(Damaged($"expected {length} payload bytes, found {bytes.Length - HeaderLength - HashLength}"));
        var payload = bytes.AsSpan(HeaderLength, (int)length);
        if (!SHA256.HashData(payload).AsSpan().SequenceEqual(bytes.AsSpan(HeaderLength + (int)length)))
            throw new GrainStateCorruptException(Damaged("checksum mismatch"));
        return (etag, payload.ToArray());
    }
}

/// <summary>A grain state file that cannot be used; the message names the file and the fix.</summary>
public sealed class GrainStateCorruptException(string message, Exception? inner = null) : MrVae.Data.UserInputException(message, inner);

public static class FileGrainStorageExtensions
{
    /// <summary>Registers a <see cref="FileGrainStorage"/> named <paramref name="name"/> over <paramref name="directory"/>, using Orleans' binary serializer.</summary>
    public static IServiceCollection AddFileGrainStorage(this IServiceCollection services, string name, string directory)
        => services.AddGrainStorage(name, (sp, n) =>
            new FileGrainStorage(n, directory, ActivatorUtilities.CreateInstance<OrleansGrainStorageSerializer>(sp)));
}
