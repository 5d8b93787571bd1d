using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.DependencyInjection;
using MrVae.Client;
using MrVae.Data;
using MrVae.Model;
using MrVae.Model.Objectives;
using MrVae.Model.Training;
using Spectre.Console;
using static TorchSharp.torch;

namespace MrVae.Cli.Commands;

/// <summary>
/// `mrvae demo`: the main job end to end on small defaults. Makes extended PolyMNIST if absent, starts an in-process
/// Orleans silo, trains mrVAE and MoPoE briefly through grains with the same architecture and budget, and writes a
/// report with sample grids and the learned relation.
/// </summary>
public static class DemoCommand
{
    public static Command Create()
    {
        var data = new Option<string>("--data") { Description = "dataset directory (made if absent)", DefaultValueFactory = _ => Path.Combine("data", "demo-extended") };
        var output = new Option<string>("--out") { Description = "report directory", DefaultValueFactory = _ => Path.Combine("runs", "demo") };
        var epochs = new Option<int>("--epochs") { Description = "training epochs per model", DefaultValueFactory = _ => 2 };
        var latent = new Option<int>("--latent") { Description = "latent size D", DefaultValueFactory = _ => 16 };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 0, Description = "run seed" };
        var json = new Option<bool>("--json") { Description = "no progress bars; print report.json's summary as one JSON object at the end" };
        var cmd = new Command("demo", "Make data, train mrVAE and MoPoE briefly, write a report (the README's first command)") { data, output, epochs, latent, seed, json };
        cmd.Validators.Add(r =>
        {
            // Only values the user gave: in a command validator an omitted option reads 0, not its default.
            if (r.GetResult(epochs) is { Implicit: false } e && e.GetValueOrDefault<int>() < 1) r.AddError("--epochs must be at least 1");
            if (r.GetResult(latent) is { Implicit: false } l && l.GetValueOrDefault<int>() < 1) r.AddError("--latent must be at least 1");
        });
        cmd.SetAction((p, cancel) => Run(p.GetValue(data)!, p.GetValue(output)!, p.GetValue(epochs), p.GetValue(latent), p.GetValue(seed), p.GetValue(json), cancel));
        return cmd;
    }

    static async Task<int> Run(string dataDir, string outDir, int epochs, int latent, long seed, bool json, CancellationToken cancel)
    {
        var total = Stopwatch.StartNew();
        if (!File.Exists(Path.Combine(dataDir, PolyMnistStore.SpecFile)))
        {
            if (!json) AnsiConsole.MarkupLineInterpolated($"making extended PolyMNIST in {dataDir} ...");
            DatasetMaker.Make(PolyMnistSpec.Extended(), MnistFetch.Resolve(null), dataDir, train: 2000, test: 500, seed: 0);
        }
        var spec = PolyMnistStore.LoadSpec(dataDir);
        // The client reads only the test split, for the report's sample grids; training data stays with the grains.
        var test = MultimodalDataset.Load(dataDir, "test", spec.Modalities);
        Directory.CreateDirectory(outDir);
        // The demo always trains afresh: its grain storage (checkpoints of earlier demo runs) goes first.
        string state = Path.Combine(outDir, TrainCommand.EmbeddedStateDirectory);
        if (Directory.Exists(state)) Directory.Delete(state, recursive: true);
        using var silo = await ClusterTraining.StartEmbeddedSilo(state);
        var grains = silo.Services.GetRequiredService<IGrainFactory>();
        var members = Enumerable.Range(0, spec.Modalities).ToArray();

        var results = new List<Dictionary<string, object>>();
        PolyMnistStore.LoadLabels(dataDir, "train", out int trainCount, out _);
        var md = new StringBuilder($"# mrvae demo report\n\nDataset: `{dataDir}` ({spec.Name}, {trainCount} train / {test.Count} test tuples). " +
                                   $"Latent D = {latent}, {epochs} epochs, batch 64, Adam lr 1e-3, Gaussian likelihood σ = 0.1, seed {seed}, trained through grains on an in-process Orleans silo.\n\n");
        foreach (var kind in new[] { ModelKind.MrVae, ModelKind.MoPoE })
        {
            string name = kind.ToString().ToLowerInvariant();
            // Gaussian σ = 0.1: with model.md's Laplace no model draws a digit in a demo's few hundred steps (README).
            var config = new ModelConfig { Kind = kind, Modalities = spec.Modalities, LatentDim = latent, Likelihood = PixelLikelihood.Gaussian, LikelihoodScale = 0.1 };
            var options = new TrainOptions { RunDirectory = Path.Combine(outDir, name), BatchSize = 64, Epochs = epochs, Seed = seed, LearningRate = 1e-3, Data = DatasetFingerprint.Of(dataDir) };
            var run = TrainCommand.WithProgress(name, 1, 0, onStep =>
                ClusterTraining.Train(grains, config, options, Path.GetFullPath(dataDir), members, onStep, cancel).GetAwaiter().GetResult(), quiet: json);
            var result = run.Result;
            using var model = await ClusterTraining.DownloadModel(grains, run.RunId, config, seed, members);
            ClusterTraining.SaveModel(model, options.RunDirectory, "final", result.Steps, null);
            var entry = new Dictionary<string, object>
            {
                ["model"] = name, ["steps"] = result.Steps, ["final_train_loss"] = result.FinalLoss,
                ["best_test_loss"] = result.BestTestLoss ?? double.NaN, ["median_step_ms"] = result.MedianStepMilliseconds,
            };
            md.Append($"## {name}\n\n{result.Steps} steps, median step {result.MedianStepMilliseconds:F0} ms, final training loss {result.FinalLoss:F0}, best test loss {result.BestTestLoss:F0}.\n\n");

            var ids = Enumerable.Range(0, 10).Select(i => (long)i).ToArray();
            var x = test.Modalities.Select(mo => mo?.Batch(ids)).ToArray();
            var gen = Seeds.Generator(seed, "demo");
            var fromFirst = model.Generate(x, [true, .. Enumerable.Repeat(false, spec.Modalities - 1)], gen);
            var fromAll = model.Generate(x, Enumerable.Repeat(true, spec.Modalities).ToArray(), gen, sampleLatents: false);
            WriteGrid(Path.Combine(outDir, $"{name}_from_x0.png"), [x[0]!, .. fromFirst]);
            WriteGrid(Path.Combine(outDir, $"{name}_reconstruction.png"), [.. x.Select(t => t!), .. fromAll]);
            md.Append($"Conditional generation from x0 (top row: input x0; then x0..x{spec.Modalities - 1} generated): ![]({name}_from_x0.png)\n\n");
            md.Append($"Reconstruction from all modalities (inputs, then outputs): ![]({name}_reconstruction.png)\n\n");

            if (kind == ModelKind.MrVae)
            {
                var relation = LearnedRelation(model);
                entry["relation"] = relation;
                md.Append("Learned relation: E_q[n_A], the expected latent positions per shared subset under the membership posterior (* = shared in the data's spec):\n\n| subset | E_q[n_A] |\n|---|---|\n");
                foreach (var (subset, size) in relation.OrderByDescending(r => r.Value))
                    md.Append($"| {subset}{(spec.SharedMemberSets.Any(s => SubsetFamily.Format(s) == subset) ? " *" : "")} | {size:F2} |\n");
                md.Append('\n');
            }
            results.Add(entry);
        }
        await silo.StopAsync(CancellationToken.None);
        File.WriteAllText(Path.Combine(outDir, "report.md"), md.ToString());
        var summary = new { dataset = dataDir, latent, epochs, seed, models = results, report = Path.GetFullPath(Path.Combine(outDir, "report.md")) };
        File.WriteAllText(Path.Combine(outDir, "report.json"), JsonSerializer.Serialize(summary, new JsonSerializerOptions { WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals }));
        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(summary, new JsonSerializerOptions { NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals }));
            return 0;
        }
        AnsiConsole.MarkupLineInterpolated($"[green]report[/]: {Path.Combine(outDir, "report.md")} (and PNG grids beside it), {total.Elapsed.TotalSeconds:F0} s in all");
        return 0;
    }

    /// <summary>E_q[n_A] per shared subset of mrVAE's membership posterior (the structure does not depend on the input).</summary>
    static Dictionary<string, double> LearnedRelation(MultimodalVae model)
    {
        var structure = (MrVaeObjective)model.Coordinator;
        var mean = structure.ExpectedSizes();
        return structure.Family.Subsets.Select((s, i) => (SubsetFamily.Format(s), mean[i])).ToDictionary(t => t.Item1, t => t.Item2);
    }

    static void WriteGrid(string path, Tensor[] rows)
    {
        var cells = rows.Select(r =>
        {
            var values = r.detach().cpu().contiguous().data<float>().ToArray();
            long n = r.shape[0];
            return Enumerable.Range(0, (int)n).Select(i => (byte[]?)ImageGrid.FromFloats(values.AsSpan(i * PolyMnistSplit.ImageBytes, PolyMnistSplit.ImageBytes))).ToArray();
        }).ToArray();
        ImageGrid.Write(path, cells);
    }
}
