using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Numerics;

/// <summary>
/// Random tensors for any device from the trainers' generators, which live on the CPU (seeded per party, saved in
/// checkpoints). libtorch draws only on the generator's own device, so for another device the values are drawn on
/// the generator's and moved: a GPU run then draws exactly the values a CPU run does, from the same stream.
/// </summary>
public static class DeviceRandom
{
    /// <summary>Uniform [0, 1) values of <paramref name="shape"/> on <paramref name="device"/>.</summary>
    public static Tensor Rand(long[] shape, ScalarType dtype, Device device, Generator? generator)
        => Draw(device, generator, on => rand(shape, dtype: dtype, device: on, generator: generator));

    /// <summary>Standard normal values of <paramref name="shape"/> on <paramref name="device"/>.</summary>
    public static Tensor Randn(long[] shape, ScalarType dtype, Device device, Generator? generator)
        => Draw(device, generator, on => randn(shape, dtype: dtype, device: on, generator: generator));

    static Tensor Draw(Device device, Generator? generator, Func<Device, Tensor> draw)
    {
        if (generator is null || generator.device.type == device.type && generator.device.index == device.index) return draw(device);
        using var drawn = draw(generator.device);
        return drawn.to(device);
    }
}
