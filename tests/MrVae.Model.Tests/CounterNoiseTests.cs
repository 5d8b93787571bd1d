using System.Numerics;
using MrVae.Model.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

public class CounterNoiseTests
{
    /// <summary>Sequential SplitMix64 (state += γ, output = mix(state)): the counter form must give the same words.</summary>
    static ulong[] SequentialSplitMix(ulong seed, int count)
    {
        var result = new ulong[count];
        ulong state = seed;
        for (int i = 0; i < count; i++)
        {
            unchecked
            {
                state += 0x9E3779B97F4A7C15;
                ulong z = state;
                z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
                z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
                result[i] = z ^ (z >> 31);
            }
        }
        return result;
    }

    [Fact]
    public void BitsAreSplitMix64AtTheIndex()
    {
        // Published first outputs of SplitMix64 seeded with 1234567.
        Assert.Equal([6457827717110365317UL, 3203168211198807973UL, 9817491932198370423UL], SequentialSplitMix(1234567, 3));
        var noise = new CounterNoise(0xC0FFEE);
        var expected = SequentialSplitMix(0xC0FFEE, 300);
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], noise.Bits(i));
    }

    [Fact]
    public void VectorPathsEqualTheScalarFormulasAtAnyOffset()
    {
        var noise = new CounterNoise(42).Stream(7);
        const int n = 1003, offset = 5;   // not a multiple of any vector width: the tail takes the scalar path
        var uniform = new float[n]; var gumbel = new float[n]; var normal = new float[n];
        noise.Uniform(uniform, offset); noise.Gumbel(gumbel, offset); noise.Normal(normal, offset);
        for (int i = 0; i < n; i++)
        {
            long index = offset + i;
            double u = ((noise.Bits(index) >> 41) * 2.0 + 1) / (1 << 24);
            Assert.Equal(u, uniform[i]);
            Assert.True(u > 0 && u < 1);
            Assert.Equal(-Math.Log(-Math.Log(u)), gumbel[i], 4e-6 * Math.Max(1, Math.Abs(gumbel[i])));
            double u1 = ((noise.Bits(2 * index) >> 41) * 2.0 + 1) / (1 << 24), u2 = ((noise.Bits(2 * index + 1) >> 41) * 2.0 + 1) / (1 << 24);
            Assert.Equal(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2), normal[i], 2e-5);
        }
        // A fill from another offset reads the same values where they overlap.
        var later = new float[100];
        noise.Gumbel(later, offset + 17);
        Assert.Equal(gumbel.AsSpan(17, 100).ToArray(), later);
    }

    [Fact]
    public void TensorsHoldValueIAtFlatIndexIInBothPrecisions()
    {
        var noise = new CounterNoise(9);
        using var single = noise.Gumbel([3, 5, 7], ScalarType.Float32);
        using var dbl = noise.Gumbel([3, 5, 7], ScalarType.Float64);
        using var normal = noise.Normal([4, 9], ScalarType.Float64);
        Assert.Equal(new long[] { 3, 5, 7 }, single.shape);
        Assert.Equal(ScalarType.Float64, dbl.dtype);
        var s = single.data<float>().ToArray(); var d = dbl.data<double>().ToArray(); var z = normal.data<double>().ToArray();
        for (int i = 0; i < s.Length; i++)
        {
            double u = ((noise.Bits(i) >> 12) * 2.0 + 1) / Math.Pow(2, 53);
            Assert.Equal(-Math.Log(-Math.Log(u)), d[i], 12);
            Assert.Equal(d[i], s[i], 5e-5 * Math.Max(1, Math.Abs(d[i])));   // float32 keeps 23 of the 52 bits
        }
        for (int i = 0; i < z.Length; i++)
        {
            double u1 = ((noise.Bits(2 * i) >> 12) * 2.0 + 1) / Math.Pow(2, 53), u2 = ((noise.Bits(2 * i + 1) >> 12) * 2.0 + 1) / Math.Pow(2, 53);
            Assert.Equal(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2), z[i], 12);
        }
    }

    /// <summary>
    /// A tensor filled in chunks on several threads holds, bit for bit, what one pass over one span gives (float32:
    /// vector and scalar paths round differently, so this also checks that the same values take the same path).
    /// </summary>
    [Fact]
    public void ChunkedParallelFillsEqualOnePass()
    {
        var noise = new CounterNoise(21);
        const int count = 300_007;   // five chunks and an odd tail
        var gumbel = new float[count]; noise.Gumbel(gumbel, 0);
        var normal = new float[count]; noise.Normal(normal, 0);
        var gumbel64 = new double[count]; noise.Gumbel(gumbel64, 0);
        int workers = CounterNoise.FillWorkers;
        CounterNoise.FillWorkers = 4;   // the parallel path on any machine (2 cores here run one pass by default)
        Tensor g, n, g64;
        try
        {
            g = noise.Gumbel([count], ScalarType.Float32);
            n = noise.Normal([count], ScalarType.Float32);
            g64 = noise.Gumbel([count], ScalarType.Float64);
        }
        finally { CounterNoise.FillWorkers = workers; }
        Assert.Equal(gumbel, g.data<float>().ToArray());
        Assert.Equal(normal, n.data<float>().ToArray());
        Assert.Equal(gumbel64, g64.data<double>().ToArray());
        foreach (var t in new[] { g, n, g64 }) t.Dispose();
    }

    /// <summary>Kolmogorov–Smirnov statistic of <paramref name="values"/> against <paramref name="cdf"/>.</summary>
    static double KolmogorovSmirnov(float[] values, Func<double, double> cdf)
    {
        var sorted = values.Select(v => (double)v).Order().ToArray();
        double worst = 0;
        for (int i = 0; i < sorted.Length; i++)
        {
            double f = cdf(sorted[i]);
            worst = Math.Max(worst, Math.Max(Math.Abs(f - (double)i / sorted.Length), Math.Abs((double)(i + 1) / sorted.Length - f)));
        }
        return worst;
    }

    [Fact]
    public void DrawsFollowTheirDistributionsAndStreamsAreUncorrelated()
    {
        const int n = 200_000;
        // KS critical value at α = 0.001 is 1.95/√n; a broken generator (a lane repeated, a shifted transform) is far beyond.
        double critical = 1.95 / Math.Sqrt(n);
        foreach (ulong key in new ulong[] { 1, 0xDEADBEEF, ulong.MaxValue })
        {
            var noise = new CounterNoise(key);
            var u = new float[n]; var g = new float[n]; var z = new float[n];
            noise.Stream(0).Uniform(u, 0); noise.Stream(1).Gumbel(g, 0); noise.Stream(2).Normal(z, 0);
            Assert.True(KolmogorovSmirnov(u, x => Math.Clamp(x, 0, 1)) < critical, "uniform");
            Assert.True(KolmogorovSmirnov(g, x => Math.Exp(-Math.Exp(-x))) < critical, "Gumbel");
            // Normal: moments and the one- and two-σ masses (0.6827, 0.9545), each within ~5 standard errors.
            double mean = z.Average(v => (double)v), variance = z.Average(v => (double)v * v) - mean * mean;
            Assert.InRange(mean, -5 / Math.Sqrt(n), 5 / Math.Sqrt(n));
            Assert.InRange(variance, 1 - 5 * Math.Sqrt(2.0 / n), 1 + 5 * Math.Sqrt(2.0 / n));
            Assert.InRange(z.Count(v => Math.Abs(v) < 1) / (double)n, 0.6827 - 0.0053, 0.6827 + 0.0053);
            Assert.InRange(z.Count(v => Math.Abs(v) < 2) / (double)n, 0.9545 - 0.0024, 0.9545 + 0.0024);
            // Gumbel mean is the Euler–Mascheroni constant, its variance π²/6.
            double gm = g.Average(v => (double)v);
            Assert.InRange(gm, 0.5772 - 5 * 1.28 / Math.Sqrt(n), 0.5772 + 5 * 1.28 / Math.Sqrt(n));
            // Neighbours in a stream and the same index in two streams: correlation within 5/√n of 0.
            double Correlation(float[] a, float[] b, int lag)
            {
                int m = a.Length - lag;
                double ma = 0, mb = 0; for (int i = 0; i < m; i++) { ma += a[i]; mb += b[i + lag]; }
                ma /= m; mb /= m;
                double c = 0, va = 0, vb = 0;
                for (int i = 0; i < m; i++) { c += (a[i] - ma) * (b[i + lag] - mb); va += (a[i] - ma) * (a[i] - ma); vb += (b[i + lag] - mb) * (b[i + lag] - mb); }
                return c / Math.Sqrt(va * vb);
            }
            var u2 = new float[n]; noise.Stream(3).Uniform(u2, 0);
            Assert.InRange(Correlation(u, u, 1), -5 / Math.Sqrt(n), 5 / Math.Sqrt(n));
            Assert.InRange(Correlation(u, u, Vector<float>.Count / 2), -5 / Math.Sqrt(n), 5 / Math.Sqrt(n));
            Assert.InRange(Correlation(u, u2, 0), -5 / Math.Sqrt(n), 5 / Math.Sqrt(n));
        }
    }

    [Fact]
    public void KeysComeFromTheGeneratorInOrder()
    {
        var a = new Generator(5); var b = new Generator(5);
        var first = CounterNoise.From(a); var second = CounterNoise.From(a);
        Assert.Equal(first, CounterNoise.From(b));
        Assert.NotEqual(first, second);
        Assert.Equal(second, CounterNoise.From(b));
    }
}
