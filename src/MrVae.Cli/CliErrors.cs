using System.CommandLine;
using MrVae.Data;
using MrVae.Model.Training;

namespace MrVae.Cli;

/// <summary>Known failures become one red line naming the cause and the fix, and a non-zero exit; no stack traces.</summary>
public static class CliErrors
{
    /// <summary>One line on stderr, red on a terminal, never wrapped (scripts and logs read it whole).</summary>
    public static void WriteError(string message)
    {
        string line = message.ReplaceLineEndings(" ");
        Console.Error.WriteLine(Console.IsErrorRedirected ? $"error: {line}" : $"\u001b[31merror:\u001b[0m {line}");
    }

    public static int Invoke(RootCommand root, string[] args)
    {
        var config = new InvocationConfiguration { EnableDefaultExceptionHandler = false };
        try
        {
            return root.Parse(args).Invoke(config);
        }
        catch (Exception e) when (e is DataFormatException or CheckpointException or IOException or ArgumentException or UnauthorizedAccessException or InvalidOperationException or Orleans.Runtime.OrleansException or TimeoutException)
        {
            WriteError(e.Message);
            // MRVAE_DEBUG=1: the whole exception, for bug reports.
            if (Environment.GetEnvironmentVariable("MRVAE_DEBUG") is "1" or "true") Console.Error.WriteLine(e);
            return 1;
        }
    }
}
