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
    /// <summary>Grain storage (checkpoints) shared by both silos, as a cluster's Redis would be.</summary>
    public string StateDirectory { get; } = Path.Combine(Path.GetTempPath(), "mrvae-state-" + Guid.NewGuid().ToString("N"));

    public async Task InitializeAsync() => Cluster = await Deploy(StateDirectory);

    /// <summary>
    /// Starts a two-silo cluster over <paramref name="stateDirectory"/> (a later cluster over the same directory
    /// resumes its runs). The silos' roles are "primary" and "secondary"; <paramref name="secondaryModalities"/>
    /// overrides what the secondary serves (the primary always serves 0, 2, 4). With <paramref name="silos"/> 1 only
    /// the primary starts; StartAdditionalSiloAsync adds the secondary.
    /// </summary>
    public static async Task<TestCluster> Deploy(string stateDirectory, string secondaryModalities = "1,3", short silos = 2)
    {
        var builder = new TestClusterBuilder(silos);
        builder.Properties["StateDirectory"] = stateDirectory;
        builder.Properties["SecondaryModalities"] = secondaryModalities;
        builder.AddSiloBuilderConfigurator<Configurator>();
        builder.AddClientBuilderConfigurator<ClientConfigurator>();
        var cluster = builder.Build();
        await cluster.DeployAsync();
        return cluster;
    }

    public async Task DisposeAsync()
    {
        await Cluster.StopAllSilosAsync();
        await Cluster.DisposeAsync();
        if (Directory.Exists(StateDirectory)) Directory.Delete(StateDirectory, recursive: true);
    }

    /// <summary>The test client waits as the CLI's does: a run's Start or Resume restores checkpoints and can take over 30 s on a loaded machine.</summary>
    sealed class ClientConfigurator : IClientBuilderConfigurator
    {
        public void Configure(IConfiguration configuration, IClientBuilder client)
            => client.Configure<Orleans.Configuration.ClientMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromMinutes(2));
    }

    sealed class Configurator : ISiloConfigurator
    {
        public void Configure(ISiloBuilder silo)
        {
            // The test cluster numbers silo ports from BaseSiloPort; the first is the primary.
            bool primary = silo.Configuration["Orleans:Endpoints:SiloPort"] == silo.Configuration["BaseSiloPort"];
            var settings = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["MrVae:Silo:Modalities"] = primary ? "0,2,4" : silo.Configuration["SecondaryModalities"],
                ["MrVae:Silo:Role"] = primary ? "primary" : "secondary",
                ["MrVae:Silo:Device"] = "cpu",
                ["MrVae:Checkpoints:Directory"] = silo.Configuration["StateDirectory"],
            }).Build();
            silo.ConfigureMrVae(settings, clustering: false);
        }
    }
}
