using Microsoft.Extensions.DependencyInjection;
using MrVae.Client;
using MrVae.Model;
using MrVae.Model.Training;

namespace MrVae.Grains.Tests;

/// <summary>
/// Tracing end to end: two silo processes export over OTLP (the standard OTEL_* variables, as a user sets them) to a
/// real Aspire dashboard, a short run trains through them, and the dashboard's telemetry API returns one step's
/// trace with its phases and the modality calls of both silos.
/// </summary>
[Trait("Category", "Integration")]   // the Aspire dashboard and two silo processes
public sealed class OtlpDashboardTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-otlp-" + Guid.NewGuid().ToString("N"));
    readonly LoopbackProcesses processes = new();

    public void Dispose()
    {
        processes.Dispose();
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
    }

    [Fact]
    public async Task TwoSiloProcessesSendAStepTraceWithPhasesAndModalityCallsToTheAspireDashboard()
    {
        using var dashboard = new AspireDashboard(TimeSpan.FromSeconds(60));
        string data = TestDatasets.Extended(Path.Combine(root, "data"), train: 32, test: 8, seed: 1);

        // Two silos on localhost clustering (the first is the primary); modalities 0, 2, 4 on one, 1, 3 on the other.
        int primaryPort = LoopbackProcesses.FreePort();
        var silos = new[] { ("mrvae-silo-a", "0,2,4", primaryPort), ("mrvae-silo-b", "1,3", LoopbackProcesses.FreePort()) };
        int firstGateway = 0;
        foreach (var (service, modalities, siloPort) in silos)
        {
            int gateway = LoopbackProcesses.FreePort();
            if (firstGateway == 0) firstGateway = gateway;
            processes.StartSilo(new Dictionary<string, string>
            {
                ["MrVae__Silo__Modalities"] = modalities,
                ["MrVae__Silo__TorchThreads"] = "1",
                ["MrVae__Endpoints__SiloPort"] = siloPort.ToString(),
                ["MrVae__Endpoints__GatewayPort"] = gateway.ToString(),
                ["MrVae__Endpoints__PrimarySiloPort"] = primaryPort.ToString(),
                ["OTEL_EXPORTER_OTLP_ENDPOINT"] = dashboard.OtlpGrpc,
                ["OTEL_SERVICE_NAME"] = service,
                // Export spans every 200 ms instead of every 5 s, so the test need not wait.
                ["OTEL_BSP_SCHEDULE_DELAY"] = "200",
            }, service);
            LoopbackProcesses.WaitForPort(gateway, TimeSpan.FromSeconds(90));
        }

        using var client = await ClusterTraining.ConnectClient($"127.0.0.1:{firstGateway}");
        var grains = client.Services.GetRequiredService<IGrainFactory>();
        // The gateway opens before a silo has joined: wait until both are active, or modalities 1 and 3 have no home.
        for (var deadline = DateTime.UtcNow.AddSeconds(60); (await grains.GetGrain<IManagementGrain>(0).GetHosts(onlyActive: true)).Count < 2;)
        {
            Assert.True(DateTime.UtcNow < deadline, $"the second silo did not join within 60 s:\n{processes.Logs()}");
            await Task.Delay(200);
        }

        var config = new ModelConfig { Modalities = 5, LatentDim = 4, EncoderHidden = 16 };
        var options = new TrainOptions { RunDirectory = Path.Combine(root, "run"), BatchSize = 16, Steps = 2, Seed = 3, TestSamples = 8 };
        DistributedRun run;
        try { run = await ClusterTraining.Train(grains, config, options, data, [0, 1, 2, 3, 4]); }
        catch (Exception e) { throw new Exception($"{e.Message}\nsilo logs:\n{processes.Logs()}", e); }
        Assert.Equal(2, run.Result.Steps);

        // Spans reach the dashboard from each silo in its own batches: poll until step 1's trace is complete.
        List<ReceivedSpan> trace = [];
        ReceivedSpan? step = null;
        string? missing = "nothing received";
        for (var deadline = DateTime.UtcNow.AddSeconds(30); missing is not null && DateTime.UtcNow < deadline; await Task.Delay(250))
        {
            var spans = await dashboard.Spans();
            step = spans.SingleOrDefault(s => s.Name == "train step" && s[TrainingTelemetry.Run] == run.RunId && s[TrainingTelemetry.Step] == "1");
            trace = step is null ? [] : spans.Where(s => s.TraceId == step.TraceId).ToList();
            missing = step is null ? "no 'train step' span for step 1" : Incomplete(trace, step);
        }
        Assert.True(missing is null, $"{missing}; the dashboard holds {trace.Count} spans of that trace:\n" +
            string.Join("\n", trace.Select(s => $"  {s.Service} {s.Name} {string.Join(" ", s.Attributes.Select(a => $"{a.Key}={a.Value}"))}")));

        // The step: one root span on one silo, its run, step and the bytes it moved.
        Assert.Contains(step!.Service, silos.Select(s => s.Item1));
        Assert.Equal(TrainingTelemetry.Name, step.Scope);
        Assert.Equal("16", step[TrainingTelemetry.BatchSize]);
        Assert.Equal("5", step[TrainingTelemetry.SubsetSize]);
        Assert.Equal("0,1,2,3,4", step[TrainingTelemetry.Members]);
        // The bytes the step moved are the bytes of its modality calls, as each silo measured its own.
        Assert.Equal(long.Parse(step[TrainingTelemetry.Bytes]!), trace.Where(s => s.Name.StartsWith("modality ")).Sum(s => long.Parse(s[TrainingTelemetry.Bytes]!)));

        var byId = trace.ToDictionary(s => s.SpanId);
        bool Under(ReceivedSpan s, ReceivedSpan ancestor)
        {
            for (var p = s; p is not null; p = byId.GetValueOrDefault(p.ParentSpanId))
                if (p.SpanId == ancestor.SpanId) return true;
            return false;
        }
        foreach (var (call, phase, callStep) in Calls)
        {
            var phaseSpan = trace.Single(s => s.ParentSpanId == step.SpanId && s.Name == phase);
            var calls = trace.Where(s => s.Name == call).ToList();
            Assert.All(calls, c => Assert.True(Under(c, phaseSpan), $"{call} of modality {c[TrainingTelemetry.Modality]} is not under {phase}"));
            Assert.Equal(["0", "1", "2", "3", "4"], calls.Select(c => c[TrainingTelemetry.Modality]!).Order());
            Assert.All(calls, c => Assert.Equal(run.RunId, c[TrainingTelemetry.Run]));
            Assert.All(calls, c => Assert.Equal(callStep, c[TrainingTelemetry.Step]));
            // Each call was exported by the silo process that serves its modality: two silos in one trace.
            foreach (var c in calls)
                Assert.Equal(int.Parse(c[TrainingTelemetry.Modality]!) % 2 == 0 ? "mrvae-silo-a" : "mrvae-silo-b", c.Service);
        }
    }

    // Step 1's trace: its encodes (each applying step 0's encoder gradients first, as a span tagged step 0) and decodes.
    static readonly (string Call, string Phase, string Step)[] Calls =
        [("modality encode", "encode", "1"), ("modality decode", "decode", "1"), ("modality encoder backward", "encode", "0")];
    static readonly string[] Phases = ["encode", "relation", "decode", "backward", "optimizer"];

    /// <summary>What step's trace still lacks (the phases, five calls of each kind), or null when it is complete.</summary>
    static string? Incomplete(List<ReceivedSpan> trace, ReceivedSpan step)
    {
        var phases = trace.Where(s => s.ParentSpanId == step.SpanId && s.Scope == TrainingTelemetry.Name).Select(s => s.Name).ToHashSet();
        var lacking = Phases.Where(p => !phases.Contains(p)).ToList();
        if (lacking.Count > 0) return $"phases missing under the step: {string.Join(", ", lacking)}";
        foreach (var (call, _, _) in Calls)
        {
            int n = trace.Count(s => s.Name == call);
            if (n < 5) return $"{n} of 5 '{call}' spans";
        }
        return null;
    }
}
