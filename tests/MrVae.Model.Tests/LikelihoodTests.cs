using MrVae.Data;
using MrVae.Model.Networks;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

public sealed class LikelihoodTests
{
    /// <summary>−log p(x | z̃) summed over pixels, averaged over the batch, weighted over views, from the decoder's own means.</summary>
    static double Expected(ModalityNetwork net, Tensor x, Tensor decoderInput, double[] weights, Func<double, double, double> pixelNll)
        => Expected(net, x, decoderInput, weights, (xi, m, _) => pixelNll(xi, m));

    /// <summary>As above, with the pixel's flat index into B × 3 × 28 × 28 passed on.</summary>
    static double Expected(ModalityNetwork net, Tensor x, Tensor decoderInput, double[] weights, Func<double, double, int, double> pixelNll)
    {
        double total = 0;
        for (int v = 0; v < weights.Length; v++)
        {
            var mean = net.Decoder.forward(decoderInput[v]).to(float64).data<double>().ToArray();
            var pixels = x.to(float64).data<double>().ToArray();
            long batch = x.shape[0];
            double sum = 0;
            for (int i = 0; i < pixels.Length; i++) sum += pixelNll(pixels[i], mean[i], i);
            total += weights[v] * sum / batch;
        }
        return total;
    }

    /// <summary>−log of one pixel's density: Gaussian N(x; m, s²) or Laplace(x; m, s).</summary>
    static double PixelNll(PixelLikelihood likelihood, double x, double m, double s) => likelihood == PixelLikelihood.Gaussian
        ? (x - m) * (x - m) / (2 * s * s) + Math.Log(s) + 0.5 * Math.Log(2 * Math.PI)
        : Math.Abs(x - m) / s + Math.Log(2 * s);

    [Theory]
    [InlineData(PixelLikelihood.Laplace, 0.75)]
    [InlineData(PixelLikelihood.Gaussian, 0.1)]
    [InlineData(PixelLikelihood.Gaussian, 0.5)]
    public void NegativeLogLikelihoodIsTheDensityOfTheDecodersMeans(PixelLikelihood likelihood, double scale)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var config = TinyModels.Config() with { Likelihood = likelihood, LikelihoodScale = scale };
        var net = Seeds.Construct(3, "likelihood", () => new ModalityNetwork(config, 0));
        var gen = new Generator(5);
        var x = rand([4, 3, 28, 28], generator: gen);
        var z = randn([2, 4, config.LatentDim], generator: gen);
        double[] weights = [1.0, 0.5];
        Func<double, double, double> pixel = (xi, m) => PixelNll(likelihood, xi, m, scale);
        double actual = net.NegativeLogLikelihood(x, z, weights).ToDouble();
        Assert.Equal(Expected(net, x, z, weights, pixel), actual, 0.05);   // float32 sums over 2 × 4 × 2352 pixels
    }

    [Theory]
    [InlineData(PixelLikelihood.Gaussian, 0.1)]
    [InlineData(PixelLikelihood.Laplace, 0.75)]
    public void EqualDigitWeightScalesEachOfTheModalitysOwnSquaresBySide(PixelLikelihood likelihood, double scale)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        // Modality 1: a 10 × 10 square overlapping an 18 × 18 one (the smaller's scale where they meet); modality 0's square must not reach it.
        FactorPlacement[] squares = [new(0, 0, 0, 6), new(1, 2, 3, 10), new(1, 8, 10, 18)];
        var config = TinyModels.Config() with { Likelihood = likelihood, LikelihoodScale = scale, EqualDigitWeight = true, DigitSquares = squares };
        var net = Seeds.Construct(3, "likelihood", () => new ModalityNetwork(config.Validated(), 1));
        var gen = new Generator(5);
        var x = rand([4, 3, 28, 28], generator: gen);
        var z = randn([2, 4, config.LatentDim], generator: gen);
        double[] weights = [1.0, 0.5];
        double ScaleAt(int i)
        {
            int row = i % 784 / 28, column = i % 28;
            return row >= 3 && row < 13 && column >= 2 && column < 12 ? scale * 10 / 18 : scale;   // the 18-square's own scale is σ
        }
        Func<double, double, int, double> pixel = (xi, m, i) => PixelNll(likelihood, xi, m, ScaleAt(i));
        double actual = net.NegativeLogLikelihood(x, z, weights).ToDouble();
        Assert.Equal(Expected(net, x, z, weights, pixel), actual, 0.1);
        // One scale everywhere differs by far more than that tolerance.
        Func<double, double, int, double> uniform = (xi, m, i) => pixel(xi, m, 0);
        Assert.True(Math.Abs(Expected(net, x, z, weights, uniform) - actual) > 50);
        // The model's log-likelihood (IWAE) uses the same per-pixel scales.
        Assert.Equal(-net.NegativeLogLikelihood(x, z, [1.0, 0]).ToDouble(), net.LogLikelihood(x, z)[0].mean().ToDouble(), 0.05);
    }

    [Fact]
    public void ThePixelScalesFollowTheNetworkAndStayOutOfItsCheckpoint()
    {
        using var scope = NewDisposeScope();
        var config = (TinyModels.Config() with { Likelihood = PixelLikelihood.Gaussian, LikelihoodScale = 0.1, EqualDigitWeight = true }).WithDigitSquares(PolyMnistSpec.Extended(3));
        var net = Seeds.Construct(3, "likelihood", () => new ModalityNetwork(config, 0));
        Assert.DoesNotContain(net.state_dict().Keys, k => k.Contains("residual") || k.Contains("normaliser"));
        net.to(float64);
        // The scales follow the decoder's dtype (and device): a float32 copy would leave float64 sums at float32 precision.
        var gen = new Generator(5);
        var x = rand([2, 3, 28, 28], generator: gen, dtype: float64);
        var z = randn([1, 2, config.LatentDim], generator: gen, dtype: float64);
        var scales = ModalityNetwork.PixelScales(config, 0).to(float64).flatten().data<double>().ToArray();
        double expected = Expected(net, x, z, [1.0], (xi, m, i) => PixelNll(PixelLikelihood.Gaussian, xi, m, scales[i % scales.Length]));
        Assert.Equal(expected, net.NegativeLogLikelihood(x, z, [1.0]).ToDouble(), 1e-9);
    }

    [Fact]
    public void DigitSquaresComeFromTheSpecAndTravelWithTheConfiguration()
    {
        var spec = PolyMnistSpec.Extended();
        var config = (TinyModels.Config() with { Likelihood = PixelLikelihood.Gaussian, LikelihoodScale = 0.1, EqualDigitWeight = true }).WithDigitSquares(spec);
        // Extended: the main digit in every modality and two corners each, ten corner squares in all.
        Assert.Equal(15, config.DigitSquares.Length);
        Assert.Equal(3, config.DigitSquares.Count(q => q.Modality == 2));
        Assert.Equal(config, ModelConfig.FromJson(config.ToJson()));
        // Run directories write snake_case (config.json, checkpoints).
        var snake = System.Text.Json.JsonSerializer.Deserialize<ModelConfig>(System.Text.Json.JsonSerializer.Serialize(config, Training.CheckpointDirectory.Json), Training.CheckpointDirectory.Json);
        Assert.Equal(config, snake);
        Assert.NotEqual(config, config with { DigitSquares = [.. config.DigitSquares.Skip(1)] });
        Assert.Empty(config.WithDigitSquares(null).DigitSquares);
    }

    [Fact]
    public void EqualDigitWeightIsRefusedWhereItCannotApply()
    {
        var images = TinyModels.Config() with { EqualDigitWeight = true, DigitSquares = [new(0, 0, 0, 10)] };
        images.Validated();
        Assert.Contains("needs DigitSquares", Assert.Throws<UserInputException>(() => (images with { DigitSquares = [] }).Validated()).Message);
        Assert.Contains("images only", Assert.Throws<UserInputException>(() => (images with { ObservedDim = 12 }).Validated()).Message);
        Assert.Contains("not a square inside", Assert.Throws<UserInputException>(() => (images with { DigitSquares = [new(0, 20, 0, 10)] }).Validated()).Message);
        Assert.Contains("not a square inside", Assert.Throws<UserInputException>(() => (images with { DigitSquares = [new(7, 0, 0, 10)] }).Validated()).Message);
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
