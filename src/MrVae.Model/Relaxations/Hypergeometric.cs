using static TorchSharp.torch;

namespace MrVae.Model.Relaxations;

/// <summary>Univariate (central) hypergeometric marginals of the subspace-size prior (model.md, Definition 1).</summary>
public static class Hypergeometric
{
    /// <summary>log C(n, k) via lgamma, in double precision.</summary>
    public static double LogChoose(double n, double k)
    {
        if (k < 0 || k > n) return double.NegativeInfinity;
        return LogGamma(n + 1) - LogGamma(k + 1) - LogGamma(n - k + 1);
    }

    /// <summary>
    /// log P(X = k) for k = 0..draws when drawing <paramref name="draws"/> balls without replacement from
    /// <paramref name="population"/> balls, <paramref name="successes"/> of which have the colour of interest.
    /// Impossible values get −∞.
    /// </summary>
    public static double[] LogPmf(int population, int successes, int draws)
    {
        if (successes > population || draws > population || population < 0 || successes < 0 || draws < 0)
            throw new ArgumentException($"invalid hypergeometric parameters N={population}, K={successes}, n={draws}");
        var result = new double[draws + 1];
        double logDenominator = LogChoose(population, draws);
        for (int k = 0; k <= draws; k++)
            result[k] = LogChoose(successes, k) + LogChoose(population - successes, draws - k) - logDenominator;
        return result;
    }

    /// <summary>
    /// KL(Cat(softmax(logits)) ‖ H) summed over the last dimension, computed stably from log-probabilities.
    /// Categories with −∞ (or masked, very negative) logits contribute 0.
    /// </summary>
    public static Tensor KlCategorical(Tensor logits, Tensor logPrior)
    {
        var logQ = TorchSharp.torch.nn.functional.log_softmax(logits, dim: -1);
        var q = logQ.exp();
        return (q * (logQ - logPrior)).sum(-1);
    }

    // Lanczos approximation (g = 7, n = 9): |relative error| < 1e-13 for x > 0.
    static readonly double[] Lanczos =
    {
        0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
        12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
    };

    public static double LogGamma(double x)
    {
        if (x < 0.5) return Math.Log(Math.PI / Math.Abs(Math.Sin(Math.PI * x))) - LogGamma(1 - x);
        x -= 1;
        double a = Lanczos[0];
        double t = x + 7.5;
        for (int i = 1; i < 9; i++) a += Lanczos[i] / (x + i);
        return 0.5 * Math.Log(2 * Math.PI) + (x + 0.5) * Math.Log(t) - t + Math.Log(a);
    }
}
