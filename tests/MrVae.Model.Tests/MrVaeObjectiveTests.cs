using MrVae.Model.Objectives;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

public class MrVaeObjectiveTests
{
    [Theory]
    [InlineData(3, 6, true)]
    [InlineData(4, 5, true)]
    [InlineData(4, 5, false)]
    public void SelectionsPartitionEachModalitysFactors(int m, int d, bool training)
    {
        var config = TinyModels.Config(modalities: m, latent: d);
        using var objective = (MrVaeObjective)Seeds.Construct(1, "c", () => CoordinatorObjective.Create(config));
        objective.to(float64);
        var gen = new Generator(21);
        const int batch = 16;
        var (mu, logVar) = TinyModels.Posteriors(m, batch, d, gen);
        // Random per-sample availability, at least one modality each.
        var availableRows = new float[batch * m];
        var rng = new Random(3);
        for (int b = 0; b < batch; b++)
        {
            int mask = rng.Next(1, 1 << m);
            for (int j = 0; j < m; j++) availableRows[b * m + j] = mask >> j & 1;
        }
        using var available = tensor(availableRows, [batch, m]).to(float64);
        var context = new StepContext { Generator = gen, Training = training, TauSize = 0.7, TauSelection = 0.7, RecordRelation = true };
        using var output = objective.Forward(mu, logVar, available, Enumerable.Repeat(true, m).ToArray(), context);

        var family = objective.Family;
        var relation = output.Relation!;
        var sizes = output.SubspaceSizes!;
        // usage[b, j, k]: how many subspaces (shared or private) factor k of modality j belongs to.
        var usage = new double[batch, m, d];
        var privateMask = TinyModels.Values(relation.PrivateMask);
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < m; j++)
                for (int k = 0; k < d; k++) usage[b, j, k] = privateMask[(b * m + j) * d + k];
        var sizeValues = TinyModels.Values(sizes);
        var sizeSums = new double[batch, m];
        for (int s = 0; s < family.Subsets.Count; s++)
        {
            var members = family.Subsets[s];
            var y = TinyModels.Values(relation.Selections[s]);      // B × |A| × D × D
            for (int b = 0; b < batch; b++)
            {
                double n = sizeValues[b * family.Subsets.Count + s];
                Assert.Equal(Math.Round(n), n, 9);
                bool anyAvailable = members.Any(j => availableRows[b * m + j] == 1);
                if (!anyAvailable) Assert.Equal(0, n);
                for (int a = 0; a < members.Length; a++)
                {
                    int j = members[a];
                    sizeSums[b, j] += n;
                    double total = 0;
                    for (int r = 0; r < d; r++)
                    {
                        double rowSum = 0;
                        for (int k = 0; k < d; k++)
                        {
                            double v = y[(((b * members.Length) + a) * d + r) * d + k];
                            Assert.True(Math.Abs(v) < 1e-6 || Math.Abs(v - 1) < 1e-6, $"selection entry {v} is not 0/1");
                            rowSum += v; usage[b, j, k] += v;
                        }
                        // Ranks below n_A select exactly one factor; the rest select none.
                        Assert.Equal(r < n ? 1.0 : 0.0, rowSum, 6);
                        total += rowSum;
                    }
                    // Every member gives the same number n_A of factors to the shared subspace.
                    Assert.Equal(n, total, 6);
                }
            }
        }
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < m; j++)
            {
                Assert.True(sizeSums[b, j] <= d + 1e-9, $"Σ n_A = {sizeSums[b, j]} > D for modality {j}");
                for (int k = 0; k < d; k++)
                    Assert.Equal(1.0, usage[b, j, k], 6);   // each factor: exactly one subspace (shared or private)
            }
    }

    [Fact]
    public void EveryAvailabilitySetRunsAndMissingInputsDoNotLeakIntoDecoderInputs()
    {
        const int m = 3, d = 5, batch = 8;
        var config = TinyModels.Config(modalities: m, latent: d);
        using var objective = Seeds.Construct(2, "c", () => CoordinatorObjective.Create(config));
        objective.to(float64);
        for (int mask = 1; mask < 1 << m; mask++)
        {
            var (mu, logVar) = TinyModels.Posteriors(m, batch, d, new Generator(5));
            var (otherMu, otherLogVar) = TinyModels.Posteriors(m, batch, d, new Generator(6));
            // Same inputs for available modalities, different ones for the unavailable.
            for (int j = 0; j < m; j++)
                if ((mask >> j & 1) == 1) { otherMu[j] = mu[j]; otherLogVar[j] = logVar[j]; }
            using var available = TinyModels.Availability(mask, m, batch);
            var decode = Enumerable.Repeat(true, m).ToArray();
            using var a = objective.Forward(mu, logVar, available, decode, new StepContext { Generator = new Generator(9), Training = true });
            using var b = objective.Forward(otherMu, otherLogVar, available, decode, new StepContext { Generator = new Generator(9), Training = true });
            for (int j = 0; j < m; j++)
            {
                var x = TinyModels.Values(a.DecoderInputs[j]!);
                Assert.All(x, v => Assert.True(double.IsFinite(v)));
                Assert.Equal(x, TinyModels.Values(b.DecoderInputs[j]!));
            }
            Assert.Equal(a.Loss.item<double>(), b.Loss.item<double>());
            Assert.True(double.IsFinite(a.Loss.item<double>()));
        }
    }

    [Fact]
    public void SizeLogitsFromPriorShiftsOnlyTheSizeBiasByTheLogPrior()
    {
        var config = TinyModels.Config(modalities: 4, latent: 5);
        using var plain = Seeds.Construct(7, "coordinator", () => new MrVaeObjective(config));
        using var fromPrior = Seeds.Construct(7, "coordinator", () => new MrVaeObjective(config with { SizeLogitsFromPrior = true }));
        var a = plain.state_dict(); var b = fromPrior.state_dict();
        string bias = a.Keys.Single(k => k.EndsWith("sizeB3", StringComparison.Ordinal));
        foreach (var key in a.Keys.Where(k => k != bias))
            Assert.Equal(0, (a[key] - b[key]).abs().max().ToDouble());
        var shift = (b[bias] - a[bias]).to(float64);
        var family = config.SharedSubsets();
        for (int s = 0; s < family.Subsets.Count; s++)
        {
            var prior = MrVaeObjective.SizePrior(family, family.Subsets[s], config.LatentDim);
            for (int k = 0; k <= config.LatentDim; k++)
                Assert.Equal(Math.Max(prior[k], -30), shift[s, k].ToDouble(), 4);
        }
    }

    [Fact]
    public void SizePriorIsTheMembersHypergeometricMarginal()
    {
        var family = SubsetFamily.All(5);
        // With every subset present, each modality is in 15 shared subsets: N_j = 16 D.
        var prior = MrVaeObjective.SizePrior(family, [0, 1], 8);
        var direct = Relaxations.Hypergeometric.LogPmf(16 * 8, 8, 8);
        for (int k = 0; k <= 8; k++) Assert.Equal(direct[k], prior[k], 12);
        Assert.Equal(26, family.Subsets.Count);
        Assert.Equal(5, family.Subsets[0].Length);          // processed largest first
        Assert.Equal(new[] { 0, 1, 2, 3 }, family.Subsets[1]);
        Assert.Equal(new[] { 3, 4 }, family.Subsets[^1]);
    }
}
