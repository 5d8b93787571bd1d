using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace MrVae.Data;

/// <summary>A minimal PNG writer (8-bit RGB, no filtering): enough for sample grids, no native dependency.</summary>
public static class Png
{
    public static void WriteRgb(string path, int width, int height, byte[] rgb)
    {
        if (rgb.Length != width * height * 3) throw new ArgumentException($"expected {width}x{height}x3 bytes, got {rgb.Length}");
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        using var file = File.Create(path);
        file.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        var header = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(header, width);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), height);
        header[8] = 8; header[9] = 2;   // bit depth 8, colour type RGB; compression, filter, interlace 0
        Chunk(file, "IHDR", header);
        using (var raw = new MemoryStream())
        {
            using (var z = new ZLibStream(raw, CompressionLevel.Optimal, leaveOpen: true))
                for (int y = 0; y < height; y++)
                {
                    z.WriteByte(0);   // filter type None
                    z.Write(rgb, y * width * 3, width * 3);
                }
            Chunk(file, "IDAT", raw.ToArray());
        }
        Chunk(file, "IEND", []);
    }

    static void Chunk(Stream s, string type, byte[] data)
    {
        var len = new byte[4];
        BinaryPrimitives.WriteInt32BigEndian(len, data.Length);
        s.Write(len);
        var typeBytes = Encoding.ASCII.GetBytes(type);
        s.Write(typeBytes);
        s.Write(data);
        uint crc = Crc32(Crc32(0xFFFFFFFFu, typeBytes), data) ^ 0xFFFFFFFFu;
        var crcBytes = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(crcBytes, crc);
        s.Write(crcBytes);
    }

    static readonly uint[] CrcTable = Enumerable.Range(0, 256).Select(n =>
    {
        uint c = (uint)n;
        for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        return c;
    }).ToArray();

    static uint Crc32(uint crc, byte[] data)
    {
        foreach (byte b in data) crc = CrcTable[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return crc;
    }
}

/// <summary>
/// Sample grids: CHW 3 × 28 × 28 images (bytes, or floats in [0, 1] from a model) laid out in rows and columns with
/// a white 2-pixel padding, optionally enlarged by an integer factor (nearest neighbour), written as PNG.
/// </summary>
public static class ImageGrid
{
    public const int Side = 28, Pad = 2, ImageBytes = 3 * Side * Side;

    /// <summary><paramref name="cells"/>[row][col] is a 3×28×28 CHW image or null (left white).</summary>
    public static void Write(string path, byte[]?[][] cells, int scale = 1)
    {
        var rgb = Compose(cells, scale, out int width, out int height);
        Png.WriteRgb(path, width, height, rgb);
    }

    /// <summary>As the byte overload, for model outputs: values in [0, 1] (clamped; NaN shows black).</summary>
    public static void Write(string path, float[]?[][] cells, int scale = 1)
    {
        var bytes = new byte[]?[cells.Length][];
        for (int r = 0; r < cells.Length; r++)
        {
            bytes[r] = new byte[]?[cells[r].Length];
            for (int c = 0; c < cells[r].Length; c++)
                bytes[r][c] = cells[r][c] is { } img ? FromFloats(img) : null;
        }
        Write(path, bytes, scale);
    }

    /// <summary>The grid as row-major RGB (HWC) bytes.</summary>
    public static byte[] Compose(byte[]?[][] cells, int scale, out int width, out int height)
    {
        if (cells.Length == 0 || cells.All(r => r.Length == 0)) throw new ArgumentException("an image grid needs at least one cell");
        if (scale < 1 || scale > 16) throw new ArgumentOutOfRangeException(nameof(scale), "scale must be 1..16");
        int rows = cells.Length, cols = cells.Max(r => r.Length), cell = Side * scale;
        width = cols * (cell + Pad) + Pad; height = rows * (cell + Pad) + Pad;
        var rgb = new byte[width * height * 3];
        Array.Fill(rgb, (byte)255);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cells[r].Length; c++)
            {
                var img = cells[r][c];
                if (img is null) continue;
                if (img.Length != ImageBytes) throw new ArgumentException($"grid cell ({r}, {c}) has {img.Length} values, expected 3x28x28 = {ImageBytes}");
                int ox = Pad + c * (cell + Pad), oy = Pad + r * (cell + Pad);
                for (int y = 0; y < cell; y++)
                    for (int x = 0; x < cell; x++)
                    {
                        int to = ((oy + y) * width + ox + x) * 3, from = (y / scale) * Side + x / scale;
                        rgb[to] = img[from];
                        rgb[to + 1] = img[Side * Side + from];
                        rgb[to + 2] = img[2 * Side * Side + from];
                    }
            }
        return rgb;
    }

    public static byte[] FromFloats(ReadOnlySpan<float> chw)
    {
        var bytes = new byte[chw.Length];
        for (int i = 0; i < chw.Length; i++)
            bytes[i] = float.IsNaN(chw[i]) ? (byte)0 : (byte)Math.Clamp(MathF.Round(chw[i] * 255f), 0, 255);
        return bytes;
    }
}
