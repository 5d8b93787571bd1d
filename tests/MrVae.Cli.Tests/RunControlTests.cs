using System.Diagnostics;
using System.Reflection;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace MrVae.Cli.Tests;

/// <summary>
/// Controlling a run from a second console, as a user does: `train --embedded` in one process; status, detach,
/// attach and stop from others; then `train --resume` finishes it from its checkpoint in grain storage.
/// </summary>
public sealed partial class RunControlTests : IDisposable
{
    readonly string temp = Path.Combine(Path.GetTempPath(), "mrvae-ctl-" + Guid.NewGuid().ToString("N"));
    readonly List<Process> processes = new();
    public RunControlTests() => Directory.CreateDirectory(temp);

    public void Dispose()
    {
        // A failed assertion must not leave a long run training in the background.
        foreach (var p in processes) { try { if (!p.HasExited) p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { } p.Dispose(); }
        Directory.Delete(temp, recursive: true);
    }

    Process Start(params string[] args)
    {
        var p = Process.Start(Cli(args))!;
        processes.Add(p);
        return p;
    }

    static readonly TimeSpan LineTimeout = TimeSpan.FromMinutes(3);

    static ProcessStartInfo Cli(params string[] args)
    {
        var dir = typeof(RunControlTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "CliOutput").Value!;
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(dir, "mrvae.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["COLUMNS"] = "400";
        psi.Environment["OMP_NUM_THREADS"] = "1";
        return psi;
    }

    static (int Exit, string Output) Run(params string[] args)
    {
        using var p = Process.Start(Cli(args))!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(120_000), $"mrvae {string.Join(' ', args)} did not finish in 2 minutes");
        return (p.ExitCode, (stdout.Result + stderr.Result).Trim());
    }

    [GeneratedRegex(@"run (\S+) \((started|resumed)\); from another terminal: mrvae status --run \S+( --cluster (\S+))?")]
    private static partial Regex Started();

    // Long enough never to finish while the test talks to it: the run ends by `stop`, twice.
    const long Steps = 1_000_000;

    [Fact]
    public async Task StatusDetachAttachStopFromAnotherConsoleThenResume()
    {
        string data = Path.Combine(temp, "data"), run = Path.Combine(temp, "run");
        Assert.Equal(0, Run("data", "make", "--dataset", "polymnist", "--out", data, "--train", "64", "--test", "16").Exit);
        string[] train = ["train", "--embedded", "--dataset", data, "--model", "mrvae", "--latent", "4", "--batch", "16", "--steps", Steps.ToString(), "--out", run];

        var trainer = Start([.. train, "--run-id", "ctl-test"]);
        var stderr = trainer.StandardError.ReadToEndAsync();
        var output = new List<string>();
        Match started = Match.Empty;   // the line with the run id
        while (!started.Success && await trainer.StandardOutput.ReadLineAsync().WaitAsync(LineTimeout) is { } line)
        {
            output.Add(line);
            started = Started().Match(line);
        }
        Assert.True(started.Success, $"train did not print its run id: {string.Join("\n", output)} {await stderr}");
        Assert.Equal("ctl-test", started.Groups[1].Value);
        var rest = trainer.StandardOutput.ReadToEndAsync();
        string[] cluster = started.Groups[4].Success ? ["--cluster", started.Groups[4].Value] : [];

        JsonElement Status()
        {
            var (exit, json) = Run(["status", "--run", "ctl-test", "--json", .. cluster]);
            string log = Path.Combine(run, "silo.log");
            Assert.True(exit == 0, $"{json} (trainer {(trainer.HasExited ? $"exited {trainer.ExitCode}: {stderr.Result}" : "running")}; silo.log: {(File.Exists(log) ? File.ReadAllText(log) : "none")})");
            return JsonDocument.Parse(json).RootElement;
        }
        JsonElement WaitFor(Func<JsonElement, bool> condition, string what)
        {
            var deadline = DateTime.UtcNow.AddMinutes(2);
            while (DateTime.UtcNow < deadline)
            {
                var s = Status();
                if (condition(s)) return s;
                Thread.Sleep(200);
            }
            throw new TimeoutException(what);
        }
        string Health(JsonElement s, int j) => s.GetProperty("modalities").EnumerateArray().Single(m => m.GetProperty("modality").GetInt32() == j).GetProperty("health").GetString()!;

        var first = WaitFor(s => s.GetProperty("step").GetInt64() >= 2, "step 2");
        Assert.Equal("Running", first.GetProperty("state").GetString());
        Assert.Equal(Steps, first.GetProperty("total_steps").GetInt64());

        // Bad requests: one clear line each, a non-zero exit, and the run goes on.
        var unknownModality = Run(["attach", "--run", "ctl-test", "--modality", "7", .. cluster]);
        Assert.NotEqual(0, unknownModality.Exit);
        Assert.Equal("error: unknown modality 7: the model has modalities 0..4", unknownModality.Output);
        var unknownRun = Run(["status", "--run", "no-such-run", .. cluster]);
        Assert.NotEqual(0, unknownRun.Exit);
        Assert.StartsWith("error: unknown run no-such-run", unknownRun.Output);

        Assert.Equal(0, Run(["detach", "--run", "ctl-test", "--modality", "1", .. cluster]).Exit);
        var detached = WaitFor(s => Health(s, 1) == "detached", "modality 1 detached");
        Assert.Equal("training", Health(detached, 0));
        Assert.Equal(0, Run(["attach", "--run", "ctl-test", "--modality", "1", .. cluster]).Exit);
        WaitFor(s => Health(s, 1) == "training", "modality 1 back");

        var (stopExit, stopJson) = Run(["stop", "--run", "ctl-test", "--wait", "--json", .. cluster]);
        Assert.True(stopExit == 0, stopJson);
        var stopped = JsonDocument.Parse(stopJson).RootElement;
        Assert.Equal("Stopped", stopped.GetProperty("state").GetString());
        long stoppedAt = stopped.GetProperty("step").GetInt64();
        Assert.True(stoppedAt < Steps, "the run ended before the stop: nothing left to resume");
        Assert.Equal(stoppedAt, stopped.GetProperty("checkpoint_step").GetInt64());
        Assert.True(trainer.WaitForExit(60_000), "train did not exit after the stop");
        Assert.True(trainer.ExitCode == 0, await stderr);
        Assert.Contains($"done: {stoppedAt} steps", await rest);

        // The embedded silo is gone with its process; its checkpoint stayed in the run directory.
        var resumer = Start([.. train, "--resume"]);
        var resumerErr = resumer.StandardError.ReadToEndAsync();
        started = Match.Empty;
        while (!started.Success && await resumer.StandardOutput.ReadLineAsync().WaitAsync(LineTimeout) is { } line) started = Started().Match(line);
        Assert.True(started.Success && started.Groups[2].Value == "resumed", $"resume did not start: {await resumerErr}");
        var resumerOut = resumer.StandardOutput.ReadToEndAsync();
        cluster = started.Groups[4].Success ? ["--cluster", started.Groups[4].Value] : [];
        var again = WaitFor(s => s.GetProperty("step").GetInt64() >= stoppedAt + 3, "steps after the resume");
        Assert.Equal(1, again.GetProperty("incarnation").GetInt64());
        var (secondExit, secondJson) = Run(["stop", "--run", "ctl-test", "--wait", "--json", .. cluster]);
        Assert.True(secondExit == 0, secondJson);
        long end = JsonDocument.Parse(secondJson).RootElement.GetProperty("step").GetInt64();
        Assert.True(resumer.WaitForExit(60_000), "the resumed train did not exit after the stop");
        Assert.True(resumer.ExitCode == 0, await resumerErr);
        Assert.Contains($"done: {end} steps", await resumerOut);
        var steps = File.ReadLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt64()).ToArray();
        Assert.Equal(Enumerable.Range(0, (int)end).Select(i => (long)i), steps);   // every step once, across both processes
    }
}
