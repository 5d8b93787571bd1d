using MrVae.Model.Numerics;
using MrVae.Model.Relaxations;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Objectives;

/// <summary>
/// The multimodal relational VAE's coordinator (model.md): infers, for every shared subset A, the size n_A of its
/// subspace S_A (straight-through Gumbel-softmax over {0..D} with a hypergeometric prior) and which factors of
/// each member fill it (straight-through NeuralSort, top-n_A), aggregates the selected factors of the available
/// members by a product of experts, and builds every modality's decoder input from its private factors and the
/// subspaces it belongs to.
///
/// Objective (minimised, per sample): β·[KL_private + KL_shared] + β_n·Σ_A KL(Cat(c_A) ‖ H_A)
///   + β_y·Σ_A Σ_{j∈A} (log r(y_{j,A}) − log q(y_{j,A})), plus the decoders' −log p(x_j | z̃_j).
/// Sign note: the paper's Definition 3 writes the selection term with the opposite sign; as the −ELBO of a
/// hierarchical model whose discrete structure (n, y) is inferred by r_ψ (Lemma 1), the term is +E[log r − log q].
/// </summary>
public sealed class MrVaeObjective : CoordinatorObjective
{
    readonly RelationNetworks relation;
    readonly SubsetFamily family;
    readonly int latentDim;
    /// <summary>Mean over members of log H_{A,j}(k), k = 0..D, per subset (S × (D+1)).</summary>
    readonly double[][] logPrior;
    /// <summary>Extra score offset of taken factors (a_j = 0) beyond log(1e-6), as large as the selection ramp's span.</summary>
    readonly double takenPenalty;

    public MrVaeObjective(ModelConfig config) : base(nameof(MrVaeObjective), config)
    {
        family = config.SharedSubsets();
        latentDim = config.LatentDim;
        relation = new RelationNetworks(family, config.LatentDim, config.RelationHidden, config.RelationBf16);
        logPrior = family.Subsets.Select(members => SizePrior(family, members, latentDim)).ToArray();
        if (config.SizeLogitsFromPrior) relation.StartSizesAtPrior(logPrior);
        if (config.SelectionRampSlope > 0) relation.StartSelectionsAtRamp(config.SelectionRampSlope);
        // log(a + 1e-6) puts a taken factor ≈ 13.8 below its score; a ramp spans slope·(D−1), so taken factors must go
        // lower still, or they would outrank free ones in NeuralSort's relaxation and the Plackett–Luce suffix sums.
        takenPenalty = config.SelectionRampSlope * (config.LatentDim - 1);
        RegisterComponents();
    }

    public SubsetFamily Family => family;

    /// <summary>
    /// Hypergeometric marginal of n_A for each member j (m_A = D balls per colour, D draws, N_j = D · (1 + #shared
    /// subsets containing j), the private subspace being one colour), averaged over members in log space, so the KL
    /// against it is the mean of the members' KLs.
    /// </summary>
    public static double[] SizePrior(SubsetFamily family, int[] members, int d)
    {
        var result = new double[d + 1];
        foreach (int j in members)
        {
            var lp = Hypergeometric.LogPmf(d * (1 + family.CountContaining(j)), d, d);
            for (int k = 0; k <= d; k++) result[k] += lp[k] / members.Length;
        }
        return result;
    }

    public override CoordinatorOutput Forward(Tensor?[] mu, Tensor?[] logVar, Tensor available, bool[] decode, StepContext context)
    {
        var views = new List<Tensor> { available };
        var weights = new List<double> { 1.0 };
        if (context.Training && Config.SubsetWeight > 0)
        {
            views.Add(RandomSubsetOf(available, context.Generator));
            weights.Add(Config.SubsetWeight);
        }

        int m = Config.Modalities, d = latentDim;
        long batch = available.shape[0];
        var dtype = available.dtype; var device = available.device;
        // Per-modality posteriors and one sample of each, shared by the views (a view only changes which modalities
        // the structure sees and which are reconstructed from the prior): the relation networks' first layer, the
        // largest part of their work, then runs once for all views. Absent modalities are zeros and never read.
        var muAll = StackModalities(mu, batch, d, dtype, device);          // B × M × D
        var logVarAll = StackModalities(logVar, batch, d, dtype, device);
        var varAll = logVarAll.exp();
        var z = Sample(muAll, logVarAll, context);                         // B × M × D
        var zRelation = Config.RelationReadsDetachedLatents ? z.detach() : z;
        var viewMasks = views.ToArray();
        // The chains' Gumbel and Gaussian draws come from counter-based streams, one key per view from the step's
        // generator (drawn here, in order). A second thread fills them and runs the size networks (a quarter of the
        // networks' work) while this one runs the selection networks: the forward uses both cores, with the same ops.
        // Only when the networks read sg(z): autograd numbers a graph's nodes per thread, so two branches built on two
        // threads that both reach z would add their gradients into it in an order that varies from run to run.
        var keys = viewMasks.Select(_ => CounterNoise.From(context.Generator)).ToArray();
        bool sizesOnSecond = !zRelation.requires_grad;
        // The fused chain runs on the CPU (see FusedChain): its draws are made there, whatever the latents' device.
        bool fused = UseFusedChain && SubsetChain.Supports(available, context.Relaxed);
        var noiseDevice = fused ? CPU : device;
        var second = OnSecondThread(() =>
        {
            // Its own scope: the temporaries die here, the results leave it and join this thread's scope (Adopt).
            using var scope = NewDisposeScope();
            var draws = keys.Select(key => DrawChainNoise(key, batch, dtype, noiseDevice, context)).ToArray();
            foreach (var n in draws) n.Detach();
            if (!sizesOnSecond) return (draws, (Tensor[]?)null);
            var logits = relation.SizeLogits(zRelation, viewMasks);         // B × S × (D+1) per view
            foreach (var t in logits) t.DetachFromDisposeScope();
            return (draws, logits);
        });
        Tensor[] scores;
        Tensor[]? sizesHere = null;
        try
        {
            scores = relation.SelectionScores(zRelation, viewMasks);         // B × P × D per view
            if (!sizesOnSecond) sizesHere = relation.SizeLogits(zRelation, viewMasks);
        }
        finally { second.Wait(); }
        var (noise, sizesThere) = second.Result;
        foreach (var n in noise) n.Adopt();
        var sizeLogits = sizesHere ?? sizesThere!;
        if (sizesThere is not null && CurrentDisposeScope is { } current) foreach (var t in sizesThere) t.MoveToOtherDisposeScope(current);
        var posteriors = new Posteriors(muAll, logVarAll, varAll, z);
        var perView = views.Select((k, v) => RunView(posteriors, sizeLogits[v], scores[v], noise[v], k, decode, context, fused)).ToList();
        var decoderInputs = new Tensor?[m];
        for (int j = 0; j < m; j++)
            if (decode[j]) decoderInputs[j] = stack(perView.Select(v => v.DecoderInputs[j]!).ToArray(), 0);

        Tensor loss = zeros(1, dtype: available.dtype, device: available.device).squeeze();
        var terms = new Dictionary<string, Tensor>();
        for (int v = 0; v < perView.Count; v++)
        {
            var r = perView[v];
            loss = loss + weights[v] * (Beta(context) * (r.KlPrivate + r.KlShared) + Config.BetaSize * r.KlSize + Config.BetaSelection * r.KlSelection);
            string suffix = v == 0 ? "" : "_subset";
            terms["kl_private" + suffix] = r.KlPrivate.detach();
            terms["kl_shared" + suffix] = r.KlShared.detach();
            terms["kl_size" + suffix] = r.KlSize.detach();
            terms["kl_selection" + suffix] = r.KlSelection.detach();
        }
        var output = new CoordinatorOutput
        {
            DecoderInputs = decoderInputs, Loss = loss, ViewWeights = weights.ToArray(), SubspaceSizes = perView[0].Sizes.detach(), Relation = perView[0].Relation,
            // The networks see only sg(z): the chain's parameter side separates their parameters from everything the members need.
            ParameterCut = Config.RelationReadsDetachedLatents && is_grad_enabled() ? [.. perView.SelectMany(v => v.ParameterCut)] : [],
        };
        foreach (var (k, t) in terms) output.Terms[k] = t;
        return output;
    }

    sealed record ViewResult(Tensor?[] DecoderInputs, Tensor KlPrivate, Tensor KlShared, Tensor KlSize, Tensor KlSelection, Tensor Sizes, RelationRecord? Relation, Tensor[] ParameterCut);

    /// <summary>The posteriors' means, log-variances and variances (B × M × D) and their sample z, shared by the views.</summary>
    sealed record Posteriors(Tensor Mu, Tensor LogVar, Tensor Var, Tensor Z);

    /// <summary>
    /// One view's draws for the chain, in the order the chain uses them (per subset: size noise, selection noise, ε):
    /// Gumbel noise of the sizes (B × S × (D+1)) and selections (B × P × D) when training, ε (B × S × D) when sampling.
    /// </summary>
    sealed record ChainNoise(Tensor? Size, Tensor? Selection, Tensor? Eps)
    {
        /// <summary>Takes the draws out of the dispose scope they were made in (another thread's).</summary>
        public void Detach()
        {
            foreach (var t in new[] { Size, Selection, Eps }) t?.DetachFromDisposeScope();
        }

        /// <summary>Puts detached draws into this thread's current dispose scope, if it has one.</summary>
        public void Adopt()
        {
            if (CurrentDisposeScope is not { } scope) return;
            foreach (var t in new[] { Size, Selection, Eps }) t?.MoveToOtherDisposeScope(scope);
        }
    }

    /// <summary>
    /// One view's chain noise from its key: streams 0, 1, 2 give the size noise (B × S × (D+1)), the selection noise
    /// (B × P × D) and ε (B × S × D), each value a function of its flat index alone.
    /// </summary>
    ChainNoise DrawChainNoise(CounterNoise key, long batch, ScalarType dtype, Device device, StepContext context)
    {
        int d = latentDim, subsets = family.Subsets.Count;
        return new ChainNoise(
            context.Training ? key.Stream(0).Gumbel([batch, subsets, d + 1], dtype, device) : null,
            context.Training ? key.Stream(1).Gumbel([batch, family.PairCount, d], dtype, device) : null,
            context.SampleLatents ? key.Stream(2).Normal([batch, subsets, d], dtype, device) : null);
    }

    /// <summary>
    /// Runs <paramref name="work"/> on a thread-pool thread with this thread's libtorch thread count (a pool thread's
    /// default OpenMP team would compete with this one for the cores).
    /// </summary>
    static Task<T> OnSecondThread<T>(Func<T> work)
    {
        int threads = get_num_threads();
        return Task.Run(() => { set_num_threads(threads); return work(); });
    }

    ViewResult RunView(Posteriors posteriors, Tensor sizeLogits, Tensor scores, ChainNoise noise, Tensor available, bool[] decode, StepContext context, bool fused)
    {
        int m = Config.Modalities, d = latentDim;
        long batch = available.shape[0];
        var dtype = available.dtype; var device = available.device;
        var (muAll, logVarAll, varAll, z) = posteriors;

        var chain = fused
            ? FusedChain(muAll, varAll, sizeLogits, scores, available, noise, context)
            : ReferenceChain(muAll, varAll, sizeLogits, scores, available, noise, context);
        var (free, sharedContribution) = (chain.Free, chain.Shared);

        // Private factors: what remains free; KL only for available modalities.
        var klPrivate = zeros(batch, dtype: dtype, device: device);
        var decoderInputs = new Tensor?[m];
        for (int j = 0; j < m; j++)
        {
            var availJ = available[.., j];
            klPrivate = klPrivate + availJ * (free[j] * KlStandardNormal(muAll[.., j, ..], logVarAll[.., j, ..])).sum(-1);
            if (!decode[j]) continue;
            // A modality not available for this sample gets prior samples in its private factors.
            var priorSample = context.SampleLatents
                ? DeviceRandom.Randn([batch, d], dtype, device, context.Generator)
                : zeros(batch, d, dtype: dtype, device: device);
            var zHat = where(availJ.unsqueeze(-1) > 0.5, z[.., j, ..], priorSample);
            decoderInputs[j] = free[j] * zHat + sharedContribution[j];
        }

        var record = context.RecordRelation ? new RelationRecord(chain.Selections!, stack(free, 1).detach()) : null;
        return new ViewResult(decoderInputs, klPrivate.mean(), chain.KlShared.mean(), chain.KlSize.mean(), chain.KlSelection.mean(), chain.Sizes, record, chain.ParameterCut);
    }

    /// <summary>
    /// The chain over the shared subsets: free masks and shared contributions per modality, the per-sample size,
    /// selection and shared KL terms, n_A (B × S), and with <see cref="StepContext.RecordRelation"/> the selections Y_{j,A}.
    /// ParameterCut: where a backward that wants only the members' gradients stops, when the networks read sg(z): the
    /// fused chain's parameter link (its backward to the logits and scores, most of the chain's, then waits too) or
    /// the reference's logits and scores.
    /// </summary>
    sealed record ChainResult(Tensor[] Free, Tensor[] Shared, Tensor KlSize, Tensor KlSelection, Tensor KlShared, Tensor Sizes, Tensor[]? Selections, Tensor[] ParameterCut);

    /// <summary>
    /// Use <see cref="SubsetChain"/>'s per-sample CPU kernel where it applies (float, straight-through; on another
    /// device through copies, see FusedChain); false runs the reference with libtorch ops everywhere. Both give the
    /// same values and gradients (tests compare them).
    /// </summary>
    public bool UseFusedChain { get; set; } = true;

    /// <summary>
    /// The chain with <see cref="SubsetChain"/>'s CPU kernel. On another device (a GPU silo) the chain's inputs — the
    /// posteriors (B × M × D) and the networks' outputs, a few MB — are copied to the CPU and its outputs back, each
    /// copy differentiable: the reference chain there, libtorch ops subset by subset, is bound by kernel launches and
    /// host syncs (measured on an H200: mrVAE's training step ~0.46 s at D = 32 and 64 alike, MoPoE's 0.03 s).
    /// </summary>
    ChainResult FusedChain(Tensor muAll, Tensor varAll, Tensor sizeLogits, Tensor scores, Tensor available, ChainNoise noise, StepContext context)
    {
        int m = Config.Modalities, d = latentDim;
        var dtype = available.dtype; var device = available.device;
        bool away = device.type != DeviceType.CPU;
        Tensor Here(Tensor t) => away ? t.to(CPU) : t;
        Tensor Back(Tensor t) => away ? t.to(device) : t;
        var setup = new SubsetChainSetup
        {
            Family = family, LogPrior = logPrior, Available = Here(available), TakenPenalty = takenPenalty,
            TauSize = context.TauSize, TauSelection = context.TauSelection,
            SizeNoise = noise.Size, SelectionNoise = noise.Selection, Eps = noise.Eps,   // drawn on the CPU for this chain (Forward)
            Record = is_grad_enabled() && new[] { muAll, varAll, sizeLogits, scores }.Any(t => t.requires_grad),
        };
        var (free, shared, klSize, klSelection, klShared, link) = SubsetChain.Apply(Here(muAll), Here(varAll), Here(sizeLogits), Here(scores), setup);
        var sizes = setup.Sizes!;
        Tensor[]? selections = null;
        if (context.RecordRelation)
        {
            var ranks = arange(d, dtype: dtype);
            selections = family.Subsets.Select((members, s) =>
            {
                var fill = (ranks.unsqueeze(0) < sizes[.., s].unsqueeze(1)).to(dtype).unsqueeze(1);      // B × 1 × D
                var order = setup.Orders!.narrow(1, family.SubsetPairOffset[s], members.Length).to(ScalarType.Int64);
                return Back(fill.unsqueeze(-1) * Relax.PermutationMatrix(order, dtype));                  // Y = diag(t) P
            }).ToArray();
        }
        var (freeHere, sharedHere) = (Back(free), Back(shared));
        return new ChainResult(
            Enumerable.Range(0, m).Select(j => freeHere.select(1, j)).ToArray(),
            Enumerable.Range(0, m).Select(j => sharedHere.select(1, j)).ToArray(),
            Back(klSize), Back(klSelection), Back(klShared), Back(sizes), selections, link is null ? [] : [link]);
    }

    /// <summary>The chain with libtorch ops, subset by subset: any device, and the relaxed forward (<see cref="StepContext.Relaxed"/>).</summary>
    ChainResult ReferenceChain(Tensor muAll, Tensor varAll, Tensor sizeLogits, Tensor scores, Tensor available, ChainNoise chainNoise, StepContext context)
    {
        int m = Config.Modalities, d = latentDim;
        long batch = available.shape[0];
        var dtype = available.dtype; var device = available.device;
        // a_j: which factors of modality j are still free (starts at all ones).
        var free = Enumerable.Range(0, m).Select(_ => ones(batch, d, dtype: dtype, device: device)).ToArray();
        var sharedContribution = Enumerable.Range(0, m).Select(_ => zeros(batch, d, dtype: dtype, device: device)).ToArray();
        var ks = arange(d + 1, dtype: dtype, device: device);                               // 0..D
        var fillMatrix = (ks.unsqueeze(1) > arange(d, dtype: dtype, device: device).unsqueeze(0)).to(dtype); // (D+1) × D: k > r
        var klSize = zeros(batch, dtype: dtype, device: device);
        var klSelection = zeros(batch, dtype: dtype, device: device);
        var klShared = zeros(batch, dtype: dtype, device: device);
        var sizes = new List<Tensor>();
        var selections = new List<Tensor>();
        double logFactD = Hypergeometric.LogGamma(d + 1);

        for (int s = 0; s < family.Subsets.Count; s++)
        {
            int[] members = family.Subsets[s];
            var memberIndex = tensor(members.Select(x => (long)x).ToArray(), device: device);
            var availA = available.index_select(1, memberIndex);                          // B × |A|
            var anyAvailable = (availA.sum(-1) > 0).to(dtype);                            // B

            // Capacity: no member can give more factors than it has left; nothing when no member is available.
            var freeA = stack(members.Select(j => free[j]).ToArray(), 1);                 // B × |A| × D
            var capacity = freeA.sum(-1).round().amin(-1) * anyAvailable;                 // B
            var tooLarge = ks.unsqueeze(0) > capacity.unsqueeze(1);                       // B × (D+1)
            var logits = sizeLogits[.., s, ..].masked_fill(tooLarge, -1e9);
            var noise = chainNoise.Size?.select(1, s);
            var onehot = Relax.GumbelSoftmaxStraightThrough(logits, context.TauSize, noise, context.Relaxed); // B × (D+1)
            var n = (onehot * ks).sum(-1);                                                // B
            var fill = onehot.matmul(fillMatrix);                                         // B × D: t_{A,r}
            sizes.Add(n);

            var prior = tensor(logPrior[s], dtype: dtype, device: device);
            klSize = klSize + anyAvailable * Hypergeometric.KlCategorical(logits, prior);

            // Selection of n_A factors per member (available or not): straight-through NeuralSort on scores that
            // push taken factors to the end; the hard sort also masks them outright so selections always partition.
            var w = scores.narrow(1, family.SubsetPairOffset[s], members.Length);          // B × |A| × D
            var wMasked = w + (freeA + 1e-6).log();
            if (takenPenalty > 0) wMasked = wMasked + takenPenalty * (freeA - 1);
            var perturbed = context.Training
                ? wMasked + chainNoise.Selection!.narrow(1, family.SubsetPairOffset[s], members.Length)
                : wMasked;
            var sortKey = perturbed.detach() - 1e4 * (freeA.detach() < 0.5).to(dtype);
            var permutation = SortPermutation.Create(perturbed, sortKey, context.TauSelection, context.Relaxed); // P_{j,A}
            var fillA = fill.unsqueeze(1);                                                  // B × 1 × D
            if (context.RecordRelation) selections.Add(fillA.unsqueeze(-1) * permutation.Matrix(dtype)); // Y = diag(t) P

            // P·[μ, σ², w̃] (Y x = t ⊙ P x) and Pᵀ·[t, t ⊙ z_S] (1ᵀY: the factors each member used; Yᵀ z_S: its share of
            // the subspace). Straight-through, the forward values are a gather and a scatter by the hard order, and
            // P̂'s gradient comes in zero-valued corrections computed in one pass over P̂ from both right-hand sides;
            // Pᵀ's right-hand side is known before its gradient path is built because the corrections add nothing.
            var byMember = stack([muAll.index_select(1, memberIndex), varAll.index_select(1, memberIndex), wMasked], -1);  // B × |A| × D × 3
            var eps = chainNoise.Eps?.select(1, s);
            Tensor ByFactorInput(Tensor zS) => stack([fill, fill * zS], -1).unsqueeze(1).expand(-1, members.Length, -1, -1);
            Tensor byRank;
            Tensor? correctionR = null;
            if (permutation.Relaxed) byRank = permutation.Apply(byMember);
            else
            {
                byRank = permutation.Gather(byMember);
                if (permutation.NeedsCorrections)
                {
                    Tensor zValue;
                    using (no_grad()) zValue = Subspace(byRank, fill, availA, anyAvailable, eps).ZS;
                    var (cx, cr) = permutation.Corrections(byMember, ByFactorInput(zValue));
                    byRank = byRank + cx;
                    correctionR = cr;
                }
            }

            // Selection KL, one-sample: log r(y) = PL(top-n) + log n!, log q(y) = −log C(D, n).
            var logR = Relax.PlackettLuceLogProbSorted(byRank.select(-1, 2), fillA) + (n + 1).lgamma().unsqueeze(1);
            var logQ = -(logFactD - (n + 1).lgamma() - (d - n + 1).lgamma());               // B
            klSelection = klSelection + (logR - logQ.unsqueeze(1)).sum(-1);

            var (meanS, varS, zS) = Subspace(byRank, fill, availA, anyAvailable, eps);
            klShared = klShared + (fill * KlStandardNormal(meanS, varS.log())).sum(-1);
            var byFactor = permutation.Relaxed ? permutation.ApplyTransposed(ByFactorInput(zS)) : permutation.Scatter(ByFactorInput(zS));
            if (correctionR is not null) byFactor = byFactor + correctionR;
            for (int a = 0; a < members.Length; a++)
            {
                int j = members[a];
                free[j] = (free[j] - byFactor[.., a, .., 0]).clamp(0, 1);
                sharedContribution[j] = sharedContribution[j] + byFactor[.., a, .., 1];
            }
        }

        return new ChainResult(free, sharedContribution, klSize, klSelection, klShared, stack(sizes, 1), context.RecordRelation ? selections.ToArray() : null, [sizeLogits, scores]);
    }

    /// <summary>
    /// Product of experts of the selected factors of the available members, rank by rank (rows ≥ n_A padded with unit
    /// variance and zeroed in the sample): the subspace's posterior mean and variance and its sample z_S = fill ⊙ (mean + σ·ε).
    /// </summary>
    static (Tensor Mean, Tensor Var, Tensor ZS) Subspace(Tensor byRank, Tensor fill, Tensor availA, Tensor anyAvailable, Tensor? eps)
    {
        var fillA = fill.unsqueeze(1);
        var muSel = fillA * byRank.select(-1, 0);                                        // B × |A| × D
        var varSel = fillA * byRank.select(-1, 1) + (1 - fill).unsqueeze(1);
        var weight = availA.unsqueeze(-1);
        var precision = (weight / varSel).sum(1) + (1 - anyAvailable).unsqueeze(-1);     // B × D
        var meanS = (weight * muSel / varSel).sum(1) / precision;
        var varS = 1 / precision;
        var zS = eps is null ? meanS : meanS + varS.sqrt() * eps;
        return (meanS, varS, zS * fill);
    }
}
