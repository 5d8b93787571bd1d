using MrVae.Data;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MrVae.Model.Networks;

/// <summary>q(z_j | x_j) = N(μ, diag σ²): a trunk to a hidden layer, then two linear heads to μ and log σ² ∈ R^D.</summary>
public sealed class GaussianEncoder : Module<Tensor, (Tensor Mu, Tensor LogVar)>
{
    readonly Sequential trunk;
    readonly Linear mu, logVar;

    GaussianEncoder(Sequential trunk, int hidden, int latentDim) : base(nameof(GaussianEncoder))
    {
        this.trunk = trunk;
        mu = Linear(hidden, latentDim);
        logVar = Linear(hidden, latentDim);
        RegisterComponents();
    }

    /// <summary>The MoPoE PolyMNIST encoder (3×28×28 → R^D).</summary>
    public static GaussianEncoder Image(int latentDim, int hidden) => new(Sequential(
        Conv2d(3, 32, 3, stride: 2, padding: 1), ReLU(),
        Conv2d(32, 64, 3, stride: 2, padding: 1), ReLU(),
        Conv2d(64, 128, 3, stride: 2, padding: 1), ReLU(),
        Flatten(),
        Linear(2048, hidden), ReLU()), hidden, latentDim);

    /// <summary>A vector modality's encoder: a two-layer MLP (R^n → R^D).</summary>
    public static GaussianEncoder Vector(int observedDim, int latentDim, int hidden) =>
        new(Sequential(Linear(observedDim, hidden), ReLU(), Linear(hidden, hidden), ReLU()), hidden, latentDim);

    public override (Tensor Mu, Tensor LogVar) forward(Tensor x)
    {
        using var h = trunk.forward(x);
        return (mu.forward(h), logVar.forward(h));
    }
}

/// <summary>p(x_j | z): the MoPoE PolyMNIST decoder (R^D → pixel means in [0,1], 3×28×28).</summary>
public sealed class ImageDecoder : Module<Tensor, Tensor>
{
    readonly Sequential net;

    public ImageDecoder(int latentDim) : base(nameof(ImageDecoder))
    {
        net = Sequential(
            Linear(latentDim, 2048), ReLU(),
            Unflatten(1, [128, 4, 4]),
            ConvTranspose2d(128, 64, 3, stride: 2, padding: 1), ReLU(),
            ConvTranspose2d(64, 32, 3, stride: 2, padding: 1, output_padding: 1), ReLU(),
            ConvTranspose2d(32, 3, 3, stride: 2, padding: 1, output_padding: 1));
        RegisterComponents();
    }

    // Sigmoid keeps the Laplace location on the pixel range [0, 1].
    public override Tensor forward(Tensor z) => net.forward(z).sigmoid();
}

/// <summary>p(x_j | z) for a vector modality: a two-layer MLP (R^D → the Gaussian's mean in R^n).</summary>
public sealed class VectorDecoder : Module<Tensor, Tensor>
{
    readonly Sequential net;

    public VectorDecoder(int latentDim, int observedDim, int hidden) : base(nameof(VectorDecoder))
    {
        net = Sequential(Linear(latentDim, hidden), ReLU(), Linear(hidden, hidden), ReLU(), Linear(hidden, observedDim));
        RegisterComponents();
    }

    public override Tensor forward(Tensor z) => net.forward(z);
}

/// <summary>One modality's encoder and decoder: what a modality node owns besides its data and optimiser.</summary>
public sealed class ModalityNetwork : Module
{
    public GaussianEncoder Encoder { get; }
    public Module<Tensor, Tensor> Decoder { get; }
    readonly double scale;
    readonly PixelLikelihood likelihood;
    // Where the scale differs by pixel (EqualDigitWeight): the scales (1 × 3 × 28 × 28, CPU) and, made from them for the
    // device and dtype the decoder last ran on, the NLL's factor on the residual (1/2σ² or 1/b) and its normaliser
    // (½ log 2πσ² or log 2b). Not module buffers: TorchSharp's to() does not move non-persistent ones, and persistent
    // ones would enter the checkpoints.
    readonly Tensor? pixelScales;
    (DeviceType Device, int Index, ScalarType Type, Tensor Factor, Tensor Normaliser)? perPixel;

    /// <param name="modality">Which modality this network is (its digit squares, <see cref="ModelConfig.DigitSquares"/>).</param>
    public ModalityNetwork(ModelConfig config, int modality) : base(nameof(ModalityNetwork))
    {
        if (config.ObservedDim > 0)
        {
            Encoder = GaussianEncoder.Vector(config.ObservedDim, config.LatentDim, config.EncoderHidden);
            Decoder = new VectorDecoder(config.LatentDim, config.ObservedDim, config.EncoderHidden);
        }
        else
        {
            Encoder = GaussianEncoder.Image(config.LatentDim, config.EncoderHidden);
            Decoder = new ImageDecoder(config.LatentDim);
        }
        scale = config.LikelihoodScale;
        likelihood = config.Likelihood;
        if (config.EqualDigitWeight)
        {
            pixelScales = PixelScales(config, modality).DetachFromDisposeScope();
        }
        RegisterComponents();
    }

    /// <summary>
    /// The likelihood scale per pixel (1 × 3 × 28 × 28) under <see cref="ModelConfig.EqualDigitWeight"/>: σ · side / largest
    /// side inside each of the modality's digit squares (the smaller square where two overlap), σ elsewhere.
    /// </summary>
    public static Tensor PixelScales(ModelConfig config, int modality)
    {
        var map = full(1, 3, PolyMnistSpec.Side, PolyMnistSpec.Side, config.LikelihoodScale, dtype: ScalarType.Float32);
        var squares = config.DigitSquares.Where(q => q.Modality == modality).OrderByDescending(q => q.Size).ToArray();
        foreach (var q in squares)
            map[.., .., q.Y..(q.Y + q.Size), q.X..(q.X + q.Size)] = config.LikelihoodScale * q.Size / squares[0].Size;
        return map;
    }

    /// <summary>
    /// −log p(x | z̃) under a Laplace or Gaussian likelihood with fixed scale, summed over pixels, averaged over the batch,
    /// summed over the V stacked views of <paramref name="decoderInput"/> (V × B × D) with <paramref name="viewWeights"/>.
    /// </summary>
    /// <param name="batch">The step's batch size B when <paramref name="x"/> holds only this modality's B_j ≤ B samples of
    /// it (missing modalities per sample): the sum over its samples is divided by B, so a missing sample adds nothing.</param>
    public Tensor NegativeLogLikelihood(Tensor x, Tensor decoderInput, double[] viewWeights, long? batch = null)
    {
        var nll = SampleNll(x, decoderInput);                                           // V × B_j
        var perView = batch is { } b && b != x.shape[0] ? nll.sum([1]) / b : nll.mean([1]);   // V
        var weights = tensor(viewWeights, dtype: perView.dtype, device: perView.device);
        return (perView * weights).sum();
    }

    /// <summary>log p(x | z) per latent sample: <paramref name="z"/> is K × B × D, the result K × B (summed over x's entries).</summary>
    public Tensor LogLikelihood(Tensor x, Tensor z) => -SampleNll(x, z);

    /// <summary>−log p(x | z) for stacked latents z (V × B × D): V × B, summed over x's entries.</summary>
    Tensor SampleNll(Tensor x, Tensor z)
    {
        long views = z.shape[0], batch = z.shape[1];
        var recon = Decoder.forward(z.reshape(views * batch, -1)).reshape([views, .. x.shape]);
        return PixelNll(recon, x.unsqueeze(0)).flatten(2).sum(-1);
    }

    Tensor PixelNll(Tensor recon, Tensor x)
    {
        var diff = recon - x;
        if (pixelScales is not null)
        {
            var (factor, normaliser) = PerPixel(diff);
            return (likelihood == PixelLikelihood.Gaussian ? diff.square() : diff.abs()) * factor + normaliser;
        }
        return likelihood == PixelLikelihood.Gaussian
            ? diff.square() / (2 * scale * scale) + 0.5 * Math.Log(2 * Math.PI * scale * scale)
            : diff.abs() / scale + Math.Log(2 * scale);
    }

    (Tensor Factor, Tensor Normaliser) PerPixel(Tensor like)
    {
        if (perPixel is { } p && p.Device == like.device_type && p.Index == like.device_index && p.Type == like.dtype) return (p.Factor, p.Normaliser);
        DisposePerPixel();
        using var scope = NewDisposeScope();
        var map = pixelScales!.to(like.dtype, like.device);
        bool gaussian = likelihood == PixelLikelihood.Gaussian;
        var factor = (gaussian ? 0.5 / map.square() : 1 / map).DetachFromDisposeScope();
        var normaliser = (gaussian ? 0.5 * (2 * Math.PI * map.square()).log() : (2 * map).log()).DetachFromDisposeScope();
        perPixel = (like.device_type, like.device_index, like.dtype, factor, normaliser);
        return (factor, normaliser);
    }

    void DisposePerPixel()
    {
        if (perPixel is { } p) { p.Factor.Dispose(); p.Normaliser.Dispose(); }
        perPixel = null;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) { DisposePerPixel(); pixelScales?.Dispose(); }
        base.Dispose(disposing);
    }
}
