using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace MrVae.Grains;

/// <summary>
/// Traces and metrics of training. One span per step ("train step") with a child per protocol phase (encode,
/// relation, decode, backward, optimizer), and on the modality grains a span per call (encode / decode / encoder
/// backward) under the phase that made it, carried across silos by Orleans' activity propagation. Evaluations,
/// checkpoints and membership events are roots of their own too, tagged with their run; the processes' sampler
/// (TelemetryHosting.RunSpansOnly in MrVae.Silo) keeps every other root
/// (the client's polling, Orleans' housekeeping) out of the traces.
/// </summary>
public static class TrainingTelemetry
{
    public const string Name = "MrVae.Training";
    public static readonly ActivitySource Source = new(Name);
    public static readonly Meter Meter = new(Name);

    public static readonly Histogram<double> StepMilliseconds = Meter.CreateHistogram<double>("mrvae.step.duration", "ms", "wall time of one training step");
    public static readonly Counter<long> BytesMoved = Meter.CreateCounter<long>("mrvae.step.bytes", "By", "tensor bytes exchanged between coordinator and modality grains");
    public static readonly Counter<long> Steps = Meter.CreateCounter<long>("mrvae.steps", "{step}", "training steps done (tag mrvae.run)");
    /// <summary>The latest step's loss terms in nats (negative log-likelihoods and KL terms), one series per term.</summary>
    public static readonly Gauge<double> Loss = Meter.CreateGauge<double>("mrvae.loss", "nat", "training loss terms of the latest step (tags term, mrvae.run)");
    public static readonly UpDownCounter<int> MembersAttached = Meter.CreateUpDownCounter<int>("mrvae.members", "{modality}", "modality grains attached to running runs");

    // Attribute names. Bytes: tensor and id bytes moved (on the step: all of it; on a modality call: that call's
    // request and response). SubsetSize: how many modalities this step trains on (the members present).
    public const string Run = "mrvae.run", Step = "mrvae.step", Modality = "mrvae.modality", Members = "mrvae.members",
        SubsetSize = "mrvae.subset_size", Silo = "mrvae.silo", Bytes = "mrvae.bytes", BatchSize = "mrvae.batch_size", Term = "term";

    /// <summary>
    /// Starts a step's span as the root of its own trace (a run of thousands of steps would otherwise be one trace
    /// under the call that started it), linked to that call's context.
    /// </summary>
    public static Activity? StartStep(string run, long step, int[] members)
    {
        var span = StartRoot("train step", run, step);
        span?.SetTag(Members, string.Join(",", members));
        span?.SetTag(SubsetSize, members.Length);
        return span;
    }

    /// <summary>
    /// A span of the run's own (a step, or work between steps) as the root of its own trace, linked to the current
    /// context. Call it in an async method (or restore Activity.Current): it clears the current activity.
    /// </summary>
    public static Activity? StartRoot(string name, string run, long step)
    {
        var started = Activity.Current?.Context;
        Activity.Current = null;
        // The run's tag is given at creation, where the sampler sees it.
        return Source.StartActivity(name, ActivityKind.Internal, parentContext: default,
            tags: [new(Run, run), new(Step, step)], links: started is { } context ? [new ActivityLink(context)] : null);
    }

    /// <summary>A short root span for something that happened to a run (a member attached, dropped, ...), leaving the current activity as it was.</summary>
    public static void Event(string name, string run, long step, int modality, string message)
    {
        var current = Activity.Current;
        try
        {
            using var span = StartRoot(name, run, step);
            if (modality >= 0) span?.SetTag(Modality, modality);
            span?.SetTag("mrvae.event", message);
        }
        finally { Activity.Current = current; }
    }

    /// <summary>Every ActivitySource name a MrVae process should listen to: its own and Orleans' grain-call sources.</summary>
    public static readonly string[] Sources = [Name, "Microsoft.Orleans.Runtime", "Microsoft.Orleans.Application"];
}
