using MrVae.Model.Objectives;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

/// <summary>
/// Backpropagated gradients against central finite differences in float64, in training mode (mrVAE's soft
/// memberships make its loss a smooth function of every parameter).
/// </summary>
public class GradientCheckTests
{
    const double Eps = 1e-6;

    static void CheckAgainstFiniteDifferences(Func<Tensor> lossFn, IReadOnlyList<Tensor> leaves, int entries, int seed, double rtol = 1e-4, double atol = 1e-6)
    {
        foreach (var leaf in leaves) leaf.grad?.zero_();
        using (var loss = lossFn()) loss.backward();
        var rng = new Random(seed);
        int checkedEntries = 0, nonZero = 0;
        for (int e = 0; e < entries; e++)
        {
            var leaf = leaves[rng.Next(leaves.Count)];
            long index = rng.NextInt64(leaf.numel());
            double analytic = leaf.grad!.flatten()[index].item<double>();
            double original;
            double Eval(double value)
            {
                using (no_grad()) leaf.flatten()[index] = value;
                using var l = lossFn();
                return l.item<double>();
            }
            using (no_grad()) original = leaf.flatten()[index].item<double>();
            double plus = Eval(original + Eps), minus = Eval(original - Eps);
            Eval(original);
            double numeric = (plus - minus) / (2 * Eps);
            Assert.True(Math.Abs(numeric - analytic) <= atol + rtol * Math.Abs(numeric),
                $"entry {index} of a {string.Join("x", leaf.shape)} leaf: backprop {analytic:G10}, finite difference {numeric:G10}");
            checkedEntries++;
            if (Math.Abs(analytic) > 1e-8) nonZero++;
        }
        // A check that only ever compares zeros proves nothing.
        Assert.True(nonZero >= checkedEntries / 2, $"only {nonZero} of {checkedEntries} checked gradients were non-zero");
    }

    [Theory]
    [InlineData(ModelKind.MrVae)]
    [InlineData(ModelKind.MoPoE)]
    [InlineData(ModelKind.Mvae)]
    [InlineData(ModelKind.Mmvae)]
    public void FullLossGradientsMatchFiniteDifferences(ModelKind kind)
    {
        const int m = 2, batch = 2;
        var config = TinyModels.Config(kind, modalities: m, latent: 3) with { EncoderHidden = 4 };
        using var model = new MultimodalVae(config, seed: 12);
        model.to(float64);
        var gen = new Generator(2);
        var x = Enumerable.Range(0, m).Select(_ => (Tensor?)rand([batch, 3, 28, 28], dtype: float64, generator: gen)).ToArray();
        using var available = MultimodalVae.AllAvailable([true, true], batch, float64);

        Tensor Loss()
        {
            var context = new StepContext { Generator = new Generator(5), Training = true };
            using var step = model.Loss(x, available, context);
            return step.Total.alias();
        }

        var leaves = model.parameters().Cast<Tensor>().ToList();
        CheckAgainstFiniteDifferences(Loss, leaves, entries: 40, seed: 3, rtol: 1e-4, atol: 1e-5);
    }
}
