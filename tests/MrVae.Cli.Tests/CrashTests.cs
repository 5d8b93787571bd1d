namespace MrVae.Cli.Tests;

/// <summary>A user's mistake ends in one line and exit 1; a bug in one line naming the log with its stack trace, and exit 70.</summary>
public sealed class CrashTests : IDisposable
{
    readonly string temp = Path.Combine(Path.GetTempPath(), "mrvae-crash-" + Guid.NewGuid().ToString("N"));
    public CrashTests() => Directory.CreateDirectory(temp);
    public void Dispose() => Directory.Delete(temp, recursive: true);

    (int Exit, string Stdout, string Stderr) Run(bool fault, params string[] args)
    {
        var psi = CliProcess.StartInfo(args, columns: null);
        psi.Environment["MRVAE_CRASH_DIR"] = temp;
        psi.Environment.Remove("MRVAE_DEBUG");
        if (fault) psi.Environment["MRVAE_DEBUG_THROW"] = "1";
        else psi.Environment.Remove("MRVAE_DEBUG_THROW");
        return CliProcess.Run(psi);
    }

    [Fact]
    public void ABugExitsNonZeroWithItsStackTraceInTheLogWhileAUserMistakeIsOneLine()
    {
        // A user's mistake: one line naming the fix, exit 1, no log.
        var mistake = Run(fault: false, "train", "--local", "--dataset", Path.Combine(temp, "nothing"), "--out", Path.Combine(temp, "run"));
        Assert.Equal(1, mistake.Exit);
        var line = Assert.Single(mistake.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: ", line);
        Assert.Contains("mrvae data make", line);
        Assert.DoesNotContain("bug", line);
        Assert.Empty(Directory.GetFiles(temp));

        // A bug (an unexpected exception inside the command): one line that says so and names the log, exit 70.
        var bug = Run(fault: true, "data", "make", "--dataset", "synthetic-ring", "--out", Path.Combine(temp, "d"));
        Assert.Equal(70, bug.Exit);
        line = Assert.Single(bug.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("a bug", line);
        Assert.Contains("InvalidOperationException", line);
        Assert.DoesNotContain("   at ", bug.Stderr);
        var log = Assert.Single(Directory.GetFiles(temp, "mrvae-crash-*.log"));
        Assert.Contains(log, line);
        string trace = File.ReadAllText(log);
        Assert.Contains("System.InvalidOperationException: MRVAE_DEBUG_THROW=1: an injected fault", trace);
        Assert.Contains("   at MrVae.Cli.CliErrors.Invoke", trace);
    }

    [Fact]
    public void AMisspeltModelSettingIsAUsageErrorThatNamesTheKnownOnes()
    {
        string data = Path.Combine(temp, "ring");
        Assert.Equal(0, Run(fault: false, "data", "make", "--dataset", "synthetic-ring", "--out", data, "--train", "300", "--test", "100").Exit);
        foreach (var setting in new[] { "NoSuchSetting=1", "MembershipPrior" })
        {
            var r = Run(fault: false, "train", "--local", "--dataset", data, "--steps", "1", "--set", setting, "--out", Path.Combine(temp, "run"));
            Assert.Equal(2, r.Exit);   // a usage error, found before anything runs
            var line = Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.StartsWith("error: ", line);
            Assert.Contains(setting.Contains('=') ? "MembershipPrior" : "NAME=VALUE", line);
            Assert.Empty(Directory.GetFiles(temp, "mrvae-crash-*.log"));
        }
    }
}
