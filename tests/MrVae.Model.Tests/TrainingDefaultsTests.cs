using MrVae.Data;
using MrVae.Model.Training;

namespace MrVae.Model.Tests;

/// <summary>The per-kind defaults: mrVAE's structure options and never-shared half on images only.</summary>
public sealed class TrainingDefaultsTests
{
    [Fact]
    public void ImagesGiveMrVaeItsStructureOptionsAndHalfOfDNeverShared()
    {
        var config = TrainingDefaults.For(DatasetKind.Images).ForMrVae(new ModelConfig { Kind = ModelKind.MrVae, LatentDim = 64 });
        Assert.Equal(32, config.PrivatePositions);
        Assert.True(config.ReverseStructureKl && config.MemberMarginalKl && config.AgreementPrior && config.InitialMemberSets && config.ConditionalPrivatePrior);
        Assert.Equal(0.5, config.SubsetOwnDropout);
        // --set comes after the defaults and wins.
        Assert.False(config.WithSetting("AgreementPrior=false").AgreementPrior);
        Assert.Equal(8, TrainingDefaults.Images.ForMrVae(new ModelConfig { Kind = ModelKind.MrVae, LatentDim = 17 }).PrivatePositions);
    }

    [Theory]
    [InlineData(DatasetKind.Vectors, ModelKind.MrVae)]
    [InlineData(DatasetKind.Images, ModelKind.MoPoE)]
    public void VectorsAndTheBaselinesKeepTheConfigurationAsGiven(DatasetKind data, ModelKind kind)
    {
        var given = new ModelConfig { Kind = kind, LatentDim = 16 };
        Assert.Equal(given, TrainingDefaults.For(data).ForMrVae(given));
    }
}
