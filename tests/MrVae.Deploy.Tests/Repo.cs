using System.Diagnostics;
using System.Reflection;

namespace MrVae.Deploy.Tests;

/// <summary>The checkout under test and a way to run its tools in child processes.</summary>
public static class Repo
{
    static string Metadata(string key) =>
        typeof(Repo).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == key).Value!;

    public static string Root { get; } = Metadata("RepoRoot");
    public static string Configuration { get; } = Metadata("Configuration");

    public static string Path(string relative) => System.IO.Path.Combine(Root, relative);

    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public string Describe(string what) => $"{what} exited {ExitCode}\nstdout (tail):\n{Tail(Stdout)}\nstderr (tail):\n{Tail(Stderr)}";
        static string Tail(string s) => s.Length <= 4000 ? s : "…" + s[^4000..];
    }

    /// <summary>Runs a program to its end (killing it and its children after <paramref name="timeout"/>).</summary>
    public static Result Run(string file, IEnumerable<string> args, TimeSpan timeout, string? stdin = null,
        IDictionary<string, string>? environment = null, string? workingDirectory = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = stdin is not null,
            UseShellExecute = false, WorkingDirectory = workingDirectory ?? Root,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (environment is not null) foreach (var (k, v) in environment) psi.Environment[k] = v;
        Process p;
        try { p = Process.Start(psi)!; }
        catch (System.ComponentModel.Win32Exception e) { throw new InvalidOperationException($"cannot start {file}: {e.Message}", e); }
        using (p)
        {
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            if (stdin is not null)
            {
                p.StandardInput.Write(stdin);
                p.StandardInput.Close();
            }
            if (!p.WaitForExit(timeout))
            {
                p.Kill(entireProcessTree: true);
                p.WaitForExit(10_000);
                throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish in {timeout.TotalSeconds} s\nstdout:\n{stdout.Result}\nstderr:\n{stderr.Result}");
            }
            return new Result(p.ExitCode, stdout.Result, stderr.Result);
        }
    }

    /// <summary>The full path of a program on PATH, or null.</summary>
    public static string? Which(string name)
    {
        if (name.Contains('/')) return File.Exists(name) ? name : null;
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = System.IO.Path.Combine(dir, name);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }
}
