using MrVae.Model.Numerics;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MrVae.Model.Objectives;

/// <summary>
/// mrVAE with aligned shared subspaces (docs/model.md): latent position d ∈ {0..D−1} holds one shared variable whose
/// members A_d = {j : g_{d,j} = 1} are given by a learned membership matrix G ∈ {0,1}^{D×M}. The positions with
/// A_d = A form the subspace S_A of every member of A at once, so n_A = #{d : A_d = A} and the same factors fill S_A
/// in each member: rank misalignment cannot happen. At a position the available members' experts are fused by a
/// product of experts and every member decodes the fused sample; a non-member keeps its own private factor there
/// (a position with one member is that member's private factor). The membership posterior is a learned table of
/// independent Bernoullis, independent of the input, so the structure does not change with the modalities present.
/// </summary>
public sealed class MrVaeObjective : CoordinatorObjective
{
    readonly SubsetFamily family;
    readonly int latentDim;
    /// <summary>φ: D × M membership parameters; the logits are κ·φ.</summary>
    readonly Parameter membershipParameters;
    /// <summary>κ: Adam moves each parameter by about the learning rate a step, so the logits move κ times faster than the networks' weights.</summary>
    const double LogitScale = 30;
    /// <summary>p(own variables of j | shared variables of j) per modality, when <see cref="ModelConfig.ConditionalPrivatePrior"/>; else null.</summary>
    readonly ModuleList<OwnVariablePrior>? ownPriors;

    public MrVaeObjective(ModelConfig config) : base(nameof(MrVaeObjective), config)
    {
        family = config.SharedSubsets();
        latentDim = config.LatentDim;
        // Every membership starts at ½: each position is half shared by all, so the encoders' experts meet in the
        // products of experts from the first step and align their factors there.
        membershipParameters = new Parameter(config.InitialMemberSets ? InitialMemberSets() : zeros(latentDim, config.Modalities));
        if (config.ConditionalPrivatePrior)
            ownPriors = new ModuleList<OwnVariablePrior>(Enumerable.Range(0, config.Modalities).Select(_ => new OwnVariablePrior(latentDim)).ToArray());
        RegisterComponents();
    }

    /// <summary>
    /// φ at the start when <see cref="ModelConfig.InitialMemberSets"/>: shareable position d starts with the members of one
    /// shared subset (smallest first, cycling through the family): logit +2 inside (q ≈ 0.88), −2 outside.
    /// </summary>
    Tensor InitialMemberSets()
    {
        var order = family.Subsets.Reverse().ToArray();
        var logits = new float[latentDim * Config.Modalities];
        for (int d = 0; d < latentDim - Config.PrivatePositions; d++)
            for (int j = 0; j < Config.Modalities; j++)
                logits[d * Config.Modalities + j] = (order[d % order.Length].Contains(j) ? 2f : -2f) / (float)LogitScale;
        return ManagedArrays.ToTensor(logits, [latentDim, Config.Modalities]);
    }

    public SubsetFamily Family => family;

    /// <summary>Positions that may be shared: all but the last <see cref="ModelConfig.PrivatePositions"/>.</summary>
    int Shareable => latentDim - Config.PrivatePositions;

    /// <summary>κ·φ; the private positions' logits are −10⁴ (q = 0: no modality is ever a member there).</summary>
    Tensor MembershipLogits => Config.PrivatePositions == 0 ? membershipParameters * LogitScale
        : cat([membershipParameters.narrow(0, 0, Shareable) * LogitScale,
            full(Config.PrivatePositions, Config.Modalities, -1e4, dtype: membershipParameters.dtype, device: membershipParameters.device)], 0);

    /// <summary>q(j ∈ A_d) (D × M), detached.</summary>
    public Tensor Membership() { using var _ = no_grad(); return MembershipLogits.sigmoid(); }

    /// <summary>The most probable structure (D × M, 0/1): j ∈ A_d iff q(j ∈ A_d) ≥ ½, the mode of independent memberships.</summary>
    static Tensor MostProbable(Tensor logits) => (logits >= 0).to(logits.dtype);

    /// <summary>The most probable structure as rows of positions: [d][j] is whether j ∈ A_d (D × M).</summary>
    public bool[][] MostProbableMembers()
    {
        using var _ = no_grad();
        using var hard = MostProbable(MembershipLogits).to(ScalarType.Int64).cpu();
        var rows = hard.data<long>().ToArray();
        int m = Config.Modalities;
        return Enumerable.Range(0, latentDim).Select(d => Enumerable.Range(0, m).Select(j => rows[d * m + j] == 1).ToArray()).ToArray();
    }

    /// <summary>q(A_d = A) for every position and shared subset (D × S), from the independent memberships.</summary>
    Tensor SubsetProbabilities()
    {
        using var _ = no_grad();
        var g = Membership().to(ScalarType.Float64);
        var columns = family.Subsets.Select(members =>
        {
            var p = ones(latentDim, dtype: ScalarType.Float64);
            for (int j = 0; j < Config.Modalities; j++) p = p * (members.Contains(j) ? g[.., j] : 1 - g[.., j]);
            return p;
        }).ToArray();
        return stack(columns, 1);
    }

    /// <summary>E_q[n_A] per shared subset (S).</summary>
    public double[] ExpectedSizes()
    {
        using var sums = SubsetProbabilities().sum(dim: 0).cpu();
        return sums.data<double>().ToArray();
    }

    /// <summary>n_A of the most probable structure (S): the positions whose most probable member set is A. Evaluation and generation use this structure.</summary>
    public int[] MostProbableSizes()
    {
        var key = MostProbableMembers().Select(row => string.Join(",", Enumerable.Range(0, row.Length).Where(j => row[j]))).ToArray();
        return family.Subsets.Select(a => key.Count(k => k == string.Join(",", a))).ToArray();
    }

    /// <summary>
    /// The forward's membership weights (D × M): the posterior probabilities in training (a soft relaxation; hard
    /// straight-through weights were tried and let the memberships drift to ½, docs/experiments.md), the most
    /// probable structure in evaluation.
    /// </summary>
    static Tensor MembershipWeights(Tensor logits, StepContext context) => context.Training ? logits.sigmoid() : MostProbable(logits);

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
        var muAll = StackModalities(mu, batch, d, dtype, device);            // B × M × D
        var logVarAll = StackModalities(logVar, batch, d, dtype, device);
        var precisionAll = (-logVarAll).exp();
        var klMembers = KlStandardNormal(muAll, logVarAll);                  // B × M × D
        // With initial member sets the memberships hold through the structure warm-up, so the encoders align within them.
        bool holdMembers = Config.InitialMemberSets && context.Training && context.StructureScale < 1;
        var logits = (holdMembers ? MembershipLogits.detach() : MembershipLogits).to(dtype);                       // D × M
        var g = MembershipWeights(logits, context).t();                      // M × D
        var ownPriorMembers = ownPriors is null ? null : MostProbable(logits).t();   // M × D: the own prior's context positions

        var perViewInputs = new List<Tensor?[]>();
        Tensor loss = zeros(1, dtype: dtype, device: device).squeeze();
        var terms = new Dictionary<string, Tensor>();
        for (int v = 0; v < views.Count; v++)
        {
            var k = views[v];                                                // B × M
            // Whose own variables come from the posterior: the available members, less those the subset view drops.
            var ownFromPosterior = v > 0 && Config.SubsetOwnDropout > 0
                ? k * (DeviceRandom.Rand(k.shape, dtype, device, context.Generator) >= Config.SubsetOwnDropout).to(dtype)
                : k;
            var w = g.unsqueeze(0) * k.unsqueeze(-1);                        // B × M × D: available members
            var (meanS, varS, none) = FuseMembers(w, muAll, precisionAll);
            var klShared = ((1 - none) * KlStandardNormal(meanS, varS.log())).sum(1);
            // The own variables' prior: N(0, 1), or with ConditionalPrivatePrior N(m_j, v_j) given one draw of the shared variables
            // at j's positions in the most probable structure: with the soft memberships' weights the prior read, amplified, what
            // non-members put into a position at a small weight, and the test loss rose while the training loss fell (docs/experiments.md).
            Tensor? ownPriorMean = null, ownPriorLogVar = null;                                       // B × M × D
            if (ownPriors is not null)
            {
                var shared = context.SampleLatents ? meanS + varS.sqrt() * DeviceRandom.Randn(meanS.shape, dtype, device, context.Generator) : meanS;
                (ownPriorMean, ownPriorLogVar) = OwnPriors(ownPriorMembers!, shared);
            }
            var klOwn = ownPriorMean is null ? klMembers : KlNormal(muAll, logVarAll, ownPriorMean, ownPriorLogVar!);
            var klPrivate = ((1 - g).unsqueeze(0) * klOwn * ownFromPosterior.unsqueeze(-1)).sum([1, 2]);

            // z̃_j at position d: the shared variable where j is a member, its own one elsewhere. With soft memberships
            // the two Gaussians are blended by moments (mean and variance each a convex combination), so a blend
            // never sees less noise than either part.
            var inputs = new Tensor?[m];
            for (int j = 0; j < m; j++)
            {
                if (!decode[j]) continue;
                var availJ = ownFromPosterior[.., j].unsqueeze(-1) > 0.5;
                var ownMean = where(availJ, muAll[.., j, ..], ownPriorMean is null ? zeros_like(meanS) : ownPriorMean[.., j, ..]);
                var ownVar = where(availJ, logVarAll[.., j, ..].exp(), ownPriorLogVar is null ? ones_like(varS) : ownPriorLogVar[.., j, ..].exp());
                var gj = g[j].unsqueeze(0);
                var mean = (1 - gj) * ownMean + gj * meanS;
                inputs[j] = context.SampleLatents
                    ? mean + ((1 - gj) * ownVar + gj * varS).sqrt() * DeviceRandom.Randn(mean.shape, dtype, device, context.Generator)
                    : mean;
            }
            perViewInputs.Add(inputs);
            var klSharedMean = klShared.mean(); var klPrivateMean = klPrivate.mean();
            loss = loss + weights[v] * Beta(context) * (klSharedMean + klPrivateMean);
            string suffix = v == 0 ? "" : "_subset";
            terms["kl_private" + suffix] = klPrivateMean.detach();
            terms["kl_shared" + suffix] = klSharedMean.detach();
        }
        if (context.Training && Config.MemberMarginalKl)
        {
            // The aggregate posterior of each expert over the samples where it is available, matched by moments:
            // mean E[μ], variance Var[μ] + E[σ²]; its KL from N(0, 1) is 0 for a calibrated expert whatever it says.
            // A modality that no sample holds gets variance 1 (not 0, whose log is −∞) and is charged nothing.
            var present = available.t().unsqueeze(-1);                                                   // M × B × 1
            var held = present.sum(1);                                                                   // M × 1
            var count = held.clamp_min(1);
            var muT = muAll.transpose(0, 1); var varT = logVarAll.exp().transpose(0, 1);                 // M × B × D
            var mean = (present * muT).sum(1) / count;                                                   // M × D
            var spread = (present * (muT - mean.unsqueeze(1)).square()).sum(1) / count + (present * varT).sum(1) / count + (held < 0.5).to(dtype);
            var klMarginal = KlStandardNormal(mean, spread.log());                                       // M × D
            var klMemberMarginal = (g * klMarginal * (held > 0.5).to(dtype)).sum();
            loss = loss + Beta(context) * klMemberMarginal;
            terms["kl_member_marginal"] = klMemberMarginal.detach();
        }
        var decoderInputs = new Tensor?[m];
        for (int j = 0; j < m; j++)
            if (decode[j]) decoderInputs[j] = stack(perViewInputs.Select(v => v[j]!).ToArray(), 0);

        // The membership's KL against independent Bernoulli(ρ) priors over the shareable positions, once per step, weighted β_n per
        // sample like the paper's size term; the structure warm-up scales it, so the prior does not prune shared positions before
        // the encoders carry content. ReverseStructureKl: KL(p ‖ q), whose gradient β_n (q − ρ) per logit survives saturation.
        var shareable = logits.narrow(0, 0, Shareable);
        var q = shareable.sigmoid();
        // ρ per membership (AgreementPrior) or one constant; a 0-d tensor computes as the scalar would.
        Tensor rho, logRho, logNotRho;
        if (Config.AgreementPrior)
        {
            rho = AgreementPrior(logits, muAll, logVarAll, available).narrow(0, 0, Shareable);
            logRho = rho.log(); logNotRho = (1 - rho).log();
        }
        else (rho, logRho, logNotRho) = (tensor(Config.MembershipPrior), tensor(Math.Log(Config.MembershipPrior)), tensor(Math.Log(1 - Config.MembershipPrior)));
        var klStructure = (Config.ReverseStructureKl
            ? -(rho * nn.functional.logsigmoid(shareable) + (1 - rho) * nn.functional.logsigmoid(-shareable)) + (rho * logRho + (1 - rho) * logNotRho)
            : q * (nn.functional.logsigmoid(shareable) - logRho) + (1 - q) * (nn.functional.logsigmoid(-shareable) - logNotRho)).sum();
        loss = loss + Config.BetaSize * context.StructureScale * klStructure;
        terms["kl_structure"] = klStructure.detach();

        var output = new CoordinatorOutput { DecoderInputs = decoderInputs, Loss = loss, ViewWeights = weights.ToArray() };
        foreach (var (key, t) in terms) output.Terms[key] = t;
        return output;
    }

    /// <summary>Agreement r² from which a modality counts as saying what a position's other members say (docs/experiments.md: true members 0.4–0.7, members that say nothing ≤ 0.1).</summary>
    const double AgreementThreshold = 0.2;

    /// <summary>
    /// The membership prior ρ_{d,j} (D × M, detached): 1 − ρ where j's code at d agrees with the position's other members
    /// under the most probable structure (<see cref="Agreement"/>) or j's whole code predicts what they say
    /// (<see cref="Predictability"/>), either r² at least <see cref="AgreementThreshold"/>; ρ elsewhere. A member that
    /// cannot say what the others say is pushed out; a non-member that can is pulled in, though it says it elsewhere now.
    /// </summary>
    Tensor AgreementPrior(Tensor logits, Tensor muAll, Tensor logVarAll, Tensor available)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        double rho = Config.MembershipPrior;
        var structure = MostProbable(logits).t();
        var agrees = (Agreement(structure, muAll, logVarAll, available) >= AgreementThreshold)
            .logical_or(Predictability(structure, muAll, logVarAll, available) >= AgreementThreshold);
        // Agreement needs two parties that say something at d: j and another member, or two other members (a silent j
        // that can say it elsewhere). A member that dropped out of a pair stays a party, so a pair can re-form; a position
        // where one member speaks and the others are silent shares nothing.
        var speaks = (Information(muAll, logVarAll, available) >= InformationFloor).to(structure.dtype);          // M × D
        var speakingMembers = (structure * speaks).sum(0L, keepdim: true);                                        // 1 × D
        var parties = speakingMembers - structure * speaks + speaks;                                              // M × D
        agrees = agrees.logical_and((parties >= 2).t());
        return where(agrees, full_like(logits, 1 - rho), full_like(logits, rho)).MoveToOuterDisposeScope();
    }

    /// <summary>Information (nats) from which a member counts as saying something at a position: a signal-to-noise ratio of about ½ (docs/experiments.md: dead positions' members 0.01–0.14, members that agree 0.2 and more).</summary>
    const double InformationFloor = 0.2;

    /// <summary>
    /// I_{j,d} (M × D): what j's expert says at d over the samples holding j, ½ log(1 + Var[μ] / E[σ²]) nats (a Gaussian
    /// channel: the spread of the means over the data against the mean posterior variance); 0 with fewer than 2 such samples.
    /// </summary>
    public static Tensor Information(Tensor muAll, Tensor logVarAll, Tensor available)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var w = available.t().unsqueeze(-1);                                          // M × B × 1
        var n = w.sum(1);                                                             // M × 1
        var mu = muAll.transpose(0, 1); var variance = logVarAll.exp().transpose(0, 1);   // M × B × D
        var mean = (w * mu).sum(1) / n.clamp_min(1);
        var spread = (w * (mu - mean.unsqueeze(1)).square()).sum(1) / (n - 1).clamp_min(1);
        var noise = (w * variance).sum(1) / n.clamp_min(1);
        var info = 0.5 * (1 + spread / noise).log();
        return where(n >= 2, info, zeros_like(info)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// r²_{d,j} (D × M): the share of the variance of j's expert mean at d, over the samples holding j and another member of d,
    /// that the product-of-experts mean of d's other members explains (their squared correlation); 0 with fewer than 3 such
    /// samples. <paramref name="member"/>: M × D, 0/1; <paramref name="muAll"/>, <paramref name="logVarAll"/>: B × M × D;
    /// <paramref name="available"/>: B × M, 0/1.
    /// </summary>
    public static Tensor Agreement(Tensor member, Tensor muAll, Tensor logVarAll, Tensor available)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        int m = (int)member.shape[0];
        var precisionAll = (-logVarAll).exp();
        var columns = new Tensor[m];
        for (int j = 0; j < m; j++)
        {
            var (consensus, none) = OthersConsensus(member, j, muAll, precisionAll, available);   // B × D
            var valid = available[.., j].unsqueeze(-1) * (1 - none);                      // B × D: j and another member held
            var n = valid.sum(0L);                                                       // D
            var count = n.clamp_min(1);
            var x = muAll[.., j, ..];
            var xc = valid * (x - (valid * x).sum(0L) / count);
            var yc = valid * (consensus - (valid * consensus).sum(0L) / count);
            var sxx = xc.square().sum(0L); var syy = yc.square().sum(0L);
            var r2 = ((xc * yc).sum(0L).square() / (sxx * syy + 1e-30)).clamp(0, 1);
            columns[j] = where((n >= 3).logical_and(sxx > 1e-12).logical_and(syy > 1e-12), r2, zeros_like(r2));
        }
        return stack(columns, 1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// ρ²_{d,j} (D × M): how much of the product-of-experts mean of d's other members j's whole code predicts, over the
    /// samples holding j and another member of d: the leave-one-out r² of a ridge regression of that mean on j's expert
    /// means at every position (penalty n: a unit prior on each coefficient of a code whose informative means spread about
    /// 1; a position that says nothing barely moves the fit), 0 below 0 or with fewer than 8 such samples. Left-out errors
    /// keep chance fits of a batch of 64 with 64 positions near 0. Unlike <see cref="Agreement"/> it sees what j could
    /// say at d, not only what it says there now. <paramref name="member"/>: M × D, 0/1; <paramref name="muAll"/>: B × M × D;
    /// <paramref name="available"/>: B × M, 0/1.
    /// </summary>
    public static Tensor Predictability(Tensor member, Tensor muAll, Tensor logVarAll, Tensor available)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();   // D × B × D intermediates per modality: freed here, not at the caller's scope end
        int m = (int)member.shape[0];
        var muAll64 = muAll.to(ScalarType.Float64);
        var precisionAll = (-logVarAll.to(ScalarType.Float64)).exp();
        var member64 = member.to(ScalarType.Float64); var available64 = available.to(ScalarType.Float64);
        long d = muAll.shape[2];
        var columns = new Tensor[m];
        for (int j = 0; j < m; j++)
        {
            var (consensus, none) = OthersConsensus(member64, j, muAll64, precisionAll, available64);   // B × D
            var w = (available64[.., j].unsqueeze(-1) * (1 - none)).t().unsqueeze(-1);           // D × B × 1: target d's samples
            var n = w.sum([1, 2]);                                                                // D
            var count = n.clamp_min(1).view(-1, 1, 1);
            var x = muAll64[.., j, ..].unsqueeze(0);                                             // 1 × B × D: j's whole code
            var xc = w * (x - (w * x).sum(1, keepdim: true) / count);                              // D × B × D
            var y = consensus.t().unsqueeze(-1);                                                  // D × B × 1
            var yc = w * (y - (w * y).sum(1, keepdim: true) / count);
            var penalised = xc.transpose(1, 2).matmul(xc) + count * eye(d, dtype: xc.dtype, device: xc.device);
            var smoother = linalg.solve(penalised, xc.transpose(1, 2));                           // D × D × B: (X'X + nI)⁻¹ X'
            var leverage = (xc * smoother.transpose(1, 2)).sum(-1, keepdim: true) + w / count;
            var leftOut = w * (yc - xc.matmul(smoother.matmul(yc))) / (1 - leverage).clamp_min(1e-6);
            var tss = yc.square().sum([1, 2]);
            var r2 = (1 - leftOut.square().sum([1, 2]) / (tss + 1e-30)).clamp(0, 1);
            columns[j] = where((n >= 8).logical_and(tss > 1e-12), r2, zeros_like(r2));
        }
        return stack(columns, 1).to(muAll.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>The product-of-experts mean of every position's members other than <paramref name="j"/> (B × D), and where none of them is available (B × D).</summary>
    static (Tensor Consensus, Tensor None) OthersConsensus(Tensor member, int j, Tensor muAll, Tensor precisionAll, Tensor available)
    {
        var others = member.clone(); others[j] = zeros_like(others[j]);
        var (consensus, _, none) = FuseMembers(others.unsqueeze(0) * available.unsqueeze(-1), muAll, precisionAll);
        return (consensus, none);
    }

    /// <summary>
    /// The shared variable at every position: the product of the experts weighted by <paramref name="w"/> (B × M × D,
    /// memberships times availability), the prior where no member is available (none, B × D; 0/1 when w is).
    /// </summary>
    static (Tensor Mean, Tensor Var, Tensor None) FuseMembers(Tensor w, Tensor muAll, Tensor precisionAll)
    {
        var none = (1 - w).prod(1);
        var precision = (w * precisionAll).sum(1) + none;
        return ((w * muAll * precisionAll).sum(1) / precision, 1 / precision, none);
    }

    /// <summary>
    /// (mean, log variance) of every modality's own variables given the shared draw <paramref name="shared"/> (… × D) at
    /// the positions where it is a member (<paramref name="member"/>, M × D, 0/1): … × M × D each.
    /// </summary>
    (Tensor Mean, Tensor LogVar) OwnPriors(Tensor member, Tensor shared)
    {
        var parts = Enumerable.Range(0, Config.Modalities).Select(j => ownPriors![j].forward(member[j], shared)).ToArray();
        return (stack(parts.Select(p => p.Mean).ToArray(), -2), stack(parts.Select(p => p.LogVar).ToArray(), -2));
    }

    /// <summary>KL(N(μ, e^logVar) ‖ N(m, e^priorLogVar)) elementwise.</summary>
    static Tensor KlNormal(Tensor mu, Tensor logVar, Tensor priorMean, Tensor priorLogVar)
        => 0.5 * (priorLogVar - logVar + (logVar.exp() + (mu - priorMean).square()) / priorLogVar.exp() - 1);

    /// <summary>Under the most probable structure: one N(0, 1) draw per position shared by its members, an own draw elsewhere (from the own variables' prior).</summary>
    public override Tensor[] PriorDecoderInputs(long batch, Generator generator, ScalarType dtype, Device device)
    {
        var member = MostProbable(MembershipLogits).to(dtype, device).t();                           // M × D
        var shared = DeviceRandom.Randn([batch, latentDim], dtype, device, generator);
        var (priorMean, priorLogVar) = ownPriors is null ? (null, null) : OwnPriors(member, shared);
        return Enumerable.Range(0, Config.Modalities).Select(j =>
        {
            var own = DeviceRandom.Randn([batch, latentDim], dtype, device, generator);
            if (priorMean is not null) own = priorMean[.., j, ..] + (0.5 * priorLogVar![.., j, ..]).exp() * own;
            return member[j] * shared + (1 - member[j]) * own;
        }).ToArray();
    }

    /// <summary>
    /// Under the most probable structure the latents are a shared variable s_d at every position with members
    /// (posterior: the members' product of experts) and an own variable u_{j,d} for every non-member (posterior: q_j).
    /// </summary>
    public override (Tensor[] DecoderInputs, Tensor LogWeight) PosteriorSamples(Tensor[] mu, Tensor[] logVar, int samples, Generator generator)
    {
        int m = Config.Modalities;
        long batch = mu[0].shape[0];
        var dtype = mu[0].dtype; var device = mu[0].device;
        var member = MostProbable(MembershipLogits).to(dtype, device).t();                           // M × D
        var muAll = stack(mu, 1); var logVarAll = stack(logVar, 1); var varAll = logVarAll.exp();   // B × M × D
        var (meanS, varS, none) = FuseMembers(member.unsqueeze(0), muAll, (-logVarAll).exp());
        var hasMember = 1 - none;                                                                    // 1 × D
        var s = meanS + varS.sqrt() * DeviceRandom.Randn([samples, batch, latentDim], dtype, device, generator);
        var logWeight = (hasMember * (LogStandardNormal(s) - LogNormal(s, meanS, varS))).sum(-1);   // K × B
        var (priorMean, priorLogVar) = ownPriors is null ? (null, null) : OwnPriors(member, s);      // K × B × M × D
        var inputs = new Tensor[m];
        for (int j = 0; j < m; j++)
        {
            var u = mu[j] + varAll[.., j].sqrt() * DeviceRandom.Randn([samples, batch, latentDim], dtype, device, generator);
            var logPrior = priorMean is null ? LogStandardNormal(u) : LogNormal(u, priorMean[.., .., j, ..], priorLogVar![.., .., j, ..].exp());
            logWeight = logWeight + ((1 - member[j]) * (logPrior - LogNormal(u, mu[j], varAll[.., j]))).sum(-1);
            inputs[j] = member[j] * s + (1 - member[j]) * u;
        }
        return (inputs, logWeight);
    }
}

/// <summary>
/// p(u | s) = N(A s, diag(1 − ‖A_d‖²)) of a modality's own variables u given the shared variables s at its member
/// positions (<see cref="ModelConfig.ConditionalPrivatePrior"/>), with A_d = W_d / √(1 + ‖W_d‖²) over those positions'
/// columns of a learned W (D × D, starting at 0: N(0, 1)), and N(0, 1) at the member positions themselves.
/// Under s ~ N(0, I) every u_d stays N(0, 1), whatever W:
/// the prior learns only how the own variables go with the shared ones, not a cheaper marginal for them (a free network
/// prior did, and the own variables drew the content out of the shared ones in short runs, docs/experiments.md).
/// </summary>
public sealed class OwnVariablePrior : nn.Module<Tensor, Tensor, (Tensor Mean, Tensor LogVar)>
{
    readonly Parameter coupling;

    public OwnVariablePrior(int latentDim) : base(nameof(OwnVariablePrior))
    {
        coupling = nn.Parameter(zeros(latentDim, latentDim));
        RegisterComponents();
    }

    /// <param name="member">D: 1 at the modality's member positions, 0 elsewhere.</param>
    /// <param name="shared">… × D: a draw of the shared variables.</param>
    public override (Tensor Mean, Tensor LogVar) forward(Tensor member, Tensor shared)
    {
        // Rows of the member positions stay N(0, 1): there the own variable is the relaxation's remainder (weight 1 − g),
        // and a prior that read the shared draw at its own position would make a lone member's dropped own draw carry it.
        using var w = coupling * member.unsqueeze(0) * (1 - member).unsqueeze(1);
        using var scale = 1 + w.square().sum(-1);                                   // D: 1 + ‖W_d‖²
        var mean = shared.matmul(w.t()) / scale.sqrt();
        return (mean, (-scale.log()).expand_as(mean));
    }
}
