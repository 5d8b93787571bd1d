using System.Diagnostics;
using MrVae.Data;
using MrVae.Model;
using MrVae.Model.Objectives;
using MrVae.Model.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Grains;

/// <summary>One member of a step as the protocol sees it: the calls a step makes on a modality's party.</summary>
public interface IStepMember
{
    Task<EncodeResult> Encode(long step, long[] ids, string split, bool keepGraph, EncoderGradients? previous = null);
    Task<DecodeResult> Decode(long step, TensorPayload decoderInput, double[] viewWeights, bool backward, int batch = 0);
    Task ApplyEncoderGradients(long step, TensorPayload dMu, TensorPayload dLogVar);
}

/// <summary>
/// The coordinator's side of the split-learning step, with no Orleans in it (the coordinator grain hosts it):
///   1. Encode on every member (parallel) → μ_j, log σ²_j
///   2. objective forward on leaf copies of them → decoder inputs z̃_j and the KL terms
///   3. Decode on every member (parallel): −log p(x_j | z̃_j), decoder backward, ∂L/∂z̃_j back
///   4. backward through the objective with ∂L/∂z̃_j injected → ∂L/∂μ_j, ∂L/∂log σ²_j
///   5. the coordinator's own optimiser step. ∂L/∂μ_j, ∂L/∂log σ²_j ride on step t+1's Encode, where each member
///      runs its encoder backward and optimiser step for t before it encodes: the same updates in the same order
///      as a barrier after step t, one round trip fewer per step. Before anything else reads or saves the members'
///      weights (evaluation, checkpoint, membership change, the run's end) they are applied by <see cref="ApplyPendingGradients"/>.
/// Owns the coordinator's objective, its Adam, its random stream and the schedule; the math and random streams are
/// those of <see cref="LocalTrainer"/>, which this must reproduce. Its libtorch work runs on the silo's coordinator
/// lane (<see cref="ComputeGate"/>). Not thread-safe: one caller (the grain's turn) at a time.
/// </summary>
public sealed class StepProtocol : IDisposable
{
    readonly ComputeGate compute;
    readonly Device device;
    readonly RunSetup setup;
    readonly CoordinatorObjective objective;
    readonly TorchSharp.Modules.Adam optimizer;
    readonly Generator stepGenerator;
    // The last step's encoder gradients, not yet applied by its members: sent with the next encode (see the summary).
    PendingEncoderGradients? pendingGradients;
    // The last step's own parameter update (Adam), queued on the coordinator's lane behind the step: it runs while
    // the members encode the next step, and any later work on the lane (the next forward, a checkpoint, an
    // evaluation) comes after it. Its result is its time in ms.
    Task<double>? parameterUpdate;

    public ModelConfig Config { get; }
    public TrainingSchedule Schedule { get; }
    public long TotalSteps { get; }
    /// <summary>The run's training samples and which member holds which: only the coordinator knows it.</summary>
    public SampleUniverse Samples { get; }

    StepProtocol(ComputeGate compute, Device device, RunSetup setup, ModelConfig config, SampleUniverse samples,
        CoordinatorObjective objective, TorchSharp.Modules.Adam optimizer, Generator stepGenerator)
    {
        this.compute = compute; this.device = device; this.setup = setup; Config = config; Samples = samples;
        this.objective = objective; this.optimizer = optimizer; this.stepGenerator = stepGenerator;
        Schedule = new TrainingSchedule(setup.Seed, samples.Count, setup.BatchSize);
        TotalSteps = setup.Steps ?? setup.Epochs * Schedule.StepsPerEpoch;
    }

    /// <summary>Builds the coordinator's objective, optimiser, random stream and schedule exactly as a fresh run does.</summary>
    public static async Task<StepProtocol> Create(ComputeGate compute, Device device, RunSetup setup, ModelConfig config, SampleUniverse samples)
    {
        // libtorch work, so on the compute lane (NativeCallGuard), not on the caller's thread.
        var (objective, optimizer, generator) = await compute.RunCoordinator(() =>
        {
            var o = Seeds.Construct(setup.Seed, Seeds.CoordinatorParty, () => CoordinatorObjective.Create(config));
            o.to(device);
            // Adam over no parameters (MoPoE, MVAE, MMVAE) is a no-op; keep one so every model runs the same loop.
            return (o, optim.Adam(o.parameters(), lr: setup.LearningRate), Seeds.Generator(setup.Seed, Seeds.CoordinatorStepsParty));
        });
        return new StepProtocol(compute, device, setup, config, samples, objective, optimizer, generator);
    }

    /// <summary>Whether work may still be queued on the coordinator's lane with these networks (see <see cref="Dispose"/>).</summary>
    public Task? ParameterUpdate => parameterUpdate;

    /// <summary>The coordinator's networks, optimiser and random stream as checkpoint bytes (after the pending update).</summary>
    public async Task<(byte[] Objective, byte[] Optimizer, byte[] Generator)> Save()
    {
        await SettleParameterUpdate();
        return await compute.RunCoordinator(() => (Checkpointing.Save(objective), Checkpointing.Save(optimizer), Checkpointing.Save(stepGenerator)));
    }

    /// <summary>Loads what <see cref="Save"/> wrote.</summary>
    public Task Load(byte[] objectiveBytes, byte[] optimizerBytes, byte[] generatorBytes) => compute.RunCoordinator(() =>
    {
        Checkpointing.Load(objective, objectiveBytes);
        Checkpointing.Load(optimizer, optimizerBytes);
        Checkpointing.Load(stepGenerator, generatorBytes);
        return true;
    });

    /// <summary>The step random stream's state, for running a step again from the same state after a member failed.</summary>
    public Task<Tensor> RandomState() => compute.RunCoordinator(() => stepGenerator.get_state());

    public Task RestoreRandomState(Tensor state) => compute.RunCoordinator(() => { stepGenerator.set_state(state); return true; });

    public Task<TensorPayload[]> Parameters() => compute.RunCoordinator(() => objective.parameters().Select(p => TensorWire.ToPayload(p)).ToArray());

    /// <summary>
    /// Runs step <paramref name="step"/> on <paramref name="members"/> (ascending; they do not change during it).
    /// Throws <see cref="MembersFailedException"/> when a member fails before the optimiser phase (nothing of the step
    /// is applied then) and <see cref="NonFiniteStep"/> when a loss term or gradient is not finite.
    /// </summary>
    public async Task<StepMetrics> RunStep(string runId, long step, int[] members, MemberCalls calls)
    {
        var watch = Stopwatch.StartNew();
        using var stepSpan = TrainingTelemetry.StartStep(runId, step, members);
        long bytes = 0;
        // The batch over the union of the members' samples; each member gets only the keys it holds, so none learns
        // which samples the others hold.
        var config = Config;
        int m = config.Modalities;
        var plan = Samples.Plan(Schedule.BatchIds(step), members, m);
        if (plan.Size == 0)
            throw new UserInputException($"step {step}: none of its batch's samples is held by the members {string.Join(",", members)} (missing modalities per sample): attach a modality that holds them, or use a larger --batch");
        var memberKeys = new long[m][];
        foreach (int j in members) memberKeys[j] = plan.KeysOf(j);
        stepSpan?.SetTag(TrainingTelemetry.BatchSize, plan.Size);
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
        var encoded = await calls.OnAll(members, "encode", (j, member) => member.Encode(step, memberKeys[j], "train", keepGraph: true, previous?.For(j)));
        for (int i = 0; i < members.Length; i++)
            if (encoded[i].Mu.Shape[0] != memberKeys[members[i]].Length)
                throw new InvalidOperationException($"modality {members[i]} encoded {encoded[i].Mu.Shape[0]} samples where it was asked for {memberKeys[members[i]].Length}");
        // Every member has applied them now (one that failed above was dropped, and loses only that update).
        pendingGradients = null;
        // The last step's own update ran beside that encode; its time is reported with this step.
        phases["ms_coordinator_update"] = await SettleParameterUpdate();
        Phase("encode", "relation");
        bytes += members.Sum(j => memberKeys[j].Length) * sizeof(long) + encoded.Sum(e => e.Mu.ByteCount + e.LogVar.ByteCount)
            + members.Sum(j => previous?.For(j) is { } g ? g.DMu.ByteCount + g.DLogVar.ByteCount : 0);   // the last step's gradients, sent now

        // Forward on the coordinator; the graph (and the leaves standing in for the members' outputs) outlives
        // this synchronous block, so those tensors leave the dispose scope.
        var mu = new Tensor?[m]; var logVar = new Tensor?[m];
        var present = Enumerable.Range(0, m).Select(j => members.Contains(j)).ToArray();
        var context = StepContext.ForTraining(config, step, stepGenerator);
        CoordinatorOutput output = null!;
        var picked = new Tensor?[m];
        var decoderInputs = await compute.RunCoordinator(() =>
        {
            using var scope = NewDisposeScope();
            var spreadMu = new Tensor?[m]; var spreadLogVar = new Tensor?[m];
            for (int i = 0; i < members.Length; i++)
            {
                int j = members[i];
                mu[j] = TensorWire.FromPayload(encoded[i].Mu, device).requires_grad_().MoveToOuterDisposeScope();
                logVar[j] = TensorWire.FromPayload(encoded[i].LogVar, device).requires_grad_().MoveToOuterDisposeScope();
                // Into the batch's rows, zeros where the member lacks the sample (the availability masks them), as MultimodalVae.Loss does.
                spreadMu[j] = plan.Spread(j, mu[j]!); spreadLogVar[j] = plan.Spread(j, logVar[j]!);
            }
            using var available = plan.Available(device: device);
            optimizer.zero_grad();
            output = objective.Forward(spreadMu, spreadLogVar, available, present, context);
            output.Loss.MoveToOuterDisposeScope();
            foreach (var t in output.DecoderInputs) t?.MoveToOuterDisposeScope();
            foreach (var t in output.Terms.Values) t.MoveToOuterDisposeScope();
            // Each member decodes only its own samples: the rows of its decoder input it holds.
            foreach (int j in members) picked[j] = plan.Pick(j, output.DecoderInputs[j]!).MoveToOuterDisposeScope();
            return members.Select(j => TensorWire.ToPayload(picked[j]!)).ToArray();
        });
        Phase("coordinator_forward", "decode");
        bytes += decoderInputs.Sum(p => p.ByteCount);

        var decoded = await calls.OnAll(members, "decode", (j, member) => member.Decode(step, decoderInputs[Array.IndexOf(members, j)], output.ViewWeights, backward: true, plan.Size));
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
                    roots.Add(picked[members[i]]!);
                    grads.Add(TensorWire.FromPayload(decoded[i].Gradient!, device));
                }
                // One backward: the members' gradients land on their leaves, the coordinator's in its parameters' .grad.
                autograd.backward(roots, grads);
                Tensor Gradient(Tensor leaf) => leaf.grad is { } g ? g.detach().clone() : zeros_like(leaf);
                var muGrads = members.Select(j => Gradient(mu[j]!)).ToArray();
                var logVarGrads = members.Select(j => Gradient(logVar[j]!)).ToArray();
                // Each member's gradient as it arrived (∂L/∂z̃) and as it goes back (∂L/∂μ, ∂L/∂log σ²), and the coordinator's own.
                var groups = members.Select((j, i) => ($"modality {j}'s gradient", (IReadOnlyList<Tensor>)[grads[i + 1], muGrads[i], logVarGrads[i]]))
                    .Append(("the coordinator's gradient", objective.parameters().Select(p => p.grad).OfType<Tensor>().ToList())).ToList();
                if ((bad = NonFinite.Gradient(groups)) is not null) return ((TensorPayload[])[], (TensorPayload[])[]);
                return (muGrads.Select(g => TensorWire.ToPayload(g)).ToArray(), logVarGrads.Select(g => TensorWire.ToPayload(g)).ToArray());
            }
            finally
            {
                output.Dispose();
                foreach (var t in mu.Concat(logVar).Concat(picked)) t?.Dispose();
            }
        });
        if (bad is { } b) throw new NonFiniteStep(b.Where, b.Value);
        Phase("coordinator_backward", "optimizer");

        // The members' updates go out with the next encode (or ApplyPendingGradients). The coordinator's own update is
        // queued on its lane now and not awaited: it overlaps the members' next encode (see parameterUpdate).
        pendingGradients = new PendingEncoderGradients(step, members, dMu, dLogVar);
        var updateSpan = phaseSpan;
        phaseSpan = null;
        parameterUpdate = compute.RunCoordinator(() =>
        {
            var clock = Stopwatch.StartNew();
            try
            {
                optimizer.step();
                return clock.Elapsed.TotalMilliseconds;
            }
            finally { updateSpan?.Dispose(); }
        });
        watch.Stop();
        stepSpan?.SetTag(TrainingTelemetry.Bytes, bytes);
        stepSpan?.SetTag("mrvae.loss", terms["loss"]);
        TrainingTelemetry.StepMilliseconds.Record(watch.Elapsed.TotalMilliseconds);
        TrainingTelemetry.BytesMoved.Add(bytes);
        TrainingTelemetry.Steps.Add(1, new KeyValuePair<string, object?>(TrainingTelemetry.Run, runId));
        foreach (var (key, value) in terms)
            if (key == "loss" || key.StartsWith("kl", StringComparison.Ordinal) || key.StartsWith("rec", StringComparison.Ordinal))
                TrainingTelemetry.Loss.Record(value, new(TrainingTelemetry.Term, key), new(TrainingTelemetry.Run, runId));
        return new StepMetrics(step, Schedule.EpochOf(step), terms, watch.Elapsed.TotalMilliseconds, bytes, phases, members);
    }

    /// <summary>
    /// Waits for the last step's own parameter update (<see cref="parameterUpdate"/>) and returns its time in ms (0 if
    /// none is pending). Work queued on the coordinator's lane runs after it anyway; this surfaces its failure.
    /// </summary>
    public async Task<double> SettleParameterUpdate()
    {
        if (parameterUpdate is not { } update) return 0;
        parameterUpdate = null;
        return await update;
    }

    /// <summary>
    /// Has the members apply the last step's encoder gradients now, for what reads or saves their weights before a
    /// next encode would carry them. Returns the members that failed: the caller drops them; the others have stepped,
    /// so the step stands and only the failed members' update is lost.
    /// </summary>
    public async Task<(int Modality, string Reason)[]> ApplyPendingGradients(string runId, int[] members, MemberCalls calls)
    {
        if (pendingGradients is not { } pending) return [];
        using var span = TrainingTelemetry.StartRoot("optimizer", runId, pending.Step);
        var targets = pending.Members.Intersect(members).ToArray();
        var (_, failures) = await calls.Call(targets, "encoder backward", async (j, member) =>
        {
            var g = pending.For(j)!;
            await member.ApplyEncoderGradients(g.Step, g.DMu, g.DLogVar);
            return true;
        });
        pendingGradients = null;
        return failures;
    }

    /// <summary>
    /// Mean test loss over the first <paramref name="testCount"/> test samples (at most RunSetup.TestSamples), through
    /// the members, as <see cref="LocalTrainer.TestLoss"/> computes it. The caller settles the pending updates first.
    /// </summary>
    public async Task<double> TestLoss(int[] members, int testCount, MemberCalls calls)
    {
        int count = Math.Min(testCount, setup.TestSamples ?? int.MaxValue);
        using var generator = Seeds.Generator(setup.Seed, "evaluation");
        int m = Config.Modalities;
        var present = Enumerable.Range(0, m).Select(j => members.Contains(j)).ToArray();
        double sum = 0;
        for (int start = 0; start < count; start += setup.BatchSize)
        {
            var ids = Enumerable.Range(start, Math.Min(setup.BatchSize, count - start)).Select(i => (long)i).ToArray();
            var encoded = await calls.OnAll(members, "test encode", (_, member) => member.Encode(-1 - start, ids, "test", keepGraph: false));
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
                output = objective.Forward(mu, logVar, available, present, StepContext.ForEvaluation(generator));
                output.Loss.MoveToOuterDisposeScope();
                return members.Select(j => TensorWire.ToPayload(output.DecoderInputs[j]!)).ToArray();
            });
            var decoded = await calls.OnAll(members, "test decode", (j, member) => member.Decode(-1 - start, inputs[Array.IndexOf(members, j)], output.ViewWeights, backward: false));
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

    /// <summary>Frees the networks; the caller makes sure no lane work with them is still queued (<see cref="ParameterUpdate"/>).</summary>
    public void Dispose()
    {
        objective.Dispose(); optimizer.Dispose(); stepGenerator.Dispose();
    }

    sealed record PendingEncoderGradients(long Step, int[] Members, TensorPayload[] DMu, TensorPayload[] DLogVar)
    {
        public EncoderGradients? For(int modality)
        {
            int i = Array.IndexOf(Members, modality);
            return i < 0 ? null : new EncoderGradients(Step, DMu[i], DLogVar[i]);
        }
    }
}

/// <summary>
/// Calls members in parallel, each call bounded by the member timeout on <see cref="TimeProvider"/>'s clock, and
/// sorts the answers from the failures once every call has ended.
/// </summary>
public sealed class MemberCalls(Func<int, IStepMember> member, TimeSpan timeout, TimeProvider clock)
{
    public TimeSpan Timeout { get; } = timeout;

    /// <summary>Calls the given modalities in parallel and returns the answers and the failures (timeouts among them).</summary>
    public async Task<(Dictionary<int, T> Results, (int Modality, string Reason)[] Failures)> Call<T>(
        IReadOnlyList<int> modalities, string phase, Func<int, IStepMember, Task<T>> call)
    {
        var tasks = modalities.Select(j => call(j, member(j)).WaitAsync(Timeout, clock)).ToArray();
        // Task.WhenAll ends only when every call has ended, so no call of this phase is still in flight after it.
        try { await Task.WhenAll(tasks); }
        catch { /* sorted out below */ }
        var results = new Dictionary<int, T>();
        var failures = new List<(int, string)>();
        for (int i = 0; i < tasks.Length; i++)
        {
            if (tasks[i].IsCompletedSuccessfully) results[modalities[i]] = tasks[i].Result;
            else failures.Add((modalities[i], tasks[i].Exception?.GetBaseException() is Exception e and not TimeoutException
                ? $"{e.GetType().Name}: {e.Message}" : $"{phase} timed out"));
        }
        return (results, failures.ToArray());
    }

    /// <summary>
    /// Calls every one of <paramref name="modalities"/>; if any fails or times out (its silo gone, say), throws
    /// <see cref="MembersFailedException"/> naming them after all calls have ended. Answers in the modalities' order.
    /// </summary>
    public async Task<T[]> OnAll<T>(int[] modalities, string phase, Func<int, IStepMember, Task<T>> call)
    {
        var (results, failures) = await Call(modalities, phase, call);
        if (failures.Length > 0) throw new MembersFailedException(phase, failures);
        return modalities.Select(j => results[j]).ToArray();
    }
}

/// <summary>The step's loss or gradients are not finite (nothing of it was applied); the loop skips it or fails the run.</summary>
public sealed class NonFiniteStep(string where, double value) : Exception($"{where} is {NonFinite.Describe(value)}")
{
    public string Where { get; } = where;
    public double Value { get; } = value;
}

/// <summary>Members failed or timed out in a phase: the coordinator drops them (and runs the step again without them).</summary>
public sealed class MembersFailedException(string phase, (int Modality, string Reason)[] failures)
    : Exception($"{phase} failed on modalities {string.Join(",", failures.Select(f => f.Modality))}")
{
    public (int Modality, string Reason)[] Failures { get; } = failures;
    public string Phase { get; } = phase;
}
