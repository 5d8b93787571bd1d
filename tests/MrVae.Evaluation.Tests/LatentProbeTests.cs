using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Evaluation.Tests;

public sealed class LatentProbeTests
{
    [Fact]
    public void LinearlySeparableFeaturesAreLearnedAndNoiseStaysAtChance()
    {
        var gen = new Generator(4);
        var y = randint(0, 10, [2000], dtype: int64, generator: gen);
        var centres = 3 * randn([10, 16], generator: gen);
        var x = centres.index_select(0, y) + randn([2000, 16], generator: gen);
        var ytr = y.narrow(0, 0, 1500); var yte = y.narrow(0, 1500, 500);
        double good = LatentProbe.FitAndScore(x.narrow(0, 0, 1500), ytr, x.narrow(0, 1500, 500), yte);
        Assert.True(good > 0.95, $"separable accuracy {good:F3}");
        var noise = randn([2000, 16], generator: gen);
        double chance = LatentProbe.FitAndScore(noise.narrow(0, 0, 1500), ytr, noise.narrow(0, 1500, 500), yte);
        Assert.True(chance < 0.2, $"noise accuracy {chance:F3}");
    }
}
