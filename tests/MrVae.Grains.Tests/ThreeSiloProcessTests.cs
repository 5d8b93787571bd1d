using Microsoft.Extensions.DependencyInjection;
using MrVae.Client;
using MrVae.Data;
using MrVae.Model;
using MrVae.Model.Training;

namespace MrVae.Grains.Tests;

/// <summary>Three silo processes on loopback, clustered through a real Redis, train a short run to the end.</summary>
[Trait("Category", "Integration")]   // redis-server and three silo processes
public sealed class ThreeSiloProcessTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-3silo-" + Guid.NewGuid().ToString("N"));
    readonly LoopbackProcesses processes = new();

    public void Dispose()
    {
        processes.Dispose();
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
    }

    [Fact]
    public async Task ThreeSilosWithRedisClusteringTrainToTheEnd()
    {
        string data = TestDatasets.Extended(Path.Combine(root, "data"), train: 64, test: 16, seed: 1);

        int redis = processes.StartRedis();
        string clusterId = "test-" + Guid.NewGuid().ToString("N")[..8];
        var served = new[] { "0,1", "2,3", "4" };
        for (int i = 0; i < 3; i++)
        {
            int siloPort = LoopbackProcesses.FreePort(), gatewayPort = LoopbackProcesses.FreePort();
            processes.StartSilo(new Dictionary<string, string>
            {
                ["MrVae__Clustering__Redis"] = $"127.0.0.1:{redis}",
                ["MrVae__Cluster__ClusterId"] = clusterId,
                ["MrVae__Silo__Modalities"] = served[i],
                ["MrVae__Silo__TorchThreads"] = "1",
                ["MrVae__Endpoints__SiloPort"] = siloPort.ToString(),
                ["MrVae__Endpoints__GatewayPort"] = gatewayPort.ToString(),
            }, $"silo{i}");
            LoopbackProcesses.WaitForPort(gatewayPort, TimeSpan.FromSeconds(90));
        }

        using var client = await ClusterTraining.ConnectClient($"redis://127.0.0.1:{redis}", clusterId);
        var grains = client.Services.GetRequiredService<IGrainFactory>();
        var config = new ModelConfig { Modalities = 5, LatentDim = 6, EncoderHidden = 32 };
        var options = new TrainOptions { RunDirectory = Path.Combine(root, "run"), BatchSize = 16, Steps = 6, Seed = 2, TestSamples = 16 };
        DistributedRun run;
        try
        {
            run = await ClusterTraining.Train(grains, config, options, data, [0, 1, 2, 3, 4]);
        }
        catch (Exception e)
        {
            throw new Exception($"{e.Message}\nsilo logs:\n{processes.Logs()}", e);
        }
        var result = run.Result;
        Assert.Equal(6, result.Steps);
        Assert.Equal(6, File.ReadAllLines(Path.Combine(root, "run", LocalTrainer.MetricsFile)).Length);
        Assert.True(double.IsFinite(result.FinalLoss));

        // Three silos in the cluster, and the modalities ran on three different ones, grouped as the silos declared.
        Assert.Equal(3, (await grains.GetGrain<IManagementGrain>(0).GetHosts(onlyActive: true)).Count);
        Assert.Equal(3, run.MemberSilos.Values.Distinct().Count());
        Assert.Equal(run.MemberSilos[0], run.MemberSilos[1]);
        Assert.Equal(run.MemberSilos[2], run.MemberSilos[3]);
        Assert.NotEqual(run.MemberSilos[0], run.MemberSilos[4]);
        await client.StopAsync();
    }
}
