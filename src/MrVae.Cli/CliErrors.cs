using System.CommandLine;
using System.Text.RegularExpressions;
using MrVae.Client;
using MrVae.Data;
using MrVae.Model.Training;
using Spectre.Console;

namespace MrVae.Cli;

/// <summary>
/// Known failures become one red line naming the cause and the fix, and exit 1; wrong flags exit 2; a bug (any other
/// exception) is one line saying so and where its stack trace was written, and exit 70.
/// </summary>
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

        ParseResult parse;
        // A validator that throws is a bug like any other (validators report mistakes with AddError).
        try { parse = root.Parse(args); }
        catch (Exception e) { return Bug(e, args); }
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
            // For the tests of the crash path: an unexpected exception inside the command, as a bug would raise.
            if (Environment.GetEnvironmentVariable("MRVAE_DEBUG_THROW") is "1") throw new InvalidOperationException("MRVAE_DEBUG_THROW=1: an injected fault");
            return parse.Invoke(config);
        }
        catch (Exception e) when (IsExpected(e))
        {
            WriteError(e.Message);
            // MRVAE_DEBUG=1: the whole exception, for bug reports.
            if (Debug) Console.Error.WriteLine(e);
            return 1;
        }
        catch (StackExchange.Redis.RedisConnectionException e)
        {
            WriteError($"cannot reach the cluster's Redis ({e.Message.Split(". ")[0]}): start it (deploy/local-cluster.sh) or check --cluster");
            return 1;
        }
        catch (Exception e)
        {
            return Bug(e, args);
        }
    }

    static bool Debug => Environment.GetEnvironmentVariable("MRVAE_DEBUG") is "1" or "true";

    /// <summary>
    /// What ends a command in one line: the user's mistakes (<see cref="UserInputException"/>: options, data,
    /// checkpoints, run ids), a run's own outcome (diverged, failed on the cluster), and the environment (a file that
    /// cannot be written, a cluster that does not answer). Everything else is a bug.
    /// </summary>
    public static bool IsExpected(Exception e) => e is UserInputException or NonFiniteException or RunFailedException
        or IOException or UnauthorizedAccessException or Orleans.Runtime.OrleansException or TimeoutException;

    /// <summary>
    /// A bug: one line naming it and the log file with the whole exception (type, message, stack trace), which is
    /// $MRVAE_CRASH_DIR/mrvae-crash-TIME-PID.log (default: the temporary directory's mrvae/); exit code 70.
    /// </summary>
    static int Bug(Exception e, string[] args)
    {
        string? log = null;
        try
        {
            string dir = Environment.GetEnvironmentVariable("MRVAE_CRASH_DIR") is { Length: > 0 } d ? d : Path.Combine(Path.GetTempPath(), "mrvae");
            Directory.CreateDirectory(dir);
            log = Path.Combine(dir, $"mrvae-crash-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{Environment.ProcessId}.log");
            File.WriteAllText(log, $"mrvae {string.Join(' ', args)}\n{DateTime.UtcNow:O}\n{e}\n");
        }
        catch (Exception) { log = null; /* the message below says so */ }
        string where = log is null ? "the stack trace could not be written to a file; MRVAE_DEBUG=1 prints it" : $"the stack trace is in {log}";
        WriteError($"mrvae failed unexpectedly, which is a bug: {e.GetType().Name}: {e.Message} ({where}; please report it)");
        if (Debug) Console.Error.WriteLine(e);
        return BugExitCode;
    }

    /// <summary>The exit code of a bug (EX_SOFTWARE); a user's mistake exits 1, wrong flags 2.</summary>
    public const int BugExitCode = 70;

    /// <summary>Judges a command's input: a <see cref="UserInputException"/> with <paramref name="message"/> unless <paramref name="ok"/>.</summary>
    public static void Require(bool ok, string message)
    {
        if (!ok) throw new UserInputException(message);
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
