using Microsoft.Extensions.Configuration;
using MrVae.Silo;
using Orleans.TestingHost;

namespace MrVae.Grains.Tests;

/// <summary>
/// An in-process Orleans test cluster of two silos: the primary serves modalities 0, 2, 4 and the secondary 1, 3,
/// so every run's modalities are spread over both.
/// </summary>
public sealed class TwoSiloCluster : IAsyncLifetime
{
    public TestCluster Cluster { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        var builder = new TestClusterBuilder(2);
        builder.AddSiloBuilderConfigurator<Configurator>();
        Cluster = builder.Build();
        await Cluster.DeployAsync();
    }

    public async Task DisposeAsync() => await Cluster.StopAllSilosAsync();

    sealed class Configurator : ISiloConfigurator
    {
        public void Configure(ISiloBuilder silo)
        {
            // The test cluster numbers silo ports from BaseSiloPort; the first is the primary.
            bool primary = silo.Configuration["Orleans:Endpoints:SiloPort"] == silo.Configuration["BaseSiloPort"];
            var settings = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["MrVae:Silo:Modalities"] = primary ? "0,2,4" : "1,3",
                ["MrVae:Silo:Device"] = "cpu",
            }).Build();
            silo.ConfigureMrVae(settings, clustering: false);
        }
    }
}
