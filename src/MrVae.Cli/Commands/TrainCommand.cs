using System.CommandLine;
using MrVae.Data;
using MrVae.Model;
using MrVae.Model.Training;
using Spectre.Console;

namespace MrVae.Cli.Commands;

/// <summary>`mrvae train`: the single-process reference trainer (--local).</summary>
public static class TrainCommand
{
    public static Command Create()
    {
        var local = new Option<bool>("--local") { Description = "train in this process (the single-process reference trainer)" };
        var dataset = new Option<string>("--dataset") { Description = "dataset directory from `mrvae data make`", Required = true };
        var model = new Option<string>("--model") { Description = "mrvae, mopoe, mvae or mmvae", DefaultValueFactory = _ => "mrvae" };
        var latent = new Option<int>("--latent") { Description = "latent size D per modality", DefaultValueFactory = _ => 32 };
        var epochs = new Option<int?>("--epochs") { Description = "full passes over the training split (default 1)" };
        var steps = new Option<long?>("--steps") { Description = "optimiser steps (instead of --epochs)" };
        var batch = new Option<int>("--batch") { Description = "batch size", DefaultValueFactory = _ => 256 };
        var seed = new Option<long>("--seed") { Description = "run seed", DefaultValueFactory = _ => 0 };
        var lr = new Option<double>("--lr") { Description = "Adam learning rate", DefaultValueFactory = _ => 5e-4 };
        var beta = new Option<double>("--beta") { Description = "weight of the latent KL terms", DefaultValueFactory = _ => 2.5 };
        var output = new Option<string>("--out") { Description = "run directory (metrics.jsonl, checkpoints/)", Required = true };
        var resume = new Option<bool>("--resume") { Description = "continue from RUNDIR/checkpoints/last" };
        var cmd = new Command("train", "Train a model") { local, dataset, model, latent, epochs, steps, batch, seed, lr, beta, output, resume };
        cmd.Validators.Add(r =>
        {
            if (r.GetValue(epochs) is not null && r.GetValue(steps) is not null) r.AddError("give --epochs or --steps, not both");
        });
        cmd.SetAction(p =>
        {
            if (!p.GetValue(local))
                throw new ArgumentException("only --local training is available in this build (the Orleans --embedded and --cluster trainers are not implemented yet)");
            var kind = ParseModel(p.GetValue(model)!);
            string dataDir = p.GetValue(dataset)!;
            var spec = PolyMnistStore.LoadSpec(dataDir);
            var config = new ModelConfig { Kind = kind, Modalities = spec.Modalities, LatentDim = p.GetValue(latent), Beta = p.GetValue(beta) };
            var train = Load(dataDir, "train", spec.Modalities);
            var test = Load(dataDir, "test", spec.Modalities);
            var options = new TrainOptions
            {
                RunDirectory = p.GetValue(output)!, BatchSize = p.GetValue(batch), Steps = p.GetValue(steps), Epochs = p.GetValue(epochs) ?? 1,
                Seed = p.GetValue(seed), LearningRate = p.GetValue(lr), Resume = p.GetValue(resume),
            };
            using var trainer = new LocalTrainer(config, options, train, test);
            TrainResult? result = null;
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask($"{kind} D={config.LatentDim}", maxValue: trainer.TotalSteps);
                    task.Value = trainer.Step;
                    result = trainer.Run(r =>
                    {
                        task.Description = $"{kind} epoch {r.Epoch} step {r.Step + 1}/{r.TotalSteps} loss {r.Terms["loss"]:F1}";
                        task.Value = r.Step + 1;
                    });
                });
            AnsiConsole.MarkupLineInterpolated($"[green]done[/]: {result!.Steps} steps, last loss {result.FinalLoss:F2}, best test loss {result.BestTestLoss:F2} at step {result.BestStep}, median step {result.MedianStepMilliseconds:F0} ms; run in {result.RunDirectory}");
            return 0;
        });
        return cmd;
    }

    public static ModelKind ParseModel(string name) => name.ToLowerInvariant() switch
    {
        "mrvae" => ModelKind.MrVae,
        "mopoe" => ModelKind.MoPoE,
        "mvae" => ModelKind.Mvae,
        "mmvae" => ModelKind.Mmvae,
        _ => throw new ArgumentException($"unknown model '{name}': use mrvae, mopoe, mvae or mmvae"),
    };

    /// <summary>Reads every modality's shard of a split into memory.</summary>
    public static MultimodalDataset Load(string dir, string split, int modalities)
    {
        var shards = new ModalityImages?[modalities];
        for (int j = 0; j < modalities; j++)
        {
            var pixels = PolyMnistStore.LoadModality(dir, split, j, out int count);
            shards[j] = new ModalityImages(pixels, count);
        }
        return new MultimodalDataset(shards);
    }
}
