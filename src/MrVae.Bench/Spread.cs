namespace MrVae.Bench;

/// <summary>Median, quartiles and range of a sample (quartiles by linear interpolation between order statistics).</summary>
public sealed record Spread(double Median, double Q1, double Q3, double Min, double Max, int Count)
{
    public static Spread Of(IEnumerable<double> values)
    {
        var v = values.OrderBy(x => x).ToArray();
        if (v.Length == 0) throw new ArgumentException("no values to summarise");
        return new Spread(Quantile(v, 0.5), Quantile(v, 0.25), Quantile(v, 0.75), v[0], v[^1], v.Length);
    }

    static double Quantile(double[] sorted, double q)
    {
        double pos = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(pos), hi = (int)Math.Ceiling(pos);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
    }
}
