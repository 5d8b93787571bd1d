using MrVae.Model.Objectives;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

/// <summary>
/// mrVAE's aligned subspaces (docs/model.md): products of experts per latent position over the members of its
/// shared variable, private factors elsewhere, the KL terms and the structure read-out, each checked against an
/// independent computation in plain arithmetic.
/// </summary>
public sealed class MrVaeStructureTests
{
    const int M = 3, D = 4, B = 5;

    static MrVaeObjective Objective(double rho = 0.1)
    {
        var config = new ModelConfig { Kind = ModelKind.MrVae, Modalities = M, LatentDim = D, MembershipPrior = rho, SubsetWeight = 0, Beta = 1 };
        return Create(config);
    }

    /// <summary>The objective of <paramref name="config"/> in float64.</summary>
    static MrVaeObjective Create(ModelConfig config)
    {
        var objective = (MrVaeObjective)CoordinatorObjective.Create(config);
        objective.to(float64);
        return objective;
    }

    /// <summary>Sets the membership logits so that q(j ∈ A_d) is <paramref name="probability"/>[d, j].</summary>
    static void SetMembership(MrVaeObjective objective, double[,] probability)
    {
        var parameter = objective.parameters().Single();
        var logits = new double[D * M];
        for (int d = 0; d < D; d++)
            for (int j = 0; j < M; j++)
            {
                double p = probability[d, j];
                logits[d * M + j] = Math.Log(p / (1 - p)) / 30;   // κ = 30
            }
        using var _ = no_grad();
        parameter.copy_(tensor(logits, [D, M], dtype: parameter.dtype));
    }

    /// <summary>Memberships drawn uniformly from [low, low + width] (D × M), reproducibly from the seed.</summary>
    static double[,] RandomProbabilities(int seed, double low, double width)
    {
        var probability = new double[D, M];
        var rng = new Random(seed);
        for (int d = 0; d < D; d++) for (int j = 0; j < M; j++) probability[d, j] = low + width * rng.NextDouble();
        return probability;
    }

    /// <summary>Positions: 0 = {0,1}, 1 = {0,1,2}, 2 = {2} (private), 3 = {} (private for all).</summary>
    static readonly double[,] Hard = { { 0.999, 0.999, 0.001 }, { 0.999, 0.999, 0.999 }, { 0.001, 0.001, 0.999 }, { 0.001, 0.001, 0.001 } };

    static double Kl(double mean, double variance) => 0.5 * (mean * mean + variance - 1 - Math.Log(variance));

    [Fact]
    public void EvaluationDecodesTheProductOfTheAvailableMembersWherePositionsAreShared()
    {
        using var objective = Objective();
        SetMembership(objective, Hard);
        var gen = new Generator(1);
        var (mu, logVar) = TinyModels.Posteriors(M, B, D, gen);
        foreach (int mask in new[] { 0b111, 0b011, 0b101, 0b100 })
        {
            using var available = TinyModels.Availability(mask, M, B);
            var present = Enumerable.Range(0, M).Select(j => (mask >> j & 1) == 1).ToArray();
            var x = Enumerable.Range(0, M).Select(j => present[j] ? mu[j] : null).ToArray();
            var lv = Enumerable.Range(0, M).Select(j => present[j] ? logVar[j] : null).ToArray();
            using var output = objective.Forward(x, lv, available, [true, true, true], new StepContext { Generator = gen, Training = false, SampleLatents = false });
            int[][] members = [[0, 1], [0, 1, 2], [2], []];
            for (int j = 0; j < M; j++)
            {
                var got = TinyModels.Values(output.DecoderInputs[j]![0]);
                for (int b = 0; b < B; b++)
                    for (int d = 0; d < D; d++)
                    {
                        double expected;
                        if (members[d].Contains(j))
                        {
                            double precision = 0, weighted = 0;
                            foreach (int i in members[d].Where(i => present[i]))
                            {
                                double p = Math.Exp(-logVar[i]![b, d].item<double>());
                                precision += p; weighted += p * mu[i]![b, d].item<double>();
                            }
                            expected = precision == 0 ? 0 : weighted / precision;    // no available member: the prior's mean
                        }
                        else expected = present[j] ? mu[j]![b, d].item<double>() : 0;
                        Assert.Equal(expected, got[b * D + d], 10);
                    }
            }
        }
    }

    [Fact]
    public void KlTermsChargeEachSharedVariableOnceAndEachPrivateFactorOfAnAvailableMember()
    {
        using var objective = Objective();
        SetMembership(objective, Hard);
        var gen = new Generator(2);
        var (mu, logVar) = TinyModels.Posteriors(M, B, D, gen);
        using var available = TinyModels.Availability(0b011, M, B);       // modality 2 absent
        var x = new[] { mu[0], mu[1], null };
        var lv = new[] { logVar[0], logVar[1], null };
        using var output = objective.Forward(x, lv, available, [true, true, true], new StepContext { Generator = gen, Training = false, SampleLatents = false });
        int[][] members = [[0, 1], [0, 1, 2], [2], []];
        double shared = 0, own = 0;
        for (int b = 0; b < B; b++)
            for (int d = 0; d < D; d++)
            {
                var present = members[d].Where(i => i < 2).ToArray();
                if (present.Length > 0)
                {
                    double precision = present.Sum(i => Math.Exp(-logVar[i]![b, d].item<double>()));
                    double mean = present.Sum(i => Math.Exp(-logVar[i]![b, d].item<double>()) * mu[i]![b, d].item<double>()) / precision;
                    shared += Kl(mean, 1 / precision);
                }
                for (int j = 0; j < 2; j++)
                    if (!members[d].Contains(j)) own += Kl(mu[j]![b, d].item<double>(), Math.Exp(logVar[j]![b, d].item<double>()));
            }
        Assert.Equal(shared / B, output.Terms["kl_shared"].item<double>(), 9);
        Assert.Equal(own / B, output.Terms["kl_private"].item<double>(), 9);
    }

    [Fact]
    public void TheSubsetViewDrawsTheOwnVariablesOfDroppedMembersFromThePriorAndChargesThemNothing()
    {
        // Two objectives that differ only in the dropout; posterior means in, so the one random choice besides the dropout
        // (the subset view's members) is the same draw in both.
        const int batch = 2000;
        var config = new ModelConfig { Kind = ModelKind.MrVae, Modalities = M, LatentDim = D, SubsetWeight = 1, Beta = 1 };
        using var keep = Create(config);
        using var dropAll = Create(config with { SubsetOwnDropout = 1 });
        using var dropHalf = Create(config with { SubsetOwnDropout = 0.5 });
        foreach (var objective in new[] { keep, dropAll, dropHalf }) SetMembership(objective, Hard);
        var (mu, logVar) = TinyModels.Posteriors(M, batch, D, new Generator(3));
        using var available = TinyModels.Availability(0b111, M, batch);
        StepContext Context() => new() { Generator = new Generator(11), Training = true, SampleLatents = false };
        using var kept = keep.Forward(mu, logVar, available, [true, true, true], Context());
        using var dropped = dropAll.Forward(mu, logVar, available, [true, true, true], Context());
        using var half = dropHalf.Forward(mu, logVar, available, [true, true, true], Context());
        Assert.Equal(0, dropped.Terms["kl_private_subset"].item<double>());
        Assert.True(kept.Terms["kl_private_subset"].item<double>() > 0);
        Assert.Equal(kept.Terms["kl_private"].item<double>(), dropped.Terms["kl_private"].item<double>(), 12);
        int ownFromPrior = 0, members = 0;
        for (int j = 0; j < M; j++)
        {
            Assert.Equal(TinyModels.Values(kept.DecoderInputs[j]![0]), TinyModels.Values(dropped.DecoderInputs[j]![0]));
            var k = TinyModels.Values(kept.DecoderInputs[j]![1]);
            var a = TinyModels.Values(dropped.DecoderInputs[j]![1]);
            var h = TinyModels.Values(half.DecoderInputs[j]![1]);
            var m = TinyModels.Values(mu[j]!);
            for (int b = 0; b < batch; b++)
            {
                // With the posterior kept the input is (1 − g)·μ_j + g·shared; from the prior N(0, 1) its mean is g·shared. A member
                // missing from the view (μ_j not its posterior there) shows the same input in both objectives.
                bool inView = Enumerable.Range(0, D).Any(d => Math.Abs(k[b * D + d] - a[b * D + d]) > 1e-12);
                bool halfDropped = true;
                for (int d = 0; d < D; d++)
                {
                    double own = (1 - Hard[d, j]) * m[b * D + d];   // the memberships are Hard's (SetMembership)
                    if (inView) Assert.Equal(k[b * D + d] - own, a[b * D + d], 9);
                    else Assert.Equal(k[b * D + d], a[b * D + d], 12);
                    halfDropped &= Math.Abs(h[b * D + d] - a[b * D + d]) < 1e-12;
                }
                if (!inView) continue;
                members++;
                if (halfDropped) ownFromPrior++;
                else Assert.Equal(k.Skip(b * D).Take(D), h.Skip(b * D).Take(D));
            }
        }
        // Each available member of the view is dropped with probability ½, independently per sample (binomial sd ≈ 0.01 here).
        Assert.InRange((double)ownFromPrior / members, 0.45, 0.55);
    }

    [Fact]
    public void ATrainingInputBlendsTheOwnAndSharedVariablesMeanAndVarianceByTheSoftMembership()
    {
        var config = new ModelConfig { Kind = ModelKind.MrVae, Modalities = M, LatentDim = D, SubsetWeight = 0, Beta = 1 };
        using var objective = Create(config);
        var probability = RandomProbabilities(6, 0.1, 0.8);
        SetMembership(objective, probability);
        var (mu, logVar) = TinyModels.Posteriors(M, B, D, new Generator(6));
        using var available = TinyModels.Availability(0b111, M, B);
        using var output = objective.Forward(mu, logVar, available, [true, true, true], new StepContext { Generator = new Generator(7), Training = true, SampleLatents = true });
        // The forward's only draws without a subset view or own prior: one standard normal per modality's input, in order.
        var noiseSource = new Generator(7);
        for (int j = 0; j < M; j++)
        {
            var noise = TinyModels.Values(Numerics.DeviceRandom.Randn([B, D], float64, CPU, noiseSource));
            var input = TinyModels.Values(output.DecoderInputs[j]![0]);
            for (int b = 0; b < B; b++)
                for (int d = 0; d < D; d++)
                {
                    // The shared variable: every modality's expert weighted by its membership, the prior by Π(1 − g).
                    double precision = Enumerable.Range(0, M).Select(i => 1 - probability[d, i]).Aggregate(1.0, (a, c) => a * c);
                    double weighted = 0;
                    for (int i = 0; i < M; i++)
                    {
                        double p = probability[d, i] * Math.Exp(-logVar[i]![b, d].item<double>());
                        precision += p; weighted += p * mu[i]![b, d].item<double>();
                    }
                    double sharedMean = weighted / precision, sharedVariance = 1 / precision;
                    double g = probability[d, j], ownMean = mu[j]![b, d].item<double>(), ownVariance = Math.Exp(logVar[j]![b, d].item<double>());
                    // Mean and variance each a convex combination (docs/model.md, relaxation in training).
                    double mean = (1 - g) * ownMean + g * sharedMean;
                    double variance = (1 - g) * ownVariance + g * sharedVariance;
                    Assert.Equal(mean + Math.Sqrt(variance) * noise[b * D + d], input[b * D + d], 9);
                }
        }
    }

    [Fact]
    public void StructureKlIsTheBernoulliKlOfEveryMembershipAgainstItsPrior()
    {
        using var objective = Objective(rho: 0.2);
        var probability = RandomProbabilities(3, 0.05, 0.9);
        SetMembership(objective, probability);
        var gen = new Generator(3);
        var (mu, logVar) = TinyModels.Posteriors(M, B, D, gen);
        using var output = objective.Forward(mu, logVar, TinyModels.Availability(0b111, M, B), [true, true, true], new StepContext { Generator = gen, Training = true });
        double expected = 0;
        foreach (double q in probability) expected += q * Math.Log(q / 0.2) + (1 - q) * Math.Log((1 - q) / 0.8);
        Assert.Equal(expected, output.Terms["kl_structure"].item<double>(), 6);
    }

    [Fact]
    public void TheReverseStructureKlIsKlOfThePriorFromTheMembershipsWithGradientBetaNTimesQMinusRho()
    {
        var config = new ModelConfig { Kind = ModelKind.MrVae, Modalities = M, LatentDim = D, MembershipPrior = 0.2, SubsetWeight = 0, Beta = 1, BetaSize = 0.7, ReverseStructureKl = true };
        using var objective = Create(config);
        var probability = RandomProbabilities(6, 0.02, 0.96);
        probability[0, 0] = 1 - 1e-9;   // saturated: the forward KL's gradient vanishes here, the reverse one's does not
        SetMembership(objective, probability);
        var gen = new Generator(6);
        var (mu, logVar) = TinyModels.Posteriors(M, B, D, gen);
        // Evaluation uses the most probable (hard) structure, so only the structure term depends on the memberships.
        using var output = objective.Forward(mu, logVar, TinyModels.Availability(0b111, M, B), [true, true, true], new StepContext { Generator = gen, Training = false, SampleLatents = false });
        double expected = 0;
        foreach (double q in probability) expected += 0.2 * Math.Log(0.2 / q) + 0.8 * Math.Log(0.8 / (1 - q));
        Assert.Equal(expected, output.Terms["kl_structure"].item<double>(), 5);
        output.Loss.backward();
        var gradient = TinyModels.Values(objective.parameters().Single().grad!);
        for (int d = 0; d < D; d++)
            for (int j = 0; j < M; j++)
                Assert.Equal(0.7 * 30 * (probability[d, j] - 0.2), gradient[d * M + j], 6);   // d/dφ = κ d/dlogit
    }

    /// <summary>
    /// Predictability by hand: for each position d and modality j, over the samples holding j and another member of d, the
    /// leave-one-out r² of a ridge regression (centred columns, penalty n) of the other members' product-of-experts mean at
    /// d on j's means at every position: each sample's error from the fit without it, refitted from scratch.
    /// </summary>
    static double[,] HandPredictability(Func<int, int, int, double> mu, Func<int, int, int, double> precision, double[] availability, int[][] members, int batch, int latent, int modalities)
    {
        var result = new double[latent, modalities];
        for (int d = 0; d < latent; d++)
            for (int j = 0; j < modalities; j++)
            {
                var rows = new List<(double[] X, double Y)>();
                for (int b = 0; b < batch; b++)
                {
                    var others = members[d].Where(i => i != j && availability[b * modalities + i] == 1).ToArray();
                    if (availability[b * modalities + j] == 0 || others.Length == 0) continue;
                    rows.Add((Enumerable.Range(0, latent).Select(e => mu(j, b, e)).ToArray(),
                        others.Sum(i => precision(i, b, d) * mu(i, b, d)) / others.Sum(i => precision(i, b, d))));
                }
                int n = rows.Count;
                if (n < 8) continue;
                double my = rows.Average(r => r.Y), tss = rows.Sum(r => Math.Pow(r.Y - my, 2)), press = 0;
                for (int held = 0; held < n; held++)
                {
                    // The fit without sample `held`: its own means, penalty n (the whole set's, as the closed form keeps it).
                    var fit = rows.Where((_, k) => k != held).ToArray();
                    var xm = Enumerable.Range(0, latent).Select(e => fit.Average(r => r.X[e])).ToArray();
                    double ym = fit.Average(r => r.Y);
                    var gram = new double[latent, latent]; var xty = new double[latent];
                    foreach (var r in fit)
                        for (int a = 0; a < latent; a++)
                        {
                            for (int c = 0; c < latent; c++) gram[a, c] += (r.X[a] - xm[a]) * (r.X[c] - xm[c]);
                            xty[a] += (r.X[a] - xm[a]) * (r.Y - ym);
                        }
                    for (int a = 0; a < latent; a++) gram[a, a] += n;
                    var beta = Solve(gram, xty);
                    double predicted = ym + Enumerable.Range(0, latent).Sum(a => (rows[held].X[a] - xm[a]) * beta[a]);
                    press += Math.Pow(rows[held].Y - predicted, 2);
                }
                result[d, j] = Math.Clamp(1 - press / tss, 0, 1);
            }
        return result;

        static double[] Solve(double[,] a, double[] b)
        {
            int n = b.Length; var m = (double[,])a.Clone(); var v = (double[])b.Clone();
            for (int c = 0; c < n; c++)
            {
                int pivot = Enumerable.Range(c, n - c).MaxBy(r => Math.Abs(m[r, c]));
                for (int k = 0; k < n; k++) (m[c, k], m[pivot, k]) = (m[pivot, k], m[c, k]);
                (v[c], v[pivot]) = (v[pivot], v[c]);
                for (int r = c + 1; r < n; r++)
                {
                    double f = m[r, c] / m[c, c];
                    for (int k = c; k < n; k++) m[r, k] -= f * m[c, k];
                    v[r] -= f * v[c];
                }
            }
            var solution = new double[n];
            for (int r = n - 1; r >= 0; r--) solution[r] = (v[r] - Enumerable.Range(r + 1, n - r - 1).Sum(k => m[r, k] * solution[k])) / m[r, r];
            return solution;
        }
    }

    [Fact]
    public void PredictabilityIsTheAdjustedR2OfARidgeRegressionOfTheOthersConsensusOnTheWholeCodeAndNearZeroForNoise()
    {
        const int batch = 30;
        var gen = new Generator(5);
        var (mu, logVar) = TinyModels.Posteriors(M, batch, D, gen);
        using (no_grad()) mu[2]![.., 3] = mu[0]![.., 1] + mu[1]![.., 1] + 0.4 * mu[2]![.., 3];
        var availability = new double[batch * M];
        for (int b = 0; b < batch; b++) for (int j = 0; j < M; j++) availability[b * M + j] = j == 0 && b % 4 == 0 ? 0 : 1;
        int[][] members = [[0, 1, 2], [0, 1], [1], []];
        using var member = tensor(Enumerable.Range(0, M).SelectMany(j => Enumerable.Range(0, D).Select(d => members[d].Contains(j) ? 1.0 : 0.0)).ToArray(), [M, D], dtype: float64);
        using var available = tensor(availability, [batch, M], dtype: float64);
        using var predicted = MrVaeObjective.Predictability(member, stack(mu!, 1), stack(logVar!, 1), available);
        var expected = HandPredictability((j, b, d) => mu[j]![b, d].item<double>(), (j, b, d) => Math.Exp(-logVar[j]![b, d].item<double>()), availability, members, batch, D, M);
        for (int d = 0; d < D; d++)
            for (int j = 0; j < M; j++)
                Assert.Equal(expected[d, j], predicted[d, j].item<double>(), 9);
        Assert.True(expected[1, 2] > 0.5, $"a non-member whose code holds the consensus elsewhere: {expected[1, 2]}");

        // Independent codes at a training batch's size (64 samples, 64 positions): the penalty and the degrees of freedom
        // keep chance fits below the prior's threshold of 0.2.
        const int wide = 64;
        var (noise, noiseLogVar) = TinyModels.Posteriors(M, wide, wide, gen);
        using var everyone = ones(M, wide, dtype: float64);
        using var chance = MrVaeObjective.Predictability(everyone, stack(noise!, 1), stack(noiseLogVar!, 1), ones(wide, M, dtype: float64));
        var values = chance.data<double>().ToArray();
        Assert.True(values.Count(v => v >= 0.2) <= 0.02 * values.Length, $"{values.Count(v => v >= 0.2)} of {values.Length} chance fits at 0.2 or above");
        Assert.True(values.Average() < 0.05, $"mean chance fit {values.Average()}");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TheAgreementPriorFlipsAMembershipsPriorWhereTheModalitysWholeCodePredictsTheOtherMembersConsensus(bool silenceFirstPosition)
    {
        const int batch = 40;
        var config = new ModelConfig { Kind = ModelKind.MrVae, Modalities = M, LatentDim = D, MembershipPrior = 0.2, SubsetWeight = 0, Beta = 1, BetaSize = 0.7, ReverseStructureKl = true, AgreementPrior = true };
        using var objective = Create(config);
        // Most probable structure: position 0 = {0,1,2}, 1 = {0,1}, 2 = {1} (j = 1's own), 3 = {} (each modality's own).
        var probability = new double[,] { { 0.9, 0.8, 0.7 }, { 0.6, 0.95, 0.3 }, { 0.1, 0.7, 0.2 }, { 0.3, 0.4, 0.05 } };
        SetMembership(objective, probability);
        var gen = new Generator(11);
        var (mu, logVar) = TinyModels.Posteriors(M, batch, D, gen);
        // Modality 1's code follows modality 0's at positions 0 and 1; modality 2, not a member of position 1, says what
        // position 1's members say, but at its own position 3; it says nothing of position 0's consensus.
        using (no_grad())
        {
            mu[1]![.., 0] = 0.8 * mu[0]![.., 0] + 0.3 * mu[1]![.., 0];
            mu[1]![.., 1] = 1.5 * mu[0]![.., 1] + 0.5 * mu[1]![.., 1];
            mu[2]![.., 3] = mu[0]![.., 1] + 0.3 * mu[2]![.., 3];
            // Modality 2 left position 2 but still says there what its lone member, modality 1, says (a pair that lost a member).
            mu[2]![.., 2] = mu[1]![.., 2] + 0.3 * mu[2]![.., 2];
            // Silenced: modalities 1 and 2 say next to nothing at position 0 (a spread of 0.05 against a variance near 1),
            // though modality 1 still follows modality 0 there; only one member speaks, so the position shares nothing.
            if (silenceFirstPosition) { mu[1]![.., 0] *= 0.05; mu[2]![.., 0] *= 0.05; }
        }
        // Modality 2 is missing in the first 10 samples.
        var availability = new double[batch * M];
        for (int b = 0; b < batch; b++) for (int j = 0; j < M; j++) availability[b * M + j] = j == 2 && b < 10 ? 0 : 1;
        using var available = tensor(availability, [batch, M], dtype: float64);
        using var output = objective.Forward(mu, logVar, available, [true, true, true], new StepContext { Generator = gen, Training = true, SampleLatents = false });

        double Mu(int j, int b, int d) => mu[j]![b, d].item<double>();
        double Precision(int j, int b, int d) => Math.Exp(-logVar[j]![b, d].item<double>());
        int[][] members = [[0, 1, 2], [0, 1], [1], []];
        var predictability = HandPredictability(Mu, Precision, availability, members, batch, D, M);
        // I_{j,d} by hand: ½ log(1 + the unbiased variance of j's means / their mean variance), over the samples holding j.
        double Information(int j, int d)
        {
            var held = Enumerable.Range(0, batch).Where(b => availability[b * M + j] == 1).ToArray();
            double mean = held.Average(b => Mu(j, b, d));
            double spread = held.Sum(b => Math.Pow(Mu(j, b, d) - mean, 2)) / (held.Length - 1);
            return 0.5 * Math.Log(1 + spread / held.Average(b => 1 / Precision(j, b, d)));
        }
        using (var information = MrVaeObjective.Information(stack(mu!, 1), stack(logVar!, 1), available))
            for (int j = 0; j < M; j++)
                for (int d = 0; d < D; d++)
                    Assert.Equal(Information(j, d), information[j, d].item<double>(), 9);
        double expected = 0;
        var rhos = new double[D, M];
        for (int d = 0; d < D; d++)
            for (int j = 0; j < M; j++)
            {
                // The samples holding j and at least one other member of d; the others' product-of-experts mean there.
                var pairs = new List<(double Own, double Others)>();
                for (int b = 0; b < batch; b++)
                {
                    var others = members[d].Where(i => i != j && availability[b * M + i] == 1).ToArray();
                    if (availability[b * M + j] == 0 || others.Length == 0) continue;
                    pairs.Add((Mu(j, b, d), others.Sum(i => Precision(i, b, d) * Mu(i, b, d)) / others.Sum(i => Precision(i, b, d))));
                }
                double r2 = 0;
                if (pairs.Count >= 3)
                {
                    double mx = pairs.Average(p => p.Own), my = pairs.Average(p => p.Others);
                    double sxy = pairs.Sum(p => (p.Own - mx) * (p.Others - my)), sxx = pairs.Sum(p => Math.Pow(p.Own - mx, 2)), syy = pairs.Sum(p => Math.Pow(p.Others - my, 2));
                    r2 = sxy * sxy / (sxx * syy);
                }
                // Two parties must speak at d: j and another member, or two other members.
                int parties = members[d].Count(i => i != j && Information(i, d) >= 0.2) + (Information(j, d) >= 0.2 ? 1 : 0);
                double rho = parties >= 2 && (r2 >= 0.2 || predictability[d, j] >= 0.2) ? 0.8 : 0.2;
                rhos[d, j] = rho;
                double q = probability[d, j];
                expected += rho * Math.Log(rho / q) + (1 - rho) * Math.Log((1 - rho) / (1 - q));
            }
        Assert.Equal(expected, output.Terms["kl_structure"].item<double>(), 5);
        // The agreeing pairs are pulled towards membership, the member that cannot say it pushed out, the non-member that
        // can say it pulled in, the lone member's and the empty position's priors unchanged (no other member to agree with),
        // a speaking non-member that agrees with a lone member pulled back in. Silenced, the first position's members are
        // all pushed out: one speaking member shares nothing.
        Assert.True(rhos[1, 0] == 0.8 && rhos[1, 1] == 0.8);
        Assert.Equal(silenceFirstPosition ? 0.2 : 0.8, rhos[0, 0], 9);
        Assert.Equal(silenceFirstPosition ? 0.2 : 0.8, rhos[0, 1], 9);
        Assert.Equal(0.2, rhos[0, 2], 9);
        Assert.Equal(0.8, rhos[1, 2], 9);
        Assert.Equal(0.2, rhos[2, 1], 9);
        Assert.Equal(0.8, rhos[2, 2], 9);
        Assert.Equal(0.2, rhos[3, 0], 9);
        // The prior is the batch's evidence held fixed: against the constant prior, the gradient per logit differs by β_n κ (0.2 − ρ).
        output.Loss.backward();
        var gradient = TinyModels.Values(objective.parameters().Single().grad!);
        using var constant = Create(config with { AgreementPrior = false });
        SetMembership(constant, probability);
        using var plain = constant.Forward(mu, logVar, available, [true, true, true], new StepContext { Generator = gen, Training = true, SampleLatents = false });
        plain.Loss.backward();
        var plainGradient = TinyModels.Values(constant.parameters().Single().grad!);
        for (int d = 0; d < D; d++)
            for (int j = 0; j < M; j++)
                Assert.Equal(0.7 * 30 * (0.2 - rhos[d, j]), gradient[d * M + j] - plainGradient[d * M + j], 6);
    }

    [Fact]
    public void InitialMemberSetsStartEachShareablePositionWithOneSharedSubsetSmallestFirstAndHoldItThroughTheStructureWarmUp()
    {
        // D = 6 with 1 private position: 5 shareable positions over the 4 shared subsets of 3 modalities, cycling.
        var config = new ModelConfig { Kind = ModelKind.MrVae, Modalities = M, LatentDim = 6, PrivatePositions = 1, InitialMemberSets = true };
        using var objective = Create(config);
        var q = TinyModels.Values(objective.Membership());
        double inside = 1 / (1 + Math.Exp(-2)), outside = 1 - inside;
        var sets = new List<string>();
        for (int d = 0; d < 5; d++)
        {
            var members = Enumerable.Range(0, M).Where(j => q[d * M + j] > 0.5).ToArray();
            for (int j = 0; j < M; j++) Assert.Equal(members.Contains(j) ? inside : outside, q[d * M + j], 6);
            sets.Add(SubsetFamily.Format(members));
        }
        Assert.All(Enumerable.Range(0, M), j => Assert.Equal(0, q[5 * M + j]));
        // The three pairs first, then the full set, then the cycle starts again with a pair.
        Assert.Equal(new[] { "{0,1}", "{0,2}", "{1,2}" }, sets.Take(3).Order());
        Assert.Equal("{0,1,2}", sets[3]);
        Assert.Equal(sets[0], sets[4]);
        // During the structure warm-up the memberships get no gradient; after it they do.
        var gen = new Generator(5);
        var (mu, logVar) = TinyModels.Posteriors(M, B, 6, gen);
        foreach (var t in mu) t!.requires_grad_();   // as the encoders' outputs in training
        foreach (var (scale, learns) in new[] { (0.5, false), (1.0, true) })
        {
            objective.zero_grad();
            using var output = objective.Forward(mu, logVar, TinyModels.Availability(0b111, M, B), [true, true, true],
                new StepContext { Generator = gen, Training = true, SampleLatents = true, StructureScale = scale });
            output.Loss.backward();
            var grad = objective.parameters().Single().grad;
            Assert.Equal(learns, grad is not null && TinyModels.Values(grad).Any(v => v != 0));
        }
        // Without the option every membership starts at ½.
        using var plain = Create(config with { InitialMemberSets = false });
        Assert.All(TinyModels.Values(plain.Membership()).Take(5 * M), v => Assert.Equal(0.5, v, 9));
    }

    [Fact]
    public void PrivatePositionsAreNeverSharedAndCostNoStructureTerm()
    {
        var config = new ModelConfig { Kind = ModelKind.MrVae, Modalities = M, LatentDim = D, SubsetWeight = 0, Beta = 1, PrivatePositions = 2 };
        using var objective = Create(config);
        SetMembership(objective, new double[,] { { 0.999, 0.999, 0.999 }, { 0.999, 0.999, 0.001 }, { 0.999, 0.999, 0.999 }, { 0.999, 0.999, 0.999 } });
        using (var g = objective.Membership())
        {
            var q = TinyModels.Values(g);
            for (int k = 2 * M; k < D * M; k++) Assert.Equal(0, q[k]);
        }
        var sizes = objective.Family.Subsets.Zip(objective.MostProbableSizes()).Where(p => p.Second > 0).ToDictionary(p => SubsetFamily.Format(p.First), p => p.Second);
        Assert.Equal(new Dictionary<string, int> { ["{0,1,2}"] = 1, ["{0,1}"] = 1 }, sizes);

        var gen = new Generator(7);
        var (mu, logVar) = TinyModels.Posteriors(M, B, D, gen);
        using var output = objective.Forward(mu, logVar, TinyModels.Availability(0b111, M, B), [true, true, true], new StepContext { Generator = gen, Training = false, SampleLatents = false });
        int[][] members = [[0, 1, 2], [0, 1], [], []];
        for (int j = 0; j < M; j++)
            for (int b = 0; b < B; b++)
                for (int d = 0; d < D; d++)
                {
                    double expected = mu[j]![b, d].item<double>();
                    if (members[d].Contains(j))
                    {
                        double precision = members[d].Sum(i => Math.Exp(-logVar[i]![b, d].item<double>()));
                        expected = members[d].Sum(i => Math.Exp(-logVar[i]![b, d].item<double>()) * mu[i]![b, d].item<double>()) / precision;
                    }
                    Assert.Equal(expected, output.DecoderInputs[j]![0, b, d].item<double>(), 9);
                }
        // The structure KL counts the two shareable positions only.
        double kl = 0;
        foreach (double q in new[] { 0.999, 0.999, 0.999, 0.999, 0.999, 0.001 }) kl += q * Math.Log(q / 0.1) + (1 - q) * Math.Log((1 - q) / 0.9);
        Assert.Equal(kl, output.Terms["kl_structure"].item<double>(), 5);
    }

    [Fact]
    public void MemberMarginalKlChargesEachMembersAggregatePosteriorOverTheSamplesThatHoldIt()
    {
        var config = new ModelConfig { Kind = ModelKind.MrVae, Modalities = M, LatentDim = D, SubsetWeight = 0, Beta = 1.5, MemberMarginalKl = true };
        using var objective = Create(config);
        var probability = RandomProbabilities(9, 0.05, 0.9);
        SetMembership(objective, probability);
        var gen = new Generator(9);
        var (mu, logVar) = TinyModels.Posteriors(M, B, D, gen);
        // Modality 1 is missing in samples 0 and 3: its aggregate is over samples 1, 2 and 4 only.
        var availability = new double[B * M];
        for (int b = 0; b < B; b++) for (int j = 0; j < M; j++) availability[b * M + j] = j == 1 && (b == 0 || b == 3) ? 0 : 1;
        using var available = tensor(availability, [B, M], dtype: float64);
        using var output = objective.Forward(mu, logVar, available, [true, true, true], new StepContext { Generator = gen, Training = true, SampleLatents = false });
        double expected = 0;
        for (int j = 0; j < M; j++)
        {
            var rows = Enumerable.Range(0, B).Where(b => availability[b * M + j] == 1).ToArray();
            for (int d = 0; d < D; d++)
            {
                double mean = rows.Average(b => mu[j]![b, d].item<double>());
                double variance = rows.Average(b => Math.Pow(mu[j]![b, d].item<double>() - mean, 2)) + rows.Average(b => Math.Exp(logVar[j]![b, d].item<double>()));
                double g = 1 / (1 + (1 - probability[d, j]) / probability[d, j]);
                expected += g * Kl(mean, variance);
            }
        }
        Assert.Equal(expected, output.Terms["kl_member_marginal"].item<double>(), 6);
        // It enters the loss weighted by β, beside the unchanged other terms.
        using (var without = Create(config with { MemberMarginalKl = false }))
        {
            SetMembership(without, probability);
            using var plain = without.Forward(mu, logVar, available, [true, true, true], new StepContext { Generator = gen, Training = true, SampleLatents = false });
            Assert.Equal(1.5 * expected, output.Loss.item<double>() - plain.Loss.item<double>(), 6);
        }
        // Not part of the evaluation loss (a batch statistic, and the structure there is the most probable one).
        using var evaluation = objective.Forward(mu, logVar, available, [true, true, true], new StepContext { Generator = gen, Training = false, SampleLatents = false });
        Assert.False(evaluation.Terms.ContainsKey("kl_member_marginal"));
        // A modality absent from the whole batch (a detached node) has no aggregate and is charged nothing.
        double withoutModality2 = 0;
        for (int j = 0; j < 2; j++)
        {
            var rows = Enumerable.Range(0, B).Where(b => availability[b * M + j] == 1).ToArray();
            for (int d = 0; d < D; d++)
            {
                double mean = rows.Average(b => mu[j]![b, d].item<double>());
                double variance = rows.Average(b => Math.Pow(mu[j]![b, d].item<double>() - mean, 2)) + rows.Average(b => Math.Exp(logVar[j]![b, d].item<double>()));
                withoutModality2 += 1 / (1 + (1 - probability[d, j]) / probability[d, j]) * Kl(mean, variance);
            }
        }
        for (int b = 0; b < B; b++) availability[b * M + 2] = 0;
        using var twoPresent = tensor(availability, [B, M], dtype: float64);
        using var detached = objective.Forward([mu[0], mu[1], null], [logVar[0], logVar[1], null], twoPresent, [true, true, false], new StepContext { Generator = gen, Training = true, SampleLatents = false });
        Assert.Equal(withoutModality2, detached.Terms["kl_member_marginal"].item<double>(), 6);
        Assert.True(double.IsFinite(detached.Loss.item<double>()));
    }

    [Fact]
    public void TheKlAndStructureWarmUpsScaleTheirTermsEachOnItsOwnSchedule()
    {
        // Without subset views and latent samples the coordinator's loss is the KL part alone: s_β β KL_latent + s_n β_n KL_structure.
        var config = new ModelConfig { Kind = ModelKind.MrVae, Modalities = M, LatentDim = D, SubsetWeight = 0, Beta = 2.5, BetaSize = 3, BetaWarmupSteps = 400, StructureWarmupSteps = 1000, MemberMarginalKl = true };
        using var objective = Create(config);
        var probability = RandomProbabilities(5, 0.1, 0.8);
        SetMembership(objective, probability);
        var gen = new Generator(5);
        var (mu, logVar) = TinyModels.Posteriors(M, B, D, gen);
        foreach (long step in new long[] { 0, 100, 400, 700, 1000, 3000 })
        {
            var context = StepContext.ForTraining(config, step, gen);
            using var output = objective.Forward(mu, logVar, TinyModels.Availability(0b111, M, B), [true, true, true],
                new StepContext { Generator = gen, Training = true, SampleLatents = false, BetaScale = context.BetaScale, StructureScale = context.StructureScale });
            double sBeta = Math.Min(1.0, step / 400.0), sStructure = Math.Min(1.0, step / 1000.0);
            double latent = output.Terms["kl_shared"].item<double>() + output.Terms["kl_private"].item<double>() + output.Terms["kl_member_marginal"].item<double>();
            Assert.Equal(sBeta * 2.5 * latent + sStructure * 3 * output.Terms["kl_structure"].item<double>(), output.Loss.item<double>(), 9);
        }
    }

    [Fact]
    public void GradientsMatchFiniteDifferencesWithSoftMemberships()
    {
        using var objective = Objective();
        var probability = RandomProbabilities(4, 0.2, 0.6);
        SetMembership(objective, probability);
        var gen = new Generator(4);
        var (mu, logVar) = TinyModels.Posteriors(M, B, D, gen);
        foreach (var t in mu.Concat(logVar)) t!.requires_grad_(true);
        using var available = TinyModels.Availability(0b111, M, B);
        using var target = randn([B, D], dtype: float64, generator: gen);
        // A smooth stand-in for the decoders: the loss reads every decoder input (deterministic: no sampling, no subset view).
        double Loss()
        {
            using var output = objective.Forward(mu, logVar, available, [true, true, true], new StepContext { Generator = new Generator(5), Training = true, SampleLatents = false });
            var total = output.Loss + output.DecoderInputs.Select((z, j) => (z![0] - (j + 1) * target).square().sum()).Aggregate((a, c) => a + c);
            return total.item<double>();
        }
        var parameter = objective.parameters().Single();
        {
            using var output = objective.Forward(mu, logVar, available, [true, true, true], new StepContext { Generator = new Generator(5), Training = true, SampleLatents = false });
            var total = output.Loss + output.DecoderInputs.Select((z, j) => (z![0] - (j + 1) * target).square().sum()).Aggregate((a, c) => a + c);
            total.backward();
        }
        const double h = 1e-6;
        foreach (var (tensorToCheck, name) in new (Tensor, string)[] { (parameter, "membership"), (mu[1]!, "mu_1"), (logVar[2]!, "logvar_2") })
        {
            var analytic = TinyModels.Values(tensorToCheck.grad!);
            for (int k = 0; k < analytic.Length; k += 3)
            {
                using var flat = tensorToCheck.detach().view(-1);
                double original = flat[k].item<double>();
                using (no_grad()) flat[k] = original + h;
                double up = Loss();
                using (no_grad()) flat[k] = original - h;
                double down = Loss();
                using (no_grad()) flat[k] = original;
                double numeric = (up - down) / (2 * h);
                Assert.True(Math.Abs(numeric - analytic[k]) <= 1e-5 * Math.Max(1, Math.Abs(numeric)), $"{name}[{k}]: analytic {analytic[k]}, numeric {numeric}");
            }
        }
    }

    [Fact]
    public void ReadOutGivesExpectedAndMostProbableSizesAndAPriorFindsNothing()
    {
        using var objective = Objective();
        SetMembership(objective, Hard);
        var subsets = objective.Family.Subsets.Select(s => string.Join(",", s)).ToList();
        var mostProbable = objective.MostProbableSizes();
        Assert.Equal(1, mostProbable[subsets.IndexOf("0,1")]);
        Assert.Equal(1, mostProbable[subsets.IndexOf("0,1,2")]);
        Assert.Equal(2, mostProbable.Sum());
        var expected = objective.ExpectedSizes();
        // E[n_{0,1}] = Σ_d q(0 ∈ A_d) q(1 ∈ A_d) (1 − q(2 ∈ A_d)), position by position.
        double e01 = 0.999 * 0.999 * 0.999 + 0.999 * 0.999 * 0.001 + 0.001 * 0.001 * 0.001 + 0.001 * 0.001 * 0.999;
        Assert.Equal(e01, expected[subsets.IndexOf("0,1")], 6);

        var atPrior = new double[D, M];
        for (int d = 0; d < D; d++) for (int j = 0; j < M; j++) atPrior[d, j] = 0.1;
        SetMembership(objective, atPrior);
        Assert.All(objective.MostProbableSizes(), n => Assert.Equal(0, n));
        Assert.All(objective.ExpectedSizes(), e => Assert.True(e < 1));
    }
}
