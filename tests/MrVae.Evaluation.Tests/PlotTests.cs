namespace MrVae.Evaluation.Tests;

public sealed class PlotTests : IDisposable
{
    readonly string dir = Path.Combine(Path.GetTempPath(), "mrvae-plots-" + Guid.NewGuid().ToString("N"));
    public void Dispose() { if (Directory.Exists(dir)) Directory.Delete(dir, true); }

    [Fact]
    public void TextDrawsInkInsideItsBox()
    {
        var c = new Canvas(40, 12);
        c.Text(1, 1, "A1", Rgb.Black);
        int ink = 0;
        for (int y = 0; y < 12; y++)
            for (int x = 0; x < 40; x++)
                if (c[x, y] == Rgb.Black) { ink++; Assert.InRange(x, 1, 1 + Canvas.TextWidth("A1")); Assert.InRange(y, 1, 7); }
        Assert.Equal(18 + 10, ink);   // 'A' has 18 set pixels, '1' has 10
    }

    [Fact]
    public void HeatmapAndCurvesWritePngFiles()
    {
        Directory.CreateDirectory(dir);
        var values = new double[,] { { 0, 0.5 }, { 1, double.NaN } };
        var c = Plots.Heatmap("t", ["a", "b"], ["0", "1"], values, 0, 1, rowMarks: [true, false], showValues: true, cell: 20);
        string path = Path.Combine(dir, "h.png");
        c.Save(path);
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(path).Take(4));
        File.WriteAllLines(Path.Combine(dir, "metrics.jsonl"), Enumerable.Range(0, 30).Select(i => $"{{\"step\":{i},\"loss\":{1000 - 10 * i},\"rec_0\":{500 - i},\"kl\":{20 + i % 3},\"step_ms\":5}}").Append("{\"step\":30,\"lo"));
        File.WriteAllLines(Path.Combine(dir, "test.jsonl"), ["{\"step\":10,\"test_loss\":950}", "{\"step\":30,\"test_loss\":800}"]);
        var curves = Plots.TrainingCurves(dir, "run");
        Assert.NotNull(curves);
        Assert.Null(Plots.TrainingCurves(Path.Combine(dir, "none"), "x"));
    }

    [Fact]
    public void WrapBreaksAtSpacesWithinTheWidth()
    {
        const string text = "rows: latent position d and its member set; columns: modality";
        int width = Canvas.TextWidth("rows: latent position d");
        var lines = Plots.Wrap(text, width);
        Assert.Equal(text, string.Join(" ", lines));
        Assert.All(lines, l => Assert.True(Canvas.TextWidth(l) <= width, $"'{l}' is wider than {width} px"));
        Assert.Equal("rows: latent position d", lines[0]);
        Assert.Equal(["averylongword", "b"], Plots.Wrap("averylongword b", Canvas.TextWidth("ab")));
    }

    [Fact]
    public void ALongFooterWrapsInsteadOfWideningTheHeatmap()
    {
        var values = new double[,] { { 0, 1 } };
        string footer = string.Join(" ", Enumerable.Repeat("word", 60));
        var narrow = Plots.Heatmap("t", ["a"], ["0", "1"], values, 0, 1);
        var wrapped = Plots.Heatmap("t", ["a"], ["0", "1"], values, 0, 1, footer: footer);
        Assert.Equal(narrow.Width, wrapped.Width);
        int lines = Plots.Wrap(footer, narrow.Width - 20).Length;
        Assert.True(lines > 1);
        Assert.Equal(narrow.Height + 12 * lines + 4, wrapped.Height);
    }

    [Fact]
    public void TicksAreNiceAndCoverTheRange()
    {
        Assert.Equal([0, 200, 400, 600, 800, 1000], Plots.Ticks(3, 990, 5));
        Assert.Equal([0.1, 0.15, 0.2, 0.25], Plots.Ticks(0.11, 0.24, 3).Select(t => Math.Round(t, 6)));
        Assert.Equal([1, 0.5, 0.5, 2], Plots.Smooth([1, 0, double.NaN, 4], 2));
    }
}
