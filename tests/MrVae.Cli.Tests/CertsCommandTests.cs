namespace MrVae.Cli.Tests;

/// <summary>`mrvae certs init|issue` as a user runs them: one line per result, keys owner-only and never printed, mistakes in one line.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class CertsCommandTests : IDisposable
{
    readonly string temp = Path.Combine(Path.GetTempPath(), "mrvae-certs-cli-" + Guid.NewGuid().ToString("N"));
    public CertsCommandTests() => Directory.CreateDirectory(temp);
    public void Dispose() => Directory.Delete(temp, recursive: true);

    static (int Exit, string Stdout, string Stderr) Run(params string[] args)
    {
        var (exit, stdout, stderr) = CliProcess.Run(CliProcess.StartInfo(args, columns: 400));
        return (exit, stdout.Trim(), stderr.Trim());
    }

    [Fact]
    public void InitAndIssueWriteOwnerOnlyKeysAndSayWhatTheyMade()
    {
        string ca = Path.Combine(temp, "ca"), silo = Path.Combine(temp, "silo-a"), op = Path.Combine(temp, "alice");
        var init = Run("certs", "init", "--out", ca);
        Assert.True(init.Exit == 0, init.Stderr);
        Assert.StartsWith($"CA 'mrvae cluster CA' in {ca}", init.Stdout);
        var issued = Run("certs", "issue", "--ca", ca, "--name", "silo-a", "--role", "silo", "--modalities", "0,1", "--out", silo);
        Assert.True(issued.Exit == 0, issued.Stderr);
        Assert.StartsWith($"silo-a (silo, modalities 0,1) in {silo}", issued.Stdout);
        var operatorCert = Run("certs", "issue", "--ca", ca, "--name", "alice", "--role", "operator", "--out", op);
        Assert.True(operatorCert.Exit == 0, operatorCert.Stderr);
        Assert.StartsWith("alice (operator)", operatorCert.Stdout);
        foreach (var output in new[] { init, issued, operatorCert }) Assert.DoesNotContain("PRIVATE KEY", output.Stdout + output.Stderr);
        foreach (var key in new[] { Path.Combine(ca, "ca-key.pem"), Path.Combine(silo, "key.pem"), Path.Combine(op, "key.pem") })
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(key));
        Assert.Equal(File.ReadAllText(Path.Combine(ca, "ca.pem")), File.ReadAllText(Path.Combine(silo, "ca.pem")));
    }

    [Fact]
    public void MistakesEndInOneLine()
    {
        string ca = Path.Combine(temp, "ca");
        Assert.Equal(0, Run("certs", "init", "--out", ca).Exit);
        foreach (var (args, message) in new[]
        {
            (new[] { "certs", "init", "--out", ca }, "a CA is already there"),
            (["certs", "issue", "--ca", ca, "--name", "x", "--role", "operator", "--modalities", "1", "--out", Path.Combine(temp, "x")], "only a silo certificate names modalities"),
            (["certs", "issue", "--ca", ca, "--name", "x", "--role", "silo", "--modalities", "1,1", "--out", Path.Combine(temp, "x")], "--modalities '1,1'"),
            (["certs", "issue", "--ca", Path.Combine(temp, "none"), "--name", "x", "--role", "silo", "--out", Path.Combine(temp, "x")], "mrvae certs init"),
        })
        {
            var r = Run(args);
            Assert.Equal(1, r.Exit);
            Assert.Contains(message, r.Stderr);
            Assert.Single(r.Stderr.Split('\n'));
        }
        Assert.NotEqual(0, Run("certs", "issue", "--ca", ca, "--name", "x", "--role", "admin", "--out", Path.Combine(temp, "x")).Exit);
    }
}
