using MrVae.Model.Numerics;
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
            var scratch = new T[ScratchLength(shape.N, shape.K1, shape.K2)];
            Span<T> s = Data<T>(inputs[0]), x = Data<T>(inputs[1]), r = Data<T>(inputs[2]),
                gu = Data<T>(inputs[3]), gv = Data<T>(inputs[4]), output = Data<T>(gradient);
            int n = shape.N, k1 = shape.K1, k2 = shape.K2;
            T tau = T.CreateChecked(shape.Tau);
            var keys = new T[n]; var order = new int[n];
            for (long bl = first; bl < end; bl++)
            {
                int b = (int)bl;
                // Columns in descending order of s: the band of P̂ that matters is then contiguous (see Matrix).
                for (int c = 0; c < n; c++) { keys[c] = -s[b * n + c]; order[c] = c; }
                keys.AsSpan().Sort(order.AsSpan());
                Matrix<T>(s.Slice(b * n, n), x.Slice(b * n * k1, n * k1), r.Slice(b * n * k2, n * k2),
                    gu.Slice(b * n * k1, n * k1), gv.Slice(b * n * k2, n * k2), output.Slice(b * n, n), k1, k2, tau, scratch, order);
            }
        }
        if (workers == 1) { Part(0, matrices); return; }
        Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers },
            w => Part(matrices * w / workers, matrices * (w + 1) / workers));
    }

    /// <summary>Scratch elements that <see cref="Matrix"/> needs for one n × n matrix with k1 + k2 right-hand columns.</summary>
    internal static int ScratchLength(int n, int k1, int k2) => (k1 + k2 + 8) * n + 2 * (k1 + k2);

    /// <summary>
    /// How far below its row's largest logit an entry of P̂ may be left out: e^−30 ≈ 1e−13 of the row's largest entry
    /// (float32 rounds at 6e−8), e^−60 ≈ 1e−26 (float64: 1e−16). What is left out is below the working precision.
    /// </summary>
    static T Cutoff<T>() where T : IFloatingPointIeee754<T> => T.CreateChecked(typeof(T) == typeof(float) ? 30 : 60);

    /// <summary>A tensor's elements as a span over its native storage (CPU, contiguous: no copy).</summary>
    static Span<T> Data<T>(Tensor t) where T : unmanaged => MemoryMarshal.Cast<byte, T>(t.bytes);

    /// <summary>Both rows' logits a·s_c + z·|s|_c for the vector of columns at <paramref name="c"/>, stored and returned.</summary>
    static (Vector<T> L0, Vector<T> L1) Logits<T>(ReadOnlySpan<T> s, ReadOnlySpan<T> zAbs, Span<T> e0, Span<T> e1, int c, Vector<T> a0, Vector<T> a1)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var sc = new Vector<T>(s[c..]); var zc = new Vector<T>(zAbs[c..]);
        var l0 = a0 * sc + zc; var l1 = a1 * sc + zc;
        l0.CopyTo(e0[c..]); l1.CopyTo(e1[c..]);
        return (l0, l1);
    }

    /// <summary>The logits of the columns after the last whole vector (scalar), into <paramref name="e0"/>, <paramref name="e1"/>.</summary>
    static void TailLogits<T>(ReadOnlySpan<T> s, ReadOnlySpan<T> zAbs, Span<T> e0, Span<T> e1, T a0, T a1, int vectorEnd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int c = vectorEnd; c < s.Length; c++) { e0[c] = a0 * s[c] + zAbs[c]; e1[c] = a1 * s[c] + zAbs[c]; }
    }

    /// <summary>
    /// Pass 1 over every column: logits of a pair's two rows into <paramref name="e0"/>, <paramref name="e1"/>, their
    /// maxima and the band [first, end) of whole vectors where either row is within <paramref name="cutoff"/> of its
    /// maximum (first ≥ end: none).
    /// </summary>
    static (T Max0, T Max1, int First, int End) BandByScan<T>(ReadOnlySpan<T> s, ReadOnlySpan<T> zAbs, Span<T> e0, Span<T> e1,
        T a0, T a1, T cutoff, int vectorEnd) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int width = Vector<T>.Count;
        T max0 = T.NegativeInfinity, max1 = T.NegativeInfinity;
        if (vectorEnd > 0)
        {
            var va0 = new Vector<T>(a0); var va1 = new Vector<T>(a1);
            var vmax0 = new Vector<T>(T.NegativeInfinity); var vmax1 = vmax0;
            for (int c = 0; c < vectorEnd; c += width)
            {
                var (l0, l1) = Logits(s, zAbs, e0, e1, c, va0, va1);
                vmax0 = Vector.MaxNative(vmax0, l0); vmax1 = Vector.MaxNative(vmax1, l1);   // no NaN here: plain vmaxps
            }
            for (int w = 0; w < width; w++) { max0 = T.Max(max0, vmax0[w]); max1 = T.Max(max1, vmax1[w]); }
        }
        TailLogits(s, zAbs, e0, e1, a0, a1, vectorEnd);
        for (int c = vectorEnd; c < s.Length; c++) { max0 = T.Max(max0, e0[c]); max1 = T.Max(max1, e1[c]); }
        int first = vectorEnd, end = 0;
        var floor0 = new Vector<T>(max0 - cutoff); var floor1 = new Vector<T>(max1 - cutoff);
        for (int v = 0; v < vectorEnd; v += width)
            if (Vector.GreaterThanOrEqualAny(new Vector<T>(e0[v..]), floor0) || Vector.GreaterThanOrEqualAny(new Vector<T>(e1[v..]), floor1))
            {
                first = Math.Min(first, v); end = v + width;
            }
        return (max0, max1, first, end);
    }

    /// <summary>
    /// Pass 1 for rows i and i + 1 of a descending s (at least one whole vector): row i's logits rise up to position i
    /// and fall after it (their steps are (2c − 2i + 1)·(s_c − s_(c+1))/τ), so its maximum is its logit at i (row
    /// i + 1's at i + 1), and the band is found by walking out from the diagonal's vector until a vector lies wholly
    /// below both floors: only the band's vectors (and one more on each side) and the tail are computed.
    /// </summary>
    static (T Max0, T Max1, int First, int End) BandFromDiagonal<T>(ReadOnlySpan<T> s, ReadOnlySpan<T> zAbs, Span<T> e0, Span<T> e1,
        T a0, T a1, int i, T cutoff, int vectorEnd) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int width = Vector<T>.Count;
        T max0 = a0 * s[i] + zAbs[i], max1 = a1 * s[i + 1] + zAbs[i + 1];
        var va0 = new Vector<T>(a0); var va1 = new Vector<T>(a1);
        var floor0 = new Vector<T>(max0 - cutoff); var floor1 = new Vector<T>(max1 - cutoff);
        bool InBand(Vector<T> l0, Vector<T> l1) => Vector.GreaterThanOrEqualAny(l0, floor0) || Vector.GreaterThanOrEqualAny(l1, floor1);
        int home = Math.Min(i / width * width, vectorEnd - width);
        int first = home, end = home + width;
        Logits(s, zAbs, e0, e1, home, va0, va1);   // holds (or borders) the diagonal: always in the band
        for (int v = home + width; v < vectorEnd; v += width)
        {
            var (l0, l1) = Logits(s, zAbs, e0, e1, v, va0, va1);
            if (!InBand(l0, l1)) break;
            end = v + width;
        }
        for (int v = home - width; v >= 0; v -= width)
        {
            var (l0, l1) = Logits(s, zAbs, e0, e1, v, va0, va1);
            if (!InBand(l0, l1)) break;
            first = v;
        }
        TailLogits(s, zAbs, e0, e1, a0, a1, vectorEnd);
        return (max0, max1, first, end);
    }

    /// <summary>
    /// ∂L/∂s (into <paramref name="result"/>) for one matrix: |s|, then P̂'s rows two at a time in three passes each (logits and their
    /// maximum; exp, Z, G and Σ e·G; the rows' contributions), vectorised over columns, then |s|'s gradient.
    /// <para>
    /// The columns are visited in <paramref name="order"/> (item at each position; identity if empty). Given the items
    /// in descending order of s, row i's logits fall monotonically on both sides of position i (their steps are
    /// (2|j − i| + 1)·(s_(j) − s_(j+1))/τ), so the entries that matter form a band around the diagonal, narrow when τ
    /// is small: passes 2 and 3 skip the whole vectors of columns whose logits lie more than <see cref="Cutoff"/> below
    /// both rows' maxima. Any order gives the same result (the skipped entries are below the working precision
    /// whatever their place); a sorted one lets more vectors be skipped.
    /// </para>
    /// </summary>
    internal static void Matrix<T>(ReadOnlySpan<T> s, ReadOnlySpan<T> x, ReadOnlySpan<T> r, ReadOnlySpan<T> gu, ReadOnlySpan<T> gv,
        Span<T> result, int k1, int k2, T tau, Span<T> scratch, ReadOnlySpan<int> order = default) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = s.Length, k = k1 + k2;
        var span = scratch;
        var out0 = span.Slice((k + 6) * n, n);      // ∂L/∂right[0] = the direct part of ∂L/∂s, by position
        var out1 = span.Slice((k + 5) * n, n);      // Σ_i h_ic; ∂L/∂right[1] = ∂L/∂|s| = z · this (left's column 1 is z)
        out0.Clear(); out1.Clear();
        bool permuted = !order.IsEmpty;
        var sorted = span.Slice((k + 7) * n, n);   // s by position
        for (int c = 0; c < n; c++) sorted[c] = s[permuted ? order[c] : c];
        s = sorted;

        // Column-major copies of X and gV (k × n) by position, so G's row is a sum of k1 + k2 scaled vectors over c.
        var columns = span[..(k * n)];
        for (int c = 0; c < n; c++)
        {
            int item = permuted ? order[c] : c;
            for (int q = 0; q < k1; q++) columns[q * n + c] = x[item * k1 + q];
            for (int q = 0; q < k2; q++) columns[(k1 + q) * n + c] = gv[item * k2 + q];
        }
        var e0 = span.Slice(k * n, n); var e1 = span.Slice((k + 1) * n, n);
        var g0 = span.Slice((k + 2) * n, n); var g1 = span.Slice((k + 3) * n, n);
        var zAbs = span.Slice((k + 4) * n, n);
        var weights = span.Slice((k + 8) * n, 2 * k);   // gU's and R's rows i and i + 1: the weights of G's rows
        // The right-hand columns with a non-zero weight in either row (in mrVAE, ranks ≥ n_A have one of five).
        Span<int> active = k <= 64 ? stackalloc int[k] : new int[k];
        int width = Vector<T>.Count, vectorEnd = n - n % width;
        T z = -T.One / tau, cutoff = Cutoff<T>();
        // z·|s|_c, |s|_c = Σ_k |s_c − s_k|: the logits' part shared by every row. In descending order it is
        // (Σ_{k<c} s_k − c·s_c) + ((n−1−c)·s_c − Σ_{k>c} s_k) from prefix sums (kept in float64), O(n) instead of O(n²).
        bool descending = true;
        for (int c = 1; c < n && descending; c++) descending = s[c] <= s[c - 1];
        if (descending)
        {
            double total = 0, before = 0;
            for (int c = 0; c < n; c++) total += double.CreateChecked(s[c]);
            for (int c = 0; c < n; c++)
            {
                double sc = double.CreateChecked(s[c]), after = total - before - sc;
                zAbs[c] = z * T.CreateChecked((before - c * sc) + ((n - 1 - c) * sc - after));
                before += sc;
            }
        }
        else
        {
            zAbs.Clear();
            for (int q = 0; q < n; q++)
            {
                int c = 0;
                var sq = new Vector<T>(s[q]);
                for (; c < vectorEnd; c += width) (new Vector<T>(zAbs[c..]) + Vector.Abs(new Vector<T>(s[c..]) - sq)).CopyTo(zAbs[c..]);
                for (; c < n; c++) zAbs[c] += T.Abs(s[c] - s[q]);
            }
            for (int c = 0; c < n; c++) zAbs[c] *= z;
        }

        for (int i = 0; i < n; i += 2)
        {
            // Rows i and i + 1 (ranks i + 1 and i + 2: a = (n + 1 − 2·rank)/τ). With n odd the last pair's second row
            // is a stand-in with a = 0 and G = 0, whose contribution h = P̂(G − ρ) is exactly 0.
            bool pair = i + 1 < n;
            T a0 = T.CreateChecked(n - 1 - 2 * i) / tau, a1 = pair ? T.CreateChecked(n - 3 - 2 * i) / tau : T.Zero;
            for (int q = 0; q < k1; q++) { weights[q] = gu[i * k1 + q]; weights[k + q] = pair ? gu[(i + 1) * k1 + q] : T.Zero; }
            for (int q = 0; q < k2; q++) { weights[k1 + q] = r[i * k2 + q]; weights[k + k1 + q] = pair ? r[(i + 1) * k2 + q] : T.Zero; }

            // Pass 1: logits a·s_c + z·|s|_c, their maxima (softmax's shifts) and the band: the first and last vector
            // of columns where either row's logit is within the cutoff of its maximum.
            var (max0, max1, first, end) = descending && pair && vectorEnd > 0
                ? BandFromDiagonal(s, zAbs, e0, e1, a0, a1, i, cutoff, vectorEnd)
                : BandByScan(s, zAbs, e0, e1, a0, a1, cutoff, vectorEnd);
            int activeCount = 0;
            for (int q = 0; q < k; q++) if (weights[q] != T.Zero || weights[k + q] != T.Zero) active[activeCount++] = q;
            var act = active[..activeCount];

            // Pass 2: e_c = exp(logit − max), Z = Σ e, G's rows, S = Σ e·G.
            T sumE0 = T.Zero, sumEG0 = T.Zero, sumE1 = T.Zero, sumEG1 = T.Zero;
            int c = first;
            if (first < end)
            {
                var vmax0 = new Vector<T>(max0); var vmax1 = new Vector<T>(max1);
                Vector<T> vsumE0 = default, vsumEG0 = default, vsumE1 = default, vsumEG1 = default;
                for (; c < end; c += width)
                {
                    var ev0 = VectorMath.Exp(new Vector<T>(e0[c..]) - vmax0); var ev1 = VectorMath.Exp(new Vector<T>(e1[c..]) - vmax1);
                    Vector<T> gRow0 = default, gRow1 = default;
                    foreach (int q in act)
                    {
                        var column = new Vector<T>(columns[(q * n + c)..]);
                        gRow0 += new Vector<T>(weights[q]) * column; gRow1 += new Vector<T>(weights[k + q]) * column;
                    }
                    ev0.CopyTo(e0[c..]); gRow0.CopyTo(g0[c..]); ev1.CopyTo(e1[c..]); gRow1.CopyTo(g1[c..]);
                    vsumE0 += ev0; vsumEG0 += ev0 * gRow0; vsumE1 += ev1; vsumEG1 += ev1 * gRow1;
                }
                sumE0 = Vector.Sum(vsumE0); sumEG0 = Vector.Sum(vsumEG0); sumE1 = Vector.Sum(vsumE1); sumEG1 = Vector.Sum(vsumEG1);
            }
            for (c = vectorEnd; c < n; c++)
            {
                T ev0 = T.Exp(e0[c] - max0), ev1 = T.Exp(e1[c] - max1), gRow0 = T.Zero, gRow1 = T.Zero;
                foreach (int q in act) { gRow0 += weights[q] * columns[q * n + c]; gRow1 += weights[k + q] * columns[q * n + c]; }
                e0[c] = ev0; g0[c] = gRow0; sumE0 += ev0; sumEG0 += ev0 * gRow0;
                e1[c] = ev1; g1[c] = gRow1; sumE1 += ev1; sumEG1 += ev1 * gRow1;
            }

            // Pass 3: h_c = P̂_ic (G_ic − ρ_i); ∂L/∂right[0, c] += a_i·h_c, Σ_i h_ic for ∂L/∂right[1, c].
            T inverse0 = T.One / sumE0, rho0 = sumEG0 * inverse0, inverse1 = T.One / sumE1, rho1 = sumEG1 * inverse1;
            c = first;
            if (first < end)
            {
                var vInverse0 = new Vector<T>(inverse0); var vRho0 = new Vector<T>(rho0);
                var vInverse1 = new Vector<T>(inverse1); var vRho1 = new Vector<T>(rho1);
                var va0 = new Vector<T>(a0); var va1 = new Vector<T>(a1);
                for (; c < end; c += width)
                {
                    var h0 = new Vector<T>(e0[c..]) * vInverse0 * (new Vector<T>(g0[c..]) - vRho0);
                    var h1 = new Vector<T>(e1[c..]) * vInverse1 * (new Vector<T>(g1[c..]) - vRho1);
                    (new Vector<T>(out0[c..]) + va0 * h0 + va1 * h1).CopyTo(out0[c..]);
                    (new Vector<T>(out1[c..]) + h0 + h1).CopyTo(out1[c..]);
                }
            }
            for (c = vectorEnd; c < n; c++)
            {
                T h0 = e0[c] * inverse0 * (g0[c] - rho0), h1 = e1[c] * inverse1 * (g1[c] - rho1);
                out0[c] += a0 * h0 + a1 * h1; out1[c] += h0 + h1;
            }
        }
        for (int c = 0; c < n; c++) out1[c] *= z;

        // |s|_j = Σ_k |s_j − s_k|: ∂|s|_j/∂s_m = sign(s_m − s_j) for j ≠ m and Σ_k sign(s_m − s_k) for j = m, so
        // out0_m += Σ_j sign(s_m − s_j)(out1_j + out1_m). In descending order the signs are −1 before m's run of equal
        // values and +1 after it: prefix sums (float64) give it in O(n).
        if (descending)
        {
            double total = 0, before = 0;
            for (int c = 0; c < n; c++) total += double.CreateChecked(out1[c]);
            for (int first = 0; first < n;)
            {
                int end = first + 1;
                double run = double.CreateChecked(out1[first]);
                while (end < n && s[end] == s[first]) run += double.CreateChecked(out1[end++]);
                double after = total - before - run;
                int higher = first, lower = n - end;
                for (int m = first; m < end; m++)
                {
                    double om = double.CreateChecked(out1[m]);
                    out0[m] += T.CreateChecked((after + lower * om) - (before + higher * om));
                }
                before += run;
                first = end;
            }
        }
        else for (int j = 0; j < n; j++)
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
        for (int c = 0; c < n; c++) result[permuted ? order[c] : c] = out0[c];
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
