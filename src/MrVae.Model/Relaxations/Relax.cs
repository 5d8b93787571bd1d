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
    /// The correction soft − sg(soft) is exactly zero in the forward, so the forward value is exactly <paramref name="hard"/>
    /// (hard − sg(soft) + soft would round, e.g. 1 − 0.7 + 0.7 ≠ 1 in float32).
    /// </summary>
    public static Tensor StraightThrough(Tensor hard, Tensor soft) => hard + (soft - soft.detach());

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
        // Σ_k |s_j − s_k| in O(n log n) instead of an n × n difference matrix: with v ascending and exclusive prefix
        // sums c_i = Σ_{k<i} v_k, Σ_k |v_i − v_k| = v_i (2i − n) + Σ v − 2 c_i.
        var (sorted, index) = scores.sort(-1);
        var position = arange(n, dtype: scores.dtype, device: scores.device);
        var prefix = sorted.cumsum(-1) - sorted;
        var absSumSorted = sorted * (2 * position - n) + sorted.sum(-1, keepdim: true) - 2 * prefix;
        var absDiffRowSum = zeros_like(scores).scatter(-1, index, absSumSorted);  // back to item order
        // logits[…, i, j] = ((n + 1 − 2i)·s_j − Σ_k |s_j − s_k|) / τ as one batched product of an n × 2 constant with a
        // 2 × n stack (one n × n write, and a cheap backward), then the row softmax.
        var ranks = arange(1, n + 1, dtype: scores.dtype, device: scores.device);
        var left = stack([((n + 1) - 2 * ranks) / tau, full_like(ranks, -1.0 / tau)], -1);   // n × 2
        var right = stack([scores, absDiffRowSum], -2);                                          // … × 2 × n
        return nn.functional.softmax(left.matmul(right), dim: -1);
    }

    /// <summary>Exact descending-sort permutation matrix of <paramref name="key"/> (… × n): row r is the one-hot of the rank-r item.</summary>
    public static Tensor HardSortPermutation(Tensor key)
    {
        return PermutationMatrix(key.argsort(-1, descending: true), key.dtype);   // order: item at rank r
    }

    /// <summary>Exact descending-sort permutation matrix from the item order (… × n, item at rank r).</summary>
    public static Tensor PermutationMatrix(Tensor order, ScalarType dtype)
    {
        long n = order.shape[^1];
        var eye = torch.eye(n, dtype: dtype, device: order.device);
        return eye.index_select(0, order.flatten()).reshape([.. order.shape, n]);
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
        // Sorted scores by rank: w_sorted[r] = Σ_j P[r, j] w_j (exact for a hard permutation).
        => PlackettLuceLogProbSorted(permutation.matmul(scores.unsqueeze(-1)).squeeze(-1), take);

    /// <summary>As <see cref="PlackettLuceLogProb"/>, from the scores already in rank order (… × n).</summary>
    public static Tensor PlackettLuceLogProbSorted(Tensor sorted, Tensor take)
    {
        // logsumexp over the suffix l ≥ r: reverse, cumulative logsumexp, reverse back.
        var suffix = sorted.flip(-1).logcumsumexp(-1).flip(-1);
        return ((sorted - suffix) * take).sum(-1);
    }
}

/// <summary>
/// A sort permutation P over the last dimension that is only used through the products P·X and Pᵀ·R (X, R: … × n × k):
/// straight-through (forward: the exact sort <see cref="Order"/>; gradient: that of the relaxed NeuralSort P̂) or
/// relaxed (forward and gradient of P̂). The straight-through products never build an n × n matrix besides P̂ itself:
/// the forward is a gather or scatter by the order (exact), plus the correction P̂·sg(X) − sg(P̂·sg(X)), which is exactly
/// zero in the forward and carries P̂'s gradient — the same gradients as (P_hard + P̂ − sg(P̂))·X, at a fraction of the
/// memory traffic (the relation module's cost is dominated by these … × n × n tensors).
/// </summary>
public sealed class SortPermutation
{
    /// <summary>P̂ (… × n × n); null for a straight-through sort when no gradient is recorded (nothing needs it).</summary>
    public Tensor? Soft { get; }
    /// <summary>Item at rank r (… × n); null when relaxed.</summary>
    public Tensor? Order { get; }
    public bool Relaxed { get; }

    SortPermutation(Tensor? soft, Tensor? order, bool relaxed) { Soft = soft; Order = order; Relaxed = relaxed; }

    /// <summary>
    /// Straight-through: the descending sort of <paramref name="sortKey"/> forward, NeuralSort(<paramref name="scores"/>, τ)
    /// backward; relaxed: NeuralSort(<paramref name="scores"/>, τ) both ways.
    /// </summary>
    public static SortPermutation Create(Tensor scores, Tensor sortKey, double tau, bool relaxed)
    {
        if (relaxed) return new SortPermutation(Relax.NeuralSort(scores, tau), null, true);
        var order = sortKey.argsort(-1, descending: true);
        var soft = is_grad_enabled() && scores.requires_grad ? Relax.NeuralSort(scores, tau) : null;
        return new SortPermutation(soft, order, false);
    }

    /// <summary>P·X: row r of the result is the row of X of the item at rank r.</summary>
    public Tensor Apply(Tensor x)
    {
        if (Relaxed) return Soft!.matmul(x);
        var hard = x.gather(-2, Order!.unsqueeze(-1).expand(x.shape));
        if (Soft is null) return hard;
        var correction = Soft.matmul(x.detach());
        return hard + (correction - correction.detach());
    }

    /// <summary>Pᵀ·R: row c of the result is the row of R at the rank of item c.</summary>
    public Tensor ApplyTransposed(Tensor r)
    {
        if (Relaxed) return Soft!.transpose(-1, -2).matmul(r);
        var hard = zeros_like(r).scatter(-2, Order!.unsqueeze(-1).expand(r.shape), r);
        if (Soft is null) return hard;
        var correction = Soft.transpose(-1, -2).matmul(r.detach());
        return hard + (correction - correction.detach());
    }

    /// <summary>The forward value of P as a matrix (… × n × n), detached: for recording the inferred structure.</summary>
    public Tensor Matrix(ScalarType dtype) => Relaxed ? Soft!.detach() : Relax.PermutationMatrix(Order!, dtype);
}
