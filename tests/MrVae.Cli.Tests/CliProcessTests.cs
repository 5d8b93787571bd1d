using System.Diagnostics;
using System.Reflection;
using MrVae.Data;

namespace MrVae.Cli.Tests;

/// <summary>The console as a user runs it: a separate process, its exit code and what it prints.</summary>
public sealed class CliProcessTests : IDisposable
{
    readonly string temp = Path.Combine(Path.GetTempPath(), "mrvae-cli-" + Guid.NewGuid().ToString("N"));
    public CliProcessTests() => Directory.CreateDirectory(temp);
    public void Dispose() => Directory.Delete(temp, recursive: true);

    static string CliDll()
    {
        var dir = typeof(CliProcessTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "CliOutput").Value!;
        var dll = Path.Combine(dir, "mrvae.dll");
        Assert.True(File.Exists(dll), $"mrvae.dll not built at {dll}");
        return dll;
    }

    static (int Exit, string Output) Run(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(CliDll());
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["COLUMNS"] = "400";   // keep Spectre from wrapping lines
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(120_000), "mrvae did not finish in 2 minutes");
        return (p.ExitCode, (stdout.Result + stderr.Result).Trim());
    }

    static void AssertOneLineError((int Exit, string Output) r, string expected)
    {
        Assert.NotEqual(0, r.Exit);
        Assert.Contains(expected, r.Output);
        Assert.DoesNotContain("   at ", r.Output);                       // no stack trace
        Assert.Single(r.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries));
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
    public void WrongFlagsFailWithUsage()
    {
        var r = Run("data", "make", "--datasett", "polymnist");
        Assert.NotEqual(0, r.Exit);
        Assert.Contains("--datasett", r.Output);
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
}
