using MrVae.Model;
using MrVae.Model.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Evaluation.Tests;

public sealed class EncoderInformationTests
{
    [Fact]
    public void InformationIsTheGaussianChannelOfTheEncodersMeansOverTheirVariancesAndAgreementTheShareOfACodeTheOtherMembersExplain()
    {
        const int count = 700, dim = 5;   // 700 samples: two batches of the computation's 500
        var config = new ModelConfig { Modalities = 3, LatentDim = 4, EncoderHidden = 8, ObservedDim = dim, Likelihood = PixelLikelihood.Gaussian, LikelihoodScale = 0.1 };
        using var model = new MultimodalVae(config, seed: 3);
        // Modality 2's mean head ignores its input: its means are the same for every sample, so it says nothing.
        using (no_grad())
            model.ModalityNets[2].Encoder.named_parameters().Single(p => p.name == "mu.weight").parameter.zero_();
        var gen = new Generator(11);
        var shards = Enumerable.Range(0, 3).Select(_ => (ModalityShard?)new ModalityVectors(randn([count, dim], generator: gen).data<float>().ToArray(), count, dim)).ToArray();
        var data = new MultimodalDataset(shards);

        // Positions: 0 = {0,1,2}, 1 = {0,1}, 2 = {1} alone, 3 = no member.
        bool[][] members = [[true, true, true], [true, true, false], [false, true, false], [false, false, false]];
        var (info, agreement, predictability) = EncoderInformation.Compute(model, data, count, members);

        Assert.Equal(config.LatentDim, info.Length);
        model.eval();
        using var _ = no_grad();
        var means = new double[3][]; var variances = new double[3][];
        for (int j = 0; j < 3; j++)
        {
            var (mu, logVar) = model.ModalityNets[j].Encoder.forward(shards[j]!.Batch(LabelledSplit.Range(0, count)));
            means[j] = mu.to(ScalarType.Float64).data<double>().ToArray();
            variances[j] = logVar.to(ScalarType.Float64).exp().data<double>().ToArray();
        }
        for (int j = 0; j < 3; j++)
        {
            var m = means[j]; var v = variances[j];
            for (int d = 0; d < config.LatentDim; d++)
            {
                double mean = 0, noise = 0, spread = 0;
                for (int i = 0; i < count; i++) { mean += m[i * config.LatentDim + d]; noise += v[i * config.LatentDim + d]; }
                mean /= count; noise /= count;
                for (int i = 0; i < count; i++) spread += Math.Pow(m[i * config.LatentDim + d] - mean, 2);
                spread /= count - 1;
                double expected = 0.5 * Math.Log(1 + spread / noise);
                Assert.Equal(expected, info[d][j], 3);
                if (j == 2) Assert.Equal(0, info[d][j], 6);
                else Assert.True(info[d][j] > 0, $"modality {j} position {d}: a mean head with random weights gives some information");
            }
        }
        // Agreement: the squared correlation over the samples of j's mean with the precision-weighted mean of the other members'.
        int dims = config.LatentDim;
        for (int d = 0; d < dims; d++)
            for (int j = 0; j < 3; j++)
            {
                var others = Enumerable.Range(0, 3).Where(i => i != j && members[d][i]).ToArray();
                if (others.Length == 0) { Assert.Null(agreement![d][j]); continue; }
                var x = new double[count]; var y = new double[count];
                for (int s = 0; s < count; s++)
                {
                    x[s] = means[j][s * dims + d];
                    y[s] = others.Sum(i => means[i][s * dims + d] / variances[i][s * dims + d]) / others.Sum(i => 1 / variances[i][s * dims + d]);
                }
                double mx = x.Average(), my = y.Average();
                double sxy = x.Zip(y).Sum(p => (p.First - mx) * (p.Second - my)), sxx = x.Sum(a => (a - mx) * (a - mx)), syy = y.Sum(b => (b - my) * (b - my));
                double expected = sxx > 1e-12 && syy > 1e-12 ? sxy * sxy / (sxx * syy) : 0;
                Assert.Equal(expected, agreement![d][j]!.Value, 3);
            }
        // Modality 2's code is the same for every input: it agrees with nothing.
        Assert.Equal(0, agreement![0][2]!.Value, 6);
        Assert.Equal(0, agreement[1][2]!.Value, 6);
        // Predictability (tested against a hand computation in the model's tests) is given where agreement is, and a code
        // that is the same for every input predicts nothing, not even where it is not a member (position 1).
        for (int d = 0; d < dims; d++)
            for (int j = 0; j < 3; j++)
                Assert.Equal(agreement[d][j] is null, predictability![d][j] is null);
        Assert.Equal(0, predictability![0][2]!.Value, 6);
        Assert.Equal(0, predictability[1][2]!.Value, 6);
    }
}
