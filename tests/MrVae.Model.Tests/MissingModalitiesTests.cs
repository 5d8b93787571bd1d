using MrVae.Data;
using MrVae.Model.Objectives;
using MrVae.Model.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

/// <summary>Missing modalities per sample: the batch plan over the union of ids, the masked objective and the shards' ids.</summary>
public sealed class MissingModalitiesTests
{
    const int Modalities = 3, Batch = 5, Observed = 4;
    const double Sigma = 0.1;

    static ModelConfig VectorConfig(ModelKind kind) => new()
    {
        Kind = kind, Modalities = Modalities, LatentDim = 3, EncoderHidden = 8, ObservedDim = Observed,
        Likelihood = PixelLikelihood.Gaussian, LikelihoodScale = Sigma,
    };

    // Which samples each modality holds: sample 1 lacks modality 0, samples 0 and 3 lack 1, sample 4 has only 2.
    static readonly int[][] Held = [[0, 2, 3], [1, 2], [0, 1, 2, 3, 4]];

    [Theory]
    [InlineData(ModelKind.MrVae)]
    [InlineData(ModelKind.MoPoE)]
    [InlineData(ModelKind.Mvae)]
    [InlineData(ModelKind.Mmvae)]
    public void AMissingModalityOfASampleAddsNoReconstructionTerm(ModelKind kind)
    {
        using var scope = NewDisposeScope();
        var config = VectorConfig(kind);
        using var model = new MultimodalVae(config, seed: 5);
        model.to(float64);
        model.eval();
        var gen = new Generator(7);
        var full = Enumerable.Range(0, Modalities).Select(_ => randn([Batch, Observed], dtype: float64, generator: gen)).ToArray();
        var plan = new BatchPlan(Enumerable.Range(100, Batch).Select(i => (long)i).ToArray(), Held.Select(r => (int[]?)r).ToArray());
        var x = Enumerable.Range(0, Modalities).Select(j => (Tensor?)full[j].index_select(0, tensor(Held[j].Select(r => (long)r).ToArray()))).ToArray();
        StepContext Context() => new() { Generator = new Generator(3), Training = false, SampleLatents = false };

        using var loss = model.Loss(x, plan, Context());

        // Independently: encode every sample (also those a modality lacks), let the availability mask hide the
        // missing ones from the objective, and sum the Gaussian NLL by hand over the samples each modality holds.
        var mu = new Tensor?[Modalities]; var logVar = new Tensor?[Modalities];
        for (int j = 0; j < Modalities; j++) (mu[j], logVar[j]) = model.ModalityNets[j].Encoder.forward(full[j]);
        var maskData = new double[Batch * Modalities];
        for (int j = 0; j < Modalities; j++) foreach (int b in Held[j]) maskData[b * Modalities + j] = 1;
        var available = tensor(maskData, [Batch, Modalities], float64);
        using var output = model.Coordinator.Forward(mu, logVar, available, [true, true, true], Context());
        for (int j = 0; j < Modalities; j++)
        {
            var recon = model.ModalityNets[j].Decoder.forward(output.DecoderInputs[j]![0]).data<double>().ToArray();
            var data = full[j].data<double>().ToArray();
            double Nll(int b) => Enumerable.Range(0, Observed).Sum(k =>
            {
                double d = recon[b * Observed + k] - data[b * Observed + k];
                return d * d / (2 * Sigma * Sigma) + 0.5 * Math.Log(2 * Math.PI * Sigma * Sigma);
            });
            double expected = Held[j].Sum(Nll) / Batch;
            double everySample = Enumerable.Range(0, Batch).Sum(Nll) / Batch;
            double actual = loss.Reconstruction[j]!.ToDouble();
            Assert.True(Math.Abs(actual - expected) <= 1e-9 * Math.Abs(expected), $"rec_{j}: {actual}, by hand over its own samples {expected}");
            if (Held[j].Length < Batch)
                Assert.True(Math.Abs(everySample - expected) > 1e-3 * Math.Abs(expected), $"rec_{j}: the missing samples would have added to it ({everySample} vs {expected})");
        }
        // The coordinator's terms are the same as with every sample encoded: the masked samples' encodings do not count.
        Assert.Equal(output.Loss.ToDouble(), loss.Coordinator.Loss.ToDouble(), 9);
    }

    [Fact]
    public void WithEveryModalityPresentThePlanIsTheCompleteBatch()
    {
        using var scope = NewDisposeScope();
        var config = VectorConfig(ModelKind.MrVae);
        using var model = new MultimodalVae(config, seed: 5);
        var gen = new Generator(7);
        var x = Enumerable.Range(0, Modalities).Select(_ => (Tensor?)randn([Batch, Observed], generator: gen)).ToArray();
        var universe = SampleUniverse.Of(Enumerable.Range(0, Modalities).Select(_ => (ShardKeys?)new ShardKeys(Batch, null)).ToArray());
        var plan = universe.Plan([0, 1, 2, 3, 4], [0, 1, 2], Modalities);
        Assert.Equal(Batch, plan.Size);
        StepContext Context() => new() { Generator = new Generator(3) };
        using var viaPlan = model.Loss(x, plan, Context());
        using var complete = model.Loss(x, MultimodalVae.AllAvailable([true, true, true], Batch), Context());
        Assert.Equal(complete.Terms(), viaPlan.Terms());   // bit for bit
    }

    [Fact]
    public void ThePlanBatchesOverTheUnionAndLeavesOutSamplesNoMemberHolds()
    {
        var universe = SampleUniverse.Of([new ShardKeys(3, [30, 10, 20]), new ShardKeys(2, [20, 40]), null]);
        Assert.Equal(new long[] { 10, 20, 30, 40 }, universe.Keys);
        var plan = universe.Plan([0, 1, 2, 3], [0, 1], 3);
        Assert.Equal(new long[] { 10, 20, 30, 40 }, plan.Keys);
        Assert.Equal(new long[] { 10, 20, 30 }, plan.KeysOf(0));
        Assert.Equal(new long[] { 20, 40 }, plan.KeysOf(1));
        Assert.Null(plan.Rows[2]);
        Assert.Equal(new float[] { 1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 0 }, plan.Available().data<float>().ToArray());
        // Modality 1 alone: samples 10 and 30 have no member and leave the batch.
        var alone = universe.Plan([0, 1, 2, 3], [1], 3);
        Assert.Equal(new long[] { 20, 40 }, alone.Keys);
        Assert.Equal(new[] { 0, 1 }, alone.Rows[1]);
    }

    [Fact]
    public void AShardThatSharesNoIdWithTheOthersIsRefused()
    {
        var e = Assert.Throws<UserInputException>(() => SampleUniverse.Of([new ShardKeys(2, [1, 2]), new ShardKeys(2, [2, 3]), new ShardKeys(2, [8, 9])]));
        Assert.Contains("modality 2's shard shares no sample ids with modalities 0,1", e.Message);
        Assert.Contains(SampleIds.SecretVariable, e.Message);
        // Complete shards of other sizes: as before.
        Assert.Contains("disagree on the training size", Assert.Throws<UserInputException>(() => SampleUniverse.Of([new ShardKeys(4, null), new ShardKeys(5, null)])).Message);

        var universe = SampleUniverse.Of([new ShardKeys(2, [1, 2]), new ShardKeys(2, [2, 3]), null]);
        Assert.Contains("shares no sample ids", Assert.Throws<UserInputException>(() => universe.Join(2, new ShardKeys(2, [7, 8]))).Message);
        Assert.Null(universe.Join(2, new ShardKeys(2, [1, 3])));
        Assert.Contains("1 of its 2 sample ids are not among the run's samples", universe.Join(2, new ShardKeys(2, [1, 5])));
        Assert.True(universe.Holds(2, 5));
    }

    [Fact]
    public void AShardAskedForASampleItDoesNotHoldFailsLoudly()
    {
        var shard = new ModalityVectors([1, 2, 3, 4, 5, 6], count: 3, dim: 2) { Source = "modality 1's train shard" }.WithIds([40, 10, 30], secret: null);
        using var batch = shard.Batch([30, 40]);
        Assert.Equal(new float[] { 5, 6, 1, 2 }, batch.data<float>().ToArray());
        var e = Assert.Throws<MissingSampleException>(() => shard.Batch([30, 20]));
        Assert.Contains("modality 1's train shard does not hold sample 20", e.Message);
        // A complete shard addressed by position: a position past its end is as loud.
        var complete = new ModalityVectors([1, 2], count: 1, dim: 2);
        Assert.Throws<MissingSampleException>(() => complete.Batch([1]));
    }

    [Fact]
    public void KeyedIdsHideTheIdsButStillAlign()
    {
        byte[] secret = "shared"u8.ToArray(), other = "other"u8.ToArray();
        var a = new ModalityVectors([1, 2, 3, 4], 2, 2).WithIds([7, 9], secret);
        var b = new ModalityVectors([5, 6, 7, 8], 2, 2).WithIds([9, 11], secret);
        Assert.DoesNotContain(7L, a.Keys!);
        Assert.Equal(SampleIds.Key(9, secret), a.Keys![1]);
        Assert.Equal(a.Keys[1], b.Keys![0]);                      // sample 9 has one key on both nodes
        Assert.NotEqual(SampleIds.Key(9, other), a.Keys[1]);      // another secret: no alignment
        using var row = b.Batch([SampleIds.Key(9, secret)]);
        Assert.Equal(new float[] { 5, 6 }, row.data<float>().ToArray());
    }
}
