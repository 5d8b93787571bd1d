using MrVae.Model.Numerics;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

public sealed class ManagedArraysTests
{
    [Fact]
    public void TensorsFromArraysLiveInLibTorchsAlignedMemoryWithTheSameValues()
    {
        var values = Enumerable.Range(0, 3 * 37).Select(i => MathF.Sin(i)).ToArray();
        // Many arrays at the GC's positions: a wrapped array lands off a 64-byte boundary among them.
        var arrays = Enumerable.Range(0, 16).Select(k => values.Take(3 * 37 - k % 4).Concat(values.TakeLast(k % 4)).ToArray()).ToArray();
        foreach (var a in arrays)
        {
            using var t = ManagedArrays.ToTensor(a, [3, 37]);
            Assert.Equal(0L, (long)t.storage<float>().data_ptr() % 64);
            Assert.Equal(a, t.data<float>().ToArray());
            a[0] += 1;                                             // a copy: the array's later changes do not reach it
            Assert.NotEqual(a[0], t[0, 0].item<float>());
        }
        using var d = ManagedArrays.ToTensor(new[] { 1.0, 2.0 }, [2]);
        Assert.Equal(ScalarType.Float64, d.dtype);
        Assert.Equal(0L, (long)d.storage<double>().data_ptr() % 64);
    }
}
