using Microsoft.Extensions.Hosting;
using MrVae.Silo;

// A MrVae silo process. Configuration: see SiloHosting (appsettings.json, MrVae__* environment variables,
// --MrVae:... arguments) and TelemetryHosting (OTEL_* variables).
var builder = Host.CreateApplicationBuilder(args);
builder.UseOrleans(silo => silo.ConfigureMrVae(builder.Configuration));
builder.Services.AddMrVaeTelemetry(builder.Configuration, "mrvae-silo");
await builder.Build().RunAsync();
