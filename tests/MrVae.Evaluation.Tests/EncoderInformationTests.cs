using MrVae.Model;
using MrVae.Model.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Evaluation.Tests;

public sealed class EncoderInformationTests
{
    [Fact]
    public void InformationIsTheGaussianChannelOfTheEncodersMeansOverTheirVariances()
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

        var info = EncoderInformation.Compute(model, data, count);

        Assert.Equal(config.LatentDim, info.Length);
        model.eval();
        using var _ = no_grad();
        for (int j = 0; j < 3; j++)
        {
            var (mu, logVar) = model.ModalityNets[j].Encoder.forward(shards[j]!.Batch(LabelledSplit.Range(0, count)));
            var m = mu.to(ScalarType.Float64).data<double>().ToArray();
            var v = logVar.to(ScalarType.Float64).exp().data<double>().ToArray();
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
    }
}
