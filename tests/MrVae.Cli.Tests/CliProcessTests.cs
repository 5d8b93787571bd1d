using System.Diagnostics;
using MrVae.Data;

namespace MrVae.Cli.Tests;

/// <summary>The console as a user runs it: a separate process, its exit code and what it prints.</summary>
public sealed class CliProcessTests : IDisposable
{
    readonly string temp = Path.Combine(Path.GetTempPath(), "mrvae-cli-" + Guid.NewGuid().ToString("N"));
    public CliProcessTests() => Directory.CreateDirectory(temp);
    public void Dispose() => Directory.Delete(temp, recursive: true);

    static (int Exit, string Output) Run(params string[] args)
    {
        var (exit, stdout, stderr) = RunSplit(args);
        return (exit, (stdout + stderr).Trim());
    }

    /// <summary>Runs mrvae with its output redirected, as scripts and CI logs see it (no COLUMNS, no terminal).</summary>
    static (int Exit, string Stdout, string Stderr) RunSplit(params string[] args) => CliProcess.Run(CliProcess.StartInfo(args, columns: null));

    string SmallDataset()
    {
        string dir = Path.Combine(temp, "small");
        Assert.Equal(0, Run("data", "make", "--dataset", "polymnist", "--out", dir, "--train", "64", "--test", "16").Exit);
        return dir;
    }

    static int ClosedPort()
    {
        using var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        l.Start();
        return ((System.Net.IPEndPoint)l.LocalEndpoint).Port;   // closed again when l is disposed
    }

    static void AssertOneLineError((int Exit, string Output) r, string expected)
    {
        Assert.NotEqual(0, r.Exit);
        Assert.Contains(expected, r.Output);
        Assert.DoesNotContain("   at ", r.Output);                       // no stack trace
        Assert.Single(r.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public void EveryCommandsHelpEndsWithOneExampleOfThatCommand()
    {
        // Walks the command tree through the help itself: every "Commands:" entry is visited.
        var pending = new Queue<string[]>([[]]);
        var visited = new List<string>();
        while (pending.TryDequeue(out var path))
        {
            var (exit, stdout, stderr) = RunSplit([.. path, "--help"]);
            string name = string.Join(' ', ["mrvae", .. path]);
            Assert.True(exit == 0, $"{name} --help: exit {exit}, {stderr}");
            var lines = stdout.Replace("\r", "").Split('\n');
            int at = Array.IndexOf(lines, "Example:");
            Assert.True(at >= 0, $"{name} --help has no example");
            Assert.Single(lines, l => l == "Example:");
            Assert.StartsWith(name + (path.Length == 0 ? " " : ""), lines[at + 1].Trim() + " ");
            int commands = Array.IndexOf(lines, "Commands:");
            if (commands >= 0)
                foreach (var line in lines.Skip(commands + 1).TakeWhile(l => l.StartsWith("  ")))
                    pending.Enqueue([.. path, line.Trim().Split(' ')[0]]);
            visited.Add(name);
        }
        Assert.Contains("mrvae data mnist", visited);
        Assert.Contains("mrvae experiment paper", visited);
        Assert.True(visited.Count >= 15, string.Join(", ", visited));
    }

    [Fact]
    public void VersionNamesTheVersionAndTheCommit()
    {
        var (exit, stdout, _) = RunSplit("--version");
        Assert.Equal(0, exit);
        Assert.Matches(@"^mrvae \d+\.\d+\.\d+ \(commit [0-9a-f]{7}\)$", stdout.Trim());
    }

    [Fact]
    public void HelpShowsEvenWhereTheCommandsOwnChecksWouldFail()
    {
        // train without a mode is an error, but not when asking how to give one.
        var (exit, stdout, stderr) = RunSplit("train", "--help");
        Assert.Equal(0, exit);
        Assert.Contains("--embedded", stdout);
        Assert.Equal("", stderr);
    }

    [Fact]
    public void UnknownDatasetNameIsOneLineAndNonZero()
        => AssertOneLineError(Run("data", "make", "--dataset", "polymnist-huge", "--out", temp), "unknown dataset");

    [Fact]
    public void MalformedSpecIsOneLineAndNonZero()
    {
        var spec = Path.Combine(temp, "bad.json");
        File.WriteAllText(spec, "{\"name\": \"x\", \"modalities\": 2, \"factors\": [");
        AssertOneLineError(Run("data", "make", "--dataset", spec, "--out", temp), "not valid JSON");
    }

    [Fact]
    public void CorruptMnistIsOneLineAndNonZero()
    {
        var mnist = Path.Combine(temp, "mnist");
        Directory.CreateDirectory(mnist);
        foreach (var f in new[] { "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte" })
            File.WriteAllBytes(Path.Combine(mnist, f), [0, 0, 9, 9, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8]);
        AssertOneLineError(Run("data", "make", "--dataset", "polymnist", "--out", Path.Combine(temp, "d"), "--mnist", mnist), "wrong magic");
    }

    [Fact]
    public void TrainingOnAMissingDatasetIsOneLineAndNonZero()
        => AssertOneLineError(Run("train", "--local", "--dataset", Path.Combine(temp, "nothing"), "--out", Path.Combine(temp, "run")), "mrvae data make");

    [Fact]
    public void UnknownModelIsOneLineAndNonZero()
    {
        Assert.Equal(0, Run("data", "make", "--dataset", "polymnist", "--out", Path.Combine(temp, "d"), "--train", "64", "--test", "16").Exit);
        AssertOneLineError(Run("train", "--local", "--dataset", Path.Combine(temp, "d"), "--model", "gan", "--out", Path.Combine(temp, "run")), "unknown model");
    }

    [Fact]
    public void WrongFlagsAreOneLineNamingTheFlagAndTheHelp()
    {
        var r = Run("data", "make", "--datasett", "polymnist");
        AssertOneLineError(r, "Unrecognized command or argument '--datasett'");
        Assert.Equal(2, r.Exit);
        Assert.Contains("(see `mrvae data make --help`)", r.Output);
    }

    [Fact]
    public void UnknownCommandIsOneLineAndNonZero()
    {
        var r = Run("trian", "--local");
        AssertOneLineError(r, "Unrecognized command or argument 'trian'");
        Assert.DoesNotContain("Required command", r.Output);
    }

    [Fact]
    public void AValueOfTheWrongTypeIsOneLineInWords()
    {
        var r = Run("train", "--local", "--dataset", temp, "--out", temp, "--steps", "ten");
        AssertOneLineError(r, "Cannot parse argument 'ten' for option '--steps' as an integer");
        Assert.DoesNotContain("System.", r.Output);
    }

    [Fact]
    public void AnUnknownModelSettingIsOneLineAndNonZero()
    {
        var r = Run("train", "--local", "--dataset", temp, "--out", temp, "--set", "SelectionRamp=3");
        AssertOneLineError(r, "--set unknown model setting 'SelectionRamp'");
        Assert.Equal(2, r.Exit);
    }

    [Theory]
    [InlineData("experiment paper")]
    [InlineData("bench")]
    public void EveryCommandWithSetRejectsAnUnknownSettingBeforeWorking(string command)
    {
        var r = Run([.. command.Split(' '), "--out", Path.Combine(temp, "x"), "--set", "RelationBf17=true"]);
        AssertOneLineError(r, "--set unknown model setting 'RelationBf17'");
        Assert.Equal(2, r.Exit);
        Assert.False(Directory.Exists(Path.Combine(temp, "x")));
    }

    [Fact]
    public void ModelSettingsReachTheRunsConfiguration()
    {
        string data = SmallDataset();
        string run = Path.Combine(temp, "set");
        var r = RunSplit("train", "--local", "--dataset", data, "--latent", "4", "--batch", "32", "--steps", "1", "--json", "--out", run,
            "--set", "MembershipPrior=0.25", "--set", "beta_size=4");
        Assert.Equal(0, r.Exit);
        using var config = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "config.json")));
        var model = config.RootElement.GetProperty("model");
        Assert.Equal(0.25, model.GetProperty("membership_prior").GetDouble());
        Assert.Equal(4, model.GetProperty("beta_size").GetDouble());
    }

    [Fact, Trait("Category", "Integration")]   // an embedded silo
    public void LocalAndEmbeddedTrainingGiveTheSameLosses()
    {
        // The CLI's two trainers on their defaults (--local on one libtorch thread, as the silo's lanes): the same loss
        // terms at every step, to the bit, and the same final test loss.
        string data = SmallDataset();
        var runs = new[] { "--local", "--embedded" }.Select(mode =>
        {
            string run = Path.Combine(temp, "same" + mode);
            var r = RunSplit("train", mode, "--dataset", data, "--latent", "4", "--batch", "16", "--steps", "6", "--json", "--out", run);
            Assert.True(r.Exit == 0, r.Stderr);
            return File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(line =>
            {
                using var doc = System.Text.Json.JsonDocument.Parse(line);
                return doc.RootElement.EnumerateObject().Where(p => p.Name is not ("step_ms" or "bytes" or "members") && !p.Name.StartsWith("ms_")).Select(p => $"{p.Name}={p.Value.GetRawText()}").ToArray();
            }).ToArray();
        }).ToArray();
        Assert.Equal(6, runs[0].Length);
        Assert.Equal(runs[0].Length, runs[1].Length);
        for (int s = 0; s < runs[0].Length; s++) Assert.Equal(runs[0][s], runs[1][s]);
        // Evaluations after steps 4 (an epoch, with a checkpoint) and 6.
        var tests = new[] { "--local", "--embedded" }.Select(mode => File.ReadAllText(Path.Combine(temp, "same" + mode, "test.jsonl"))).ToArray();
        Assert.Equal(2, tests[0].Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Equal(tests[0], tests[1]);
    }

    [Fact]
    public void ThreadsIsOnlyForLocal()
        => AssertOneLineError(Run("train", "--embedded", "--threads", "2", "--dataset", temp, "--out", temp), "--threads applies to --local");

    [Fact]
    public void TrainingWithoutAModeIsOneLineAndNonZero()
        => AssertOneLineError(Run("train", "--dataset", temp, "--out", temp), "choose exactly one of --local, --embedded or --cluster");

    [Fact]
    public void TrainingEmbeddedOnAMissingDatasetIsOneLineAndNonZero()
        => AssertOneLineError(Run("train", "--embedded", "--dataset", Path.Combine(temp, "nothing"), "--out", Path.Combine(temp, "run")), "mrvae data make");

    [Fact]
    public void AnUnreachableClusterIsOneLineAndNonZeroAtOnce()
    {
        string data = SmallDataset();
        int port = ClosedPort();
        var watch = Stopwatch.StartNew();
        foreach (var connection in new[] { $"127.0.0.1:{port}", $"redis://127.0.0.1:{port}" })
            AssertOneLineError(Run("train", "--cluster", connection, "--dataset", data, "--out", Path.Combine(temp, "run")),
                $"cannot reach the cluster at {connection}: nothing answers on 127.0.0.1:{port}");
        // Not the client's 30 s gateway timeout: the closed port is found at once (generous bound for a loaded machine).
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(25), $"took {watch.Elapsed.TotalSeconds:F0} s");
    }

    [Fact, Trait("Category", "Integration")]   // an embedded silo
    public void EmbeddedTrainWithJsonKeepsStdoutForTheSummaryAlone()
    {
        string data = SmallDataset(), run = Path.Combine(temp, "emb");
        var r = RunSplit("train", "--embedded", "--dataset", data, "--latent", "4", "--batch", "32", "--steps", "2", "--json", "--out", run);
        Assert.True(r.Exit == 0, r.Stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout.Trim());
        Assert.Equal(2, doc.RootElement.GetProperty("steps").GetInt64());
        Assert.Equal(run, doc.RootElement.GetProperty("run_dir").GetString());
        // The run id, for status/attach/detach/stop from another terminal, goes to stderr.
        Assert.Matches(@"^run \S+ \(started\); from another terminal: mrvae status --run \S+", r.Stderr.Trim());
    }

    [Fact]
    public void TrainPrintsOneUnwrappedSummaryLineOrOneJsonObject()
    {
        string data = SmallDataset();
        var plain = RunSplit("train", "--local", "--dataset", data, "--latent", "4", "--batch", "32", "--steps", "2", "--out", Path.Combine(temp, "a"));
        Assert.Equal(0, plain.Exit);
        // Redirected output has no width: the summary stays on one line however long the run directory's path is.
        var done = plain.Stdout.Split('\n').Single(l => l.StartsWith("done: "));
        Assert.Matches(@"^done: 2 steps, last loss [0-9.]+, best test loss [0-9.]+ at step 2, median step \d+ ms; run in .*a$", done.TrimEnd());

        var json = RunSplit("train", "--local", "--dataset", data, "--latent", "4", "--batch", "32", "--steps", "2", "--json", "--out", Path.Combine(temp, "b"));
        Assert.Equal(0, json.Exit);
        Assert.Equal("", json.Stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(json.Stdout.Trim());   // the whole stdout: one JSON object, no progress
        Assert.Equal(2, doc.RootElement.GetProperty("steps").GetInt64());
        Assert.Equal(2, doc.RootElement.GetProperty("best_step").GetInt64());
        Assert.Equal(Path.Combine(temp, "b"), doc.RootElement.GetProperty("run_dir").GetString());
        // The same final loss as the last line of the run's metrics.
        using var last = System.Text.Json.JsonDocument.Parse(File.ReadAllLines(Path.Combine(temp, "b", "metrics.jsonl"))[^1]);
        Assert.Equal(last.RootElement.GetProperty("loss").GetDouble(), doc.RootElement.GetProperty("final_loss").GetDouble(), 6);
    }

    [Fact]
    public void MakeGridAndTrainWorkEndToEnd()
    {
        string data = Path.Combine(temp, "ext"), png = Path.Combine(temp, "grid.png"), run = Path.Combine(temp, "run");
        var make = Run("data", "make", "--dataset", "polymnist-extended", "--out", data, "--train", "96", "--test", "32", "--seed", "4");
        Assert.Equal(0, make.Exit);
        Assert.Equal(PolyMnistSpec.Extended().SharedMemberSets, PolyMnistStore.LoadSpec(data).SharedMemberSets);
        Assert.Equal(0, Run("data", "grid", "--data", data, "--out", png, "--count", "6").Exit);
        Assert.Equal((byte)0x89, File.ReadAllBytes(png)[0]);
        var train = Run("train", "--local", "--dataset", data, "--model", "mopoe", "--latent", "8", "--batch", "32", "--steps", "3", "--out", run);
        Assert.Equal(0, train.Exit);
        Assert.Equal(3, File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Length);
        Assert.True(File.Exists(Path.Combine(run, "checkpoints", "best", "state.json")));
    }

    [Fact]
    public void ADivergedRunExitsOneNamingStepAndTermAndItsLastGoodCheckpointResumes()
    {
        string data = Path.Combine(temp, "ring"), run = Path.Combine(temp, "diverged");
        Assert.Equal(0, Run("data", "make", "--dataset", "synthetic-ring", "--out", data, "--train", "256", "--test", "64").Exit);
        // The error is one line on stderr; stdout may carry the progress renderer's lines (without a terminal it
        // prints a percentage when a step is slow, as on a loaded machine).
        var (exit, stdout, stderr) = RunSplit("train", "--local", "--dataset", data, "--model", "mopoe", "--lr", "1e4", "--batch", "32", "--steps", "20", "--out", run);
        AssertOneLineError((exit, stderr.Trim()), "the training diverged");
        Assert.DoesNotContain("   at ", stdout);
        Assert.Equal(1, exit);
        Assert.Matches(@"step \d+: (kl|rec_\d|loss|modality \d's gradient|the coordinator's gradient) is (NaN|[+-]infinity)", stderr);
        Assert.Contains("--lr", stderr);
        foreach (var line in File.ReadAllLines(Path.Combine(run, "metrics.jsonl"))) System.Text.Json.JsonDocument.Parse(line).Dispose();
        // The last good checkpoint loads: resumed with a sane learning rate, the run trains to the end.
        var resumed = RunSplit("train", "--local", "--dataset", data, "--model", "mopoe", "--lr", "1e-3", "--batch", "32", "--steps", "20", "--out", run, "--resume", "--json");
        Assert.Equal(0, resumed.Exit);
        using var summary = System.Text.Json.JsonDocument.Parse(resumed.Stdout.Trim());
        Assert.Equal(20, summary.RootElement.GetProperty("steps").GetInt64());
    }

    [Fact]
    public void ResumeRefusesACheckpointWithOneFlippedByteNamingTheFile()
    {
        string data = Path.Combine(temp, "ring"), run = Path.Combine(temp, "flipped");
        Assert.Equal(0, Run("data", "make", "--dataset", "synthetic-ring", "--out", data, "--train", "256", "--test", "64").Exit);
        Assert.Equal(0, Run("train", "--local", "--dataset", data, "--batch", "32", "--steps", "4", "--out", run).Exit);
        string model = Path.Combine(run, "checkpoints", "last", "model.bin");
        var bytes = File.ReadAllBytes(model);
        bytes[bytes.Length - 7] ^= 0x01;
        File.WriteAllBytes(model, bytes);
        var before = File.ReadAllText(Path.Combine(run, "metrics.jsonl"));
        var resumed = Run("train", "--local", "--dataset", data, "--batch", "32", "--steps", "8", "--out", run, "--resume");
        AssertOneLineError(resumed, $"checkpoint file {model} is damaged");
        Assert.Equal(before, File.ReadAllText(Path.Combine(run, "metrics.jsonl")));   // nothing was trained from it
    }
}
