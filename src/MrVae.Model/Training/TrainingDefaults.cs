using MrVae.Data;

namespace MrVae.Model.Training;

/// <summary>
/// What `mrvae train` uses where a flag is not given, per kind of data. Vector data: D = 16 holds the presets'
/// structures (12 shared and 2 private factors per modality at most), and 3000 steps learn them (docs/experiments.md);
/// the Gaussian σ = 0.1 is the presets' noise. Images: D = 64 with half of it never shared
/// (<see cref="PrivateShare"/>), the setting mrVAE was measured with on PolyMNIST.
/// </summary>
public sealed record TrainingDefaults(int LatentDim, double LearningRate, double Beta, PixelLikelihood Likelihood, long? Steps, double PrivateShare)
{
    public static readonly TrainingDefaults Images = new(64, 5e-4, 2.5, PixelLikelihood.Laplace, null, PrivateShare: 0.5);
    public static readonly TrainingDefaults Vectors = new(16, 1e-3, 1.0, PixelLikelihood.Gaussian, 3000, PrivateShare: 0);

    public static TrainingDefaults For(DatasetKind kind) => kind == DatasetKind.Vectors ? Vectors : Images;

    /// <summary>mrVAE's never-shared positions for latent size <paramref name="latentDim"/> (<see cref="ModelConfig.PrivatePositions"/>).</summary>
    public int PrivatePositions(int latentDim) => (int)(latentDim * PrivateShare);

    /// <summary>
    /// <paramref name="config"/> with this kind of data's mrVAE settings. Images: <see cref="PrivatePositions"/> and the
    /// structure options measured on PolyMNIST (reverse structure KL, member-marginal KL, agreement prior, initial member
    /// sets), the own variables' prior given the shared ones and half of the subset view's own variables drawn from that
    /// prior; vectors: unchanged (the presets' sizes are exact without them, the options over-size the full set, and a
    /// vector's own factors are independent of the shared ones).
    /// </summary>
    public ModelConfig ForMrVae(ModelConfig config) => config.Kind != ModelKind.MrVae || PrivateShare == 0 ? config : config with
    {
        PrivatePositions = PrivatePositions(config.LatentDim),
        ReverseStructureKl = true, MemberMarginalKl = true, AgreementPrior = true, InitialMemberSets = true, ConditionalPrivatePrior = true,
        SubsetOwnDropout = 0.5,
    };
}
