using MrVae.Model.Objectives;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

public class MrVaeObjectiveTests
{
    [Fact]
    public void EveryAvailabilitySetRunsAndMissingInputsDoNotLeakIntoDecoderInputs()
    {
        const int m = 3, d = 5, batch = 8;
        var config = TinyModels.Config(modalities: m, latent: d);
        using var objective = Seeds.Construct(2, "c", () => CoordinatorObjective.Create(config));
        objective.to(float64);
        for (int mask = 1; mask < 1 << m; mask++)
        {
            var (mu, logVar) = TinyModels.Posteriors(m, batch, d, new Generator(5));
            var (otherMu, otherLogVar) = TinyModels.Posteriors(m, batch, d, new Generator(6));
            // Same inputs for available modalities, different ones for the unavailable.
            for (int j = 0; j < m; j++)
                if ((mask >> j & 1) == 1) { otherMu[j] = mu[j]; otherLogVar[j] = logVar[j]; }
            using var available = TinyModels.Availability(mask, m, batch);
            var decode = Enumerable.Repeat(true, m).ToArray();
            using var a = objective.Forward(mu, logVar, available, decode, new StepContext { Generator = new Generator(9), Training = true });
            using var b = objective.Forward(otherMu, otherLogVar, available, decode, new StepContext { Generator = new Generator(9), Training = true });
            for (int j = 0; j < m; j++)
            {
                var x = TinyModels.Values(a.DecoderInputs[j]!);
                Assert.All(x, v => Assert.True(double.IsFinite(v)));
                Assert.Equal(x, TinyModels.Values(b.DecoderInputs[j]!));
            }
            Assert.Equal(a.Loss.item<double>(), b.Loss.item<double>());
            Assert.True(double.IsFinite(a.Loss.item<double>()));
        }
    }
}
