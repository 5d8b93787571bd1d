using MrVae.Data;
using MrVae.Model;
using Orleans.TestingHost;

namespace MrVae.Grains.Tests;

/// <summary>
/// `mrvae attach --silo ROLE`: a modality that two silos can serve is attached on the one the user names, moving
/// its grain there if it is active elsewhere, and an unknown role is a clear error that leaves the run unharmed.
/// </summary>
public sealed class SiloRoleTests : IAsyncLifetime
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-roles-" + Guid.NewGuid().ToString("N"));
    TestCluster cluster = null!;

    // Modality 4 has data on both silos (the secondary serves 1, 3 and 4).
    public async Task InitializeAsync() => cluster = await TwoSiloCluster.Deploy(Path.Combine(root, "state"), secondaryModalities: "1,3,4");

    public async Task DisposeAsync()
    {
        await cluster.StopAllSilosAsync();
        await cluster.DisposeAsync();
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
    }

    static readonly string Config = new ModelConfig { Modalities = 5, LatentDim = 4, EncoderHidden = 16 }.ToJson();

    [Fact]
    public async Task AttachPlacesTheModalityOnTheNamedSilo()
    {
        string data = TestDatasets.Extended(Path.Combine(root, "data"), train: 64, test: 8, seed: 3);
        var primary = cluster.Primary!.SiloAddress.ToString();
        var secondary = cluster.SecondarySilos[0].SiloAddress.ToString();
        var run = cluster.GrainFactory.GetGrain<ICoordinatorGrain>("roles");
        await run.Start(new RunSetup(data, Config, 1, 16, 100_000, 1, 1e-3, 1000, 8, [0, 1]));

        // Not a silo of this cluster: a clear error naming the silos that could serve it, and the run goes on.
        var unknown = await Assert.ThrowsAsync<UserInputException>(() => run.Attach(4, null, "gpu-z"));
        Assert.Contains("no silo with role 'gpu-z' serves modality 4", unknown.Message);
        Assert.Contains("primary", unknown.Message);
        Assert.Contains("secondary", unknown.Message);
        // Modality 2's data is only on the primary.
        Assert.Contains("no silo with role 'secondary' serves modality 2", (await Assert.ThrowsAsync<UserInputException>(() => run.Attach(2, null, "secondary"))).Message);
        Assert.Equal(RunState.Running, (await run.Status()).State);

        // Attach on the secondary, then detach and attach on the primary: the grain moves, the run trains with it.
        foreach (var (role, address) in new[] { ("secondary", secondary), ("primary", primary), ("secondary", secondary) })
        {
            var attached = await run.Attach(4, null, role);
            Assert.Equal(address, attached.MemberSilos[4]);
            Assert.Equal(role, await cluster.GrainFactory.GetGrain<IModalityGrain>(ModalityKey.For("roles", 4)).SiloRole());
            long from = attached.Step;
            var status = await WaitFor(run, s => s.Step >= from + 2 && s.Members.Contains(4));
            Assert.Equal(address, status.MemberSilos[4]);
            await run.Detach(4);
            await WaitFor(run, s => !s.Members.Contains(4));
        }
        await run.Stop();
        Assert.Equal(RunState.Stopped, (await WaitFor(run, s => s.State != RunState.Running)).State);
    }

    static async Task<RunStatus> WaitFor(ICoordinatorGrain run, Func<RunStatus, bool> condition)
    {
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (DateTime.UtcNow < deadline)
        {
            var s = await run.Status();
            if (condition(s)) return s;
            Assert.NotEqual(RunState.Failed, s.State);
            await Task.Delay(50);
        }
        throw new TimeoutException("the run did not get there in 2 minutes");
    }

    [Fact]
    public async Task AStartWaitsForASiloServingAModalityThatIsStillJoining()
    {
        string data = TestDatasets.Extended(Path.Combine(root, "joining-data"), train: 64, test: 8, seed: 3);
        var lone = await TwoSiloCluster.Deploy(Path.Combine(root, "joining-state"), silos: 1);
        try
        {
            // Only the primary (0, 2, 4) is up: the start waits for a silo serving modality 1 instead of failing.
            var run = lone.GrainFactory.GetGrain<ICoordinatorGrain>("joining");
            var start = run.Start(new RunSetup(data, Config, 1, 16, 100_000, 1, 1e-3, 1000, 8, [0, 1]));
            await Task.Delay(TimeSpan.FromSeconds(3));
            Assert.False(start.IsCompleted, "the start did not wait for a silo serving modality 1");
            var secondary = await lone.StartAdditionalSiloAsync();
            var status = await start;
            Assert.Equal(secondary.SiloAddress.ToString(), status.MemberSilos[1]);
            Assert.Equal(lone.Primary!.SiloAddress.ToString(), status.MemberSilos[0]);
            await run.Stop();
        }
        finally
        {
            await lone.StopAllSilosAsync();
            await lone.DisposeAsync();
        }
    }
}
