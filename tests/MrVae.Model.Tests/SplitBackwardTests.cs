using MrVae.Model.Objectives;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

public class SplitBackwardTests
{
    /// <summary>
    /// One training forward of mrVAE's coordinator on fixed posteriors and decoder gradients, then either one backward
    /// over everything or <see cref="SplitBackward"/>; returns the members' gradients and the parameters' gradients,
    /// the latter also as they stand before <see cref="SplitBackward.FinishParameters"/>.
    /// </summary>
    static (double[][] Members, double[][] Parameters, double[][]? BeforeFinish, int CutSize) Gradients(bool split, ScalarType dtype)
    {
        const int m = 4, d = 6, batch = 16;
        var config = TinyModels.Config(modalities: m, latent: d);
        using var objective = Seeds.Construct(3, "c", () => CoordinatorObjective.Create(config));
        objective.to(dtype);
        var (mu, logVar) = TinyModels.Posteriors(m, batch, d, new Generator(4), dtype);
        foreach (var t in mu.Concat(logVar)) t!.requires_grad_();
        using var available = TinyModels.Availability((1 << m) - 1, m, batch, dtype);
        var decode = Enumerable.Repeat(true, m).ToArray();
        using var output = objective.Forward(mu, logVar, available, decode, new StepContext { Generator = new Generator(9), Training = true });
        var gen = new Generator(10);
        var roots = new List<Tensor> { output.Loss }; var rootGradients = new List<Tensor> { ones_like(output.Loss) };
        foreach (var x in output.DecoderInputs) { roots.Add(x!); rootGradients.Add(randn(x!.shape, dtype: dtype, generator: gen)); }
        var inputs = mu.Concat(logVar).Select(t => t!).ToArray();
        double[][] Parameters() => objective.parameters().Select(p => p.grad is { } g ? TinyModels.Values(g) : new double[p.numel()]).ToArray();
        int cutSize = output.ParameterCut.Length;
        if (!split)
        {
            autograd.backward(roots, rootGradients);
            return (inputs.Select(t => TinyModels.Values(t.grad!)).ToArray(), Parameters(), null, cutSize);
        }
        using var backward = SplitBackward.Run(roots, rootGradients, inputs, output.ParameterCut);
        var members = backward.MemberGradients.Select(TinyModels.Values).ToArray();
        var before = Parameters();
        backward.FinishParameters();
        return (members, Parameters(), before, cutSize);
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.Float64)]
    public void WithoutACutTheSplitIsTheOneBackwardBitForBit(ScalarType dtype)
    {
        var whole = Gradients(split: false, dtype);
        var parts = Gradients(split: true, dtype);
        Assert.Equal(whole.Members.Length, parts.Members.Length);
        for (int i = 0; i < whole.Members.Length; i++) Assert.Equal(whole.Members[i], parts.Members[i]);
        for (int i = 0; i < whole.Parameters.Length; i++) Assert.Equal(whole.Parameters[i], parts.Parameters[i]);
        Assert.Contains(whole.Parameters, g => g.Any(v => v != 0));
        // mrVAE's coordinator sets no cut: one backward, the parameters' gradients complete before FinishParameters.
        Assert.Equal(0, parts.CutSize);
        Assert.Equal(whole.Parameters, parts.BeforeFinish!);
    }
}
