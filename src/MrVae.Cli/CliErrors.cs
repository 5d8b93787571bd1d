using System.CommandLine;
using MrVae.Data;
using MrVae.Model.Training;
using Spectre.Console;

namespace MrVae.Cli;

/// <summary>Known failures become one red line naming the cause and the fix, and a non-zero exit; no stack traces.</summary>
public static class CliErrors
{
    public static int Invoke(RootCommand root, string[] args)
    {
        var config = new InvocationConfiguration { EnableDefaultExceptionHandler = false };
        try
        {
            return root.Parse(args).Invoke(config);
        }
        catch (Exception e) when (e is DataFormatException or CheckpointException or IOException or ArgumentException or UnauthorizedAccessException or InvalidOperationException)
        {
            AnsiConsole.MarkupLineInterpolated($"[red]error:[/] {e.Message}");
            return 1;
        }
    }
}
