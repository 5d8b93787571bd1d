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
/// With neither, nothing is exported and the instrumentation costs next to nothing.
/// </summary>
public static class TelemetryHosting
{
    public static IServiceCollection AddMrVaeTelemetry(this IServiceCollection services, IConfiguration configuration, string serviceName)
    {
        bool otlp = !string.IsNullOrWhiteSpace(configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]);
        bool console = configuration.GetValue("MrVae:Telemetry:Console", false);
        if (!otlp && !console) return services;
        services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService(configuration["OTEL_SERVICE_NAME"] ?? serviceName))
            .WithTracing(t =>
            {
                t.AddSource(TrainingTelemetry.Sources);
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
}
