using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace MrVae.Cli.Tests;

/// <summary>
/// Controlling a run from a second console, as a user does: `train --embedded` in one process; status, detach,
/// attach and stop from others; then `train --resume` finishes it from its checkpoint in grain storage.
/// </summary>
[Trait("Category", "Integration")]   // embedded silos in mrvae processes, reached from other mrvae processes
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

    // What the test was doing, for the failure message and, if the test host is killed, in this file.
    readonly List<string> trail = new();
    static readonly string TrailFile = Path.Combine(Path.GetTempPath(), "mrvae-run-control-trail.txt");
    void Phase(string what)
    {
        trail.Add($"{DateTime.UtcNow:HH:mm:ss} {what}");
        File.WriteAllLines(TrailFile, trail);
    }

    /// <summary>A long-running mrvae process whose output lines are collected as they come (no async reads to hang on).</summary>
    sealed class Watched
    {
        public required Process Process { get; init; }
        public BlockingCollection<string> Lines { get; } = new();
        public StringBuilder Stderr { get; } = new();

        /// <summary>The next stdout line, or null at end of output; throws after <paramref name="timeout"/>.</summary>
        public string? Next(TimeSpan timeout)
        {
            if (Lines.TryTake(out var line, timeout)) return line;
            if (Lines.IsCompleted) return null;
            throw new TimeoutException($"no output line in {timeout.TotalMinutes} minutes (stderr: {Stderr})");
        }

        /// <summary>Everything left on stdout, after the process exited.</summary>
        public string Rest() => string.Join("\n", Lines.GetConsumingEnumerable());
    }

    Watched Start(params string[] args)
    {
        Phase("start mrvae " + string.Join(' ', args));
        var p = new Process { StartInfo = Cli(args) };
        // A gateway port of its own, not the default 30000 that embedded silos in other test processes may hold: the
        // run then prints its --cluster, and every status call reaches this run's silo. (A CI run once had `status`
        // answer "unknown run" right after the resume, as from another cluster.)
        p.StartInfo.Environment["MrVae__Endpoints__GatewayPort"] = FreePort().ToString();
        var w = new Watched { Process = p };
        p.OutputDataReceived += (_, e) => { if (e.Data is null) w.Lines.CompleteAdding(); else w.Lines.Add(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (w.Stderr) w.Stderr.AppendLine(e.Data); };
        p.Start();
        processes.Add(p);
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return w;
    }

    static readonly TimeSpan LineTimeout = TimeSpan.FromMinutes(3);

    static int FreePort()
    {
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    static ProcessStartInfo Cli(params string[] args)
    {
        var psi = CliProcess.StartInfo(args, columns: 400);
        psi.Environment["OMP_NUM_THREADS"] = "1";
        return psi;
    }

    (int Exit, string Output) Run(params string[] args)
    {
        Phase("mrvae " + string.Join(' ', args));
        var (exit, stdout, stderr) = CliProcess.Run(Cli(args));
        return (exit, (stdout + stderr).Trim());
    }

    [GeneratedRegex(@"run (\S+) \((started|resumed)\); from another terminal: mrvae status --run \S+( --cluster (\S+))?")]
    private static partial Regex Started();

    // Long enough never to finish while the test talks to it: the run ends by `stop`, twice.
    const long Steps = 1_000_000;

    [Fact]
    public void StatusDetachAttachStopFromAnotherConsoleThenResume()
    {
        string data = Path.Combine(temp, "data"), run = Path.Combine(temp, "run");
        Assert.Equal(0, Run("data", "make", "--dataset", "polymnist", "--out", data, "--train", "64", "--test", "16").Exit);
        string[] train = ["train", "--embedded", "--dataset", data, "--model", "mrvae", "--latent", "4", "--batch", "16", "--steps", Steps.ToString(), "--out", run];

        var watched = Start([.. train, "--run-id", "ctl-test"]);
        var trainer = watched.Process;
        var output = new List<string>();
        Match started = Match.Empty;   // the line with the run id
        while (!started.Success && watched.Next(LineTimeout) is { } line)
        {
            output.Add(line);
            started = Started().Match(line);
        }
        Assert.True(started.Success, $"train did not print its run id: {string.Join("\n", output)} {watched.Stderr}");
        Assert.Equal("ctl-test", started.Groups[1].Value);
        string[] cluster = started.Groups[4].Success ? ["--cluster", started.Groups[4].Value] : [];

        JsonElement Status()
        {
            var (exit, json) = Run(["status", "--run", "ctl-test", "--json", .. cluster]);
            string log = Path.Combine(run, "silo.log");
            Assert.True(exit == 0, $"{json} (trainer {(trainer.HasExited ? $"exited {trainer.ExitCode}: {watched.Stderr}" : "running")}; silo.log: {(File.Exists(log) ? File.ReadAllText(log) : "none")})");
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
            throw new TimeoutException($"{what}; the test did: {string.Join(" | ", trail.TakeLast(5))}");
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
        trainer.WaitForExit();   // and its output is all read
        Assert.True(trainer.ExitCode == 0, watched.Stderr.ToString());
        Assert.Contains($"done: {stoppedAt} steps", watched.Rest());

        // The embedded silo is gone with its process; its checkpoint stayed in the run directory.
        var resumer = Start([.. train, "--resume"]);
        started = Match.Empty;
        while (!started.Success && resumer.Next(LineTimeout) is { } line) started = Started().Match(line);
        Assert.True(started.Success && started.Groups[2].Value == "resumed", $"resume did not start: {resumer.Stderr}");
        cluster = started.Groups[4].Success ? ["--cluster", started.Groups[4].Value] : [];
        var again = WaitFor(s => s.GetProperty("step").GetInt64() >= stoppedAt + 3, "steps after the resume");
        Assert.Equal(1, again.GetProperty("incarnation").GetInt64());

        // This time as a service manager ends it (kill, kubectl delete): SIGTERM stops the run with a final checkpoint.
        Phase("SIGTERM to the resumed trainer");
        using (var kill = Process.Start("kill", ["-TERM", resumer.Process.Id.ToString()])) kill.WaitForExit();
        Assert.True(resumer.Process.WaitForExit(120_000), "the resumed train did not exit after SIGTERM");
        resumer.Process.WaitForExit();
        Assert.True(resumer.Process.ExitCode == 0, resumer.Stderr.ToString());
        var done = Regex.Match(resumer.Rest(), @"done: (\d+) steps");
        Assert.True(done.Success, $"no summary after SIGTERM: {resumer.Stderr}");
        long end = long.Parse(done.Groups[1].Value);
        Assert.True(end >= stoppedAt + 3, $"ended at {end}");
        var lines = File.ReadLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        var steps = lines.Where(l => !l.TryGetProperty("event", out _)).Select(l => l.GetProperty("step").GetInt64()).ToArray();
        Assert.Equal(Enumerable.Range(0, (int)end).Select(i => (long)i), steps);   // every step once, across both processes
        // The resume is an event line in the same append-only file, at the step it resumed from.
        Assert.Contains(lines, l => l.TryGetProperty("event", out var e) && e.GetString() == "resumed" && l.GetProperty("step").GetInt64() == stoppedAt);
    }
}
