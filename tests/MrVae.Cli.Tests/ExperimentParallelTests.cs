using System.Text.Json.Nodes;

namespace MrVae.Cli.Tests;

/// <summary>`experiment paper --parallel`: one worker process per dataset, joined into the same tables as a sequential run.</summary>
public sealed class ExperimentParallelTests : IDisposable
{
    readonly string temp = Path.Combine(Path.GetTempPath(), "mrvae-experiment-parallel-" + Guid.NewGuid().ToString("N"));
    public ExperimentParallelTests() => Directory.CreateDirectory(temp);
    public void Dispose() => Directory.Delete(temp, recursive: true);

    static (int Exit, string Stdout, string Stderr) Run(params string[] args)
    {
        var psi = CliProcess.StartInfo(args, columns: null);
        psi.Environment["OMP_NUM_THREADS"] = "1";
        return CliProcess.Run(psi, minutes: 10);
    }

    static JsonObject Numbers(JsonNode run)
    {
        var copy = run.DeepClone().AsObject();
        foreach (var time in new[] { "train_seconds", "median_step_ms", "eval_seconds" }) copy.Remove(time);
        return copy;
    }

    [Fact, Trait("Category", "Slow")]   // two ci-budget trainings and evaluations side by side, then one alone: about 2 minutes
    public void TwoWorkersGiveTheSequentialRunsNumbersAndOneTable()
    {
        string parallel = Path.Combine(temp, "parallel"), alone = Path.Combine(temp, "alone");
        var both = Run("experiment", "paper", "--budget", "ci", "--models", "mvae", "--datasets", "polymnist,polymnist-extended", "--parallel", "2", "--out", parallel);
        Assert.True(both.Exit == 0, both.Stdout + both.Stderr);
        Assert.Contains("[polymnist] started", both.Stdout);
        Assert.Contains("[polymnist-extended] polymnist-extended-mvae: training 62 steps", both.Stdout);
        var results = JsonNode.Parse(File.ReadAllText(Path.Combine(parallel, "results.json")))!;
        Assert.Equal(["polymnist-mvae", "polymnist-extended-mvae"], results["runs"]!.AsObject().Select(r => r.Key));
        string tables = File.ReadAllText(Path.Combine(parallel, "tables.md"));
        Assert.Contains("## PolyMNIST vanilla: coherence (Table 1a)", tables);
        Assert.Contains("## PolyMNIST extended: coherence (Table 1b)", tables);

        var one = Run("experiment", "paper", "--budget", "ci", "--models", "mvae", "--datasets", "polymnist", "--parallel", "1", "--out", alone);
        Assert.True(one.Exit == 0, one.Stdout + one.Stderr);
        var sequential = JsonNode.Parse(File.ReadAllText(Path.Combine(alone, "results.json")))!;
        Assert.Equal(Numbers(sequential["runs"]!["polymnist-mvae"]!).ToJsonString(), Numbers(results["runs"]!["polymnist-mvae"]!).ToJsonString());
    }

    [Fact]
    public void AnOutOfRangeSettingIsRefusedBeforeAnyDataAreMade()
    {
        string output = Path.Combine(temp, "bad-setting");
        var run = Run("experiment", "paper", "--budget", "ci", "--models", "mrvae", "--datasets", "polymnist", "--set", "MembershipPrior=1.5", "--out", output);
        Assert.NotEqual(0, run.Exit);
        Assert.Contains("model setting MembershipPrior=1.5", run.Stderr);
        Assert.False(Directory.Exists(Path.Combine(output, "data")));
    }

    [Fact]
    public void AFailedWorkerIsNamedWithItsLogAndTheCommandFails()
    {
        string output = Path.Combine(temp, "failing");
        var run = Run("experiment", "paper", "--budget", "ci", "--models", "mvae", "--datasets", "polymnist,polymnist-extended", "--parallel", "2",
            "--mnist", Path.Combine(temp, "no-mnist-here"), "--out", output);
        Assert.NotEqual(0, run.Exit);
        Assert.Matches(@"error: the experiment's worker for polymnist(-extended)? \(exit code [1-9]\d*; log: .*logs/polymnist(-extended)?\.log\)", run.Stderr);
        Assert.False(File.Exists(Path.Combine(output, "results.json")));
    }
}
