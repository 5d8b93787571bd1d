using System.CommandLine;
using MrVae.Evaluation;
using Spectre.Console;

namespace MrVae.Cli.Commands;

/// <summary>`mrvae experiment`: experiments over several trainings and evaluations (the paper's tables).</summary>
public static class ExperimentCommand
{
    /// <summary>`mrvae experiment paper --budget ci|quick|full --out DIR`.</summary>
    public static Command Create()
    {
        var budget = new Option<string>("--budget") { Description = "ci (minutes), quick, medium (the main digit of extended PolyMNIST learned, not yet its corners; about an hour on 2 cores), or full (the paper's scale)", DefaultValueFactory = _ => "ci" };
        var output = new Option<string>("--out") { Description = "experiment directory: data/, runs/, reports/, tables.md, results.json", Required = true };
        var seed = new Option<long>("--seed") { Description = "seed of data, models and evaluation", DefaultValueFactory = _ => 0 };
        var models = new Option<string>("--models") { Description = "comma-separated models", DefaultValueFactory = _ => "mrvae,mopoe,mvae,mmvae" };
        var datasets = new Option<string>("--datasets") { Description = "comma-separated datasets: polymnist, polymnist-extended or the path of a JSON sharing spec", DefaultValueFactory = _ => "polymnist,polymnist-extended" };
        var mnist = new Option<string?>("--mnist") { Description = "directory with the MNIST IDX files (default: the usual lookup)" };
        var paper = new Command("paper", "Train mrVAE, MoPoE, MVAE and MMVAE on vanilla and extended PolyMNIST with one budget, evaluate, write the paper's tables beside ours")
        {
            budget, output, seed, models, datasets, mnist,
        };
        var settings = TrainCommand.SettingsOption(paper, "a model option NAME=VALUE for every model (a ModelConfig property, e.g. MembershipPrior=0.1), as train --set; repeatable");
        paper.SetAction(p =>
        {
            var kinds = p.GetValue(models)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(TrainCommand.ParseModel).Distinct().ToArray();
            var sets = p.GetValue(datasets)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(d => { MrVae.Data.PolyMnistSpec.Resolve(d); return d; }).Distinct().ToArray();
            CliErrors.Require(kinds.Length > 0, "--models names no model: use mrvae, mopoe, mvae, mmvae");
            CliErrors.Require(sets.Length > 0, "--datasets names no dataset: use polymnist, polymnist-extended or a JSON sharing spec");
            var results = RunProgress.Runs((onStep, log) => PaperExperiment.Run(new ExperimentOptions
            {
                OutputDirectory = p.GetValue(output)!, Budget = ExperimentBudget.Named(p.GetValue(budget)!), Seed = p.GetValue(seed),
                Mnist = p.GetValue(mnist), Models = kinds, Datasets = sets, OnStep = onStep, Settings = p.GetValue(settings) ?? [],
            }, log));
            AnsiConsole.WriteLine(File.ReadAllText(Path.Combine(p.GetValue(output)!, "tables.md")));
            return 0;
        });
        return new Command("experiment", "Experiments over several trainings and evaluations") { paper };
    }
}
