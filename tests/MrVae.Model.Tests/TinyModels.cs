using MrVae.Model.Objectives;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

/// <summary>Small configurations and inputs shared by the model tests.</summary>
static class TinyModels
{
    public static ModelConfig Config(ModelKind kind = ModelKind.MrVae, int modalities = 3, int latent = 6) => new()
    {
        Kind = kind, Modalities = modalities, LatentDim = latent, EncoderHidden = 16,
    };

    public static (Tensor?[] Mu, Tensor?[] LogVar) Posteriors(int modalities, long batch, int latent, Generator gen, ScalarType dtype = ScalarType.Float64)
    {
        var mu = new Tensor?[modalities]; var logVar = new Tensor?[modalities];
        for (int j = 0; j < modalities; j++)
        {
            mu[j] = randn([batch, latent], dtype: dtype, generator: gen);
            logVar[j] = 0.3 * randn([batch, latent], dtype: dtype, generator: gen);
        }
        return (mu, logVar);
    }

    public static Tensor Availability(int mask, int modalities, long batch, ScalarType dtype = ScalarType.Float64)
        => MultimodalVae.AllAvailable(Enumerable.Range(0, modalities).Select(j => (mask >> j & 1) == 1).ToArray(), batch, dtype);

    public static double[] Values(Tensor t) => t.to(float64).data<double>().ToArray();
}
