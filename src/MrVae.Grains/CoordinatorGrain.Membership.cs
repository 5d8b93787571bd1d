using MrVae.Data;
using MrVae.Model.Training;

namespace MrVae.Grains;

/// <summary>The run's members: attach and detach at step boundaries, drops on failure, the rejoin probe, member calls.</summary>
public sealed partial class CoordinatorGrain
{
    int[] members = [];
    Dictionary<int, IModalityGrain> grains = new();
    Dictionary<int, string> memberSilos = new();
    // Where an attach named a data directory other than the run's.
    Dictionary<int, string> dataDirectories = new();
    // Members lost to a failure, by modality, with the reason: asked now and then to rejoin from their checkpoint.
    readonly SortedDictionary<int, string> dropped = new();
    // Membership changes wait for a step boundary: the step in flight keeps the members it started with.
    readonly SortedSet<int> pendingAttach = new(), pendingDetach = new();
    // The members' calls, each bounded by the run's member timeout, and the rejoin probe's schedule (set by Initialize).
    MemberCalls? memberCalls;
    RejoinProbe? rejoinProbe;

    IModalityGrain ModalityGrain(int j) => GrainFactory.GetGrain<IModalityGrain>(ModalityKey.For(RunId, j));

    ModalitySetup SetupFor(RunSetup s, int j)
        => new(RunId, j, dataDirectories.GetValueOrDefault(j) ?? s.DataDirectory, s.ModelConfigJson, s.Seed, s.LearningRate);

    /// <summary>A modality grain as the step protocol calls it.</summary>
    sealed class ModalityMember(IModalityGrain grain) : IStepMember
    {
        public Task<EncodeResult> Encode(long step, long[] ids, string split, bool keepGraph, EncoderGradients? previous = null)
            => grain.Encode(step, ids, split, keepGraph, previous);
        public Task<DecodeResult> Decode(long step, TensorPayload decoderInput, double[] viewWeights, bool backward, int batch = 0)
            => grain.Decode(step, decoderInput, viewWeights, backward, batch);
        public Task ApplyEncoderGradients(long step, TensorPayload dMu, TensorPayload dLogVar) => grain.ApplyEncoderGradients(step, dMu, dLogVar);
    }

    /// <summary>Calls the given modalities' grains in parallel, each bounded by the member timeout (before a run is set up: 60 s).</summary>
    Task<(Dictionary<int, T> Results, (int Modality, string Reason)[] Failures)> CallMembers<T>(IReadOnlyList<int> modalities, string phase, Func<int, IModalityGrain, Task<T>> call)
        => (memberCalls ?? new MemberCalls(j => new ModalityMember(grains[j]), TimeSpan.FromSeconds(60), clock))
            .Call(modalities, phase, (j, _) => call(j, grains[j]));

    /// <summary>The members' silos that the cluster's membership does not list as active (dead, or never heard of).</summary>
    string[] UnreachableSilos()
    {
        var active = membership.CurrentSnapshot.Members.Values.Where(m => m.Status == Orleans.Runtime.SiloStatus.Active).Select(m => m.SiloAddress.ToString()).ToHashSet();
        return memberSilos.Values.Distinct().Where(silo => !active.Contains(silo)).ToArray();
    }

    public async Task<RunStatus> Attach(int modality, string? dataDirectory, string? siloRole = null)
    {
        var s = RequireRunning();
        int modalities = Config!.Modalities;
        if (modality < 0 || modality >= modalities) throw new UserInputException($"unknown modality {modality}: the model has modalities 0..{modalities - 1}");
        if ((members.Contains(modality) && !pendingDetach.Contains(modality)) || pendingAttach.Contains(modality))
            throw new UserInputException($"modality {modality} is already attached to run {RunId}");
        var grain = ModalityGrain(modality);
        if (!string.IsNullOrWhiteSpace(siloRole)) await MoveToRole(grain, modality, siloRole.Trim(), clock);
        var memberSetup = SetupFor(s, modality) with { DataDirectory = dataDirectory ?? dataDirectories.GetValueOrDefault(modality) ?? s.DataDirectory };
        // A modality that was a member before comes back with its newest snapshot (taken when it was detached or at a checkpoint).
        var restored = await grain.Restore(memberSetup, null);
        // Id alignment: refused (UserInputException) when it shares no sample with the run, or is complete and of another size.
        string? outside = protocol!.Samples.Join(modality, new ShardKeys(restored.Shard.TrainCount, restored.Shard.TrainKeys));
        if (dataDirectory is not null) dataDirectories[modality] = dataDirectory;
        grains[modality] = grain;
        memberSilos[modality] = restored.Shard.Silo;
        dropped.Remove(modality);
        pendingDetach.Remove(modality);
        pendingAttach.Add(modality);
        if (restored.Step is { } from) Record("restored", modality, $"from its checkpoint at step {from}");
        if (outside is not null) Record("attached", modality, outside);
        await PersistRequests();
        return await Status();
    }

    /// <summary>
    /// Makes <paramref name="grain"/> active on a silo with <paramref name="role"/>: the role rides in the request
    /// context to the placement director, which honours it when the call activates the grain; a grain active on
    /// another silo is released first (its snapshot is in shared storage, so it restores the same on the new silo).
    /// </summary>
    static async Task MoveToRole(IModalityGrain grain, int modality, string role, TimeProvider clock)
    {
        try
        {
            var deadline = clock.GetUtcNow().AddSeconds(60);
            string current;
            // Set before every call: the request context does not survive the response of the previous one.
            while ((current = await WithRole(grain.SiloRole)) != role)
            {
                if (clock.GetUtcNow() > deadline)
                    throw new TimeoutException($"modality {modality} stays on silo '{current}' instead of moving to '{role}'");
                await WithRole(async () => { await grain.Migrate(); return true; });
                await Task.Delay(TimeSpan.FromMilliseconds(200), clock);   // the migration runs once the grain is idle
            }
        }
        catch (OrleansException e) when (e.Message.Contains("MrVae:Silo:"))
        {
            throw new UserInputException(e.Message);   // from the placement director: no such silo; a user error, not a fault
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
            throw new UserInputException($"modality {modality} is not attached to run {RunId} (members: {string.Join(",", members)})");
        if (members.Length - pendingDetach.Count <= 1 && pendingAttach.Count == 0)
            throw new UserInputException($"modality {modality} is the run's last member: stop the run instead");
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

    RunSetup RequireRunning() => state == RunState.Running && setup is not null && protocol is not null
        ? setup
        : throw new UserInputException(state == RunState.Created && !record.RecordExists
            ? $"unknown run {RunId}: it was never started on this cluster (check the run id)"
            : $"run {RunId} is not running (state {state}{(state == RunState.Running ? ", still resuming" : "")})");

    async Task ApplyMembershipChanges()
    {
        if (pendingAttach.Count == 0 && pendingDetach.Count == 0) return;
        await SettlePendingUpdates();   // a leaving member saves its weights with its last update
        // A detached member saves its weights first, so attaching it again continues where it left off.
        var leaving = pendingDetach.ToArray();
        var (_, failures) = await CallMembers(leaving, "detach checkpoint", async (_, g) => { await g.SaveCheckpoint(step, committedStep); return true; });
        foreach (var (j, reason) in failures) LogDetachSaveFailed(RunId, j, reason);
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

    /// <summary>Now and then (in the background) asks dropped members to rejoin; those that answer join at the next step boundary.</summary>
    void ProbeDroppedMembers()
    {
        if (dropped.Count == 0) return;
        rejoinProbe?.TryStart(() => Probe(dropped.Keys.ToArray()));

        async Task Probe(int[] candidates)
        {
            var (back, _) = await CallMembers(candidates, "rejoin", (j, g) => g.Restore(SetupFor(setup!, j), null));
            foreach (var (j, r) in back)
            {
                if (state != RunState.Running || !dropped.ContainsKey(j)) continue;
                try { protocol!.Samples.Join(j, new ShardKeys(r.Shard.TrainCount, r.Shard.TrainKeys)); }
                catch (UserInputException) { continue; }   // its shard is not the run's data (any more): it stays dropped
                dropped.Remove(j);
                memberSilos[j] = r.Shard.Silo;
                pendingAttach.Add(j);
                Record("rejoined", j, $"on {r.Shard.Silo}, {(r.Step is { } s ? $"from its checkpoint at step {s}" : "with fresh weights (it had no checkpoint)")}");
            }
        }
    }
}

/// <summary>
/// When the coordinator asks its dropped members to rejoin: at most one probe in flight, and a new one only once
/// <paramref name="every"/> has passed on <paramref name="clock"/> since the last began (the first one at once).
/// </summary>
public sealed class RejoinProbe(TimeProvider clock, TimeSpan every)
{
    DateTimeOffset? last;
    Task? inFlight;

    /// <summary>Starts <paramref name="probe"/> if one is due and none is in flight; says whether it did.</summary>
    public bool TryStart(Func<Task> probe)
    {
        if (inFlight is { IsCompleted: false }) return false;
        var now = clock.GetUtcNow();
        if (last is { } l && now - l < every) return false;
        last = now;
        inFlight = probe();
        return true;
    }
}
