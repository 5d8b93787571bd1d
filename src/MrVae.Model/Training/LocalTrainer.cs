using System.Diagnostics;
using System.Text.Json;
using MrVae.Model.Objectives;
using TorchSharp;
using static TorchSharp.torch;
using MrVae.Data;

namespace MrVae.Model.Training;

public sealed record TrainOptions
{
    public int BatchSize { get; init; } = 256;
    /// <summary>Total optimiser steps; null: <see cref="Epochs"/> full epochs.</summary>
    public long? Steps { get; init; }
    public int Epochs { get; init; } = 1;
    public double LearningRate { get; init; } = 5e-4;
    public long Seed { get; init; }
    public required string RunDirectory { get; init; }
    /// <summary>Continue from RUNDIR/checkpoints/last instead of starting fresh.</summary>
    public bool Resume { get; init; }
    /// <summary>Evaluate the test loss (and checkpoint) every this many steps; null: at the end of every epoch.</summary>
    public long? EvaluateEvery { get; init; }
    /// <summary>At most this many test samples for the test loss (null: all).</summary>
    public int? TestSamples { get; init; }
    public string Device { get; init; } = "cpu";
    /// <summary>The training data's fingerprint, recorded in config.json so evaluation can tell other data (null: not recorded).</summary>
    public MrVae.Data.DatasetFingerprint? Data { get; init; }
    /// <summary>At a step whose loss or gradients are NaN or infinite: stop (default) or skip the step.</summary>
    public NonFiniteAction OnNonFinite { get; init; } = NonFiniteAction.Stop;
}

/// <summary>One step's numbers, as written to metrics.jsonl.</summary>
public sealed record StepReport(long Step, int Epoch, long TotalSteps, IReadOnlyDictionary<string, double> Terms, double StepMilliseconds);

public sealed record TrainResult(string RunDirectory, long Steps, double FinalLoss, double? BestTestLoss, long? BestStep, double MedianStepMilliseconds);

/// <summary>
/// The single-process reference trainer: every modality's encoder and decoder and the coordinator's objective in
/// one process, one autograd graph and one Adam (elementwise, so identical to one Adam per party). The
/// distributed trainer must reproduce its metrics and parameters step for step.
/// </summary>
public sealed class LocalTrainer : IDisposable
{
    public const string MetricsFile = "metrics.jsonl";
    public const string TestMetricsFile = "test.jsonl";
    public const string ConfigFile = "config.json";
    /// <summary>Every event of a run (resume, a skipped or diverged step; for grain runs also drop, rejoin, attach, detach, failover).</summary>
    public const string EventsFile = "events.jsonl";

    readonly ModelConfig config;
    readonly TrainOptions options;
    readonly MultimodalDataset train;
    readonly MultimodalDataset? test;
    readonly Device device;
    readonly TrainingSchedule schedule;
    readonly TorchSharp.Modules.Adam optimizer;
    readonly Generator stepGenerator;
    double? bestTestLoss;
    long? bestStep;
    int skippedInARow;
    readonly int[] members;

    public MultimodalVae Model { get; }
    public long Step { get; private set; }
    public long TotalSteps { get; }
    public string CheckpointsDirectory => Path.Combine(options.RunDirectory, "checkpoints");

    public LocalTrainer(ModelConfig config, TrainOptions options, MultimodalDataset train, MultimodalDataset? test)
    {
        if (train.Modalities.Length != config.Modalities)
            throw new UserInputException($"the model has {config.Modalities} modalities but the data has {train.Modalities.Length}");
        this.config = config; this.options = options; this.train = train; this.test = test;
        device = new Device(options.Device);
        schedule = new TrainingSchedule(options.Seed, train.Count, options.BatchSize);
        members = Enumerable.Range(0, config.Modalities).Where(j => train.Modalities[j] is not null).ToArray();
        TotalSteps = options.Steps ?? options.Epochs * schedule.StepsPerEpoch;
        Model = new MultimodalVae(config, options.Seed);
        Model.to(device);
        optimizer = optim.Adam(Model.parameters(), lr: options.LearningRate);
        stepGenerator = Seeds.Generator(options.Seed, Seeds.CoordinatorStepsParty);
        Directory.CreateDirectory(options.RunDirectory);
        if (options.Resume)
        {
            LoadCheckpoint(Path.Combine(CheckpointsDirectory, "last"));
            // metrics.jsonl is append-only: the steps from here on follow this line, after any trained past the checkpoint.
            AppendEvent(new RunEventLine(Step, "resumed", $"from checkpoint {Path.Combine(CheckpointsDirectory, "last")} at step {Step}"));
        }
        else
        {
            File.WriteAllText(Path.Combine(options.RunDirectory, ConfigFile), JsonSerializer.Serialize(new { model = config, train = options with { } }, CheckpointDirectory.Json));
            File.Delete(Path.Combine(options.RunDirectory, MetricsFile));
            File.Delete(Path.Combine(options.RunDirectory, TestMetricsFile));
            File.Delete(Path.Combine(options.RunDirectory, EventsFile));
        }
    }

    public StepContext ContextFor(long step) => StepContext.ForTraining(config, step, stepGenerator);

    /// <summary>Runs one optimiser step and returns its report (also appended to metrics.jsonl).</summary>
    public StepReport RunStep() => Runtime.NativeCallGuard.Run(RunStepNow);

    StepReport RunStepNow()
    {
        var watch = Stopwatch.StartNew();
        Dictionary<string, double> terms;
        bool skipped = false;
        using (var scope = NewDisposeScope())
        {
            Model.train();
            // The batch over the union of the shards' samples: each modality gives only the samples it holds.
            var plan = train.Samples.Plan(schedule.BatchIds(Step), members, config.Modalities);
            var x = train.Modalities.Select((m, j) => m?.Batch(plan.KeysOf(j), device: device)).ToArray();
            var context = ContextFor(Step);
            optimizer.zero_grad();
            using var loss = Model.Loss(x, plan, context);
            terms = loss.Terms();
            terms["beta"] = config.Beta * context.BetaScale;
            var bad = NonFinite.Term(terms);
            if (bad is null)
            {
                loss.Total.backward();
                bad = NonFinite.Gradient(GradientGroups());
            }
            if (bad is { } b) skipped = OnNonFinite(b.Item1, b.Item2);
            else optimizer.step();
        }
        watch.Stop();
        var report = new StepReport(Step, schedule.EpochOf(Step), TotalSteps, terms, watch.Elapsed.TotalMilliseconds);
        if (!skipped) { AppendJsonLine(MetricsFile, MetricsLine(report)); skippedInARow = 0; }
        Step++;
        return report;
    }

    /// <summary>Each modality's gradients and the coordinator's, named as a non-finite report says them.</summary>
    List<(string, IReadOnlyList<Tensor>)> GradientGroups()
    {
        var groups = new List<(string, IReadOnlyList<Tensor>)>();
        for (int j = 0; j < Model.ModalityNets.Length; j++)
            groups.Add(($"modality {j}'s gradient", Model.ModalityNets[j].parameters().Select(p => p.grad).OfType<Tensor>().ToList()));
        groups.Add(("the coordinator's gradient", Model.Coordinator.parameters().Select(p => p.grad).OfType<Tensor>().ToList()));
        return groups;
    }

    /// <summary>
    /// A non-finite term or gradient at this step: records it, then skips the step (returns true) or, by default,
    /// throws <see cref="NonFiniteException"/>; the checkpoints on disk are the last good ones and stay as they are.
    /// </summary>
    bool OnNonFinite(string where, double value)
    {
        bool skip = options.OnNonFinite == NonFiniteAction.Skip && ++skippedInARow <= NonFinite.MaxSkippedInARow;
        string cause = $"{where} is {NonFinite.Describe(value)}";
        AppendEvent(new RunEventLine(Step, skip ? "skipped" : "diverged", cause));
        if (skip) return true;
        string last = Path.Combine(CheckpointsDirectory, "last");
        string kept = File.Exists(Path.Combine(last, CheckpointDirectory.StateFile))
            ? $"The last good checkpoint is kept: {last} (step {CheckpointDirectory.Read(last).State.Step})."
            : "There is no checkpoint yet.";
        string because = options.OnNonFinite == NonFiniteAction.Skip ? $"{NonFinite.MaxSkippedInARow} steps in a row were skipped. " : "";
        throw new NonFiniteException(Step, where, value, because + NonFinite.Advice(options.LearningRate, options.OnNonFinite, kept));
    }

    /// <summary>An event, in events.jsonl and as an "event" line among the steps of metrics.jsonl.</summary>
    void AppendEvent(RunEventLine e)
    {
        var line = e.ToJson();
        AppendJsonLine(EventsFile, line);
        AppendJsonLine(MetricsFile, line);
    }

    public static Dictionary<string, object> MetricsLine(StepReport r)
    {
        var line = new Dictionary<string, object> { ["step"] = r.Step, ["epoch"] = r.Epoch };
        foreach (var (k, v) in r.Terms) line[k] = v;
        line["step_ms"] = Math.Round(r.StepMilliseconds, 3);
        return line;
    }

    /// <summary>Mean test loss (evaluation mode: argmax sizes, hard sorts, no subset view) with a fixed generator.</summary>
    public double TestLoss() => Runtime.NativeCallGuard.Run(TestLossNow);

    double TestLossNow()
    {
        if (test is null) throw new InvalidOperationException("no test split was given");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        Model.eval();
        int count = Math.Min(test.Count, options.TestSamples ?? int.MaxValue);
        var generator = Seeds.Generator(options.Seed, "evaluation");
        double sum = 0;
        for (int start = 0; start < count; start += options.BatchSize)
        {
            var ids = Enumerable.Range(start, Math.Min(options.BatchSize, count - start)).Select(i => (long)i).ToArray();
            var x = test.Modalities.Select(m => m?.Batch(ids, device: device)).ToArray();
            var available = MultimodalVae.AllAvailable(test.Present, ids.Length, device: device);
            using var loss = Model.Loss(x, available, StepContext.ForEvaluation(generator));
            sum += loss.Total.ToDouble() * ids.Length;
        }
        return sum / count;
    }

    public TrainResult Run(Action<StepReport>? onStep = null, CancellationToken cancel = default)
    {
        var stepTimes = new List<double>();
        double lastLoss = double.NaN;
        long evaluateEvery = options.EvaluateEvery ?? schedule.StepsPerEpoch;
        // A checkpoint at step 0 too: a run that diverges early still has a good one to resume or inspect.
        if (Step == 0 && !File.Exists(Path.Combine(CheckpointsDirectory, "last", CheckpointDirectory.StateFile))) SaveCheckpoint("last", null);
        while (Step < TotalSteps && !cancel.IsCancellationRequested)
        {
            var report = RunStep();
            stepTimes.Add(report.StepMilliseconds);
            if (double.IsFinite(report.Terms["loss"])) lastLoss = report.Terms["loss"];
            onStep?.Invoke(report);
            if (Step % evaluateEvery == 0 || Step == TotalSteps) EvaluateAndCheckpoint();
        }
        if (cancel.IsCancellationRequested) EvaluateAndCheckpoint();
        stepTimes.Sort();
        double median = stepTimes.Count == 0 ? 0 : stepTimes[stepTimes.Count / 2];
        return new TrainResult(options.RunDirectory, Step, lastLoss, bestTestLoss, bestStep, median);
    }

    /// <summary>Test loss, then checkpoints: always "last", and "best" when the test loss improved (the paper's model selection).</summary>
    public void EvaluateAndCheckpoint()
    {
        double? testLoss = test is null ? null : TestLoss();
        if (testLoss is { } bad && !double.IsFinite(bad))
        {
            // Weights that give a non-finite test loss are no good checkpoint: keep the last one.
            AppendEvent(new RunEventLine(Step, "diverged", $"the test loss is {NonFinite.Describe(bad)}"));
            throw new NonFiniteException(Step, "the test loss", bad, NonFinite.Advice(options.LearningRate, options.OnNonFinite,
                $"The last good checkpoint is kept: {Path.Combine(CheckpointsDirectory, "last")}."));
        }
        if (testLoss is { } t)
        {
            AppendJsonLine(TestMetricsFile, new Dictionary<string, object> { ["step"] = Step, ["test_loss"] = t });
            if (bestTestLoss is null || t < bestTestLoss) { bestTestLoss = t; bestStep = Step; SaveCheckpoint("best", t); }
        }
        SaveCheckpoint("last", testLoss);
    }

    public void SaveCheckpoint(string name, double? testLoss)
    {
        var state = new CheckpointState
        {
            Step = Step, TestLoss = testLoss, BestTestLoss = bestTestLoss, BestStep = bestStep, Model = config,
            GeneratorState = Convert.ToBase64String(stepGenerator.get_state().data<byte>().ToArray()),
        };
        CheckpointDirectory.WriteAtomically(Path.Combine(CheckpointsDirectory, name), state, dir =>
        {
            Model.save(Path.Combine(dir, "model.bin"));
            optimizer.save_state_dict(Path.Combine(dir, "optimizer.bin"));
        });
    }

    void LoadCheckpoint(string directory)
    {
        var (dir, state) = CheckpointDirectory.Read(directory);
        if (state.Model != config)
            throw new CheckpointException($"checkpoint {dir} was trained with a different model configuration ({string.Join(", ", state.Model.SettingsDifferentFrom(config))}); "
                + "resume with the flags or --set NAME=VALUE that give those settings (a default may have changed since), or start a new run directory");
        try
        {
            Model.load(Path.Combine(dir, "model.bin"));
            optimizer.load_state_dict(Path.Combine(dir, "optimizer.bin"));
            // The optimiser's state carries the learning rate it was saved with; --lr says the one to go on with
            // (a lower one after a divergence).
            foreach (var group in optimizer.ParamGroups) group.LearningRate = options.LearningRate;
        }
        catch (Exception e) when (e is not CheckpointException)
        {
            throw new CheckpointException($"checkpoint {dir} could not be read ({e.Message}); it is damaged: delete it or resume from another run", e);
        }
        using var generatorState = tensor(Convert.FromBase64String(state.GeneratorState), dtype: ScalarType.Byte);
        stepGenerator.set_state(generatorState);
        Step = state.Step; bestTestLoss = state.BestTestLoss; bestStep = state.BestStep;
    }

    void AppendJsonLine(string file, object value)
        => File.AppendAllText(Path.Combine(options.RunDirectory, file), JsonSerializer.Serialize(value) + "\n");

    public void Dispose()
    {
        optimizer.Dispose();
        Model.Dispose();
        stepGenerator.Dispose();
    }
}

/// <summary>One line of events.jsonl (and an "event" line of metrics.jsonl): the step it happened at, what, and why.</summary>
public sealed record RunEventLine(long Step, string Event, string Cause, int? Modality = null, DateTime? Utc = null)
{
    public Dictionary<string, object> ToJson()
    {
        var line = new Dictionary<string, object> { ["step"] = Step, ["event"] = Event };
        if (Modality is { } m) line["modality"] = m;
        line["cause"] = Cause;
        line["utc"] = (Utc ?? DateTime.UtcNow).ToString("O");
        return line;
    }
}
