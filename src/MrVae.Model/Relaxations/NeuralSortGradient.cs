using System.Numerics;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Relaxations;

/// <summary>
/// The gradient that the straight-through products P·X and Pᵀ·R take from the NeuralSort matrix of scores s (… × n),
/// P̂ = softmax(left · right) with left = [(n + 1 − 2i)/τ, −1/τ] (n × 2) and right = [s; |s|] (|s|_c = Σ_k |s_c − s_k|),
/// for constants X (… × n × k1) and R (… × n × k2) and upstream gradients gU = ∂L/∂(P̂X), gV = ∂L/∂(P̂ᵀR):
///   G = gU·Xᵀ + R·gVᵀ,  ρ_i = Σ_c P̂_ic G_ic,  ∂L/∂right[q, c] = Σ_i left_iq · P̂_ic (G_ic − ρ_i),
///   ∂L/∂s_m = ∂L/∂right[0, m] + Σ_j sign(s_m − s_j) (∂L/∂right[1, j] + ∂L/∂right[1, m]).
/// This is the only place the relation module needs anything of size n × n per (sample, subset, member), and it is
/// the bulk of its arithmetic: <see cref="Fused"/> computes it row by row on the CPU (P̂'s row and G's row live in a
/// few cache lines and are never written out), <see cref="WithTorchOps"/> with libtorch ops (any device).
/// </summary>
public static class NeuralSortGradient
{
    /// <summary>∂L/∂s (… × n) with the fused kernel when the tensors are on the CPU, else with libtorch ops.</summary>
    public static Tensor Compute(Tensor scores, double tau, Tensor x, Tensor r, Tensor? gu, Tensor? gv)
        => scores.device_type == DeviceType.CPU && (scores.dtype == ScalarType.Float32 || scores.dtype == ScalarType.Float64)
            ? Fused(scores, tau, x, r, gu, gv)
            : WithTorchOps(scores, tau, x, r, gu, gv);

    /// <summary>
    /// The reference: P̂ as a tensor, ρ from two products with it, one product of P̂ᵀ with the 2(k1 + k2 + 1)
    /// columns v_q ⊙ [gU, R, ρ] (v_q: column q of left) that ∂L/∂right needs (G itself is never formed), and |s|'s
    /// gradient through an n × n sign matrix.
    /// </summary>
    public static Tensor WithTorchOps(Tensor scores, double tau, Tensor x, Tensor r, Tensor? gu, Tensor? gv)
    {
        using var scope = NewDisposeScope();
        gu ??= zeros_like(x); gv ??= zeros_like(r);
        var s = scores.detach();
        var (left, right) = Relax.NeuralSortFactors(s, tau);
        long k1 = x.shape[^1], k2 = r.shape[^1];
        var p = nn.functional.softmax(left.matmul(right), dim: -1);
        var pu = p.matmul(cat([x, gv], -1));                                        // [P̂X, P̂gV]
        var rho = (gu * pu.narrow(-1, 0, k1)).sum(-1) + (r * pu.narrow(-1, k1, k2)).sum(-1);
        var columns = new List<Tensor>();
        for (int q = 0; q < 2; q++)
        {
            var vq = left.select(-1, q).unsqueeze(-1);                               // n × 1
            columns.Add(vq * gu); columns.Add(vq * r); columns.Add(vq * rho.unsqueeze(-1));
        }
        var pw = p.transpose(-1, -2).matmul(cat(columns, -1));                      // … × n × 2(k1 + k2 + 1)
        var perQ = new Tensor[2];
        for (int q = 0; q < 2; q++)
        {
            long o = q * (k1 + k2 + 1);
            perQ[q] = (x * pw.narrow(-1, o, k1)).sum(-1) + (gv * pw.narrow(-1, o + k1, k2)).sum(-1) - pw.select(-1, o + k1 + k2);
        }
        var (gradS, gradAbs) = (perQ[0], perQ[1]);
        var sign = (s.unsqueeze(-1) - s.unsqueeze(-2)).sign();                       // [m, j]: sign(s_m − s_j)
        var gradient = gradS + (sign * (gradAbs.unsqueeze(-1) + gradAbs.unsqueeze(-2))).sum(-1);
        return gradient.MoveToOuterDisposeScope();
    }

    /// <summary>The same gradient from a CPU kernel that walks each P̂ row once in registers (float32 or float64).</summary>
    public static Tensor Fused(Tensor scores, double tau, Tensor x, Tensor r, Tensor? gu, Tensor? gv)
    {
        long n = scores.shape[^1], k1 = x.shape[^1], k2 = r.shape[^1];
        long matrices = scores.numel() / n;
        if (matrices * n * Math.Max(k1, k2) > int.MaxValue)
            throw new ArgumentException("too many elements for the fused NeuralSort gradient");
        var inputs = new[] { scores, x, r, gu ?? zeros_like(x), gv ?? zeros_like(r) }
            .Select(t => t.detach().to(scores.dtype).contiguous()).ToArray();
        var gradient = empty_like(inputs[0]);
        var shape = new Shape((int)n, (int)k1, (int)k2, tau);
        // Spread the matrices over libtorch's thread count (1 in the trainers' lanes): this work replaces libtorch ops
        // that would have used as many threads.
        int workers = (int)Math.Clamp(Math.Min(get_num_threads(), matrices / 64), 1, 64);
        if (scores.dtype == ScalarType.Float32) Run<float>(inputs, gradient, shape, matrices, workers);
        else Run<double>(inputs, gradient, shape, matrices, workers);
        foreach (var t in inputs) t.Dispose();
        return gradient;
    }

    readonly record struct Shape(int N, int K1, int K2, double Tau);

    static void Run<T>(Tensor[] inputs, Tensor gradient, Shape shape, long matrices, int workers)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        void Part(long first, long end)
        {
            var scratch = new T[(shape.K1 + shape.K2 + 4) * shape.N + shape.K1 + shape.K2];
            Span<T> s = Data<T>(inputs[0]), x = Data<T>(inputs[1]), r = Data<T>(inputs[2]),
                gu = Data<T>(inputs[3]), gv = Data<T>(inputs[4]), output = Data<T>(gradient);
            for (long b = first; b < end; b++) Matrix(s, x, r, gu, gv, output, shape, (int)b, scratch);
        }
        if (workers == 1) { Part(0, matrices); return; }
        Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers },
            w => Part(matrices * w / workers, matrices * (w + 1) / workers));
    }

    /// <summary>A tensor's elements as a span over its native storage (CPU, contiguous: no copy).</summary>
    static Span<T> Data<T>(Tensor t) where T : unmanaged => MemoryMarshal.Cast<byte, T>(t.bytes);

    /// <summary>∂L/∂s for matrix <paramref name="b"/>: |s|, three passes over each P̂ row (vectorised over its columns), |s|'s gradient.</summary>
    static void Matrix<T>(Span<T> sAll, Span<T> xAll, Span<T> rAll, Span<T> guAll, Span<T> gvAll,
        Span<T> gradientAll, Shape shape, int b, T[] scratch) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = shape.N, k1 = shape.K1, k2 = shape.K2;
        var s = sAll.Slice(b * n, n);
        var x = xAll.Slice(b * n * k1, n * k1);
        var r = rAll.Slice(b * n * k2, n * k2);
        var gu = guAll.Slice(b * n * k1, n * k1);
        var gv = gvAll.Slice(b * n * k2, n * k2);
        var span = scratch.AsSpan();
        var out0 = gradientAll.Slice(b * n, n);                 // ∂L/∂right[0] = the direct part of ∂L/∂s
        var out1 = span.Slice((k1 + k2 + 3) * n, n);            // ∂L/∂right[1] = ∂L/∂|s|
        out0.Clear(); out1.Clear();

        // Column-major copies of X and gV (k × n), so G's row is a sum of k1 + k2 scaled vectors over c.
        var columns = span[..((k1 + k2) * n)];
        for (int c = 0; c < n; c++)
        {
            for (int k = 0; k < k1; k++) columns[k * n + c] = x[c * k1 + k];
            for (int k = 0; k < k2; k++) columns[(k1 + k) * n + c] = gv[c * k2 + k];
        }
        var e = span.Slice((k1 + k2) * n, n);
        var g = span.Slice((k1 + k2 + 1) * n, n);
        var absSum = span.Slice((k1 + k2 + 2) * n, n);
        var weights = span.Slice((k1 + k2 + 4) * n, k1 + k2);   // gU's and R's row i: the weights of G's row
        int width = Vector<T>.Count, vectorEnd = n - n % width;
        absSum.Clear();
        for (int k = 0; k < n; k++)
        {
            int c = 0;
            var sk = new Vector<T>(s[k]);
            for (; c < vectorEnd; c += width) (new Vector<T>(absSum[c..]) + Vector.Abs(new Vector<T>(s[c..]) - sk)).CopyTo(absSum[c..]);
            for (; c < n; c++) absSum[c] += T.Abs(s[c] - s[k]);
        }
        T tau = T.CreateChecked(shape.Tau), z = -T.One / tau;

        for (int i = 0; i < n; i++)
        {
            T a = T.CreateChecked(n - 1 - 2 * i) / tau;   // rank i + 1: (n + 1 − 2(i + 1))/τ
            // Pass 1: logits a·s_c + z·|s|_c and their maximum (softmax's shift).
            T max = T.NegativeInfinity;
            int c = 0;
            if (vectorEnd > 0)
            {
                var va = new Vector<T>(a); var vz = new Vector<T>(z);
                var vmax = new Vector<T>(T.NegativeInfinity);
                for (; c < vectorEnd; c += width)
                {
                    var l = va * new Vector<T>(s[c..]) + vz * new Vector<T>(absSum[c..]);
                    l.CopyTo(e[c..]);
                    vmax = Vector.MaxNative(vmax, l);   // no NaN here: plain vmaxps
                }
                for (int w = 0; w < width; w++) max = T.Max(max, vmax[w]);
            }
            for (; c < n; c++) { e[c] = a * s[c] + z * absSum[c]; max = T.Max(max, e[c]); }

            // Pass 2: e_c = exp(logit − max), Z = Σ e, G's row, S = Σ e·G.
            for (int k = 0; k < k1; k++) weights[k] = gu[i * k1 + k];
            for (int k = 0; k < k2; k++) weights[k1 + k] = r[i * k2 + k];
            T sumE = T.Zero, sumEG = T.Zero;
            c = 0;
            if (vectorEnd > 0)
            {
                var vmax = new Vector<T>(max);
                var vsumE = Vector<T>.Zero; var vsumEG = Vector<T>.Zero;
                for (; c < vectorEnd; c += width)
                {
                    var ev = Exp(new Vector<T>(e[c..]) - vmax);
                    var gRow = Vector<T>.Zero;
                    for (int k = 0; k < k1 + k2; k++) gRow += new Vector<T>(weights[k]) * new Vector<T>(columns[(k * n + c)..]);
                    ev.CopyTo(e[c..]); gRow.CopyTo(g[c..]);
                    vsumE += ev; vsumEG += ev * gRow;
                }
                sumE = Vector.Sum(vsumE); sumEG = Vector.Sum(vsumEG);
            }
            for (; c < n; c++)
            {
                T ev = T.Exp(e[c] - max), gRow = T.Zero;
                for (int k = 0; k < k1 + k2; k++) gRow += weights[k] * columns[k * n + c];
                e[c] = ev; g[c] = gRow; sumE += ev; sumEG += ev * gRow;
            }

            // Pass 3: h_c = P̂_ic (G_ic − ρ_i); ∂L/∂right[q, c] += left_iq · h_c.
            T inverse = T.One / sumE, rho = sumEG * inverse;
            c = 0;
            if (vectorEnd > 0)
            {
                var vInverse = new Vector<T>(inverse); var vRho = new Vector<T>(rho);
                var va = new Vector<T>(a); var vz = new Vector<T>(z);
                for (; c < vectorEnd; c += width)
                {
                    var h = new Vector<T>(e[c..]) * vInverse * (new Vector<T>(g[c..]) - vRho);
                    (new Vector<T>(out0[c..]) + va * h).CopyTo(out0[c..]);
                    (new Vector<T>(out1[c..]) + vz * h).CopyTo(out1[c..]);
                }
            }
            for (; c < n; c++)
            {
                T h = e[c] * inverse * (g[c] - rho);
                out0[c] += a * h; out1[c] += z * h;
            }
        }

        // |s|_j = Σ_k |s_j − s_k|: ∂|s|_j/∂s_m = sign(s_m − s_j) for j ≠ m and Σ_k sign(s_m − s_k) for j = m.
        // Vectorised over m: out0_m += Σ_j sign(s_m − s_j)(out1_j + out1_m).
        for (int j = 0; j < n; j++)
        {
            int m = 0;
            var sj = new Vector<T>(s[j]); var oj = new Vector<T>(out1[j]);
            for (; m < vectorEnd; m += width)
            {
                var sm = new Vector<T>(s[m..]);
                var sign = Vector.ConditionalSelect(Vector.GreaterThan(sm, sj), Vector<T>.One, Vector<T>.Zero)
                    - Vector.ConditionalSelect(Vector.LessThan(sm, sj), Vector<T>.One, Vector<T>.Zero);
                (new Vector<T>(out0[m..]) + sign * (oj + new Vector<T>(out1[m..]))).CopyTo(out0[m..]);
            }
            for (; m < n; m++) out0[m] += T.CreateTruncating(T.Sign(s[m] - s[j])) * (out1[j] + out1[m]);
        }
    }

    static Vector<T> Exp<T>(Vector<T> v) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return Vector.Exp(v.As<T, float>()).As<float, T>();
        if (typeof(T) == typeof(double)) return Vector.Exp(v.As<T, double>()).As<double, T>();
        throw new NotSupportedException(typeof(T).Name);
    }
}

/// <summary>
/// The zero-valued corrections c − sg(c) for c = P̂·X and P̂ᵀ·R (X, R constants, P̂ = NeuralSort(s, τ)): zero forward (so
/// nothing of size n × n is built in the forward), and in the backward the gradient to the scores s that P̂·X and P̂ᵀ·R
/// would give (<see cref="NeuralSortGradient"/>). Replaces building P̂ in the forward and keeping it until the backward.
/// </summary>
sealed class NeuralSortCorrections : autograd.MultiTensorFunction<NeuralSortCorrections>
{
    public override string Name => nameof(NeuralSortCorrections);

    public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (scores, x, r, tau) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (double)vars[3]);
        ctx.save_for_backward([scores, x, r]);
        ctx.save_data("tau", tau);
        return [zeros_like(x), zeros_like(r)];
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> grads)
    {
        var saved = ctx.get_saved_variables();
        var gradient = NeuralSortGradient.Compute(saved[0], (double)ctx.get_data("tau"), saved[1], saved[2], grads[0], grads[1]);
        foreach (var t in saved) t.Dispose();   // the wrappers only: the saved tensors go with the graph
        return [gradient, null!, null!, null!];   // one per input, τ included
    }
}
