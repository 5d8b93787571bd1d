using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Relaxations;

/// <summary>Continuous relaxations of discrete choices used by the relation module.</summary>
public static class Relax
{
    /// <summary>Standard Gumbel noise −log(−log U) with U ~ Uniform(0,1), drawn from <paramref name="generator"/>.</summary>
    public static Tensor Gumbel(long[] shape, ScalarType dtype, Device device, Generator? generator)
    {
        using var u = rand(shape, dtype: dtype, device: device, generator: generator);
        // Keep U away from 0 and 1 so both logs stay finite.
        return -(-(u.clamp(1e-10, 1.0 - 1e-7)).log()).log();
    }

    /// <summary>
    /// Straight-through estimator: the forward value is <paramref name="hard"/>, the gradient is that of <paramref name="soft"/>.
    /// </summary>
    public static Tensor StraightThrough(Tensor hard, Tensor soft) => hard - soft.detach() + soft;

    /// <summary>
    /// Straight-through Gumbel-softmax over the last dimension (Jang et al. 2016): one-hot of argmax(logits + g)
    /// in the forward, gradient of softmax((logits + g)/τ). Pass <paramref name="noise"/> = null for the noiseless
    /// (evaluation) version.
    /// </summary>
    public static Tensor GumbelSoftmaxStraightThrough(Tensor logits, double tau, Tensor? noise, bool relaxed = false)
    {
        var perturbed = noise is null ? logits : logits + noise;
        var soft = nn.functional.softmax(perturbed / tau, dim: -1);
        if (relaxed) return soft;
        var index = perturbed.argmax(-1, keepdim: true);
        var hard = zeros_like(soft).scatter_(-1, index, ones_like(index, dtype: soft.dtype));
        return StraightThrough(hard, soft);
    }

    /// <summary>
    /// NeuralSort relaxation (Grover et al. 2019) of the descending-sort permutation of scores s (… × n):
    /// P̂[i, j] = softmax_j(((n + 1 − 2i)·s_j − Σ_k |s_j − s_k|) / τ), rows i = 1..n are ranks. Each row sums to 1.
    /// </summary>
    public static Tensor NeuralSort(Tensor scores, double tau)
    {
        long n = scores.shape[^1];
        var s = scores.unsqueeze(-1);                                   // … × n × 1
        var absDiffRowSum = (s - s.transpose(-1, -2)).abs().sum(-1);    // … × n : Σ_k |s_j − s_k|
        var ranks = arange(1, n + 1, dtype: scores.dtype, device: scores.device);
        var scale = (n + 1) - 2 * ranks;                                // n
        // logits[…, i, j] = scale_i · s_j − absDiffRowSum_j
        var logits = scale.unsqueeze(-1) * scores.unsqueeze(-2) - absDiffRowSum.unsqueeze(-2);
        return nn.functional.softmax(logits / tau, dim: -1);
    }

    /// <summary>Exact descending-sort permutation matrix of <paramref name="key"/> (… × n): row r is the one-hot of the rank-r item.</summary>
    public static Tensor HardSortPermutation(Tensor key)
    {
        var order = key.argsort(-1, descending: true);                 // … × n, item at rank r
        long n = key.shape[^1];
        var eye = torch.eye(n, dtype: key.dtype, device: key.device);
        return eye.index_select(0, order.flatten()).reshape([.. key.shape, n]);
    }

    /// <summary>
    /// Straight-through NeuralSort: forward is the exact descending sort of <paramref name="sortKey"/>, backward the
    /// gradient of the relaxed P̂ of <paramref name="scores"/>. The two differ only where the key adds hard masks.
    /// </summary>
    public static Tensor NeuralSortStraightThrough(Tensor scores, Tensor sortKey, double tau, bool relaxed = false)
        => relaxed ? NeuralSort(scores, tau) : StraightThrough(HardSortPermutation(sortKey), NeuralSort(scores, tau));

    /// <summary>
    /// Plackett–Luce log-probability of the first <paramref name="take"/> ranks of a ranking, masked per rank:
    /// Σ_r take_r · (w_{π_r} − logsumexp_{l ≥ r} w_{π_l}). <paramref name="permutation"/> (… × n × n) maps ranks to items;
    /// <paramref name="take"/> (… × n) weights each rank (the filled mask t).
    /// </summary>
    public static Tensor PlackettLuceLogProb(Tensor scores, Tensor permutation, Tensor take)
    {
        // Sorted scores by rank: w_sorted[r] = Σ_j P[r, j] w_j (exact for a hard permutation).
        var sorted = permutation.matmul(scores.unsqueeze(-1)).squeeze(-1);          // … × n
        // logsumexp over the suffix l ≥ r: reverse, cumulative logsumexp, reverse back.
        var suffix = sorted.flip(-1).logcumsumexp(-1).flip(-1);
        return ((sorted - suffix) * take).sum(-1);
    }
}
