using System.Text.RegularExpressions;
using MrVae.Model.Training;
using Spectre.Console;

namespace MrVae.Cli;

/// <summary>Progress of work made of several trainings (the paper experiment): one bar per run, made when it starts.</summary>
public static partial class RunProgress
{
    /// <summary>
    /// Runs <paramref name="work"/> under a live display; it reports every step with its run's name, and its log
    /// lines are printed above the bars (a log line about a step is left out on a terminal, where the bar says it).
    /// </summary>
    public static T Runs<T>(Func<Action<string, StepReport>, Action<string>, T> work)
    {
        bool terminal = AnsiConsole.Profile.Capabilities.Interactive;
        void Log(string line)
        {
            if (!(terminal && StepLine().IsMatch(line))) AnsiConsole.WriteLine(line);
        }
        T? result = default;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var tasks = new Dictionary<string, ProgressTask>();
                result = work((name, r) =>
                {
                    if (!tasks.TryGetValue(name, out var task)) tasks[name] = task = ctx.AddTask(name, maxValue: Math.Max(1, r.TotalSteps));
                    task.Description = $"{Markup.Escape(name)} epoch {r.Epoch} step {r.Step + 1}/{r.TotalSteps} loss {r.Terms["loss"]:F1}";
                    task.MaxValue = Math.Max(1, r.TotalSteps);
                    task.Value = r.Step + 1;
                }, Log);
            });
        return result!;
    }

    [GeneratedRegex(@": step \d+/\d+ loss ")] private static partial Regex StepLine();
}
