using System.Text.Json;
using System.Text.Json.Nodes;
using MrVae.Data;
using MrVae.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Evaluation;

/// <summary>
/// Joint (unconditional) coherence: draw the latents from the prior, decode every modality and count how often the
/// members of each factor show the same digit, read by the digit classifiers. For a factor with members A the
/// chance level of agreement is 0.1^(|A|−1).
/// </summary>
public static class JointCoherence
{
    public sealed record Result(int Samples, double[] Agreement, List<(string Label, byte[][] Images)> Grid);

    public static Result Run(MultimodalVae model, ClassifierSet classifiers, PolyMnistSpec spec, int samples, Generator generator, int batchSize = 250, int gridSamples = 8)
    {
        model.eval();
        return Run(n => model.GenerateFromPrior(n, generator), classifiers, spec, samples, batchSize, gridSamples);
    }

    /// <param name="sample">n unconditional samples: images per modality (n × 3 × 28 × 28 in [0, 1]).</param>
    public static Result Run(Func<int, Tensor[]> sample, ClassifierSet classifiers, PolyMnistSpec spec, int samples, int batchSize = 250, int gridSamples = 8)
    {
        var agree = new long[spec.Factors.Length];
        List<(string, byte[][])>? grid = null;
        for (int start = 0; start < samples; start += batchSize)
        {
            using var scope = NewDisposeScope();
            int n = Math.Min(batchSize, samples - start);
            var images = sample(n);
            for (int f = 0; f < spec.Factors.Length; f++)
            {
                var members = spec.Factors[f].Members;
                var first = classifiers.Predict(members[0], f, images[members[0]]);
                var same = ones(n, dtype: ScalarType.Bool);
                foreach (int j in members.Skip(1)) same = same.logical_and(classifiers.Predict(j, f, images[j]).eq(first));
                agree[f] += same.sum().ToInt64();
            }
            grid ??= Enumerable.Range(0, spec.Modalities)
                .Select(j => ($"prior x{j}", CrossModal.ToBytes(images[j], Math.Min(gridSamples, n)))).ToList();
        }
        return new Result(samples, agree.Select(a => (double)a / samples).ToArray(), grid ?? []);
    }

    /// <summary>The joint-coherence section of report.json, each value passed through <paramref name="round"/>.</summary>
    public static EvaluationReport.JointCoherenceSection Report(Result result, PolyMnistSpec spec, Func<double, double?> round)
    {
        int main = PolyMnistGenerator.MainFactor(spec);
        return new()
        {
            Samples = result.Samples,
            Main = main >= 0 ? round(result.Agreement[main]) : null,
            Factors = Enumerable.Range(0, spec.Factors.Length).ToDictionary(f => spec.Factors[f].Name, f => new EvaluationReport.JointFactor
            {
                Members = string.Join(",", spec.Factors[f].Members),
                Agreement = round(result.Agreement[f]),
                Chance = round(Math.Pow(0.1, spec.Factors[f].Members.Length - 1)),
            }),
            Definition = "latents from the prior (mrVAE: its most probable structure), every modality decoded; the fraction of samples whose members of a factor all show the same digit",
        };
    }

    /// <summary><see cref="Report"/> as JSON.</summary>
    public static JsonObject Json(Result result, PolyMnistSpec spec, Func<double, JsonNode?> round)
        => JsonSerializer.SerializeToNode(Report(result, spec, v => round(v)?.GetValue<double>()), EvaluationReport.Json)!.AsObject();
}

/// <summary>
/// The test log-likelihood log p(X) of complete tuples, estimated by importance sampling with K draws from the
/// model's joint posterior given every modality (<see cref="MultimodalVae.ImportanceLogLikelihood"/>).
/// </summary>
public static class TestLikelihood
{
    public static (double Mean, double StandardError) Run(MultimodalVae model, LabelledSplit test, int tuples, int importanceSamples, Generator generator, int decodesPerChunk = 4000)
    {
        model.eval();
        int n = Math.Min(tuples, test.Count);
        int chunk = Math.Max(1, decodesPerChunk / importanceSamples);
        var values = new List<double>(n);
        for (int start = 0; start < n; start += chunk)
        {
            using var scope = NewDisposeScope();
            var ids = LabelledSplit.Range(start, Math.Min(chunk, n - start));
            var x = Enumerable.Range(0, test.Modalities).Select(j => test.Images[j].Batch(ids)).ToArray();
            values.AddRange(model.ImportanceLogLikelihood(x, importanceSamples, generator).to(ScalarType.Float64).data<double>().ToArray());
        }
        double mean = values.Average();
        double sd = Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / Math.Max(1, values.Count - 1));
        return (mean, sd / Math.Sqrt(values.Count));
    }
}
