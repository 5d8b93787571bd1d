using Microsoft.Extensions.Hosting;
using MrVae.Silo;

// A MrVae silo process. Configuration: see SiloHosting (appsettings.json, MrVae__* environment variables,
// --MrVae:... arguments), TelemetryHosting (OTEL_* variables) and OrleansDashboardHosting (MrVae:Dashboard:*).
var builder = OrleansDashboardHosting.CreateSiloBuilder(args);
builder.UseOrleans(silo => silo.ConfigureMrVae(builder.Configuration).AddMrVaeOrleansDashboard());
builder.Services.AddMrVaeTelemetry(builder.Configuration, "mrvae-silo");
await builder.BuildSilo().RunAsync();
