using MrVae.Model.Networks;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

public sealed class LikelihoodTests
{
    /// <summary>−log p(x | z̃) summed over pixels, averaged over the batch, weighted over views, from the decoder's own means.</summary>
    static double Expected(ModalityNetwork net, Tensor x, Tensor decoderInput, double[] weights, Func<double, double, double> pixelNll)
    {
        double total = 0;
        for (int v = 0; v < weights.Length; v++)
        {
            var mean = net.Decoder.forward(decoderInput[v]).to(float64).data<double>().ToArray();
            var pixels = x.to(float64).data<double>().ToArray();
            long batch = x.shape[0];
            double sum = 0;
            for (int i = 0; i < pixels.Length; i++) sum += pixelNll(pixels[i], mean[i]);
            total += weights[v] * sum / batch;
        }
        return total;
    }

    [Theory]
    [InlineData(PixelLikelihood.Laplace, 0.75)]
    [InlineData(PixelLikelihood.Gaussian, 0.1)]
    [InlineData(PixelLikelihood.Gaussian, 0.5)]
    public void NegativeLogLikelihoodIsTheDensityOfTheDecodersMeans(PixelLikelihood likelihood, double scale)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var config = TinyModels.Config() with { Likelihood = likelihood, LikelihoodScale = scale };
        var net = Seeds.Construct(3, "likelihood", () => new ModalityNetwork(config));
        var gen = new Generator(5);
        var x = rand([4, 3, 28, 28], generator: gen);
        var z = randn([2, 4, config.LatentDim], generator: gen);
        double[] weights = [1.0, 0.5];
        Func<double, double, double> pixel = likelihood == PixelLikelihood.Gaussian
            ? (xi, m) => (xi - m) * (xi - m) / (2 * scale * scale) + Math.Log(scale) + 0.5 * Math.Log(2 * Math.PI)
            : (xi, m) => Math.Abs(xi - m) / scale + Math.Log(2 * scale);
        double actual = net.NegativeLogLikelihood(x, z, weights).ToDouble();
        Assert.Equal(Expected(net, x, z, weights, pixel), actual, 0.05);   // float32 sums over 2 × 4 × 2352 pixels
    }

    [Fact]
    public void TheLikelihoodTravelsWithTheModelConfiguration()
    {
        var config = TinyModels.Config() with { Likelihood = PixelLikelihood.Gaussian, LikelihoodScale = 0.1 };
        var back = ModelConfig.FromJson(config.ToJson());
        Assert.Equal(config, back);
        Assert.Contains("\"Gaussian\"", config.ToJson());
        Assert.Equal(PixelLikelihood.Laplace, ModelConfig.FromJson("{\"Kind\":\"MrVae\"}").Likelihood);
    }
}
