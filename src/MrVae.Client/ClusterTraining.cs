using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using MrVae.Grains;
using MrVae.Model;
using MrVae.Model.Runtime;
using MrVae.Model.Training;
using MrVae.Silo;
using Orleans.Configuration;
using TorchSharp;
using MrVae.Data;

namespace MrVae.Client;

/// <summary>How a client following a run waits for its coordinator, on <see cref="Clock"/>.</summary>
public sealed record ClientWaits
{
    /// <summary>How long one poll of the coordinator may take before the client says it waits and asks again.</summary>
    public TimeSpan PollTimeout { get; init; } = TimeSpan.FromSeconds(15);
    /// <summary>How long a client keeps asking an unreachable coordinator before it gives up (the run itself goes on).</summary>
    public TimeSpan UnreachableLimit { get; init; } = TimeSpan.FromMinutes(3);
    public TimeProvider Clock { get; init; } = TimeProvider.System;
}

/// <summary>A run ended as Failed on the cluster (diverged, or every member lost): an outcome the message names, not a bug of the client.</summary>
public sealed class RunFailedException(string message) : Exception(message);

/// <summary>A finished distributed run: the trainer's result, the run id and which silo hosted each modality.</summary>
public sealed record DistributedRun(TrainResult Result, string RunId, IReadOnlyDictionary<int, string> MemberSilos);

/// <summary>
/// Training through grains: an in-process silo (--embedded) or a running cluster (--cluster). The client starts the
/// run on its coordinator grain and writes the same files as the local trainer from the metrics it polls.
/// </summary>
public static class ClusterTraining
{
    /// <summary>The gateway port an embedded silo takes when it is free, so `mrvae status` etc. reach it by default.</summary>
    public const int DefaultGatewayPort = 30000;

    /// <summary>
    /// Starts a one-silo cluster in this process (localhost clustering; gateway on <see cref="DefaultGatewayPort"/>
    /// when free) that serves every modality and keeps checkpoints as files under <paramref name="stateDirectory"/>;
    /// its warnings and errors go to <paramref name="logFile"/> when given.
    /// </summary>
    public static async Task<IHost> StartEmbeddedSilo(string stateDirectory, string? logFile = null)
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MrVae:Endpoints:SiloPort"] = FreePort().ToString(),
            ["MrVae:Endpoints:GatewayPort"] = (IsFree(DefaultGatewayPort) ? DefaultGatewayPort : FreePort()).ToString(),
            ["MrVae:Cluster:ClusterId"] = "mrvae",   // the default a client (mrvae status …) connects with
            ["MrVae:Checkpoints:Directory"] = Path.GetFullPath(stateDirectory),
        }).Build();
        // MrVae__Silo__* environment variables tune the embedded silo like any other (device, threads).
        config = new ConfigurationBuilder().AddConfiguration(config).AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MrVae:Endpoints:PrimarySiloPort"] = config["MrVae:Endpoints:SiloPort"],
        }).AddEnvironmentVariables().Build();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        if (logFile is not null)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(logFile))!);
            builder.Logging.AddProvider(new FileLogProvider(logFile));
            // Every `mrvae status` from another console ends by resetting its connection, which Orleans reports as
            // a warning with a stack trace: hundreds of lines an hour that bury the run's own story.
            builder.Logging.AddFilter<FileLogProvider>("Orleans.Runtime.Messaging", LogLevel.Error);
        }
        builder.UseOrleans(silo => silo.ConfigureMrVae(config));
        builder.Services.AddMrVaeTelemetry(builder.Configuration, "mrvae-embedded");
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    /// <summary>The "--cluster" connection that reaches an embedded silo from another process.</summary>
    public static string EmbeddedConnection(IHost silo)
    {
        var endpoints = silo.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<EndpointOptions>>().Value;
        return $"localhost:{endpoints.GatewayPort}";
    }

    /// <summary>
    /// Connects a client to a running cluster: "redis://HOST:PORT" (Redis clustering) or "HOST:GATEWAYPORT"
    /// (localhost clustering, the gateway of a local silo). With <paramref name="tlsDirectory"/> (an operator's
    /// `mrvae certs issue` directory) over mutual TLS; Redis authentication comes from the environment (<see cref="RedisAuth"/>).
    /// </summary>
    public static async Task<IHost> ConnectClient(string connection, string clusterId = "mrvae", string serviceId = "mrvae", string? tlsDirectory = null,
        RedisAuth? redisAuth = null)
    {
        redisAuth ??= RedisAuth.From(new ConfigurationBuilder().AddEnvironmentVariables().Build());
        string? refusal = null;
        // Connecting gives up after 30 s, or at once when this client refuses a gateway's certificate (retrying cannot help).
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddMrVaeTelemetry(builder.Configuration, "mrvae-client");
        builder.UseOrleansClient(client =>
        {
            client.AddActivityPropagation();
            if (tlsDirectory is not null) client.UseMrVaeTls(tlsDirectory, reason =>
            {
                refusal = reason;
                try { timeout.Cancel(); } catch (ObjectDisposedException) { }   // a gateway refused after connecting: nothing to cut short
            });
            if (connection.StartsWith("redis://", StringComparison.OrdinalIgnoreCase))
            {
                client.UseRedisClustering(o => o.ConfigurationOptions = RedisConnection.Options(connection["redis://".Length..], redisAuth));
                client.Configure<ClusterOptions>(o => { o.ClusterId = clusterId; o.ServiceId = serviceId; });
            }
            else
            {
                var parts = connection.Split(':');
                if (parts.Length != 2 || !int.TryParse(parts[1], out int port))
                    throw new UserInputException($"--cluster '{connection}': use redis://HOST:PORT or HOST:GATEWAYPORT (e.g. localhost:30000)");
                client.UseLocalhostClustering(port, serviceId, clusterId);
            }
            // A coordinator busy checkpointing on a loaded machine can take longer than Orleans' default 30 s to
            // answer a status call; waiting is right, failing the command is not (an unreachable cluster is detected
            // at connect, not here).
            client.Configure<ClientMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromMinutes(2));
        });
        var host = builder.Build();
        try { await host.StartAsync(timeout.Token); }
        catch (Exception e) when (e is OperationCanceledException or OrleansException or SocketException or TimeoutException)
        {
            string hint = refusal is not null ? $"this client refused the gateway: {refusal}; is --tls {tlsDirectory} from this cluster's CA?"
                : tlsDirectory is null
                ? "start silos first (deploy/local-cluster.sh or mrvae-silo) or check --cluster; a cluster with TLS needs --tls DIR (an operator certificate)"
                : $"start silos first or check --cluster; a TLS cluster lets in only an operator certificate from its own CA (is {tlsDirectory} one?)";
            throw new UserInputException($"cannot reach the cluster at {connection} ({e.Message.ReplaceLineEndings(" ")}): {hint}");
        }
        return host;
    }

    /// <summary>
    /// Runs a training through the coordinator grain and writes metrics.jsonl, test.jsonl and config.json into the run
    /// directory. With <see cref="TrainOptions.Resume"/> it continues the run named in the directory's config.json
    /// from its last checkpoint in grain storage. <paramref name="onStarted"/> gets the run id once the run is going.
    /// Cancelling asks the run to stop (it checkpoints) and waits for that. metrics.jsonl is append-only: a
    /// continuation from a checkpoint adds a "resumed" event line and the steps from there on, after those already
    /// written; every event of the run (see <see cref="RunEvent"/>) goes to events.jsonl, and all but the first
    /// members' "started" to metrics.jsonl among the steps. <paramref name="onWaiting"/> hears what the client waits
    /// for while the run makes no progress (a failover), and null once steps come again.
    /// </summary>
    public static async Task<DistributedRun> Train(IGrainFactory grains, ModelConfig config, TrainOptions options, string siloDataDirectory,
        int[] modalities, Action<StepReport>? onStep = null, CancellationToken cancel = default, string? runId = null, Action<string>? onStarted = null,
        Action<string?>? onWaiting = null, ClientWaits? waits = null)
    {
        waits ??= new ClientWaits();
        var clock = waits.Clock;
        Directory.CreateDirectory(options.RunDirectory);
        string configPath = Path.Combine(options.RunDirectory, LocalTrainer.ConfigFile);
        string metricsPath = Path.Combine(options.RunDirectory, LocalTrainer.MetricsFile);
        string eventsPath = Path.Combine(options.RunDirectory, LocalTrainer.EventsFile);
        ICoordinatorGrain coordinator;
        RunStatus status;
        if (options.Resume)
        {
            runId ??= RunIdOf(options.RunDirectory);
            coordinator = grains.GetGrain<ICoordinatorGrain>(runId);
            status = await coordinator.Resume();
        }
        else
        {
            runId ??= NewRunId(options.RunDirectory);
            File.WriteAllText(configPath, JsonSerializer.Serialize(
                new { run_id = runId, model = config, train = options, data_on_silos = siloDataDirectory, modalities }, CheckpointDirectory.Json));
            File.Delete(metricsPath);
            File.Delete(eventsPath);
            coordinator = grains.GetGrain<ICoordinatorGrain>(runId);
            status = await coordinator.Start(new RunSetup(siloDataDirectory, config.ToJson(), options.Seed, options.BatchSize, options.Steps,
                options.Epochs, options.LearningRate, options.EvaluateEvery, options.TestSamples, modalities, SkipNonFinite: options.OnNonFinite == NonFiniteAction.Skip));
        }
        onStarted?.Invoke(runId);

        // A resumed client continues after the last step metrics.jsonl holds; the steps it lacks before the
        // checkpoint come from the coordinator, which keeps them in its record.
        long incarnation = -1, next = options.Resume ? StepsRecorded(metricsPath) : 0;
        Guid loop = Guid.Empty;
        var stepTimes = new SortedDictionary<long, double>();
        double last = double.NaN;
        bool stopping = false;
        DateTimeOffset? unreachableSince = null;
        var written = WrittenEvents(eventsPath);
        var lastProgress = clock.GetUtcNow();
        string? waiting = null;
        void Waiting(string? what)
        {
            if (what == waiting) return;
            waiting = what;
            onWaiting?.Invoke(what);
        }
        void WriteStep(StepMetrics m)
        {
            var report = new StepReport(m.Step, m.Epoch, status.TotalSteps, m.Terms, m.StepMilliseconds);
            var line = LocalTrainer.MetricsLine(report);
            line["bytes"] = m.BytesMoved;
            foreach (var (phase, ms) in m.PhaseMilliseconds) line[phase] = Math.Round(ms, 3);
            line["members"] = m.Members;
            File.AppendAllText(metricsPath, JsonSerializer.Serialize(line) + "\n");
            onStep?.Invoke(report);
            stepTimes[m.Step] = m.StepMilliseconds;
            last = m.Terms["loss"];
            next = m.Step + 1;
            lastProgress = clock.GetUtcNow();
        }
        bool SameLoop(RunStatus s) => s.Incarnation == incarnation && s.LoopId == loop;
        while (true)
        {
            try
            {
                // Bounded: a call to a coordinator whose silo just died waits for the client's response timeout
                // (minutes); a fresh call reaches its next activation once the cluster has declared the silo dead.
                status = await coordinator.Status().WaitAsync(waits.PollTimeout, clock, CancellationToken.None);
                if (status is { State: RunState.Running, LoopId: var id } && id == Guid.Empty)
                {
                    // A new activation restoring the run from its checkpoint: its steps and start are not known yet.
                    Waiting(WaitingFor(status));
                    await Task.Delay(TimeSpan.FromMilliseconds(500), clock, CancellationToken.None);
                    continue;
                }
                if (!SameLoop(status))
                {
                    // The run continued from a checkpoint (a resume, or its coordinator's silo died). First the steps
                    // before the checkpoint that this client had not fetched from the previous loop; then the steps
                    // from the checkpoint on, trained again, after the "resumed" event line.
                    if (next < status.StartStep)
                        foreach (var m in await coordinator.Metrics(next).WaitAsync(waits.PollTimeout, clock, CancellationToken.None))
                            if (m.Step >= next && m.Step < status.StartStep) WriteStep(m);
                    incarnation = status.Incarnation;
                    loop = status.LoopId;
                    next = status.StartStep;
                    foreach (var k in stepTimes.Keys.Where(k => k >= next).ToArray()) stepTimes.Remove(k);
                }
                var batch = await coordinator.Metrics(next).WaitAsync(waits.PollTimeout, clock, CancellationToken.None);
                // Events first: a drop or a resume precedes the steps it concerns.
                foreach (var e in status.Events)
                {
                    if (!written.Add(EventKey(e.Step, e.Kind, e.Modality, e.Utc))) continue;
                    var line = new RunEventLine(e.Step, e.Kind, e.Message, e.Modality >= 0 ? e.Modality : null, e.Utc).ToJson();
                    File.AppendAllText(eventsPath, JsonSerializer.Serialize(line) + "\n");
                    if (e.Kind != "started") File.AppendAllText(metricsPath, JsonSerializer.Serialize(line) + "\n");
                }
                // The metrics of one loop only: if another began meanwhile, the next poll starts from its first step.
                if (!SameLoop(await coordinator.Status().WaitAsync(waits.PollTimeout, clock, CancellationToken.None))) continue;
                foreach (var m in batch)
                    if (m.Step >= next) WriteStep(m);   // steps skipped as non-finite leave gaps
                unreachableSince = null;
                if (batch.Length > 0 || status.State != RunState.Running) Waiting(null);
                else if (clock.GetUtcNow() - lastProgress > TimeSpan.FromSeconds(3)) Waiting(WaitingFor(status));
            }
            catch (Exception e) when (e is OrleansException or TimeoutException or SiloUnavailableException)
            {
                // The coordinator's silo is gone: the next call activates it on another silo, which resumes the run.
                unreachableSince ??= clock.GetUtcNow();
                Waiting($"no answer from the coordinator since {unreachableSince.Value.ToLocalTime():HH:mm:ss}: if its silo died, waiting for the cluster to declare it dead and the run to resume on another silo from its last checkpoint");
                if (clock.GetUtcNow() - unreachableSince > waits.UnreachableLimit)
                    throw new TimeoutException($"run {runId}: no answer from its coordinator for {waits.UnreachableLimit.TotalMinutes:F0} minutes ({e.Message.ReplaceLineEndings(" ")}); the cluster may be down. When it is back: mrvae train --resume --out {options.RunDirectory}");
                await Task.Delay(TimeSpan.FromMilliseconds(500), clock, CancellationToken.None);
                continue;
            }
            if (status.State is RunState.Failed) throw new RunFailedException($"run {runId} failed: {status.Error}");
            if (status.State is RunState.Finished or RunState.Stopped && next >= status.Step) break;
            // Once stopping, the token stays cancelled: wait plainly for the run to reach Stopped.
            try { await Task.Delay(TimeSpan.FromMilliseconds(200), clock, stopping ? CancellationToken.None : cancel); }
            catch (OperationCanceledException)
            {
                // Ctrl+C: stop the run cleanly (it writes a final checkpoint) rather than abandon it.
                stopping = true;
                try { await coordinator.Stop(); } catch (UserInputException) { /* not running any more */ }
            }
        }
        var tests = await coordinator.TestMetrics();
        File.WriteAllLines(Path.Combine(options.RunDirectory, LocalTrainer.TestMetricsFile),
            tests.Select(t => JsonSerializer.Serialize(new Dictionary<string, object> { ["step"] = t.Step, ["test_loss"] = t.TestLoss })));
        var times = stepTimes.Values.OrderBy(t => t).ToList();
        var best = tests.OrderBy(t => t.TestLoss).FirstOrDefault();
        var result = new TrainResult(options.RunDirectory, status.Step, last, best?.TestLoss, best?.Step, times.Count == 0 ? 0 : times[times.Count / 2]);
        return new DistributedRun(result, runId, status.MemberSilos);
    }


    /// <summary>A new run id: the run directory's name (readable in dashboards) and a random suffix.</summary>
    public static string NewRunId(string runDirectory)
    {
        string name = Path.GetFileName(Path.GetFullPath(runDirectory).TrimEnd(Path.DirectorySeparatorChar));
        var safe = new string(name.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '-').ToArray());
        return $"{safe[..Math.Min(24, safe.Length)]}-{Guid.NewGuid():N}"[..^20];
    }

    /// <summary>The run id recorded in RUNDIR/config.json by the run's first start.</summary>
    public static string RunIdOf(string runDirectory)
    {
        string path = Path.Combine(runDirectory, LocalTrainer.ConfigFile);
        if (!File.Exists(path)) throw new UserInputException($"--resume: {path} not found; point --out at the directory of a run started with --embedded or --cluster");
        using var json = JsonDocument.Parse(File.ReadAllText(path));
        return json.RootElement.TryGetProperty("run_id", out var id) && id.GetString() is { Length: > 0 } value
            ? value
            : throw new UserInputException($"--resume: {path} has no run_id; it is a --local run (resume it with --local --resume)");
    }

    /// <summary>What a run that makes no progress waits for, in words for the progress line.</summary>
    static string WaitingFor(RunStatus s)
    {
        var unreachable = s.UnreachableSilos ?? [];
        var lost = s.MemberSilos.Where(p => unreachable.Contains(p.Value)).Select(p => p.Key).Order().ToArray();
        if (lost.Length > 0) return $"modalities {string.Join(",", lost)} unreachable (silo {string.Join(", ", unreachable)}): waiting for their calls to fail or time out, then the step runs again without them";
        if (s.CheckpointStep is { } c && (s.LoopId == Guid.Empty || s.Step == c && s.Incarnation > 0 && s.Step == s.StartStep))
            return $"resuming from the checkpoint at step {c}: restoring the members";
        return $"waiting for step {s.Step} (members {string.Join(",", s.Members)})";
    }

    static string EventKey(long step, string kind, int modality, DateTime utc) => $"{step}|{kind}|{modality}|{utc.ToUniversalTime():O}";

    /// <summary>One past the last step metrics.jsonl records (0 when it has none).</summary>
    static long StepsRecorded(string metricsPath)
    {
        if (!File.Exists(metricsPath)) return 0;
        long next = 0;
        foreach (string text in File.ReadLines(metricsPath))
        {
            if (!text.EndsWith('}')) continue;   // a line cut short by a crash
            using var line = JsonDocument.Parse(text);
            if (!line.RootElement.TryGetProperty("event", out _) && line.RootElement.TryGetProperty("step", out var step))
                next = Math.Max(next, step.GetInt64() + 1);
        }
        return next;
    }

    /// <summary>The events events.jsonl has already (a resumed client appends only new ones).</summary>
    static HashSet<string> WrittenEvents(string path)
    {
        var keys = new HashSet<string>();
        if (!File.Exists(path)) return keys;
        foreach (var l in File.ReadLines(path))
        {
            try
            {
                using var line = JsonDocument.Parse(l);
                var r = line.RootElement;
                keys.Add(EventKey(r.GetProperty("step").GetInt64(), r.GetProperty("event").GetString()!,
                    r.TryGetProperty("modality", out var m) ? m.GetInt32() : -1, r.GetProperty("utc").GetDateTime()));
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException) { /* a cut-off line */ }
        }
        return keys;
    }

    /// <summary>
    /// Assembles the run's trained model in this process from the parameters of its grains (the modalities' networks
    /// and the coordinator's objective), for evaluation and generation.
    /// </summary>
    public static async Task<MultimodalVae> DownloadModel(IGrainFactory grains, string runId, ModelConfig config, long seed, IEnumerable<int> modalities)
    {
        var model = new MultimodalVae(config, seed);
        foreach (int j in modalities)
            Load(model.ModalityNets[j].parameters().ToArray(), await grains.GetGrain<IModalityGrain>(ModalityKey.For(runId, j)).Parameters(), $"modality {j}");
        Load(model.Coordinator.parameters().ToArray(), await grains.GetGrain<ICoordinatorGrain>(runId).Parameters(), "coordinator");
        return model;

        // Guarded: with an embedded silo, its messaging allocates in this process while we call libtorch.
        static void Load(TorchSharp.Modules.Parameter[] target, TensorPayload[] source, string what) => NativeCallGuard.Run(() =>
        {
            if (target.Length != source.Length) throw new InvalidOperationException($"{what}: the grain has {source.Length} parameters, the model {target.Length}");
            using var _ = TorchSharp.torch.no_grad();
            for (int i = 0; i < target.Length; i++)
            {
                using var t = TensorWire.FromPayload(source[i], target[i].device);
                target[i].copy_(t.reshape(target[i].shape));
            }
        });
    }

    /// <summary>Writes a downloaded model as RUNDIR/checkpoints/NAME (weights only; loadable like a local checkpoint).</summary>
    public static void SaveModel(MultimodalVae model, string runDirectory, string name, long step, double? testLoss)
    {
        CheckpointDirectory.WriteAtomically(Path.Combine(runDirectory, "checkpoints", name),
            new CheckpointState { Step = step, TestLoss = testLoss, Model = model.Config },
            dir => NativeCallGuard.Run(() => model.save(Path.Combine(dir, "model.bin"))));
    }

    static bool IsFree(int port)
    {
        try
        {
            using var l = new TcpListener(IPAddress.Loopback, port);
            l.Start();
            return true;
        }
        catch (SocketException) { return false; }
    }

    static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
