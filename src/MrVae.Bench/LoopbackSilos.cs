using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Reflection;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using MrVae.Client;

namespace MrVae.Bench;

/// <summary>
/// Silo processes (`mrvae-silo`) on 127.0.0.1 with localhost clustering (no Redis): silo 0 is the primary, every
/// silo serves one modality group, and a client connects through silo 0's gateway. Dispose kills exactly these processes.
/// </summary>
public sealed class LoopbackSilos : IAsyncDisposable
{
    readonly List<Process> processes = new();
    readonly List<Dictionary<string, string>> environments = new();
    readonly string logDirectory;
    string siloDll = "";
    public IHost Client { get; private set; } = null!;
    public IGrainFactory Grains => Client.Services.GetRequiredService<IGrainFactory>();
    public IReadOnlyList<Process> Processes => processes;

    LoopbackSilos(string logDirectory) { this.logDirectory = logDirectory; }

    /// <summary>The silo build beside this assembly's project (or <paramref name="explicitPath"/>).</summary>
    public static string SiloDll(string? explicitPath)
    {
        string dll = explicitPath ?? Path.Combine(
            typeof(LoopbackSilos).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "SiloOutput").Value!,
            "mrvae-silo.dll");
        if (!File.Exists(dll)) throw new FileNotFoundException($"mrvae-silo.dll not found at {dll}: build src/MrVae.Silo (Release) or pass --silo PATH");
        return dll;
    }

    /// <summary>
    /// Starts one silo per group (e.g. "0,1", "2,3", "4") and waits until all have joined and a client is connected.
    /// Logs go to WORK/silo-logs, the silos' grain state (checkpoints) to WORK/silo-state.
    /// </summary>
    public static async Task<LoopbackSilos> Start(string siloDll, string[] groups, string workDirectory, TimeSpan timeout, int? redisPort = null,
        IReadOnlyDictionary<string, string>? extraEnvironment = null)
    {
        string logDirectory = Path.Combine(workDirectory, "silo-logs"), stateDirectory = Path.GetFullPath(Path.Combine(workDirectory, "silo-state"));
        Directory.CreateDirectory(logDirectory);
        var silos = new LoopbackSilos(logDirectory) { siloDll = siloDll };
        try
        {
            string clusterId = "bench-" + Guid.NewGuid().ToString("N")[..8];
            int primary = FreePort();
            int firstGateway = 0;
            for (int i = 0; i < groups.Length; i++)
            {
                int siloPort = i == 0 ? primary : FreePort(), gatewayPort = FreePort();
                if (i == 0) firstGateway = gatewayPort;
                var environment = new Dictionary<string, string>
                {
                    ["DOTNET_ENVIRONMENT"] = "Production",
                    ["MrVae__Cluster__ClusterId"] = clusterId,
                    ["MrVae__Silo__Modalities"] = groups[i],
                    ["MrVae__Silo__TorchThreads"] = "1",
                    ["MrVae__Silo__ConcurrentCompute"] = ConcurrentComputePerSilo(groups.Length).ToString(),
                    ["MrVae__Endpoints__SiloPort"] = siloPort.ToString(),
                    ["MrVae__Endpoints__GatewayPort"] = gatewayPort.ToString(),
                    ["MrVae__Endpoints__PrimarySiloPort"] = primary.ToString(),
                    // No web UI: nothing to look at during a measurement, and silos started together race for its port.
                    ["MrVae__Dashboard__Enabled"] = "false",
                    ["MrVae__Checkpoints__Directory"] = stateDirectory,
                };
                // With Redis: membership, grain directory and checkpoints there, so any silo (the first too) may die.
                if (redisPort is { } redis)
                {
                    environment["MrVae__Clustering__Redis"] = $"127.0.0.1:{redis}";
                    environment.Remove("MrVae__Checkpoints__Directory");
                }
                foreach (var (k, v) in extraEnvironment ?? new Dictionary<string, string>()) environment[k] = v;
                silos.environments.Add(environment);
                silos.StartSilo(siloDll, i, environment);
                // The primary first: the others join through it.
                await WaitForPort(gatewayPort, timeout, silos.processes[^1], silos.LogPath(i));
            }
            silos.Client = await ClusterTraining.ConnectClient(redisPort is { } r ? $"redis://127.0.0.1:{r}" : $"127.0.0.1:{firstGateway}", clusterId);
            var deadline = DateTime.UtcNow + timeout;
            while ((await silos.Grains.GetGrain<IManagementGrain>(0).GetHosts(onlyActive: true)).Count < groups.Length)
            {
                if (silos.processes.FirstOrDefault(p => p.HasExited) is { } exited)
                    throw new InvalidOperationException($"silo {silos.processes.IndexOf(exited)} exited with code {exited.ExitCode}; see {silos.LogPath(silos.processes.IndexOf(exited))}");
                if (DateTime.UtcNow > deadline) throw new TimeoutException($"only some of {groups.Length} silos joined within {timeout.TotalSeconds} s; logs in {logDirectory}");
                await Task.Delay(200);
            }
            return silos;
        }
        catch
        {
            await silos.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Modality lanes per loopback silo: the machine's cores shared among the silos (at least 1). Each silo's default
    /// is every core, which is right for a silo with a machine of its own; three on one machine would run up to
    /// 3 × cores decoders at once, as the single thread per lane (TorchThreads = 1) is there to avoid.
    /// </summary>
    public static int ConcurrentComputePerSilo(int silos) => Math.Max(1, Environment.ProcessorCount / Math.Max(1, silos));

    public string LogPath(int i) => Path.Combine(logDirectory, $"silo{i}.log");

    /// <summary>The silo port of silo <paramref name="i"/> (its address in status: 127.0.0.1:PORT:GENERATION).</summary>
    public int SiloPort(int i) => int.Parse(environments[i]["MrVae__Endpoints__SiloPort"]);

    /// <summary>SIGKILL for silo <paramref name="i"/>: no shutdown, as a crash or a lost machine.</summary>
    public async Task Kill(int i)
    {
        processes[i].Kill();
        await processes[i].WaitForExitAsync();
    }

    /// <summary>Starts silo <paramref name="i"/> again with its ports and settings (a new generation of it) and waits for its gateway.</summary>
    public async Task Restart(int i, TimeSpan timeout)
    {
        processes[i].Dispose();
        StartSilo(siloDll, i, environments[i], replace: true);
        await WaitForPort(int.Parse(environments[i]["MrVae__Endpoints__GatewayPort"]), timeout, processes[i], LogPath(i));
    }

    void StartSilo(string dll, int index, Dictionary<string, string> environment, bool replace = false)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(dll);
        foreach (var (k, v) in environment) psi.Environment[k] = v;
        var log = new StreamWriter(LogPath(index), append: replace) { AutoFlush = true };
        var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {dll}");
        // Drain both pipes into the log so a chatty silo never blocks on a full pipe.
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        p.Exited += (_, _) => { lock (log) log.Dispose(); };
        p.EnableRaisingEvents = true;
        p.BeginOutputReadLine(); p.BeginErrorReadLine();
        if (replace) processes[index] = p;
        else processes.Add(p);
    }

    static async Task WaitForPort(int port, TimeSpan timeout, Process process, string log)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (process.HasExited) throw new InvalidOperationException($"a silo exited with code {process.ExitCode} while starting; see {log}");
            try { using var c = new TcpClient(); await c.ConnectAsync(IPAddress.Loopback, port); return; }
            catch (SocketException) { await Task.Delay(100); }
        }
        throw new TimeoutException($"no silo gateway on 127.0.0.1:{port} within {timeout.TotalSeconds} s; see {log}");
    }

    static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    public async ValueTask DisposeAsync()
    {
        if (Client is not null)
        {
            try { await Client.StopAsync(CancellationToken.None); } catch (Exception e) when (e is OrleansException or OperationCanceledException or ObjectDisposedException) { }
            Client.Dispose();
        }
        foreach (var p in processes)
        {
            try { if (!p.HasExited) { p.Kill(entireProcessTree: true); await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10)); } }
            catch (Exception e) when (e is InvalidOperationException or TimeoutException) { }
            p.Dispose();
        }
    }
}
