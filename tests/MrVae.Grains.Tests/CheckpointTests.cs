using MrVae.Model;
using Orleans.TestingHost;

namespace MrVae.Grains.Tests;

/// <summary>
/// Checkpoints in grain storage: a run stopped (or a whole cluster killed) and resumed on a new cluster ends with
/// the same parameters as an uninterrupted run; a modality whose silo dies and comes back rejoins from its
/// checkpoint; a run survives the death of its coordinator's silo.
/// </summary>
public sealed class CheckpointTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-checkpoints-" + Guid.NewGuid().ToString("N"));
    readonly List<TestCluster> clusters = new();

    public void Dispose()
    {
        foreach (var c in clusters) { try { c.StopAllSilos(); c.Dispose(); } catch (Exception) { /* already down */ } }
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
    }

    /// <param name="missing">Each training tuple lacks each modality with this probability (incomplete shards, keyed by id).</param>
    string Data(double missing = 0)
    {
        string dir = TestDatasets.Extended(Path.Combine(root, "data"), train: 64, test: 8, seed: 5);
        if (missing > 0) MrVae.Data.SampleIds.ApplyMissing(dir, missing, seed: 5);
        return dir;
    }

    async Task<TestCluster> Cluster(string state)
    {
        var cluster = await TwoSiloCluster.Deploy(Path.Combine(root, state));
        clusters.Add(cluster);
        return cluster;
    }

    static readonly string Config = new ModelConfig { Modalities = 5, LatentDim = 4, EncoderHidden = 16 }.ToJson();
    const long Steps = 16;
    static RunSetup Setup(string data, long steps = Steps, long checkpointEvery = 3) =>
        new(data, Config, 7, 16, steps, 1, 1e-3, 4, 8, [0, 1, 2, 3, 4], MemberTimeoutSeconds: 10, CheckpointEvery: checkpointEvery, RejoinProbeSeconds: 0.5);

    /// <summary>Every parameter of a run: the coordinator's, then each modality's.</summary>
    static async Task<float[][]> Parameters(IGrainFactory grains, string run)
    {
        var all = new List<TensorPayload>(await grains.GetGrain<ICoordinatorGrain>(run).Parameters());
        for (int j = 0; j < 5; j++) all.AddRange(await grains.GetGrain<IModalityGrain>(ModalityKey.For(run, j)).Parameters());
        return all.Select(p => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(p.Data).ToArray()).ToArray();
    }

    static async Task<RunStatus> WaitFor(ICoordinatorGrain run, Func<RunStatus, bool> condition, string what, int seconds = 120)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (DateTime.UtcNow < deadline)
        {
            RunStatus status;
            try { status = await run.Status(); }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException) { await Task.Delay(200); continue; }   // its silo is gone; the next call activates it elsewhere
            if (condition(status)) return status;
            if (status.State == RunState.Failed) throw new Xunit.Sdk.XunitException($"run failed while waiting for {what}: {status.Error}");
            await Task.Delay(50);
        }
        throw new TimeoutException($"timed out waiting for {what}");
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.5)]   // the resumed run keeps the checkpoint's samples and schedule
    public async Task StoppedOrKilledRunsResumedOnANewClusterEqualAnUninterruptedRun(double missing)
    {
        string data = Data(missing);
        var first = await Cluster("state");

        var straight = first.GrainFactory.GetGrain<ICoordinatorGrain>("straight");
        await straight.Start(Setup(data));
        Assert.Equal(RunState.Finished, (await DistributedEqualsLocalTests.WaitUntilDone(straight)).State);
        var expected = await Parameters(first.GrainFactory, "straight");
        var expectedLosses = (await straight.Metrics(0)).Select(m => m.Terms["loss"]).ToArray();

        // One run stopped on request, one still running when every silo is killed.
        var stopped = first.GrainFactory.GetGrain<ICoordinatorGrain>("stopped");
        await stopped.Start(Setup(data));
        await WaitFor(stopped, s => s.Step >= 2, "step 2");
        await stopped.Stop();
        var atStop = await WaitFor(stopped, s => s.State == RunState.Stopped, "the stop");
        Assert.True(atStop.Step < Steps, "the run finished before the stop took effect: nothing to resume");
        Assert.Equal(atStop.Step, atStop.CheckpointStep);

        var killed = first.GrainFactory.GetGrain<ICoordinatorGrain>("killed");
        await killed.Start(Setup(data));
        var beforeKill = await WaitFor(killed, s => s.CheckpointStep >= 3 && s.Step >= 5, "a checkpoint and some steps past it");
        foreach (var silo in first.Silos.ToArray()) await first.KillSiloAsync(silo);

        // A new cluster over the same storage.
        var second = await Cluster("state");
        stopped = second.GrainFactory.GetGrain<ICoordinatorGrain>("stopped");
        Assert.Equal(RunState.Stopped, (await stopped.Status()).State);   // a stopped run waits for an explicit resume
        var resumed = await stopped.Resume();
        Assert.Equal(1, resumed.Incarnation);
        Assert.Equal(atStop.Step, resumed.StartStep);
        Assert.Equal(RunState.Finished, (await DistributedEqualsLocalTests.WaitUntilDone(stopped)).State);
        AssertIdentical(expected, await Parameters(second.GrainFactory, "stopped"), "stopped and resumed");
        foreach (var m in await stopped.Metrics(0)) Assert.Equal(expectedLosses[m.Step], m.Terms["loss"]);

        // The killed run's coordinator resumes by itself when it is activated again, from its last committed checkpoint.
        killed = second.GrainFactory.GetGrain<ICoordinatorGrain>("killed");
        var done = await WaitFor(killed, s => s.State == RunState.Finished, "the killed run to finish");
        Assert.Equal(Steps, done.Step);
        Assert.True(done.StartStep <= beforeKill.Step && done.StartStep >= 3 && done.StartStep % 3 == 0, $"resumed from step {done.StartStep}");
        Assert.Contains(done.Events, e => e.Kind == "resumed");
        AssertIdentical(expected, await Parameters(second.GrainFactory, "killed"), "killed and resumed");
    }

    [Fact]
    public async Task AttachAndDetachAcknowledgedBeforeTheClusterDiesAreAppliedAfterTheResume()
    {
        string data = Data();
        var first = await Cluster("pending");
        var run = first.GrainFactory.GetGrain<ICoordinatorGrain>("pending");
        // Only the step-0 checkpoint: the requests below are made after it and never reach a later one.
        await run.Start(Setup(data, steps: 100_000, checkpointEvery: 1_000_000) with { Modalities = [0, 1, 2, 3] });
        await WaitFor(run, s => s.CheckpointStep == 0 && s.Step >= 2, "a few steps");
        await run.Detach(1);
        await run.Attach(4, null);
        foreach (var silo in first.Silos.ToArray()) await first.KillSiloAsync(silo);

        // The coordinator resumes by itself from step 0 and applies both requests, not just the membership of step 0.
        var second = await Cluster("pending");
        run = second.GrainFactory.GetGrain<ICoordinatorGrain>("pending");
        var after = await WaitFor(run, s => s.Incarnation == 1 && s.Members.SequenceEqual([0, 2, 3, 4]), "the requests to be applied after the resume");
        var sinceResume = after.Events.SkipWhile(e => e.Kind != "resumed").ToArray();
        Assert.Contains(sinceResume, e => e.Kind == "detached" && e.Modality == 1);
        Assert.Contains(sinceResume, e => e.Kind == "rejoined" && e.Modality == 4);
        await run.Stop();
        await WaitFor(run, s => s.State == RunState.Stopped, "the stop");
    }

    /// <summary>A run whose coordinator Orleans placed on <paramref name="silo"/> (asking Status activates it without starting anything).</summary>
    static async Task<ICoordinatorGrain> CoordinatorOn(TestCluster cluster, SiloHandle silo, string prefix)
    {
        for (int i = 0; ; i++)
        {
            var run = cluster.GrainFactory.GetGrain<ICoordinatorGrain>($"{prefix}-{i}");
            if ((await run.Status()).CoordinatorSilo == silo.SiloAddress.ToString()) return run;
        }
    }

    static void AssertIdentical(float[][] expected, float[][] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(expected[i].AsSpan().SequenceEqual(actual[i]), $"{what}: parameter tensor {i} differs from the uninterrupted run");
    }

    [Fact]
    public async Task AModalityWhoseSiloDiesRejoinsFromItsCheckpointWhenTheSiloIsBack()
    {
        string data = Data();
        var cluster = await Cluster("rejoin");
        var secondary = cluster.Silos.Single(s => s != cluster.Primary);
        // The coordinator on the primary silo (0, 2, 4), so killing the secondary (1, 3) takes only modalities.
        var run = await CoordinatorOn(cluster, cluster.Primary!, "rejoin");
        await run.Start(Setup(data, steps: 100_000, checkpointEvery: 2));
        await WaitFor(run, s => s.CheckpointStep >= 2, "a checkpoint");
        await cluster.KillSiloAsync(secondary);

        var withoutThem = await WaitFor(run, s => s.Members.SequenceEqual([0, 2, 4]), "modalities 1 and 3 to be dropped");
        Assert.Contains(withoutThem.Events, e => e.Kind == "dropped" && e.Modality == 1);
        long droppedAt = withoutThem.Step;
        await WaitFor(run, s => s.Step >= droppedAt + 3, "steps without them");

        await cluster.StartAdditionalSiloAsync();   // a secondary again: serves 1 and 3
        var back = await WaitFor(run, s => s.Members.SequenceEqual([0, 1, 2, 3, 4]), "modalities 1 and 3 to rejoin", seconds: 180);
        foreach (int j in new[] { 1, 3 })
        {
            var rejoined = back.Events.Last(e => e.Kind == "rejoined" && e.Modality == j);
            Assert.Matches(@"from its checkpoint at step \d+", rejoined.Message);
        }
        long rejoinedAt = back.Step;
        await WaitFor(run, s => s.Step >= rejoinedAt + 2, "steps with them again");
        await run.Stop();
        Assert.Equal(RunState.Stopped, (await DistributedEqualsLocalTests.WaitUntilDone(run)).State);

        var all = await run.Metrics(0);
        Assert.Equal(Enumerable.Range(0, all.Length).Select(i => (long)i), all.Select(m => m.Step));   // no step lost or repeated
        Assert.Contains(all, m => m.Members.SequenceEqual([0, 2, 4]));
        Assert.Equal(new[] { 0, 1, 2, 3, 4 }, all[^1].Members);
        Assert.All(all, m => Assert.True(double.IsFinite(m.Terms["loss"])));
    }

    [Fact]
    public async Task ARunSurvivesTheDeathOfItsCoordinatorsSilo()
    {
        string data = Data();
        var cluster = await Cluster("coordinator");
        var secondary = cluster.Silos.Single(s => s != cluster.Primary);
        // The coordinator on the secondary silo (with modalities 1 and 3); the primary (0, 2, 4) survives.
        var run = await CoordinatorOn(cluster, secondary, "orphan");
        await run.Start(Setup(data, steps: 40, checkpointEvery: 2));
        await WaitFor(run, s => s.CheckpointStep >= 4, "a checkpoint");
        await cluster.KillSiloAsync(secondary);

        var done = await WaitFor(run, s => s.State == RunState.Finished, "the run to finish on the surviving silo", seconds: 180);
        Assert.Equal(cluster.Primary!.SiloAddress.ToString(), done.CoordinatorSilo);
        Assert.Equal(1, done.Incarnation);
        Assert.Equal(new[] { 0, 2, 4 }, done.Members);
        Assert.Contains(done.Events, e => e.Kind == "resumed");
        var after = await run.Metrics(done.StartStep);
        Assert.Equal(Enumerable.Range((int)done.StartStep, (int)(40 - done.StartStep)).Select(i => (long)i), after.Select(m => m.Step));
        Assert.All(after, m => Assert.Equal(new[] { 0, 2, 4 }, m.Members));
    }
}
