using System.Numerics;

namespace MrVae.Model.Numerics;

/// <summary>Vectorised exp and log for the CPU kernels' generic element type (float32 or float64).</summary>
static class VectorMath
{
    public static Vector<T> Exp<T>(Vector<T> v) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return Vector.Exp(v.As<T, float>()).As<float, T>();
        if (typeof(T) == typeof(double)) return Vector.Exp(v.As<T, double>()).As<double, T>();
        throw new NotSupportedException(typeof(T).Name);
    }

    public static Vector<T> Log<T>(Vector<T> v) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return Vector.Log(v.As<T, float>()).As<float, T>();
        if (typeof(T) == typeof(double)) return Vector.Log(v.As<T, double>()).As<double, T>();
        throw new NotSupportedException(typeof(T).Name);
    }

    public static void ExpInPlace<T>(Span<T> values) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int width = Vector<T>.Count, c = 0;
        for (; c + width <= values.Length; c += width) Exp(new Vector<T>(values[c..])).CopyTo(values[c..]);
        for (; c < values.Length; c++) values[c] = T.Exp(values[c]);
    }

    public static void LogInPlace<T>(Span<T> values) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int width = Vector<T>.Count, c = 0;
        for (; c + width <= values.Length; c += width) Log(new Vector<T>(values[c..])).CopyTo(values[c..]);
        for (; c < values.Length; c++) values[c] = T.Log(values[c]);
    }
}
