using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;
using MrVae.Silo;

// A MrVae silo process. Configuration: see SiloHosting (appsettings.json, MrVae__* environment variables,
// --MrVae:... arguments), TelemetryHosting (OTEL_* variables) and OrleansDashboardHosting (MrVae:Dashboard:*).
var builder = OrleansDashboardHosting.CreateSiloBuilder(args);
builder.UseOrleans(silo => silo.ConfigureMrVae(builder.Configuration).AddMrVaeOrleansDashboard());
builder.Services.AddMrVaeTelemetry(builder.Configuration, "mrvae-silo");
try
{
    await builder.BuildSilo().RunAsync();
}
catch (Exception e) when (e is AddressInUseException || e.InnerException is AddressInUseException)
{
    // Another process holds one of the silo's ports: a user's mistake, said in one line, not a crash.
    Console.Error.WriteLine(
        $"error: Address already in use: the silo port ({builder.Configuration["MrVae:Endpoints:SiloPort"] ?? "default"}) or the gateway port " +
        $"({builder.Configuration["MrVae:Endpoints:GatewayPort"] ?? "default"}) is taken by another process; " +
        "set MrVae:Endpoints:SiloPort and MrVae:Endpoints:GatewayPort (MrVae__Endpoints__* variables) to free ports");
    return 1;
}
return 0;
