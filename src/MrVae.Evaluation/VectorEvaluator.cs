using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using MrVae.Data;
using MrVae.Model;
using MrVae.Model.Objectives;
using MrVae.Model.Training;
using static TorchSharp.torch;

namespace MrVae.Evaluation;

/// <summary>mrVAE's inferred structure against the data's truth.</summary>
public sealed record RelationReport(
    [property: JsonPropertyName("rule")] string Rule,
    [property: JsonPropertyName("subsets")] IReadOnlyList<SubsetSize> Subsets,
    [property: JsonPropertyName("precision")] double? Precision,
    [property: JsonPropertyName("recall")] double? Recall,
    [property: JsonPropertyName("missed")] int[][] Missed,
    [property: JsonPropertyName("spurious")] int[][] Spurious,
    [property: JsonPropertyName("membership")] double[][] Membership,
    [property: JsonPropertyName("information")] double[][]? Information);

/// <summary>Cross-prediction R² per "in=A->out=j" key: the model's and the generating model's best (Gaussian conditioning).</summary>
public sealed record PredictionReport(
    [property: JsonPropertyName("r2")] SortedDictionary<string, double> R2,
    [property: JsonPropertyName("r2_optimal")] SortedDictionary<string, double> R2Optimal,
    [property: JsonPropertyName("mean_ratio_single")] double MeanRatioSingle,
    [property: JsonPropertyName("ratio_rule")] string RatioRule);

/// <summary>report.json of a run on vector data.</summary>
public sealed record VectorReport(
    [property: JsonPropertyName("model")] string Model,
    [property: JsonPropertyName("latent_dim")] int LatentDim,
    [property: JsonPropertyName("run")] string Run,
    [property: JsonPropertyName("checkpoint")] string Checkpoint,
    [property: JsonPropertyName("step")] long Step,
    [property: JsonPropertyName("dataset")] string Dataset,
    [property: JsonPropertyName("test_samples")] int TestSamples,
    [property: JsonPropertyName("relation")] RelationReport? Relation,
    [property: JsonPropertyName("prediction")] PredictionReport Prediction,
    [property: JsonPropertyName("seconds")] double Seconds)
{
    public static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    public static VectorReport FromJson(string json) => JsonSerializer.Deserialize<VectorReport>(json, Json)
        ?? throw new JsonException("empty report");
}

/// <summary>
/// `mrvae eval` on vector data: the inferred relation against the spec (mrVAE), and every cross-prediction's R²
/// against the generating model's optimum.
/// </summary>
public static class VectorEvaluator
{
    public const string RatioRule = "mean of r2/r2_optimal over single-input pairs whose r2_optimal >= 0.05";

    public static VectorReport Run(EvalOptions options, Action<string>? log = null)
    {
        var watch = Stopwatch.StartNew();
        var (checkpointDir, state) = Evaluator.ResolveCheckpoint(options.RunDirectory, options.Checkpoint);
        var spec = VectorStore.LoadSpec(options.DataDirectory);
        if (state.Model.Modalities != spec.Modalities || state.Model.ObservedDim != spec.ObservedDim)
            throw new DataFormatException($"run {options.RunDirectory} was trained on {state.Model.Modalities} modalities of size {state.Model.ObservedDim} but {options.DataDirectory} ({spec.Name}) has {spec.Modalities} of size {spec.ObservedDim}: pass the dataset the run was trained on with --data");
        Evaluator.CheckData(options.RunDirectory, options.DataDirectory, options.AllowOtherData, log);
        var truth = VectorStore.LoadModel(options.DataDirectory);
        var test = MultimodalDataset.Load(options.DataDirectory, "test", spec.Modalities);
        using var model = Evaluator.LoadModel(checkpointDir, state.Model);
        int count = Math.Min(options.CrossModal.Samples, test.Count);
        log?.Invoke($"evaluating {state.Model.Kind} D={state.Model.LatentDim} from {checkpointDir} (step {state.Step}) on {count} test samples");
        var relation = model.Coordinator is MrVaeObjective ? Relation(model, test, count, spec.SharedMemberSets) : null;
        var prediction = Prediction(model, test, count, options.CrossModal.BatchSize, truth);
        var report = new VectorReport(Evaluator.DisplayName(state.Model.Kind), state.Model.LatentDim, options.RunDirectory, Path.GetFileName(checkpointDir), state.Step,
            spec.Name, count, relation, prediction, Math.Round(watch.Elapsed.TotalSeconds, 1));
        Directory.CreateDirectory(options.OutputDirectory);
        File.WriteAllText(Path.Combine(options.OutputDirectory, Evaluator.ReportJson), report.ToJson());
        File.WriteAllText(Path.Combine(options.OutputDirectory, Evaluator.ReportMarkdown), Markdown(report));
        return report;
    }

    /// <summary>mrVAE's structure scored against the truth; the encoders' information is measured on the first <paramref name="count"/> samples of <paramref name="test"/>.</summary>
    public static RelationReport Relation(MultimodalVae model, MultimodalDataset test, int count, IEnumerable<int[]> memberSets)
    {
        var structure = (MrVaeObjective)model.Coordinator;
        var (information, _, _) = EncoderInformation.Compute(model, test, count);
        var truth = RelationRecovery.Truth(memberSets);
        var (subsets, membership) = RelationRecovery.Infer(structure, truth);
        var score = RelationRecovery.ScoreFound(subsets, truth);
        return new RelationReport(RelationRecovery.FoundRule, subsets, score.Precision, score.Recall, score.Missed, score.Spurious, membership, information);
    }

    /// <summary>The input sets evaluated: every single input to every other output, all others to each output, and two neighbours to each output.</summary>
    public static IEnumerable<(int[] Inputs, int Output)> Tasks(int modalities)
    {
        for (int i = 0; i < modalities; i++)
            for (int o = 0; o < modalities; o++)
                if (i != o) yield return ([i], o);
        if (modalities < 3) yield break;
        for (int o = 0; o < modalities; o++)
        {
            yield return ([.. Enumerable.Range(0, modalities).Where(j => j != o)], o);
            if (modalities > 3) yield return ([(o + 1) % modalities, (o + 2) % modalities], o);
        }
    }

    public static string TaskKey(int[] inputs, int output) => $"in={string.Join(",", inputs.Order())}->out={output}";

    /// <summary>
    /// R² of the model's prediction of x_out from x_in (decoder mean at the posterior means, no sampling) on the test
    /// samples, pooled over the output's dimensions: 1 − Σ(x − x̂)² / Σ(x − x̄)².
    /// </summary>
    public static PredictionReport Prediction(MultimodalVae model, MultimodalDataset test, int count, int batchSize, VectorModel truth)
    {
        int m = model.Config.Modalities;
        var r2 = new SortedDictionary<string, double>(StringComparer.Ordinal);
        var optimal = new SortedDictionary<string, double>(StringComparer.Ordinal);
        var ids = Enumerable.Range(0, count).Select(i => (long)i).ToArray();
        using var scope = NewDisposeScope();
        var all = test.Modalities.Select(s => s!.Batch(ids, ScalarType.Float64)).ToArray();
        var generator = new Generator(0);
        foreach (var (inputs, output) in Tasks(m))
        {
            using var taskScope = NewDisposeScope();   // one task's generations at a time
            var mask = Enumerable.Range(0, m).Select(inputs.Contains).ToArray();
            var predictions = new List<Tensor>();
            for (int start = 0; start < count; start += batchSize)
            {
                int n = Math.Min(batchSize, count - start);
                var x = Enumerable.Range(0, m).Select(j => mask[j] ? test.Modalities[j]!.Batch(ids[start..(start + n)]) : null).ToArray();
                var generated = model.Generate(x, mask, generator, sampleLatents: false);
                predictions.Add(generated[output].to(ScalarType.Float64));
            }
            var predicted = cat(predictions.ToArray(), 0);
            var actual = all[output];
            double residual = (actual - predicted).square().sum().item<double>();
            double total = (actual - actual.mean([0], keepdim: true)).square().sum().item<double>();
            string key = TaskKey(inputs, output);
            r2[key] = Math.Round(1 - residual / total, 4);
            optimal[key] = Math.Round(truth.OptimalR2(inputs, output), 4);
        }
        var ratios = Tasks(m).Where(t => t.Inputs.Length == 1).Select(t => TaskKey(t.Inputs, t.Output))
            .Where(k => optimal[k] >= 0.05).Select(k => r2[k] / optimal[k]).ToArray();
        return new PredictionReport(r2, optimal, ratios.Length == 0 ? double.NaN : Math.Round(ratios.Average(), 4), RatioRule);
    }

    static string F(double? v) => v is { } x ? x.ToString("F3", CultureInfo.InvariantCulture) : "-";

    public static string Markdown(VectorReport r)
    {
        var b = new StringBuilder();
        b.AppendLine($"# {r.Model} on {r.Dataset} (D = {r.LatentDim}, checkpoint {r.Checkpoint} at step {r.Step})");
        b.AppendLine();
        b.AppendLine($"Cross-prediction: mean r2 / r2_optimal over single inputs = **{F(r.Prediction.MeanRatioSingle)}** ({r.Prediction.RatioRule}).");
        b.AppendLine();
        if (r.Relation is { } rel)
        {
            b.AppendLine($"## Inferred relation: precision {F(rel.Precision)}, recall {F(rel.Recall)}");
            b.AppendLine();
            b.AppendLine($"Rule ({rel.Rule}).");
            b.AppendLine();
            b.AppendLine("| subset | E[n_A] | most probable n_A | found | true |");
            b.AppendLine("|---|---|---|---|---|");
            foreach (var s in rel.Subsets.Where(s => s.Found || s.SharedInSpec || s.MeanSize >= 0.5))
                b.AppendLine($"| {s.Name} | {s.MeanSize:F2} | {s.MostProbableSize} | {(s.Found ? "yes" : "no")} | {(s.SharedInSpec ? "yes" : "no")} |");
            b.AppendLine();
        }
        b.AppendLine("## Cross-prediction R²");
        b.AppendLine();
        b.AppendLine("| task | r2 | r2_optimal |");
        b.AppendLine("|---|---|---|");
        foreach (var (k, v) in r.Prediction.R2) b.AppendLine($"| {k} | {v:F3} | {r.Prediction.R2Optimal[k]:F3} |");
        return b.ToString();
    }
}
