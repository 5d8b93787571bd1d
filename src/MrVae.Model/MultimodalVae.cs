using MrVae.Model.Networks;
using MrVae.Model.Objectives;
using MrVae.Model.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model;

/// <summary>The loss of one step, split the way the distributed trainer splits it.</summary>
public sealed class StepLoss : IDisposable
{
    public required Tensor Total { get; init; }
    public required CoordinatorOutput Coordinator { get; init; }
    /// <summary>−log p(x_j | z̃_j) per modality (null where not decoded).</summary>
    public required Tensor?[] Reconstruction { get; init; }

    /// <summary>Loss terms as numbers for metrics: total, coordinator terms and rec_j.</summary>
    public Dictionary<string, double> Terms()
    {
        var d = new Dictionary<string, double> { ["loss"] = Total.ToDouble() };
        foreach (var (k, t) in Coordinator.Terms) d[k] = t.ToDouble();
        for (int j = 0; j < Reconstruction.Length; j++)
            if (Reconstruction[j] is { } r) d[$"rec_{j}"] = r.ToDouble();
        return d;
    }

    public void Dispose()
    {
        Total.Dispose();
        Coordinator.Dispose();
        foreach (var r in Reconstruction) r?.Dispose();
    }
}

/// <summary>
/// All parties of one model in one process: one <see cref="ModalityNetwork"/> per modality and the coordinator's
/// objective. This is the single-process reference; the distributed trainer holds the same parts in grains.
/// </summary>
public sealed class MultimodalVae : nn.Module
{
    public ModelConfig Config { get; }
    public ModalityNetwork[] ModalityNets { get; }
    public CoordinatorObjective Coordinator { get; }
    readonly nn.Module modalityList;

    public MultimodalVae(ModelConfig config, long seed) : base(nameof(MultimodalVae))
    {
        Config = config;
        ModalityNets = Enumerable.Range(0, config.Modalities)
            .Select(j => Seeds.Construct(seed, Seeds.ModalityParty(j), () => new ModalityNetwork(config, j)))
            .ToArray();
        Coordinator = Seeds.Construct(seed, Seeds.CoordinatorParty, () => CoordinatorObjective.Create(config));
        modalityList = nn.ModuleList(ModalityNets);
        RegisterComponents();
    }

    /// <summary>
    /// Encodes the present modalities (non-null <paramref name="x"/>, B × 3 × 28 × 28 in [0,1]), runs the
    /// coordinator with per-sample availability <paramref name="available"/> (B × M) and decodes every present one.
    /// </summary>
    public StepLoss Loss(Tensor?[] x, Tensor available, StepContext context)
    {
        int m = Config.Modalities;
        var mu = new Tensor?[m]; var logVar = new Tensor?[m];
        var present = x.Select(t => t is not null).ToArray();
        for (int j = 0; j < m; j++)
            if (x[j] is { } xj) (mu[j], logVar[j]) = ModalityNets[j].Encoder.forward(xj);
        var output = Coordinator.Forward(mu, logVar, available, present, context);
        var rec = new Tensor?[m];
        var total = output.Loss.alias();
        for (int j = 0; j < m; j++)
        {
            if (x[j] is not { } xj) continue;
            rec[j] = ModalityNets[j].NegativeLogLikelihood(xj, output.DecoderInputs[j]!, output.ViewWeights);
            total = total + rec[j]!;
        }
        return new StepLoss { Total = total, Coordinator = output, Reconstruction = rec };
    }

    /// <summary>
    /// The loss of a batch with missing modalities per sample: <paramref name="x"/>[j] holds only the rows of
    /// <paramref name="plan"/> that modality j has (B_j × …, null for a non-member). Each is encoded, spread into the
    /// batch (zeros where missing, masked by the availability), and decoded only on its own rows, so a sample's
    /// missing modality is neither encoded nor reconstructed. With complete rows this is <see cref="Loss(Tensor?[], Tensor, StepContext)"/>.
    /// </summary>
    public StepLoss Loss(Tensor?[] x, BatchPlan plan, StepContext context)
    {
        int m = Config.Modalities;
        var mu = new Tensor?[m]; var logVar = new Tensor?[m];
        var present = x.Select(t => t is not null).ToArray();
        for (int j = 0; j < m; j++)
            if (x[j] is { } xj)
            {
                var (muJ, logVarJ) = ModalityNets[j].Encoder.forward(xj);
                (mu[j], logVar[j]) = (plan.Spread(j, muJ), plan.Spread(j, logVarJ));
            }
        var reference = mu.First(t => t is not null)!;
        using var available = plan.Available(reference.dtype, reference.device);
        var output = Coordinator.Forward(mu, logVar, available, present, context);
        var rec = new Tensor?[m];
        var total = output.Loss.alias();
        for (int j = 0; j < m; j++)
        {
            if (x[j] is not { } xj) continue;
            using var z = plan.Pick(j, output.DecoderInputs[j]!);
            rec[j] = ModalityNets[j].NegativeLogLikelihood(xj, z, output.ViewWeights, plan.Size);
            total = total + rec[j]!;
        }
        return new StepLoss { Total = total, Coordinator = output, Reconstruction = rec };
    }

    /// <summary>
    /// Conditional generation through the model's own subset path: encodes the modalities in <paramref name="inputs"/>,
    /// runs the coordinator with only those available (evaluation mode: mrVAE's most probable structure, no subset
    /// view) and decodes every modality. Returns the decoder means per modality (B × 3 × 28 × 28, or B × ObservedDim).
    /// </summary>
    public Tensor[] Generate(Tensor?[] x, bool[] inputs, Generator generator, bool sampleLatents = true)
    {
        int m = Config.Modalities;
        using var _ = no_grad();
        var mu = new Tensor?[m]; var logVar = new Tensor?[m];
        long batch = 0;
        for (int j = 0; j < m; j++)
            if (inputs[j])
            {
                var xj = x[j] ?? throw new ArgumentException($"modality {j} is an input but has no data");
                (mu[j], logVar[j]) = ModalityNets[j].Encoder.forward(xj);
                batch = xj.shape[0];
            }
        var device = mu.First(t => t is not null)!.device;
        var available = AllAvailable(inputs, batch, mu.First(t => t is not null)!.dtype, device);
        var context = new StepContext { Generator = generator, Training = false, SampleLatents = sampleLatents };
        using var output = Coordinator.Forward(mu, logVar, available, Enumerable.Repeat(true, m).ToArray(), context);
        return Enumerable.Range(0, m).Select(j => ModalityNets[j].Decoder.forward(output.DecoderInputs[j]![0])).ToArray();
    }

    /// <summary>Unconditional generation: latents from the prior (mrVAE: under its most probable structure), every modality's decoder means.</summary>
    public Tensor[] GenerateFromPrior(long batch, Generator generator)
    {
        using var _ = no_grad();
        var reference = ModalityNets[0].Decoder.parameters().First();
        var inputs = Coordinator.PriorDecoderInputs(batch, generator, reference.dtype, reference.device);
        return Enumerable.Range(0, Config.Modalities).Select(j => ModalityNets[j].Decoder.forward(inputs[j])).ToArray();
    }

    /// <summary>
    /// log p(X) per sample, estimated by importance sampling with <paramref name="samples"/> = K draws from the joint
    /// posterior given every modality: log (1/K) Σ_k p(X | z_k) p(z_k) / q(z_k | X), the IWAE bound (Burda et al. 2016),
    /// which tightens as K grows.
    /// </summary>
    public Tensor ImportanceLogLikelihood(Tensor[] x, int samples, Generator generator)
    {
        if (x.Length != Config.Modalities) throw new ArgumentException($"the likelihood needs all {Config.Modalities} modalities, got {x.Length}");
        if (samples < 1) throw new ArgumentOutOfRangeException(nameof(samples), "need at least one importance sample");
        using var _ = no_grad();
        var mu = new Tensor[x.Length]; var logVar = new Tensor[x.Length];
        for (int j = 0; j < x.Length; j++) (mu[j], logVar[j]) = ModalityNets[j].Encoder.forward(x[j]);
        var (inputs, logWeight) = Coordinator.PosteriorSamples(mu, logVar, samples, generator);
        for (int j = 0; j < x.Length; j++) logWeight = logWeight + ModalityNets[j].LogLikelihood(x[j], inputs[j]);
        return logWeight.logsumexp(0) - Math.Log(samples);
    }

    /// <summary>Availability mask with every present modality available for every sample.</summary>
    public static Tensor AllAvailable(bool[] present, long batch, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        var row = present.Select(p => p ? 1f : 0f).ToArray();
        return tensor(row).to(dtype, device ?? CPU).unsqueeze(0).expand(batch, -1).contiguous();
    }
}
