using MrVae.Model;
using static TorchSharp.torch;

namespace MrVae.Grains.Tests;

/// <summary>
/// The encoder update that rides on the next encode: the same weights as the separate call, applied once when a step
/// runs again (after another member failed), and a clear error when the grain does not hold that step.
/// </summary>
public sealed class EncoderGradientsTests(TwoSiloCluster fixture) : IClassFixture<TwoSiloCluster>, IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-encgrad-" + Guid.NewGuid().ToString("N"));
    public void Dispose() { if (Directory.Exists(root)) Directory.Delete(root, recursive: true); }

    [Fact]
    public async Task CarriedGradientsEqualTheSeparateCallAndApplyOnce()
    {
        string data = TestDatasets.Extended(Path.Combine(root, "data"), train: 32, test: 8, seed: 5);
        var config = new ModelConfig { Modalities = 5, LatentDim = 4, EncoderHidden = 16 };
        long[] ids0 = [0, 1, 2, 3], ids1 = [4, 5, 6, 7];

        async Task<IModalityGrain> Configured(string run)
        {
            var grain = fixture.Cluster.GrainFactory.GetGrain<IModalityGrain>(ModalityKey.For(run, 2));
            await grain.Configure(new ModalitySetup(run, 2, data, config.ToJson(), 7, 1e-2));
            return grain;
        }
        // Gradients for step 0: fixed random tensors of μ's and log σ²'s shape.
        EncoderGradients Gradients(EncodeResult e, long step)
        {
            var shape = e.Mu.Shape;
            var g = new Generator(99);
            return new EncoderGradients(step, TensorWire.ToPayload(randn(shape, generator: g)), TensorWire.ToPayload(randn(shape, generator: g)));
        }

        // Reference: encode step 0, apply its gradients by the separate call, encode step 1.
        var separate = await Configured("encgrad-separate-" + Guid.NewGuid().ToString("N")[..6]);
        var g0 = Gradients(await separate.Encode(0, ids0, "train", keepGraph: true), 0);
        await separate.ApplyEncoderGradients(0, g0.DMu, g0.DLogVar);
        var expected = await separate.Encode(1, ids1, "train", keepGraph: true);
        var expectedWeights = await separate.Parameters();

        // Carried: step 1's encode applies step 0's gradients; sent again (the step run again), they are not applied twice.
        var carried = await Configured("encgrad-carried-" + Guid.NewGuid().ToString("N")[..6]);
        var before = await carried.Parameters();
        await carried.Encode(0, ids0, "train", keepGraph: true);
        var first = await carried.Encode(1, ids1, "train", keepGraph: true, g0);
        var again = await carried.Encode(1, ids1, "train", keepGraph: true, g0);
        // The coordinator's separate call with the same update (a checkpoint or test loss between a failed step and
        // its rerun): nothing to do, no error, and the grain still holds step 1.
        await carried.ApplyEncoderGradients(0, g0.DMu, g0.DLogVar);
        var weights = await carried.Parameters();

        Assert.Equal(expected.Mu.Data, first.Mu.Data);
        Assert.Equal(expected.Mu.Data, again.Mu.Data);
        Assert.Equal(expectedWeights.Length, weights.Length);
        for (int i = 0; i < weights.Length; i++) Assert.Equal(expectedWeights[i].Data, weights[i].Data);
        Assert.Contains(Enumerable.Range(0, weights.Length), i => !before[i].Data.AsSpan().SequenceEqual(weights[i].Data));   // it did step
        Assert.Equal(expected.Mu.Data, (await carried.Encode(1, ids1, "train", keepGraph: true)).Mu.Data);

        // Gradients for a step the grain never encoded: an error that names both steps.
        var error = await Assert.ThrowsAnyAsync<Exception>(() => carried.Encode(2, ids0, "train", keepGraph: true, g0 with { Step = 5 }));
        Assert.Contains("holds step 1, was asked about step 5", error.Message);
    }
}
