using MrVae.Model.Objectives;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

public class MrVaeObjectiveTests
{
    [Theory]
    [InlineData(3, 6, true, 0)]
    [InlineData(4, 5, true, 0)]
    [InlineData(4, 5, false, 0)]
    [InlineData(4, 5, true, 3)]
    public void SelectionsPartitionEachModalitysFactors(int m, int d, bool training, double rampSlope)
    {
        var config = TinyModels.Config(modalities: m, latent: d) with { SelectionRampSlope = rampSlope };
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

    /// <summary>
    /// Per subset (processing order), sample and member: the factor index chosen at each rank r &lt; n_A (−1 beyond).
    /// </summary>
    static int[][][][] ChosenFactors(MrVaeObjective objective, CoordinatorOutput output, int batch, int d)
    {
        var family = objective.Family;
        var sizes = TinyModels.Values(output.SubspaceSizes!);
        var result = new int[family.Subsets.Count][][][];
        for (int s = 0; s < family.Subsets.Count; s++)
        {
            int members = family.Subsets[s].Length;
            var y = TinyModels.Values(output.Relation!.Selections[s]);     // B × |A| × D × D
            result[s] = new int[batch][][];
            for (int b = 0; b < batch; b++)
            {
                int n = (int)Math.Round(sizes[b * family.Subsets.Count + s]);
                result[s][b] = new int[members][];
                for (int a = 0; a < members; a++)
                    result[s][b][a] = Enumerable.Range(0, n).Select(r =>
                        Enumerable.Range(0, d).Single(k => y[(((b * members) + a) * d + r) * d + k] > 0.5)).ToArray();
            }
        }
        return result;
    }

    static CoordinatorOutput TrainingForward(MrVaeObjective objective, int m, int d, int batch, ulong seed)
    {
        var (mu, logVar) = TinyModels.Posteriors(m, batch, d, new Generator(seed));
        using var available = TinyModels.Availability((1 << m) - 1, m, batch);
        // Training: Gumbel noise on sizes and selection scores.
        var context = new StepContext { Generator = new Generator(seed + 1), Training = true, TauSize = 1, TauSelection = 1, RecordRelation = true };
        return objective.Forward(mu, logVar, available, Enumerable.Repeat(true, m).ToArray(), context);
    }

    [Fact]
    public void SelectionRampMakesEveryMemberTakeItsLowestFreeFactorsInOrderDespiteTheNoise()
    {
        const int m = 4, d = 8, batch = 32;
        var config = TinyModels.Config(modalities: m, latent: d) with { SelectionRampSlope = 8 };
        using var objective = Seeds.Construct(3, "c", () => new MrVaeObjective(config));
        objective.to(float64);
        using var output = TrainingForward(objective, m, d, batch, 40);
        var chosen = ChosenFactors(objective, output, batch, d);
        var family = objective.Family;
        int fullSetSamplesWithPairs = 0;
        for (int b = 0; b < batch; b++)
        {
            var free = Enumerable.Range(0, m).Select(_ => Enumerable.Range(0, d).ToList()).ToArray();
            for (int s = 0; s < family.Subsets.Count; s++)
                for (int a = 0; a < family.Subsets[s].Length; a++)
                {
                    int j = family.Subsets[s][a];
                    var picked = chosen[s][b][a];
                    // Rank r takes the r-th lowest factor this member still has free.
                    Assert.Equal(free[j].Take(picked.Length).ToArray(), picked);
                    free[j].RemoveRange(0, picked.Length);
                }
            // The full set comes first: its rank r is factor r of every member.
            if (chosen[0][b][0].Length >= 2) fullSetSamplesWithPairs++;
            foreach (var member in chosen[0][b]) Assert.Equal(Enumerable.Range(0, member.Length).ToArray(), member);
        }
        Assert.True(fullSetSamplesWithPairs >= batch / 4, $"only {fullSetSamplesWithPairs} samples shared two or more factors");
    }

    [Fact]
    public void WithoutTheRampTheNoiseGivesMembersUnrelatedFactorOrders()
    {
        // The failure the ramp fixes: untrained scores are small next to the Gumbel noise, so members of the full set
        // rarely agree on which factor sits at each rank.
        const int m = 4, d = 8, batch = 32;
        var config = TinyModels.Config(modalities: m, latent: d) with { SelectionRampSlope = 0 };
        using var objective = Seeds.Construct(3, "c", () => new MrVaeObjective(config));
        objective.to(float64);
        using var output = TrainingForward(objective, m, d, batch, 40);
        var chosen = ChosenFactors(objective, output, batch, d);
        int withPairs = 0, agreeing = 0;
        for (int b = 0; b < batch; b++)
        {
            var members = chosen[0][b];
            if (members[0].Length < 2) continue;
            withPairs++;
            if (members.All(x => x.SequenceEqual(members[0]))) agreeing++;
        }
        Assert.True(withPairs >= batch / 4);
        Assert.True(agreeing <= withPairs / 10, $"{agreeing} of {withPairs} samples had every member in the same order");
    }

    [Fact]
    public void SelectionRampShiftsOnlyTheSelectionBias()
    {
        var config = TinyModels.Config(modalities: 4, latent: 5) with { SelectionRampSlope = 0 };
        using var plain = Seeds.Construct(7, "coordinator", () => new MrVaeObjective(config));
        using var ramped = Seeds.Construct(7, "coordinator", () => new MrVaeObjective(config with { SelectionRampSlope = 2.5 }));
        var a = plain.state_dict(); var b = ramped.state_dict();
        string bias = a.Keys.Single(k => k.EndsWith("selB3", StringComparison.Ordinal));
        foreach (var key in a.Keys.Where(k => k != bias))
            Assert.Equal(0, (a[key] - b[key]).abs().max().ToDouble());
        var shift = (b[bias] - a[bias]).to(float64);
        Assert.Equal(config.SharedSubsets().PairCount, (int)shift.shape[0]);
        for (int p = 0; p < shift.shape[0]; p++)
            for (int k = 0; k < config.LatentDim; k++)
                Assert.Equal(-2.5 * k, shift[p, k].ToDouble(), 5);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void DetachedRelationInputsStopTheStructuresGradientAtTheLatents(bool detached)
    {
        // A loss that reaches μ and log σ² only through the size networks: β_n·KL(c_A ‖ H_A).
        const int m = 3, d = 5, batch = 6;
        var config = TinyModels.Config(modalities: m, latent: d) with
        {
            Beta = 0, BetaSelection = 0, BetaSize = 1, SubsetWeight = 0, RelationReadsDetachedLatents = detached,
        };
        using var objective = Seeds.Construct(5, "c", () => new MrVaeObjective(config));
        objective.to(float64);
        var (mu, logVar) = TinyModels.Posteriors(m, batch, d, new Generator(3));
        foreach (var t in mu.Concat(logVar)) t!.requires_grad_();
        using var available = TinyModels.Availability((1 << m) - 1, m, batch);
        var context = new StepContext { Generator = new Generator(4), Training = true, TauSize = 0.8, TauSelection = 0.8 };
        using var output = objective.Forward(mu, logVar, available, Enumerable.Repeat(false, m).ToArray(), context);
        output.Loss.backward();
        double latentGradient = mu.Concat(logVar).Sum(t => t!.grad is null ? 0 : t.grad.abs().sum().ToDouble());
        double networkGradient = objective.parameters().Sum(p => p.grad is null ? 0 : p.grad.abs().sum().ToDouble());
        Assert.True(networkGradient > 1e-6, "the size networks get no gradient");
        if (detached) Assert.Equal(0, latentGradient);
        else Assert.True(latentGradient > 1e-6, "the latents get no gradient through the size networks");
    }

    [Theory]
    [InlineData(3, 6, true, true, 0, false, 12)]
    [InlineData(4, 7, true, true, 0, false, 12)]
    [InlineData(4, 5, true, false, 2, false, 12)]
    [InlineData(5, 8, false, true, 0, false, 12)]
    [InlineData(4, 6, false, false, 0, false, 12)]
    [InlineData(4, 5, true, true, 200, false, 12)]   // taken factors ~800 below the free ones: exp underflows, the exact suffix path
    [InlineData(2, 16, true, true, 0, true, 12)]     // float32: the kernel's packed-key sort and vector exps and logs
    [InlineData(5, 16, true, true, 0, true, 12)]     // float32 with taken factors (see the gradient check), scores spread beyond 13.8
    [InlineData(4, 6, true, true, 0, false, 70)]     // every core takes chunks of samples (from 32 samples on; 70: a short last chunk)
    public void FusedChainGivesTheReferencesValuesAndGradients(int m, int d, bool training, bool sampleLatents, double rampSlope, bool float32, int batch)
    {
        // The per-sample kernel (SubsetChain) against the chain with libtorch ops and autograd: the loss, every decoder
        // input, the sizes, the recorded selections, and the gradients of μ, log σ² and every network parameter.
        var dtype = float32 ? ScalarType.Float32 : ScalarType.Float64;
        double tolerance = float32 ? 1e-4 : 1e-9;
        var config = TinyModels.Config(modalities: m, latent: d) with { SelectionRampSlope = rampSlope, SubsetWeight = 0.5 };
        using var objective = (MrVaeObjective)Seeds.Construct(9, "c", () => CoordinatorObjective.Create(config));
        objective.to(dtype);
        var (mu, logVar) = TinyModels.Posteriors(m, batch, d, new Generator(31), dtype);
        // Spread float32's selection scores wider than log(1e-6) ≈ −13.8, so that the sort's taken-last rule decides orders.
        if (float32) for (int j = 0; j < m; j++) mu[j] = mu[j]! * 25;
        foreach (var t in mu.Concat(logVar)) t!.requires_grad_();
        var rng = new Random(7);
        var rows = new float[batch * m];
        for (int b = 0; b < batch; b++)
        {
            int mask = b == 0 ? (1 << m) - 1 : rng.Next(1, 1 << m);
            for (int j = 0; j < m; j++) rows[b * m + j] = mask >> j & 1;
        }
        using var available = tensor(rows, [batch, m]).to(dtype);
        var weights = Enumerable.Range(0, m).Select(j => randn([2, batch, d], dtype: dtype, generator: new Generator((ulong)(40 + j)))).ToArray();

        (double[] Values, double[] Gradients) Run(bool fused)
        {
            objective.UseFusedChain = fused;
            objective.zero_grad();
            foreach (var t in mu.Concat(logVar)) t!.grad?.zero_();
            var context = new StepContext
            {
                Generator = new Generator(77), Training = training, SampleLatents = sampleLatents,
                TauSize = 0.6, TauSelection = 0.45, RecordRelation = true,
            };
            using var output = objective.Forward(mu, logVar, available, Enumerable.Repeat(true, m).ToArray(), context);
            // Stand-ins for the decoders: a fixed random linear function of every decoder input (both views).
            var loss = output.Loss;
            for (int j = 0; j < m; j++) loss = loss + (output.DecoderInputs[j]! * weights[j].narrow(0, 0, output.DecoderInputs[j]!.shape[0])).sum();
            loss.backward();
            var values = new List<double> { output.Loss.ToDouble() };
            foreach (var input in output.DecoderInputs) values.AddRange(TinyModels.Values(input!));
            values.AddRange(TinyModels.Values(output.SubspaceSizes!));
            foreach (var y in output.Relation!.Selections) values.AddRange(TinyModels.Values(y));
            values.AddRange(TinyModels.Values(output.Relation.PrivateMask));
            var gradients = new List<double>();
            foreach (var t in mu.Concat(logVar)) gradients.AddRange(TinyModels.Values(t!.grad!));
            foreach (var p in objective.parameters()) gradients.AddRange(p.grad is null ? new double[p.numel()] : TinyModels.Values(p.grad));
            return (values.ToArray(), gradients.ToArray());
        }

        var reference = Run(fused: false);
        var kernel = Run(fused: true);
        Assert.Equal(reference.Values.Length, kernel.Values.Length);
        for (int i = 0; i < reference.Values.Length; i++)
            Assert.True(Math.Abs(reference.Values[i] - kernel.Values[i]) <= tolerance * (1 + Math.Abs(reference.Values[i])),
                $"value {i}: reference {reference.Values[i]}, kernel {kernel.Values[i]}");
        double scale = reference.Gradients.Max(Math.Abs);
        Assert.True(scale > 1e-3, "the loss gives no gradient to compare");
        if (float32 && m > 2)
        {
            // With m > 2 later subsets meet factors taken earlier (a = 0), whose masked score log(a + 1e-6) passes gradients
            // ×1e6: float32's rounding of a ~1e-6 selection probability (absolute ~6e-8) becomes O(0.1) there, in the
            // reference as much as in the kernel (measured: 19% of the latents' gradient norm, 24% of the networks'; 3% and
            // 13% without the ×25 spread). Elementwise agreement is the float64 cases' and m = 2's job; here only gross
            // errors (a wrong sign or term) are caught, and the values above were checked to 1e-4.
            int latentCount = mu.Concat(logVar).Sum(t => (int)t!.numel());
            foreach (var (first, count, bound) in new[] { (0, latentCount, 0.4), (latentCount, reference.Gradients.Length - latentCount, 0.4) })
            {
                double error = 0, norm = 0;
                for (int i = first; i < first + count; i++)
                {
                    double e = kernel.Gradients[i] - reference.Gradients[i];
                    error += e * e; norm += reference.Gradients[i] * reference.Gradients[i];
                }
                Assert.True(Math.Sqrt(error / norm) <= bound, $"gradients from {first}: relative error {Math.Sqrt(error / norm)} > {bound}");
            }
        }
        else
            for (int i = 0; i < reference.Gradients.Length; i++)
                // Relative to the largest gradient too: 1/(a + 1e-6) makes some terms ~1e6 times others, and their sums cancel.
                Assert.True(Math.Abs(reference.Gradients[i] - kernel.Gradients[i]) <= tolerance * (1 + Math.Abs(reference.Gradients[i]) + scale),
                    $"gradient {i}: reference {reference.Gradients[i]}, kernel {kernel.Gradients[i]}, largest {scale}");
        objective.UseFusedChain = true;
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
