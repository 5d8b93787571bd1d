using System.Globalization;
using System.Text.Json;

namespace MrVae.Evaluation;

/// <summary>One line of a chart.</summary>
public sealed record Series(string Name, Rgb Color, double[] X, double[] Y, bool Markers = false);

/// <summary>The report's figures, drawn on a <see cref="Canvas"/>.</summary>
public static class Plots
{
    const int Scale = 1;

    /// <summary>
    /// A heatmap: values[row, column] coloured between <paramref name="min"/> and <paramref name="max"/> (viridis),
    /// row labels on the left (rows with <paramref name="rowMarks"/> get a "*"), column labels on top, a colour bar.
    /// </summary>
    public static Canvas Heatmap(string title, string[] rowLabels, string[] columnLabels, double[,] values, double min, double max,
        bool[]? rowMarks = null, bool showValues = false, int cell = 14, string? footer = null)
    {
        int rows = values.GetLength(0), cols = values.GetLength(1);
        if (rowLabels.Length != rows || columnLabels.Length != cols) throw new ArgumentException("labels do not match the value matrix");
        int labelWidth = rowLabels.Select(l => Canvas.TextWidth(l + " *")).DefaultIfEmpty(0).Max();
        int colLabelWidth = columnLabels.Select(l => Canvas.TextWidth(l)).DefaultIfEmpty(0).Max();
        int every = Math.Max(1, (int)Math.Ceiling((colLabelWidth + 3.0) / cell));
        int left = 10 + labelWidth + 6, top = 36, barGap = 16, barWidth = 14;
        int width = left + cols * cell + barGap + barWidth + 10 + Canvas.TextWidth(Format(max)) + 10;
        width = Math.Max(width, Canvas.TextWidth(title, 2) + 20);
        // The footer wraps at the figure's width rather than widening a narrow heatmap into mostly empty space.
        var footerLines = footer is null ? [] : Wrap(footer, width - 20);
        int height = top + rows * cell + 14 + 12 * footerLines.Length + (footerLines.Length > 0 ? 4 : 0);
        var c = new Canvas(width, height);
        c.Text(10, 6, title, Rgb.Black, 2);
        for (int col = 0; col < cols; col += every)
            c.TextCentered(left + col * cell + cell / 2, top - 10, columnLabels[col], Rgb.Black);
        double span = max > min ? max - min : 1;
        for (int r = 0; r < rows; r++)
        {
            string label = rowLabels[r] + (rowMarks is not null && rowMarks[r] ? " *" : "");
            c.TextRight(left - 6, top + r * cell + (cell - 7) / 2, label, rowMarks is not null && rowMarks[r] ? new Rgb(200, 0, 0) : Rgb.Black);
            for (int col = 0; col < cols; col++)
            {
                double v = values[r, col];
                var colour = Rgb.Viridis((v - min) / span);
                c.FillRect(left + col * cell, top + r * cell, cell, cell, colour);
                if (showValues && !double.IsNaN(v))
                {
                    string text = v.ToString(Math.Abs(v) >= 10 ? "F0" : "F2", CultureInfo.InvariantCulture);
                    var ink = (v - min) / span > 0.6 ? Rgb.Black : Rgb.White;
                    c.TextCentered(left + col * cell + cell / 2, top + r * cell + (cell - 7) / 2, text, ink);
                }
            }
        }
        c.StrokeRect(left - 1, top - 1, cols * cell + 2, rows * cell + 2, Rgb.Grey);
        int bx = left + cols * cell + barGap, bh = rows * cell;
        for (int y = 0; y < bh; y++) c.FillRect(bx, top + y, barWidth, 1, Rgb.Viridis(1 - (double)y / Math.Max(1, bh - 1)));
        c.StrokeRect(bx - 1, top - 1, barWidth + 2, bh + 2, Rgb.Grey);
        c.Text(bx + barWidth + 4, top, Format(max), Rgb.Black);
        c.Text(bx + barWidth + 4, top + bh - 7, Format(min), Rgb.Black);
        for (int i = 0; i < footerLines.Length; i++) c.Text(10, top + rows * cell + 16 + 12 * i, footerLines[i], Rgb.Black);
        return c;
    }

    /// <summary>
    /// <paramref name="text"/> broken at spaces into lines at most <paramref name="width"/> pixels wide (a single word wider
    /// than that keeps its own line).
    /// </summary>
    public static string[] Wrap(string text, int width)
    {
        var lines = new List<string>();
        var line = "";
        foreach (var word in text.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            string joined = line.Length == 0 ? word : line + " " + word;
            if (line.Length > 0 && Canvas.TextWidth(joined) > width) { lines.Add(line); line = word; }
            else line = joined;
        }
        if (line.Length > 0) lines.Add(line);
        return lines.ToArray();
    }

    /// <summary>A line chart in the rectangle (x, y, w, h) of <paramref name="c"/>: axes, ticks, legend.</summary>
    public static void LineChart(Canvas c, int x, int y, int w, int h, string title, IReadOnlyList<Series> series, string xLabel)
    {
        var finite = series.SelectMany(s => s.X.Zip(s.Y)).Where(p => double.IsFinite(p.First) && double.IsFinite(p.Second)).ToArray();
        c.Text(x + 4, y + 2, title, Rgb.Black);
        if (finite.Length == 0) { c.Text(x + 4, y + 20, "no data", Rgb.Grey); return; }
        double x0 = finite.Min(p => p.First), x1 = finite.Max(p => p.First);
        double y0 = finite.Min(p => p.Second), y1 = finite.Max(p => p.Second);
        if (x1 <= x0) x1 = x0 + 1;
        if (y1 <= y0) { y1 = y0 + Math.Max(1, Math.Abs(y0) * 0.1); y0 -= Math.Max(1, Math.Abs(y0) * 0.1); }
        var yTicks = Ticks(y0, y1, 5);
        var xTicks = Ticks(x0, x1, 6);
        y0 = Math.Min(y0, yTicks[0]); y1 = Math.Max(y1, yTicks[^1]);
        int tickWidth = yTicks.Max(t => Canvas.TextWidth(Format(t)));
        int px = x + 10 + tickWidth, py = y + 16, pw = w - (px - x) - 10, ph = h - 16 - 26;
        int X(double v) => px + (int)Math.Round((v - x0) / (x1 - x0) * (pw - 1));
        int Y(double v) => py + ph - 1 - (int)Math.Round((v - y0) / (y1 - y0) * (ph - 1));
        foreach (var t in yTicks)
        {
            if (t < y0 || t > y1) continue;
            c.Line(px, Y(t), px + pw - 1, Y(t), Rgb.LightGrey);
            c.TextRight(px - 4, Y(t) - 3, Format(t), Rgb.Black);
        }
        foreach (var t in xTicks)
        {
            if (t < x0 || t > x1) continue;
            c.Line(X(t), py, X(t), py + ph - 1, Rgb.LightGrey);
            c.TextCentered(X(t), py + ph + 4, Format(t), Rgb.Black);
        }
        c.StrokeRect(px - 1, py - 1, pw + 2, ph + 2, Rgb.Grey);
        c.TextRight(px + pw, py + ph + 15, xLabel, Rgb.Black);
        foreach (var s in series)
        {
            (int, int)? last = null;
            for (int i = 0; i < s.X.Length; i++)
            {
                if (!double.IsFinite(s.X[i]) || !double.IsFinite(s.Y[i])) { last = null; continue; }
                var p = (X(s.X[i]), Y(s.Y[i]));
                if (last is { } l) c.Line(l.Item1, l.Item2, p.Item1, p.Item2, s.Color, s.Markers ? 1 : 2);
                if (s.Markers) c.FillRect(p.Item1 - 2, p.Item2 - 2, 5, 5, s.Color);
                last = p;
            }
        }
        int lx = px + pw - 4, ly = py + 4;
        foreach (var s in series)
        {
            int tw = Canvas.TextWidth(s.Name);
            c.FillRect(lx - tw - 18, ly - 1, tw + 20, 10, Rgb.White);
            c.FillRect(lx - tw - 16, ly + 2, 10, 3, s.Color);
            c.TextRight(lx, ly, s.Name, Rgb.Black);
            ly += 11;
        }
    }

    /// <summary>Training curves from RUNDIR/metrics.jsonl (and test.jsonl): total loss, reconstruction, KL terms. Null without metrics.</summary>
    public static Canvas? TrainingCurves(string runDirectory, string title)
    {
        var metrics = ReadJsonLines(Path.Combine(runDirectory, "metrics.jsonl"));
        if (metrics.Count == 0) return null;
        var test = ReadJsonLines(Path.Combine(runDirectory, "test.jsonl"));
        double[] steps = metrics.Select(m => m.GetValueOrDefault("step", double.NaN)).ToArray();
        double[] Column(string key) => metrics.Select(m => m.GetValueOrDefault(key, double.NaN)).ToArray();
        int window = Math.Max(1, metrics.Count / 50);
        var loss = new List<Series>
        {
            new("train (raw)", Rgb.Palette[0].Blend(Rgb.White, 0.65), steps, Column("loss")),
            new($"train (mean of {window})", Rgb.Palette[0], steps, Smooth(Column("loss"), window)),
        };
        if (test.Count > 0)
            loss.Add(new("test (full-input view only)", Rgb.Palette[3], test.Select(t => t.GetValueOrDefault("step", double.NaN)).ToArray(),
                test.Select(t => t.GetValueOrDefault("test_loss", double.NaN)).ToArray(), Markers: true));
        var recKeys = metrics[0].Keys.Where(k => k.StartsWith("rec_", StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToArray();
        var rec = recKeys.Select((k, i) => new Series(k, Rgb.Palette[i % Rgb.Palette.Length], steps, Smooth(Column(k), window))).ToArray();
        var klKeys = metrics[0].Keys.Where(k => k.StartsWith("kl", StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToArray();
        var kl = klKeys.Select((k, i) => new Series(k, Rgb.Palette[i % Rgb.Palette.Length], steps, Smooth(Column(k), window))).ToArray();
        const int w = 900, panel = 260;
        var c = new Canvas(w, 30 + 3 * panel);
        c.Text(10, 6, title, Rgb.Black, 2);
        LineChart(c, 0, 30, w, panel, "loss (-ELBO per tuple)", loss, "step");
        LineChart(c, 0, 30 + panel, w, panel, $"reconstruction -log p(x_j|z) (mean of {window})", rec, "step");
        LineChart(c, 0, 30 + 2 * panel, w, panel, $"KL terms (mean of {window})", kl, "step");
        return c;
    }

    /// <summary>Labelled sample grid: each row a label and a list of 3 × 28 × 28 images.</summary>
    public static Canvas SampleGrid(string title, IReadOnlyList<(string Label, byte[][] Images)> rows, int scale = 2)
    {
        int side = 28 * scale, pad = 2;
        int labelWidth = rows.Select(r => Canvas.TextWidth(r.Label)).DefaultIfEmpty(0).Max() + 12;
        int cols = rows.Select(r => r.Images.Length).DefaultIfEmpty(0).Max();
        int width = Math.Max(labelWidth + cols * (side + pad) + pad, Canvas.TextWidth(title) + 20);
        var c = new Canvas(width, 20 + rows.Count * (side + pad) + pad);
        c.Text(6, 6, title, Rgb.Black);
        for (int r = 0; r < rows.Count; r++)
        {
            int y = 20 + pad + r * (side + pad);
            c.TextRight(labelWidth - 6, y + side / 2 - 3, rows[r].Label, Rgb.Black);
            for (int k = 0; k < rows[r].Images.Length; k++) c.Image(labelWidth + k * (side + pad), y, rows[r].Images[k], scale);
        }
        return c;
    }

    public static List<Dictionary<string, double>> ReadJsonLines(string path)
    {
        var list = new List<Dictionary<string, double>>();
        if (!File.Exists(path)) return list;
        foreach (var line in File.ReadLines(path))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                using var doc = JsonDocument.Parse(line);
                if (doc.RootElement.TryGetProperty("event", out _)) continue;   // an event line among the steps (events.jsonl has them all)
                var d = new Dictionary<string, double>();
                foreach (var p in doc.RootElement.EnumerateObject())
                    if (p.Value.ValueKind == JsonValueKind.Number) d[p.Name] = p.Value.GetDouble();
                list.Add(d);
            }
            catch (JsonException) { /* a line cut off by a crash: skip it */ }
        }
        return list;
    }

    /// <summary>Trailing moving average over <paramref name="window"/> finite values.</summary>
    public static double[] Smooth(double[] values, int window)
    {
        var result = new double[values.Length];
        var queue = new Queue<double>();
        double sum = 0;
        for (int i = 0; i < values.Length; i++)
        {
            if (double.IsFinite(values[i])) { queue.Enqueue(values[i]); sum += values[i]; }
            if (queue.Count > window) sum -= queue.Dequeue();
            result[i] = queue.Count == 0 ? double.NaN : sum / queue.Count;
        }
        return result;
    }

    /// <summary>"Nice" tick values (1, 2, 5 × 10^k steps) covering [lo, hi].</summary>
    public static double[] Ticks(double lo, double hi, int target)
    {
        double raw = (hi - lo) / Math.Max(1, target);
        double mag = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double step = new[] { 1, 2, 5, 10 }.Select(f => f * mag).First(s => s >= raw);
        double start = Math.Floor(lo / step) * step;
        var ticks = new List<double>();
        for (double t = start; t <= hi + step * 0.5 && ticks.Count < 50; t += step) ticks.Add(Math.Round(t / step) * step);
        return ticks.ToArray();
    }

    public static string Format(double v)
    {
        if (double.IsNaN(v)) return "nan";
        double a = Math.Abs(v);
        if (a >= 1e6) return (v / 1e6).ToString("0.#", CultureInfo.InvariantCulture) + "M";
        if (a >= 1e4) return (v / 1e3).ToString("0.#", CultureInfo.InvariantCulture) + "K";
        if (a >= 100 || a == 0) return v.ToString("0", CultureInfo.InvariantCulture);
        if (a >= 1) return v.ToString("0.##", CultureInfo.InvariantCulture);
        return v.ToString("0.###", CultureInfo.InvariantCulture);
    }
}
