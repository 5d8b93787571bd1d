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
    /// <summary>
    /// The MNIST index each member shows, at [(tuple × Factors + factor) × Modalities + modality] (−1 where the
    /// modality is not a member of the factor). Known only right after generation: not stored in the cache.
    /// </summary>
    public int[]? Sources { get; }

    public PolyMnistSplit(byte[][] pixels, int[] labels, int count, int factors, int[]? sources = null)
    {
        Pixels = pixels; Labels = labels; Count = count; Factors = factors; Sources = sources;
    }

    public int Label(int tuple, int factor) => Labels[tuple * Factors + factor];
}

/// <summary>
/// Generates PolyMNIST tuples for any sharing spec (docs/setup.md, "Datasets"). The main digit (the first factor whose
/// members are all modalities, if any) follows MNIST's order and class balance: tuple t has the label of MNIST image
/// t (wrapping around), and each modality takes the next image of that class from its own random permutation of the
/// class, so over one pass every modality shows every MNIST image once. Every other factor's label is drawn
/// uniformly per tuple. Each member draws its own MNIST instance (all instances in one tuple are distinct), binarised
/// (&gt; 128), area-resized into its placement and drawn on a random crop of the modality's background with the
/// background's colours inverted (255 − v) on the strokes. Deterministic by seed.
/// </summary>
public static class PolyMnistGenerator
{
    public const int BackgroundSide = 256;
    const int Side = 28;

    /// <summary>Index of the main digit: the first factor shown by every modality, or −1 when there is none.</summary>
    public static int MainFactor(PolyMnistSpec spec)
    {
        for (int f = 0; f < spec.Factors.Length; f++)
            if (spec.Factors[f].Members.Length == spec.Modalities) return f;
        return -1;
    }

    /// <param name="streamOffset">Separates the random streams of splits that share a seed (and so backgrounds): 0 train, 1 test.</param>
    public static PolyMnistSplit Generate(PolyMnistSpec spec, MnistSet mnist, int count, int seed, int streamOffset = 0)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), "need at least one tuple");
        spec.Validate($"'{spec.Name}'");
        if (mnist.Count < 1) throw new DataFormatException("the MNIST set holds no images; " + MnistIdx.FetchHint);
        int m = spec.Modalities, factors = spec.Factors.Length, main = MainFactor(spec);
        var backgrounds = new byte[m][];
        for (int j = 0; j < m; j++) backgrounds[j] = Backgrounds.Texture(j, m, seed);

        var byClass = new int[10][];
        var classCount = new int[10];
        for (int i = 0; i < mnist.Count; i++) classCount[mnist.Labels[i]]++;
        for (int c = 0; c < 10; c++) byClass[c] = new int[classCount[c]];
        Array.Clear(classCount);
        for (int i = 0; i < mnist.Count; i++) { int c = mnist.Labels[i]; byClass[c][classCount[c]++] = i; }
        for (int f = 0; f < factors; f++)
            if (f != main)
                for (int c = 0; c < 10; c++)
                    if (byClass[c].Length == 0)
                        throw new DataFormatException($"MNIST has no image of digit {c}; factor '{spec.Factors[f].Name}' needs all ten digits");

        var binary = new byte[mnist.Images.Length];
        for (int i = 0; i < binary.Length; i++) binary[i] = mnist.Images[i] > 128 ? (byte)1 : (byte)0;
        var resizers = new Dictionary<int, Resizer>();
        foreach (var factor in spec.Factors)
            foreach (var p in factor.Placements)
                if (!resizers.ContainsKey(p.Size)) resizers[p.Size] = new Resizer(p.Size);

        var rng = new Random(unchecked(seed * 7_919 + 104_729 * (streamOffset + 1)));
        var pixels = new byte[m][];
        for (int j = 0; j < m; j++) pixels[j] = new byte[count * PolyMnistSplit.ImageBytes];
        var labels = new int[count * factors];
        var sources = new int[count * factors * m];
        Array.Fill(sources, -1);
        var mask = new byte[m][];
        for (int j = 0; j < m; j++) mask[j] = new byte[Side * Side];
        var used = new int[spec.Factors.Sum(f => f.Placements.Length)];

        // Main digit: per modality and class a permutation of the class's images, renewed every pass over MNIST.
        var perms = new int[m][][];
        var rank = new int[10];

        for (int t = 0; t < count; t++)
        {
            int usedCount = 0;
            for (int j = 0; j < m; j++) Array.Clear(mask[j]);
            if (main >= 0 && t % mnist.Count == 0)
            {
                for (int j = 0; j < m; j++)
                {
                    perms[j] = new int[10][];
                    for (int c = 0; c < 10; c++) { perms[j][c] = (int[])byClass[c].Clone(); rng.Shuffle(perms[j][c]); }
                }
                Array.Clear(rank);
            }
            for (int f = 0; f < factors; f++)
            {
                var placements = spec.Factors[f].Placements;
                int label, slot = (t * factors + f) * m;
                if (f == main)
                {
                    label = mnist.Labels[t % mnist.Count];
                    int r = rank[label]++;
                    for (int p = 0; p < placements.Length; p++)
                    {
                        var perm = perms[placements[p].Modality][label];
                        // Keep the instances of one tuple distinct: swap a clash with a later, unused image of the permutation.
                        if (Array.IndexOf(used, perm[r], 0, usedCount) >= 0)
                            for (int later = r + 1; later < perm.Length; later++)
                                if (Array.IndexOf(used, perm[later], 0, usedCount) < 0) { (perm[r], perm[later]) = (perm[later], perm[r]); break; }
                        int source = perm[r];
                        used[usedCount++] = source;
                        sources[slot + placements[p].Modality] = source;
                        resizers[placements[p].Size].Stamp(binary, source * MnistSet.ImageBytes, placements[p], mask[placements[p].Modality]);
                    }
                }
                else
                {
                    label = rng.Next(10);
                    var pool = byClass[label];
                    for (int p = 0; p < placements.Length; p++)
                    {
                        int source = pool[rng.Next(pool.Length)];
                        for (int attempt = 0; attempt < 64 && Array.IndexOf(used, source, 0, usedCount) >= 0; attempt++)
                            source = pool[rng.Next(pool.Length)];
                        used[usedCount++] = source;
                        sources[slot + placements[p].Modality] = source;
                        resizers[placements[p].Size].Stamp(binary, source * MnistSet.ImageBytes, placements[p], mask[placements[p].Modality]);
                    }
                }
                labels[t * factors + f] = label;
            }
            for (int j = 0; j < m; j++)
            {
                int ox = rng.Next(BackgroundSide - Side + 1), oy = rng.Next(BackgroundSide - Side + 1);
                var bg = backgrounds[j];
                var strokes = mask[j];
                var dst = pixels[j];
                int baseIndex = t * PolyMnistSplit.ImageBytes;
                for (int c = 0; c < 3; c++)
                    for (int y = 0; y < Side; y++)
                    {
                        int src = (c * BackgroundSide + oy + y) * BackgroundSide + ox, to = baseIndex + (c * Side + y) * Side;
                        for (int x = 0; x < Side; x++)
                        {
                            byte v = bg[src + x];
                            dst[to + x] = strokes[y * Side + x] != 0 ? (byte)(255 - v) : v;
                        }
                    }
            }
        }
        return new PolyMnistSplit(pixels, labels, count, factors, sources);
    }

    /// <summary>
    /// Area resize of a binary 28 × 28 digit to size × size (separable weights, precomputed): a target pixel is a
    /// stroke when at least 35% of the source area it covers is stroke. At size 28 this is the identity.
    /// </summary>
    sealed class Resizer
    {
        readonly int size;
        readonly int[] first, length;       // per target coordinate: first source coordinate and how many
        readonly double[] weight;           // per target coordinate: up to `span` weights
        readonly int span;
        readonly double threshold;

        public Resizer(int size)
        {
            this.size = size;
            double scale = (double)Side / size;
            span = (int)Math.Ceiling(scale) + 1;
            first = new int[size]; length = new int[size]; weight = new double[size * span];
            for (int i = 0; i < size; i++)
            {
                double a = i * scale, b = (i + 1) * scale;
                int s0 = (int)a, s1 = Math.Min(Side, (int)Math.Ceiling(b - 1e-9));
                first[i] = s0; length[i] = s1 - s0;
                for (int s = s0; s < s1; s++) weight[i * span + s - s0] = Math.Min(b, s + 1) - Math.Max(a, s);
            }
            threshold = 0.35 * scale * scale;
        }

        public void Stamp(byte[] binary, int offset, FactorPlacement place, byte[] mask)
        {
            for (int y = 0; y < size; y++)
            {
                int sy0 = first[y], ny = length[y];
                for (int x = 0; x < size; x++)
                {
                    int sx0 = first[x], nx = length[x];
                    double sum = 0;
                    for (int dy = 0; dy < ny; dy++)
                    {
                        double row = 0;
                        int src = offset + (sy0 + dy) * Side + sx0;
                        for (int dx = 0; dx < nx; dx++) row += weight[x * span + dx] * binary[src + dx];
                        sum += weight[y * span + dy] * row;
                    }
                    if (sum >= threshold - 1e-9) mask[(place.Y + y) * Side + place.X + x] = 1;
                }
            }
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
