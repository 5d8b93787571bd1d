using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using MrVae.Grains;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace MrVae.Silo;

/// <summary>
/// OpenTelemetry for MrVae processes (silos and the client). Exporters follow the standard variables:
/// OTEL_EXPORTER_OTLP_ENDPOINT (and the other OTEL_EXPORTER_OTLP_* / OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES)
/// turn on OTLP; MrVae:Telemetry:Console=true (MrVae__Telemetry__Console) prints spans and metrics to stdout.
/// With neither, nothing is exported and the instrumentation costs next to nothing. Traces hold the runs' own roots
/// only (<see cref="RunSpansOnly"/>); MrVae:Telemetry:AllRoots=true keeps Orleans' and the client's as well.
/// </summary>
public static class TelemetryHosting
{
    public static IServiceCollection AddMrVaeTelemetry(this IServiceCollection services, IConfiguration configuration, string serviceName)
    {
        bool otlp = !string.IsNullOrWhiteSpace(configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]);
        bool console = configuration.GetValue("MrVae:Telemetry:Console", false);
        bool allRoots = configuration.GetValue("MrVae:Telemetry:AllRoots", false);
        if (!otlp && !console) return services;
        services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService(configuration["OTEL_SERVICE_NAME"] ?? serviceName))
            .WithTracing(t =>
            {
                t.AddSource(TrainingTelemetry.Sources);
                t.SetSampler(RunSpansOnly(allRoots));
                if (otlp) t.AddOtlpExporter();
                if (console) t.AddConsoleExporter();
            })
            .WithMetrics(m =>
            {
                m.AddMeter(TrainingTelemetry.Name);
                if (otlp) m.AddOtlpExporter();
                if (console) m.AddConsoleExporter();
            });
        return services;
    }

    /// <summary>
    /// Keeps a root span only when it is a run's own (it carries <see cref="TrainingTelemetry.Run"/> from its start:
    /// steps, evaluations, checkpoints, membership events); the client's polling (ICoordinatorGrain/Status, Metrics)
    /// and Orleans' housekeeping start roots without it and are dropped with everything under them. A child follows
    /// its parent. <paramref name="allRoots"/> keeps every root.
    /// </summary>
    public static Sampler RunSpansOnly(bool allRoots = false) => new RunSpansSampler(allRoots);

    sealed class RunSpansSampler(bool allRoots) : Sampler
    {
        public override SamplingResult ShouldSample(in SamplingParameters p)
        {
            bool keep = p.ParentContext.TraceId != default
                ? p.ParentContext.TraceFlags.HasFlag(System.Diagnostics.ActivityTraceFlags.Recorded)
                : allRoots || (p.Tags?.Any(t => t.Key == TrainingTelemetry.Run) ?? false);
            return new(keep ? SamplingDecision.RecordAndSample : SamplingDecision.Drop);
        }
    }
}
