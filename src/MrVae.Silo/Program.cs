using Microsoft.Extensions.Hosting;
using MrVae.Silo;

// A MrVae silo process. Configuration: see SiloHosting (appsettings.json, MrVae__* environment variables, --MrVae:... arguments).
var builder = Host.CreateApplicationBuilder(args);
builder.UseOrleans(silo => silo.ConfigureMrVae(builder.Configuration));
await builder.Build().RunAsync();
