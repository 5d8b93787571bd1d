using System.Diagnostics;
using System.Reflection;

namespace MrVae.Cli.Tests;

/// <summary>The built mrvae console (the dll the build put beside these tests) as its own process, output redirected.</summary>
static class CliProcess
{
    static string Dll()
    {
        var dir = typeof(CliProcess).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "CliOutput").Value!;
        var dll = Path.Combine(dir, "mrvae.dll");
        Assert.True(File.Exists(dll), $"mrvae.dll not built at {dll}");
        return dll;
    }

    /// <param name="columns">The terminal width the console sees (COLUMNS); null: none, as scripts and CI logs.</param>
    public static ProcessStartInfo StartInfo(IEnumerable<string> args, int? columns)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Dll());
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (columns is { } width) psi.Environment["COLUMNS"] = width.ToString();
        else psi.Environment.Remove("COLUMNS");
        return psi;
    }

    /// <summary>Runs to the end (at most <paramref name="minutes"/>): exit code, stdout, stderr.</summary>
    public static (int Exit, string Stdout, string Stderr) Run(ProcessStartInfo psi, int minutes = 2)
    {
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(minutes)), $"mrvae {string.Join(' ', psi.ArgumentList.Skip(1))} did not finish in {minutes} minutes");
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
