using System.Text.Json.Nodes;
using MrVae.Data;
using static TorchSharp.torch;

namespace MrVae.Evaluation.Tests;

/// <summary>Generators whose coherence is known: the real images of the same tuples, or of other tuples.</summary>
sealed class OracleGenerator(LabelledSplit data, Func<long, long> pick) : IConditionalGenerator
{
    public int Modalities => data.Modalities;
    public int Calls { get; private set; }

    public Tensor[] Generate(Tensor?[] x, bool[] inputs, IReadOnlyList<long> ids)
    {
        Calls++;
        var source = ids.Select(pick).ToArray();
        return Enumerable.Range(0, Modalities).Select(j => data.Images[j].Batch(source)).ToArray();
    }
}

[Collection(PolyMnistCollection.Name)]
public sealed class CoherenceTests(PolyMnistFixture data)
{
    [Fact]
    public void PerfectGeneratorScoresExactlyTheClassifierAccuracyAndZeroFd()
    {
        var (_, test) = data.Extended;
        var classifiers = data.ExtendedClassifiers;
        var oracle = new OracleGenerator(test, i => i);
        var settings = new CrossModalSettings { Samples = test.Count, BatchSize = 200, GridSamples = 3, FullFdMatrix = false };
        var result = CrossModal.Run(oracle, classifiers, test, settings, Evaluator.PaperFdRows(5));
        Assert.Equal(31 * 3, oracle.Calls);                      // 31 input subsets, 3 batches each
        Assert.Equal(31 * 15, result.Accuracy.Count);            // every output's 3 digit positions
        foreach (var ((mask, j, f), acc) in result.Accuracy)
            Assert.Equal(classifiers.TestAccuracy[classifiers.Target(j, f).Name], acc, 12);
        Assert.Equal(Evaluator.PaperFdRows(5), result.Fd.Keys.OrderBy(k => k.Mask));   // the paper's rows only
        Assert.All(result.Fd.Values, fd => Assert.InRange(fd, -1e-4, 1e-4));   // round-off only (traces are ~1e3)
        Assert.Equal(31, result.Grids.Count);
        Assert.Equal(1 + 5, result.Grids[Subsets.Mask([2])].Count);   // one input row, five generated rows
    }

    [Fact]
    public void GeneratorOfOtherTuplesSitsAtChanceButKeepsZeroFd()
    {
        var (_, test) = data.Vanilla;
        int n = 400;
        var shifted = new OracleGenerator(test, i => (i + 1) % n);   // a permutation of the same n images
        var result = CrossModal.Run(shifted, data.VanillaClassifiers, test, new CrossModalSettings { Samples = n, BatchSize = 400 }, Evaluator.PaperFdRows(5));
        Assert.All(result.Accuracy.Values, acc => Assert.InRange(acc, 0.03, 0.25));
        // FD compares distributions, not tuples: the same images in another order are at distance 0.
        Assert.All(result.Fd.Values, fd => Assert.InRange(fd, -1e-4, 1e-4));   // round-off only (traces are ~1e3)
    }

    [Fact]
    public void CornerSummarySeparatesSharedFromUnsharedCorners()
    {
        var spec = PolyMnistSpec.Extended();
        var cross = new CrossModalResult { Modalities = 5, Samples = 10 };
        foreach (int mask in CrossModal.SubsetMasks(5))
            for (int j = 0; j < 5; j++)
                for (int f = 0; f < spec.Factors.Length; f++)
                    if (spec.Factors[f].Members.Contains(j))
                        cross.Accuracy[(mask, j, f)] = f == 0 ? 0.5 : spec.Factors[f].Members.Any(i => (mask >> i & 1) == 1) ? 0.9 : 0.1;
        var json = Evaluator.CoherenceJson(cross, spec, 0);
        Assert.Equal(0.5, json["main"]!["in=0,1->out=0"]!.GetValue<double>());
        Assert.Equal(0.9, json["corner_summary"]!["shared_mean"]!.GetValue<double>(), 12);
        Assert.Equal(0.1, json["corner_summary"]!["unshared_mean"]!.GetValue<double>(), 12);
        Assert.Equal(0.9, json["corner"]!["in=0->out=1:corner-0-1"]!.GetValue<double>());
        Assert.Equal(0.1, json["corner"]!["in=0->out=1:corner-1-2"]!.GetValue<double>());
        var rows = json["corner_summary"]!["rows"]!.AsArray();
        Assert.Equal(10, rows.Count);   // each modality from each ring neighbour
        var fromPrevious = rows.Single(r => r!["in"]!.GetValue<int>() == 0 && r["out"]!.GetValue<int>() == 1)!;
        Assert.Equal(["corner-0-1"], fromPrevious["shared"]!.AsObject().Select(p => p.Key));
        Assert.Equal(["corner-1-2"], fromPrevious["unshared"]!.AsObject().Select(p => p.Key));
        Assert.Equal(["x0->x0", "X{0,1}->x0", "X{0,1,2}->x0"], json["paper_rows"]!.AsObject().Select(p => p.Key));
    }

    [Fact]
    public void JointCoherenceIsHighForRealTuplesAndAtChanceForIndependentModalities()
    {
        var (_, test) = data.Extended;
        var spec = data.ExtendedSpec;
        int next = 0;
        Tensor[] Real(int n) { var ids = LabelledSplit.Range(next, n); next += n; return Enumerable.Range(0, 5).Select(j => test.Images[j].Batch(ids)).ToArray(); }
        var real = JointCoherence.Run(Real, data.ExtendedClassifiers, spec, 400, batchSize: 200);
        // Every member of a factor shows the same label in a real tuple, so the members agree at least whenever every
        // member's classifier is right: agreement ≥ the product of their test accuracies (up to sampling noise).
        var classifiers = data.ExtendedClassifiers;
        for (int f = 0; f < spec.Factors.Length; f++)
        {
            double allRight = spec.Factors[f].Members.Aggregate(1.0, (p, j) => p * classifiers.TestAccuracy[classifiers.Target(j, f).Name]);
            Assert.True(real.Agreement[f] > allRight - 0.06, $"{spec.Factors[f].Name}: agreement of real tuples {real.Agreement[f]:F3} below the classifiers' joint accuracy {allRight:F3}");
            Assert.True(real.Agreement[f] > 0.4, $"{spec.Factors[f].Name}: agreement of real tuples {real.Agreement[f]:F3}");
        }
        Assert.Equal(5, real.Grid.Count);

        // Each modality from another tuple: labels are independent, so agreement sits at chance (0.1^(|A|-1)).
        var rng = new Random(3);
        Tensor[] Independent(int n) => Enumerable.Range(0, 5).Select(j => test.Images[j].Batch(Enumerable.Range(0, n).Select(_ => (long)rng.Next(test.Count)).ToArray())).ToArray();
        var independent = JointCoherence.Run(Independent, data.ExtendedClassifiers, spec, 400, batchSize: 200);
        Assert.InRange(independent.Agreement[0], 0, 0.02);
        Assert.All(independent.Agreement.Skip(1), a => Assert.InRange(a, 0.03, 0.2));
        var json = JointCoherence.Json(independent, spec, v => v);
        Assert.Equal(1e-4, json["factors"]!["digit"]!["chance"]!.GetValue<double>(), 12);
        Assert.Equal(0.1, json["factors"]!["corner-0-1"]!["chance"]!.GetValue<double>(), 12);
    }
}
