using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Evaluation;

/// <summary>
/// Fréchet distance between Gaussians fitted to feature sets:
/// FD = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½), in float64. Square roots of symmetric positive
/// semi-definite matrices come from their eigendecomposition (eigh), with round-off negatives clamped to 0.
/// Called FD, not FID: the features come from the project's own digit classifiers, not Inception.
/// </summary>
public static class Frechet
{
    /// <summary>The PSD square root of a symmetric matrix: V diag(√max(λ,0)) Vᵀ.</summary>
    public static Tensor SqrtPsd(Tensor symmetric)
    {
        using var scope = NewDisposeScope();
        var s = symmetric.to(float64);
        s = 0.5 * (s + s.T);
        var (values, vectors) = linalg.eigh(s);
        var root = vectors.matmul(diag(values.clamp_min(0).sqrt())).matmul(vectors.T);
        return root.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// tr((Σ₁^½ Σ₂ Σ₁^½)^½) = Σ √λ of the symmetric product, which equals tr((Σ₁Σ₂)^½). Pass Σ₁^½ as
    /// <paramref name="root1"/> when it is known (one reference distribution against many).
    /// </summary>
    public static double TraceSqrtProduct(Tensor cov1, Tensor cov2, Tensor? root1 = null)
    {
        using var scope = NewDisposeScope();
        root1 ??= SqrtPsd(cov1);
        var product = root1.matmul(cov2.to(float64)).matmul(root1);
        product = 0.5 * (product + product.T);
        return linalg.eigvalsh(product).clamp_min(0).sqrt().sum().ToDouble();
    }

    /// <param name="root1">Σ₁^½ if already computed (see <see cref="SqrtPsd"/>).</param>
    public static double Distance(Tensor mean1, Tensor cov1, Tensor mean2, Tensor cov2, Tensor? root1 = null)
    {
        using var scope = NewDisposeScope();
        var diff = mean1.to(float64) - mean2.to(float64);
        double meanTerm = diff.dot(diff).ToDouble();
        double traces = cov1.to(float64).trace().ToDouble() + cov2.to(float64).trace().ToDouble();
        return meanTerm + traces - 2 * TraceSqrtProduct(cov1, cov2, root1);
    }

    /// <summary>FD between two feature sets (N × F each).</summary>
    public static double Distance(Tensor features1, Tensor features2)
    {
        var a = new MomentAccumulator(features1.shape[1]); a.Add(features1);
        var b = new MomentAccumulator(features2.shape[1]); b.Add(features2);
        return Distance(a, b);
    }

    public static double Distance(MomentAccumulator a, MomentAccumulator b)
    {
        using var scope = NewDisposeScope();
        var (m1, c1) = a.Moments();
        var (m2, c2) = b.Moments();
        return Distance(m1, c1, m2, c2);
    }
}

/// <summary>Running sums of features (float64) for their mean and unbiased covariance, batch by batch.</summary>
public sealed class MomentAccumulator : IDisposable
{
    readonly Tensor sum, outer;
    public long Count { get; private set; }
    public long Width { get; }

    public MomentAccumulator(long width)
    {
        Width = width;
        sum = zeros(width, dtype: float64);
        outer = zeros(width, width, dtype: float64);
    }

    public void Add(Tensor features)
    {
        if (features.shape.Length != 2 || features.shape[1] != Width)
            throw new ArgumentException($"expected N x {Width} features, got [{string.Join(", ", features.shape)}]");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var f = features.detach().to(float64, CPU);
        sum.add_(f.sum([0L]));
        outer.add_(f.T.matmul(f));
        Count += features.shape[0];
    }

    /// <summary>Mean (F) and covariance (F × F, denominator N − 1).</summary>
    public (Tensor Mean, Tensor Covariance) Moments()
    {
        if (Count < 2) throw new InvalidOperationException($"a covariance needs at least 2 samples, have {Count}");
        var mean = sum / Count;
        var cov = (outer - Count * mean.outer(mean)) / (Count - 1);
        return (mean, cov);
    }

    public void Dispose() { sum.Dispose(); outer.Dispose(); }
}
