using System.Buffers.Binary;

namespace MrVae.Data;

/// <summary>
/// The dataset cache's binary files, both kinds: a 4-byte magic, an int32 format version and int32 shape fields, then
/// the body, little-endian; written through a temporary file and a rename. <paramref name="kind"/> names the kind of
/// file in errors; every error names the file and the fix.
/// </summary>
internal static class CacheFile
{
    public const int Version = 1;
    public const string Fix = "re-run `mrvae data make` for this directory";

    public static FileStream Open(string path)
    {
        if (!File.Exists(path)) throw new DataFormatException($"{path} not found; {Fix}");
        return File.OpenRead(path);
    }

    /// <summary>Reads and checks the header (length, magic, version); returns it whole.</summary>
    public static byte[] ReadHeader(FileStream file, string path, byte[] magic, int headerBytes, string kind)
    {
        var header = new byte[headerBytes];
        if (file.Length < headerBytes) throw new DataFormatException($"{path}: truncated header ({file.Length} bytes); {Fix}");
        file.ReadExactly(header);
        if (!header.AsSpan(0, 4).SequenceEqual(magic)) throw new DataFormatException($"{path}: not a {kind} of this kind (wrong magic); {Fix}");
        int version = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(4));
        if (version != Version) throw new DataFormatException($"{path}: cache format version {version}, this build reads version {Version}; {Fix}");
        return header;
    }

    /// <summary>Reads the body of <paramref name="count"/> items of <paramref name="itemBytes"/>, checking the file's length against the header.</summary>
    public static byte[] ReadBody(FileStream file, string path, int headerBytes, int count, long itemBytes)
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

    /// <summary>A header of <paramref name="magic"/>, <see cref="Version"/> and the given int32 fields.</summary>
    public static byte[] Header(byte[] magic, params int[] fields)
    {
        var header = new byte[8 + 4 * fields.Length];
        magic.CopyTo(header, 0);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(4), Version);
        for (int i = 0; i < fields.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8 + 4 * i), fields[i]);
        return header;
    }

    public static void WriteAtomically(string path, byte[] header, byte[] body)
    {
        string tmp = path + ".tmp";
        using (var f = File.Create(tmp)) { f.Write(header); f.Write(body); }
        File.Move(tmp, path, overwrite: true);
    }
}
