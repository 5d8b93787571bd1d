namespace MrVae.Data;

/// <summary>
/// One generated split of vector data: per modality Count × ObservedDim values (row-major), and the true latent
/// values per tuple, Count × <see cref="VectorSpec.TrueLatentWidth"/> (every factor's dims in spec order, then
/// each modality's private dims; see <see cref="VectorModel.FactorOffset"/> and <see cref="VectorModel.PrivateOffset"/>).
/// </summary>
public sealed record VectorSplit(int Count, float[][] Values, float[] Factors)
{
    public int Modalities => Values.Length;
    /// <summary>Values per tuple of one modality (ObservedDim).</summary>
    public int Dim => Count == 0 ? 0 : Values[0].Length / Count;
    /// <summary>True latent values per tuple.</summary>
    public int FactorWidth => Count == 0 ? 0 : Factors.Length / Count;
}

/// <summary>Draws tuples from a <see cref="VectorModel"/>. Deterministic by (model, seed, streamOffset).</summary>
public static class VectorGenerator
{
    /// <param name="streamOffset">Separates the random streams of splits that share a seed (and so maps): 0 train, 1 test.</param>
    public static VectorSplit Generate(VectorModel model, int count, int seed, int streamOffset = 0)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), "need at least one tuple");
        var spec = model.Spec;
        int m = spec.Modalities, d = spec.ObservedDim, width = spec.TrueLatentWidth;
        if ((long)count * Math.Max(d, width) > Array.MaxLength)
            throw new ArgumentOutOfRangeException(nameof(count), $"{count} tuples of {Math.Max(d, width)} values are too many for one array; generate fewer tuples");
        var gauss = new Gaussian(new Random(unchecked(seed * 7_919 + 104_729 * (streamOffset + 1) + 0x7ec)));
        var values = new float[m][];
        for (int j = 0; j < m; j++) values[j] = new float[count * d];
        var factors = new float[count * width];

        // Per modality: where each column of s_j comes from in a row of true latent values.
        var source = new int[m][];
        for (int j = 0; j < m; j++)
        {
            var columns = new List<int>();
            foreach (int f in model.FactorsOf(j))
                for (int k = 0; k < spec.Factors[f].Dim; k++) columns.Add(model.FactorOffset(f) + k);
            for (int k = 0; k < spec.PrivateDim; k++) columns.Add(model.PrivateOffset(j) + k);
            source[j] = columns.ToArray();
        }
        var z = new double[width];
        for (int t = 0; t < count; t++)
        {
            for (int k = 0; k < width; k++) { z[k] = gauss.Next(); factors[t * width + k] = (float)z[k]; }
            for (int j = 0; j < m; j++)
            {
                var w = model.Maps[j];
                var cols = source[j];
                var row = values[j];
                for (int a = 0; a < d; a++)
                {
                    double sum = 0;
                    for (int c = 0; c < cols.Length; c++) sum += w[a, c] * z[cols[c]];
                    row[t * d + a] = (float)(sum + spec.Noise * gauss.Next());
                }
            }
        }
        return new VectorSplit(count, values, factors);
    }
}
