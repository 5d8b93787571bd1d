namespace MrVae.Model.Tests;

public class ModelConfigTests
{
    [Fact]
    public void Bf16DefaultFollowsTheCpuAndARecordedValueWins()
    {
        // The default is this CPU's: bf16 products only where they are native (see ModelConfig.NativeBf16).
        bool flags = File.Exists("/proc/cpuinfo") && File.ReadLines("/proc/cpuinfo").Where(l => l.StartsWith("flags"))
            .Take(1).Any(l => l.Contains(" avx512_bf16") || l.Contains(" amx_bf16"));
        Assert.Equal(flags, ModelConfig.NativeBf16);
        Assert.Equal(ModelConfig.NativeBf16, new ModelConfig().RelationBf16);
        // A run's config.json keeps the value it was made with, whatever machine reads it.
        var other = new ModelConfig { RelationBf16 = !ModelConfig.NativeBf16 };
        Assert.Equal(!ModelConfig.NativeBf16, ModelConfig.FromJson(other.ToJson()).RelationBf16);
        Assert.Equal(!ModelConfig.NativeBf16, new ModelConfig().WithSetting($"RelationBf16={(!ModelConfig.NativeBf16).ToString().ToLowerInvariant()}").RelationBf16);
    }

    [Fact]
    public void WithSettingSetsOnePropertyByNameAndKeepsTheRest()
    {
        var config = new ModelConfig { LatentDim = 16, Beta = 1.5 };
        var changed = config.WithSetting("selectionrampslope=4.5").WithSetting("size_logits_from_prior=true").WithSetting("Likelihood=Gaussian");
        Assert.Equal(4.5, changed.SelectionRampSlope);
        Assert.True(changed.SizeLogitsFromPrior);
        Assert.Equal(PixelLikelihood.Gaussian, changed.Likelihood);
        Assert.Equal(config with { SelectionRampSlope = 4.5, SizeLogitsFromPrior = true, Likelihood = PixelLikelihood.Gaussian }, changed);
        Assert.Equal(5, config.WithSetting("MaxSubsetOrder=5").MaxSubsetOrder);
        Assert.Null(config.WithSetting("MaxSubsetOrder=5").WithSetting("MaxSubsetOrder=null").MaxSubsetOrder);
        // Several in order, the later winning (train and bench take repeated --set).
        Assert.Equal(changed, config.WithSettings(["selectionrampslope=4.5", "size_logits_from_prior=true", "Likelihood=Gaussian"]));
        Assert.Equal(3, config.WithSettings(["MaxSubsetOrder=5", "MaxSubsetOrder=3"]).MaxSubsetOrder);
        Assert.Equal(config, config.WithSettings([]));
    }

    [Theory]
    [InlineData("NoSuchOption=1", "unknown model setting")]
    [InlineData("LatentDim", "NAME=VALUE")]
    [InlineData("LatentDim=many", "LatentDim=many")]
    public void WithSettingRefusesWhatItCannotSet(string assignment, string message)
        => Assert.Contains(message, Assert.Throws<ArgumentException>(() => new ModelConfig().WithSetting(assignment)).Message);
}
