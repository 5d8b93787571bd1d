using MrVae.Model;
using MrVae.Model.Training;
using static TorchSharp.torch;

namespace MrVae.Evaluation;

/// <summary>
/// What each modality's encoder says about its input at each latent position: I_{d,j} = ½ log(1 + Var_x[μ_{j,d}] /
/// E_x[σ²_{j,d}]) nats, the information of a Gaussian channel whose signal is the spread of the posterior means over
/// the data and whose noise is the mean posterior variance. An expert that gives the same mean for every input, or a
/// variance far above its means' spread, scores 0.
/// </summary>
public static class EncoderInformation
{
    /// <summary>I (D × M, nats) on the first <paramref name="count"/> samples of <paramref name="data"/> (every modality present).</summary>
    public static double[][] Compute(MultimodalVae model, MultimodalDataset data, int count, int batchSize = 500)
    {
        count = Math.Min(count, data.Count);
        if (count < 2) throw new ArgumentException($"the encoders' information needs at least 2 samples, got {count}", nameof(count));
        int m = model.Config.Modalities, d = model.Config.LatentDim;
        var result = Enumerable.Range(0, d).Select(_ => new double[m]).ToArray();
        for (int j = 0; j < m; j++)
        {
            var shard = data.Modalities[j] ?? throw new ArgumentException($"modality {j} is missing from the data; the encoders' information needs every modality", nameof(data));
            using var scope = NewDisposeScope();
            var (mu, logVar) = LatentProbe.Encode(model, j, shard, count, batchSize);
            var signal = mu.to(ScalarType.Float64).var(0L);
            var noise = logVar.to(ScalarType.Float64).exp().mean([0L]);
            var info = (0.5 * (1 + signal / noise).log()).cpu().data<double>().ToArray();
            for (int k = 0; k < d; k++) result[k][j] = Math.Round(info[k], 4);
        }
        return result;
    }
}
