using MrVae.Data;
using MrVae.Model;

namespace MrVae.Grains;

/// <summary>The run's checkpoints: commit at a step, the record's writes, and the restore from the last commit.</summary>
public sealed partial class CoordinatorGrain
{
    // A checkpoint keeps the metrics of the last this many steps for a client that had not fetched them when the
    // coordinator's silo died; not only those since the previous checkpoint, which a client that lags by more misses.
    const int RecentMetricsKept = 1000;

    // The step loop's checkpoints and attach/detach requests (other grain turns) both write the record; one at a time.
    readonly SemaphoreSlim recordWrite = new(1, 1);
    // When the last checkpoint was committed (on the grain's clock), and what the last timed one cost (reported with the next step).
    DateTimeOffset lastCheckpoint = clock.GetUtcNow();
    double checkpointMilliseconds;
    // What the last full checkpoint cost: with RunSetup.CheckpointShare, the next comes once the time since it is
    // this cost over the share.
    TimeSpan lastCheckpointCost;

    /// <summary>
    /// Without RunSetup.CheckpointEvery, a checkpoint also every RunSetup.CheckpointSeconds (0: only at evaluations),
    /// or sooner when checkpoints are cheap (RunSetup.CheckpointShare): what a coordinator's failover reruns, and
    /// what a member whose silo dies loses.
    /// </summary>
    bool CheckpointIntervalPassed()
    {
        if (setup!.CheckpointEvery is not null) return false;
        var interval = setup.CheckpointSeconds > 0 ? TimeSpan.FromSeconds(setup.CheckpointSeconds) : TimeSpan.MaxValue;
        if (setup.CheckpointShare > 0)
            interval = TimeSpan.FromMilliseconds(Math.Min(interval.TotalMilliseconds, lastCheckpointCost.TotalMilliseconds / setup.CheckpointShare));
        return interval != TimeSpan.MaxValue && clock.GetUtcNow() - lastCheckpoint >= interval;
    }

    async Task TimedCheckpoint()
    {
        long start = clock.GetTimestamp();
        await Checkpoint(RunState.Running);
        checkpointMilliseconds = clock.GetElapsedTime(start).TotalMilliseconds;
    }

    /// <summary>
    /// Commits a checkpoint at the current step: every member writes a snapshot (keeping the committed one), then the
    /// coordinator writes its record naming the step and the members that saved. A member that fails to save is
    /// dropped; the record is the commit, so a crash before it leaves the previous checkpoint in force.
    /// </summary>
    async Task Checkpoint(RunState recordedState)
    {
        await SettlePendingUpdates();
        if (step == committedStep && record.RecordExists)
        {
            record.State.State = recordedState;
            record.State.Events = events.ToList();
            record.State.TestMetrics = testMetrics.ToList();
            await WriteRecord();
            return;
        }
        using var span = TrainingTelemetry.StartRoot("checkpoint", RunId, step);
        long started = clock.GetTimestamp();
        var (_, failures) = await CallMembers(members, "checkpoint", async (_, g) => { await g.SaveCheckpoint(step, committedStep); return true; });
        if (failures.Length > 0) Drop(new MembersFailedException("checkpoint", failures));
        var (objectiveBytes, optimizerBytes, generatorBytes) = await protocol!.Save();
        record.State = new RunCheckpoint
        {
            FormatVersion = Checkpointing.FormatVersion, Setup = setup, Step = step, State = recordedState,
            Members = members.ToArray(), Dropped = dropped.Keys.ToArray(),   // DataDirectories and pending requests: WriteRecord
            Objective = objectiveBytes, Optimizer = optimizerBytes, StepGenerator = generatorBytes,
            TestMetrics = testMetrics.ToList(), Events = events.ToList(), Incarnation = incarnation, SavedUtc = clock.GetUtcNow().UtcDateTime,
            RecentMetrics = metrics.TakeLast(RecentMetricsKept).ToList(),
            Checksum = Checkpointing.Checksum(objectiveBytes, optimizerBytes, generatorBytes),
            SampleKeys = protocol.Samples.Keys,
        };
        await WriteRecord();
        committedStep = step;
        lastCheckpoint = clock.GetUtcNow();
        lastCheckpointCost = clock.GetElapsedTime(started);
    }

    /// <summary>Writes the record with the requests pending now (megabytes: with no libtorch call in flight).</summary>
    async Task WriteRecord()
    {
        await recordWrite.WaitAsync();
        try
        {
            record.State.PendingAttach = pendingAttach.ToArray();
            record.State.PendingDetach = pendingDetach.ToArray();
            record.State.DataDirectories = new(dataDirectories);
            await MrVae.Model.Runtime.NativeCallGuard.ExclusiveAsync(() => record.WriteStateAsync());
        }
        finally { recordWrite.Release(); }
    }

    /// <summary>Records an acknowledged attach or detach in the committed checkpoint, so a coordinator crash cannot lose it.</summary>
    async Task PersistRequests()
    {
        if (committedStep < 0 || !record.RecordExists) return;
        try { await WriteRecord(); }
        catch (Exception e)
        {
            // The request stands in memory; only a crash before the next step boundary would lose it.
            LogRequestNotRecorded(e, RunId);
        }
    }

    /// <summary>
    /// Loads the last committed checkpoint: the coordinator's networks, optimiser and random stream from its record,
    /// every member's weights and optimiser from its snapshot at the same step. A member that cannot be reached
    /// stays dropped and rejoins from its own newest snapshot when it is back.
    /// </summary>
    async Task RestoreFromRecord()
    {
        var c = record.State;
        if (c.FormatVersion != Checkpointing.FormatVersion)
            throw new UserInputException($"run {RunId}: its checkpoint has format version {c.FormatVersion}, this build reads {Checkpointing.FormatVersion}; resume with the mrvae version that wrote it");
        var s = c.Setup ?? throw new UserInputException($"run {RunId}: its checkpoint has no setup");
        Checkpointing.Verify(c.Checksum, $"run {RunId}'s checkpoint at step {c.Step}", c.Objective, c.Optimizer, c.StepGenerator);
        var cfg = ModelConfig.FromJson(s.ModelConfigJson);
        dataDirectories = new Dictionary<int, string>(c.DataDirectories);
        grains = c.Members.Concat(c.Dropped).Distinct().ToDictionary(j => j, ModalityGrain);
        dropped.Clear();
        foreach (int j in c.Dropped) dropped[j] = "dropped before the checkpoint";
        var (restored, failures) = await CallMembers(c.Members, "restore", (j, g) => g.Restore(SetupFor(s, j), c.Step));
        foreach (var (j, reason) in failures) { dropped[j] = reason; Record("dropped", j, $"restore failed: {reason}"); }
        if (restored.Count == 0)
            throw new UserInputException($"run {RunId}: no member could be restored from the checkpoint at step {c.Step} ({string.Join("; ", failures.Select(f => $"{f.Modality}: {f.Reason}"))}); start the silos serving its modalities and resume again");
        // The checkpoint's samples when it recorded them (a member missing now must not change the schedule).
        var samples = AlignedSamples(cfg.Modalities, restored.ToDictionary(p => p.Key, p => p.Value.Shard), c.SampleKeys, c.SampleKeys?.Length);
        memberSilos = restored.ToDictionary(p => p.Key, p => p.Value.Shard.Silo);
        testCount = restored.Values.Min(r => r.Shard.TestCount);

        await Initialize(s, cfg, samples);
        await protocol!.Load(c.Objective, c.Optimizer, c.StepGenerator);
        members = restored.Keys.OrderBy(j => j).ToArray();
        step = c.Step; committedStep = c.Step; startStep = c.Step; incarnation = c.Incarnation + 1; loopId = Guid.NewGuid(); error = null;
        // The steps before the checkpoint that a client may not have fetched yet (it polls; the old activation is gone).
        metrics.Clear(); metrics.AddRange(c.RecentMetrics.Where(m => m.Step < c.Step));
        testMetrics.Clear(); testMetrics.AddRange(c.TestMetrics);
        // The record's events, then those this activation added since (the failover that brought it here).
        var since = events.Where(e => !c.Events.Contains(e)).ToList();
        events.Clear(); events.AddRange(c.Events); events.AddRange(since);
        // Requests acknowledged before the restart are not lost: a detach applies at the first step boundary; an
        // attach goes through the rejoin probe, from the modality's newest snapshot.
        foreach (int j in c.PendingDetach)
            if (members.Contains(j) && members.Length - pendingDetach.Count > 1) pendingDetach.Add(j);
        foreach (int j in c.PendingAttach)
            if (!members.Contains(j) && !dropped.ContainsKey(j)) { grains[j] = ModalityGrain(j); dropped[j] = "attach requested before the restart"; }
        Record("resumed", -1, $"from the checkpoint at step {c.Step} with modalities {string.Join(",", members)}");
        TrainingTelemetry.MembersAttached.Add(members.Length);
    }
}
