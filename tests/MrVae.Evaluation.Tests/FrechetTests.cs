using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Evaluation.Tests;

public sealed class FrechetTests
{
    static Tensor Vec(params double[] v) => tensor(v, dtype: float64);
    static Tensor Diag(params double[] v) => diag(Vec(v));

    static Tensor RandomOrthogonal(int n, Generator gen)
    {
        var (q, _) = linalg.qr(randn([n, n], dtype: float64, generator: gen));
        return q;
    }

    [Fact]
    public void DiagonalCovariancesMatchTheClosedForm()
    {
        // FD = |mu1 - mu2|^2 + sum_k (sqrt(a_k) - sqrt(b_k))^2 for diagonal covariances.
        double[] a = [1, 4, 9, 0.25], b = [4, 1, 9, 2.25];
        var mu1 = Vec(0, 1, 2, 3); var mu2 = Vec(1, 1, 0, 3);
        double expected = 1 + 0 + 4 + 0 + a.Zip(b).Sum(p => Math.Pow(Math.Sqrt(p.First) - Math.Sqrt(p.Second), 2));
        Assert.Equal(expected, Frechet.Distance(mu1, Diag(a), mu2, Diag(b)), 10);
        Assert.Equal(8.0, expected, 10);   // by hand: means 1 + 4, roots (1-2)² + (2-1)² + 0 + (0.5-1.5)²
    }

    [Fact]
    public void RotatedCommutingCovariancesKeepTheDiagonalValue()
    {
        var gen = new Generator(5);
        var q = RandomOrthogonal(6, gen);
        double[] a = [0.5, 1, 2, 3, 4, 5], b = [5, 4, 3, 2, 1, 0.5];
        var c1 = q.matmul(Diag(a)).matmul(q.T);
        var c2 = q.matmul(Diag(b)).matmul(q.T);
        var mu = zeros(6, dtype: float64);
        double expected = a.Zip(b).Sum(p => Math.Pow(Math.Sqrt(p.First) - Math.Sqrt(p.Second), 2));
        Assert.Equal(expected, Frechet.Distance(mu, c1, mu, c2), 9);
    }

    [Fact]
    public void NonCommutingTwoByTwoMatchesTheClosedForm()
    {
        // For 2x2 PSD S1, S2: tr((S1 S2)^(1/2)) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2)).
        var s1 = tensor(new double[,] { { 2.0, 0.6 }, { 0.6, 1.0 } });
        var s2 = tensor(new double[,] { { 1.0, -0.4 }, { -0.4, 3.0 } });
        double tr12 = s1.matmul(s2).trace().ToDouble();
        double det1 = 2.0 * 1.0 - 0.36, det2 = 3.0 - 0.16;
        double traceSqrt = Math.Sqrt(tr12 + 2 * Math.Sqrt(det1 * det2));
        double expected = 0.5 * 0.5 + 3.0 + 4.0 - 2 * traceSqrt;
        Assert.Equal(traceSqrt, Frechet.TraceSqrtProduct(s1, s2), 10);
        Assert.Equal(expected, Frechet.Distance(Vec(0.5, 0), s1, Vec(0, 0), s2), 10);
        Assert.Equal(Frechet.Distance(Vec(0.5, 0), s1, Vec(0, 0), s2), Frechet.Distance(Vec(0, 0), s2, Vec(0.5, 0), s1), 10);
    }

    [Fact]
    public void IdenticalGaussiansAreAtZeroAndAShiftCostsItsSquaredNorm()
    {
        var gen = new Generator(11);
        var a = randn([8, 8], dtype: float64, generator: gen);
        var cov = a.matmul(a.T) + 0.1 * eye(8, dtype: float64);
        var mu = randn([8], dtype: float64, generator: gen);
        Assert.Equal(0, Frechet.Distance(mu, cov, mu, cov), 8);
        Assert.Equal(9.0, Frechet.Distance(mu, cov, mu + Vec(3, 0, 0, 0, 0, 0, 0, 0), cov), 8);
    }

    [Fact]
    public void SquareRootSquaresBackAndSingularMatricesWork()
    {
        var gen = new Generator(2);
        var a = randn([5, 3], dtype: float64, generator: gen);
        var psd = a.matmul(a.T);   // rank 3 of 5: two zero eigenvalues
        var root = Frechet.SqrtPsd(psd);
        Assert.True(root.matmul(root).allclose(psd, rtol: 1e-8, atol: 1e-8));
        Assert.True(double.IsFinite(Frechet.Distance(zeros(5, dtype: float64), psd, zeros(5, dtype: float64), eye(5, dtype: float64))));
    }

    [Fact]
    public void SampleMomentsApproachTheClosedForm()
    {
        // 1-D Gaussians: FD = (mu1 - mu2)^2 + (s1 - s2)^2 = 4 + 1; from 200k samples each, batchwise accumulation.
        var gen = new Generator(3);
        using var a = new MomentAccumulator(1);
        using var b = new MomentAccumulator(1);
        for (int k = 0; k < 4; k++)
        {
            a.Add(randn([50_000, 1], dtype: float64, generator: gen) * 1 + 0);
            b.Add(randn([50_000, 1], dtype: float64, generator: gen) * 2 + 2);
        }
        var (ma, ca) = a.Moments(); var (mb, cb) = b.Moments();
        Assert.Equal((0.0, 1.0, 2.0, 4.0), (Math.Round(ma.ToDouble(), 1), Math.Round(ca.ToDouble(), 1), Math.Round(mb.ToDouble(), 1), Math.Round(cb.ToDouble(), 1)));
        Assert.Equal(5.0, Frechet.Distance(a, b), 1);
        var x = randn([300, 4], dtype: float64, generator: gen);
        using var c = new MomentAccumulator(4);
        c.Add(x.narrow(0, 0, 100)); c.Add(x.narrow(0, 100, 200));
        var (mean, covariance) = c.Moments();
        Assert.True(mean.allclose(x.mean([0]), atol: 1e-12));
        Assert.True(covariance.allclose(x.T.cov(), atol: 1e-10));
    }
}
