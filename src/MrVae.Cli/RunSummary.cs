using System.Text.Json;
using MrVae.Model.Training;
using Spectre.Console;

namespace MrVae.Cli;

/// <summary>The last words of a training: one readable line, or with --json one JSON object for scripts.</summary>
public static class RunSummary
{
    public static void Print(TrainResult result, bool json)
    {
        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?>
            {
                ["steps"] = result.Steps,
                ["final_loss"] = Finite(result.FinalLoss),
                ["best_test_loss"] = result.BestTestLoss is { } best ? Finite(best) : null,
                ["best_step"] = result.BestStep,
                ["median_step_ms"] = Math.Round(result.MedianStepMilliseconds, 3),
                ["run_dir"] = Path.GetFullPath(result.RunDirectory),
            }));
            return;
        }
        AnsiConsole.MarkupLineInterpolated($"[green]done[/]: {result.Steps} steps, last loss {result.FinalLoss:F2}, best test loss {result.BestTestLoss:F2} at step {result.BestStep}, median step {result.MedianStepMilliseconds:F0} ms; run in {result.RunDirectory}");
    }

    // JSON has no NaN or infinity: a diverged loss becomes null.
    static double? Finite(double x) => double.IsFinite(x) ? x : null;
}
