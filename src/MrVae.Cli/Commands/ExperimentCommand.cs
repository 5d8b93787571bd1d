using System.CommandLine;
using MrVae.Evaluation;
using Spectre.Console;

namespace MrVae.Cli.Commands;

/// <summary>`mrvae experiment`: experiments over several trainings and evaluations (the paper's tables).</summary>
public static class ExperimentCommand
{
    /// <summary>`mrvae experiment paper --budget ci|quick|medium|full --out DIR`.</summary>
    public static Command Create()
    {
        var budget = new Option<string>("--budget") { Description = "ci (minutes), quick, medium (D = 64, 5616 steps, every digit weighed alike so that extended PolyMNIST's corners are learned; KL and structure warm-up over the first 1500 steps; under an hour for mrVAE and MoPoE on 2 cores), or full (the paper's scale, warm-up over the first 3000 steps)", DefaultValueFactory = _ => "ci" };
        var output = new Option<string>("--out") { Description = "experiment directory: data/, runs/, reports/, tables.md, results.json", Required = true };
        var seed = new Option<long>("--seed") { Description = "seed of data, models and evaluation", DefaultValueFactory = _ => 0 };
        var models = new Option<string>("--models") { Description = "comma-separated models", DefaultValueFactory = _ => "mrvae,mopoe,mvae,mmvae" };
        var datasets = new Option<string>("--datasets") { Description = "comma-separated datasets: polymnist, polymnist-extended or the path of a JSON sharing spec", DefaultValueFactory = _ => "polymnist,polymnist-extended" };
        var mnist = new Option<string?>("--mnist") { Description = "directory with the MNIST IDX files (default: the usual lookup)" };
        var parallel = new Option<int?>("--parallel") { Description = "datasets trained and evaluated at the same time, each in a process of its own with cores / N libtorch threads (default: one per core, at most one per dataset; 1: one after another in this process)" };
        var part = new Option<string?>("--part") { Hidden = true, Description = "run one dataset as a worker of --parallel and write OUT/parts/NAME.json" };
        var paper = new Command("paper", "Train mrVAE, MoPoE, MVAE and MMVAE on vanilla and extended PolyMNIST with one budget, evaluate, write the paper's tables beside ours")
        {
            budget, output, seed, models, datasets, mnist, parallel, part,
        };
        var settings = TrainCommand.SettingsOption(paper, "a model option NAME=VALUE for every model (a ModelConfig property, e.g. MembershipPrior=0.1), as train --set; repeatable");
        paper.SetAction(p =>
        {
            var kinds = p.GetValue(models)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(TrainCommand.ParseModel).Distinct().ToArray();
            var sets = p.GetValue(datasets)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Distinct().ToArray();
            CliErrors.Require(kinds.Length > 0, "--models names no model: use mrvae, mopoe, mvae, mmvae");
            CliErrors.Require(sets.Length > 0, "--datasets names no dataset: use polymnist, polymnist-extended or a JSON sharing spec");
            var options = new ExperimentOptions
            {
                OutputDirectory = p.GetValue(output)!, Budget = ExperimentBudget.Named(p.GetValue(budget)!), Seed = p.GetValue(seed),
                Mnist = p.GetValue(mnist), Models = kinds, Datasets = sets, Settings = p.GetValue(settings) ?? [],
            };
            PaperExperiment.Validate(options);
            if (p.GetValue(part) is { } one)
            {
                CliErrors.Require(sets.Contains(one), $"--part {one} is not one of --datasets");
                RunProgress.Runs((onStep, log) => PaperExperiment.RunPart(options with { OnStep = onStep }, one, log));
                return 0;
            }
            int lanes = p.GetValue(parallel) ?? Math.Min(Environment.ProcessorCount, sets.Length);
            CliErrors.Require(lanes >= 1, $"--parallel must be at least 1, got {lanes}");
            lanes = Math.Min(lanes, sets.Length);
            if (lanes == 1)
                RunProgress.Runs((onStep, log) => PaperExperiment.Run(options with { OnStep = onStep }, log));
            else
            {
                var watch = System.Diagnostics.Stopwatch.StartNew();
                var failures = ExperimentWorkers.Run(sets, lanes, options.OutputDirectory, d => WorkerArguments(p, d), AnsiConsole.WriteLine);
                if (failures.Count > 0)
                {
                    Console.Error.WriteLine($"error: the experiment's worker for {string.Join(", ", failures)} failed; finished runs are kept and reused when the command runs again");
                    return 1;
                }
                PaperExperiment.Combine(options, watch.Elapsed, AnsiConsole.WriteLine);
            }
            AnsiConsole.WriteLine(File.ReadAllText(Path.Combine(p.GetValue(output)!, "tables.md")));
            return 0;
        });
        // A worker gets the user's options, one dataset, and --parallel 1.
        string[] WorkerArguments(ParseResult p, string dataset)
        {
            var args = new List<string> { "experiment", "paper", "--budget", p.GetValue(budget)!, "--out", p.GetValue(output)!, "--seed", p.GetValue(seed).ToString(System.Globalization.CultureInfo.InvariantCulture),
                "--models", p.GetValue(models)!, "--datasets", p.GetValue(datasets)!, "--part", dataset, "--parallel", "1" };
            if (p.GetValue(mnist) is { } m) args.AddRange(["--mnist", m]);
            foreach (var s in p.GetValue(settings) ?? []) args.AddRange(["--set", s]);
            return [.. args];
        }
        return new Command("experiment", "Experiments over several trainings and evaluations") { paper };
    }
}
