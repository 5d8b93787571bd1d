using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MrVae.Data;
using MrVae.Model;
using MrVae.Model.Training;
using Orleans.Concurrency;
using static TorchSharp.torch;

namespace MrVae.Grains;

/// <summary>
/// One training run: the Orleans host of a <see cref="StepProtocol"/> (the split-learning step, its pending
/// encoder gradients, the coordinator's update and the test loss). The grain drives the step loop, keeps the
/// run's metrics and events, and answers status. Membership (attach, detach, drop, rejoin) is in
/// CoordinatorGrain.Membership.cs, checkpoints and restore in CoordinatorGrain.Checkpoints.cs, log messages in
/// CoordinatorGrain.Log.cs. Reentrant so that Status and Metrics answer while the loop awaits its members.
/// </summary>
[Reentrant]
public sealed partial class CoordinatorGrain(
    IOptions<SiloSettings> settings, ILogger<CoordinatorGrain> logger, ComputeGate compute, Orleans.Runtime.ILocalSiloDetails siloDetails,
    Orleans.Runtime.IClusterMembershipService membership, TimeProvider clock,
    [PersistentState("run", Checkpointing.StorageName)] IPersistentState<RunCheckpoint> record) : Grain, ICoordinatorGrain
{
    readonly Device device = new(settings.Value.Device);
    RunSetup? setup;
    StepProtocol? protocol;
    int testCount;
    long step, totalSteps, committedStep = -1, incarnation, startStep;
    RunState state = RunState.Created;
    string? error;
    readonly List<StepMetrics> metrics = new();
    readonly List<TestMetrics> testMetrics = new();
    readonly List<RunEvent> events = new();
    bool stopRequested, deactivating;
    Task? loop;
    // New at every start and every restore from a checkpoint (empty while a restore is under way): a client tells a
    // second resume from the same checkpoint (same incarnation, since no checkpoint recorded the first) from the last.
    Guid loopId;
    // Non-finite steps skipped in a row (RunSetup.SkipNonFinite).
    int skippedInARow;

    string RunId => this.GetPrimaryKeyString();
    ModelConfig? Config => protocol?.Config;

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        if (!record.RecordExists) return Task.CompletedTask;
        var c = record.State;
        // What status reports before (or without) a resume.
        setup = c.Setup; step = c.Step; committedStep = c.Step; members = c.Members; incarnation = c.Incarnation;
        totalSteps = c.Setup?.Steps ?? c.Step;
        error = c.Error; testMetrics.AddRange(c.TestMetrics); events.AddRange(c.Events);
        state = c.State;
        if (c.State == RunState.Running)
        {
            // The run was interrupted (its silo died, or the whole cluster stopped): continue from the checkpoint.
            LogInterrupted(RunId, c.Step);
            Record("failover", -1, $"the coordinator is active again, on {siloDetails.SiloAddress}: its last activation ended without stopping the run (its silo died, or the cluster restarted)");
            LaunchLoop(restore: true);
        }
        return Task.CompletedTask;
    }

    // How long a start waits for a silo serving each modality: silos started just before may still be joining.
    static readonly TimeSpan ServingSiloWait = TimeSpan.FromSeconds(30);

    async Task<ShardInfo> ConfigureOnceServed(int modality, ModalitySetup s)
    {
        var deadline = clock.GetUtcNow() + ServingSiloWait;
        while (true)
        {
            try { return await grains[modality].Configure(s); }
            catch (NoServingSiloException) when (clock.GetUtcNow() < deadline) { await Task.Delay(TimeSpan.FromMilliseconds(500), clock); }
        }
    }

    public async Task<RunStatus> Start(RunSetup s)
    {
        if (state == RunState.Running) throw new UserInputException($"run {RunId} is already running");
        if (record.RecordExists)
            throw new UserInputException($"run {RunId} already exists ({record.State.State} at step {record.State.Step}): resume it (mrvae train --resume) or choose another run id");
        var cfg = ModelConfig.FromJson(s.ModelConfigJson);
        if (s.Modalities.Length == 0) throw new UserInputException("a run needs at least one modality");
        foreach (int j in s.Modalities)
            if (j < 0 || j >= cfg.Modalities) throw new UserInputException($"unknown modality {j}: the model has modalities 0..{cfg.Modalities - 1}");

        grains = s.Modalities.ToDictionary(j => j, ModalityGrain);
        var shards = await Task.WhenAll(s.Modalities.Select(j => ConfigureOnceServed(j, SetupFor(s, j))));
        var samples = AlignedSamples(cfg.Modalities, s.Modalities.Zip(shards).ToDictionary(p => p.First, p => p.Second));
        memberSilos = s.Modalities.Zip(shards).ToDictionary(p => p.First, p => p.Second.Silo);
        testCount = shards.Min(x => x.TestCount);

        await Initialize(s, cfg, samples);
        members = s.Modalities.OrderBy(j => j).ToArray();
        step = 0; committedStep = -1; incarnation = 0; startStep = 0; loopId = Guid.NewGuid(); error = null;
        metrics.Clear(); testMetrics.Clear(); events.Clear(); dropped.Clear(); dataDirectories.Clear();
        foreach (int j in members) Record("started", j, $"on {memberSilos[j]}");
        TrainingTelemetry.MembersAttached.Add(members.Length);
        LaunchLoop(restore: false);
        return await Status();
    }

    public async Task<RunStatus> Resume()
    {
        if (state == RunState.Running) return await Status();
        if (!record.RecordExists)
            throw new UserInputException($"unknown run {RunId}: no checkpoint of it in grain storage (check the run id, and that the silos use the same storage: MrVae:Checkpoints)");
        if (record.State.State == RunState.Finished)
            throw new UserInputException($"run {RunId} has already trained all its {record.State.Step} steps: nothing to resume; evaluate it (mrvae eval) or train a new run with more --steps");
        // Restore before answering, so a resume that cannot work says why to the caller.
        var before = state;
        state = RunState.Running;
        try { await RestoreFromRecord(); }
        catch { state = before; throw; }
        LaunchLoop(restore: false);
        return await Status();
    }

    /// <summary>Builds the step protocol (objective, optimiser, random stream, schedule) exactly as a fresh run does.</summary>
    async Task Initialize(RunSetup s, ModelConfig cfg, SampleUniverse samples)
    {
        var old = protocol;
        protocol = null;
        if (old is not null)
        {
            await old.SettleParameterUpdate();
            await compute.RunCoordinator(() => { old.Dispose(); return true; });
        }
        protocol = await StepProtocol.Create(compute, device, s, cfg, samples);
        totalSteps = protocol.TotalSteps;
        setup = s;
        memberCalls = new MemberCalls(j => new ModalityMember(grains[j]), TimeSpan.FromSeconds(s.MemberTimeoutSeconds), clock);
        rejoinProbe = new RejoinProbe(clock, TimeSpan.FromSeconds(s.RejoinProbeSeconds));
        stopRequested = false;
        pendingAttach.Clear(); pendingDetach.Clear();
    }

    /// <summary>
    /// Id alignment: the run's samples from what each member reported (the union of their keys, or the positions of
    /// complete shards of one size). A shard that shares no sample with the others, or (complete shards) has another
    /// size, is refused: it belongs to another dataset. <paramref name="keys"/>: the run's samples from a checkpoint, kept.
    /// </summary>
    static SampleUniverse AlignedSamples(int modalities, IReadOnlyDictionary<int, ShardInfo> shards, long[]? keys = null, int? count = null)
    {
        if (count is { } n)
        {
            var kept = new SampleUniverse(keys, n);
            foreach (var (j, shard) in shards.OrderBy(p => p.Key)) kept.Join(j, new ShardKeys(shard.TrainCount, shard.TrainKeys));
            return kept;
        }
        var byModality = new ShardKeys?[modalities];
        foreach (var (j, shard) in shards) byModality[j] = new ShardKeys(shard.TrainCount, shard.TrainKeys);
        return SampleUniverse.Of(byModality);
    }

    void LaunchLoop(bool restore)
    {
        state = RunState.Running;
        this.DelayDeactivation(TimeSpan.FromDays(7));
        loop = RunLoop(restore);   // runs on this grain's scheduler; interleaves with Status/Metrics at its awaits
    }

    async Task RunLoop(bool restore)
    {
        try
        {
            if (restore) await RestoreFromRecord();
            // A checkpoint at step 0 too: a run can always be resumed, and rejoining members find a snapshot.
            if (committedStep < 0) await Checkpoint(RunState.Running);
            long evaluateEvery = setup!.EvaluateEvery ?? protocol!.Schedule.StepsPerEpoch;
            long checkpointEvery = setup.CheckpointEvery ?? evaluateEvery;
            while (step < totalSteps && !stopRequested)
            {
                // The silo is going away: stop between steps; the record still says Running, so the run resumes
                // from its last checkpoint wherever the coordinator is activated next.
                if (deactivating) return;
                await ApplyMembershipChanges();
                ProbeDroppedMembers();
                // A member that fails before the optimiser phase is dropped and the step runs again without it,
                // from the same random state, so the step is one consistent update of the remaining parties.
                using var generatorState = await protocol!.RandomState();
                StepMetrics result;
                try { result = await protocol.RunStep(RunId, step, members, memberCalls!); }
                catch (MembersFailedException failure)
                {
                    Drop(failure);
                    await protocol.RestoreRandomState(generatorState);
                    continue;
                }
                catch (NonFiniteStep bad)
                {
                    // Nothing of the step was applied: members zero their gradients at the next encode.
                    string cause = $"{bad.Where} is {NonFinite.Describe(bad.Value)}";
                    if (setup.SkipNonFinite && ++skippedInARow <= NonFinite.MaxSkippedInARow)
                    {
                        Record("skipped", -1, cause);
                        step++;
                        continue;
                    }
                    Record("diverged", -1, cause);
                    string kept = committedStep >= 0 ? $"The last good checkpoint is kept (step {committedStep}); `mrvae train --resume` continues from it." : "There is no checkpoint yet.";
                    throw new NonFiniteException(step, bad.Where, bad.Value, (setup.SkipNonFinite ? $"{NonFinite.MaxSkippedInARow} steps in a row were skipped. " : "")
                        + NonFinite.Advice(setup.LearningRate, setup.SkipNonFinite ? NonFiniteAction.Skip : NonFiniteAction.Stop, kept));
                }
                skippedInARow = 0;
                if (checkpointMilliseconds > 0) { result.PhaseMilliseconds["ms_checkpoint"] = checkpointMilliseconds; checkpointMilliseconds = 0; }
                metrics.Add(result);
                step++;
                if (step % evaluateEvery == 0 || step == totalSteps)
                {
                    double? testLoss = null;
                    try { testLoss = await TestLoss(); }
                    catch (MembersFailedException failure) { Drop(failure); }   // the next evaluation uses the others
                    if (testLoss is { } t && !double.IsFinite(t))
                    {
                        // Weights with a non-finite test loss make no good checkpoint: keep the last one.
                        Record("diverged", -1, $"the test loss is {NonFinite.Describe(t)}");
                        throw new NonFiniteException(step, "the test loss", t, NonFinite.Advice(setup.LearningRate, NonFiniteAction.Stop,
                            committedStep >= 0 ? $"The last good checkpoint is kept (step {committedStep})." : "There is no checkpoint yet."));
                    }
                    if (testLoss is { } loss) testMetrics.Add(new TestMetrics(step, loss));
                }
                if (step < totalSteps && (step % checkpointEvery == 0 || CheckpointIntervalPassed())) await TimedCheckpoint();
            }
            var final = stopRequested ? RunState.Stopped : RunState.Finished;
            if (stopRequested) Record("stopped", -1, $"stopped on request at step {step}");
            await Checkpoint(final);
            state = final;
        }
        catch (Exception) when (deactivating)
        {
            // Failures while the silo shuts down are not the run's: leave the record Running for a resume.
        }
        catch (Exception e)
        {
            LogRunFailed(e, RunId, step);
            error = e is NonFiniteException ? e.Message : $"step {step}: {e.Message}";
            state = RunState.Failed;
            if (record.RecordExists)
            {
                // Keep the last committed checkpoint; mark it failed so it is not resumed by itself.
                record.State.State = RunState.Failed;
                record.State.Error = error;
                try { await record.WriteStateAsync(); }
                catch (Exception w) { LogFailureNotRecorded(w, RunId); }
            }
        }
        finally
        {
            TrainingTelemetry.MembersAttached.Add(-members.Length);
        }
    }

    /// <summary>Has the members apply the last step's encoder gradients (after the coordinator's own update); drops those that fail.</summary>
    async Task SettlePendingUpdates()
    {
        if (protocol is null) return;
        await protocol.SettleParameterUpdate();
        var failures = await protocol.ApplyPendingGradients(RunId, members, memberCalls!);
        if (failures.Length > 0) Drop(new MembersFailedException("encoder backward", failures));
    }

    /// <summary>Mean test loss through the grains, as <see cref="LocalTrainer.TestLoss"/> computes it.</summary>
    async Task<double> TestLoss()
    {
        using var span = TrainingTelemetry.StartRoot("evaluate", RunId, step);
        await SettlePendingUpdates();
        return await protocol!.TestLoss(members, testCount, memberCalls!);
    }

    public Task<RunStatus> Status() => Task.FromResult(new RunStatus(state, step, totalSteps,
        metrics.Count > 0 ? metrics[^1].Terms["loss"] : null, error, new Dictionary<int, string>(memberSilos), members.ToArray(), events.ToArray(),
        siloDetails.SiloAddress.ToString(), incarnation, startStep, committedStep >= 0 ? committedStep : null, dropped.Keys.ToArray(), UnreachableSilos(), loopId));

    public Task<StepMetrics[]> Metrics(long fromStep) => Task.FromResult(metrics.Where(x => x.Step >= fromStep).ToArray());

    public Task<TestMetrics[]> TestMetrics() => Task.FromResult(testMetrics.ToArray());

    public Task<TensorPayload[]> Parameters() => protocol?.Parameters() ?? Task.FromResult<TensorPayload[]>([]);

    void Record(string kind, int modality, string message)
    {
        events.Add(new RunEvent(step, kind, modality, message, clock.GetUtcNow().UtcDateTime));
        if (events.Count > 1000) events.RemoveRange(0, events.Count - 1000);   // a flapping member must not grow the record without bound
        System.Diagnostics.Activity.Current?.AddEvent(new System.Diagnostics.ActivityEvent($"modality {kind}",
            tags: new System.Diagnostics.ActivityTagsCollection { [TrainingTelemetry.Modality] = modality, ["message"] = message }));
        TrainingTelemetry.Event(modality >= 0 ? $"modality {kind}" : $"run {kind}", RunId, step, modality, message);
        LogEvent(RunId, step, modality, kind, message);
    }

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        deactivating = true;
        // The step loop may be inside a compute lane with these networks: let it end before disposing them.
        if (loop is { IsCompleted: false })
        {
            try { await loop.WaitAsync(cancellationToken); }
            catch (Exception) { /* shutdown timed out */ }
        }
        // The last step's update may still be queued on the coordinator's lane with these networks.
        var update = protocol?.ParameterUpdate;
        if (update is not null)
        {
            try { await update.WaitAsync(cancellationToken); }
            catch (Exception) { /* failed or timed out: the run resumes from its last checkpoint */ }
        }
        if ((loop is null || loop.IsCompleted) && (update is null || update.IsCompleted)) protocol?.Dispose();
        // else: a lane may still hold them; leave them to the finalizer rather than free memory in use.
        if (state == RunState.Running) state = RunState.Stopped;
    }
}
