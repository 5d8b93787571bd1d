using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using MrVae.Grains;
using MrVae.Model;
using MrVae.Model.Training;
using MrVae.Silo;
using Orleans.Configuration;
using TorchSharp;

namespace MrVae.Client;

/// <summary>A finished distributed run: the trainer's result, the run id and which silo hosted each modality.</summary>
public sealed record DistributedRun(TrainResult Result, string RunId, IReadOnlyDictionary<int, string> MemberSilos);

/// <summary>
/// Training through grains: an in-process silo (--embedded) or a running cluster (--cluster). The client starts the
/// run on its coordinator grain and writes the same files as the local trainer from the metrics it polls.
/// </summary>
public static class ClusterTraining
{
    /// <summary>Starts a one-silo cluster in this process (localhost clustering on free ports) that serves every modality.</summary>
    public static async Task<IHost> StartEmbeddedSilo()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MrVae:Endpoints:SiloPort"] = FreePort().ToString(),
            ["MrVae:Endpoints:GatewayPort"] = FreePort().ToString(),
            ["MrVae:Cluster:ClusterId"] = "mrvae-embedded",
        }).Build();
        // MrVae__Silo__* environment variables tune the embedded silo like any other (device, threads).
        config = new ConfigurationBuilder().AddConfiguration(config).AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MrVae:Endpoints:PrimarySiloPort"] = config["MrVae:Endpoints:SiloPort"],
        }).AddEnvironmentVariables().Build();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.UseOrleans(silo => silo.ConfigureMrVae(config));
        builder.Services.AddMrVaeTelemetry(builder.Configuration, "mrvae-embedded");
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    /// <summary>
    /// Connects a client to a running cluster: "redis://HOST:PORT" (Redis clustering) or "HOST:GATEWAYPORT"
    /// (localhost clustering, the gateway of a local silo).
    /// </summary>
    public static async Task<IHost> ConnectClient(string connection, string clusterId = "mrvae", string serviceId = "mrvae")
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddMrVaeTelemetry(builder.Configuration, "mrvae-client");
        builder.UseOrleansClient(client =>
        {
            client.AddActivityPropagation();
            if (connection.StartsWith("redis://", StringComparison.OrdinalIgnoreCase))
            {
                client.UseRedisClustering(connection["redis://".Length..]);
                client.Configure<ClusterOptions>(o => { o.ClusterId = clusterId; o.ServiceId = serviceId; });
            }
            else
            {
                var parts = connection.Split(':');
                if (parts.Length != 2 || !int.TryParse(parts[1], out int port))
                    throw new ArgumentException($"--cluster '{connection}': use redis://HOST:PORT or HOST:GATEWAYPORT (e.g. localhost:30000)");
                client.UseLocalhostClustering(port, serviceId, clusterId);
            }
        });
        var host = builder.Build();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try { await host.StartAsync(timeout.Token); }
        catch (Exception e) when (e is OperationCanceledException or OrleansException or SocketException or TimeoutException)
        {
            throw new InvalidOperationException($"cannot reach the cluster at {connection} ({e.Message.ReplaceLineEndings(" ")}): start silos first (deploy/local-cluster.sh or mrvae-silo) or check --cluster");
        }
        return host;
    }

    /// <summary>Runs a training through the coordinator grain and writes metrics.jsonl, test.jsonl and config.json into the run directory.</summary>
    public static async Task<DistributedRun> Train(IGrainFactory grains, ModelConfig config, TrainOptions options, string siloDataDirectory,
        int[] modalities, Action<StepReport>? onStep = null, CancellationToken cancel = default)
    {
        Directory.CreateDirectory(options.RunDirectory);
        File.WriteAllText(Path.Combine(options.RunDirectory, LocalTrainer.ConfigFile),
            JsonSerializer.Serialize(new { model = config, train = options, data_on_silos = siloDataDirectory, modalities }, CheckpointDirectory.Json));
        string metricsPath = Path.Combine(options.RunDirectory, LocalTrainer.MetricsFile);
        File.Delete(metricsPath);

        string name = Path.GetFileName(Path.GetFullPath(options.RunDirectory).TrimEnd(Path.DirectorySeparatorChar));
        string runId = $"{name[..Math.Min(24, name.Length)]}-{Guid.NewGuid():N}"[..^20];
        var coordinator = grains.GetGrain<ICoordinatorGrain>(runId);
        var status = await coordinator.Start(new RunSetup(siloDataDirectory, config.ToJson(), options.Seed, options.BatchSize, options.Steps,
            options.Epochs, options.LearningRate, options.EvaluateEvery, options.TestSamples, modalities));
        long next = 0;
        var stepTimes = new List<double>();
        double last = double.NaN;
        while (true)
        {
            foreach (var m in await coordinator.Metrics(next))
            {
                var report = new StepReport(m.Step, m.Epoch, status.TotalSteps, m.Terms, m.StepMilliseconds);
                var line = LocalTrainer.MetricsLine(report);
                line["bytes"] = m.BytesMoved;
                foreach (var (phase, ms) in m.PhaseMilliseconds) line[phase] = Math.Round(ms, 3);
                line["members"] = m.Members;
                File.AppendAllText(metricsPath, JsonSerializer.Serialize(line) + "\n");
                onStep?.Invoke(report);
                stepTimes.Add(m.StepMilliseconds);
                last = m.Terms["loss"];
                next = m.Step + 1;
            }
            status = await coordinator.Status();
            if (status.State is RunState.Failed) throw new InvalidOperationException($"run {runId} failed: {status.Error}");
            if (status.State is RunState.Finished or RunState.Stopped && next >= status.Step) break;
            await Task.Delay(200, cancel);
        }
        var tests = await coordinator.TestMetrics();
        File.WriteAllLines(Path.Combine(options.RunDirectory, LocalTrainer.TestMetricsFile),
            tests.Select(t => JsonSerializer.Serialize(new Dictionary<string, object> { ["step"] = t.Step, ["test_loss"] = t.TestLoss })));
        stepTimes.Sort();
        var best = tests.OrderBy(t => t.TestLoss).FirstOrDefault();
        var result = new TrainResult(options.RunDirectory, status.Step, last, best?.TestLoss, best?.Step, stepTimes.Count == 0 ? 0 : stepTimes[stepTimes.Count / 2]);
        return new DistributedRun(result, runId, status.MemberSilos);
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

        static void Load(TorchSharp.Modules.Parameter[] target, TensorPayload[] source, string what)
        {
            if (target.Length != source.Length) throw new InvalidOperationException($"{what}: the grain has {source.Length} parameters, the model {target.Length}");
            using var _ = TorchSharp.torch.no_grad();
            for (int i = 0; i < target.Length; i++)
            {
                using var t = TensorWire.FromPayload(source[i], target[i].device);
                target[i].copy_(t.reshape(target[i].shape));
            }
        }
    }

    /// <summary>Writes a downloaded model as RUNDIR/checkpoints/NAME (weights only; loadable like a local checkpoint).</summary>
    public static void SaveModel(MultimodalVae model, string runDirectory, string name, long step, double? testLoss)
    {
        CheckpointDirectory.WriteAtomically(Path.Combine(runDirectory, "checkpoints", name),
            new CheckpointState { Step = step, TestLoss = testLoss, Model = model.Config },
            dir => model.save(Path.Combine(dir, "model.bin")));
    }

    static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
