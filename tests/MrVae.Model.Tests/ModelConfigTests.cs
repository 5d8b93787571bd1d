namespace MrVae.Model.Tests;

public class ModelConfigTests
{
    [Fact]
    public void WithSettingSetsOnePropertyByNameAndKeepsTheRest()
    {
        var config = new ModelConfig { LatentDim = 16, Beta = 1.5 };
        var changed = config.WithSetting("betasize=4.5").WithSetting("membership_prior=0.2").WithSetting("Likelihood=Gaussian");
        Assert.Equal(4.5, changed.BetaSize);
        Assert.Equal(0.2, changed.MembershipPrior);
        Assert.Equal(PixelLikelihood.Gaussian, changed.Likelihood);
        Assert.Equal(config with { BetaSize = 4.5, MembershipPrior = 0.2, Likelihood = PixelLikelihood.Gaussian }, changed);
        Assert.Equal(5, config.WithSetting("MaxSubsetOrder=5").MaxSubsetOrder);
        Assert.Null(config.WithSetting("MaxSubsetOrder=5").WithSetting("MaxSubsetOrder=null").MaxSubsetOrder);
        // Several in order, the later winning (train and bench take repeated --set).
        Assert.Equal(changed, config.WithSettings(["betasize=4.5", "membership_prior=0.2", "Likelihood=Gaussian"]));
        Assert.Equal(3, config.WithSettings(["MaxSubsetOrder=5", "MaxSubsetOrder=3"]).MaxSubsetOrder);
        Assert.Equal(config, config.WithSettings([]));
    }

    [Theory]
    [InlineData("NoSuchOption=1", "unknown model setting")]
    [InlineData("LatentDim", "NAME=VALUE")]
    [InlineData("LatentDim=many", "LatentDim=many")]
    public void WithSettingRefusesWhatItCannotSet(string assignment, string message)
        => Assert.Contains(message, Assert.Throws<MrVae.Data.UserInputException>(() => new ModelConfig().WithSetting(assignment)).Message);
}
