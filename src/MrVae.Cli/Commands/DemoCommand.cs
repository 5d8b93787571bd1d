using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.DependencyInjection;
using MrVae.Client;
using MrVae.Data;
using MrVae.Evaluation;
using MrVae.Model;
using MrVae.Model.Objectives;
using MrVae.Model.Training;
using Spectre.Console;
using static TorchSharp.torch;

namespace MrVae.Cli.Commands;

/// <summary>
/// `mrvae demo`: the main job in a few minutes. Starts an in-process Orleans silo and trains mrVAE through grains
/// twice: on vanilla PolyMNIST (digits within a few hundred steps, also drawn from another modality) and on
/// synthetic-ring vectors (whose sharing structure it recovers exactly). Writes a report with grids and the found
/// structure against the true one. The settings are the fastest-learning ones measured (docs/experiments.md).
/// </summary>
public static class DemoCommand
{
    const int ImageLatent = 16, ImageBatch = 128, VectorBatch = 256, Shown = 10;
    const double LearningRate = 1e-3;

    public static Command Create()
    {
        var output = new Option<string>("--out") { Description = "report directory (report.md, PNG grids, one run directory per training)", DefaultValueFactory = _ => Path.Combine("runs", "demo") };
        var data = new Option<string>("--data") { Description = "where the demo's datasets are made if absent (DIR/demo-polymnist, DIR/demo-ring)", DefaultValueFactory = _ => "data" };
        // 1000: at 625 the memberships of two seeds of three were still joining the full set (docs/experiments.md, 2026-12-06).
        var imageSteps = new Option<int>("--image-steps") { Description = "mrVAE steps on PolyMNIST (batch 128)", DefaultValueFactory = _ => 1000 };
        var vectorSteps = new Option<int>("--vector-steps") { Description = "mrVAE steps on synthetic-ring (batch 256)", DefaultValueFactory = _ => 1000 };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 0, Description = "run seed" };
        var json = new Option<bool>("--json") { Description = "no progress bars; print report.json's summary as one JSON object at the end" };
        var cmd = new Command("demo", "Train mrVAE through grains on an in-process silo, on PolyMNIST images and on vectors with a known structure, and write a report (the README's first command; a few minutes)")
        {
            output, data, imageSteps, vectorSteps, seed, json,
        };
        cmd.Validators.Add(r =>
        {
            // Only values the user gave: in a command validator an omitted option reads 0, not its default.
            foreach (var steps in new[] { imageSteps, vectorSteps })
                if (r.GetResult(steps) is { Implicit: false } s && s.GetValueOrDefault<int>() < 1) r.AddError($"{steps.Name} must be at least 1");
        });
        cmd.SetAction((p, cancel) => Run(p.GetValue(output)!, p.GetValue(data)!, p.GetValue(imageSteps), p.GetValue(vectorSteps), p.GetValue(seed), p.GetValue(json), cancel));
        return cmd;
    }

    static async Task<int> Run(string outDir, string dataRoot, int imageSteps, int vectorSteps, long seed, bool json, CancellationToken cancel)
    {
        var total = Stopwatch.StartNew();
        void Say(string line) { if (!json) AnsiConsole.WriteLine(line); }

        string images = Path.Combine(dataRoot, "demo-polymnist"), vectors = Path.Combine(dataRoot, "demo-ring");
        if (!File.Exists(Path.Combine(images, PolyMnistStore.SpecFile)))
        {
            string mnist = MnistFetch.Resolve(null);
            Say($"making vanilla PolyMNIST in {images} ...");
            DatasetMaker.Make(PolyMnistSpec.Builtin("polymnist"), mnist, images, train: 10000, test: 500, seed: 0);
        }
        if (!File.Exists(Path.Combine(vectors, PolyMnistStore.SpecFile)))
        {
            Say($"making synthetic-ring in {vectors} ...");
            VectorStore.Make(vectors, VectorSpec.Ring(), train: 10000, test: 2000, seed: 0);
        }

        Directory.CreateDirectory(outDir);
        // The demo always trains afresh: its grain storage (checkpoints of earlier demo runs) goes first.
        string state = Path.Combine(outDir, TrainCommand.EmbeddedStateDirectory);
        if (Directory.Exists(state)) Directory.Delete(state, recursive: true);
        using var silo = await ClusterTraining.StartEmbeddedSilo(state, Path.Combine(outDir, "silo.log"));
        var grains = silo.Services.GetRequiredService<IGrainFactory>();

        // Images: vanilla PolyMNIST, Gaussian likelihood σ = 0.1 (with the paper's Laplace, docs/setup.md, no model draws a digit this soon).
        var imageSpec = PolyMnistStore.LoadSpec(images);
        var imageConfig = TrainingDefaults.Images.ForMrVae(new ModelConfig { Kind = ModelKind.MrVae, Modalities = imageSpec.Modalities, LatentDim = ImageLatent,
            Likelihood = PixelLikelihood.Gaussian, LikelihoodScale = 0.1 });
        var (imageModel, imageResult) = await Train(grains, "polymnist", images, imageConfig, ImageBatch, imageSteps, seed, outDir, json, cancel);
        string fromX0, fromX1;
        RelationReport imageRelation;
        using (imageModel)
        {
            var test = MultimodalDataset.Load(images, "test", imageSpec.Modalities);
            var ids = Enumerable.Range(0, Shown).Select(i => (long)i).ToArray();
            var x = test.Modalities.Select(m => m!.Batch(ids)).ToArray();
            var generator = Seeds.Generator(seed, "demo");
            fromX0 = Grid(outDir, "polymnist_from_x0.png", imageModel, x, 0, generator);
            fromX1 = Grid(outDir, "polymnist_from_x1.png", imageModel, x, 1, generator);
            imageRelation = VectorEvaluator.Relation(imageModel, test, test.Count, imageSpec.SharedMemberSets);
        }

        // Vectors: synthetic-ring, the vector defaults of `mrvae train` (D = 16, β = 1, Gaussian σ = 0.1, the data's noise).
        var vectorSpec = VectorStore.LoadSpec(vectors);
        var defaults = TrainingDefaults.Vectors;
        var vectorConfig = new ModelConfig { Kind = ModelKind.MrVae, Modalities = vectorSpec.Modalities, LatentDim = defaults.LatentDim, Beta = defaults.Beta,
            Likelihood = defaults.Likelihood, LikelihoodScale = 0.1, ObservedDim = vectorSpec.ObservedDim };
        var (vectorModel, vectorResult) = await Train(grains, "ring", vectors, vectorConfig, VectorBatch, vectorSteps, seed, outDir, json, cancel);
        RelationReport vectorRelation;
        PredictionReport prediction;
        using (vectorModel)
        {
            var test = MultimodalDataset.Load(vectors, "test", vectorSpec.Modalities);
            int count = Math.Min(2000, test.Count);
            vectorRelation = VectorEvaluator.Relation(vectorModel, test, count, vectorSpec.SharedMemberSets);
            prediction = VectorEvaluator.Prediction(vectorModel, test, count, 500, VectorStore.LoadModel(vectors));
        }
        await silo.StopAsync(CancellationToken.None);
        double seconds = total.Elapsed.TotalSeconds;

        string report = Path.Combine(outDir, "report.md");
        File.WriteAllText(report, Markdown(outDir, images, vectors, imageSteps, vectorSteps, seed, seconds, imageResult, vectorResult, fromX0, fromX1, imageRelation, vectorRelation, prediction));
        var summary = new
        {
            seconds = Math.Round(seconds, 1), seed, report = Path.GetFullPath(report),
            polymnist = new { data = images, steps = imageResult.Steps, median_step_ms = imageResult.MedianStepMilliseconds, best_test_loss = imageResult.BestTestLoss, grids = new[] { fromX0, fromX1 }, relation = imageRelation },
            ring = new { data = vectors, steps = vectorResult.Steps, median_step_ms = vectorResult.MedianStepMilliseconds, best_test_loss = vectorResult.BestTestLoss, relation = vectorRelation, mean_ratio_single = prediction.MeanRatioSingle },
        };
        var options = new JsonSerializerOptions { WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };
        File.WriteAllText(Path.Combine(outDir, "report.json"), JsonSerializer.Serialize(summary, options));
        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(summary, new JsonSerializerOptions(options) { WriteIndented = false }));
            return 0;
        }
        AnsiConsole.MarkupLineInterpolated($"[green]report[/]: {report} (grids beside it), {seconds:F0} s in all");
        AnsiConsole.MarkupLineInterpolated($"  ring: structure found with precision {vectorRelation.Precision:F2}, recall {vectorRelation.Recall:F2}; polymnist: digits in {fromX1} (drawn from modality 1 alone)");
        return 0;
    }

    /// <summary>One training through the grains; its final weights are gathered into RUNDIR/checkpoints/final, where `mrvae eval` finds them.</summary>
    static async Task<(MultimodalVae Model, TrainResult Result)> Train(IGrainFactory grains, string name, string data, ModelConfig config, int batch, int steps,
        long seed, string outDir, bool quiet, CancellationToken cancel)
    {
        // One test evaluation (and checkpoint), at the end: evaluations in between would only cost time here.
        var options = new TrainOptions { RunDirectory = Path.Combine(outDir, name), BatchSize = batch, Steps = steps, EvaluateEvery = steps, Seed = seed,
            LearningRate = LearningRate, Data = DatasetFingerprint.Of(data) };
        var members = Enumerable.Range(0, config.Modalities).ToArray();
        var run = TrainCommand.WithProgress($"mrvae on {name}", steps, 0, onStep =>
            ClusterTraining.Train(grains, config, options, Path.GetFullPath(data), members, onStep, cancel).GetAwaiter().GetResult(), quiet: quiet);
        var model = await ClusterTraining.DownloadModel(grains, run.RunId, config, seed, members);
        ClusterTraining.SaveModel(model, options.RunDirectory, "final", run.Result.Steps, run.Result.BestTestLoss);
        return (model, run.Result);
    }

    /// <summary>Row 1: the input modality; rows 2 on: every modality generated from it alone. One column per test tuple.</summary>
    static string Grid(string outDir, string file, MultimodalVae model, Tensor[] x, int input, Generator generator)
    {
        using var scope = NewDisposeScope();
        var given = Enumerable.Range(0, x.Length).Select(j => j == input).ToArray();
        var generated = model.Generate(x.Select((t, j) => given[j] ? t : null).ToArray(), given, generator, sampleLatents: false);
        var rows = new[] { x[input] }.Concat(generated).Select(r =>
        {
            var values = r.detach().cpu().contiguous().data<float>().ToArray();
            return Enumerable.Range(0, (int)r.shape[0]).Select(i => (byte[]?)ImageGrid.FromFloats(values.AsSpan(i * PolyMnistSplit.ImageBytes, PolyMnistSplit.ImageBytes))).ToArray();
        }).ToArray();
        ImageGrid.Write(Path.Combine(outDir, file), rows, scale: 2);
        return file;
    }

    static string Markdown(string outDir, string images, string vectors, int imageSteps, int vectorSteps, long seed, double seconds, TrainResult imageResult, TrainResult vectorResult,
        string fromX0, string fromX1, RelationReport imageRelation, RelationReport vectorRelation, PredictionReport prediction)
    {
        string F(double? v) => v is { } d ? d.ToString("0.##", CultureInfo.InvariantCulture) : "-";
        string imageRun = Path.Combine(outDir, "polymnist"), vectorRun = Path.Combine(outDir, "ring");
        var b = new StringBuilder();
        b.AppendLine("# mrvae demo");
        b.AppendLine();
        b.AppendLine($"**What ran** ({seconds:F0} s): mrVAE trained through Orleans grains on an in-process silo (each modality's encoder and decoder in its own grain, the sharing structure in the run's coordinator grain), twice. " +
                     $"On vanilla PolyMNIST (`{images}`: five image modalities that share one digit, each in its own style) for {imageSteps} steps, and on synthetic-ring (`{vectors}`: five vector modalities; one factor shared by all, one by each neighbouring pair) for {vectorSteps} steps.");
        b.AppendLine();
        b.AppendLine($"**What to look at**: [{fromX1}]({fromX1}), the five modalities drawn from modality 1 alone (top row: the input), so row 2 is modality 0's digit made from another modality's image; " +
                     $"and the ring's table below, the structure the model found against the true one (precision {F(vectorRelation.Precision)}, recall {F(vectorRelation.Recall)}).");
        b.AppendLine();
        b.AppendLine("**Next**:");
        b.AppendLine($"- evaluate these runs (digit classifiers, coherence, FD): `./mrvae eval --run {imageRun} --data {images} --out {Path.Combine(imageRun, "eval")}` and `./mrvae eval --run {vectorRun} --data {vectors} --out {Path.Combine(vectorRun, "eval")}`");
        b.AppendLine($"- train longer: `./mrvae train --embedded --dataset {images} --model mrvae --latent {ImageLatent} --batch {ImageBatch} --lr 1e-3 --likelihood gaussian --steps 3000 --out runs/polymnist-mrvae`");
        b.AppendLine("- on a cluster of silo processes (Redis and three silos on this machine): `deploy/local-cluster.sh`");
        b.AppendLine();

        b.AppendLine($"## PolyMNIST ({imageResult.Steps} steps, D = {ImageLatent} of which {TrainingDefaults.Images.PrivatePositions(ImageLatent)} never shared, batch {ImageBatch}, Adam lr 1e-3, Gaussian likelihood σ = 0.1, seed {seed})");
        b.AppendLine();
        b.AppendLine($"Median step {imageResult.MedianStepMilliseconds:F0} ms; test loss {F(imageResult.BestTestLoss)} at the end. Ten test tuples, one per column; top row the input, then modalities 0–4 generated from it.");
        b.AppendLine();
        b.AppendLine($"From modality 1 (cross-modal: row 2 is modality 0 drawn from modality 1): ![]({fromX1})");
        b.AppendLine();
        b.AppendLine($"From modality 0 (row 2 is its own reconstruction): ![]({fromX0})");
        b.AppendLine();
        b.AppendLine("Structure found against the true one (one digit shared by all five):");
        b.AppendLine();
        Relation(b, imageRelation);

        b.AppendLine($"## synthetic-ring ({vectorResult.Steps} steps, D = 16, batch {VectorBatch}, Adam lr 1e-3, Gaussian σ = 0.1, seed {seed})");
        b.AppendLine();
        b.AppendLine($"Median step {vectorResult.MedianStepMilliseconds:F0} ms. Predicting one modality from another: mean R² / best possible R² = {F(prediction.MeanRatioSingle)} ({prediction.RatioRule}).");
        b.AppendLine();
        Relation(b, vectorRelation);
        return b.ToString();
    }

    static void Relation(StringBuilder b, RelationReport r)
    {
        b.AppendLine($"Precision {r.Precision?.ToString("0.##", CultureInfo.InvariantCulture) ?? "-"}, recall {r.Recall?.ToString("0.##", CultureInfo.InvariantCulture) ?? "-"}. " +
                     "A subset is found when the most probable structure gives it at least one latent position; E[n] is the expected number under the membership posterior.");
        b.AppendLine();
        b.AppendLine("| modalities sharing | true | found | positions (most probable) | E[n] |");
        b.AppendLine("|---|---|---|---|---|");
        foreach (var s in r.Subsets.Where(s => s.Found || s.SharedInSpec).OrderByDescending(s => s.SharedInSpec).ThenByDescending(s => s.MeanSize))
            b.AppendLine($"| {s.Name} | {(s.SharedInSpec ? "yes" : "no")} | {(s.Found ? "yes" : "**no**")} | {s.MostProbableSize} | {s.MeanSize:F2} |");
        b.AppendLine();
    }
}
