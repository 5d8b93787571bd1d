using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Reflection;

namespace MrVae.Grains.Tests;

/// <summary>Child processes on loopback for the multi-process tests: a private redis-server and silo processes. All are killed on dispose.</summary>
public sealed class LoopbackProcesses : IDisposable
{
    readonly List<Process> processes = new();
    readonly List<string> logs = new();

    public static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    public static string SiloDll()
    {
        var dir = typeof(LoopbackProcesses).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "SiloOutput").Value!;
        var dll = Path.Combine(dir, "mrvae-silo.dll");
        Assert.True(File.Exists(dll), $"silo not built at {dll}");
        return dll;
    }

    /// <summary>Starts redis-server on a free loopback port with persistence off (and requirepass when given); returns its port.</summary>
    public int StartRedis(string? password = null)
    {
        int port = FreePort();
        var redis = new[] { "/usr/bin/redis-server", "/usr/local/bin/redis-server" }.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("redis-server is not installed (apt-get install redis-server; .ci/run installs it)");
        string[] auth = password is null ? [] : ["--requirepass", password];
        Start(redis, ["--port", port.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", .. auth], new());
        WaitForPort(port, TimeSpan.FromSeconds(20));
        return port;
    }

    public Process StartSilo(Dictionary<string, string> environment, string name)
    {
        environment["DOTNET_ENVIRONMENT"] = "Production";
        // The Orleans dashboard's UI would take port 8080 of this machine; tests that want it say so.
        environment.TryAdd("MrVae__Dashboard__Enabled", "false");
        return Start("dotnet", [SiloDll()], environment, name);
    }

    Process Start(string file, string[] args, Dictionary<string, string> environment, string? name = null)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in environment) psi.Environment[k] = v;
        var p = Process.Start(psi)!;
        string label = name ?? Path.GetFileName(file);
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (logs) logs.Add($"[{label}] {e.Data}"); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (logs) logs.Add($"[{label}] {e.Data}"); };
        p.BeginOutputReadLine(); p.BeginErrorReadLine();
        processes.Add(p);
        return p;
    }

    public string Logs() { lock (logs) return string.Join("\n", logs.TakeLast(60)); }

    /// <summary>Whether any process printed a line containing <paramref name="text"/>.</summary>
    public bool Logged(string text) { lock (logs) return logs.Any(l => l.Contains(text)); }

    /// <summary>The lines the process named <paramref name="name"/> printed that contain <paramref name="text"/>.</summary>
    public string[] LinesOf(string name, string text) { lock (logs) return logs.Where(l => l.StartsWith($"[{name}] ") && l.Contains(text)).ToArray(); }

    public static void WaitForPort(int port, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            try { using var c = new TcpClient(); c.Connect(IPAddress.Loopback, port); return; }
            catch (SocketException) { Thread.Sleep(100); }
        }
        throw new TimeoutException($"nothing listened on 127.0.0.1:{port} within {timeout.TotalSeconds} s");
    }

    public void Dispose()
    {
        foreach (var p in processes)
        {
            try { if (!p.HasExited) { p.Kill(entireProcessTree: true); p.WaitForExit(10_000); } } catch (InvalidOperationException) { }
            p.Dispose();
        }
    }
}
