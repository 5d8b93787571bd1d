using MrVae.Model.Objectives;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

/// <summary>
/// mrVAE's conditional prior of the own variables (ModelConfig.ConditionalPrivatePrior): p(u_j | s) = N(A_j s, diag(1 − ‖A_{j,d}‖²))
/// given the shared variables at j's member positions, A_{j,d} = W_{j,d} / √(1 + ‖W_{j,d}‖²) over those columns. Its KL,
/// the draws of a missing modality's own variables and the importance weights are checked against plain arithmetic over
/// W, its standard-normal marginal against the prior's draws, and the gradients against finite differences.
/// </summary>
public sealed class OwnVariablePriorTests
{
    const int M = 3, D = 4, B = 5, K = 3;

    /// <summary>Positions: 0 = {0,1}, 1 = {0,1,2}, 2 = {2}, 3 = {} (set through the membership logits).</summary>
    static readonly int[][] Members = [[0, 1], [0, 1, 2], [2], []];

    static ModelConfig Config(bool conditional) => new()
    {
        Kind = ModelKind.MrVae, Modalities = M, LatentDim = D, EncoderHidden = 7, SubsetWeight = 0, Beta = 1, ConditionalPrivatePrior = conditional,
    };

    /// <summary>An objective with the structure <see cref="Members"/> (q = 0.9 / 0.1, or <paramref name="soft"/>) and, when conditional, random couplings W (seeded).</summary>
    static MrVaeObjective Objective(bool conditional, bool randomPriors = true, double[,]? soft = null)
    {
        var objective = (MrVaeObjective)CoordinatorObjective.Create(Config(conditional));
        objective.to(float64);
        using var _ = no_grad();
        var logits = new double[D * M];
        for (int d = 0; d < D; d++)
            for (int j = 0; j < M; j++)
            {
                double q = soft?[d, j] ?? (Members[d].Contains(j) ? 0.9 : 0.1);
                logits[d * M + j] = Math.Log(q / (1 - q)) / 30;
            }
        objective.named_parameters().Single(p => p.name.Contains("membership")).parameter.copy_(tensor(logits, [D, M], dtype: float64));
        if (conditional && randomPriors)
        {
            var gen = new Generator(17);
            foreach (var (name, p) in objective.named_parameters().Where(p => !p.name.Contains("membership")))
                p.copy_(0.8 * randn(p.shape, dtype: float64, generator: gen));
        }
        return objective;
    }

    /// <summary>The prior of modality j's own variables given the shared draw s, in plain arithmetic over its coupling W.</summary>
    static (double[] Mean, double[] LogVar) PriorOf(MrVaeObjective objective, int j, double[] shared)
    {
        var w = TinyModels.Values(objective.named_parameters().Single(p => p.name.Contains($".{j}.")).parameter);    // D × D
        // Columns: j's member positions; rows: its own positions (a member position's own remainder stays N(0, 1)).
        double Coupling(int d, int k) => Members[k].Contains(j) && !Members[d].Contains(j) ? w[d * D + k] : 0;
        var scale = Enumerable.Range(0, D).Select(d => 1 + Enumerable.Range(0, D).Sum(k => Coupling(d, k) * Coupling(d, k))).ToArray();
        var mean = Enumerable.Range(0, D).Select(d => Enumerable.Range(0, D).Sum(k => Coupling(d, k) * shared[k]) / Math.Sqrt(scale[d])).ToArray();
        return (mean, scale.Select(v => -Math.Log(v)).ToArray());
    }

    static double KlNormal(double mu, double variance, double mean, double priorVariance)
        => 0.5 * (Math.Log(priorVariance / variance) + (variance + (mu - mean) * (mu - mean)) / priorVariance - 1);

    static double LogNormal(double z, double mean, double variance) => -0.5 * (Math.Log(2 * Math.PI * variance) + (z - mean) * (z - mean) / variance);

    [Fact]
    public void ItStartsAsTheStandardNormalPrior()
    {
        using var plain = Objective(conditional: false);
        using var conditional = Objective(conditional: true, randomPriors: false);
        var (mu, logVar) = TinyModels.Posteriors(M, B, D, new Generator(3));
        using var available = TinyModels.Availability(0b011, M, B);
        var x = new[] { mu[0], mu[1], null }; var lv = new[] { logVar[0], logVar[1], null };
        foreach (bool training in new[] { false, true })
        {
            using var a = plain.Forward(x, lv, available, [true, true, true], new StepContext { Generator = new Generator(4), Training = training, SampleLatents = false });
            using var b = conditional.Forward(x, lv, available, [true, true, true], new StepContext { Generator = new Generator(4), Training = training, SampleLatents = false });
            Assert.Equal(a.Loss.item<double>(), b.Loss.item<double>(), 12);
            for (int j = 0; j < M; j++) Assert.Equal(TinyModels.Values(a.DecoderInputs[j]!), TinyModels.Values(b.DecoderInputs[j]!));
        }
    }

    [Fact]
    public void OwnVariablesAreChargedAgainstTheirPriorGivenTheSharedOnesAndAMissingModalityTakesItsMean()
    {
        using var objective = Objective(conditional: true);
        var (mu, logVar) = TinyModels.Posteriors(M, B, D, new Generator(5));
        using var available = TinyModels.Availability(0b011, M, B);        // modality 2 absent
        var x = new[] { mu[0], mu[1], null }; var lv = new[] { logVar[0], logVar[1], null };
        using var output = objective.Forward(x, lv, available, [true, true, true], new StepContext { Generator = new Generator(6), Training = false, SampleLatents = false });
        double own = 0;
        for (int b = 0; b < B; b++)
        {
            // The shared variables: the available members' product of experts; the prior mean (0) where none is available.
            var shared = new double[D];
            for (int d = 0; d < D; d++)
            {
                var present = Members[d].Where(i => i < 2).ToArray();
                double precision = present.Sum(i => Math.Exp(-logVar[i]![b, d].item<double>()));
                shared[d] = present.Length == 0 ? 0 : present.Sum(i => Math.Exp(-logVar[i]![b, d].item<double>()) * mu[i]![b, d].item<double>()) / precision;
            }
            for (int j = 0; j < M; j++)
            {
                var (mean, logPriorVar) = PriorOf(objective, j, shared);
                var decoded = TinyModels.Values(output.DecoderInputs[j]![0]);
                for (int d = 0; d < D; d++)
                {
                    if (Members[d].Contains(j)) continue;
                    if (j < 2) own += KlNormal(mu[j]![b, d].item<double>(), Math.Exp(logVar[j]![b, d].item<double>()), mean[d], Math.Exp(logPriorVar[d]));
                    else Assert.Equal(mean[d], decoded[b * D + d], 10);           // the missing modality's own variables: the prior's mean
                }
            }
        }
        Assert.Equal(own / B, output.Terms["kl_private"].item<double>(), 9);
    }

    [Fact]
    public void InTrainingEveryOwnRemainderIsChargedByItsSoftWeightAndAMemberPositionsOneAgainstTheStandardNormal()
    {
        using var objective = Objective(conditional: true);
        var (mu, logVar) = TinyModels.Posteriors(M, B, D, new Generator(13));
        using var available = TinyModels.Availability(0b111, M, B);
        using var output = objective.Forward(mu, logVar, available, [true, true, true], new StepContext { Generator = new Generator(14), Training = true, SampleLatents = false });
        double Mu(int j, int b, int d) => mu[j]![b, d].item<double>();
        double Var(int j, int b, int d) => Math.Exp(logVar[j]![b, d].item<double>());
        double G(int d, int j) => Members[d].Contains(j) ? 0.9 : 0.1;
        double own = 0;
        for (int b = 0; b < B; b++)
        {
            // The shared draw's mean in training: the experts weighted by the soft memberships, the prior weighted by Π(1 − g).
            var shared = new double[D];
            for (int d = 0; d < D; d++)
            {
                double none = Enumerable.Range(0, M).Aggregate(1.0, (a, i) => a * (1 - G(d, i)));
                double precision = Enumerable.Range(0, M).Sum(i => G(d, i) / Var(i, b, d)) + none;
                shared[d] = Enumerable.Range(0, M).Sum(i => G(d, i) / Var(i, b, d) * Mu(i, b, d)) / precision;
            }
            for (int j = 0; j < M; j++)
            {
                var (mean, logPriorVar) = PriorOf(objective, j, shared);
                for (int d = 0; d < D; d++)
                {
                    own += (1 - G(d, j)) * KlNormal(Mu(j, b, d), Var(j, b, d), mean[d], Math.Exp(logPriorVar[d]));
                }
            }
        }
        Assert.Equal(own / B, output.Terms["kl_private"].item<double>(), 9);
    }

    [Fact]
    public void ImportanceWeightsUseTheConditionalPriorOfEachOwnVariable()
    {
        using var objective = Objective(conditional: true);
        var (muN, logVarN) = TinyModels.Posteriors(M, B, D, new Generator(7));
        var mu = muN.Select(t => t!).ToArray(); var logVar = logVarN.Select(t => t!).ToArray();
        var (inputs, logWeight) = objective.PosteriorSamples(mu, logVar, K, new Generator(8));
        var z = inputs.Select(TinyModels.Values).ToArray();
        var w = TinyModels.Values(logWeight);
        for (int k = 0; k < K; k++)
            for (int b = 0; b < B; b++)
            {
                int At(int d) => (k * B + b) * D + d;
                double expected = 0;
                var shared = new double[D];
                for (int d = 0; d < D; d++)
                {
                    if (Members[d].Length == 0) continue;
                    shared[d] = z[Members[d][0]][At(d)];
                    double precision = Members[d].Sum(j => Math.Exp(-logVar[j][b, d].item<double>()));
                    double mean = Members[d].Sum(j => Math.Exp(-logVar[j][b, d].item<double>()) * mu[j][b, d].item<double>()) / precision;
                    expected += LogNormal(shared[d], 0, 1) - LogNormal(shared[d], mean, 1 / precision);
                }
                for (int j = 0; j < M; j++)
                {
                    var (mean, logPriorVar) = PriorOf(objective, j, shared);
                    for (int d = 0; d < D; d++)
                        if (!Members[d].Contains(j))
                        {
                            double u = z[j][At(d)];
                            expected += LogNormal(u, mean[d], Math.Exp(logPriorVar[d])) - LogNormal(u, mu[j][b, d].item<double>(), Math.Exp(logVar[j][b, d].item<double>()));
                        }
                }
                Assert.Equal(expected, w[k * B + b], 9);
            }
    }

    [Fact]
    public void TheOwnVariablesPriorDrawsAreStandardNormalAndGoWithTheSharedOnesAsTheCouplingSays()
    {
        using var objective = Objective(conditional: true);
        const int N = 200_000;
        var z = objective.PriorDecoderInputs(N, new Generator(12), float64, CPU).Select(t => t.to(float64)).ToArray();   // M × (N × D)
        for (int j = 0; j < M; j++)
            for (int d = 0; d < D; d++)
            {
                if (Members[d].Contains(j)) continue;
                using var u = z[j][.., d];
                // Standard normal whatever W: mean 0 and variance 1 to within a few standard errors of N draws.
                Assert.InRange(u.mean().item<double>(), -0.01, 0.01);
                Assert.InRange(u.var().item<double>(), 0.98, 1.02);
                // Its covariance with a shared variable s_k: the coupling's A_{d,k} (0 where j is not a member of k).
                var basis = new double[D];
                for (int k = 0; k < D; k++)
                {
                    if (Members[k].Length == 0) continue;
                    Array.Clear(basis); basis[k] = 1;
                    double expected = PriorOf(objective, j, basis).Mean[d];
                    using var s = z[Members[k][0]][.., k];
                    Assert.InRange((u * s).mean().item<double>(), expected - 0.01, expected + 0.01);
                }
            }
    }

    [Fact]
    public void GradientsMatchFiniteDifferencesWithSoftMembershipsAndAMissingModality()
    {
        var soft = new double[D, M];
        var rng = new Random(9);
        for (int d = 0; d < D; d++) for (int j = 0; j < M; j++) soft[d, j] = 0.2 + 0.6 * rng.NextDouble();
        using var objective = Objective(conditional: true, soft: soft);
        var gen = new Generator(10);
        var (mu, logVar) = TinyModels.Posteriors(M, B, D, gen);
        foreach (var t in mu.Concat(logVar)) t!.requires_grad_(true);
        using var available = TinyModels.Availability(0b101, M, B);
        var x = new[] { mu[0], null, mu[2] }; var lv = new[] { logVar[0], null, logVar[2] };
        using var target = randn([B, D], dtype: float64, generator: gen);
        Tensor Total()
        {
            var output = objective.Forward(x, lv, available, [true, true, true], new StepContext { Generator = new Generator(11), Training = true, SampleLatents = false });
            return output.Loss + output.DecoderInputs.Select((z, j) => (z![0] - (j + 1) * target).square().sum()).Aggregate((a, c) => a + c);
        }
        Total().backward();
        var checks = objective.named_parameters().Select(p => ((Tensor)p.parameter, p.name)).Concat([(mu[0]!, "mu_0"), (logVar[2]!, "logvar_2")]).ToArray();
        const double h = 1e-6;
        foreach (var (tensorToCheck, name) in checks)
        {
            var analytic = TinyModels.Values(tensorToCheck.grad!);
            for (int k = 0; k < analytic.Length; k += 5)
            {
                using var flat = tensorToCheck.detach().view(-1);
                double original = flat[k].item<double>();
                using (no_grad()) flat[k] = original + h;
                double up; using (no_grad()) up = Total().item<double>();
                using (no_grad()) flat[k] = original - h;
                double down; using (no_grad()) down = Total().item<double>();
                using (no_grad()) flat[k] = original;
                double numeric = (up - down) / (2 * h);
                Assert.True(Math.Abs(numeric - analytic[k]) <= 1e-5 * Math.Max(1, Math.Abs(numeric)), $"{name}[{k}]: analytic {analytic[k]}, numeric {numeric}");
            }
        }
    }
}
