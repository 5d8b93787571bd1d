using MrVae.Model.Numerics;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using MrVae.Model.Relaxations;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Objectives;

/// <summary>
/// One view's draws and constants for <see cref="SubsetChain"/>, and the discrete outcomes its forward fills in.
/// </summary>
public sealed class SubsetChainSetup
{
    public required SubsetFamily Family { get; init; }
    /// <summary>log H_A(k) per subset (S × (D+1)).</summary>
    public required double[][] LogPrior { get; init; }
    public required Tensor Available { get; init; }          // B × M, 0/1
    public double TakenPenalty { get; init; }
    public double TauSize { get; init; }
    public double TauSelection { get; init; }
    /// <summary>Gumbel noise of the sizes (B × S × (D+1)) and of the selections (B × P × D); null without noise.</summary>
    public Tensor? SizeNoise { get; init; }
    public Tensor? SelectionNoise { get; init; }
    /// <summary>Standard normal draws of the subspace samples (B × S × D); null for the posterior means.</summary>
    public Tensor? Eps { get; init; }

    /// <summary>
    /// Whether the forward keeps what the backward needs (its tape, ~45 KB per sample at D = 64, M = 5). Without it the
    /// chain has no backward; the objective sets it false where no gradient can follow (evaluation under no_grad).
    /// </summary>
    public bool Record { get; init; } = true;

    /// <summary>n_A per sample and subset (B × S), set by the forward.</summary>
    public Tensor? Sizes { get; internal set; }
    /// <summary>Item at rank r of every (subset, member) pair's hard sort (B × P × D, int32), set by the forward.</summary>
    public Tensor? Orders { get; internal set; }
}

/// <summary>
/// mrVAE's chain over the shared subsets (model.md §2–3; <see cref="MrVaeObjective"/> holds the reference with libtorch
/// ops): sizes n_A (straight-through Gumbel-softmax within the members' remaining capacity), hard sorts with the
/// straight-through NeuralSort gradient, products of experts of the selected factors, the size, selection and shared KL
/// terms, and the members' free masks and shared contributions, as one autograd function whose forward and backward
/// are a CPU kernel per sample. The chain is sequential over subsets (each takes factors from the ones before it) but
/// independent across samples: a sample's whole chain lives in a few kilobytes of cache, where the op-by-op version
/// streamed ~60 batch-wide tensors per subset through memory, forward and backward. Same values and gradients as the
/// reference (a test checks both in float64).
/// </summary>
public static class SubsetChain
{
    /// <summary>
    /// Whether the kernel can run these inputs: float32/float64, straight-through (not relaxed). It runs on the CPU
    /// only; <see cref="Apply"/> takes CPU tensors, and a caller on another device copies to it and back.
    /// </summary>
    public static bool Supports(Tensor t, bool relaxed)
        => !relaxed && (t.dtype == ScalarType.Float32 || t.dtype == ScalarType.Float64);

    /// <summary>
    /// Free masks (B × M × D), shared contributions (B × M × D) and the per-sample KL terms (B each) of the size
    /// posteriors, the selections and the shared subspaces, from the posteriors' means and variances (B × M × D), the
    /// size logits (B × S × (D+1)) and the selection scores (B × P × D).
    /// <para>
    /// The backward comes in two autograd nodes. The chain's node gives ∂L/∂μ and ∂L/∂σ² (the products of experts'
    /// gradients, a few ms); the size logits and scores reach it only through <c>ParameterLink</c>, a token whose node
    /// runs the rest (the free masks' gradient back through the subsets, Plackett–Luce, NeuralSort, the sizes: most of
    /// the backward's work) when the token's gradient arrives. Nothing of that rest reaches μ or σ²: the sorts and sizes
    /// are hard in the forward, so their straight-through gradients go to the logits and scores alone. A caller whose
    /// networks read sg(z) can therefore stop a backward at the token (the members' gradients do not wait for the
    /// rest) and run the rest later from it; one backward over everything runs both nodes with the same numbers.
    /// ParameterLink is null when neither the logits nor the scores need a gradient, or without a backward.
    /// </para>
    /// </summary>
    public static (Tensor Free, Tensor Shared, Tensor KlSize, Tensor KlSelection, Tensor KlShared, Tensor? ParameterLink) Apply(
        Tensor mu, Tensor var, Tensor sizeLogits, Tensor scores, SubsetChainSetup setup)
    {
        var handoff = new ChainBackwardHandoff();
        bool parameters = setup.Record && is_grad_enabled() && (sizeLogits.requires_grad || scores.requires_grad);
        var link = parameters ? ChainParameterFunction.apply(sizeLogits, scores, handoff)[0] : null;
        using var noLink = link is null ? empty(0, dtype: mu.dtype) : null;
        var outputs = SubsetChainFunction.apply(mu, var, link ?? noLink!, sizeLogits.detach(), scores.detach(), setup, handoff);
        return (outputs[0], outputs[1], outputs[2], outputs[3], outputs[4], link);
    }

    internal static Span<T> Data<T>(Tensor t) where T : unmanaged => t.numel() == 0 ? default : MemoryMarshal.Cast<byte, T>(t.bytes);
}

/// <summary>
/// What the chain's node hands to <see cref="ChainParameterFunction"/>'s node when its backward has run: the forward's
/// saved tensors and the upstream gradients, for the logits' and scores' part of the backward.
/// </summary>
sealed class ChainBackwardHandoff
{
    public SubsetChainSetup? Setup;
    public Tensor[]? Saved, Upstream;

    /// <summary>Takes the tensors over (out of every dispose scope: the parameters' part may run after the step's scope ends).</summary>
    public void Give(SubsetChainSetup setup, Tensor[] saved, Tensor[] upstream)
    {
        Release();
        foreach (var t in saved.Concat(upstream)) t.DetachFromDisposeScope();
        (Setup, Saved, Upstream) = (setup, saved, upstream);
    }

    public void Release()
    {
        foreach (var t in (Saved ?? []).Concat(Upstream ?? [])) t.Dispose();
        (Saved, Upstream) = (null, null);
    }
}

/// <summary>
/// The chain's node: its forward is the whole chain; its backward gives ∂L/∂μ and ∂L/∂σ², and hands the rest to the
/// parameter link's node (see <see cref="SubsetChain.Apply"/>). Inputs: μ, σ², the link (or an empty tensor), the
/// logits' and scores' values (detached: their gradient goes through the link), the setup, the handoff.
/// </summary>
sealed class SubsetChainFunction : autograd.MultiTensorFunction<SubsetChainFunction>
{
    public override string Name => nameof(SubsetChainFunction);

    public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (mu, var, link, sizeLogits, scores) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (Tensor)vars[3], (Tensor)vars[4]);
        var (setup, handoff) = ((SubsetChainSetup)vars[5], (ChainBackwardHandoff)vars[6]);
        var inputs = Inputs(mu, var, sizeLogits, scores, setup);
        long batch = mu.shape[0]; int m = setup.Family.Modalities, d = (int)mu.shape[2];
        var free = empty(batch, m, d, dtype: mu.dtype);
        var shared = empty(batch, m, d, dtype: mu.dtype);
        var kl = empty(3, batch, dtype: mu.dtype);
        var sizes = empty(batch, setup.Family.Subsets.Count, dtype: mu.dtype);
        var orders = empty(batch, setup.Family.PairCount, d, dtype: ScalarType.Int32);
        // The tape: what each sample's backward needs from its forward (free masks before each pair, the subspaces'
        // posteriors, the sizes' softmax), written by the forward instead of recomputed by the backward. Only when a
        // backward can follow (setup.Record): evaluation does not pay for it.
        var tape = setup.Record ? empty(batch, SubsetChainKernel<float>.TapeLength(setup.Family, d), dtype: mu.dtype) : empty(0, dtype: mu.dtype);
        var outputs = new[] { free, shared, kl, sizes, orders, tape };
        if (mu.dtype == ScalarType.Float32) new SubsetChainKernel<float>(setup, d).Forward(inputs, outputs);
        else new SubsetChainKernel<double>(setup, d).Forward(inputs, outputs);
        setup.Sizes = sizes; setup.Orders = orders;

        // Everything the backward reads goes through save_for_backward: the step's dispose scope may end before it.
        ctx.save_for_backward([.. inputs, orders, tape]);
        ctx.save_data("setup", setup);
        ctx.save_data("handoff", handoff);
        ctx.save_data("link", link.requires_grad ? link.dtype : (ScalarType?)null);
        var result = new List<Tensor> { free, shared, kl[0], kl[1], kl[2] };
        return result;
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> grads)
    {
        var saved = ctx.get_saved_variables().ToArray();
        var setup = (SubsetChainSetup)ctx.get_data("setup");
        var handoff = (ChainBackwardHandoff)ctx.get_data("handoff");
        var link = (ScalarType?)ctx.get_data("link");
        var (inputs, orders, tape) = (saved.Take(8).ToArray(), saved[8], saved[9]);
        if (tape.numel() == 0) throw new InvalidOperationException("SubsetChain's forward ran without its tape (SubsetChainSetup.Record = false), so it has no backward");
        var mu = inputs[0];
        long batch = mu.shape[0]; int m = setup.Family.Modalities, d = (int)mu.shape[2];
        Tensor Upstream(int i, long[] shape) => grads.Count > i && grads[i] is { } g && !g.IsInvalid
            ? g.to(mu.dtype).expand(shape).contiguous() : zeros(shape, dtype: mu.dtype);
        var upstream = new[]
        {
            Upstream(0, [batch, m, d]), Upstream(1, [batch, m, d]),
            stack([Upstream(2, [batch]), Upstream(3, [batch]), Upstream(4, [batch])]),
        };
        var gMu = zeros(batch, m, d, dtype: mu.dtype);
        var gVar = zeros(batch, m, d, dtype: mu.dtype);
        if (mu.dtype == ScalarType.Float32) new SubsetChainKernel<float>(setup, d).MembersBackward(inputs, orders, tape, upstream, gMu, gVar);
        else new SubsetChainKernel<double>(setup, d).MembersBackward(inputs, orders, tape, upstream, gMu, gVar);
        if (link is not { } linkType)
        {
            foreach (var t in upstream) t.Dispose();
            foreach (var t in saved) t.Dispose();   // the wrappers only: the saved tensors go with the graph
            return [gMu, gVar, null!, null!, null!, null!, null!];
        }
        // The link's node runs the rest when its gradient (this zero, a signal) arrives.
        handoff.Give(setup, saved, upstream);
        return [gMu, gVar, zeros(1, dtype: linkType), null!, null!, null!, null!];
    }

    /// <summary>The kernel's inputs, contiguous in the inputs' dtype: μ, σ², size logits, scores, availability, noises, ε.</summary>
    static Tensor[] Inputs(Tensor mu, Tensor var, Tensor sizeLogits, Tensor scores, SubsetChainSetup setup)
    {
        Tensor Prepare(Tensor? t) => t is null ? empty(0, dtype: mu.dtype) : t.detach().to(mu.dtype).contiguous();
        return [Prepare(mu), Prepare(var), Prepare(sizeLogits), Prepare(scores), Prepare(setup.Available),
            Prepare(setup.SizeNoise), Prepare(setup.SelectionNoise), Prepare(setup.Eps)];
    }
}

/// <summary>
/// The parameter link's node (see <see cref="SubsetChain.Apply"/>): its forward turns the size logits and scores into
/// a one-element zero token that the chain's node takes as input; its backward, which runs once the chain's node has
/// handed over, is the chain's backward to the logits and scores.
/// </summary>
sealed class ChainParameterFunction : autograd.MultiTensorFunction<ChainParameterFunction>
{
    public override string Name => nameof(ChainParameterFunction);

    public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (sizeLogits, handoff) = ((Tensor)vars[0], (ChainBackwardHandoff)vars[2]);
        ctx.save_data("handoff", handoff);
        return [zeros(1, dtype: sizeLogits.dtype)];
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> grads)
    {
        var handoff = (ChainBackwardHandoff)ctx.get_data("handoff");
        if (handoff.Saved is not { } saved || handoff.Upstream is not { } upstream || handoff.Setup is not { } setup)
            throw new InvalidOperationException("the chain's parameter link ran its backward before the chain's node handed over its gradients");
        try
        {
            var (inputs, orders, tape) = (saved.Take(8).ToArray(), saved[8], saved[9]);
            int d = (int)inputs[0].shape[2];
            var gLogits = empty_like(inputs[2]);
            var gScores = empty_like(inputs[3]);
            if (inputs[0].dtype == ScalarType.Float32) new SubsetChainKernel<float>(setup, d).Backward(inputs, orders, tape, upstream, gLogits, gScores);
            else new SubsetChainKernel<double>(setup, d).Backward(inputs, orders, tape, upstream, gLogits, gScores);
            return [gLogits, gScores, null!];
        }
        finally { handoff.Release(); }
    }
}

/// <summary>
/// The per-sample forward and backward of <see cref="SubsetChain"/>. Notation as in <see cref="MrVaeObjective"/>: per
/// subset A with members j, a_j (free) ∈ {0,1}^D, n = argmax(c_A + g) within capacity, fill t_r = [r &lt; n],
/// w̃_j = w_j + log(a_j + 1e-6) + penalty·(a_j − 1), order = descending sort of w̃_j + g_j (free factors first), the
/// product of experts per rank, then a_j −= t at the taken factors and the shared contribution += t ⊙ z_S.
/// </summary>
sealed class SubsetChainKernel<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    readonly SubsetFamily family;
    readonly int m, d, k, subsets, pairs;
    readonly T[] logPrior;            // S × (D+1)
    readonly T penalty, tauSize, tauSelection, epsilon = T.CreateChecked(1e-6), half = T.CreateChecked(0.5);
    readonly T[] logFactorial, digamma;   // log k! and ψ(k + 1), k = 0..D
    readonly T logFactD;
    /// <summary>log(a + 1e-6) and 1/(a + 1e-6) for a = 0 and a = 1, the only values a takes in the straight-through forward.</summary>
    readonly T logTaken, logFree, slopeTaken, slopeFree;

    public SubsetChainKernel(SubsetChainSetup setup, int latent)
    {
        family = setup.Family; m = family.Modalities; d = latent; k = d + 1;
        subsets = family.Subsets.Count; pairs = family.PairCount;
        logPrior = setup.LogPrior.SelectMany(row => row.Select(T.CreateChecked)).ToArray();
        penalty = T.CreateChecked(setup.TakenPenalty);
        tauSize = T.CreateChecked(setup.TauSize); tauSelection = T.CreateChecked(setup.TauSelection);
        var lf = new double[k]; var psi = new double[k];
        psi[0] = -0.57721566490153286061;   // ψ(1) = −γ; ψ(n + 1) = ψ(n) + 1/n
        for (int i = 1; i < k; i++) { lf[i] = lf[i - 1] + Math.Log(i); psi[i] = psi[i - 1] + 1.0 / i; }
        logFactorial = lf.Select(T.CreateChecked).ToArray();
        digamma = psi.Select(T.CreateChecked).ToArray();
        logFactD = logFactorial[d];
        logTaken = T.Log(epsilon); logFree = T.Log(T.One + epsilon);
        slopeTaken = T.One / epsilon; slopeFree = T.One / (T.One + epsilon);
    }

    /// <summary>Per-worker buffers: one sample's chain state, what its backward recomputes, and the pair-level scratch.</summary>
    sealed class Scratch
    {
        public readonly T[] Free, FreeBefore, Soft, Mean, Var, ZS, GFree;
        public readonly int[] Cap, N, FreeCount; public readonly bool[] AnyAvailable;
        public readonly T[] WMasked, Perturbed, Sorted, Suffix, Cum, LogCum, Fill, GFill, GZS, Q;
        public readonly T[] X, R, GU, GV, GPerturbed, GWMasked, GSoft, Kernel;
        public readonly int[] Inverse; public readonly ulong[] Keys; public readonly int[] Order;

        /// <summary>The recorded arrays of element type T, in tape order (then Cap, N and AnyAvailable).</summary>
        readonly T[][] recorded;

        /// <summary>The forward's record for the backward, in tape order: FreeBefore, Mean, Var, ZS, Soft, Cap, N, AnyAvailable.</summary>
        public void Save(Span<T> tape)
        {
            int o = 0;
            foreach (var a in recorded) { a.CopyTo(tape.Slice(o, a.Length)); o += a.Length; }
            for (int i = 0; i < Cap.Length; i++)
            {
                tape[o + i] = T.CreateChecked(Cap[i]); tape[o + Cap.Length + i] = T.CreateChecked(N[i]);
                tape[o + 2 * Cap.Length + i] = AnyAvailable[i] ? T.One : T.Zero;
            }
        }

        public void Load(ReadOnlySpan<T> tape)
        {
            int o = 0;
            foreach (var a in recorded) { tape.Slice(o, a.Length).CopyTo(a); o += a.Length; }
            for (int i = 0; i < Cap.Length; i++)
            {
                Cap[i] = int.CreateChecked(tape[o + i]); N[i] = int.CreateChecked(tape[o + Cap.Length + i]);
                AnyAvailable[i] = tape[o + 2 * Cap.Length + i] > T.Zero;
            }
        }

        public Scratch(int m, int d, int s, int p, int maxMembers)
        {
            int k = d + 1;
            Free = new T[m * d]; FreeBefore = new T[p * d]; Soft = new T[s * k];
            Mean = new T[s * d]; Var = new T[s * d]; ZS = new T[s * d]; GFree = new T[m * d];
            recorded = [FreeBefore, Mean, Var, ZS, Soft];
            Cap = new int[s]; N = new int[s]; FreeCount = new int[m]; AnyAvailable = new bool[s];
            WMasked = new T[d]; Perturbed = new T[d]; Sorted = new T[d]; Suffix = new T[d]; Cum = new T[d]; LogCum = new T[d]; Fill = new T[d]; Q = new T[k];
            GFill = new T[d]; GZS = new T[d];
            X = new T[d * 3]; R = new T[d * 2]; GU = new T[maxMembers * d * 3]; GV = new T[maxMembers * d * 2];
            GPerturbed = new T[d]; GWMasked = new T[d]; GSoft = new T[k];
            Kernel = new T[NeuralSortGradient.ScratchLength(d, 3, 2)];
            Inverse = new int[d]; Keys = new ulong[d]; Order = new int[d];
        }
    }

    Scratch NewScratch() => new(m, d, subsets, pairs, family.Subsets.Max(s => s.Length));

    /// <summary>
    /// Runs <paramref name="sample"/> for every sample of the batch, each worker with its own scratch from
    /// <paramref name="newScratch"/>. Every core, not libtorch's thread count (1 in the trainers' lanes): a step's
    /// coordinator phase is a barrier, the modality lanes wait for it, so the cores are free. Workers take small chunks
    /// of samples as they go rather than half the batch each: samples differ in cost (their subsets' sizes) and a core
    /// may be taken away for a while, and with fixed halves one core then idled up to a quarter of the chain's backward
    /// (measured in the embedded cluster: one half done at 37–39 ms, the other at 48–51 ms). Samples are independent and
    /// each writes only its own rows, so the result does not depend on who computes which.
    /// </summary>
    static void ForSamples<TScratch>(long batch, Func<TScratch> newScratch, Action<TScratch, int> sample)
    {
        int workers = (int)Math.Clamp(Math.Min(Environment.ProcessorCount, batch / 16), 1, 64);
        if (workers == 1)
        {
            var scratch = newScratch();
            for (int b = 0; b < batch; b++) sample(scratch, b);
            return;
        }
        const int chunk = 4;
        long next = 0;
        Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, _ =>
        {
            var scratch = newScratch();
            for (long first; (first = Interlocked.Add(ref next, chunk) - chunk) < batch;)
                for (long b = first, end = Math.Min(first + chunk, batch); b < end; b++) sample(scratch, (int)b);
        });
    }

    public void Forward(Tensor[] inputs, Tensor[] outputs)
    {
        long batch = inputs[0].shape[0];
        bool record = outputs[5].numel() > 0;
        int tapeLength = TapeLength(family, d);
        ForSamples(batch, NewScratch, (scratch, b) =>
        {
            Sample(inputs, outputs, b, scratch, record);
            if (record) scratch.Save(SubsetChain.Data<T>(outputs[5]).Slice(b * tapeLength, tapeLength));
        });
    }

    /// <summary>The chain's backward to the size logits and scores (all but ∂L/∂μ, ∂L/∂σ²: <see cref="MembersBackward"/>).</summary>
    public void Backward(Tensor[] inputs, Tensor orders, Tensor tape, Tensor[] upstream, Tensor gLogits, Tensor gScores)
    {
        long batch = inputs[0].shape[0];
        int tapeLength = TapeLength(family, d);
        ForSamples(batch, NewScratch, (scratch, b) =>
        {
            scratch.Load(SubsetChain.Data<T>(tape).Slice(b * tapeLength, tapeLength));
            SampleBackward(inputs, orders, upstream, gLogits, gScores, b, scratch);
        });
    }

    /// <summary>
    /// ∂L/∂μ and ∂L/∂σ² (zeros on entry): the products of experts' backward from the shared contributions' gradient and
    /// the shared KL's, subset by subset from the last. The free masks' gradient, the selection KL's and the sizes'
    /// never reach μ or σ² (hard sorts and sizes in the forward), so this reads only the tape's subspaces and sizes.
    /// </summary>
    public void MembersBackward(Tensor[] inputs, Tensor orders, Tensor tape, Tensor[] upstream, Tensor gMu, Tensor gVar)
    {
        long batch = inputs[0].shape[0];
        int tapeLength = TapeLength(family, d);
        ForSamples(batch, () => new T[d], (gZS, b) =>
            SampleMembersBackward(inputs, orders, SubsetChain.Data<T>(tape).Slice(b * tapeLength, tapeLength), upstream, gMu, gVar, b, gZS));
    }

    /// <summary>Elements of one sample's tape: <see cref="Scratch"/>'s recorded arrays, end to end.</summary>
    public static int TapeLength(SubsetFamily family, int d) => TapeLayout(family, d).Length;

    /// <summary>
    /// Where one sample's tape keeps what <see cref="SampleMembersBackward"/> reads, in <see cref="Scratch.Save"/>'s
    /// order: FreeBefore (P·D), Mean, Var, ZS (S·D each), Soft (S·(D+1)), then Cap, N, AnyAvailable (S each).
    /// </summary>
    static (int Mean, int Var, int Sizes, int Length) TapeLayout(SubsetFamily family, int d)
    {
        int s = family.Subsets.Count, mean = family.PairCount * d, var = mean + s * d, cap = var + 2 * s * d + s * (d + 1);
        return (mean, var, cap + s, cap + 3 * s);
    }

    /// <summary>
    /// One sample's chain forward. With <paramref name="record"/> (a backward will follow) it also keeps what the
    /// backward needs in the scratch (free masks before each pair, subspace posteriors, the sizes' softmax).
    /// </summary>
    void Sample(Tensor[] inputs, Tensor[] outputs, int b, Scratch sc, bool record)
    {
        Span<T> muAll = SubsetChain.Data<T>(inputs[0]), varAll = SubsetChain.Data<T>(inputs[1]),
            logitsAll = SubsetChain.Data<T>(inputs[2]), scoresAll = SubsetChain.Data<T>(inputs[3]),
            availableAll = SubsetChain.Data<T>(inputs[4]), sizeNoiseAll = SubsetChain.Data<T>(inputs[5]),
            selectionNoiseAll = SubsetChain.Data<T>(inputs[6]), epsAll = SubsetChain.Data<T>(inputs[7]);
        var mu = muAll.Slice(b * m * d, m * d); var variance = varAll.Slice(b * m * d, m * d);
        var logits = logitsAll.Slice(b * subsets * k, subsets * k); var scores = scoresAll.Slice(b * pairs * d, pairs * d);
        var available = availableAll.Slice(b * m, m);
        var sizeNoise = sizeNoiseAll.IsEmpty ? default : sizeNoiseAll.Slice(b * subsets * k, subsets * k);
        var selectionNoise = selectionNoiseAll.IsEmpty ? default : selectionNoiseAll.Slice(b * pairs * d, pairs * d);
        var eps = epsAll.IsEmpty ? default : epsAll.Slice(b * subsets * d, subsets * d);

        Span<int> orders = SubsetChain.Data<int>(outputs[4]).Slice(b * pairs * d, pairs * d);
        Span<T> sizes = SubsetChain.Data<T>(outputs[3]).Slice(b * subsets, subsets);
        Span<T> shared = SubsetChain.Data<T>(outputs[1]).Slice(b * m * d, m * d);
        shared.Clear();

        var free = sc.Free.AsSpan();
        free.Fill(T.One);
        Array.Fill(sc.FreeCount, d);   // Σ_c a_jc: a stays 0/1 in the forward, so the count is kept instead of summed per subset
        T klSize = T.Zero, klSelection = T.Zero, klShared = T.Zero;
        for (int s = 0; s < subsets; s++)
        {
            int[] members = family.Subsets[s]; int offset = family.SubsetPairOffset[s];
            bool anyAvailable = false;
            foreach (int j in members) anyAvailable |= available[j] > T.Zero;
            int capacity = int.MaxValue;
            foreach (int j in members) capacity = Math.Min(capacity, sc.FreeCount[j]);
            if (!anyAvailable) capacity = 0;

            // Size: n = argmax of the masked, perturbed logits; KL(Cat(softmax(masked logits)) ‖ H_A).
            var sizeLogits = logits.Slice(s * k, k);
            int n = 0;
            T best = T.NegativeInfinity;
            for (int i = 0; i < k; i++)
            {
                T v = Masked(sizeLogits, i, capacity) + (sizeNoise.IsEmpty ? T.Zero : sizeNoise[s * k + i]);
                if (v > best) { best = v; n = i; }
            }
            sizes[s] = T.CreateChecked(n);
            if (anyAvailable) klSize += CategoricalKl(sizeLogits, capacity, s, null, sc);
            var fill = sc.Fill.AsSpan();
            for (int r = 0; r < d; r++) fill[r] = r < n ? T.One : T.Zero;
            if (record)
            {
                sc.Cap[s] = capacity; sc.N[s] = n; sc.AnyAvailable[s] = anyAvailable;
                // soft = softmax((masked logits + g)/τ): the straight-through sizes' gradient (0 beyond the capacity).
                var soft = sc.Soft.AsSpan(s * k, k);
                int top = Math.Min(capacity, k - 1);
                T max = T.NegativeInfinity;
                for (int i = 0; i <= top; i++)
                {
                    soft[i] = (sizeLogits[i] + (sizeNoise.IsEmpty ? T.Zero : sizeNoise[s * k + i])) / tauSize;
                    max = T.Max(max, soft[i]);
                }
                for (int i = 0; i <= top; i++) soft[i] -= max;
                VectorMath.ExpInPlace(soft[..(top + 1)]);
                T total = T.Zero;
                for (int i = 0; i <= top; i++) total += soft[i];
                for (int i = 0; i <= top; i++) soft[i] /= total;
                soft[(top + 1)..].Clear();
            }

            // Selections: sort each member's perturbed scores (free factors first); Plackett–Luce log r(y) of the top n.
            T logQ = -(logFactD - logFactorial[n] - logFactorial[d - n]);
            for (int a = 0; a < members.Length; a++)
            {
                int j = members[a], p = offset + a;
                var order = orders.Slice(p * d, d);
                var freeJ = free.Slice(j * d, d);
                if (record) freeJ.CopyTo(sc.FreeBefore.AsSpan(p * d, d));
                MaskedScores(scores.Slice(p * d, d), freeJ, selectionNoise.IsEmpty ? default : selectionNoise.Slice(p * d, d), sc);
                SortDescending(sc.Perturbed, freeJ, order, sc);
                T logR = PlackettLuce(order, n, sc).Value + logFactorial[n];
                klSelection += logR - logQ;
            }

            // Product of experts per rank (rows ≥ n padded with unit variance), z_S, and the shared KL.
            var mean = record ? sc.Mean.AsSpan(s * d, d) : default;
            var varS = record ? sc.Var.AsSpan(s * d, d) : default;
            var zS = sc.ZS.AsSpan(s * d, d);
            // Ranks ≥ n: every member's row is the unit-variance padding, so mean 0, variance 1/(#available or 1), z_S = 0.
            T paddedPrecision = anyAvailable ? T.Zero : T.One;
            foreach (int j in members) paddedPrecision += available[j];
            for (int r = n; r < d; r++)
            {
                zS[r] = T.Zero;
                if (record) { mean[r] = T.Zero; varS[r] = T.One / paddedPrecision; }
            }
            for (int r = 0; r < n; r++)
            {
                // Ranks < n: t_r = 1, so every member's selected factor enters as it is.
                T precision = anyAvailable ? T.Zero : T.One, numerator = T.Zero;
                for (int a = 0; a < members.Length; a++)
                {
                    int j = members[a], c = orders[(offset + a) * d + r];
                    T w = available[j], vSel = variance[j * d + c];
                    precision += w / vSel;
                    numerator += w * mu[j * d + c] / vSel;
                }
                T meanR = numerator / precision, varR = T.One / precision;
                zS[r] = eps.IsEmpty ? meanR : meanR + T.Sqrt(varR) * eps[s * d + r];
                klShared += half * (meanR * meanR + varR - T.One - T.Log(varR));
                if (record) { mean[r] = meanR; varS[r] = varR; }
            }

            // Take the selected factors: a_j −= t at the ranks' items, shared_j += t ⊙ z_S there.
            for (int a = 0; a < members.Length; a++)
            {
                int j = members[a]; var order = orders.Slice((offset + a) * d, d);
                for (int r = 0; r < n; r++)
                {
                    int c = order[r];
                    if (free[j * d + c] > half) sc.FreeCount[j]--;
                    free[j * d + c] = T.Clamp(free[j * d + c] - T.One, T.Zero, T.One);
                    shared[j * d + c] += zS[r];
                }
            }
        }
        free.CopyTo(SubsetChain.Data<T>(outputs[0]).Slice(b * m * d, m * d));
        var kl = SubsetChain.Data<T>(outputs[2]);
        long batch = outputs[2].shape[1];
        kl[b] = klSize; kl[(int)batch + b] = klSelection; kl[2 * (int)batch + b] = klShared;
    }

    static T Masked(Span<T> logits, int i, int capacity) => i > capacity ? T.CreateChecked(-1e9) : logits[i];

    /// <summary>
    /// KL(softmax(masked logits) ‖ H_A); with <paramref name="gradient"/>, also ∂KL/∂logit_i = q_i (log q_i − log H_i − KL),
    /// 0 where masked. Masked sizes (i &gt; capacity, logit −1e9) have q_i = 0 exactly, so only 0..capacity are visited.
    /// </summary>
    T CategoricalKl(Span<T> logits, int capacity, int s, Span<T> gradient, Scratch sc)
    {
        int top = Math.Min(capacity, k - 1);
        var q = sc.Q.AsSpan(0, top + 1);
        T max = T.NegativeInfinity;
        for (int i = 0; i <= top; i++) max = T.Max(max, logits[i]);
        for (int i = 0; i <= top; i++) q[i] = logits[i] - max;
        VectorMath.ExpInPlace(q);
        T total = T.Zero;
        foreach (var e in q) total += e;
        T logZ = max + T.Log(total), kl = T.Zero;
        for (int i = 0; i <= top; i++)
        {
            q[i] /= total;
            kl += q[i] * (logits[i] - logZ - logPrior[s * k + i]);
        }
        if (gradient.IsEmpty) return kl;
        gradient.Clear();
        for (int i = 0; i <= top; i++) gradient[i] = q[i] * (logits[i] - logZ - logPrior[s * k + i] - kl);
        return kl;
    }

    /// <summary>w̃ = w + log(a + 1e-6) + penalty·(a − 1) into <see cref="Scratch.WMasked"/>, and w̃ + g into <see cref="Scratch.Perturbed"/>.</summary>
    void MaskedScores(Span<T> w, Span<T> freeJ, Span<T> noise, Scratch sc)
    {
        int c = 0, width = Vector<T>.Count;
        var one = Vector<T>.One;
        var free = new Vector<T>(logFree); var taken = new Vector<T>(logTaken); var slope = new Vector<T>(penalty);
        for (; c <= d - width; c += width)
        {
            var a = new Vector<T>(freeJ[c..]);
            // a is 0 or 1 in the straight-through chain (a·(a − 1) = 0); anything else takes the scalar path below.
            if (!Vector.EqualsAll(a * (a - one), Vector<T>.Zero)) break;
            var wm = new Vector<T>(w[c..]) + Vector.ConditionalSelect(Vector.Equals(a, one), free, taken);
            if (penalty > T.Zero) wm += slope * (a - one);
            wm.CopyTo(sc.WMasked.AsSpan(c));
            (noise.IsEmpty ? wm : wm + new Vector<T>(noise[c..])).CopyTo(sc.Perturbed.AsSpan(c));
        }
        for (; c < d; c++)
        {
            T a = freeJ[c];
            T wm = w[c] + (a == T.One ? logFree : a == T.Zero ? logTaken : T.Log(a + epsilon));
            if (penalty > T.Zero) wm += penalty * (freeJ[c] - T.One);
            sc.WMasked[c] = wm;
            sc.Perturbed[c] = noise.IsEmpty ? wm : wm + noise[c];
        }
    }

    /// <summary>Items by descending key, free factors (a ≥ 0.5) before taken ones, ties by index.</summary>
    void SortDescending(T[] key, Span<T> freeJ, Span<int> order, Scratch sc)
    {
        if (typeof(T) == typeof(float))
        {
            // One 64-bit key per item: taken flag, then the float's bits made order-preserving and inverted, then the index.
            var keys = sc.Keys.AsSpan(0, d);
            for (int c = 0; c < d; c++)
            {
                uint bits = BitConverter.SingleToUInt32Bits(float.CreateTruncating(key[c]));
                uint ascending = (bits & 0x8000_0000u) != 0 ? ~bits : bits | 0x8000_0000u;
                ulong taken = freeJ[c] < half ? 1ul : 0ul;
                keys[c] = (taken << 63) | ((ulong)~ascending << 31) | (uint)c;
            }
            // The keys are distinct (the index is part of them): an item's rank is the number of smaller keys. Eight
            // keys per compare where the CPU has 512-bit vectors (Vector<T> stays 256 bits wide there).
            if (Vector512.IsHardwareAccelerated)
            {
                int vectorEnd512 = d - d % Vector512<ulong>.Count;
                for (int c = 0; c < d; c++)
                {
                    var key_c = Vector512.Create(keys[c]);
                    var smaller = Vector512<ulong>.Zero;
                    int i = 0;
                    for (; i < vectorEnd512; i += Vector512<ulong>.Count) smaller -= Vector512.LessThan(Vector512.Create<ulong>(keys[i..]), key_c);
                    ulong rank = Vector512.Sum(smaller);
                    for (; i < d; i++) if (keys[i] < keys[c]) rank++;
                    order[(int)rank] = c;
                }
                return;
            }
            int width = Vector<ulong>.Count, vectorEnd = d - d % width;
            for (int c = 0; c < d; c++)
            {
                var key_c = new Vector<ulong>(keys[c]);
                var smaller = Vector<ulong>.Zero;
                int i = 0;
                for (; i < vectorEnd; i += width) smaller -= Vector.LessThan(new Vector<ulong>(keys[i..]), key_c);   // −(−1) per smaller key
                ulong rank = Vector.Sum(smaller);
                for (; i < d; i++) if (keys[i] < keys[c]) rank++;
                order[(int)rank] = c;
            }
        }
        else
        {
            for (int c = 0; c < d; c++) order[c] = c;
            var flags = new bool[d];
            for (int c = 0; c < d; c++) flags[c] = freeJ[c] < half;
            order.Sort((x, y) =>
            {
                if (flags[x] != flags[y]) return flags[x] ? 1 : -1;
                int byKey = key[y].CompareTo(key[x]);
                return byKey != 0 ? byKey : x.CompareTo(y);
            });
        }
    }

    /// <summary>
    /// One sample's ∂L/∂μ, ∂L/∂σ² (see <see cref="MembersBackward"/>): the same products-of-experts arithmetic as
    /// <see cref="SampleBackward"/>'s (which needs it again for NeuralSort's gradient), in the same order per element.
    /// </summary>
    void SampleMembersBackward(Tensor[] inputs, Tensor orders, ReadOnlySpan<T> tape, Tensor[] upstream, Tensor gMuAll, Tensor gVarAll, int b, T[] gZSBuffer)
    {
        Span<T> muAll = SubsetChain.Data<T>(inputs[0]), varAll = SubsetChain.Data<T>(inputs[1]),
            availableAll = SubsetChain.Data<T>(inputs[4]), epsAll = SubsetChain.Data<T>(inputs[7]);
        var mu = muAll.Slice(b * m * d, m * d); var variance = varAll.Slice(b * m * d, m * d);
        var available = availableAll.Slice(b * m, m);
        var eps = epsAll.IsEmpty ? default : epsAll.Slice(b * subsets * d, subsets * d);
        var order = SubsetChain.Data<int>(orders).Slice(b * pairs * d, pairs * d);
        long batch = inputs[0].shape[0];
        var gShared = SubsetChain.Data<T>(upstream[1]).Slice(b * m * d, m * d);
        T gKlShared = SubsetChain.Data<T>(upstream[2])[2 * (int)batch + b];
        var gMu = SubsetChain.Data<T>(gMuAll).Slice(b * m * d, m * d);
        var gVar = SubsetChain.Data<T>(gVarAll).Slice(b * m * d, m * d);
        var layout = TapeLayout(family, d);
        var meanAll = tape.Slice(layout.Mean, subsets * d); var varSAll = tape.Slice(layout.Var, subsets * d);
        var sizes = tape.Slice(layout.Sizes, subsets);
        var gZS = gZSBuffer.AsSpan();
        for (int s = subsets - 1; s >= 0; s--)
        {
            int[] members = family.Subsets[s]; int offset = family.SubsetPairOffset[s], size = members.Length;
            int n = int.CreateChecked(sizes[s]);
            if (n == 0) continue;
            var mean = meanAll.Slice(s * d, d); var varS = varSAll.Slice(s * d, d);
            gZS.Slice(0, n).Clear();
            for (int a = 0; a < size; a++)
            {
                var ord = order.Slice((offset + a) * d, d);
                for (int r = 0; r < n; r++) gZS[r] += gShared[members[a] * d + ord[r]];   // fill t_r = 1 for r < n
            }
            for (int r = 0; r < n; r++)
            {
                T f = T.One;
                var (gNumerator, gPrecision) = SubspaceBackward(gKlShared, f, mean[r], varS[r], gZS[r], eps.IsEmpty ? null : eps[s * d + r]);
                for (int a = 0; a < size; a++)
                {
                    int j = members[a], c = order[(offset + a) * d + r];
                    var (gMSel, gVSel) = SelectedBackward(gNumerator, gPrecision, f, mu[j * d + c], variance[j * d + c], available[j]);
                    gMu[j * d + c] += gMSel * f; gVar[j * d + c] += gVSel * f;
                }
            }
        }
    }

    /// <summary>
    /// One rank r &lt; n of a subspace's backward, from ∂L/∂z_S[r] and the shared KL's upstream gradient: ∂L/∂(Σ_j w_j m_j / v_j)
    /// and ∂L/∂precision of its product of experts (mean = numerator / precision, var = 1 / precision). eps: ε_r, or null
    /// for the posterior mean.
    /// </summary>
    (T GNumerator, T GPrecision) SubspaceBackward(T gKlShared, T f, T meanR, T varR, T gZSr, T? eps)
    {
        T gMean = gKlShared * f * meanR, gV = gKlShared * f * half * (T.One - T.One / varR);
        gMean += gZSr * f;
        if (eps is { } e) gV += gZSr * f * e * half / T.Sqrt(varR);
        T precision = T.One / varR, numerator = meanR * precision;
        T gNumerator = gMean / precision;
        T gPrecision = -gMean * numerator / (precision * precision) - gV / (precision * precision);
        return (gNumerator, gPrecision);
    }

    /// <summary>
    /// One member's selected factor at a used rank (fill f): ∂L/∂m_sel and ∂L/∂v_sel, m_sel = f·μ, v_sel = f·σ² + (1 − f),
    /// weighted by the member's availability w.
    /// </summary>
    static (T GMSel, T GVSel) SelectedBackward(T gNumerator, T gPrecision, T f, T x0, T x1, T w)
    {
        T vSel = f * x1 + (T.One - f), mSel = f * x0;
        T gMSel = gNumerator * w / vSel;
        T gVSel = -gNumerator * w * mSel / (vSel * vSel) - gPrecision * w / (vSel * vSel);
        return (gMSel, gVSel);
    }

    /// <summary>
    /// Σ_{r &lt; n} (w̃_(r) − log Σ_{l ≥ r} exp w̃_(l)) for the sorted masked scores, leaving the sorted scores in
    /// <see cref="Scratch.Sorted"/>. Usually (Exact = false) the suffix sums are sums of positive terms: one exp per
    /// item, exp(w̃_(l) − max) in <see cref="Scratch.Suffix"/>, their suffix sums in <see cref="Scratch.Cum"/>, and a
    /// log per rank used, instead of the running log-sum-exp's exp and log per item. Where a term underflows (scores
    /// spread over more than ~87 in float32, e.g. a steep selection ramp) it is the running log-sum-exp (Exact = true):
    /// the suffix log-sums in <see cref="Scratch.Suffix"/>.
    /// </summary>
    (T Value, T Max, bool Exact) PlackettLuce(Span<int> order, int n, Scratch sc)
    {
        var sorted = sc.Sorted; var e = sc.Suffix; var cum = sc.Cum;
        T max = T.NegativeInfinity;
        for (int r = 0; r < d; r++) { sorted[r] = sc.WMasked[order[r]]; max = T.Max(max, sorted[r]); }
        for (int r = 0; r < d; r++) e[r] = sorted[r] - max;
        VectorMath.ExpInPlace(e);
        T total = T.Zero;
        if (e[d - 1] > T.Zero)
        {
            T running = T.Zero;
            for (int r = d - 1; r >= 0; r--) { running += e[r]; cum[r] = running; }
            for (int r = 0; r < n; r++) total += sorted[r] - (max + T.Log(cum[r]));
            return (total, max, false);
        }
        var suffix = sc.Suffix;
        T logSum = T.NegativeInfinity;
        for (int r = d - 1; r >= 0; r--)
        {
            T hi = T.Max(logSum, sorted[r]), lo = T.Min(logSum, sorted[r]);
            logSum = T.IsNegativeInfinity(lo) ? hi : hi + T.Log(T.One + T.Exp(lo - hi));
            suffix[r] = logSum;
        }
        for (int r = 0; r < n; r++) total += sorted[r] - suffix[r];
        return (total, max, true);
    }

    void SampleBackward(Tensor[] inputs, Tensor orders, Tensor[] upstream, Tensor gLogitsAll, Tensor gScoresAll, int b, Scratch sc)
    {
        Span<T> muAll = SubsetChain.Data<T>(inputs[0]), varAll = SubsetChain.Data<T>(inputs[1]),
            logitsAll = SubsetChain.Data<T>(inputs[2]), scoresAll = SubsetChain.Data<T>(inputs[3]),
            availableAll = SubsetChain.Data<T>(inputs[4]), selectionNoiseAll = SubsetChain.Data<T>(inputs[6]),
            epsAll = SubsetChain.Data<T>(inputs[7]);
        var mu = muAll.Slice(b * m * d, m * d); var variance = varAll.Slice(b * m * d, m * d);
        var logits = logitsAll.Slice(b * subsets * k, subsets * k); var scores = scoresAll.Slice(b * pairs * d, pairs * d);
        var available = availableAll.Slice(b * m, m);
        var selectionNoise = selectionNoiseAll.IsEmpty ? default : selectionNoiseAll.Slice(b * pairs * d, pairs * d);
        var eps = epsAll.IsEmpty ? default : epsAll.Slice(b * subsets * d, subsets * d);
        var order = SubsetChain.Data<int>(orders).Slice(b * pairs * d, pairs * d);

        long batch = inputs[0].shape[0];
        var gFreeUp = SubsetChain.Data<T>(upstream[0]).Slice(b * m * d, m * d);
        var gShared = SubsetChain.Data<T>(upstream[1]).Slice(b * m * d, m * d);
        var gKl = SubsetChain.Data<T>(upstream[2]);
        T gKlSize = gKl[b], gKlSelection = gKl[(int)batch + b], gKlShared = gKl[2 * (int)batch + b];
        var gLogits = SubsetChain.Data<T>(gLogitsAll).Slice(b * subsets * k, subsets * k);
        var gScores = SubsetChain.Data<T>(gScoresAll).Slice(b * pairs * d, pairs * d);

        var gFree = sc.GFree.AsSpan();
        gFreeUp.CopyTo(gFree);
        for (int s = subsets - 1; s >= 0; s--)
        {
            int[] members = family.Subsets[s]; int offset = family.SubsetPairOffset[s], size = members.Length;
            int n = sc.N[s];
            var fill = sc.Fill.AsSpan();
            for (int r = 0; r < d; r++) fill[r] = r < n ? T.One : T.Zero;
            var mean = sc.Mean.AsSpan(s * d, d); var varS = sc.Var.AsSpan(s * d, d); var zS = sc.ZS.AsSpan(s * d, d);
            var gFill = sc.GFill.AsSpan(); var gZS = sc.GZS.AsSpan();
            gFill.Clear(); gZS.Clear();
            T gN = T.Zero;

            // a_j ← clamp(a_j − t at the ranks' items, 0, 1) and shared_j += t ⊙ z_S: ∂L/∂[t, t ⊙ z_S] in rank order (R's
            // gradient) and in item order (gV, for the NeuralSort gradient); ∂L/∂a_j before this subset.
            for (int a = 0; a < size; a++)
            {
                int j = members[a], p = offset + a;
                var ord = order.Slice(p * d, d); var before = sc.FreeBefore.AsSpan(p * d, d);
                var gv = sc.GV.AsSpan(a * d * 2, d * 2);
                for (int r = 0; r < d; r++)
                {
                    int c = ord[r];
                    T x = before[c] - fill[r];
                    bool pass = x >= T.Zero && x <= T.One;   // clamp's gradient, bounds included (as libtorch)
                    T g0 = pass ? -gFree[j * d + c] : T.Zero, g1 = gShared[j * d + c];
                    gv[c * 2] = g0; gv[c * 2 + 1] = g1;
                    gFree[j * d + c] = pass ? gFree[j * d + c] : T.Zero;
                    gFill[r] += g0 + g1 * zS[r];
                    gZS[r] += g1 * fill[r];
                }
            }

            // Shared KL, z_S = t ⊙ (mean + √var ε), and the product of experts, rank by rank.
            bool anyAvailable = sc.AnyAvailable[s];
            if (n < d)
            {
                // Padding ranks (t_r = 0, mean 0, one variance): only t_r's straight-through gradient; nothing reaches μ, σ² or the scores.
                T varR = varS[n], klPadded = gKlShared * half * (varR - T.One - T.Log(varR)), sd = T.Sqrt(varR);
                for (int r = n; r < d; r++)
                {
                    gFill[r] += klPadded;
                    if (!eps.IsEmpty) gFill[r] += gZS[r] * sd * eps[s * d + r];
                    for (int a = 0; a < size; a++) { sc.GU[a * d * 3 + r * 3] = T.Zero; sc.GU[a * d * 3 + r * 3 + 1] = T.Zero; }
                }
            }
            for (int r = 0; r < n; r++)
            {
                T f = fill[r], meanR = mean[r], varR = varS[r];
                gFill[r] += gKlShared * half * (meanR * meanR + varR - T.One - T.Log(varR));
                T e = eps.IsEmpty ? T.Zero : eps[s * d + r];
                gFill[r] += gZS[r] * (meanR + T.Sqrt(varR) * e);
                var (gNumerator, gPrecision) = SubspaceBackward(gKlShared, f, meanR, varR, gZS[r], eps.IsEmpty ? null : e);
                for (int a = 0; a < size; a++)
                {
                    int j = members[a], c = order[(offset + a) * d + r];
                    T x0 = mu[j * d + c], x1 = variance[j * d + c];
                    var (gMSel, gVSel) = SelectedBackward(gNumerator, gPrecision, f, x0, x1, available[j]);
                    var gu = sc.GU.AsSpan(a * d * 3 + r * 3, 3);
                    gu[0] = gMSel * f; gu[1] = gVSel * f;
                    gFill[r] += gMSel * x0 + gVSel * (x1 - T.One);
                }
            }

            // Plackett–Luce terms (every member, available or not) and log r − log q's dependence on n.
            gN += gKlSelection * T.CreateChecked(size) * digamma[d - n];
            for (int a = 0; a < size; a++)
            {
                int j = members[a], p = offset + a;
                var ord = order.Slice(p * d, d); var before = sc.FreeBefore.AsSpan(p * d, d);
                MaskedScores(scores.Slice(p * d, d), before, selectionNoise.IsEmpty ? default : selectionNoise.Slice(p * d, d), sc);
                var (_, max, exact) = PlackettLuce(ord, n, sc);
                var sorted = sc.Sorted; var e = sc.Suffix; var cum = sc.Cum;
                // ∂/∂w̃_(l) = t_l − Σ_{r ≤ l} t_r exp(w̃_(l) − suffix_r), suffix_r = log Σ_{l' ≥ r} exp w̃_(l'):
                // Σ_{r ≤ min(l, n−1)} exp(w̃_(l) − suffix_r) = exp(w̃_(l) − suffix_l') · A_l', A_t = Σ_{r ≤ t} exp(suffix_t − suffix_r),
                // with suffix_r = max + log cum_r and exp(w̃_(l) − max) = e_l on the usual path.
                var logCum = sc.LogCum;
                if (!exact) { cum.CopyTo(logCum, 0); VectorMath.LogInPlace(logCum); }
                T acc = T.Zero;
                for (int l = 0; l < d; l++)
                {
                    int last = Math.Min(l, n - 1);
                    T term, sum;
                    if (!exact)
                    {
                        if (l < n) acc = l == 0 ? T.One : acc * (cum[l] / cum[l - 1]) + T.One;
                        term = sorted[l] - max - logCum[l];
                        sum = n == 0 ? T.Zero : e[l] / cum[last] * acc;
                    }
                    else
                    {
                        if (l < n) acc = l == 0 ? T.One : acc * T.Exp(e[l] - e[l - 1]) + T.One;
                        term = sorted[l] - e[l];
                        sum = n == 0 ? T.Zero : T.Exp(sorted[l] - e[last]) * acc;
                    }
                    gFill[l] += gKlSelection * term;   // every rank: t_r's straight-through gradient
                    sc.GU[a * d * 3 + l * 3 + 2] = gKlSelection * (fill[l] - sum);
                }

                // Gather's backward to w̃ (byRank = byMember at the order; its μ and σ² columns are MembersBackward's),
                // then P̂'s gradient to the perturbed scores.
                var gWMasked = sc.GWMasked.AsSpan();
                for (int r = 0; r < d; r++) gWMasked[ord[r]] = sc.GU[a * d * 3 + r * 3 + 2];
                if (n > 0)   // with n = 0 both right-hand sides' gradients are zero rows: P̂ gets no gradient
                {
                    for (int c = 0; c < d; c++)
                    {
                        sc.X[c * 3] = mu[j * d + c]; sc.X[c * 3 + 1] = variance[j * d + c]; sc.X[c * 3 + 2] = sc.WMasked[c];
                    }
                    for (int r = 0; r < d; r++) { sc.R[r * 2] = fill[r]; sc.R[r * 2 + 1] = fill[r] * zS[r]; }
                    NeuralSortGradient.Matrix<T>(sc.Perturbed, sc.X, sc.R, sc.GU.AsSpan(a * d * 3, d * 3), sc.GV.AsSpan(a * d * 2, d * 2),
                        sc.GPerturbed, 3, 2, tauSelection, sc.Kernel, ord);
                    for (int c = 0; c < d; c++) gWMasked[c] += sc.GPerturbed[c];
                }
                var gW = gScores.Slice(p * d, d);
                for (int c = 0; c < d; c++)
                {
                    gW[c] = gWMasked[c];
                    T freeBefore = before[c];
                    T slope = freeBefore == T.One ? slopeFree : freeBefore == T.Zero ? slopeTaken : T.One / (freeBefore + epsilon);
                    if (penalty > T.Zero) slope += penalty;
                    gFree[j * d + c] += gWMasked[c] * slope;
                }
            }

            // Sizes: t_r = Σ_i onehot_i [i > r] and n = Σ_i onehot_i · i, straight-through onehot → softmax((c + g)/τ).
            var gSoft = sc.GSoft.AsSpan(); var soft = sc.Soft.AsSpan(s * k, k);
            gSoft[0] = T.Zero;
            for (int i = 1; i < k; i++) gSoft[i] = gSoft[i - 1] + gFill[i - 1];
            T dot = T.Zero;
            for (int i = 0; i < k; i++) { gSoft[i] += gN * T.CreateChecked(i); dot += soft[i] * gSoft[i]; }
            var gL = gLogits.Slice(s * k, k);
            if (anyAvailable) CategoricalKl(logits.Slice(s * k, k), sc.Cap[s], s, gL, sc);
            else gL.Clear();
            for (int i = 0; i < k; i++)
                gL[i] = i > sc.Cap[s] ? T.Zero : gKlSize * gL[i] + soft[i] * (gSoft[i] - dot) / tauSize;
        }
    }
}
