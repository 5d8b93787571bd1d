using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace MrVae.Grains;

/// <summary>
/// Traces and metrics of training. One span per step ("train step") with a child per protocol phase (encode,
/// relation, decode, backward, optimizer), and on the modality grains a span per call (encode / decode / encoder
/// backward) under the phase that made it, carried across silos by Orleans' activity propagation.
/// </summary>
public static class TrainingTelemetry
{
    public const string Name = "MrVae.Training";
    public static readonly ActivitySource Source = new(Name);
    public static readonly Meter Meter = new(Name);

    public static readonly Histogram<double> StepMilliseconds = Meter.CreateHistogram<double>("mrvae.step.duration", "ms", "wall time of one training step");
    public static readonly Counter<long> BytesMoved = Meter.CreateCounter<long>("mrvae.step.bytes", "By", "tensor bytes exchanged between coordinator and modality grains");
    public static readonly Histogram<double> Loss = Meter.CreateHistogram<double>("mrvae.loss", null, "training loss terms per step (tag: term)");
    public static readonly UpDownCounter<int> MembersAttached = Meter.CreateUpDownCounter<int>("mrvae.members", null, "modality grains attached to running runs");

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

    /// <summary>A span of the run's own (a step, or work between steps) as the root of its own trace, linked to the current context.</summary>
    public static Activity? StartRoot(string name, string run, long step)
    {
        var started = Activity.Current?.Context;
        Activity.Current = null;
        var span = Source.StartActivity(name, ActivityKind.Internal, parentContext: default,
            links: started is { } context ? [new ActivityLink(context)] : null);
        span?.SetTag(Run, run);
        span?.SetTag(Step, step);
        return span;
    }

    /// <summary>Every ActivitySource name a MrVae process should listen to: its own and Orleans' grain-call sources.</summary>
    public static readonly string[] Sources = [Name, "Microsoft.Orleans.Runtime", "Microsoft.Orleans.Application"];
}
