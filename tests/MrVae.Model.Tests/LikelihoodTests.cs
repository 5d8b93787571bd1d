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
        Func<double, double, double> pixel = likelihood == PixelLikelihood.Gaussian
            ? (xi, m) => (xi - m) * (xi - m) / (2 * scale * scale) + Math.Log(scale) + 0.5 * Math.Log(2 * Math.PI)
            : (xi, m) => Math.Abs(xi - m) / scale + Math.Log(2 * scale);
        double actual = net.NegativeLogLikelihood(x, z, weights).ToDouble();
        Assert.Equal(Expected(net, x, z, weights, pixel), actual, 0.05);   // float32 sums over 2 × 4 × 2352 pixels
    }

    [Theory]
    [InlineData(PixelLikelihood.Gaussian, 0.05, 0.1)]
    [InlineData(PixelLikelihood.Laplace, 0.75, 0.3)]
    public void ABackgroundScaleAppliesOutsideTheModalitysOwnDigitSquares(PixelLikelihood likelihood, double scale, double background)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        // Modality 1's squares overlap (the union counts once); modality 0's square must not reach modality 1.
        FactorPlacement[] squares = [new(0, 0, 0, 28), new(1, 2, 3, 10), new(1, 8, 10, 18)];
        var config = TinyModels.Config() with { Likelihood = likelihood, LikelihoodScale = scale, BackgroundScale = background, DigitSquares = squares };
        var net = Seeds.Construct(3, "likelihood", () => new ModalityNetwork(config.Validated(), 1));
        var gen = new Generator(5);
        var x = rand([4, 3, 28, 28], generator: gen);
        var z = randn([2, 4, config.LatentDim], generator: gen);
        double[] weights = [1.0, 0.5];
        bool Inside(int i)
        {
            int row = i % 784 / 28, column = i % 28;
            return (row >= 3 && row < 13 && column >= 2 && column < 12) || (row >= 10 && column >= 8 && column < 26);
        }
        Func<double, double, int, double> pixel = (xi, m, i) =>
        {
            double s = Inside(i) ? scale : background;
            return likelihood == PixelLikelihood.Gaussian
                ? (xi - m) * (xi - m) / (2 * s * s) + Math.Log(s) + 0.5 * Math.Log(2 * Math.PI)
                : Math.Abs(xi - m) / s + Math.Log(2 * s);
        };
        double actual = net.NegativeLogLikelihood(x, z, weights).ToDouble();
        Assert.Equal(Expected(net, x, z, weights, pixel), actual, 0.1);
        // The same pixels under one scale everywhere differ by far more than that tolerance.
        Func<double, double, int, double> uniform = (xi, m, i) => pixel(xi, m, Inside(i) ? i : 3 * 28 + 2);
        Assert.True(Math.Abs(Expected(net, x, z, weights, uniform) - actual) > 100);
        // The model's log-likelihood (IWAE) uses the same per-pixel scales.
        Assert.Equal(-net.NegativeLogLikelihood(x, z, [1.0, 0]).ToDouble(), net.LogLikelihood(x, z)[0].mean().ToDouble(), 0.05);
    }

    [Fact]
    public void DigitSquaresComeFromTheSpecAndTravelWithTheConfiguration()
    {
        var spec = PolyMnistSpec.Extended();
        var config = (TinyModels.Config() with { Likelihood = PixelLikelihood.Gaussian, LikelihoodScale = 0.1, BackgroundScale = 0.2 }).WithDigitSquares(spec);
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
    public void ABackgroundScaleIsRefusedWhereItCannotApply()
    {
        var images = TinyModels.Config() with { BackgroundScale = 0.2, DigitSquares = [new(0, 0, 0, 10)] };
        images.Validated();
        Assert.Contains("needs DigitSquares", Assert.Throws<UserInputException>(() => (images with { DigitSquares = [] }).Validated()).Message);
        Assert.Contains("images only", Assert.Throws<UserInputException>(() => (images with { ObservedDim = 12 }).Validated()).Message);
        Assert.Contains("> 0", Assert.Throws<UserInputException>(() => (images with { BackgroundScale = 0 }).Validated()).Message);
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
