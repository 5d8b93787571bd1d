using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using MrVae.Client;
using MrVae.Data;
using MrVae.Model;
using MrVae.Model.Training;
using MrVae.Security;
using MrVae.Silo;

namespace MrVae.Grains.Tests;

/// <summary>
/// A secured cluster on loopback: Redis with a password, three silos with mutual TLS serving 0,1 / 2,3 / 4, and a
/// fourth ("rogue") whose certificate names 3,4 while its configuration claims 0. Certificates come from a CA made
/// here; an operator certificate from it and one from a foreign CA play the clients.
/// </summary>
public sealed class SecureCluster : IAsyncLifetime
{
    public readonly string Root = Path.Combine(Path.GetTempPath(), "mrvae-tls-" + Guid.NewGuid().ToString("N"));
    public readonly LoopbackProcesses Processes = new();
    public readonly string ClusterId = "tls-" + Guid.NewGuid().ToString("N")[..8];
    public const string Password = "s3cret-for-tests";
    public int Redis;
    public int RogueSiloPort;
    public string Data = "";
    public string Ca => Path.Combine(Root, "ca");
    public string Operator => Path.Combine(Root, "operator");
    public string ForeignOperator => Path.Combine(Root, "foreign-operator");
    public string SiloCertificate(int i) => Path.Combine(Root, $"silo{i}");
    public string PasswordFile => Path.Combine(Root, "redis-password");
    public readonly Dictionary<string, int> Gateways = new();

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(Root);
        Data = TestDatasets.Extended(Path.Combine(Root, "data"), train: 64, test: 16, seed: 1);
        var year = TimeSpan.FromDays(365);
        ClusterCertificates.InitAuthority(Ca, "test cluster CA", year).Dispose();
        string[] certified = ["0,1", "2,3", "4", "3,4"];
        for (int i = 0; i < certified.Length; i++)
            ClusterCertificates.IssueTo(Ca, new NodeIdentity($"silo{i}", NodeRole.Silo, ClusterCertificates.ParseModalities(certified[i])!), SiloCertificate(i), year).Dispose();
        ClusterCertificates.IssueTo(Ca, new NodeIdentity("operator", NodeRole.Operator, []), Operator, year).Dispose();
        string foreignCa = Path.Combine(Root, "foreign-ca");
        ClusterCertificates.InitAuthority(foreignCa, "test cluster CA", year).Dispose();
        ClusterCertificates.IssueTo(foreignCa, new NodeIdentity("foreign-operator", NodeRole.Operator, []), ForeignOperator, year).Dispose();
        File.WriteAllText(PasswordFile, Password + "\n");

        Redis = Processes.StartRedis(Password);
        string[] configured = ["0,1", "2,3", "4", "0"];
        for (int i = 0; i < configured.Length; i++)
        {
            int siloPort = LoopbackProcesses.FreePort(), gatewayPort = LoopbackProcesses.FreePort();
            if (i == 3) RogueSiloPort = siloPort;
            StartSilo($"silo{i}", configured[i], SiloCertificate(i), siloPort, gatewayPort, withPassword: true);
            Gateways[$"silo{i}"] = gatewayPort;
        }
        foreach (var port in Gateways.Values) LoopbackProcesses.WaitForPort(port, TimeSpan.FromSeconds(180));
        await Task.CompletedTask;
    }

    public System.Diagnostics.Process StartSilo(string name, string modalities, string certificates, int siloPort, int gatewayPort, bool withPassword)
    {
        var environment = new Dictionary<string, string>
        {
            ["MrVae__Clustering__Redis"] = $"127.0.0.1:{Redis}",
            ["MrVae__Cluster__ClusterId"] = ClusterId,
            ["MrVae__Silo__Modalities"] = modalities,
            ["MrVae__Silo__Role"] = name,
            ["MrVae__Silo__TorchThreads"] = "1",
            ["MrVae__Endpoints__SiloPort"] = siloPort.ToString(),
            ["MrVae__Endpoints__GatewayPort"] = gatewayPort.ToString(),
            ["MrVae__Tls__Certificate"] = Path.Combine(certificates, ClusterCertificates.CertificateFile),
            ["MrVae__Tls__Key"] = Path.Combine(certificates, ClusterCertificates.KeyFile),
            ["MrVae__Tls__Ca"] = Path.Combine(certificates, ClusterCertificates.CaCertificateFile),
            ["OMP_NUM_THREADS"] = "1",
        };
        if (withPassword) environment["MrVae__Redis__PasswordFile"] = PasswordFile;
        return Processes.StartSilo(environment, name);
    }

    /// <summary>A client of this cluster through Redis (with its password), over TLS with the certificates in <paramref name="tls"/> (none: plain TCP).</summary>
    public Task<IHost> Connect(string? tls) => ClusterTraining.ConnectClient($"redis://127.0.0.1:{Redis}", ClusterId, tlsDirectory: tls, redisAuth: new RedisAuth(null, Password));

    public Task DisposeAsync()
    {
        Processes.Dispose();
        if (Directory.Exists(Root)) Directory.Delete(Root, recursive: true);
        return Task.CompletedTask;
    }
}

[Trait("Category", "Integration")]   // redis-server and four silo processes with TLS
public sealed class SecureClusterTests(SecureCluster cluster) : IClassFixture<SecureCluster>
{
    static readonly ModelConfig Config = new() { Modalities = 5, LatentDim = 6, EncoderHidden = 32 };

    [Fact]
    public async Task TrainsToTheEndWithTheEmbeddedRunsLossesAndTheRogueSiloServesNoModality()
    {
        using var client = await cluster.Connect(cluster.Operator);
        var grains = client.Services.GetRequiredService<IGrainFactory>();
        var options = new TrainOptions { RunDirectory = Path.Combine(cluster.Root, "run-tls"), BatchSize = 16, Steps = 6, Seed = 2, TestSamples = 16 };
        DistributedRun run;
        try { run = await ClusterTraining.Train(grains, Config, options, cluster.Data, [0, 1, 2, 3, 4]); }
        catch (Exception e) { throw new Exception($"{e.Message}\nsilo logs:\n{cluster.Processes.Logs()}", e); }
        Assert.Equal(6, run.Result.Steps);

        // The same run on an embedded silo (no TLS, no Redis): the same losses, step by step.
        using var embedded = await ClusterTraining.StartEmbeddedSilo(Path.Combine(cluster.Root, "embedded-state"));
        var reference = await ClusterTraining.Train(embedded.Services.GetRequiredService<IGrainFactory>(), Config,
            options with { RunDirectory = Path.Combine(cluster.Root, "run-embedded") }, cluster.Data, [0, 1, 2, 3, 4]);
        await embedded.StopAsync();
        var secured = Losses(Path.Combine(cluster.Root, "run-tls"));
        var plain = Losses(Path.Combine(cluster.Root, "run-embedded"));
        Assert.Equal(6, secured.Length);
        Assert.Equal(plain, secured);
        Assert.Equal(reference.Result.FinalLoss, run.Result.FinalLoss);

        // Every modality ran where its certificate allows; modality 0 (and every other) never on the rogue silo,
        // which said at start that its configuration claims what its certificate does not name.
        Assert.Equal(run.MemberSilos[0], run.MemberSilos[1]);
        Assert.Equal(run.MemberSilos[2], run.MemberSilos[3]);
        Assert.DoesNotContain(run.MemberSilos.Values, s => s.Contains($":{cluster.RogueSiloPort}:"));
        var stats = await grains.GetGrain<IManagementGrain>(0).GetSimpleGrainStatistics();
        Assert.DoesNotContain(stats, s => s.SiloAddress.Endpoint.Port == cluster.RogueSiloPort && s.GrainType.Contains("ModalityGrain") && s.ActivationCount > 0);
        Assert.Contains(stats, s => s.GrainType.Contains("ModalityGrain") && s.ActivationCount > 0);
        Assert.Single(cluster.Processes.LinesOf("silo3", "claims modalities 0 that this silo's certificate silo3 (silo, modalities 3,4) does not name"));
        Assert.Equal(4, (await grains.GetGrain<IManagementGrain>(0).GetHosts(onlyActive: true)).Count);
        await client.StopAsync();
    }

    static double[][] Losses(string runDirectory) => File.ReadAllLines(Path.Combine(runDirectory, LocalTrainer.MetricsFile))
        .Select(l => JsonDocument.Parse(l).RootElement)
        .Where(e => e.TryGetProperty("loss", out _))
        .Select(e => e.EnumerateObject().Where(p => p.Name == "loss" || p.Name.StartsWith("rec_") || p.Name.StartsWith("kl_")).Select(p => p.Value.GetDouble()).ToArray())
        .ToArray();

    [Fact]
    public async Task AClientWithoutACertificateIsRefused()
    {
        // (The fixture's port probes were refused the same way: count the lines this client adds.)
        int Refusals() => Enumerable.Range(0, 4).Sum(i => cluster.Processes.LinesOf($"silo{i}", "on the gateway: no client certificate").Length);
        int before = Refusals();
        var e = await Assert.ThrowsAsync<UserInputException>(() => cluster.Connect(tls: null));
        Assert.Contains("cannot reach the cluster", e.Message);
        Assert.Contains("--tls", e.Message);
        Assert.True(Refusals() > before, cluster.Processes.Logs());
    }

    [Fact]
    public async Task AClientWithAForeignCaCertificateIsRefused()
    {
        // Through the client: it also refuses the cluster's silos, whose certificates its CA did not issue.
        var e = await Assert.ThrowsAsync<UserInputException>(() => cluster.Connect(cluster.ForeignOperator));
        Assert.Contains("not issued by this cluster's CA", e.Message);
        // A bare TLS peer that accepts any server: the gateway itself refuses the foreign certificate, and says so.
        Assert.False(await Handshake(cluster.Gateways["silo0"], cluster.ForeignOperator), "the gateway kept a connection from a foreign-CA certificate open");
        await WaitForLog("silo0", "CN=foreign-operator: not issued by this cluster's CA");
        // The control: an operator certificate of the cluster's CA gets through the same bare handshake.
        Assert.True(await Handshake(cluster.Gateways["silo0"], cluster.Operator), "the gateway refused the cluster's own operator certificate");
    }

    [Fact]
    public async Task ASiloCertificateUsedAsAClientCannotStopARun()
    {
        using var client = await cluster.Connect(cluster.Operator);
        var grains = client.Services.GetRequiredService<IGrainFactory>();
        var coordinator = grains.GetGrain<ICoordinatorGrain>("tls-long-" + Guid.NewGuid().ToString("N")[..6]);
        await coordinator.Start(new RunSetup(cluster.Data, Config.ToJson(), 3, 16, 1_000_000, 1, 1e-3, 1_000_000, 16, [0, 1, 2, 3, 4]));
        await WaitFor(coordinator, s => s.Step >= 1);

        // silo0's own certificate, from the right CA, is not an operator's: the gateway refuses it at the handshake.
        var e = await Assert.ThrowsAsync<UserInputException>(() => cluster.Connect(cluster.SiloCertificate(0)));
        Assert.Contains("cannot reach the cluster", e.Message);
        Assert.True(cluster.Processes.Logged("a silo certificate where only operator certificates are let in"), cluster.Processes.Logs());
        var status = await coordinator.Status();
        Assert.Equal(RunState.Running, status.State);
        long step = status.Step;
        await WaitFor(coordinator, s => s.Step > step);

        // The operator can.
        await coordinator.Stop();
        Assert.Equal(RunState.Stopped, (await WaitFor(coordinator, s => s.State != RunState.Running)).State);
        await client.StopAsync();
    }

    [Fact]
    public async Task RedisWithoutThePasswordRefusesTheSilo()
    {
        int siloPort = LoopbackProcesses.FreePort(), gatewayPort = LoopbackProcesses.FreePort();
        var silo = cluster.StartSilo("nopassword", "4", cluster.SiloCertificate(2), siloPort, gatewayPort, withPassword: false);
        // It cannot read the membership table: it fails to start, naming Redis' refusal.
        Assert.True(silo.WaitForExit(TimeSpan.FromMinutes(4)), "a silo without the Redis password kept running");
        silo.WaitForExit();   // and its redirected output is all read (the timed overload returns before the last lines)
        Assert.NotEqual(0, silo.ExitCode);
        Assert.NotEmpty(cluster.Processes.LinesOf("nopassword", "NOAUTH"));
        using var client = await cluster.Connect(cluster.Operator);
        var hosts = await client.Services.GetRequiredService<IGrainFactory>().GetGrain<IManagementGrain>(0).GetHosts(onlyActive: true);
        Assert.DoesNotContain(hosts.Keys, h => h.Endpoint.Port == siloPort);
        await client.StopAsync();
    }

    /// <summary>
    /// A TLS handshake with the certificate in <paramref name="certificates"/>, accepting any server; true when the
    /// server keeps the connection open afterwards (it has accepted us), false when it closes or aborts it.
    /// </summary>
    static async Task<bool> Handshake(int port, string certificates)
    {
        using var certificate = ClusterCertificates.LoadWithKey(Path.Combine(certificates, ClusterCertificates.CertificateFile), Path.Combine(certificates, ClusterCertificates.KeyFile));
        using var tcp = new TcpClient();
        await tcp.ConnectAsync("127.0.0.1", port);
        using var ssl = new SslStream(tcp.GetStream(), false, (_, _, _, _) => true);
        try
        {
            await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "localhost", ClientCertificates = [certificate] });
            // Under TLS 1.3 the server judges our certificate after our side has finished: a refusal shows as the
            // connection closing. Accepted, the silo waits for Orleans' preamble and sends nothing within the wait.
            var buffer = new byte[1];
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            int read = await ssl.ReadAsync(buffer, wait.Token);
            return read > 0;
        }
        catch (OperationCanceledException) { return true; }
        catch (Exception e) when (e is IOException or System.Security.Authentication.AuthenticationException) { return false; }
    }

    async Task WaitForLog(string silo, string text)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (cluster.Processes.LinesOf(silo, text).Length == 0)
        {
            Assert.True(DateTime.UtcNow < deadline, $"{silo} did not log '{text}':\n{cluster.Processes.Logs()}");
            await Task.Delay(200);
        }
    }

    static async Task<RunStatus> WaitFor(ICoordinatorGrain coordinator, Func<RunStatus, bool> done)
    {
        var deadline = DateTime.UtcNow.AddMinutes(4);
        while (true)
        {
            var status = await coordinator.Status();
            if (done(status)) return status;
            Assert.True(DateTime.UtcNow < deadline, $"timed out at step {status.Step}, state {status.State}");
            await Task.Delay(200);
        }
    }
}
