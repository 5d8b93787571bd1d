using MrVae.Data;

namespace MrVae.Evaluation;

public readonly record struct Rgb(byte R, byte G, byte B)
{
    public static readonly Rgb White = new(255, 255, 255), Black = new(0, 0, 0), Grey = new(150, 150, 150), LightGrey = new(225, 225, 225);
    public static readonly Rgb[] Palette =
    [
        new(31, 119, 180), new(255, 127, 14), new(44, 160, 44), new(214, 39, 40), new(148, 103, 189),
        new(140, 86, 75), new(227, 119, 194), new(127, 127, 127), new(188, 189, 34), new(23, 190, 207),
    ];

    public Rgb Blend(Rgb other, double t) => new(
        (byte)Math.Round(R + (other.R - R) * t), (byte)Math.Round(G + (other.G - G) * t), (byte)Math.Round(B + (other.B - B) * t));

    static readonly Rgb[] ViridisAnchors = [new(68, 1, 84), new(59, 82, 139), new(33, 145, 140), new(94, 201, 98), new(253, 231, 37)];

    /// <summary>Viridis-like colour for t in [0, 1].</summary>
    public static Rgb Viridis(double t)
    {
        if (double.IsNaN(t)) return LightGrey;
        t = Math.Clamp(t, 0, 1) * (ViridisAnchors.Length - 1);
        int i = Math.Min((int)t, ViridisAnchors.Length - 2);
        return ViridisAnchors[i].Blend(ViridisAnchors[i + 1], t - i);
    }
}

/// <summary>
/// An RGB raster with lines, rectangles and text in a built-in 5 × 7 bitmap font, saved through
/// <see cref="Png"/>: enough for heatmaps and training curves without a native graphics library.
/// </summary>
public sealed class Canvas
{
    public int Width { get; }
    public int Height { get; }
    readonly byte[] rgb;

    public Canvas(int width, int height, Rgb? background = null)
    {
        if (width < 1 || height < 1 || (long)width * height > 50_000_000) throw new ArgumentOutOfRangeException(nameof(width), $"canvas {width}x{height} out of range");
        Width = width; Height = height;
        rgb = new byte[width * height * 3];
        var bg = background ?? Rgb.White;
        for (int i = 0; i < width * height; i++) { rgb[3 * i] = bg.R; rgb[3 * i + 1] = bg.G; rgb[3 * i + 2] = bg.B; }
    }

    public Rgb this[int x, int y]
    {
        get { int i = (y * Width + x) * 3; return new Rgb(rgb[i], rgb[i + 1], rgb[i + 2]); }
    }

    public void Set(int x, int y, Rgb c)
    {
        if (x < 0 || y < 0 || x >= Width || y >= Height) return;
        int i = (y * Width + x) * 3;
        rgb[i] = c.R; rgb[i + 1] = c.G; rgb[i + 2] = c.B;
    }

    public void FillRect(int x, int y, int w, int h, Rgb c)
    {
        for (int yy = Math.Max(0, y); yy < Math.Min(Height, y + h); yy++)
            for (int xx = Math.Max(0, x); xx < Math.Min(Width, x + w); xx++) Set(xx, yy, c);
    }

    public void StrokeRect(int x, int y, int w, int h, Rgb c)
    {
        Line(x, y, x + w - 1, y, c); Line(x, y + h - 1, x + w - 1, y + h - 1, c);
        Line(x, y, x, y + h - 1, c); Line(x + w - 1, y, x + w - 1, y + h - 1, c);
    }

    /// <summary>Bresenham line; <paramref name="thickness"/> &gt; 1 draws a square brush.</summary>
    public void Line(int x0, int y0, int x1, int y1, Rgb c, int thickness = 1)
    {
        int dx = Math.Abs(x1 - x0), sx = x0 < x1 ? 1 : -1, dy = -Math.Abs(y1 - y0), sy = y0 < y1 ? 1 : -1, err = dx + dy;
        int lo = -(thickness - 1) / 2, hi = thickness / 2;
        for (int guard = 0; guard < 100_000; guard++)
        {
            for (int a = lo; a <= hi; a++)
                for (int b = lo; b <= hi; b++) Set(x0 + a, y0 + b, c);
            if (x0 == x1 && y0 == y1) break;
            int e2 = 2 * err;
            if (e2 >= dy) { err += dy; x0 += sx; }
            if (e2 <= dx) { err += dx; y0 += sy; }
        }
    }

    public static int TextWidth(string text, int scale = 1) => text.Length == 0 ? 0 : (text.Length * 6 - 1) * scale;
    public static int TextHeight(int scale = 1) => 7 * scale;

    /// <summary>Draws <paramref name="text"/> with its top-left corner at (x, y); lowercase prints as uppercase.</summary>
    public void Text(int x, int y, string text, Rgb c, int scale = 1)
    {
        foreach (char ch in text)
        {
            var glyph = Font.Glyph(ch);
            for (int row = 0; row < 7; row++)
                for (int col = 0; col < 5; col++)
                    if ((glyph[row] >> (4 - col) & 1) == 1) FillRect(x + col * scale, y + row * scale, scale, scale, c);
            x += 6 * scale;
        }
    }

    /// <summary>Text right-aligned at <paramref name="right"/>.</summary>
    public void TextRight(int right, int y, string text, Rgb c, int scale = 1) => Text(right - TextWidth(text, scale), y, text, c, scale);

    public void TextCentered(int centre, int y, string text, Rgb c, int scale = 1) => Text(centre - TextWidth(text, scale) / 2, y, text, c, scale);

    /// <summary>Copies a 3 × 28 × 28 CHW image (bytes) with its top-left at (x, y), enlarged by <paramref name="scale"/>.</summary>
    public void Image(int x, int y, byte[] chw, int scale = 1)
    {
        const int side = 28;
        for (int yy = 0; yy < side * scale; yy++)
            for (int xx = 0; xx < side * scale; xx++)
            {
                int from = yy / scale * side + xx / scale;
                Set(x + xx, y + yy, new Rgb(chw[from], chw[side * side + from], chw[2 * side * side + from]));
            }
    }

    public void Save(string path) => Png.WriteRgb(path, Width, Height, rgb);

    static class Font
    {
        static readonly Dictionary<char, byte[]> Glyphs = Build();
        static readonly byte[] Unknown = Parse("11111 10001 10001 10001 10001 10001 11111");

        public static byte[] Glyph(char c) => Glyphs.TryGetValue(char.ToUpperInvariant(c), out var g) ? g : Unknown;

        static byte[] Parse(string rows) => rows.Split(' ').Select(r => Convert.ToByte(r, 2)).ToArray();

        static Dictionary<char, byte[]> Build()
        {
            var d = new Dictionary<char, string>
            {
                ['0'] = "01110 10001 10011 10101 11001 10001 01110", ['1'] = "00100 01100 00100 00100 00100 00100 01110",
                ['2'] = "01110 10001 00001 00010 00100 01000 11111", ['3'] = "11111 00010 00100 00010 00001 10001 01110",
                ['4'] = "00010 00110 01010 10010 11111 00010 00010", ['5'] = "11111 10000 11110 00001 00001 10001 01110",
                ['6'] = "00110 01000 10000 11110 10001 10001 01110", ['7'] = "11111 00001 00010 00100 01000 01000 01000",
                ['8'] = "01110 10001 10001 01110 10001 10001 01110", ['9'] = "01110 10001 10001 01111 00001 00010 01100",
                ['A'] = "01110 10001 10001 11111 10001 10001 10001", ['B'] = "11110 10001 10001 11110 10001 10001 11110",
                ['C'] = "01110 10001 10000 10000 10000 10001 01110", ['D'] = "11100 10010 10001 10001 10001 10010 11100",
                ['E'] = "11111 10000 10000 11110 10000 10000 11111", ['F'] = "11111 10000 10000 11110 10000 10000 10000",
                ['G'] = "01110 10001 10000 10111 10001 10001 01111", ['H'] = "10001 10001 10001 11111 10001 10001 10001",
                ['I'] = "01110 00100 00100 00100 00100 00100 01110", ['J'] = "00111 00010 00010 00010 00010 10010 01100",
                ['K'] = "10001 10010 10100 11000 10100 10010 10001", ['L'] = "10000 10000 10000 10000 10000 10000 11111",
                ['M'] = "10001 11011 10101 10101 10001 10001 10001", ['N'] = "10001 10001 11001 10101 10011 10001 10001",
                ['O'] = "01110 10001 10001 10001 10001 10001 01110", ['P'] = "11110 10001 10001 11110 10000 10000 10000",
                ['Q'] = "01110 10001 10001 10001 10101 10010 01101", ['R'] = "11110 10001 10001 11110 10100 10010 10001",
                ['S'] = "01111 10000 10000 01110 00001 00001 11110", ['T'] = "11111 00100 00100 00100 00100 00100 00100",
                ['U'] = "10001 10001 10001 10001 10001 10001 01110", ['V'] = "10001 10001 10001 10001 10001 01010 00100",
                ['W'] = "10001 10001 10001 10101 10101 10101 01010", ['X'] = "10001 10001 01010 00100 01010 10001 10001",
                ['Y'] = "10001 10001 10001 01010 00100 00100 00100", ['Z'] = "11111 00001 00010 00100 01000 10000 11111",
                [' '] = "00000 00000 00000 00000 00000 00000 00000", ['.'] = "00000 00000 00000 00000 00000 01100 01100",
                [','] = "00000 00000 00000 00000 01100 00100 01000", ['-'] = "00000 00000 00000 11111 00000 00000 00000",
                ['_'] = "00000 00000 00000 00000 00000 00000 11111", ['='] = "00000 00000 11111 00000 11111 00000 00000",
                ['>'] = "01000 00100 00010 00001 00010 00100 01000", ['<'] = "00010 00100 01000 10000 01000 00100 00010",
                ['('] = "00010 00100 01000 01000 01000 00100 00010", [')'] = "01000 00100 00010 00010 00010 00100 01000",
                ['{'] = "00011 00100 00100 11000 00100 00100 00011", ['}'] = "11000 00100 00100 00011 00100 00100 11000",
                ['['] = "01110 01000 01000 01000 01000 01000 01110", [']'] = "01110 00010 00010 00010 00010 00010 01110",
                [':'] = "00000 01100 01100 00000 01100 01100 00000", [';'] = "00000 01100 01100 00000 01100 00100 01000", ['/'] = "00000 00001 00010 00100 01000 10000 00000",
                ['%'] = "11000 11001 00010 00100 01000 10011 00011", ['+'] = "00000 00100 00100 11111 00100 00100 00000",
                ['*'] = "00000 00100 10101 01110 10101 00100 00000", ['#'] = "01010 01010 11111 01010 11111 01010 01010",
                ['\''] = "00100 00100 01000 00000 00000 00000 00000", ['?'] = "01110 10001 00001 00010 00100 00000 00100",
                ['!'] = "00100 00100 00100 00100 00100 00000 00100", ['|'] = "00100 00100 00100 00100 00100 00100 00100",
                ['~'] = "00000 00000 01000 10101 00010 00000 00000", ['^'] = "00100 01010 10001 00000 00000 00000 00000",
                ['→'] = "00000 00100 00010 11111 00010 00100 00000", ['≥'] = "01000 00100 00010 00100 01000 00000 11111",
            };
            return d.ToDictionary(kv => kv.Key, kv => Parse(kv.Value));
        }
    }
}
