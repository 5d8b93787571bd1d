using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Training;

/// <summary>What a trainer does at a step whose loss or gradients are NaN or infinite.</summary>
public enum NonFiniteAction
{
    /// <summary>End the run (exit code 1), keeping the last good checkpoint. The default: a diverged run rarely recovers by itself.</summary>
    Stop,
    /// <summary>Leave the step's update out and go on with the next batch; stop after <see cref="NonFinite.MaxSkippedInARow"/> such steps in a row.</summary>
    Skip,
}

/// <summary>A loss term or a gradient became NaN or infinite: the run diverged at <see cref="Step"/> in <see cref="Where"/>.</summary>
public sealed class NonFiniteException(long step, string where, double value, string advice)
    : Exception($"step {step}: {where} is {NonFinite.Describe(value)}; the training diverged. {advice}")
{
    public long Step { get; } = step;
    /// <summary>The term ("rec_2", "kl") or "modality J's gradient" / "the coordinator's gradient" that was not finite.</summary>
    public string Where { get; } = where;
}

/// <summary>Finds the first non-finite loss term or gradient of a step, for every trainer alike.</summary>
public static class NonFinite
{
    /// <summary>With <see cref="NonFiniteAction.Skip"/>, this many skipped steps in a row end the run anyway.</summary>
    public const int MaxSkippedInARow = 10;

    public static string Describe(double value) => double.IsNaN(value) ? "NaN" : value > 0 ? "+infinity" : "-infinity";

    /// <summary>The first non-finite term, the specific terms (rec_j, kl…) before their sum "loss"; null if all are finite.</summary>
    public static (string Term, double Value)? Term(IReadOnlyDictionary<string, double> terms)
    {
        foreach (var (k, v) in terms.Where(t => t.Key != "loss").Append(new("loss", terms.GetValueOrDefault("loss"))))
            if (!double.IsFinite(v)) return (k, v);
        return null;
    }

    /// <summary>
    /// The first group whose gradients hold a NaN or an infinity (one read for all groups); null if all are finite
    /// or no parameter has a gradient.
    /// </summary>
    public static (string Group, double Value)? Gradient(IReadOnlyList<(string Group, IReadOnlyList<Tensor> Gradients)> groups)
    {
        using var scope = NewDisposeScope();
        var checks = new List<(string Group, Tensor Bad)>();
        foreach (var (group, gradients) in groups)
        {
            var bad = gradients.Select(g => (~isfinite(g)).any()).ToArray();
            if (bad.Length > 0) checks.Add((group, stack(bad).any()));
        }
        if (checks.Count == 0) return null;
        var flags = stack(checks.Select(c => c.Bad).ToArray()).cpu().data<bool>().ToArray();
        for (int i = 0; i < flags.Length; i++)
            if (flags[i])
            {
                // Say which: NaN if any, else the sign of the first infinity.
                var all = cat(groups[groups.ToList().FindIndex(g => g.Group == checks[i].Group)].Gradients.Select(g => g.flatten()).ToArray());
                double value = isnan(all).any().item<bool>() ? double.NaN : all[~isfinite(all)][0].ToDouble();
                return (checks[i].Group, value);
            }
        return null;
    }

    /// <summary>What to try, said the same by every trainer.</summary>
    public static string Advice(double learningRate, NonFiniteAction action, string checkpoint)
        => $"Try a lower --lr (this run's is {learningRate:G4})" + (action == NonFiniteAction.Stop ? ", or --on-nonfinite skip to leave such steps out" : "")
           + $". {checkpoint}";
}
