using static TorchSharp.torch;

namespace MrVae.Model.Numerics;

/// <summary>
/// Tensors made from managed arrays, copied into memory that libtorch allocates (64-byte aligned).
/// TorchSharp's <c>tensor(array)</c> wraps the array where the GC put it (8- or 16-byte aligned), and libtorch's CPU
/// kernels round differently with alignment: the same numbers gave results a bit apart from run to run, and the local
/// and distributed trainers stopped agreeing bit for bit (docs/experiments.md, eleventh session).
/// </summary>
public static class ManagedArrays
{
    public static Tensor ToTensor(float[] values, long[] shape) { using var wrapped = tensor(values, shape); return wrapped.clone(); }

    public static Tensor ToTensor(double[] values, long[] shape) { using var wrapped = tensor(values, shape); return wrapped.clone(); }
}
