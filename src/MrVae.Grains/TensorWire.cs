using System.Runtime.InteropServices;
using MrVae.Model.Numerics;
using static TorchSharp.torch;

namespace MrVae.Grains;

/// <summary>Tensors to and from <see cref="TensorPayload"/> (float32 and float64; bytes are little-endian as in memory).</summary>
public static class TensorWire
{
    public static TensorPayload ToPayload(Tensor t)
    {
        using var c = t.detach().cpu().contiguous();
        return new TensorPayload(c.shape, c.dtype.ToString(), c.bytes.ToArray());
    }

    public static Tensor FromPayload(TensorPayload p, Device device)
    {
        Tensor t = p.DType switch
        {
            nameof(ScalarType.Float32) => ManagedArrays.ToTensor(MemoryMarshal.Cast<byte, float>(p.Data).ToArray(), p.Shape),
            nameof(ScalarType.Float64) => ManagedArrays.ToTensor(MemoryMarshal.Cast<byte, double>(p.Data).ToArray(), p.Shape),
            _ => throw new ArgumentException($"unsupported tensor element type {p.DType} on the wire"),
        };
        return device.type == TorchSharp.DeviceType.CPU ? t : t.to(device);
    }
}
