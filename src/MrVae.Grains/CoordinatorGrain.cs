using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MrVae.Model;
using MrVae.Model.Objectives;
using MrVae.Model.Training;
using Orleans.Concurrency;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Grains;

/// <summary>
/// One training run. Owns the coordinator's objective (for mrVAE the membership structure)
/// and its Adam, and drives the split-learning step over the modality grains:
///   1. Encode on every member (parallel) → μ_j, log σ²_j
///   2. objective forward on leaf copies of them → decoder inputs z̃_j and the KL terms
///   3. Decode on every member (parallel): −log p(x_j | z̃_j), decoder backward, ∂L/∂z̃_j back
///   4. backward through the objective with ∂L/∂z̃_j injected → ∂L/∂μ_j, ∂L/∂log σ²_j
///   5. the coordinator's own optimiser step. ∂L/∂μ_j, ∂L/∂log σ²_j ride on step t+1's Encode, where each member
///      runs its encoder backward and optimiser step for t before it encodes: the same updates in the same order
///      as a barrier after step t, one round trip fewer per step. Before anything else reads or saves the members'
///      weights (evaluation, checkpoint, membership change, the run's end) they are applied by ApplyEncoderGradients.
/// The math and random streams are those of <see cref="LocalTrainer"/>, which this must reproduce.
/// Reentrant so that Status and Metrics answer while the loop awaits its members.
/// </summary>
[Reentrant]
public sealed class CoordinatorGrain(
    IOptions<SiloSettings> settings, ILogger<CoordinatorGrain> logger, ComputeGate compute, Orleans.Runtime.ILocalSiloDetails siloDetails,
    Orleans.Runtime.IClusterMembershipService membership,
    [PersistentState("run", Checkpointing.StorageName)] IPersistentState<RunCheckpoint> record) : Grain, ICoordinatorGrain
{
    readonly Device device = new(settings.Value.Device);
    RunSetup? setup;
    ModelConfig? config;
    CoordinatorObjective? objective;
    TorchSharp.Modules.Adam? optimizer;
    Generator? stepGenerator;
    TrainingSchedule? schedule;
    int[] members = [];
    Dictionary<int, IModalityGrain> grains = new();
    Dictionary<int, string> memberSilos = new();
    // Where an attach named a data directory other than the run's.
    Dictionary<int, string> dataDirectories = new();
    // Members lost to a failure, by modality, with the reason: asked now and then to rejoin from their checkpoint.
    readonly SortedDictionary<int, string> dropped = new();
    Task? rejoinProbe;
    DateTime lastRejoinProbe = DateTime.MinValue;
    int testCount;
    long step, totalSteps, committedStep = -1, incarnation, startStep;
    RunState state = RunState.Created;
    string? error;
    readonly List<StepMetrics> metrics = new();
    readonly List<TestMetrics> testMetrics = new();
    readonly List<RunEvent> events = new();
    // Membership changes wait for a step boundary: the step in flight keeps the members it started with.
    readonly SortedSet<int> pendingAttach = new(), pendingDetach = new();
    bool stopRequested, deactivating;
    // The last step's encoder gradients, not yet applied by its members: sent with the next encode (see the summary).
    PendingEncoderGradients? pendingGradients;
    // The last step's own parameter update (Adam), queued on the
    // coordinator's lane behind the step: it runs while the members encode the next step, and any later work on the
    // lane (the next forward, a checkpoint, an evaluation) comes after it. Its result is its time in ms.
    Task<double>? parameterUpdate;
    sealed record PendingEncoderGradients(long Step, int[] Members, TensorPayload[] DMu, TensorPayload[] DLogVar)
    {
        public EncoderGradients? For(int modality)
        {
            int i = Array.IndexOf(Members, modality);
            return i < 0 ? null : new EncoderGradients(Step, DMu[i], DLogVar[i]);
        }
    }
    Task? loop;
    // New at every start and every restore from a checkpoint (empty while a restore is under way): a client tells a
    // second resume from the same checkpoint (same incarnation, since no checkpoint recorded the first) from the last.
    Guid loopId;
    TimeSpan memberTimeout = TimeSpan.FromSeconds(60);
    // Non-finite steps skipped in a row (RunSetup.SkipNonFinite); the time of the last checkpoint, and what it cost.
    int skippedInARow;
    DateTime lastCheckpoint = DateTime.UtcNow;
    TimeSpan lastCheckpointCost;
    double checkpointMilliseconds;

    string RunId => this.GetPrimaryKeyString();

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
            logger.LogWarning("run {Run} was interrupted; resuming from its checkpoint at step {Step}", RunId, c.Step);
            Record("failover", -1, $"the coordinator is active again, on {siloDetails.SiloAddress}: its last activation ended without stopping the run (its silo died, or the cluster restarted)");
            LaunchLoop(restore: true);
        }
        return Task.CompletedTask;
    }

    // How long a start waits for a silo serving each modality: silos started just before may still be joining.
    static readonly TimeSpan ServingSiloWait = TimeSpan.FromSeconds(30);

    async Task<ShardInfo> ConfigureOnceServed(int modality, ModalitySetup s)
    {
        var deadline = DateTime.UtcNow + ServingSiloWait;
        while (true)
        {
            try { return await grains[modality].Configure(s); }
            catch (NoServingSiloException) when (DateTime.UtcNow < deadline) { await Task.Delay(500); }
        }
    }

    public async Task<RunStatus> Start(RunSetup s)
    {
        if (state == RunState.Running) throw new InvalidOperationException($"run {RunId} is already running");
        if (record.RecordExists)
            throw new InvalidOperationException($"run {RunId} already exists ({record.State.State} at step {record.State.Step}): resume it (mrvae train --resume) or choose another run id");
        var cfg = ModelConfig.FromJson(s.ModelConfigJson);
        if (s.Modalities.Length == 0) throw new ArgumentException("a run needs at least one modality");
        foreach (int j in s.Modalities)
            if (j < 0 || j >= cfg.Modalities) throw new ArgumentException($"unknown modality {j}: the model has modalities 0..{cfg.Modalities - 1}");

        grains = s.Modalities.ToDictionary(j => j, ModalityGrain);
        var shards = await Task.WhenAll(s.Modalities.Select(j => ConfigureOnceServed(j, SetupFor(s, j))));
        int trainCount = AgreedTrainCount(shards);
        memberSilos = s.Modalities.Zip(shards).ToDictionary(p => p.First, p => p.Second.Silo);
        testCount = shards.Min(x => x.TestCount);

        await Initialize(s, cfg, trainCount);
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
            throw new ArgumentException($"unknown run {RunId}: no checkpoint of it in grain storage (check the run id, and that the silos use the same storage: MrVae:Checkpoints)");
        if (record.State.State == RunState.Finished)
            throw new InvalidOperationException($"run {RunId} has already trained all its {record.State.Step} steps: nothing to resume; evaluate it (mrvae eval) or train a new run with more --steps");
        // Restore before answering, so a resume that cannot work says why to the caller.
        var before = state;
        state = RunState.Running;
        try { await RestoreFromRecord(); }
        catch { state = before; throw; }
        LaunchLoop(restore: false);
        return await Status();
    }

    /// <summary>Builds the coordinator's objective, optimiser, random stream and schedule exactly as a fresh run does.</summary>
    async Task Initialize(RunSetup s, ModelConfig cfg, int trainCount)
    {
        // libtorch work, so on the compute lane (NativeCallGuard), not on the grain's thread.
        await compute.RunCoordinator(() =>
        {
            objective?.Dispose(); optimizer?.Dispose(); stepGenerator?.Dispose();
            objective = Seeds.Construct(s.Seed, Seeds.CoordinatorParty, () => CoordinatorObjective.Create(cfg));
            objective.to(device);
            // Adam over no parameters (MoPoE, MVAE, MMVAE) is a no-op; keep one so every model runs the same loop.
            optimizer = optim.Adam(objective.parameters(), lr: s.LearningRate);
            stepGenerator = Seeds.Generator(s.Seed, Seeds.CoordinatorStepsParty);
            return true;
        });
        schedule = new TrainingSchedule(s.Seed, trainCount, s.BatchSize);
        totalSteps = s.Steps ?? s.Epochs * schedule.StepsPerEpoch;
        setup = s; config = cfg;
        memberTimeout = TimeSpan.FromSeconds(s.MemberTimeoutSeconds);
        stopRequested = false;
        pendingAttach.Clear(); pendingDetach.Clear();
    }

    static int AgreedTrainCount(IEnumerable<ShardInfo> shards)
    {
        var counts = shards.Select(x => x.TrainCount).Distinct().ToArray();
        return counts.Length == 1 ? counts[0]
            : throw new ArgumentException($"modality shards disagree on the training size ({string.Join(", ", counts)}): they are not one dataset");
    }

    IModalityGrain ModalityGrain(int j) => GrainFactory.GetGrain<IModalityGrain>(ModalityKey.For(RunId, j));

    ModalitySetup SetupFor(RunSetup s, int j)
        => new(RunId, j, dataDirectories.GetValueOrDefault(j) ?? s.DataDirectory, s.ModelConfigJson, s.Seed, s.LearningRate);

    /// <summary>
    /// Loads the last committed checkpoint: the coordinator's networks, optimiser and random stream from its record,
    /// every member's weights and optimiser from its snapshot at the same step. A member that cannot be reached
    /// stays dropped and rejoins from its own newest snapshot when it is back.
    /// </summary>
    async Task RestoreFromRecord()
    {
        var c = record.State;
        if (c.FormatVersion != Checkpointing.FormatVersion)
            throw new InvalidOperationException($"run {RunId}: its checkpoint has format version {c.FormatVersion}, this build reads {Checkpointing.FormatVersion}; resume with the mrvae version that wrote it");
        var s = c.Setup ?? throw new InvalidOperationException($"run {RunId}: its checkpoint has no setup");
        Checkpointing.Verify(c.Checksum, $"run {RunId}'s checkpoint at step {c.Step}", c.Objective, c.Optimizer, c.StepGenerator);
        var cfg = ModelConfig.FromJson(s.ModelConfigJson);
        dataDirectories = new Dictionary<int, string>(c.DataDirectories);
        grains = c.Members.Concat(c.Dropped).Distinct().ToDictionary(j => j, ModalityGrain);
        dropped.Clear();
        foreach (int j in c.Dropped) dropped[j] = "dropped before the checkpoint";
        var (restored, failures) = await CallMembers(c.Members, "restore", j => grains[j].Restore(SetupFor(s, j), c.Step));
        foreach (var (j, reason) in failures) { dropped[j] = reason; Record("dropped", j, $"restore failed: {reason}"); }
        if (restored.Count == 0)
            throw new InvalidOperationException($"run {RunId}: no member could be restored from the checkpoint at step {c.Step} ({string.Join("; ", failures.Select(f => $"{f.Modality}: {f.Reason}"))}); start the silos serving its modalities and resume again");
        int trainCount = AgreedTrainCount(restored.Values.Select(r => r.Shard));
        memberSilos = restored.ToDictionary(p => p.Key, p => p.Value.Shard.Silo);
        testCount = restored.Values.Min(r => r.Shard.TestCount);

        await Initialize(s, cfg, trainCount);
        await compute.RunCoordinator(() =>
        {
            Checkpointing.Load(objective!, c.Objective);
            Checkpointing.Load(optimizer!, c.Optimizer);
            Checkpointing.Load(stepGenerator!, c.StepGenerator);
            return true;
        });
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
            long evaluateEvery = setup!.EvaluateEvery ?? schedule!.StepsPerEpoch;
            long checkpointEvery = setup.CheckpointEvery ?? evaluateEvery;
            // Without CheckpointEvery, a checkpoint also every CheckpointSeconds, or sooner when checkpoints are cheap
            // (CheckpointShare): what a coordinator's failover reruns, and what a member whose silo dies loses.
            var checkpointInterval = setup.CheckpointEvery is null && setup.CheckpointSeconds > 0 ? TimeSpan.FromSeconds(setup.CheckpointSeconds) : TimeSpan.MaxValue;
            TimeSpan NextCheckpointAfter() => setup.CheckpointEvery is null && setup.CheckpointShare > 0
                ? TimeSpan.FromMilliseconds(Math.Min(checkpointInterval.TotalMilliseconds, lastCheckpointCost.TotalMilliseconds / setup.CheckpointShare))
                : checkpointInterval;
            while (step < totalSteps && !stopRequested)
            {
                // The silo is going away: stop between steps; the record still says Running, so the run resumes
                // from its last checkpoint wherever the coordinator is activated next.
                if (deactivating) return;
                await ApplyMembershipChanges();
                ProbeDroppedMembers();
                // A member that fails before the optimiser phase is dropped and the step runs again without it,
                // from the same random state, so the step is one consistent update of the remaining parties.
                using var generatorState = await compute.RunCoordinator(() => stepGenerator!.get_state());
                StepMetrics result;
                try { result = await RunStep(); }
                catch (MembersFailedException failure)
                {
                    Drop(failure);
                    await compute.RunCoordinator(() => { stepGenerator!.set_state(generatorState); return true; });
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
                if (step < totalSteps && (step % checkpointEvery == 0 || DateTime.UtcNow - lastCheckpoint >= NextCheckpointAfter()))
                {
                    var clock = Stopwatch.StartNew();
                    await Checkpoint(RunState.Running);
                    checkpointMilliseconds = clock.Elapsed.TotalMilliseconds;   // reported with the next step
                }
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
            logger.LogError(e, "run {Run} failed at step {Step}", RunId, step);
            error = e is NonFiniteException ? e.Message : $"step {step}: {e.Message}";
            state = RunState.Failed;
            if (record.RecordExists)
            {
                // Keep the last committed checkpoint; mark it failed so it is not resumed by itself.
                record.State.State = RunState.Failed;
                record.State.Error = error;
                try { await record.WriteStateAsync(); }
                catch (Exception w) { logger.LogError(w, "run {Run}: could not record the failure", RunId); }
            }
        }
        finally
        {
            TrainingTelemetry.MembersAttached.Add(-members.Length);
        }
    }

    /// <summary>
    /// Commits a checkpoint at the current step: every member writes a snapshot (keeping the committed one), then the
    /// coordinator writes its record naming the step and the members that saved. A member that fails to save is
    /// dropped; the record is the commit, so a crash before it leaves the previous checkpoint in force.
    /// </summary>
    async Task Checkpoint(RunState recordedState)
    {
        await SettleParameterUpdate();
        await ApplyPendingGradients();
        if (step == committedStep && record.RecordExists)
        {
            record.State.State = recordedState;
            record.State.Events = events.ToList();
            record.State.TestMetrics = testMetrics.ToList();
            await WriteRecord();
            return;
        }
        using var span = TrainingTelemetry.StartRoot("checkpoint", RunId, step);
        var cost = Stopwatch.StartNew();
        var (_, failures) = await CallMembers(members, "checkpoint", async j => { await grains[j].SaveCheckpoint(step, committedStep); return true; });
        if (failures.Length > 0) Drop(new MembersFailedException("checkpoint", failures));
        var (objectiveBytes, optimizerBytes, generatorBytes) = await compute.RunCoordinator(() =>
            (Checkpointing.Save(objective!), Checkpointing.Save(optimizer!), Checkpointing.Save(stepGenerator!)));
        record.State = new RunCheckpoint
        {
            FormatVersion = Checkpointing.FormatVersion, Setup = setup, Step = step, State = recordedState,
            Members = members.ToArray(), Dropped = dropped.Keys.ToArray(),   // DataDirectories and pending requests: WriteRecord
            Objective = objectiveBytes, Optimizer = optimizerBytes, StepGenerator = generatorBytes,
            TestMetrics = testMetrics.ToList(), Events = events.ToList(), Incarnation = incarnation, SavedUtc = DateTime.UtcNow,
            RecentMetrics = metrics.Where(m => m.Step >= committedStep).TakeLast(RecentMetricsKept).ToList(),
            Checksum = Checkpointing.Checksum(objectiveBytes, optimizerBytes, generatorBytes),
        };
        await WriteRecord();
        committedStep = step;
        lastCheckpoint = DateTime.UtcNow;
        lastCheckpointCost = cost.Elapsed;
    }

    // A checkpoint keeps the metrics of the steps since the previous one (at most this many) for a client that had
    // not fetched them when the coordinator's silo died.
    const int RecentMetricsKept = 1000;

    // The step loop's checkpoints and attach/detach requests (other grain turns) both write the record; one at a time.
    readonly SemaphoreSlim recordWrite = new(1, 1);

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
            logger.LogWarning(e, "run {Run}: could not record the pending membership change in its checkpoint", RunId);
        }
    }

    /// <summary>Now and then (in the background) asks dropped members to rejoin; those that answer join at the next step boundary.</summary>
    void ProbeDroppedMembers()
    {
        if (dropped.Count == 0 || rejoinProbe is { IsCompleted: false }) return;
        if (DateTime.UtcNow - lastRejoinProbe < TimeSpan.FromSeconds(setup!.RejoinProbeSeconds)) return;
        lastRejoinProbe = DateTime.UtcNow;
        rejoinProbe = Probe(dropped.Keys.ToArray());

        async Task Probe(int[] candidates)
        {
            var (back, _) = await CallMembers(candidates, "rejoin", j => grains[j].Restore(SetupFor(setup!, j), null));
            foreach (var (j, r) in back)
            {
                if (state != RunState.Running || !dropped.ContainsKey(j)) continue;
                if (r.Shard.TrainCount != schedule!.SampleCount) continue;
                dropped.Remove(j);
                memberSilos[j] = r.Shard.Silo;
                pendingAttach.Add(j);
                Record("rejoined", j, $"on {r.Shard.Silo}, {(r.Step is { } s ? $"from its checkpoint at step {s}" : "with fresh weights (it had no checkpoint)")}");
            }
        }
    }

    async Task<StepMetrics> RunStep()
    {
        var watch = Stopwatch.StartNew();
        using var stepSpan = TrainingTelemetry.StartStep(this.GetPrimaryKeyString(), step, members);
        long bytes = 0;
        var ids = schedule!.BatchIds(step);
        stepSpan?.SetTag(TrainingTelemetry.BatchSize, ids.Length);
        var phaseSpan = TrainingTelemetry.Source.StartActivity("encode");
        var phases = new Dictionary<string, double>();
        double mark = 0;
        // Ends the current phase (time and span) and starts the next one's span.
        void Phase(string name, string? next)
        {
            double now = watch.Elapsed.TotalMilliseconds; phases[$"ms_{name}"] = now - mark; mark = now;
            phaseSpan?.Dispose();
            phaseSpan = next is null ? null : TrainingTelemetry.Source.StartActivity(next);
        }
        var previous = pendingGradients;
        var encoded = await OnMembers("encode", j => grains[j].Encode(step, ids, "train", keepGraph: true, previous?.For(j)));
        // Every member has applied them now (one that failed above was dropped, and loses only that update).
        pendingGradients = null;
        // The last step's own update ran beside that encode; its time is reported with this step.
        phases["ms_coordinator_update"] = await SettleParameterUpdate();
        Phase("encode", "relation");
        bytes += ids.Length * sizeof(long) * members.Length + encoded.Sum(e => e.Mu.ByteCount + e.LogVar.ByteCount)
            + members.Sum(j => previous?.For(j) is { } g ? g.DMu.ByteCount + g.DLogVar.ByteCount : 0);   // the last step's gradients, sent now

        // Forward on the coordinator; the graph (and the leaves standing in for the members' outputs) outlives
        // this synchronous block, so those tensors leave the dispose scope.
        int m = config!.Modalities;
        var mu = new Tensor?[m]; var logVar = new Tensor?[m];
        var present = Enumerable.Range(0, m).Select(j => members.Contains(j)).ToArray();
        var context = StepContext.ForTraining(config, step, stepGenerator!);
        CoordinatorOutput output = null!;
        var decoderInputs = await compute.RunCoordinator(() =>
        {
            using var scope = NewDisposeScope();
            for (int i = 0; i < members.Length; i++)
            {
                int j = members[i];
                mu[j] = TensorWire.FromPayload(encoded[i].Mu, device).requires_grad_().MoveToOuterDisposeScope();
                logVar[j] = TensorWire.FromPayload(encoded[i].LogVar, device).requires_grad_().MoveToOuterDisposeScope();
            }
            using var available = MultimodalVae.AllAvailable(present, ids.Length, device: device);
            optimizer!.zero_grad();
            output = objective!.Forward(mu, logVar, available, present, context);
            output.Loss.MoveToOuterDisposeScope();
            foreach (var t in output.DecoderInputs) t?.MoveToOuterDisposeScope();
            foreach (var t in output.Terms.Values) t.MoveToOuterDisposeScope();
            return members.Select(j => TensorWire.ToPayload(output.DecoderInputs[j]!)).ToArray();
        });
        Phase("coordinator_forward", "decode");
        bytes += decoderInputs.Sum(p => p.ByteCount);

        var decoded = await OnMembers("decode", j => grains[j].Decode(step, decoderInputs[Array.IndexOf(members, j)], output.ViewWeights, backward: true));
        Phase("decode", "backward");
        bytes += decoded.Sum(d => d.Gradient!.ByteCount + sizeof(float));

        var terms = new Dictionary<string, double>();
        (string Where, double Value)? bad = null;
        var (dMu, dLogVar) = await compute.RunCoordinator(() =>
        {
            using var scope = NewDisposeScope();
            try
            {
                // The total in the local trainer's order: coordinator loss, then rec_j by modality.
                var total = output.Loss.detach().clone();
                for (int i = 0; i < members.Length; i++) total = total + tensor(decoded[i].NegativeLogLikelihood, dtype: total.dtype, device: device);
                terms["loss"] = total.ToDouble();
                foreach (var (k, t) in output.Terms) terms[k] = t.ToDouble();
                for (int i = 0; i < members.Length; i++) terms[$"rec_{members[i]}"] = decoded[i].NegativeLogLikelihood;
                terms["beta"] = config.Beta * context.BetaScale;
                if ((bad = NonFinite.Term(terms)) is not null) return ((TensorPayload[])[], (TensorPayload[])[]);

                var roots = new List<Tensor> { output.Loss };
                var grads = new List<Tensor> { ones_like(output.Loss) };
                for (int i = 0; i < members.Length; i++)
                {
                    roots.Add(output.DecoderInputs[members[i]]!);
                    grads.Add(TensorWire.FromPayload(decoded[i].Gradient!, device));
                }
                // One backward: the members' gradients land on their leaves, the coordinator's in its parameters' .grad.
                autograd.backward(roots, grads);
                Tensor Gradient(Tensor leaf) => leaf.grad is { } g ? g.detach().clone() : zeros_like(leaf);
                var muGrads = members.Select(j => Gradient(mu[j]!)).ToArray();
                var logVarGrads = members.Select(j => Gradient(logVar[j]!)).ToArray();
                // Each member's gradient as it arrived (∂L/∂z̃) and as it goes back (∂L/∂μ, ∂L/∂log σ²), and the coordinator's own.
                var groups = members.Select((j, i) => ($"modality {j}'s gradient", (IReadOnlyList<Tensor>)[grads[i + 1], muGrads[i], logVarGrads[i]]))
                    .Append(("the coordinator's gradient", objective!.parameters().Select(p => p.grad).OfType<Tensor>().ToList())).ToList();
                if ((bad = NonFinite.Gradient(groups)) is not null) return ((TensorPayload[])[], (TensorPayload[])[]);
                return (muGrads.Select(g => TensorWire.ToPayload(g)).ToArray(), logVarGrads.Select(g => TensorWire.ToPayload(g)).ToArray());
            }
            finally
            {
                output.Dispose();
                foreach (var t in mu.Concat(logVar)) t?.Dispose();
            }
        });
        if (bad is { } b) throw new NonFiniteStep(b.Where, b.Value);
        Phase("coordinator_backward", "optimizer");

        // The members' updates go out with the next encode (or ApplyPendingGradients). The coordinator's own update is
        // queued on its lane now and not awaited: it overlaps the members' next encode (see parameterUpdate).
        var stepMembers = members;
        pendingGradients = new PendingEncoderGradients(step, stepMembers, dMu, dLogVar);
        var updateSpan = phaseSpan;
        phaseSpan = null;
        parameterUpdate = compute.RunCoordinator(() =>
        {
            var clock = Stopwatch.StartNew();
            try
            {
                optimizer!.step();
                return clock.Elapsed.TotalMilliseconds;
            }
            finally { updateSpan?.Dispose(); }
        });
        watch.Stop();
        stepSpan?.SetTag(TrainingTelemetry.Bytes, bytes);
        stepSpan?.SetTag("mrvae.loss", terms["loss"]);
        TrainingTelemetry.StepMilliseconds.Record(watch.Elapsed.TotalMilliseconds);
        TrainingTelemetry.BytesMoved.Add(bytes);
        TrainingTelemetry.Steps.Add(1, new KeyValuePair<string, object?>(TrainingTelemetry.Run, RunId));
        foreach (var (key, value) in terms)
            if (key == "loss" || key.StartsWith("kl", StringComparison.Ordinal) || key.StartsWith("rec", StringComparison.Ordinal))
                TrainingTelemetry.Loss.Record(value, new(TrainingTelemetry.Term, key), new(TrainingTelemetry.Run, RunId));
        return new StepMetrics(step, schedule.EpochOf(step), terms, watch.Elapsed.TotalMilliseconds, bytes, phases, stepMembers);
    }

    /// <summary>
    /// Waits for the last step's own parameter update (<see cref="parameterUpdate"/>) and returns its time in ms (0 if
    /// none is pending). Work queued on the coordinator's lane runs after it anyway; this surfaces its failure.
    /// </summary>
    async Task<double> SettleParameterUpdate()
    {
        if (parameterUpdate is not { } update) return 0;
        parameterUpdate = null;
        return await update;
    }

    /// <summary>
    /// Has the members apply the last step's encoder gradients now, for what reads or saves their weights before a
    /// next encode would carry them. A member that fails is dropped: the others have stepped, so the step stands and
    /// only the failed members' update is lost.
    /// </summary>
    async Task ApplyPendingGradients()
    {
        if (pendingGradients is not { } pending) return;
        using var span = TrainingTelemetry.StartRoot("optimizer", RunId, pending.Step);
        var targets = pending.Members.Intersect(members).ToArray();
        var (_, failures) = await CallMembers(targets, "encoder backward", async j =>
        {
            var g = pending.For(j)!;
            await grains[j].ApplyEncoderGradients(g.Step, g.DMu, g.DLogVar);
            return true;
        });
        pendingGradients = null;
        if (failures.Length > 0) Drop(new MembersFailedException("encoder backward", failures));
    }

    /// <summary>Mean test loss through the grains, as <see cref="LocalTrainer.TestLoss"/> computes it.</summary>
    async Task<double> TestLoss()
    {
        using var span = TrainingTelemetry.StartRoot("evaluate", RunId, step);
        await SettleParameterUpdate();
        await ApplyPendingGradients();
        int count = Math.Min(testCount, setup!.TestSamples ?? int.MaxValue);
        using var generator = Seeds.Generator(setup.Seed, "evaluation");
        int m = config!.Modalities;
        var present = Enumerable.Range(0, m).Select(j => members.Contains(j)).ToArray();
        double sum = 0;
        for (int start = 0; start < count; start += setup.BatchSize)
        {
            var ids = Enumerable.Range(start, Math.Min(setup.BatchSize, count - start)).Select(i => (long)i).ToArray();
            var encoded = await OnMembers("test encode", j => grains[j].Encode(-1 - start, ids, "test", keepGraph: false));
            CoordinatorOutput output = null!;
            var inputs = await compute.RunCoordinator(() =>
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                var mu = new Tensor?[m]; var logVar = new Tensor?[m];
                for (int i = 0; i < members.Length; i++)
                {
                    mu[members[i]] = TensorWire.FromPayload(encoded[i].Mu, device);
                    logVar[members[i]] = TensorWire.FromPayload(encoded[i].LogVar, device);
                }
                var available = MultimodalVae.AllAvailable(present, ids.Length, device: device);
                output = objective!.Forward(mu, logVar, available, present, new StepContext { Generator = generator, Training = false });
                output.Loss.MoveToOuterDisposeScope();
                return members.Select(j => TensorWire.ToPayload(output.DecoderInputs[j]!)).ToArray();
            });
            var decoded = await OnMembers("test decode", j => grains[j].Decode(-1 - start, inputs[Array.IndexOf(members, j)], output.ViewWeights, backward: false));
            sum += await compute.RunCoordinator(() =>
            {
                using var scope = NewDisposeScope();
                var total = output.Loss.clone();
                foreach (var d in decoded) total = total + tensor(d.NegativeLogLikelihood, dtype: total.dtype, device: device);
                output.Loss.Dispose();
                return total.ToDouble() * ids.Length;
            });
        }
        return sum / count;
    }

    public Task<RunStatus> Status() => Task.FromResult(new RunStatus(state, step, totalSteps,
        metrics.Count > 0 ? metrics[^1].Terms["loss"] : null, error, new Dictionary<int, string>(memberSilos), members.ToArray(), events.ToArray(),
        siloDetails.SiloAddress.ToString(), incarnation, startStep, committedStep >= 0 ? committedStep : null, dropped.Keys.ToArray(), UnreachableSilos(), loopId));

    /// <summary>The members' silos that the cluster's membership does not list as active (dead, or never heard of).</summary>
    string[] UnreachableSilos()
    {
        var active = membership.CurrentSnapshot.Members.Values.Where(m => m.Status == Orleans.Runtime.SiloStatus.Active).Select(m => m.SiloAddress.ToString()).ToHashSet();
        return memberSilos.Values.Distinct().Where(silo => !active.Contains(silo)).ToArray();
    }

    public async Task<RunStatus> Attach(int modality, string? dataDirectory, string? siloRole = null)
    {
        var s = RequireRunning();
        int modalities = config!.Modalities;
        if (modality < 0 || modality >= modalities) throw new ArgumentException($"unknown modality {modality}: the model has modalities 0..{modalities - 1}");
        if ((members.Contains(modality) && !pendingDetach.Contains(modality)) || pendingAttach.Contains(modality))
            throw new ArgumentException($"modality {modality} is already attached to run {RunId}");
        var grain = ModalityGrain(modality);
        if (!string.IsNullOrWhiteSpace(siloRole)) await MoveToRole(grain, modality, siloRole.Trim());
        var memberSetup = SetupFor(s, modality) with { DataDirectory = dataDirectory ?? dataDirectories.GetValueOrDefault(modality) ?? s.DataDirectory };
        // A modality that was a member before comes back with its newest snapshot (taken when it was detached or at a checkpoint).
        var restored = await grain.Restore(memberSetup, null);
        if (restored.Shard.TrainCount != schedule!.SampleCount)
            throw new ArgumentException($"modality {modality}'s shard has {restored.Shard.TrainCount} training samples, the run's others {schedule.SampleCount}: it is not part of this dataset");
        if (dataDirectory is not null) dataDirectories[modality] = dataDirectory;
        grains[modality] = grain;
        memberSilos[modality] = restored.Shard.Silo;
        dropped.Remove(modality);
        pendingDetach.Remove(modality);
        pendingAttach.Add(modality);
        if (restored.Step is { } from) Record("restored", modality, $"from its checkpoint at step {from}");
        await PersistRequests();
        return await Status();
    }

    /// <summary>
    /// Makes <paramref name="grain"/> active on a silo with <paramref name="role"/>: the role rides in the request
    /// context to the placement director, which honours it when the call activates the grain; a grain active on
    /// another silo is released first (its snapshot is in shared storage, so it restores the same on the new silo).
    /// </summary>
    static async Task MoveToRole(IModalityGrain grain, int modality, string role)
    {
        try
        {
            var deadline = DateTime.UtcNow.AddSeconds(60);
            string current;
            // Set before every call: the request context does not survive the response of the previous one.
            while ((current = await WithRole(grain.SiloRole)) != role)
            {
                if (DateTime.UtcNow > deadline)
                    throw new InvalidOperationException($"modality {modality} stays on silo '{current}' instead of moving to '{role}'");
                await WithRole(async () => { await grain.Migrate(); return true; });
                await Task.Delay(200);   // the migration runs once the grain is idle
            }
        }
        catch (OrleansException e) when (e.Message.Contains("MrVae:Silo:"))
        {
            throw new ArgumentException(e.Message);   // from the placement director: no such silo; a user error, not a fault
        }
        finally { RequestContext.Remove(ModalityPlacementDirector.RoleRequestKey); }

        Task<T> WithRole<T>(Func<Task<T>> call)
        {
            RequestContext.Set(ModalityPlacementDirector.RoleRequestKey, role);
            return call();
        }
    }

    public async Task<RunStatus> Detach(int modality)
    {
        RequireRunning();
        if (!members.Contains(modality) || pendingDetach.Contains(modality))
            throw new ArgumentException($"modality {modality} is not attached to run {this.GetPrimaryKeyString()} (members: {string.Join(",", members)})");
        if (members.Length - pendingDetach.Count <= 1 && pendingAttach.Count == 0)
            throw new ArgumentException($"modality {modality} is the run's last member: stop the run instead");
        pendingDetach.Add(modality);
        await PersistRequests();
        return await Status();
    }

    public Task<RunStatus> Stop()
    {
        RequireRunning();
        stopRequested = true;
        return Status();
    }

    RunSetup RequireRunning() => state == RunState.Running && setup is not null && config is not null
        ? setup
        : throw new InvalidOperationException(state == RunState.Created && !record.RecordExists
            ? $"unknown run {RunId}: it was never started on this cluster (check the run id)"
            : $"run {RunId} is not running (state {state}{(state == RunState.Running ? ", still resuming" : "")})");

    async Task ApplyMembershipChanges()
    {
        if (pendingAttach.Count == 0 && pendingDetach.Count == 0) return;
        await ApplyPendingGradients();   // a leaving member saves its weights with its last update
        // A detached member saves its weights first, so attaching it again continues where it left off.
        var leaving = pendingDetach.ToArray();
        var (_, failures) = await CallMembers(leaving, "detach checkpoint", async j => { await grains[j].SaveCheckpoint(step, committedStep); return true; });
        foreach (var (j, reason) in failures) logger.LogWarning("run {Run}: modality {Modality} could not save on detach: {Reason}", RunId, j, reason);
        foreach (int j in leaving) Record("detached", j, "detached on request");
        foreach (int j in pendingAttach) Record("attached", j, $"on {memberSilos[j]}");
        int before = members.Length;
        members = members.Except(leaving).Union(pendingAttach).OrderBy(j => j).ToArray();
        TrainingTelemetry.MembersAttached.Add(members.Length - before);
        pendingAttach.Clear(); pendingDetach.Clear();
    }

    void Drop(MembersFailedException failure)
    {
        foreach (var (j, reason) in failure.Failures)
        {
            Record("dropped", j, $"{failure.Phase} failed: {reason}");
            dropped[j] = reason;
        }
        int before = members.Length;
        members = members.Except(failure.Failures.Select(f => f.Modality)).ToArray();
        TrainingTelemetry.MembersAttached.Add(members.Length - before);
        if (members.Length == 0) throw new InvalidOperationException("every modality of the run failed; nothing left to train");
    }

    void Record(string kind, int modality, string message)
    {
        events.Add(new RunEvent(step, kind, modality, message, DateTime.UtcNow));
        if (events.Count > 1000) events.RemoveRange(0, events.Count - 1000);   // a flapping member must not grow the record without bound
        Activity.Current?.AddEvent(new ActivityEvent($"modality {kind}", tags: new ActivityTagsCollection { [TrainingTelemetry.Modality] = modality, ["message"] = message }));
        TrainingTelemetry.Event(modality >= 0 ? $"modality {kind}" : $"run {kind}", RunId, step, modality, message);
        logger.LogWarning("run {Run} step {Step}: modality {Modality} {Kind}: {Message}", this.GetPrimaryKeyString(), step, modality, kind, message);
    }

    /// <summary>
    /// Calls every current member in parallel, each bounded by the member timeout; if any fails or times out
    /// (its silo gone, say), throws <see cref="MembersFailedException"/> naming them after all calls have ended.
    /// </summary>
    async Task<T[]> OnMembers<T>(string phase, Func<int, Task<T>> call)
    {
        var current = members;
        var (results, failures) = await CallMembers(current, phase, call);
        if (failures.Length > 0) throw new MembersFailedException(phase, failures);
        return current.Select(j => results[j]).ToArray();
    }

    /// <summary>Calls the given modalities in parallel, each bounded by the member timeout, and sorts the answers from the failures.</summary>
    async Task<(Dictionary<int, T> Results, (int Modality, string Reason)[] Failures)> CallMembers<T>(IReadOnlyList<int> modalities, string phase, Func<int, Task<T>> call)
    {
        var tasks = modalities.Select(j => call(j).WaitAsync(memberTimeout)).ToArray();
        // Task.WhenAll ends only when every call has ended, so no call of this phase is still in flight after it.
        try { await Task.WhenAll(tasks); }
        catch { /* sorted out below */ }
        var results = new Dictionary<int, T>();
        var failures = new List<(int, string)>();
        for (int i = 0; i < tasks.Length; i++)
        {
            if (tasks[i].IsCompletedSuccessfully) results[modalities[i]] = tasks[i].Result;
            else failures.Add((modalities[i], tasks[i].Exception?.GetBaseException() is Exception e ? $"{e.GetType().Name}: {e.Message}" : $"{phase} timed out"));
        }
        return (results, failures.ToArray());
    }

    /// <summary>The step's loss or gradients are not finite (nothing of it was applied); the loop skips it or fails the run.</summary>
    sealed class NonFiniteStep(string where, double value) : Exception($"{where} is {NonFinite.Describe(value)}")
    {
        public string Where { get; } = where;
        public double Value { get; } = value;
    }

    sealed class MembersFailedException(string phase, (int Modality, string Reason)[] failures)
        : Exception($"{phase} failed on modalities {string.Join(",", failures.Select(f => f.Modality))}")
    {
        public (int Modality, string Reason)[] Failures { get; } = failures;
        public string Phase { get; } = phase;
    }

    public Task<StepMetrics[]> Metrics(long fromStep) => Task.FromResult(metrics.Where(x => x.Step >= fromStep).ToArray());

    public Task<TestMetrics[]> TestMetrics() => Task.FromResult(testMetrics.ToArray());

    public Task<TensorPayload[]> Parameters()
        => compute.RunCoordinator(() => objective?.parameters().Select(p => TensorWire.ToPayload(p)).ToArray() ?? []);

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
        var update = parameterUpdate;
        if (update is not null)
        {
            try { await update.WaitAsync(cancellationToken); }
            catch (Exception) { /* failed or timed out: the run resumes from its last checkpoint */ }
        }
        if ((loop is null || loop.IsCompleted) && (update is null || update.IsCompleted))
        {
            objective?.Dispose(); optimizer?.Dispose(); stepGenerator?.Dispose();
        }
        // else: a lane may still hold them; leave them to the finalizer rather than free memory in use.
        if (state == RunState.Running) state = RunState.Stopped;
    }
}
