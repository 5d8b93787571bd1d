using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.Reflection;

namespace MrVae.Cli;

/// <summary>One example per command, printed at the end of its --help; and --version as "mrvae VERSION (commit SHA)".</summary>
public static class Examples
{
    /// <summary>Command path (without "mrvae") → one command line that works as written from the repository root.</summary>
    public static readonly IReadOnlyDictionary<string, string> ByCommand = new Dictionary<string, string>
    {
        [""] = "mrvae demo",
        ["data"] = "mrvae data make --dataset synthetic-ring --out data/ring",
        ["data make"] = "mrvae data make --dataset polymnist --out data/van --train 10000 --test 2000",
        ["data mnist"] = "mrvae data mnist --out data/mnist",
        ["data grid"] = "mrvae data grid --data data/van --out van.png --count 10 --scale 3",
        ["train"] = "mrvae train --embedded --dataset data/ring --model mrvae --out runs/ring",
        ["demo"] = "mrvae demo --out runs/demo",
        ["bench"] = "mrvae bench --out b.json --models mrvae --latent 16 --modes local,embedded --batch 32 --steps 2 --repeats 1 --memory-steps 0",
        ["bench chaos"] = "mrvae bench chaos --data data/ring --work runs/chaos --steps 500 --every 30",
        ["eval"] = "mrvae eval --run runs/ring --data data/ring --out runs/ring/eval",
        ["experiment"] = "mrvae experiment paper --budget ci --out runs/paper-ci",
        ["experiment paper"] = "mrvae experiment paper --budget ci --out runs/paper-ci",
        ["status"] = "mrvae status --run ID --watch",
        ["attach"] = "mrvae attach --run ID --modality 2",
        ["detach"] = "mrvae detach --run ID --modality 2",
        ["stop"] = "mrvae stop --run ID --wait",
        ["certs"] = "mrvae certs init --out certs/ca",
        ["certs init"] = "mrvae certs init --out certs/ca",
        ["certs issue"] = "mrvae certs issue --ca certs/ca --name silo-a --role silo --modalities 0,1 --out certs/silo-a",
    };

    /// <summary>"1.0.0 (commit 4b253ea)" from the assembly's informational version (the SDK appends +SHA).</summary>
    public static string Version()
    {
        var info = typeof(Examples).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";
        var parts = info.Split('+', 2);
        return parts.Length == 2 ? $"{parts[0]} (commit {parts[1][..Math.Min(7, parts[1].Length)]})" : $"{parts[0]} (commit unknown)";
    }

    /// <summary>Puts the example under every command's help and the commit into --version.</summary>
    public static void Install(RootCommand root)
    {
        foreach (var option in root.Options)
        {
            if (option is HelpOption help && help.Action is HelpAction inner) help.Action = new HelpWithExample(inner);
            if (option is VersionOption version) version.Action = new PrintVersion();
        }
    }

    public static bool IsHelp(ParseResult parse) => parse.Action is HelpWithExample or HelpAction;

    public static string PathOf(Command command)
    {
        var names = new List<string>();
        for (var c = command; c is not RootCommand; c = c.Parents.OfType<Command>().First()) names.Insert(0, c.Name);
        return string.Join(' ', names);
    }

    sealed class HelpWithExample(HelpAction inner) : SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parse)
        {
            int exit = inner.Invoke(parse);
            if (ByCommand.TryGetValue(PathOf(parse.CommandResult.Command), out var example))
            {
                Console.WriteLine("Example:");
                Console.WriteLine($"  {example}");
                Console.WriteLine();
            }
            return exit;
        }
    }

    sealed class PrintVersion : SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parse)
        {
            Console.WriteLine($"mrvae {Version()}");
            return 0;
        }
    }
}
