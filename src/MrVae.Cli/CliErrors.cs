using System.CommandLine;
using System.Text.RegularExpressions;
using MrVae.Data;
using MrVae.Model.Training;
using Spectre.Console;

namespace MrVae.Cli;

/// <summary>Known failures become one red line naming the cause and the fix, and a non-zero exit; no stack traces.</summary>
public static partial class CliErrors
{
    /// <summary>One line on stderr, red on a terminal, never wrapped (scripts and logs read it whole).</summary>
    public static void WriteError(string message)
    {
        string line = message.ReplaceLineEndings(" ");
        Console.Error.WriteLine(Console.IsErrorRedirected ? $"error: {line}" : $"\u001b[31merror:\u001b[0m {line}");
    }

    public static int Invoke(RootCommand root, string[] args)
    {
        // Redirected output (a file, a pipe, CI logs) has no width: Spectre would wrap every line at 80 columns.
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 100_000;
        // `mrvae` alone: what there is to do.
        if (args.Length == 0) args = ["--help"];

        var parse = root.Parse(args);
        // --help shows the help even where the command's own checks fail (a required mode not given, say).
        if (parse.Errors.Count > 0 && !Examples.IsHelp(parse))
        {
            // Wrong flags or values: one line with every problem and where the usage is, instead of the whole help.
            var path = new List<string>();
            for (var r = parse.CommandResult; r is not null; r = r.Parent as System.CommandLine.Parsing.CommandResult)
                path.Insert(0, r.Parent is null ? "mrvae" : r.Command.Name);
            var messages = parse.Errors.Select(e => Readable(e.Message)).ToList();
            // An unknown word is the problem to name; that no command was then given follows from it.
            if (messages.Any(m => m.StartsWith("Unrecognized"))) messages.RemoveAll(m => m.StartsWith("Required command was not provided"));
            WriteError($"{string.Join(" ", messages)} (see `{string.Join(' ', path)} --help`)");
            return 2;
        }
        var config = new InvocationConfiguration { EnableDefaultExceptionHandler = false };
        try
        {
            return parse.Invoke(config);
        }
        catch (Exception e) when (e is DataFormatException or CheckpointException or NonFiniteException or IOException or ArgumentException or UnauthorizedAccessException or InvalidOperationException or Orleans.Runtime.OrleansException or TimeoutException)
        {
            WriteError(e.Message);
            // MRVAE_DEBUG=1: the whole exception, for bug reports.
            if (Environment.GetEnvironmentVariable("MRVAE_DEBUG") is "1" or "true") Console.Error.WriteLine(e);
            return 1;
        }
        catch (StackExchange.Redis.RedisConnectionException e)
        {
            WriteError($"cannot reach the cluster's Redis ({e.Message.Split(". ")[0]}): start it (deploy/local-cluster.sh) or check --cluster");
            return 1;
        }
    }

    /// <summary>System.CommandLine's messages with .NET type names said in words.</summary>
    static string Readable(string message) => ExpectedType().Replace(message, m => m.Groups[1].Value switch
    {
        "Int32" or "Int64" => "as an integer",
        "Double" or "Single" => "as a number",
        "Boolean" => "as true or false",
        var t => $"as {t}",
    });

    [GeneratedRegex(@"as expected type '(?:System\.Nullable`1\[)?System\.(\w+)\]?'")] private static partial Regex ExpectedType();
}
