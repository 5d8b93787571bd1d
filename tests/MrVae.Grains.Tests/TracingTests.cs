using System.Diagnostics;
using MrVae.Data;
using MrVae.Model;
using MrVae.Silo;
using OpenTelemetry;
using OpenTelemetry.Trace;

namespace MrVae.Grains.Tests;

/// <summary>The shape of a training step's trace, captured with OpenTelemetry's in-memory exporter.</summary>
public sealed class TracingTests(TwoSiloCluster fixture) : IClassFixture<TwoSiloCluster>, IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-trace-" + Guid.NewGuid().ToString("N"));
    public void Dispose() { if (Directory.Exists(root)) Directory.Delete(root, recursive: true); }

    [Fact]
    public async Task EveryStepIsOneTraceWithItsPhasesAndEveryModalitysCalls()
    {
        string data = TestDatasets.Extended(Path.Combine(root, "data"), train: 32, test: 8, seed: 1);

        var spans = new List<Activity>();
        string run = "trace-" + Guid.NewGuid().ToString("N")[..8];
        // The processes' sampler: the client's polling (WaitUntilDone asks Status) makes no trace, steps keep theirs whole.
        using (Sdk.CreateTracerProviderBuilder().AddSource(TrainingTelemetry.Sources).SetSampler(TelemetryHosting.RunSpansOnly()).AddInMemoryExporter(spans).Build())
        {
            var config = new ModelConfig { Modalities = 5, LatentDim = 4, EncoderHidden = 16 };
            var coordinator = fixture.Cluster.GrainFactory.GetGrain<ICoordinatorGrain>(run);
            await coordinator.Start(new RunSetup(data, config.ToJson(), 1, 16, 2, 1, 1e-3, 1000, 8, [0, 1, 2, 3, 4]));
            Assert.Equal(RunState.Finished, (await DistributedEqualsLocalTests.WaitUntilDone(coordinator)).State);
        }

        // Every trace is a run's own: steps, evaluations, checkpoints, membership events.
        Assert.All(spans.Where(s => s.ParentSpanId == default), s => Assert.NotNull(s.GetTagItem(TrainingTelemetry.Run)));
        var roots = spans.Where(s => s.ParentSpanId == default && (string?)s.GetTagItem(TrainingTelemetry.Run) == run).Select(s => s.OperationName).ToHashSet();
        Assert.Superset(new HashSet<string> { "train step", "evaluate", "checkpoint", "modality started" }, roots);   // the first members are recorded as started

        var byId = spans.ToDictionary(s => s.SpanId);
        bool Under(Activity s, Activity ancestor)
        {
            for (var p = s; p is not null; p = byId.GetValueOrDefault(p.ParentSpanId))
                if (p.SpanId == ancestor.SpanId) return true;
            return false;
        }

        // The listener is process-wide and other test classes train at the same time: keep this run's spans.
        var steps = spans.Where(s => s.OperationName == "train step" && (string?)s.GetTagItem(TrainingTelemetry.Run) == run).OrderBy(s => (long)s.GetTagItem(TrainingTelemetry.Step)!).ToList();
        Assert.Equal(2, steps.Count);
        // Each step is the root of its own trace.
        Assert.All(steps, s => Assert.Equal(default, s.ParentSpanId));
        Assert.NotEqual(steps[0].TraceId, steps[1].TraceId);
        foreach (var step in steps)
        {
            Assert.Equal(5, step.GetTagItem(TrainingTelemetry.SubsetSize));
            Assert.Equal("0,1,2,3,4", step.GetTagItem(TrainingTelemetry.Members));
            Assert.Equal(16, step.GetTagItem(TrainingTelemetry.BatchSize));
            // The step's bytes are the sum of what its modality calls moved, each measured on the grain's side.
            var stepCalls = spans.Where(s => s.TraceId == step.TraceId && s.OperationName.StartsWith("modality ")).ToList();
            long number = (long)step.GetTagItem(TrainingTelemetry.Step)!;
            Assert.Equal(number == 0 ? 10 : 15, stepCalls.Count);   // encodes and decodes, and from step 1 on the last step's encoder backward
            Assert.Equal((long)step.GetTagItem(TrainingTelemetry.Bytes)!, stepCalls.Sum(c => (long)c.GetTagItem(TrainingTelemetry.Bytes)!));
            // The five protocol phases are direct children of the step, in order.
            var phases = spans.Where(s => s.ParentSpanId == step.SpanId && s.Source.Name == TrainingTelemetry.Name)
                .OrderBy(s => s.StartTimeUtc).Select(s => s.OperationName).ToArray();
            Assert.Equal(new[] { "encode", "relation", "decode", "backward", "optimizer" }, phases);

            // Every modality's encode and decode belong to this step's trace, under the right phase; its encoder backward
            // rides on the next step's encode, and the last step's is applied before the final evaluation, in a trace
            // of its own ("optimizer", tagged with that step).
            var flush = spans.Single(s => s.OperationName == "optimizer" && s.ParentSpanId == default && (string?)s.GetTagItem(TrainingTelemetry.Run) == run);
            Assert.Equal(1L, flush.GetTagItem(TrainingTelemetry.Step));
            var encodeOfNext = number == 0 ? spans.Single(s => s.ParentSpanId == steps[1].SpanId && s.OperationName == "encode") : flush;
            foreach (var (call, phaseSpan) in new[]
            {
                ("modality encode", spans.Single(s => s.ParentSpanId == step.SpanId && s.OperationName == "encode")),
                ("modality decode", spans.Single(s => s.ParentSpanId == step.SpanId && s.OperationName == "decode")),
                ("modality encoder backward", encodeOfNext),
            })
            {
                var calls = spans.Where(s => s.OperationName == call && Under(s, phaseSpan) && Convert.ToInt64(s.GetTagItem(TrainingTelemetry.Step)) == number).ToList();
                Assert.Equal(new long[] { 0, 1, 2, 3, 4 }, calls.Select(c => Convert.ToInt64(c.GetTagItem(TrainingTelemetry.Modality))).OrderBy(x => x));
                Assert.All(calls, c => Assert.Equal(phaseSpan.TraceId, c.TraceId));
                // Modalities are spread over both silos of the test cluster.
                Assert.Equal(2, calls.Select(c => (string)c.GetTagItem(TrainingTelemetry.Silo)!).Distinct().Count());
            }
        }
    }

    [Fact]
    public void TheSamplerKeepsTheRunsOwnRootsAndWhatIsUnderThem()
    {
        var sampler = TelemetryHosting.RunSpansOnly();
        var trace = ActivityTraceId.CreateRandom();
        SamplingDecision Decide(Sampler s, ActivityContext parent, string name, params KeyValuePair<string, object?>[] tags) =>
            s.ShouldSample(new SamplingParameters(parent, trace, name, ActivityKind.Internal, tags)).Decision;
        static KeyValuePair<string, object?> Tag(string key, object value) => new(key, value);
        var root = default(ActivityContext);
        var recorded = new ActivityContext(trace, ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded, isRemote: true);
        var dropped = new ActivityContext(trace, ActivitySpanId.CreateRandom(), ActivityTraceFlags.None, isRemote: true);

        Assert.Equal(SamplingDecision.RecordAndSample, Decide(sampler, root, "train step", Tag(TrainingTelemetry.Run, "r"), Tag(TrainingTelemetry.Step, 3L)));
        Assert.Equal(SamplingDecision.Drop, Decide(sampler, root, "ICoordinatorGrain/Status"));
        Assert.Equal(SamplingDecision.Drop, Decide(sampler, root, "IMembershipTable/ReadAll"));
        // Children follow their parent, whatever their name: a modality call under a step, a grain's span under a poll.
        Assert.Equal(SamplingDecision.RecordAndSample, Decide(sampler, recorded, "IModalityGrain/Encode"));
        Assert.Equal(SamplingDecision.Drop, Decide(sampler, dropped, "checkpoint", Tag(TrainingTelemetry.Run, "r")));
        Assert.Equal(SamplingDecision.RecordAndSample, Decide(TelemetryHosting.RunSpansOnly(allRoots: true), root, "ICoordinatorGrain/Status"));
    }
}
