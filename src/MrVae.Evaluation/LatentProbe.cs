using MrVae.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Evaluation;

/// <summary>
/// Linear probe (MoPoE's "lr" metric): a softmax classifier on the encoders' posterior means μ, trained on the
/// training split and scored on the test split. An input subset's features are its members' μ_j concatenated
/// (standardised with the training statistics).
/// </summary>
public static class LatentProbe
{
    /// <summary>μ_j of the first <paramref name="count"/> tuples of <paramref name="split"/>, per modality (count × D each).</summary>
    public static Tensor[] EncodeMeans(MultimodalVae model, LabelledSplit split, int count, int batchSize = 500)
    {
        count = Math.Min(count, split.Count);
        return Enumerable.Range(0, split.Modalities).Select(j =>
        {
            var (mu, logVar) = Encode(model, j, split.Images[j], count, batchSize);
            logVar.Dispose();
            return mu;
        }).ToArray();
    }

    /// <summary>Modality <paramref name="modality"/>'s posterior (μ, log σ²) of the first <paramref name="count"/> samples of <paramref name="shard"/>, encoded in batches (count × D each, no gradient).</summary>
    public static (Tensor Mu, Tensor LogVar) Encode(MultimodalVae model, int modality, Model.Training.ModalityShard shard, int count, int batchSize = 500)
    {
        model.eval();
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var means = new List<Tensor>(); var logVars = new List<Tensor>();
        for (int start = 0; start < count; start += batchSize)
        {
            var (mu, logVar) = model.ModalityNets[modality].Encoder.forward(shard.Batch(LabelledSplit.Range(start, Math.Min(batchSize, count - start))));
            means.Add(mu); logVars.Add(logVar);
        }
        return (cat(means, 0).MoveToOuterDisposeScope(), cat(logVars, 0).MoveToOuterDisposeScope());
    }

    /// <summary>Test accuracy of multinomial logistic regression fitted on (trainX, trainY), full-batch Adam.</summary>
    public static double FitAndScore(Tensor trainX, Tensor trainY, Tensor testX, Tensor testY, int classes = 10,
        int iterations = 300, double learningRate = 0.05, double weightDecay = 1e-4, long seed = 0)
    {
        using var scope = NewDisposeScope();
        var x = trainX.to(float32);
        var mean = x.mean([0], keepdim: true);
        var std = x.std([0L], keepdim: true) + 1e-6;
        x = (x - mean) / std;
        var xt = (testX.to(float32) - mean) / std;
        var gen = new Generator((ulong)seed + 1);
        var weight = new TorchSharp.Modules.Parameter(0.01 * randn([x.shape[1], classes], generator: gen));
        var bias = new TorchSharp.Modules.Parameter(zeros(classes));
        using var opt = optim.Adam([weight, bias], lr: learningRate, weight_decay: weightDecay);
        for (int it = 0; it < iterations; it++)
        {
            MrVae.Model.Runtime.NativeCallGuard.Run(() =>
            {
                using var inner = NewDisposeScope();
                opt.zero_grad();
                var loss = nn.functional.cross_entropy(x.matmul(weight) + bias, trainY);
                loss.backward();
                opt.step();
            });
        }
        using var _ = no_grad();
        var predicted = (xt.matmul(weight) + bias).argmax(1);
        return predicted.eq(testY).to(float64).mean().ToDouble();
    }

    public static Tensor Features(Tensor[] means, IEnumerable<int> subset) => cat(subset.Select(j => means[j]).ToArray(), 1);
}
