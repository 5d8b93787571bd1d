using System.Text.Json;
using System.Text.RegularExpressions;

namespace MrVae.Deploy.Tests;

/// <summary>
/// deploy/local-cluster.sh end to end, as a user runs it (with --no-build: the test build made the silo and the
/// client): Redis and three silo processes on loopback, a short training through the client, the metrics checked,
/// and every process it started gone afterwards. About 30 s on 2 cores.
/// </summary>
[Trait("Category", "Integration")]   // runs deploy/local-cluster.sh: Redis and silo processes
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed partial class LocalClusterTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-local-cluster-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose()
    {
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
    }

    static Repo.Result Script(params string[] args) =>
        Repo.Run("bash", ["deploy/local-cluster.sh", .. args], TimeSpan.FromMinutes(8),
            environment: new Dictionary<string, string> { ["MRVAE_CONFIGURATION"] = Repo.Configuration });

    [Fact]
    public void ThreeSiloProcessesTrainAShortRunAndAreStoppedAfterwards()
    {
        string run = Path.Combine(root, "run");
        var result = Script("--no-build", "--silos", "3", "--dataset", Path.Combine(root, "data"), "--train", "256", "--test", "64",
            "--steps", "6", "--batch", "16", "--out", run);
        Assert.True(result.ExitCode == 0, result.Describe("deploy/local-cluster.sh"));
        Assert.Contains("3 silos up", result.Stdout);
        Assert.Contains("Orleans dashboard: http://127.0.0.1:", result.Stdout);
        Assert.Contains("silo0: modalities 0,1", result.Stdout);
        Assert.Contains("silo1: modalities 2,3", result.Stdout);
        Assert.Contains("silo2: modalities 4", result.Stdout);

        var lines = File.ReadAllLines(Path.Combine(run, "metrics.jsonl"));
        Assert.Equal(6, lines.Length);
        for (int i = 0; i < lines.Length; i++)
        {
            using var doc = JsonDocument.Parse(lines[i]);
            Assert.Equal(i, doc.RootElement.GetProperty("step").GetInt32());
            Assert.True(double.IsFinite(doc.RootElement.GetProperty("loss").GetDouble()));
            Assert.Equal(5, doc.RootElement.GetProperty("members").GetArrayLength());
        }
        Assert.True(File.Exists(Path.Combine(run, "test.jsonl")));

        // Every process it started (Redis and the silos, by the PIDs it printed) has exited.
        var pids = Pid().Matches(result.Stdout).Select(m => int.Parse(m.Groups[1].Value)).ToList();
        Assert.Equal(4, pids.Count);
        Assert.Contains("stopped 4 processes", result.Stdout);
        foreach (int pid in pids)
            Assert.False(Directory.Exists($"/proc/{pid}") && !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z "), $"process {pid} is still running");
    }

    [Fact]
    public void WithTlsItTrainsAndRefusesBothIntruders()
    {
        string run = Path.Combine(root, "run-tls");
        var result = Script("--no-build", "--tls", "--dataset", Path.Combine(root, "data"), "--train", "256", "--test", "64",
            "--steps", "5", "--batch", "16", "--out", run);
        Assert.True(result.ExitCode == 0, result.Describe("deploy/local-cluster.sh --tls"));
        Assert.Contains("ok: 5 steps", result.Stdout);
        Assert.Contains("intruder client without a certificate (mrvae status): refused; a silo logged: TLS: refused", result.Stdout);
        Assert.Contains("intruder silo with another CA's certificate: refused", result.Stdout);
        Assert.Contains("CN=intruder: not issued by this cluster's CA", result.Stdout);
        Assert.DoesNotContain("GOT IN", result.Stdout);
        // The keys and the Redis password stay owner-only; the password never reached a command line or a log.
        foreach (var key in Directory.GetFiles(Path.Combine(run, "certs"), "*key.pem", SearchOption.AllDirectories).Append(Path.Combine(run, "certs", "redis-password")))
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(key));
        string password = File.ReadAllText(Path.Combine(run, "certs", "redis-password")).Trim();
        Assert.True(password.Length >= 20);
        foreach (var log in Directory.GetFiles(Path.Combine(run, "cluster-logs")))
            Assert.DoesNotContain(password, File.ReadAllText(log));
        Assert.DoesNotContain(password, result.Stdout + result.Stderr);
    }

    [Fact]
    public void BadArgumentsAreRefusedBeforeAnythingStarts()
    {
        var r = Script("--silos", "0");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("silos must be a positive integer", r.Stderr);
        r = Script("--bogus");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("unknown option '--bogus'", r.Stderr);
        r = Script("--help");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("--silos N", r.Stdout);
    }

    [GeneratedRegex(@"\(pid (\d+)\)")] private static partial Regex Pid();
}
