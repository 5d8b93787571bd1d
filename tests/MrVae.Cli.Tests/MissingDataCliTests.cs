using MrVae.Data;

namespace MrVae.Cli.Tests;

/// <summary>Missing modalities per sample through the console: `data make --missing`, then `train --local` and `--embedded` with keyed ids.</summary>
public sealed class MissingDataCliTests : IDisposable
{
    readonly string temp = Path.Combine(Path.GetTempPath(), "mrvae-missing-cli-" + Guid.NewGuid().ToString("N"));
    public MissingDataCliTests() => Directory.CreateDirectory(temp);
    public void Dispose() => Directory.Delete(temp, recursive: true);

    static (int Exit, string Stdout, string Stderr) Run(string[] args, Dictionary<string, string>? environment = null)
    {
        var psi = CliProcess.StartInfo(args, columns: 400);
        foreach (var (k, v) in environment ?? new()) psi.Environment[k] = v;
        var (exit, stdout, stderr) = CliProcess.Run(psi);
        return (exit, stdout.Trim(), stderr.Trim());
    }

    [Fact]
    public void MakeWithMissingKeepsEachModalitysOwnSamplesAndRefusesABadProbability()
    {
        string data = Path.Combine(temp, "ring");
        var make = Run(["data", "make", "--dataset", "synthetic-ring", "--out", data, "--train", "200", "--test", "20", "--missing", "0.4"]);
        Assert.True(make.Exit == 0, make.Stderr);
        Assert.Contains("missing 0.4: training samples kept per modality", make.Stdout);
        Assert.All(Enumerable.Range(0, 5), j => Assert.InRange(SampleIds.LoadModality(data, "train", j)!.Length, 80, 170));
        Assert.Null(SampleIds.LoadModality(data, "test", 0));

        var bad = Run(["data", "make", "--dataset", "synthetic-ring", "--out", Path.Combine(temp, "bad"), "--missing", "1"]);
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("--missing must be at least 0 and below 1", bad.Stderr);

        // "missing" in a spec file, when --missing is not given.
        string spec = Path.Combine(temp, "pair.json");
        File.WriteAllText(spec, """{"name": "pair", "kind": "vector", "modalities": 2, "observed_dim": 4, "private_dim": 1, "noise": 0.1, "factors": [{"name": "s", "members": [0, 1], "dim": 2}], "missing": 0.5}""");
        var fromSpec = Run(["data", "make", "--dataset", spec, "--out", Path.Combine(temp, "pair"), "--train", "100", "--test", "10"]);
        Assert.True(fromSpec.Exit == 0, fromSpec.Stderr);
        Assert.Contains("missing 0.5", fromSpec.Stdout);
    }

    [Fact, Trait("Category", "Integration")]   // an embedded silo
    public void LocalAndEmbeddedTrainingGiveTheSameLossesOnIncompleteShardsWithKeyedIds()
    {
        string data = Path.Combine(temp, "ring");
        Assert.Equal(0, Run(["data", "make", "--dataset", "synthetic-ring", "--out", data, "--train", "64", "--test", "16", "--missing", "0.5"]).Exit);
        // The nodes' shared secret comes from the environment (never an argument): the coordinator sees only keyed ids.
        var secret = new Dictionary<string, string> { [SampleIds.SecretVariable] = "issue-23-test-secret" };
        var runs = new[] { "--local", "--embedded" }.Select(mode =>
        {
            string run = Path.Combine(temp, "same" + mode);
            var r = Run(["train", mode, "--dataset", data, "--latent", "4", "--batch", "16", "--steps", "5", "--json", "--out", run], secret);
            Assert.True(r.Exit == 0, r.Stderr);
            return File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(line =>
            {
                using var doc = System.Text.Json.JsonDocument.Parse(line);
                return doc.RootElement.EnumerateObject().Where(p => p.Name is not ("step_ms" or "bytes" or "members") && !p.Name.StartsWith("ms_")).Select(p => $"{p.Name}={p.Value.GetRawText()}").ToArray();
            }).ToArray();
        }).ToArray();
        Assert.Equal(5, runs[0].Length);
        Assert.Equal(runs[0].Length, runs[1].Length);
        for (int s = 0; s < runs[0].Length; s++) Assert.Equal(runs[0][s], runs[1][s]);
        Assert.Equal(File.ReadAllText(Path.Combine(temp, "same--local", "test.jsonl")), File.ReadAllText(Path.Combine(temp, "same--embedded", "test.jsonl")));
    }
}
