using System.Diagnostics;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using MrVae.Client;
using MrVae.Data;
using MrVae.Model;
using MrVae.Model.Training;

namespace MrVae.Grains.Tests;

/// <summary>
/// The failure semantics with real processes: three silos on loopback clustered through Redis, one killed with
/// SIGKILL mid-run. A member's silo dies: its modalities are dropped at the next step boundary, the step in flight
/// runs again without them, nothing goes back. The coordinator's silo dies: the run resumes from its last
/// checkpoint on another silo. metrics.jsonl keeps every trained step and the event lines either way.
/// </summary>
[Trait("Category", "Integration")]   // redis-server and three silo processes, one killed
public sealed class SiloDeathTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-death-" + Guid.NewGuid().ToString("N"));
    readonly LoopbackProcesses processes = new();
    static readonly string[] Groups = ["0,1", "2,3", "4"];
    readonly Dictionary<string, string>[] environments = new Dictionary<string, string>[Groups.Length];
    readonly Process[] silos = new Process[Groups.Length];
    readonly int[] siloPorts = new int[Groups.Length];

    public void Dispose()
    {
        processes.Dispose();
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
    }

    /// <param name="missing">Each training tuple lacks each modality with this probability (incomplete shards, keyed by id).</param>
    async Task<(IGrainFactory Grains, IAsyncDisposable Client, string Data)> StartCluster(double missing = 0)
    {
        string data = Path.Combine(root, "data");
        VectorStore.Make(data, VectorSpec.Ring(), train: 256, test: 32, seed: 3);
        if (missing > 0) SampleIds.ApplyMissing(data, missing, seed: 3);
        int redis = processes.StartRedis();
        string clusterId = "death-" + Guid.NewGuid().ToString("N")[..8];
        for (int i = 0; i < Groups.Length; i++)
        {
            siloPorts[i] = LoopbackProcesses.FreePort();
            environments[i] = new Dictionary<string, string>
            {
                ["MrVae__Clustering__Redis"] = $"127.0.0.1:{redis}",
                ["MrVae__Cluster__ClusterId"] = clusterId,
                ["MrVae__Silo__Modalities"] = Groups[i],
                ["MrVae__Silo__TorchThreads"] = "1",
                ["MrVae__Silo__ConcurrentCompute"] = "1",
                ["MrVae__Endpoints__SiloPort"] = siloPorts[i].ToString(),
                ["MrVae__Endpoints__GatewayPort"] = LoopbackProcesses.FreePort().ToString(),
            };
            StartSilo(i);
            LoopbackProcesses.WaitForPort(int.Parse(environments[i]["MrVae__Endpoints__GatewayPort"]), TimeSpan.FromSeconds(90));
        }
        var client = await ClusterTraining.ConnectClient($"redis://127.0.0.1:{redis}", clusterId);
        return (client.Services.GetRequiredService<IGrainFactory>(), new HostDisposer(client), data);
    }

    void StartSilo(int i) => silos[i] = processes.StartSilo(new Dictionary<string, string>(environments[i]), $"silo{i}");

    sealed class HostDisposer(Microsoft.Extensions.Hosting.IHost host) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            try { await host.StopAsync(); } catch (Exception) { /* the cluster is going away with the test */ }
            host.Dispose();
        }
    }

    int SiloOf(string siloAddress) => Array.FindIndex(siloPorts, p => siloAddress.Contains($":{p}@") || siloAddress.Contains($":{p}:"));

    static async Task<RunStatus> WaitFor(ICoordinatorGrain run, Func<RunStatus, bool> condition, string what, Func<string> logs, int seconds = 180)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (true)
        {
            try
            {
                var s = await run.Status();
                if (condition(s)) return s;
                if (s.State is RunState.Failed) throw new Exception($"run failed: {s.Error}");
            }
            catch (Exception e) when (e is OrleansException or TimeoutException) { /* its silo is gone: ask again */ }
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"no {what} within {seconds} s\n{logs()}");
            await Task.Delay(250);
        }
    }

    static List<JsonElement> Lines(string run) => File.ReadAllLines(Path.Combine(run, LocalTrainer.MetricsFile)).Select(l => JsonDocument.Parse(l).RootElement).ToList();
    static bool IsEvent(JsonElement line, string kind) => line.TryGetProperty("event", out var e) && e.GetString() == kind;

    TrainOptions Options(string name) => new()
    {
        RunDirectory = Path.Combine(root, name), BatchSize = 16, Steps = 1_000_000, Seed = 5, LearningRate = 1e-3, EvaluateEvery = 20, TestSamples = 16,
    };

    static readonly ModelConfig Config = new() { Modalities = 5, LatentDim = 4, EncoderHidden = 16, ObservedDim = VectorSpec.Ring().ObservedDim, Likelihood = PixelLikelihood.Gaussian, LikelihoodScale = 0.1 };

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.5)]
    public async Task AMembersSiloDyingCostsAtMostTheStepInFlightAndNothingGoesBack(double missing)
    {
        var (grains, client, data) = await StartCluster(missing);
        await using var connection = client;
        var options = Options("member");
        string? runId = null;
        var training = Task.Run(() => ClusterTraining.Train(grains, Config, options, data, [0, 1, 2, 3, 4], onStarted: id => runId = id));
        while (runId is null && !training.IsCompleted) await Task.Delay(100);
        if (runId is null) { await training; Assert.Fail("the run ended before it started"); }   // surfaces the start's error
        var run = grains.GetGrain<ICoordinatorGrain>(runId!);
        var before = await WaitFor(run, s => s.Step >= 30, "30 steps", processes.Logs);
        int coordinatorSilo = SiloOf(before.CoordinatorSilo);
        Assert.True(coordinatorSilo >= 0, $"coordinator on {before.CoordinatorSilo}");
        int victim = Enumerable.Range(0, Groups.Length).First(i => i != coordinatorSilo);
        var lost = Groups[victim].Split(',').Select(int.Parse).ToArray();

        silos[victim].Kill();
        var dropped = await WaitFor(run, s => lost.All(j => s.Dropped?.Contains(j) == true), $"drop of modalities {Groups[victim]}", processes.Logs);
        StartSilo(victim);
        await WaitFor(run, s => lost.All(s.Members.Contains) && s.Step > dropped.Step + 5, $"rejoin of modalities {Groups[victim]}", processes.Logs);
        await run.Stop();
        var result = await training;

        var lines = Lines(options.RunDirectory);
        var steps = lines.Where(l => !l.TryGetProperty("event", out _)).Select(l => l.GetProperty("step").GetInt64()).ToArray();
        // Every step once, in order: the step in flight at the death was run again (not written twice), nothing went back.
        Assert.Equal(Enumerable.Range(0, steps.Length).Select(i => (long)i), steps);
        Assert.Equal(result.Result.Steps, steps.Length);
        Assert.DoesNotContain(lines, l => IsEvent(l, "resumed") || IsEvent(l, "failover"));
        Assert.Equal(0, (await run.Status()).Incarnation);
        foreach (int j in lost)
        {
            Assert.Contains(lines, l => IsEvent(l, "dropped") && l.GetProperty("modality").GetInt32() == j);
            Assert.Contains(lines, l => IsEvent(l, "rejoined") && l.GetProperty("modality").GetInt32() == j);
        }
        // The steps between the drop and the rejoin trained without the lost modalities.
        Assert.Contains(lines, l => l.TryGetProperty("members", out var m) && m.GetArrayLength() == 5 - lost.Length);
        Assert.True(File.ReadAllLines(Path.Combine(options.RunDirectory, LocalTrainer.EventsFile)).Length >= 5 + 2 * lost.Length);
    }

    [Fact]
    public async Task TheCoordinatorsSiloDyingResumesFromTheLastCheckpointAndKeepsTheHistory()
    {
        var (grains, client, data) = await StartCluster();
        await using var connection = client;
        var options = Options("coordinator");
        string? runId = null;
        var training = Task.Run(() => ClusterTraining.Train(grains, Config, options, data, [0, 1, 2, 3, 4], onStarted: id => runId = id));
        while (runId is null && !training.IsCompleted) await Task.Delay(100);
        if (runId is null) { await training; Assert.Fail("the run ended before it started"); }   // surfaces the start's error
        var run = grains.GetGrain<ICoordinatorGrain>(runId!);
        var before = await WaitFor(run, s => s.CheckpointStep >= 20 && s.Step > s.CheckpointStep + 3, "a checkpoint and steps past it", processes.Logs);
        int victim = SiloOf(before.CoordinatorSilo);
        Assert.True(victim >= 0, $"coordinator on {before.CoordinatorSilo}");
        // No wait for the client to fetch the steps seen trained: those it misses come from the checkpoint's record.
        silos[victim].Kill();
        var resumed = await WaitFor(run, s => s.LoopId != before.LoopId && s.State == RunState.Running && s.Step > s.StartStep, "the run going on after a failover", processes.Logs);
        Assert.NotEqual(before.CoordinatorSilo, resumed.CoordinatorSilo);
        StartSilo(victim);
        var lost = Groups[victim].Split(',').Select(int.Parse).ToArray();
        await WaitFor(run, s => lost.All(s.Members.Contains) && s.Step > resumed.Step + 5, $"rejoin of modalities {Groups[victim]}", processes.Logs);
        await run.Stop();
        await training;

        var lines = Lines(options.RunDirectory);
        int resumeLine = lines.FindIndex(l => IsEvent(l, "resumed"));
        Assert.True(resumeLine > 0, "metrics.jsonl has a resumed event line");
        Assert.Contains(lines, l => IsEvent(l, "failover"));
        long from = lines[resumeLine].GetProperty("step").GetInt64();
        Assert.Equal(resumed.StartStep, from);
        Assert.True(from >= before.CheckpointStep, $"resumed from {from}, checkpoint before the kill at {before.CheckpointStep}");
        static long[] StepsOf(IEnumerable<JsonElement> part) => part.Where(l => !l.TryGetProperty("event", out _)).Select(l => l.GetProperty("step").GetInt64()).ToArray();
        // Before the resume: every step up to the checkpoint (those the client had not fetched came from the record)
        // and any it had fetched past it, none twice; after it: from the checkpoint on, in order.
        var first = StepsOf(lines.Take(resumeLine));
        var second = StepsOf(lines.Skip(resumeLine));
        Assert.Equal(Enumerable.Range(0, first.Length).Select(i => (long)i), first);
        Assert.Equal(Enumerable.Range((int)from, second.Length).Select(i => (long)i), second);
        Assert.True(from <= first.Length, $"resumed from step {from}, after {first.Length} trained");
    }
}
