using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

/// <summary>libtorch loads on this machine (see build/LibTorchSharpGlibcxx.targets) and autograd works.</summary>
public class TorchSharpLoadTests
{
    [Fact]
    public void TensorOpAndBackwardMatchHandComputation()
    {
        using var x = tensor(new double[] { 1.0, -2.0, 3.0 }, requires_grad: true);
        using var y = (x * x * x).sum();   // y = Σ x³, dy/dx = 3x²
        y.backward();
        Assert.Equal(1.0 - 8.0 + 27.0, y.item<double>(), 12);
        var grad = x.grad!.data<double>().ToArray();
        Assert.Equal(new[] { 3.0, 12.0, 27.0 }, grad);
    }

    [Fact]
    public void MatmulAgreesWithManualSum()
    {
        var gen = new Generator(seed: 7);
        using var a = randn(4, 5, dtype: float64, generator: gen);
        using var b = randn(5, 3, dtype: float64, generator: gen);
        using var c = a.matmul(b);
        var A = a.data<double>().ToArray(); var B = b.data<double>().ToArray(); var C = c.data<double>().ToArray();
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 3; j++)
            {
                double s = 0; for (int k = 0; k < 5; k++) s += A[i * 5 + k] * B[k * 3 + j];
                Assert.Equal(s, C[i * 3 + j], 12);
            }
    }
}
