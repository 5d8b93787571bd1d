using MrVae.Model.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Objectives;

/// <summary>Per-step settings the coordinator's objective reads (all randomness comes from <see cref="Generator"/>).</summary>
public sealed class StepContext
{
    public required Generator Generator { get; init; }
    /// <summary>Training: relaxed structure and subset training. Evaluation: the most probable structure, no subset views.</summary>
    public bool Training { get; init; } = true;
    /// <summary>Sample latents (true) or use posterior means (false, e.g. for deterministic reconstructions).</summary>
    public bool SampleLatents { get; init; } = true;
    /// <summary>Multiplier on β for KL warm-up (1 after warm-up and in evaluation).</summary>
    public double BetaScale { get; init; } = 1.0;
    /// <summary>Multiplier on mrVAE's β_n for the structure warm-up (1 after it and in evaluation).</summary>
    public double StructureScale { get; init; } = 1.0;

    /// <summary>
    /// The training context of step <paramref name="step"/>: with <see cref="ForEvaluation"/> the one place both the
    /// local trainer and the step protocol (MrVae.Grains) build it, so the distributed run follows the same schedules.
    /// </summary>
    public static StepContext ForTraining(ModelConfig config, long step, Generator generator)
        => new() { Generator = generator, Training = true, BetaScale = config.BetaScale(step), StructureScale = config.StructureScale(step) };

    /// <summary>The evaluation context (the test loss): the most probable structure, no subset views, β unscaled.</summary>
    public static StepContext ForEvaluation(Generator generator) => new() { Generator = generator, Training = false };
}

/// <summary>What the coordinator hands back for one step.</summary>
public sealed class CoordinatorOutput : IDisposable
{
    /// <summary>Decoder input z̃_j per modality (V × B × D; V stacked views such as full-K and subset-K), null where not decoded.</summary>
    public required Tensor?[] DecoderInputs { get; init; }
    /// <summary>The coordinator's share of the loss: the weighted KL terms, averaged over the batch, summed over views.</summary>
    public required Tensor Loss { get; init; }
    /// <summary>Weight of each view's reconstruction term (length V).</summary>
    public required double[] ViewWeights { get; init; }
    /// <summary>Unweighted loss terms for metrics (scalar tensors, detached).</summary>
    public Dictionary<string, Tensor> Terms { get; } = new();

    public void Dispose()
    {
        foreach (var t in DecoderInputs) t?.Dispose();
        Loss.Dispose();
        foreach (var t in Terms.Values) t.Dispose();
    }
}

/// <summary>
/// The coordinator side of a multimodal VAE: from the encoders' posteriors of the modalities present this step to
/// decoder inputs for every present modality plus the KL terms. Encoders and decoders live with the modalities.
/// </summary>
public abstract class CoordinatorObjective : nn.Module
{
    protected CoordinatorObjective(string name, ModelConfig config) : base(name) { Config = config; }

    public ModelConfig Config { get; }

    /// <summary>β for this step, after warm-up.</summary>
    protected double Beta(StepContext context) => Config.Beta * context.BetaScale;

    /// <param name="mu">μ_j (B × D) per modality; null for modalities absent this step.</param>
    /// <param name="logVar">log σ²_j (B × D) per modality; null where absent.</param>
    /// <param name="available">Which modalities each sample may use (B × M, 0/1). Absent modalities must be 0.</param>
    /// <param name="decode">Which modalities to produce decoder inputs for (the present ones, or any for generation).</param>
    public abstract CoordinatorOutput Forward(Tensor?[] mu, Tensor?[] logVar, Tensor available, bool[] decode, StepContext context);

    /// <summary>
    /// Decoder inputs of every modality for latents drawn from the prior (B × D each): the model's unconditional
    /// generation.
    /// </summary>
    public abstract Tensor[] PriorDecoderInputs(long batch, Generator generator, ScalarType dtype, Device device);

    /// <summary>
    /// <paramref name="samples"/> = K draws of the latents from the model's posterior given every modality, the proposal
    /// of the importance-sampled likelihood: per modality its decoder inputs (K × B × D), and log p(z) − log q(z | X)
    /// per draw (K × B).
    /// </summary>
    public abstract (Tensor[] DecoderInputs, Tensor LogWeight) PosteriorSamples(Tensor[] mu, Tensor[] logVar, int samples, Generator generator);

    public static CoordinatorObjective Create(ModelConfig config) => config.Validated().Kind switch
    {
        ModelKind.MrVae => new MrVaeObjective(config),
        ModelKind.MoPoE => new MixtureOfPoEObjective(config),
        ModelKind.Mvae => new ProductOfExpertsObjective(config),
        ModelKind.Mmvae => new MixtureOfExpertsObjective(config),
        _ => throw new ArgumentOutOfRangeException(nameof(config), $"unknown model kind {config.Kind}"),
    };

    /// <summary>
    /// Subset-training availability: per sample, K' uniform over the non-empty proper subsets of its available set
    /// (K itself when |K| = 1). Drawn with the step's generator.
    /// </summary>
    protected static Tensor RandomSubsetOf(Tensor available, Generator generator)
    {
        long batch = available.shape[0]; int m = (int)available.shape[1];
        var masks = MaskTable(m, available.dtype, available.device);                      // S × M, all non-empty masks
        using var avail = available.unsqueeze(1);                                         // B × 1 × M
        // A mask is valid if it is contained in K and is a proper subset of K, or K itself when |K| ≤ 1.
        using var inside = ((masks.unsqueeze(0) - avail).clamp_min(0).sum(-1) == 0);      // B × S
        using var sizeK = available.sum(-1, keepdim: true);                               // B × 1
        using var sizeS = masks.sum(-1).unsqueeze(0);                                     // 1 × S
        using var proper = (sizeS < sizeK).logical_or(sizeK <= 1);
        using var valid = inside.logical_and(proper);
        using var noise = DeviceRandom.Rand([batch, masks.shape[0]], float64, available.device, generator);
        using var pick = noise.masked_fill(valid.logical_not(), -1.0).argmax(-1);         // uniform over valid masks
        return masks.index_select(0, pick);
    }

    /// <summary>All non-empty subsets of M modalities as 0/1 rows (mask k+1 ↔ row k).</summary>
    protected static Tensor MaskTable(int modalities, ScalarType dtype, Device device)
    {
        int count = (1 << modalities) - 1;
        var data = new float[count * modalities];
        for (int s = 0; s < count; s++)
            for (int j = 0; j < modalities; j++)
                data[s * modalities + j] = ((s + 1) >> j & 1);
        return ManagedArrays.ToTensor(data, [count, modalities]).to(dtype, device);
    }

    /// <summary>Reparameterised sample μ + σ·ε with ε from the step's generator (or μ when not sampling).</summary>
    protected static Tensor Sample(Tensor mu, Tensor logVar, StepContext context)
    {
        if (!context.SampleLatents) return mu.alias();
        using var eps = DeviceRandom.Randn(mu.shape, mu.dtype, mu.device, context.Generator);
        return mu + (0.5 * logVar).exp() * eps;
    }

    /// <summary>log N(z; mean, var) elementwise.</summary>
    protected static Tensor LogNormal(Tensor z, Tensor mean, Tensor var)
        => -0.5 * (Math.Log(2 * Math.PI) + var.log() + (z - mean).square() / var);

    /// <summary>log N(z; 0, 1) elementwise.</summary>
    protected static Tensor LogStandardNormal(Tensor z) => -0.5 * (Math.Log(2 * Math.PI) + z.square());

    /// <summary>KL(N(μ, exp(logVar)) ‖ N(0, 1)) elementwise.</summary>
    protected static Tensor KlStandardNormal(Tensor mu, Tensor logVar)
        => 0.5 * (mu.square() + logVar.exp() - 1 - logVar);

    /// <summary>Stack per-modality B × D tensors into B × M × D, zeros where absent.</summary>
    protected static Tensor StackModalities(Tensor?[] perModality, long batch, long dim, ScalarType dtype, Device device)
    {
        var parts = perModality.Select(t => t ?? zeros(batch, dim, dtype: dtype, device: device)).ToArray();
        return stack(parts, 1);
    }
}
