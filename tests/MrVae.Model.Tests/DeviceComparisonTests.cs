using MrVae.Model.Training;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

public class DeviceComparisonTests
{
    static readonly ModelConfig Config = new() { Kind = ModelKind.MrVae, Modalities = 4, LatentDim = 6 };

    /// <summary>What the device check compares on a GPU, here the CPU against itself: the same step agrees, training and evaluation.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TheSameStepOnTheSameDeviceAgrees(bool training)
    {
        var r = DeviceComparison.Compare(Config, CPU, CPU, training, batch: 8);
        Assert.True(r.Agrees, $"loss rel {r.LossRelative:E2}, gradients rel {r.GradientRelative:E2}");
        Assert.Equal(r.Loss, DeviceComparison.Step(Config, CPU, ScalarType.Float64, training, 8, null).Loss);   // deterministic
    }

    /// <summary>A model that differs by one weight's 1e-4 does not pass as agreeing.</summary>
    [Fact]
    public void ADifferentModelIsAMismatch()
    {
        var r = DeviceComparison.Compare(Config, CPU, CPU, training: true, batch: 8, configureOther: m =>
        {
            using var _ = no_grad();
            m.parameters().First().add_(1e-4);
        });
        Assert.False(r.Agrees);
        Assert.True(r.GradientRelative > 1e-7, $"gradients rel {r.GradientRelative:E2}");
    }
}
