using System.Numerics;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Numerics;

/// <summary>
/// Counter-based random numbers: value i of a stream is a pure function of (key, i), SplitMix64's output function
/// applied to key + (i + 1)·γ (Steele, Lea &amp; Flood 2014). A tensor of noise can then be filled in any order, in
/// vectors, and reproduced exactly from one 64-bit key: the fused chain and the reference chain read the same
/// draws, and the local and distributed trainers take the key from the same step generator. Why not libtorch's
/// generator: its CPU fill is serial, ~10 ns a value, 40 ms of mrVAE's coordinator forward at D = 64 (4.2 M Gumbel
/// and Gaussian draws a step), longer than the relation networks it runs beside.
/// </summary>
public readonly record struct CounterNoise(ulong Key)
{
    const ulong Gamma = 0x9E3779B97F4A7C15;

    /// <summary>A key from <paramref name="generator"/> (advances it by one draw).</summary>
    public static CounterNoise From(Generator generator)
    {
        using var bits = randint(long.MaxValue, [1], dtype: ScalarType.Int64, generator: generator);
        return new CounterNoise((ulong)bits.item<long>());
    }

    /// <summary>An independent stream for sub-purpose <paramref name="id"/> (e.g. one per noise tensor).</summary>
    public CounterNoise Stream(ulong id) => new(Mix(Key ^ Mix(unchecked(id * 0xD1B54A32D192ED03 + Gamma))));

    /// <summary>SplitMix64's output function: a bijection of 64-bit words with full avalanche.</summary>
    public static ulong Mix(ulong z)
    {
        unchecked
        {
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
            return z ^ (z >> 31);
        }
    }

    /// <summary>The raw 64-bit value at <paramref name="index"/>.</summary>
    public ulong Bits(long index) => Mix(unchecked(Key + ((ulong)index + 1) * Gamma));

    static Vector<ulong> Mix(Vector<ulong> z)
    {
        z = (z ^ (z >>> 30)) * new Vector<ulong>(0xBF58476D1CE4E5B9);
        z = (z ^ (z >>> 27)) * new Vector<ulong>(0x94D049BB133111EB);
        return z ^ (z >>> 31);
    }

    /// <summary>
    /// Uniform on (0, 1), never 0 or 1: float32 u = (2k + 1)·2⁻²⁴ with k the top 23 bits, float64 (2k + 1)·2⁻⁵³ with
    /// the top 52 (both exact, so −log u and −log(1 − u) stay finite).
    /// </summary>
    public static float UniformSingle(ulong bits) => (2 * (float)(bits >> 41) + 1) * (1f / (1 << 24));
    public static double UniformDouble(ulong bits) => (2 * (double)(bits >> 12) + 1) * (1.0 / (1L << 53));

    /// <summary>Uniforms for indices offset, offset + 1, … into <paramref name="destination"/>.</summary>
    public void Uniform(Span<float> destination, long offset)
    {
        int width = Vector<float>.Count, i = 0;
        var lanes = LaneOffsets();
        for (; i + width <= destination.Length; i += width)
            UniformVector(offset + i, 1, lanes).CopyTo(destination[i..]);
        for (; i < destination.Length; i++) destination[i] = UniformSingle(Bits(offset + i));
    }

    /// <summary>Standard Gumbel −log(−log U) for indices offset, offset + 1, ….</summary>
    public void Gumbel(Span<float> destination, long offset)
    {
        int width = Vector<float>.Count, i = 0;
        var lanes = LaneOffsets();
        for (; i + width <= destination.Length; i += width)
            (-Vector.Log(-Vector.Log(UniformVector(offset + i, 1, lanes)))).CopyTo(destination[i..]);
        for (; i < destination.Length; i++) destination[i] = -MathF.Log(-MathF.Log(UniformSingle(Bits(offset + i))));
    }

    public void Gumbel(Span<double> destination, long offset)
    {
        for (int i = 0; i < destination.Length; i++) destination[i] = -Math.Log(-Math.Log(UniformDouble(Bits(offset + i))));
    }

    /// <summary>
    /// Standard normal values n = offset, offset + 1, … by Box–Muller from the uniforms at indices 2n and 2n + 1:
    /// √(−2 log u₁)·cos(2π u₂) (one value per pair, so value n depends on n alone).
    /// </summary>
    public void Normal(Span<float> destination, long offset)
    {
        int width = Vector<float>.Count, i = 0;
        var lanes = LaneOffsets();
        var twoPi = new Vector<float>(2 * MathF.PI);
        for (; i + width <= destination.Length; i += width)
        {
            var u1 = UniformVector(2 * (offset + i), 2, lanes);
            var u2 = UniformVector(2 * (offset + i) + 1, 2, lanes);
            (Vector.SquareRoot(new Vector<float>(-2f) * Vector.Log(u1)) * Vector.Cos(twoPi * u2)).CopyTo(destination[i..]);
        }
        for (; i < destination.Length; i++)
        {
            long n = offset + i;
            float u1 = UniformSingle(Bits(2 * n)), u2 = UniformSingle(Bits(2 * n + 1));
            destination[i] = MathF.Sqrt(-2f * MathF.Log(u1)) * MathF.Cos(2 * MathF.PI * u2);
        }
    }

    public void Normal(Span<double> destination, long offset)
    {
        for (int i = 0; i < destination.Length; i++)
        {
            long n = offset + i;
            double u1 = UniformDouble(Bits(2 * n)), u2 = UniformDouble(Bits(2 * n + 1));
            destination[i] = Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
        }
    }

    /// <summary>A tensor of standard Gumbel noise, value i at flat (row-major) index i.</summary>
    public Tensor Gumbel(long[] shape, ScalarType dtype, Device? device = null)
        => Fill(shape, dtype, device, (noise, f, o) => noise.Gumbel(f, o), (noise, d, o) => noise.Gumbel(d, o));

    /// <summary>A tensor of standard normal noise, value i at flat (row-major) index i.</summary>
    public Tensor Normal(long[] shape, ScalarType dtype, Device? device = null)
        => Fill(shape, dtype, device, (noise, f, o) => noise.Normal(f, o), (noise, d, o) => noise.Normal(d, o));

    /// <summary>Threads a tensor's fill uses at most: all cores but one (see Fill); settable for tests and measurements.</summary>
    public static int FillWorkers { get; set; } = Math.Max(1, Environment.ProcessorCount - 1);

    delegate void FillSingle(CounterNoise noise, Span<float> destination, long offset);
    delegate void FillDouble(CounterNoise noise, Span<double> destination, long offset);

    Tensor Fill(long[] shape, ScalarType dtype, Device? device, FillSingle single, FillDouble @double)
    {
        // Drawn in float32 or float64 on the CPU (other dtypes and devices get a converted copy).
        var native = dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var result = empty(shape, dtype: native);
        long count = result.numel();
        // Each value is a function of its index, so chunks fill in any order, on any thread, with the same result
        // (chunk starts are multiples of the vector width: the same values take the vector path as in one pass).
        // All cores but one: the chain's draws run beside the relation networks, which keep the other (on 2 cores
        // this is one pass). On an H200 machine's CPU one pass took 14 ms a view; the split was measured here only
        // (2 workers: 6.5 → 3.6 ms a view), not there.
        const int chunk = 1 << 16;
        long chunks = (count + chunk - 1) / chunk;
        var noise = this;
        void FillChunk(long c)
        {
            long start = c * chunk;
            int length = (int)Math.Min(chunk, count - start);
            if (native == ScalarType.Float32) single(noise, Span<float>(result, start, length), start);
            else @double(noise, Span<double>(result, start, length), start);
        }
        int workers = (int)Math.Min(chunks, FillWorkers);
        if (workers <= 1) for (long c = 0; c < chunks; c++) FillChunk(c);
        else Parallel.For(0L, chunks, new ParallelOptions { MaxDegreeOfParallelism = workers }, FillChunk);
        if (native == dtype && (device is null || device.type == DeviceType.CPU)) return result;
        using (result) return result.to(dtype, device ?? CPU);
    }

    static Span<T> Span<T>(Tensor contiguous, long start, int length) where T : unmanaged
        => MemoryMarshal.Cast<byte, T>(contiguous.bytes).Slice((int)start, length);

    /// <summary>0, 1, …, as 64-bit lanes (two vectors of them make one float vector).</summary>
    static Vector<ulong> LaneOffsets()
    {
        Span<ulong> lanes = stackalloc ulong[Vector<ulong>.Count];
        for (int i = 0; i < lanes.Length; i++) lanes[i] = (ulong)i;
        return new Vector<ulong>(lanes);
    }

    /// <summary>
    /// Uniforms at indices first + spacing·l for the float lanes l = 0 … width − 1: two 64-bit vectors (the lanes'
    /// first and second halves) narrowed into one 32-bit vector.
    /// </summary>
    Vector<float> UniformVector(long first, ulong spacing, Vector<ulong> lanes)
    {
        ulong half = (ulong)Vector<ulong>.Count;
        var key = new Vector<ulong>(Key); var gamma = new Vector<ulong>(Gamma); var step = lanes * new Vector<ulong>(spacing);
        var lo = Mix(key + (new Vector<ulong>((ulong)first + 1) + step) * gamma);
        var hi = Mix(key + (new Vector<ulong>((ulong)first + 1 + spacing * half) + step) * gamma);
        var k = Vector.Narrow(lo >>> 41, hi >>> 41).As<uint, int>();                 // top 23 bits
        return (Vector.ConvertToSingle(k) * new Vector<float>(2f) + Vector<float>.One) * new Vector<float>(1f / (1 << 24));
    }
}
