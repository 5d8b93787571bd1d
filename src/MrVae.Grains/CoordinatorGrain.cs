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
/// One training run. Owns the coordinator's objective (for mrVAE the subset-level size and selection networks)
/// and its Adam, and drives the split-learning step over the modality grains:
///   1. Encode on every member (parallel) → μ_j, log σ²_j
///   2. objective forward on leaf copies of them → decoder inputs z̃_j and the KL terms
///   3. Decode on every member (parallel): −log p(x_j | z̃_j), decoder backward, ∂L/∂z̃_j back
///   4. backward through the objective with ∂L/∂z̃_j injected → ∂L/∂μ_j, ∂L/∂log σ²_j
///   5. ApplyEncoderGradients on every member (encoder backward + optimiser step) and the coordinator's own step:
///      the barrier, no party starts step t+1 before all have stepped t.
/// The math and random streams are those of <see cref="LocalTrainer"/>, which this must reproduce.
/// Reentrant so that Status and Metrics answer while the loop awaits its members.
/// </summary>
[Reentrant]
public sealed class CoordinatorGrain(IOptions<SiloSettings> settings, ILogger<CoordinatorGrain> logger, ComputeGate compute) : Grain, ICoordinatorGrain
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
    int testCount;
    long step, totalSteps;
    RunState state = RunState.Created;
    string? error;
    readonly List<StepMetrics> metrics = new();
    readonly List<TestMetrics> testMetrics = new();

    public async Task<RunStatus> Start(RunSetup s)
    {
        if (state == RunState.Running) throw new InvalidOperationException($"run {this.GetPrimaryKeyString()} is already running");
        var cfg = ModelConfig.FromJson(s.ModelConfigJson);
        if (s.Modalities.Length == 0) throw new ArgumentException("a run needs at least one modality");
        foreach (int j in s.Modalities)
            if (j < 0 || j >= cfg.Modalities) throw new ArgumentException($"unknown modality {j}: the model has modalities 0..{cfg.Modalities - 1}");

        string runId = this.GetPrimaryKeyString();
        grains = s.Modalities.ToDictionary(j => j, j => GrainFactory.GetGrain<IModalityGrain>(ModalityKey.For(runId, j)));
        var shards = await Task.WhenAll(s.Modalities.Select(j =>
            grains[j].Configure(new ModalitySetup(runId, j, s.DataDirectory, s.ModelConfigJson, s.Seed, s.LearningRate))));
        var trainCounts = shards.Select(x => x.TrainCount).Distinct().ToArray();
        if (trainCounts.Length != 1) throw new ArgumentException($"modality shards disagree on the training size ({string.Join(", ", trainCounts)}): they are not one dataset");
        memberSilos = s.Modalities.Zip(shards).ToDictionary(p => p.First, p => p.Second.Silo);
        testCount = shards.Min(x => x.TestCount);

        objective?.Dispose(); optimizer?.Dispose(); stepGenerator?.Dispose();
        objective = Seeds.Construct(s.Seed, Seeds.CoordinatorParty, () => CoordinatorObjective.Create(cfg));
        objective.to(device);
        // Adam over no parameters (MoPoE, MVAE, MMVAE) is a no-op; keep one so every model runs the same loop.
        optimizer = optim.Adam(objective.parameters(), lr: s.LearningRate);
        stepGenerator = Seeds.Generator(s.Seed, Seeds.CoordinatorStepsParty);
        schedule = new TrainingSchedule(s.Seed, trainCounts[0], s.BatchSize);
        totalSteps = s.Steps ?? s.Epochs * schedule.StepsPerEpoch;
        setup = s; config = cfg; members = s.Modalities.OrderBy(j => j).ToArray();
        step = 0; error = null; metrics.Clear(); testMetrics.Clear();
        state = RunState.Running;
        TrainingTelemetry.MembersAttached.Add(members.Length);
        this.DelayDeactivation(TimeSpan.FromDays(7));
        _ = RunLoop();   // runs on this grain's scheduler; interleaves with Status/Metrics at its awaits
        return await Status();
    }

    async Task RunLoop()
    {
        try
        {
            long evaluateEvery = setup!.EvaluateEvery ?? schedule!.StepsPerEpoch;
            while (step < totalSteps && state == RunState.Running)
            {
                metrics.Add(await RunStep());
                step++;
                if (step % evaluateEvery == 0 || step == totalSteps)
                    testMetrics.Add(new TestMetrics(step, await TestLoss()));
            }
            if (state == RunState.Running) state = RunState.Finished;
        }
        catch (Exception e)
        {
            logger.LogError(e, "run {Run} failed at step {Step}", this.GetPrimaryKeyString(), step);
            error = $"step {step}: {e.Message}";
            state = RunState.Failed;
        }
        finally
        {
            TrainingTelemetry.MembersAttached.Add(-members.Length);
        }
    }

    async Task<StepMetrics> RunStep()
    {
        var watch = Stopwatch.StartNew();
        using var stepSpan = TrainingTelemetry.Source.StartActivity("train step");
        stepSpan?.SetTag(TrainingTelemetry.Run, this.GetPrimaryKeyString());
        stepSpan?.SetTag(TrainingTelemetry.Step, step);
        stepSpan?.SetTag(TrainingTelemetry.Members, string.Join(",", members));
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
        var encoded = await Task.WhenAll(members.Select(j => grains[j].Encode(step, ids, "train", keepGraph: true)));
        Phase("encode", "relation");
        bytes += ids.Length * sizeof(long) * members.Length + encoded.Sum(e => e.Mu.ByteCount + e.LogVar.ByteCount);

        // Forward on the coordinator; the graph (and the leaves standing in for the members' outputs) outlives
        // this synchronous block, so those tensors leave the dispose scope.
        int m = config!.Modalities;
        var mu = new Tensor?[m]; var logVar = new Tensor?[m];
        var present = Enumerable.Range(0, m).Select(j => grains.ContainsKey(j)).ToArray();
        var context = new StepContext
        {
            Generator = stepGenerator!, TauSize = config.Temperature(step, totalSteps), TauSelection = config.Temperature(step, totalSteps),
            Training = true, BetaScale = config.BetaScale(step),
        };
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

        var decoded = await Task.WhenAll(members.Select((j, i) => grains[j].Decode(step, decoderInputs[i], output.ViewWeights, backward: true)));
        Phase("decode", "backward");
        bytes += decoded.Sum(d => d.Gradient!.ByteCount + sizeof(float));

        var terms = new Dictionary<string, double>();
        var (dMu, dLogVar) = await compute.RunCoordinator(() =>
        {
            using var scope = NewDisposeScope();
            // The total in the local trainer's order: coordinator loss, then rec_j by modality.
            var total = output.Loss.detach().clone();
            for (int i = 0; i < members.Length; i++) total = total + tensor(decoded[i].NegativeLogLikelihood, dtype: total.dtype, device: device);
            terms["loss"] = total.ToDouble();
            foreach (var (k, t) in output.Terms) terms[k] = t.ToDouble();
            for (int i = 0; i < members.Length; i++) terms[$"rec_{members[i]}"] = decoded[i].NegativeLogLikelihood;
            terms["tau"] = context.TauSize;
            terms["beta"] = config.Beta * context.BetaScale;

            var roots = new List<Tensor> { output.Loss };
            var grads = new List<Tensor> { ones_like(output.Loss) };
            for (int i = 0; i < members.Length; i++)
            {
                roots.Add(output.DecoderInputs[members[i]]!);
                grads.Add(TensorWire.FromPayload(decoded[i].Gradient!, device));
            }
            autograd.backward(roots, grads);
            var gradients = (members.Select(j => TensorWire.ToPayload(mu[j]!.grad!)).ToArray(), members.Select(j => TensorWire.ToPayload(logVar[j]!.grad!)).ToArray());
            output.Dispose();
            foreach (var t in mu.Concat(logVar)) t?.Dispose();
            return gradients;
        });
        Phase("coordinator_backward", "optimizer");
        bytes += dMu.Sum(p => p.ByteCount) + dLogVar.Sum(p => p.ByteCount);

        // The barrier: every member and the coordinator step before step + 1 begins.
        await Task.WhenAll(members.Select((j, i) => grains[j].ApplyEncoderGradients(step, dMu[i], dLogVar[i])));
        await compute.RunCoordinator(() => { optimizer!.step(); return true; });
        Phase("encoder_backward_and_step", null);
        watch.Stop();
        stepSpan?.SetTag(TrainingTelemetry.Bytes, bytes);
        stepSpan?.SetTag("mrvae.loss", terms["loss"]);
        TrainingTelemetry.StepMilliseconds.Record(watch.Elapsed.TotalMilliseconds);
        TrainingTelemetry.BytesMoved.Add(bytes);
        foreach (var key in new[] { "loss", "kl", "kl_private", "kl_shared", "kl_size", "kl_selection" })
            if (terms.TryGetValue(key, out double value)) TrainingTelemetry.Loss.Record(value, new KeyValuePair<string, object?>(TrainingTelemetry.Term, key));
        return new StepMetrics(step, schedule.EpochOf(step), terms, watch.Elapsed.TotalMilliseconds, bytes, phases);
    }

    /// <summary>Mean test loss through the grains, as <see cref="LocalTrainer.TestLoss"/> computes it.</summary>
    async Task<double> TestLoss()
    {
        int count = Math.Min(testCount, setup!.TestSamples ?? int.MaxValue);
        using var generator = Seeds.Generator(setup.Seed, "evaluation");
        int m = config!.Modalities;
        var present = Enumerable.Range(0, m).Select(j => grains.ContainsKey(j)).ToArray();
        double sum = 0;
        for (int start = 0; start < count; start += setup.BatchSize)
        {
            var ids = Enumerable.Range(start, Math.Min(setup.BatchSize, count - start)).Select(i => (long)i).ToArray();
            var encoded = await Task.WhenAll(members.Select(j => grains[j].Encode(-1 - start, ids, "test", keepGraph: false)));
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
            var decoded = await Task.WhenAll(members.Select((j, i) => grains[j].Decode(-1 - start, inputs[i], output.ViewWeights, backward: false)));
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
        metrics.Count > 0 ? metrics[^1].Terms["loss"] : null, error, new Dictionary<int, string>(memberSilos)));

    public Task<StepMetrics[]> Metrics(long fromStep) => Task.FromResult(metrics.Where(x => x.Step >= fromStep).ToArray());

    public Task<TestMetrics[]> TestMetrics() => Task.FromResult(testMetrics.ToArray());

    public Task<TensorPayload[]> Parameters()
        => Task.FromResult(objective?.parameters().Select(p => TensorWire.ToPayload(p)).ToArray() ?? []);

    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        state = state == RunState.Running ? RunState.Stopped : state;
        objective?.Dispose(); optimizer?.Dispose(); stepGenerator?.Dispose();
        return Task.CompletedTask;
    }
}
