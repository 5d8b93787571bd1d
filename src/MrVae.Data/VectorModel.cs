namespace MrVae.Data;

/// <summary>
/// The generating model of a <see cref="VectorSpec"/>: the maps W_j, deterministic from (spec, seed), and the exact
/// second moments they imply. For modality j, s_j = (the values of the factors whose members contain j, in spec
/// order; then private_dim private values), all N(0, 1) and independent, and x_j = W_j s_j + noise·ε with
/// ε ~ N(0, I). W_j is ObservedDim × dim(s_j) with entries N(0, 1/dim(s_j)), so each x_j has about unit variance
/// per dimension plus noise².
/// </summary>
public sealed class VectorModel
{
    readonly double[][,] maps;
    readonly int[][] factorsOf;
    readonly int[][] columnOf;   // per modality, per factor of the spec: first column of that factor in s_j, or −1

    public VectorSpec Spec { get; }
    /// <summary>The seed the maps were drawn from (recorded in model.json; the maps there are authoritative).</summary>
    public int Seed { get; }
    /// <summary>W_j, ObservedDim × <see cref="LatentDim"/>(j), per modality. Do not modify.</summary>
    public IReadOnlyList<double[,]> Maps => maps;

    /// <summary>The model a seed draws for <paramref name="spec"/>: the same maps on every run and machine.</summary>
    public static VectorModel Create(VectorSpec spec, int seed)
    {
        spec.Validate($"'{spec.Name}'");
        var gauss = new Gaussian(new Random(unchecked(seed * 1_000_003 + 0x3a95)));
        var drawn = new double[spec.Modalities][,];
        for (int j = 0; j < spec.Modalities; j++)
        {
            int rows = spec.ObservedDim, columns = spec.LatentDim(j);
            double scale = 1 / Math.Sqrt(columns);
            drawn[j] = new double[rows, columns];
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < columns; c++) drawn[j][r, c] = scale * gauss.Next();
        }
        return new VectorModel(spec, seed, drawn);
    }

    /// <summary>A model with given maps (as read from model.json): one per modality, ObservedDim × LatentDim(j), finite.</summary>
    public VectorModel(VectorSpec spec, int seed, double[][,] maps)
    {
        spec.Validate($"'{spec.Name}'");
        if (ShapeProblem(spec, maps) is { } problem) throw new ArgumentException(problem, nameof(maps));
        Spec = spec; Seed = seed;
        this.maps = maps.Select(m => (double[,])m.Clone()).ToArray();
        factorsOf = Enumerable.Range(0, spec.Modalities).Select(spec.FactorsOf).ToArray();
        columnOf = new int[spec.Modalities][];
        for (int j = 0; j < spec.Modalities; j++)
        {
            columnOf[j] = Enumerable.Repeat(-1, spec.Factors.Length).ToArray();
            int column = 0;
            foreach (int f in factorsOf[j]) { columnOf[j][f] = column; column += spec.Factors[f].Dim; }
        }
    }

    /// <summary>Null when <paramref name="maps"/> fit <paramref name="spec"/>, else what is wrong.</summary>
    internal static string? ShapeProblem(VectorSpec spec, double[][,]? maps)
    {
        if (maps is null || maps.Length != spec.Modalities) return $"{maps?.Length ?? 0} maps for {spec.Modalities} modalities";
        for (int j = 0; j < maps.Length; j++)
        {
            if (maps[j] is null) return $"the map of modality {j} is missing";
            if (maps[j].GetLength(0) != spec.ObservedDim || maps[j].GetLength(1) != spec.LatentDim(j))
                return $"the map of modality {j} is {maps[j].GetLength(0)}x{maps[j].GetLength(1)}, the spec needs {spec.ObservedDim}x{spec.LatentDim(j)} (observed_dim x its latent dims)";
            foreach (double v in maps[j])
                if (!double.IsFinite(v)) return $"the map of modality {j} holds a non-finite value";
        }
        return null;
    }

    /// <summary>dim(s_j): the dims of the factors modality j observes plus private_dim.</summary>
    public int LatentDim(int modality) => maps[CheckModality(modality)].GetLength(1);

    /// <summary>Factor indices (spec order) modality j observes, in the order of their columns in W_j.</summary>
    public IReadOnlyList<int> FactorsOf(int modality) => factorsOf[CheckModality(modality)];

    /// <summary>Names of the columns of W_j: "factor[k]" for each factor dim, then "private[k]".</summary>
    public string[] LatentNames(int modality)
    {
        var names = new List<string>();
        foreach (int f in FactorsOf(modality))
            for (int k = 0; k < Spec.Factors[f].Dim; k++) names.Add($"{Spec.Factors[f].Name}[{k}]");
        for (int k = 0; k < Spec.PrivateDim; k++) names.Add($"private[{k}]");
        return names.ToArray();
    }

    /// <summary>Where factor f's values start in a row of the true latent values (factors.bin).</summary>
    public int FactorOffset(int factor) => Spec.Factors.Take(factor).Sum(f => f.Dim);

    /// <summary>Where modality j's private values start in a row of the true latent values (factors.bin).</summary>
    public int PrivateOffset(int modality) => Spec.Factors.Sum(f => f.Dim) + CheckModality(modality) * Spec.PrivateDim;

    /// <summary>
    /// Cov(x_i, x_j), ObservedDim × ObservedDim: Σ over the factors both observe of W_i[:, f] W_j[:, f]ᵀ, and for
    /// i == j the whole W_i W_iᵀ (private values too) plus noise² I.
    /// </summary>
    public double[,] Covariance(int i, int j)
    {
        CheckModality(i); CheckModality(j);
        int d = Spec.ObservedDim;
        var result = new double[d, d];
        var wi = maps[i]; var wj = maps[j];
        if (i == j)
        {
            int k = wi.GetLength(1);
            for (int a = 0; a < d; a++)
                for (int b = a; b < d; b++)
                {
                    double sum = 0;
                    for (int c = 0; c < k; c++) sum += wi[a, c] * wi[b, c];
                    result[a, b] = result[b, a] = sum;
                }
            double noise2 = Spec.Noise * Spec.Noise;
            for (int a = 0; a < d; a++) result[a, a] += noise2;
            return result;
        }
        for (int f = 0; f < Spec.Factors.Length; f++)
        {
            int ci = columnOf[i][f], cj = columnOf[j][f];
            if (ci < 0 || cj < 0) continue;
            for (int a = 0; a < d; a++)
                for (int b = 0; b < d; b++)
                {
                    double sum = 0;
                    for (int t = 0; t < Spec.Factors[f].Dim; t++) sum += wi[a, ci + t] * wj[b, cj + t];
                    result[a, b] += sum;
                }
        }
        return result;
    }

    /// <summary>
    /// The R² of the best predictor of x_output from the inputs, E[x_o | x_A] (linear, as everything is Gaussian),
    /// pooled over the output's dimensions: 1 − tr(Σ_oo − Σ_oA Σ_AA⁻¹ Σ_Ao) / tr(Σ_oo). 0 when the inputs share no
    /// factor with the output (or there are none); below 1 always, as the output's noise and private values are
    /// unpredictable.
    /// </summary>
    public double OptimalR2(IReadOnlyList<int> inputs, int output)
    {
        CheckModality(output);
        ArgumentNullException.ThrowIfNull(inputs);
        foreach (int a in inputs) CheckModality(a);
        if (inputs.Distinct().Count() != inputs.Count) throw new ArgumentException($"the inputs {{{string.Join(",", inputs)}}} list a modality twice", nameof(inputs));
        if (inputs.Contains(output)) throw new ArgumentException($"the output modality {output} is among the inputs {{{string.Join(",", inputs)}}}", nameof(inputs));
        var soo = Covariance(output, output);
        int d = Spec.ObservedDim;
        double total = 0;
        for (int a = 0; a < d; a++) total += soo[a, a];
        if (inputs.Count == 0) return 0;

        int n = inputs.Count * d;
        var saa = new double[n, n];
        var sao = new double[n, d];
        for (int p = 0; p < inputs.Count; p++)
        {
            for (int q = 0; q < inputs.Count; q++)
            {
                var block = Covariance(inputs[p], inputs[q]);
                for (int a = 0; a < d; a++)
                    for (int b = 0; b < d; b++) saa[p * d + a, q * d + b] = block[a, b];
            }
            var cross = Covariance(inputs[p], output);
            for (int a = 0; a < d; a++)
                for (int b = 0; b < d; b++) sao[p * d + a, b] = cross[a, b];
        }
        // Σ_oA Σ_AA⁻¹ Σ_Ao = YᵀY with Y = L⁻¹ Σ_Ao, Σ_AA = L Lᵀ: its trace is the explained variance.
        var l = DenseAlgebra.Cholesky(saa);
        var y = DenseAlgebra.ForwardSubstitute(l, sao);
        double explained = 0;
        foreach (double v in y) explained += v * v;
        return explained / total;
    }

    int CheckModality(int modality) => modality >= 0 && modality < Spec.Modalities ? modality
        : throw new ArgumentOutOfRangeException(nameof(modality), $"modality {modality} is outside 0..{Spec.Modalities - 1}");
}

/// <summary>Standard normal draws by the Box–Muller transform from a seeded <see cref="Random"/> (deterministic across runs).</summary>
internal sealed class Gaussian(Random random)
{
    double spare;
    bool hasSpare;

    public double Next()
    {
        if (hasSpare) { hasSpare = false; return spare; }
        double u1 = 1 - random.NextDouble(), u2 = random.NextDouble();   // u1 in (0, 1]: the log is finite
        double r = Math.Sqrt(-2 * Math.Log(u1)), angle = 2 * Math.PI * u2;
        spare = r * Math.Sin(angle); hasSpare = true;
        return r * Math.Cos(angle);
    }
}

/// <summary>The little dense linear algebra the vector model needs, in double.</summary>
internal static class DenseAlgebra
{
    /// <summary>Lower-triangular L with L Lᵀ = <paramref name="a"/> (symmetric positive definite).</summary>
    public static double[,] Cholesky(double[,] a)
    {
        int n = a.GetLength(0);
        var l = new double[n, n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++)
            {
                double sum = a[i, j];
                for (int k = 0; k < j; k++) sum -= l[i, k] * l[j, k];
                if (i == j)
                {
                    if (!(sum > 0)) throw new InvalidOperationException($"the covariance is not positive definite (pivot {sum:G3} at row {i})");
                    l[i, i] = Math.Sqrt(sum);
                }
                else l[i, j] = sum / l[j, j];
            }
        return l;
    }

    /// <summary>X with L X = <paramref name="b"/>, L lower-triangular.</summary>
    public static double[,] ForwardSubstitute(double[,] l, double[,] b)
    {
        int n = l.GetLength(0), m = b.GetLength(1);
        var x = new double[n, m];
        for (int c = 0; c < m; c++)
            for (int i = 0; i < n; i++)
            {
                double sum = b[i, c];
                for (int k = 0; k < i; k++) sum -= l[i, k] * x[k, c];
                x[i, c] = sum / l[i, i];
            }
        return x;
    }
}
