using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using MrVae.Client;
using MrVae.Data;
using MrVae.Grains;
using MrVae.Model;
using MrVae.Model.Training;

namespace MrVae.Bench;

public sealed record ChaosOptions
{
    public required string DataDirectory { get; init; }
    public required string WorkDirectory { get; init; }
    public string? SiloDll { get; init; }
    public string[] Groups { get; init; } = ["0,1", "2,3", "4"];
    public long Steps { get; init; } = 3000;
    /// <summary>Kill a random silo every this many steps (counted from the cluster's recovery from the last kill).</summary>
    public long Every { get; init; } = 100;
    /// <summary>Seconds a killed silo stays down before it is started again.</summary>
    public double DownSeconds { get; init; } = 5;
    /// <summary>No kill in the run's last this many steps (null: a fifth of them), so every member is back and
    /// trains with the others before the final test loss is compared with the undisturbed run's.</summary>
    public long? QuietTail { get; init; }
    public int BatchSize { get; init; } = 32;
    public int LatentDim { get; init; } = 16;
    public long Seed { get; init; }
    public double LearningRate { get; init; } = 1e-3;
    public long EvaluateEvery { get; init; } = 250;
}

/// <summary>One SIGKILL of the soak: when, which silo, and whether it held the coordinator.</summary>
public sealed record ChaosKill(int Index, long Step, int Silo, bool Coordinator, double DownSeconds, double RecoverySeconds);

public sealed record ChaosReport(
    long Steps, long StepLines, long StepsRerunAfterDrops, long StepsRedoneAfterFailovers, int Kills, int CoordinatorKills,
    int Failovers, int RollbacksWhileCoordinatorLived, int UnhandledExceptions, int ExceptionLines, int Minidumps,
    double? FinalTestLoss, double UndisturbedTestLoss, double WallSeconds, ChaosKill[] KillLog, string RunDirectory)
{
    public double? RelativeDifference => FinalTestLoss is { } f ? Math.Abs(f - UndisturbedTestLoss) / Math.Abs(UndisturbedTestLoss) : null;
    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower });
}

/// <summary>
/// The chaos soak: a loopback cluster through a private Redis, one run of N steps, a random silo killed (SIGKILL)
/// every K steps and started again; then the run's record read back: steps trained, steps rerun, rollbacks while the
/// coordinator's silo lived, exceptions in the silo logs, and the final test loss against an undisturbed run of the
/// same seed (the single-process trainer, which the grains reproduce step for step).
/// </summary>
public static partial class Chaos
{
    public static async Task<ChaosReport> Run(ChaosOptions o, Action<string> log, CancellationToken cancel = default)
    {
        var wall = Stopwatch.StartNew();
        if (o.Steps < 1 || o.Every < 1) throw new UserInputException("--steps and --every must be at least 1");
        long quietTail = o.QuietTail ?? o.Steps / 5;
        if (quietTail < 0 || quietTail >= o.Steps) throw new UserInputException($"--quiet-tail {quietTail} must be at least 0 and below --steps {o.Steps}");
        string work = Path.GetFullPath(o.WorkDirectory);
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        Directory.CreateDirectory(work);
        string dumps = Path.Combine(work, "dumps");
        Directory.CreateDirectory(dumps);
        var spec = DatasetDirectory.LoadSpec(o.DataDirectory);
        var defaults = TrainingDefaults.For(spec.Kind);
        var config = new ModelConfig
        {
            Modalities = spec.Modalities, LatentDim = o.LatentDim, Beta = defaults.Beta, Likelihood = defaults.Likelihood,
            LikelihoodScale = defaults.Likelihood == PixelLikelihood.Gaussian ? 0.1 : 0.75, ObservedDim = spec.Vectors?.ObservedDim ?? 0,
        };
        config = defaults.ForMrVae(config);
        var options = new TrainOptions
        {
            RunDirectory = Path.Combine(work, "run"), BatchSize = o.BatchSize, Steps = o.Steps, Seed = o.Seed, LearningRate = o.LearningRate, EvaluateEvery = o.EvaluateEvery,
        };

        using var redis = StartRedis(work);
        await using var silos = await LoopbackSilos.Start(LoopbackSilos.SiloDll(o.SiloDll), o.Groups, work, TimeSpan.FromMinutes(3), redis.Port,
            new Dictionary<string, string> { ["DOTNET_DbgEnableMiniDump"] = "1", ["DOTNET_DbgMiniDumpType"] = "1", ["DOTNET_DbgMiniDumpName"] = Path.Combine(dumps, "silo-%p.dmp") });
        log($"{o.Groups.Length} silos up ({string.Join(" / ", o.Groups)}), Redis on {redis.Port}; {o.Steps} steps, a kill every {o.Every} steps until step {o.Steps - quietTail}");

        string? runId = null;
        var training = Task.Run(() => ClusterTraining.Train(silos.Grains, config, options, Path.GetFullPath(o.DataDirectory), Enumerable.Range(0, spec.Modalities).ToArray(),
            cancel: cancel, onStarted: id => runId = id, onWaiting: w => { if (w is not null) log($"  client waits: {w}"); }), CancellationToken.None);
        while (runId is null && !training.IsCompleted) await Task.Delay(100, CancellationToken.None);
        if (runId is null) await training;   // failed to start: its exception
        var run = silos.Grains.GetGrain<ICoordinatorGrain>(runId!);
        var random = new Random((int)o.Seed + 1);
        var kills = new List<ChaosKill>();
        int rollbacks = 0;
        long nextKill = o.Every;
        while (!training.IsCompleted)
        {
            var status = await TryStatus(run);
            if (status is null || status.Step < nextKill || status.Step >= o.Steps - quietTail || status.State != RunState.Running) { await Task.Delay(100, CancellationToken.None); continue; }
            int victim = random.Next(o.Groups.Length);
            bool coordinator = status.CoordinatorSilo.Contains($":{silos.SiloPort(victim)}:") || status.CoordinatorSilo.Contains($":{silos.SiloPort(victim)}@");
            var loop = status.LoopId;   // a new one at every resume, also a second one from the same checkpoint
            // The victim's members by their silo (address and generation): recovered when none of them is there any more.
            var victimModalities = o.Groups[victim].Split(',').Select(int.Parse).ToHashSet();
            var killedSilos = status.MemberSilos.Where(kv => victimModalities.Contains(kv.Key)).Select(kv => kv.Value).ToHashSet();
            var clock = Stopwatch.StartNew();
            await silos.Kill(victim);
            log($"kill {kills.Count + 1}: silo {victim} ({o.Groups[victim]}{(coordinator ? ", the coordinator's" : "")}) at step {status.Step}");
            await Task.Delay(TimeSpan.FromSeconds(o.DownSeconds), CancellationToken.None);
            double down = clock.Elapsed.TotalSeconds;
            await silos.Restart(victim, TimeSpan.FromMinutes(2));
            // Recovered: every modality a member again (or the run over).
            RunStatus? now = null;
            var deadline = DateTime.UtcNow.AddMinutes(5);
            while (!training.IsCompleted && DateTime.UtcNow < deadline)
            {
                now = await TryStatus(run);
                // All members again, none on the dead silo (before the coordinator notices the death it still lists them).
                if (now is { State: RunState.Running } && now.Members.Length == spec.Modalities && !now.MemberSilos.Values.Any(killedSilos.Contains)
                    && (now.LoopId != loop || !coordinator)) break;
                await Task.Delay(250, CancellationToken.None);
            }
            now ??= await TryStatus(run);
            bool resumed = now is not null && now.LoopId != loop;
            if (!coordinator && resumed) rollbacks++;
            kills.Add(new ChaosKill(kills.Count + 1, status.Step, victim, coordinator, down, clock.Elapsed.TotalSeconds));
            log($"  recovered after {clock.Elapsed.TotalSeconds:F0} s at step {now?.Step}{(resumed ? $" (coordinator resumed from step {now!.StartStep})" : "")}");
            nextKill = (now?.Step ?? status.Step) + o.Every;
        }
        var result = await training;
        var final = await run.TestMetrics();
        double? finalTest = final.Length > 0 && final[^1].Step == o.Steps ? final[^1].TestLoss : null;

        log("undisturbed run of the same seed (single process) ...");
        var data = MultimodalDataset.Load(o.DataDirectory, "train", spec.Modalities);
        var test = MultimodalDataset.Load(o.DataDirectory, "test", spec.Modalities);
        double undisturbed;
        using (var local = new LocalTrainer(config, options with { RunDirectory = Path.Combine(work, "undisturbed"), EvaluateEvery = o.Steps }, data, test))
        {
            local.Run();
            undisturbed = local.TestLoss();
        }

        // The run's record: step lines (a step twice: redone after a coordinator's failover) and event lines.
        var lines = File.ReadAllLines(Path.Combine(options.RunDirectory, LocalTrainer.MetricsFile)).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        var stepLines = lines.Where(l => !l.TryGetProperty("event", out _)).Select(l => l.GetProperty("step").GetInt64()).ToList();
        var events = lines.Where(l => l.TryGetProperty("event", out _)).ToList();
        // A drop in a step's encode or decode reruns that step (once, however many members it dropped).
        long rerun = events.Where(e => e.GetProperty("event").GetString() == "dropped" && StepPhase().IsMatch(e.GetProperty("cause").GetString() ?? ""))
            .Select(e => e.GetProperty("step").GetInt64()).Distinct().Count();
        int failovers = events.Count(e => e.GetProperty("event").GetString() == "failover");
        int unhandled = 0, exceptionLines = 0;
        for (int i = 0; i < o.Groups.Length; i++)
            foreach (var line in File.ReadLines(silos.LogPath(i)))
            {
                if (line.Contains("Unhandled exception", StringComparison.OrdinalIgnoreCase) || line.Contains("AccessViolation") || line.Contains("Fatal error")) unhandled++;
                if (line.Contains("Exception")) exceptionLines++;
            }
        return new ChaosReport(result.Result.Steps, stepLines.Count, rerun, stepLines.Count - stepLines.Distinct().Count(), kills.Count, kills.Count(k => k.Coordinator),
            failovers, rollbacks, unhandled, exceptionLines, Directory.GetFiles(dumps).Length, finalTest, undisturbed, wall.Elapsed.TotalSeconds, kills.ToArray(), options.RunDirectory);
    }

    [GeneratedRegex("^(encode|decode) failed")] private static partial Regex StepPhase();

    static async Task<RunStatus?> TryStatus(ICoordinatorGrain run)
    {
        try { return await run.Status().WaitAsync(TimeSpan.FromSeconds(10)); }
        catch (Exception e) when (e is OrleansException or TimeoutException) { return null; }
    }

    sealed class RedisProcess(Process process, int port) : IDisposable
    {
        public int Port => port;
        public void Dispose()
        {
            try { if (!process.HasExited) { process.Kill(); process.WaitForExit(10_000); } } catch (InvalidOperationException) { }
            process.Dispose();
        }
    }

    static RedisProcess StartRedis(string work)
    {
        string server = new[] { "/usr/bin/redis-server", "/usr/local/bin/redis-server" }.FirstOrDefault(File.Exists)
            ?? throw new UserInputException("the chaos soak needs redis-server (apt-get install redis-server): the cluster's membership, directory and checkpoints live there so that any silo may die");
        using var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        l.Start();
        int port = ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        var psi = new ProcessStartInfo(server) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "--port", port.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", work }) psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, _) => { }; p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine(); p.BeginErrorReadLine();
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (true)
        {
            try { using var c = new System.Net.Sockets.TcpClient(); c.Connect(System.Net.IPAddress.Loopback, port); break; }
            catch (System.Net.Sockets.SocketException) when (DateTime.UtcNow < deadline) { Thread.Sleep(100); }
        }
        return new RedisProcess(p, port);
    }
}
