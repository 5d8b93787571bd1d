using System.CommandLine;
using MrVae.Data;
using MrVae.Model;
using MrVae.Model.Training;
using Microsoft.Extensions.DependencyInjection;
using MrVae.Client;
using Spectre.Console;

namespace MrVae.Cli.Commands;

/// <summary>
/// `mrvae train`: trains a model in one of three modes: in this process (--local, the single-process reference
/// trainer), through grains on an in-process silo (--embedded), or on running silos (--cluster).
/// </summary>
public static class TrainCommand
{
    public static Command Create()
    {
        var local = new Option<bool>("--local") { Description = "train in this process (the single-process reference trainer)" };
        var embedded = new Option<bool>("--embedded") { Description = "train through grains on an in-process Orleans silo" };
        var cluster = new Option<string?>("--cluster") { Description = "train through grains on a running cluster: redis://HOST:PORT or HOST:GATEWAYPORT" };
        var tls = CliCluster.TlsOption();
        var siloData = new Option<string?>("--silo-data") { Description = "with --cluster: the dataset directory as the silos see it (default: --dataset)" };
        var dataset = new Option<string>("--dataset") { Description = "dataset directory from `mrvae data make`", Required = true };
        var model = new Option<string>("--model") { Description = "mrvae, mopoe, mvae or mmvae", DefaultValueFactory = _ => "mrvae" };
        var latent = new Option<int?>("--latent") { Description = "latent size D per modality (default 64 for images, of which mrVAE never shares the last half, PrivatePositions; 16 for vector data)" };
        var epochs = new Option<int?>("--epochs") { Description = "full passes over the training split (default: 1 for images; vector data trains 3000 steps)" };
        var steps = new Option<long?>("--steps") { Description = "optimiser steps (instead of --epochs)" };
        var batch = new Option<int>("--batch") { Description = "batch size", DefaultValueFactory = _ => 256 };
        var seed = new Option<long>("--seed") { Description = "run seed", DefaultValueFactory = _ => 0 };
        var lr = new Option<double?>("--lr") { Description = "Adam learning rate (default 5e-4 for images, 1e-3 for vector data)" };
        var beta = new Option<double?>("--beta") { Description = "weight of the latent KL terms (default 2.5 for images, 1 for vector data)" };
        var likelihood = new Option<PixelLikelihood?>("--likelihood") { Description = "likelihood: Laplace (the paper's, docs/setup.md) or Gaussian (learns digits far sooner); default Laplace for images, Gaussian for vector data" };
        var scale = new Option<double?>("--likelihood-scale") { Description = "Laplace b or Gaussian σ (default 0.75 for Laplace, 0.1 for Gaussian)" };
        var output = new Option<string>("--out") { Description = "run directory (metrics.jsonl, checkpoints/)", Required = true };
        var resume = new Option<bool>("--resume") { Description = "continue the run in --out from its last checkpoint (--local: RUNDIR/checkpoints/last; grains: grain storage)" };
        var runId = new Option<string?>("--run-id") { Description = "with --embedded or --cluster: the run's id (default: the run directory's name and a random suffix)" };
        var json = new Option<bool>("--json") { Description = "no progress bar; print the final summary as one JSON object (steps, losses, run_dir)" };
        var onNonFinite = new Option<NonFiniteAction>("--on-nonfinite")
        {
            Description = "at a step whose loss or gradients are NaN or infinite: stop (default; exit code 1, the last good checkpoint kept) or skip the step (after 10 in a row: stop)",
            DefaultValueFactory = _ => NonFiniteAction.Stop,
        };
        var threads = new Option<int>("--threads")
        {
            Description = "with --local: libtorch threads. 1 does the float operations of the silos' lanes, so --embedded reproduces the run bit for bit; 0: libtorch's default (one per core, another summation order)",
            DefaultValueFactory = _ => 1,
        };
        var cmd = new Command("train", "Train a model: --local (one process), --embedded (in-process silo) or --cluster (running silos)") { local, embedded, cluster, tls, siloData, dataset, model, latent, epochs, steps, batch, seed, lr, beta, likelihood, scale, output, resume, runId, json, threads, onNonFinite };
        var settings = SettingsOption(cmd, "any other model option NAME=VALUE (a ModelConfig property, e.g. MembershipPrior=0.1 or BetaSize=3); repeatable");
        cmd.Validators.Add(r =>
        {
            if (r.GetValue(epochs) is not null && r.GetValue(steps) is not null) r.AddError("give --epochs or --steps, not both");
            int modes = (r.GetValue(local) ? 1 : 0) + (r.GetValue(embedded) ? 1 : 0) + (r.GetValue(cluster) is not null ? 1 : 0);
            if (modes != 1) r.AddError("choose exactly one of --local, --embedded or --cluster CONNECTION");
            if (r.GetResult(tls) is { Implicit: false } && r.GetValue(cluster) is null) r.AddError("--tls applies to --cluster (an embedded run has no network links to secure)");
            if (r.GetValue(threads) < 0) r.AddError("--threads must be 0 (libtorch's default) or more");
            else if (r.GetResult(threads) is { Implicit: false } && !r.GetValue(local))
                r.AddError("--threads applies to --local; silos set theirs with MrVae:Silo:TorchThreads");
        });
        cmd.SetAction(async (p, cancel) =>
        {
            var kind = ParseModel(p.GetValue(model)!);
            string dataDir = p.GetValue(dataset)!;
            var spec = DatasetDirectory.LoadSpec(dataDir);
            var defaults = TrainingDefaults.For(spec.Kind);
            var pixel = p.GetValue(likelihood) ?? defaults.Likelihood;
            var config = new ModelConfig { Kind = kind, Modalities = spec.Modalities, LatentDim = p.GetValue(latent) ?? defaults.LatentDim, Beta = p.GetValue(beta) ?? defaults.Beta,
                Likelihood = pixel, LikelihoodScale = p.GetValue(scale) ?? (pixel == PixelLikelihood.Gaussian ? 0.1 : 0.75),
                ObservedDim = spec.Vectors?.ObservedDim ?? 0 };
            config = defaults.ForMrVae(config).WithDigitSquares(spec.Images).WithSettings(p.GetValue(settings) ?? []);
            // A resumed grain run goes on with the model it started with (its checkpoint has it), whatever the flags say.
            if (p.GetValue(resume) && !p.GetValue(local)) config = StartedModel(p.GetValue(output)!) ?? config;
            var options = new TrainOptions
            {
                RunDirectory = p.GetValue(output)!, BatchSize = p.GetValue(batch), Steps = p.GetValue(steps) ?? (p.GetValue(epochs) is null ? defaults.Steps : null),
                Epochs = p.GetValue(epochs) ?? 1, Seed = p.GetValue(seed), LearningRate = p.GetValue(lr) ?? defaults.LearningRate, Resume = p.GetValue(resume), Data = DatasetFingerprint.Of(dataDir),
                OnNonFinite = p.GetValue(onNonFinite),
            };
            TrainResult result;
            if (p.GetValue(local))
            {
                // libtorch's thread count belongs to the calling thread, which runs the whole training below.
                if (p.GetValue(threads) > 0) TorchSharp.torch.set_num_threads(p.GetValue(threads));
                using var trainer = new LocalTrainer(config, options, MultimodalDataset.Load(dataDir, "train", spec.Modalities), MultimodalDataset.Load(dataDir, "test", spec.Modalities));
                result = WithProgress($"{kind} D={config.LatentDim}", trainer.TotalSteps, trainer.Step, onStep => trainer.Run(onStep, cancel), quiet: p.GetValue(json));
            }
            else
            {
                // The embedded silo keeps its grain storage (checkpoints) in the run directory, so --resume finds it.
                using var host = p.GetValue(cluster) is { } connection
                    ? await CliCluster.Connect(connection, p.GetValue(tls), cancel)
                    : await ClusterTraining.StartEmbeddedSilo(Path.Combine(options.RunDirectory, EmbeddedStateDirectory), Path.Combine(options.RunDirectory, "silo.log"));
                // The host's console lifetime takes SIGTERM and SIGINT (`kill`, `kubectl delete`, Ctrl+C) for itself and only
                // signals that it is stopping: treat that like Ctrl+C, so the run stops with a final checkpoint and we exit.
                using var stopping = CancellationTokenSource.CreateLinkedTokenSource(cancel,
                    host.Services.GetRequiredService<Microsoft.Extensions.Hosting.IHostApplicationLifetime>().ApplicationStopping);
                string control = p.GetValue(cluster) ?? ClusterTraining.EmbeddedConnection(host);
                string controlFlag = control == $"localhost:{ClusterTraining.DefaultGatewayPort}" ? "" : $" --cluster {control}";
                var grains = host.Services.GetRequiredService<Orleans.IGrainFactory>();
                string siloDir = p.GetValue(siloData) ?? Path.GetFullPath(dataDir);
                // The client never reads the data: each silo's modality grains load their own shards.
                var members = Enumerable.Range(0, spec.Modalities).ToArray();
                var run = WithProgress($"{config.Kind} D={config.LatentDim} (grains)", options.Steps ?? 1, 0, (onStep, onWaiting) =>
                    ClusterTraining.Train(grains, config, options, siloDir, members, onStep, stopping.Token, p.GetValue(runId), id =>
                        Started(id, options.Resume, controlFlag, p.GetValue(json)), onWaiting).GetAwaiter().GetResult(), quiet: p.GetValue(json));
                result = run.Result;
                // The final weights, gathered from the grains, as a checkpoint evaluation can load.
                using (var model = await ClusterTraining.DownloadModel(grains, run.RunId, config, options.Seed, members))
                    ClusterTraining.SaveModel(model, options.RunDirectory, "final", result.Steps, null);
                // The embedded silo is the gateway of other consoles too (`stop --wait`, `status` poll it every 200 ms):
                // it stays a second after the run's end, so they read its final state instead of a silo shutting down.
                if (p.GetValue(cluster) is null) await Task.Delay(TimeSpan.FromSeconds(1), CancellationToken.None);
                await host.StopAsync(CancellationToken.None);
            }
            RunSummary.Print(result, p.GetValue(json));
            return 0;
        });
        return cmd;
    }

    /// <summary>
    /// The repeatable `--set NAME=VALUE` option (model options, <see cref="ModelConfig.WithSettings"/>) added to
    /// <paramref name="command"/> (train, bench, experiment paper), with a validator that applies every
    /// assignment to a default model, so a misspelt name or a bad value is a usage error before anything runs.
    /// </summary>
    internal static Option<string[]> SettingsOption(Command command, string description)
    {
        var settings = new Option<string[]>("--set") { Description = description };
        command.Options.Add(settings);
        command.Validators.Add(r =>
        {
            foreach (var assignment in r.GetValue(settings) ?? [])
                try { new ModelConfig().WithSetting(assignment); }
                catch (UserInputException e) { r.AddError($"--set {e.Message}"); }
        });
        return settings;
    }

    static ModelConfig? StartedModel(string runDirectory)
    {
        string path = Path.Combine(runDirectory, LocalTrainer.ConfigFile);
        if (!File.Exists(path)) return null;
        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path));
        return json.RootElement.TryGetProperty("model", out var model) ? System.Text.Json.JsonSerializer.Deserialize<ModelConfig>(model, CheckpointDirectory.Json) : null;
    }

    /// <summary>Where an embedded run keeps its grain storage (checkpoints), inside the run directory.</summary>
    public const string EmbeddedStateDirectory = "grain-state";

    /// <summary>
    /// Where to follow a grains run from another terminal. Plain, never wrapped: scripts read the run id and the
    /// command from this line; on stderr with --json, whose stdout is the summary alone.
    /// </summary>
    static void Started(string id, bool resumed, string controlFlag, bool json)
        => (json ? Console.Error : Console.Out).WriteLine($"run {id} ({(resumed ? "resumed" : "started")}); from another terminal: mrvae status --run {id}{controlFlag} (also attach, detach, stop)");

    /// <summary>Runs <paramref name="train"/> under a progress bar (step, epoch, loss, ETA); <paramref name="quiet"/>: without.</summary>
    public static T WithProgress<T>(string title, long totalSteps, long startStep, Func<Action<StepReport>, T> train, bool quiet = false)
        => WithProgress(title, totalSteps, startStep, (onStep, _) => train(onStep), quiet);

    /// <summary>
    /// The same, with a second callback that says what the run waits for while it makes no progress (a failover);
    /// the bar shows it until the next step, and without a terminal (or with <paramref name="quiet"/>) it is a line on stderr.
    /// </summary>
    public static T WithProgress<T>(string title, long totalSteps, long startStep, Func<Action<StepReport>, Action<string?>, T> train, bool quiet = false)
    {
        static void WaitingLine(string? what) { if (what is not null) Console.Error.WriteLine($"waiting: {what}"); }
        if (quiet) return train(_ => { }, WaitingLine);
        bool terminal = AnsiConsole.Profile.Capabilities.Interactive;
        T? result = default;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(title, maxValue: Math.Max(1, totalSteps));
                task.Value = startStep;
                string last = title;
                result = train(r =>
                {
                    task.Description = last = $"{title} epoch {r.Epoch} step {r.Step + 1}/{r.TotalSteps} loss {r.Terms["loss"]:F1}";
                    task.MaxValue = r.TotalSteps;
                    task.Value = r.Step + 1;
                }, what =>
                {
                    task.Description = what is null ? last : $"{last} [yellow]{Markup.Escape(what)}[/]";
                    if (!terminal) WaitingLine(what);
                });
            });
        return result!;
    }

    public static ModelKind ParseModel(string name) => name.ToLowerInvariant() switch
    {
        "mrvae" => ModelKind.MrVae,
        "mopoe" => ModelKind.MoPoE,
        "mvae" => ModelKind.Mvae,
        "mmvae" => ModelKind.Mmvae,
        _ => throw new UserInputException($"unknown model '{name}': use mrvae, mopoe, mvae or mmvae"),
    };
}
