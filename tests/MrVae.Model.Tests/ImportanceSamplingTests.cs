using MrVae.Model.Objectives;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

/// <summary>
/// The importance sampler behind the test log-likelihood (IWAE) and the prior sampler behind joint coherence: each
/// model's log p(z) − log q(z | X) against an independent computation in plain arithmetic over the drawn latents.
/// </summary>
public sealed class ImportanceSamplingTests
{
    const int M = 3, D = 4, B = 5, K = 3;

    static double LogNormal(double z, double mean, double variance) => -0.5 * (Math.Log(2 * Math.PI * variance) + (z - mean) * (z - mean) / variance);

    static double LogSumExp(IEnumerable<double> values)
    {
        var v = values.ToArray();
        double max = v.Max();
        return max + Math.Log(v.Sum(x => Math.Exp(x - max)));
    }

    static T Objective<T>(ModelKind kind) where T : CoordinatorObjective
    {
        var objective = (T)CoordinatorObjective.Create(new ModelConfig { Kind = kind, Modalities = M, LatentDim = D, SubsetWeight = 0 });
        objective.to(float64);
        return objective;
    }

    /// <summary>Positions: 0 = {0,1}, 1 = {0,1,2}, 2 = {2}, 3 = {} (the most probable structure set through the logits).</summary>
    static readonly int[][] Members = [[0, 1], [0, 1, 2], [2], []];

    static MrVaeObjective StructuredMrVae()
    {
        var objective = Objective<MrVaeObjective>(ModelKind.MrVae);
        var logits = new double[D * M];
        for (int d = 0; d < D; d++)
            for (int j = 0; j < M; j++) logits[d * M + j] = Members[d].Contains(j) ? 0.2 : -0.2;
        using var _ = no_grad();
        objective.parameters().Single().copy_(tensor(logits, [D, M], dtype: float64));
        return objective;
    }

    static (Tensor[] Mu, Tensor[] LogVar, double[][] MuValues, double[][] VarValues) Posteriors(ulong seed)
    {
        var (mu, logVar) = TinyModels.Posteriors(M, B, D, new Generator(seed));
        return (mu.Select(t => t!).ToArray(), logVar.Select(t => t!).ToArray(),
            mu.Select(t => TinyModels.Values(t!)).ToArray(), logVar.Select(t => TinyModels.Values(t!.exp())).ToArray());
    }

    [Fact]
    public void MrVaeWeighsEachSharedAndEachOwnLatentOnce()
    {
        using var objective = StructuredMrVae();
        var (mu, logVar, muV, varV) = Posteriors(3);
        var (inputs, logWeight) = objective.PosteriorSamples(mu, logVar, K, new Generator(4));
        var z = inputs.Select(TinyModels.Values).ToArray();
        var w = TinyModels.Values(logWeight);
        Assert.Equal([K, B], logWeight.shape);
        for (int k = 0; k < K; k++)
            for (int b = 0; b < B; b++)
            {
                double expected = 0;
                for (int d = 0; d < D; d++)
                {
                    int At(int j) => (k * B + b) * D + d;
                    int Post(int j) => b * D + d;
                    if (Members[d].Length > 0)
                    {
                        double s = z[Members[d][0]][At(0)];
                        foreach (int j in Members[d]) Assert.Equal(s, z[j][At(j)], 12);      // one shared draw for all members
                        double precision = Members[d].Sum(j => 1 / varV[j][Post(j)]);
                        double mean = Members[d].Sum(j => muV[j][Post(j)] / varV[j][Post(j)]) / precision;
                        expected += LogNormal(s, 0, 1) - LogNormal(s, mean, 1 / precision);
                    }
                    for (int j = 0; j < M; j++)
                        if (!Members[d].Contains(j))
                        {
                            double u = z[j][At(j)];
                            expected += LogNormal(u, 0, 1) - LogNormal(u, muV[j][Post(j)], varV[j][Post(j)]);
                        }
                }
                Assert.Equal(expected, w[k * B + b], 9);
            }
    }

    [Theory]
    [InlineData(ModelKind.MoPoE)]
    [InlineData(ModelKind.Mvae)]
    [InlineData(ModelKind.Mmvae)]
    public void OneLatentModelsWeighTheirJointPosteriorAsAMixture(ModelKind kind)
    {
        using var objective = Objective<CoordinatorObjective>(kind);
        var (mu, logVar, muV, varV) = Posteriors(5);
        var (inputs, logWeight) = objective.PosteriorSamples(mu, logVar, K, new Generator(6));
        var z = TinyModels.Values(inputs[0]);
        foreach (var input in inputs) Assert.Equal(z, TinyModels.Values(input));     // every modality decodes the same z
        // The components of q(z | X): every non-empty subset's product of experts (MoPoE), the product of all and
        // the prior (MVAE), each expert alone (MMVAE).
        int[][] components = kind switch
        {
            ModelKind.MoPoE => Enumerable.Range(1, (1 << M) - 1).Select(s => Enumerable.Range(0, M).Where(j => (s >> j & 1) == 1).ToArray()).ToArray(),
            ModelKind.Mvae => [[0, 1, 2]],
            _ => [[0], [1], [2]],
        };
        double priorPrecision = kind == ModelKind.Mvae ? 1 : 0;
        var w = TinyModels.Values(logWeight);
        for (int k = 0; k < K; k++)
            for (int b = 0; b < B; b++)
            {
                var logQ = components.Select(c =>
                {
                    double total = 0;
                    for (int d = 0; d < D; d++)
                    {
                        double precision = priorPrecision + c.Sum(j => 1 / varV[j][b * D + d]);
                        double mean = c.Sum(j => muV[j][b * D + d] / varV[j][b * D + d]) / precision;
                        total += LogNormal(z[(k * B + b) * D + d], mean, 1 / precision);
                    }
                    return total;
                });
                double logPrior = Enumerable.Range(0, D).Sum(d => LogNormal(z[(k * B + b) * D + d], 0, 1));
                Assert.Equal(logPrior - (LogSumExp(logQ) - Math.Log(components.Length)), w[k * B + b], 9);
            }
    }

    [Fact]
    public void MrVaePriorSamplesAreSharedExactlyAtTheMembersPositions()
    {
        using var objective = StructuredMrVae();
        var z = objective.PriorDecoderInputs(B, new Generator(7), float64, CPU).Select(TinyModels.Values).ToArray();
        for (int b = 0; b < B; b++)
            for (int d = 0; d < D; d++)
                for (int i = 0; i < M; i++)
                    for (int j = i + 1; j < M; j++)
                    {
                        bool shared = Members[d].Contains(i) && Members[d].Contains(j);
                        double a = z[i][b * D + d], c = z[j][b * D + d];
                        if (shared) Assert.Equal(a, c);
                        else Assert.NotEqual(a, c);
                    }
    }

    [Fact]
    public void TheImportanceSampledLikelihoodTightensWithMoreSamples()
    {
        // An untrained model's posterior is far from its true posterior, so the bound's gain from K = 1 to K = 64 is large.
        var config = TinyModels.Config(ModelKind.MrVae) with { ObservedDim = 5, Likelihood = PixelLikelihood.Gaussian, LikelihoodScale = 0.5 };
        using var model = new MultimodalVae(config, 11);
        var x = Enumerable.Range(0, config.Modalities).Select(j => randn([200, 5], generator: new Generator((ulong)(20 + j)))).ToArray();
        double one = model.ImportanceLogLikelihood(x, 1, new Generator(1)).mean().ToDouble();
        double many = model.ImportanceLogLikelihood(x, 64, new Generator(2)).mean().ToDouble();
        Assert.True(many > one + 0.5, $"IWAE bound K=64 {many:F3} should exceed K=1 {one:F3}");
    }
}
