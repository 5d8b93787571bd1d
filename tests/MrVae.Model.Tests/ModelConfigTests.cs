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

    [Theory]
    [InlineData("MembershipPrior=0", "MembershipPrior=0")]
    [InlineData("MembershipPrior=1", "strictly between 0 and 1")]
    [InlineData("LikelihoodScale=0", "LikelihoodScale=0")]
    [InlineData("Beta=-1", "Beta=-1")]
    [InlineData("StructureWarmupSteps=-5", "StructureWarmupSteps=-5")]
    [InlineData("MaxSubsetOrder=1", "between 2 and the number of modalities")]
    [InlineData("Modalities=1", "at least 2 modalities")]
    [InlineData("PrivatePositions=32", "below LatentDim (32)")]
    [InlineData("PrivatePositions=-1", "PrivatePositions=-1")]
    public void AnOutOfRangeSettingIsRefusedWhenTheModelIsBuiltNamingTheSetting(string assignment, string message)
    {
        var config = new ModelConfig().WithSetting(assignment);
        Assert.Contains(message, Assert.Throws<MrVae.Data.UserInputException>(() => Objectives.CoordinatorObjective.Create(config)).Message);
    }

    [Theory]
    [InlineData(ModelKind.MoPoE, "SubsetOwnDropout=0.5", "SubsetOwnDropout=0.5")]
    [InlineData(ModelKind.Mvae, "PrivatePositions=4", "PrivatePositions=4")]
    [InlineData(ModelKind.Mmvae, "AgreementPrior=true", "AgreementPrior=true")]
    public void AStructureOptionIsRefusedForABaselineThatWouldIgnoreIt(ModelKind kind, string assignment, string message)
    {
        var config = new ModelConfig { Kind = kind }.WithSetting(assignment);
        var error = Assert.Throws<MrVae.Data.UserInputException>(() => Objectives.CoordinatorObjective.Create(config)).Message;
        Assert.Contains(message, error);
        Assert.Contains($"leave them at their defaults for {kind}", error);
        // The same setting is mrVAE's to use.
        using var model = Objectives.CoordinatorObjective.Create(config with { Kind = ModelKind.MrVae });
    }

    [Fact]
    public void ACommandThatSetsSeveralModelsGivesTheStructureSwitchesToMrVaeAlone()
    {
        string[] settings = ["SubsetOwnDropout=0.25", "PrivatePositions=4", "Beta=1.5"];
        var mrvae = new ModelConfig { Kind = ModelKind.MrVae }.WithSettings(settings).WithStructureOptionsForMrVaeOnly();
        Assert.Equal((0.25, 4, 1.5), (mrvae.SubsetOwnDropout, mrvae.PrivatePositions, mrvae.Beta));
        var mopoe = new ModelConfig { Kind = ModelKind.MoPoE }.WithSettings(settings).WithStructureOptionsForMrVaeOnly();
        // The structure switches are back at their defaults; every other setting reaches the baseline too.
        Assert.Equal(new ModelConfig { Kind = ModelKind.MoPoE, Beta = 1.5 }, mopoe);
        using var model = Objectives.CoordinatorObjective.Create(mopoe);
    }

    [Fact]
    public void TheDefaultsAndAVectorConfigurationAreValid()
    {
        Assert.Equal(new ModelConfig(), new ModelConfig().Validated());
        var vectors = new ModelConfig { ObservedDim = 20, Modalities = 6, MaxSubsetOrder = 6, StructureWarmupSteps = 10 };
        Assert.Equal(vectors, vectors.Validated());
    }
}
