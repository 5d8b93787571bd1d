using MrVae.Model.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Objectives;

/// <summary>Shared machinery of the one-latent-space baselines: product-of-experts fusion over masks of modalities.</summary>
public abstract class JointLatentObjective : CoordinatorObjective
{
    protected JointLatentObjective(string name, ModelConfig config) : base(name, config) { }

    /// <summary>
    /// Gaussian product of experts for each row of <paramref name="masks"/> (B × S × M, 0/1): precision-weighted
    /// mean and variance over B × S × D. With <paramref name="priorExpert"/>, N(0, I) joins every product; rows with
    /// no expert and no prior get the standard normal (callers never use them).
    /// </summary>
    protected static (Tensor Mean, Tensor Var) ProductOfExperts(Tensor muAll, Tensor varAll, Tensor masks, bool priorExpert)
    {
        var precisionTerms = 1 / varAll;                                                  // B × M × D
        var precision = einsum("bsm,bmd->bsd", masks, precisionTerms);
        var weighted = einsum("bsm,bmd->bsd", masks, muAll * precisionTerms);
        var empty = (masks.sum(-1, keepdim: true) == 0).to(muAll.dtype);                  // B × S × 1
        precision = precision + (priorExpert ? 1.0 : empty);
        return (weighted / precision, 1 / precision);
    }

    protected (Tensor MuAll, Tensor VarAll, Tensor LogVarAll) Stacked(Tensor?[] mu, Tensor?[] logVar, Tensor available)
    {
        long batch = available.shape[0];
        var muAll = StackModalities(mu, batch, Config.LatentDim, available.dtype, available.device);
        var logVarAll = StackModalities(logVar, batch, Config.LatentDim, available.dtype, available.device);
        return (muAll, logVarAll.exp(), logVarAll);
    }

    protected static Tensor SampleGaussian(Tensor mean, Tensor var, StepContext context)
        => Sample(mean, var.log(), context);

    protected CoordinatorOutput SingleLatentOutput(List<Tensor> zPerView, List<double> weights, bool[] decode, Tensor loss, Dictionary<string, Tensor> terms)
    {
        var decoderInputs = new Tensor?[Config.Modalities];
        var stacked = stack(zPerView.ToArray(), 0);                                      // V × B × D
        for (int j = 0; j < decoderInputs.Length; j++)
            if (decode[j]) decoderInputs[j] = stacked.alias();
        var output = new CoordinatorOutput { DecoderInputs = decoderInputs, Loss = loss, ViewWeights = weights.ToArray() };
        foreach (var (k, t) in terms) output.Terms[k] = t;
        return output;
    }

    /// <summary>Every modality decodes the same z ~ N(0, I).</summary>
    public override Tensor[] PriorDecoderInputs(long batch, Generator generator, ScalarType dtype, Device device)
    {
        var z = DeviceRandom.Randn([batch, Config.LatentDim], dtype, device, generator);
        return Enumerable.Range(0, Config.Modalities).Select(_ => z.alias()).ToArray();
    }

    public override (Tensor[] DecoderInputs, Tensor LogWeight) PosteriorSamples(Tensor[] mu, Tensor[] logVar, int samples, Generator generator)
    {
        var available = ones(mu[0].shape[0], Config.Modalities, dtype: mu[0].dtype, device: mu[0].device);
        var (muAll, varAll, _) = Stacked(mu, logVar, available);
        var (mean, var) = JointPosteriorComponents(muAll, varAll);
        var (z, logQ) = MixtureSamples(mean, var, samples, generator);
        var logWeight = LogStandardNormal(z).sum(-1) - logQ;
        return (Enumerable.Range(0, Config.Modalities).Select(_ => z.alias()).ToArray(), logWeight);
    }

    /// <summary>The joint posterior q(z | X) given every modality as an equal-weight mixture of Gaussians: means and variances B × C × D.</summary>
    protected abstract (Tensor Mean, Tensor Var) JointPosteriorComponents(Tensor muAll, Tensor varAll);

    /// <summary>
    /// K draws from the equal-weight Gaussian mixture with components <paramref name="mean"/>, <paramref name="var"/>
    /// (B × C × D): z (K × B × D) and log q(z) under the whole mixture (K × B).
    /// </summary>
    protected static (Tensor Z, Tensor LogQ) MixtureSamples(Tensor mean, Tensor var, int samples, Generator generator)
    {
        long batch = mean.shape[0], components = mean.shape[1], dim = mean.shape[2];
        using var every = ones([samples, batch, components], ScalarType.Bool, mean.device);
        var pick = UniformChoice(every, generator).view(samples, batch, 1, 1).expand(-1, -1, 1, dim);   // K × B × 1 × D
        var chosenMean = mean.unsqueeze(0).expand(samples, -1, -1, -1).gather(2, pick).squeeze(2);
        var chosenVar = var.unsqueeze(0).expand(samples, -1, -1, -1).gather(2, pick).squeeze(2);
        var z = chosenMean + chosenVar.sqrt() * DeviceRandom.Randn([samples, batch, dim], mean.dtype, mean.device, generator);
        var perComponent = LogNormal(z.unsqueeze(2), mean.unsqueeze(0), var.unsqueeze(0)).sum(-1);  // K × B × C
        return (z, perComponent.logsumexp(-1) - Math.Log(components));
    }

    /// <summary>Index of one row per sample, uniform over the rows where <paramref name="valid"/> (B × S) holds.</summary>
    protected static Tensor UniformChoice(Tensor valid, Generator generator)
    {
        var noise = DeviceRandom.Rand(valid.shape, float64, valid.device, generator);
        return noise.masked_fill(valid.logical_not(), -1.0).argmax(-1);
    }
}

/// <summary>
/// MoPoE-VAE (Sutter et al. 2021): the joint posterior is the mixture, over all non-empty subsets of the available
/// modalities, of the subset's product of experts. KL: mean over those subsets of KL(PoE_S ‖ N(0, I)) (the usual
/// upper bound on the mixture's KL). Reconstruction: every modality from one subset's sample per example, the
/// subset drawn uniformly per example (the official code's subsampling).
/// </summary>
public sealed class MixtureOfPoEObjective : JointLatentObjective
{
    public MixtureOfPoEObjective(ModelConfig config) : base(nameof(MixtureOfPoEObjective), config) { }

    public override CoordinatorOutput Forward(Tensor?[] mu, Tensor?[] logVar, Tensor available, bool[] decode, StepContext context)
    {
        var (muAll, varAll, _) = Stacked(mu, logVar, available);
        var table = MaskTable(Config.Modalities, available.dtype, available.device);              // S × M
        var valid = ((table.unsqueeze(0) - available.unsqueeze(1)).clamp_min(0).sum(-1) == 0);    // B × S: S ⊆ K
        var masks = table.unsqueeze(0) * valid.unsqueeze(-1).to(available.dtype);                  // B × S × M
        var (mean, var) = ProductOfExperts(muAll, varAll, masks, priorExpert: false);
        var validF = valid.to(available.dtype);
        var kl = (KlStandardNormal(mean, var.log()).sum(-1) * validF).sum(-1) / validF.sum(-1).clamp_min(1);

        var pick = UniformChoice(valid, context.Generator);                                         // B
        var index = pick.view(-1, 1, 1).expand(-1, 1, mean.shape[2]);
        var z = SampleGaussian(mean.gather(1, index).squeeze(1), var.gather(1, index).squeeze(1), context);

        var klMean = kl.mean();
        return SingleLatentOutput([z], [1.0], decode, Beta(context) * klMean, new() { ["kl"] = klMean.detach() });
    }

    /// <summary>Every non-empty subset's product of experts, one component each.</summary>
    protected override (Tensor Mean, Tensor Var) JointPosteriorComponents(Tensor muAll, Tensor varAll)
    {
        var table = MaskTable(Config.Modalities, muAll.dtype, muAll.device);
        return ProductOfExperts(muAll, varAll, table.unsqueeze(0).expand(muAll.shape[0], -1, -1), priorExpert: false);
    }
}

/// <summary>
/// MVAE (Wu and Goodman 2018): product of the available experts and a prior expert; trained on the full set
/// and, with subset training, on a random subset per example (the same subset machinery as mrVAE).
/// </summary>
public sealed class ProductOfExpertsObjective : JointLatentObjective
{
    public ProductOfExpertsObjective(ModelConfig config) : base(nameof(ProductOfExpertsObjective), config) { }

    public override CoordinatorOutput Forward(Tensor?[] mu, Tensor?[] logVar, Tensor available, bool[] decode, StepContext context)
    {
        var (muAll, varAll, _) = Stacked(mu, logVar, available);
        var views = new List<Tensor> { available };
        var weights = new List<double> { 1.0 };
        if (context.Training && Config.SubsetWeight > 0)
        {
            views.Add(RandomSubsetOf(available, context.Generator));
            weights.Add(Config.SubsetWeight);
        }
        var zs = new List<Tensor>();
        Tensor loss = zeros(1, dtype: available.dtype, device: available.device).squeeze();
        var terms = new Dictionary<string, Tensor>();
        for (int v = 0; v < views.Count; v++)
        {
            var (mean, var) = ProductOfExperts(muAll, varAll, views[v].unsqueeze(1), priorExpert: true);
            mean = mean.squeeze(1); var = var.squeeze(1);
            var kl = KlStandardNormal(mean, var.log()).sum(-1).mean();
            zs.Add(SampleGaussian(mean, var, context));
            loss = loss + weights[v] * Beta(context) * kl;
            terms[v == 0 ? "kl" : "kl_subset"] = kl.detach();
        }
        return SingleLatentOutput(zs, weights, decode, loss, terms);
    }

    /// <summary>One component: the product of every expert and the prior expert.</summary>
    protected override (Tensor Mean, Tensor Var) JointPosteriorComponents(Tensor muAll, Tensor varAll)
    {
        var all = ones(muAll.shape[0], 1, Config.Modalities, dtype: muAll.dtype, device: muAll.device);
        return ProductOfExperts(muAll, varAll, all, priorExpert: true);
    }
}

/// <summary>
/// MMVAE (Shi et al. 2019): mixture of the available unimodal experts. KL: mean over available experts of
/// KL(q_j ‖ N(0, I)); reconstruction: every modality from one expert's sample per example, drawn uniformly.
/// </summary>
public sealed class MixtureOfExpertsObjective : JointLatentObjective
{
    public MixtureOfExpertsObjective(ModelConfig config) : base(nameof(MixtureOfExpertsObjective), config) { }

    public override CoordinatorOutput Forward(Tensor?[] mu, Tensor?[] logVar, Tensor available, bool[] decode, StepContext context)
    {
        var (muAll, varAll, logVarAll) = Stacked(mu, logVar, available);
        var kl = (KlStandardNormal(muAll, logVarAll).sum(-1) * available).sum(-1) / available.sum(-1).clamp_min(1);
        var pick = UniformChoice(available > 0.5, context.Generator);
        var index = pick.view(-1, 1, 1).expand(-1, 1, muAll.shape[2]);
        var z = SampleGaussian(muAll.gather(1, index).squeeze(1), varAll.gather(1, index).squeeze(1), context);
        var klMean = kl.mean();
        return SingleLatentOutput([z], [1.0], decode, Beta(context) * klMean, new() { ["kl"] = klMean.detach() });
    }

    /// <summary>One component per modality: its own expert.</summary>
    protected override (Tensor Mean, Tensor Var) JointPosteriorComponents(Tensor muAll, Tensor varAll) => (muAll.alias(), varAll.alias());
}
