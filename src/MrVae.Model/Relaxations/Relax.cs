using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Relaxations;

/// <summary>Continuous relaxations of discrete choices used by the relation module.</summary>
public static class Relax
{
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
        var (left, right) = NeuralSortFactors(scores, tau);
        return nn.functional.softmax(left.matmul(right), dim: -1);
    }

    /// <summary>
    /// NeuralSort's logits as a product left · right of an n × 2 constant and a … × 2 × n stack:
    /// logits[…, i, j] = ((n + 1 − 2i)·s_j − Σ_k |s_j − s_k|) / τ (one n × n write, and a cheap backward).
    /// </summary>
    public static (Tensor Left, Tensor Right) NeuralSortFactors(Tensor scores, double tau)
    {
        long n = scores.shape[^1];
        // Σ_k |s_j − s_k| in O(n log n) instead of an n × n difference matrix: with v ascending and exclusive prefix
        // sums c_i = Σ_{k<i} v_k, Σ_k |v_i − v_k| = v_i (2i − n) + Σ v − 2 c_i.
        var (sorted, index) = scores.sort(-1);
        var position = arange(n, dtype: scores.dtype, device: scores.device);
        var prefix = sorted.cumsum(-1) - sorted;
        var absSumSorted = sorted * (2 * position - n) + sorted.sum(-1, keepdim: true) - 2 * prefix;
        var absDiffRowSum = zeros_like(scores).scatter(-1, index, absSumSorted);  // back to item order
        var ranks = arange(1, n + 1, dtype: scores.dtype, device: scores.device);
        var left = stack([((n + 1) - 2 * ranks) / tau, full_like(ranks, -1.0 / tau)], -1);   // n × 2
        return (left, stack([scores, absDiffRowSum], -2));                                     // … × 2 × n
    }

    /// <summary>Exact descending-sort permutation matrix of <paramref name="key"/> (… × n): row r is the one-hot of the rank-r item.</summary>
    public static Tensor HardSortPermutation(Tensor key)
        => PermutationMatrix(key.argsort(-1, descending: true), key.dtype);   // order: item at rank r

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
/// relaxed (forward and gradient of P̂). Straight-through products are a gather or scatter by the order (exact) plus
/// zero-valued corrections c − sg(c), c = P̂·sg(X) and P̂ᵀ·sg(R), that carry P̂'s gradient: the same gradients as
/// (P_hard + P̂ − sg(P̂))·X, without building the hard matrix, and with P̂ itself only inside
/// <see cref="NeuralSortGradient"/>'s backward (the relation module's cost is dominated by these … × n × n products).
/// </summary>
public sealed class SortPermutation
{
    /// <summary>P̂ (… × n × n) when relaxed.</summary>
    public Tensor? Soft { get; }
    /// <summary>Item at rank r (… × n) when straight-through.</summary>
    public Tensor? Order { get; }
    public bool Relaxed => Soft is not null;
    /// <summary>Straight-through with a gradient to record: the products need <see cref="Corrections"/>.</summary>
    public bool NeedsCorrections => scores is not null;
    readonly Tensor? scores;   // straight-through with a gradient to record: P̂'s scores, and its temperature
    readonly double tau;

    SortPermutation(Tensor? soft, Tensor? order, Tensor? scores, double tau) { Soft = soft; Order = order; this.scores = scores; this.tau = tau; }

    /// <summary>
    /// Straight-through: the descending sort of <paramref name="sortKey"/> forward, NeuralSort(<paramref name="scores"/>, τ)
    /// backward; relaxed: NeuralSort(<paramref name="scores"/>, τ) both ways.
    /// </summary>
    public static SortPermutation Create(Tensor scores, Tensor sortKey, double tau, bool relaxed)
    {
        if (relaxed) return new SortPermutation(Relax.NeuralSort(scores, tau), null, null, tau);
        bool recording = is_grad_enabled() && scores.requires_grad;
        return new SortPermutation(null, sortKey.argsort(-1, descending: true), recording ? scores : null, tau);
    }

    /// <summary>Relaxed P̂·X.</summary>
    public Tensor Apply(Tensor x) => Soft!.matmul(x);

    /// <summary>Relaxed P̂ᵀ·R.</summary>
    public Tensor ApplyTransposed(Tensor r) => Soft!.transpose(-1, -2).matmul(r);

    /// <summary>Straight-through forward value of P·X: row r is the row of X of the item at rank r.</summary>
    public Tensor Gather(Tensor x) => x.gather(-2, Order!.unsqueeze(-1).expand(x.shape));

    /// <summary>Straight-through forward value of Pᵀ·R: row c is the row of R at the rank of item c.</summary>
    public Tensor Scatter(Tensor r) => zeros_like(r).scatter(-2, Order!.unsqueeze(-1).expand(r.shape), r);

    /// <summary>
    /// The zero-valued corrections to add to <see cref="Gather"/>(X) and <see cref="Scatter"/>(R) for P̂'s gradient, from
    /// X and R's forward values: zero forward, P̂ built and used only in the backward.
    /// </summary>
    public (Tensor X, Tensor R) Corrections(Tensor x, Tensor r)
    {
        if (scores is null) throw new InvalidOperationException("no gradient is recorded for this sort");
        var corrections = NeuralSortCorrections.apply(scores, x.detach(), r.detach(), tau);
        return (corrections[0], corrections[1]);
    }

    /// <summary>The forward value of P as a matrix (… × n × n), detached: for recording the inferred structure.</summary>
    public Tensor Matrix(ScalarType dtype) => Relaxed ? Soft!.detach() : Relax.PermutationMatrix(Order!, dtype);
}
