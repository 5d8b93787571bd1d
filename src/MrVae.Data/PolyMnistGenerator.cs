namespace MrVae.Data;

/// <summary>One generated split: per modality Count × 3 × 28 × 28 bytes (CHW), and every factor's label per tuple.</summary>
public sealed class PolyMnistSplit
{
    public const int ImageBytes = 3 * 28 * 28;
    public int Count { get; }
    public int Modalities => Pixels.Length;
    public int Factors { get; }
    public byte[][] Pixels { get; }
    /// <summary>Count × Factors, row-major.</summary>
    public int[] Labels { get; }
    /// <summary>MNIST index drawn for (tuple, factor, member) (Count × Factors × M, −1 where not a member); not stored in the cache.</summary>
    public int[]? Sources { get; }

    public PolyMnistSplit(byte[][] pixels, int[] labels, int count, int factors, int[]? sources = null)
    {
        Pixels = pixels; Labels = labels; Count = count; Factors = factors; Sources = sources;
    }

    public int Label(int tuple, int factor) => Labels[tuple * Factors + factor];
}

/// <summary>
/// Generates PolyMNIST tuples for any sharing spec (model.md, "Datasets"): each factor's label is drawn per tuple,
/// every member modality draws its own MNIST instance of that label (distinct within the tuple), binarised,
/// resized into its placement and drawn on a random crop of the modality's background with the background's
/// colours inverted on the strokes. Deterministic by seed.
/// </summary>
public static class PolyMnistGenerator
{
    public const int BackgroundSide = 256;

    /// <param name="streamOffset">Separates the random streams of splits that share a seed (and so backgrounds).</param>
    public static PolyMnistSplit Generate(PolyMnistSpec spec, MnistSet mnist, int count, int seed, int streamOffset = 0)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), "need at least one tuple");
        int m = spec.Modalities, factors = spec.Factors.Length;
        var backgrounds = Enumerable.Range(0, m).Select(j => Backgrounds.Texture(j, m, seed)).ToArray();
        var byClass = Enumerable.Range(0, 10).Select(c => new List<int>()).ToArray();
        for (int i = 0; i < mnist.Count; i++) byClass[mnist.Labels[i]].Add(i);
        var binary = new byte[mnist.Images.Length];
        for (int i = 0; i < binary.Length; i++) binary[i] = mnist.Images[i] > 128 ? (byte)1 : (byte)0;

        var rng = new Random(unchecked(seed * 7_919 + 104_729 * (streamOffset + 1)));
        var pixels = Enumerable.Range(0, m).Select(_ => new byte[count * PolyMnistSplit.ImageBytes]).ToArray();
        var labels = new int[count * factors];
        var sources = Enumerable.Repeat(-1, count * factors * m).ToArray();
        var mask = new byte[m][];
        for (int j = 0; j < m; j++) mask[j] = new byte[28 * 28];
        var scratch = new float[28 * 28];

        for (int t = 0; t < count; t++)
        {
            for (int j = 0; j < m; j++) Array.Clear(mask[j]);
            for (int f = 0; f < factors; f++)
            {
                // The first factor follows MNIST's class balance; the others are uniform over digits.
                int label = f == 0 ? mnist.Labels[rng.Next(mnist.Count)] : rng.Next(10);
                labels[t * factors + f] = label;
                var pool = byClass[label];
                var placements = spec.Factors[f].Placements;
                for (int p = 0; p < placements.Length; p++)
                {
                    int source;
                    do source = pool[rng.Next(pool.Count)];
                    while (pool.Count > placements.Length && Array.IndexOf(sources, source, (t * factors + f) * m, m) >= 0);
                    sources[(t * factors + f) * m + placements[p].Modality] = source;
                    Stamp(binary.AsSpan(source * MnistSet.ImageBytes, MnistSet.ImageBytes), placements[p], mask[placements[p].Modality], scratch);
                }
            }
            for (int j = 0; j < m; j++)
            {
                int ox = rng.Next(BackgroundSide - 28 + 1), oy = rng.Next(BackgroundSide - 28 + 1);
                var bg = backgrounds[j];
                var dst = pixels[j].AsSpan(t * PolyMnistSplit.ImageBytes, PolyMnistSplit.ImageBytes);
                for (int c = 0; c < 3; c++)
                    for (int y = 0; y < 28; y++)
                        for (int x = 0; x < 28; x++)
                        {
                            byte v = bg[(c * BackgroundSide + oy + y) * BackgroundSide + ox + x];
                            dst[(c * 28 + y) * 28 + x] = mask[j][y * 28 + x] != 0 ? (byte)(255 - v) : v;
                        }
            }
        }
        return new PolyMnistSplit(pixels, labels, count, factors, sources);
    }

    /// <summary>Area-resizes a binary 28 × 28 digit into its placement and ORs it into the modality's stroke mask.</summary>
    static void Stamp(ReadOnlySpan<byte> digit, FactorPlacement place, byte[] mask, float[] scratch)
    {
        int size = place.Size;
        double scale = 28.0 / size;
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
            {
                // Average of the source area covered by target pixel (x, y).
                double x0 = x * scale, x1 = (x + 1) * scale, y0 = y * scale, y1 = (y + 1) * scale;
                double sum = 0;
                for (int sy = (int)y0; sy < Math.Min(28, (int)Math.Ceiling(y1)); sy++)
                {
                    double wy = Math.Min(y1, sy + 1) - Math.Max(y0, sy);
                    for (int sx = (int)x0; sx < Math.Min(28, (int)Math.Ceiling(x1)); sx++)
                        sum += wy * (Math.Min(x1, sx + 1) - Math.Max(x0, sx)) * digit[sy * 28 + sx];
                }
                if (sum / (scale * scale) >= 0.35) mask[(place.Y + y) * 28 + place.X + x] = 1;
            }
    }
}

/// <summary>Procedural colour textures, one per modality: distinct hues, smooth value noise, no downloads.</summary>
public static class Backgrounds
{
    /// <summary>3 × 256 × 256 bytes (CHW) for modality j of m.</summary>
    public static byte[] Texture(int modality, int modalities, int seed)
    {
        int side = PolyMnistGenerator.BackgroundSide;
        var rng = new Random(unchecked(seed * 1_000_003 + modality * 7_919 + 0x5eed));
        double hueA = (double)modality / modalities, hueB = hueA + 0.5 / modalities + 0.25;
        var (ar, ag, ab) = Hsv(hueA, 0.85, 0.95);
        var (br, bg, bb) = Hsv(hueB, 0.6, 0.35);
        // Two octaves of bilinear value noise, plus a modality-specific stripe frequency for texture.
        var coarse = Grid(rng, 9); var fine = Grid(rng, 33);
        double stripeAngle = rng.NextDouble() * Math.PI, stripeFreq = 0.05 + 0.04 * modality;
        var result = new byte[3 * side * side];
        for (int y = 0; y < side; y++)
            for (int x = 0; x < side; x++)
            {
                double n = 0.6 * Sample(coarse, 9, x, y, side) + 0.3 * Sample(fine, 33, x, y, side)
                         + 0.1 * (0.5 + 0.5 * Math.Sin(stripeFreq * (x * Math.Cos(stripeAngle) + y * Math.Sin(stripeAngle)) * 2 * Math.PI));
                n = Math.Clamp(n, 0, 1);
                result[(0 * side + y) * side + x] = (byte)(255 * (ar * n + br * (1 - n)));
                result[(1 * side + y) * side + x] = (byte)(255 * (ag * n + bg * (1 - n)));
                result[(2 * side + y) * side + x] = (byte)(255 * (ab * n + bb * (1 - n)));
            }
        return result;
    }

    static double[] Grid(Random rng, int n) => Enumerable.Range(0, n * n).Select(_ => rng.NextDouble()).ToArray();

    static double Sample(double[] grid, int n, int x, int y, int side)
    {
        double gx = (double)x / side * (n - 1), gy = (double)y / side * (n - 1);
        int ix = (int)gx, iy = (int)gy;
        double fx = gx - ix, fy = gy - iy;
        fx = fx * fx * (3 - 2 * fx); fy = fy * fy * (3 - 2 * fy);
        double v00 = grid[iy * n + ix], v10 = grid[iy * n + ix + 1], v01 = grid[(iy + 1) * n + ix], v11 = grid[(iy + 1) * n + ix + 1];
        return (v00 * (1 - fx) + v10 * fx) * (1 - fy) + (v01 * (1 - fx) + v11 * fx) * fy;
    }

    static (double R, double G, double B) Hsv(double h, double s, double v)
    {
        h = (h % 1 + 1) % 1 * 6;
        int i = (int)h; double f = h - i, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
        return i switch { 0 => (v, t, p), 1 => (q, v, p), 2 => (p, v, t), 3 => (p, q, v), 4 => (t, p, v), _ => (v, p, q) };
    }
}
