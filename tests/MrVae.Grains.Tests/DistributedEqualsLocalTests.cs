using MrVae.Data;
using MrVae.Model;
using MrVae.Model.Training;

namespace MrVae.Grains.Tests;

/// <summary>The backbone: the federated trainer reproduces the single-process reference step for step.</summary>
public sealed class DistributedEqualsLocalTests(TwoSiloCluster fixture) : IClassFixture<TwoSiloCluster>, IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-grains-" + Guid.NewGuid().ToString("N"));
    public void Dispose() { if (Directory.Exists(root)) Directory.Delete(root, recursive: true); }

    /// <summary>
    /// Extended PolyMNIST, or synthetic-ring vector data, each training tuple lacking each modality with probability
    /// <paramref name="missing"/>; returns the directory and the vectors' size (0: images).
    /// </summary>
    (string Dir, int ObservedDim) MakeData(bool vectors, double missing = 0)
    {
        string dir = Path.Combine(root, "data");
        int observedDim = 0;
        if (!vectors) TestDatasets.Extended(dir, train: 96, test: 24, seed: 3);
        else
        {
            var spec = VectorSpec.Ring();
            VectorStore.Make(dir, spec, train: 96, test: 24, seed: 3);
            observedDim = spec.ObservedDim;
        }
        if (missing > 0)
        {
            var kept = SampleIds.ApplyMissing(dir, missing, seed: 3);
            // Really incomplete: every modality lacks some samples, and no two modalities hold the same ones.
            Assert.All(kept, k => Assert.InRange(k, 1, 95));
            Assert.NotEqual(SampleIds.LoadModality(dir, "train", 0), SampleIds.LoadModality(dir, "train", 1));
        }
        return (dir, observedDim);
    }

    static MultimodalDataset Load(string dir, string split) => MultimodalDataset.Load(dir, split, 5);

    // Float tolerance. With libtorch on one thread (see SingleThreadedLibTorch) both trainers do the same float32
    // operations; what the split changes is summation order where several consumers meet (the baselines feed one z
    // to every decoder, and the five ∂L/∂z_j meet in a different order than in the single graph): 1 ulp. Measured
    // after 5 steps: mrVAE bit-identical; baselines' loss terms within 1e-7 relative. Adam divides by √v, so where a
    // gradient element is a near-total cancellation (|g| ~ ε = 1e-8) a 1-ulp difference can change that element's
    // step by a fraction of lr (measured: at most 1.3e-4 on one weight). So: every loss term within 1e-6 relative at
    // every step; 99.9% of all weights within 1e-6; every weight within one step's size (lr = 1e-3).
    const double LossRelativeTolerance = 1e-6;
    const double TypicalParameterTolerance = 1e-6;
    const double LearningRate = 1e-3;

    [Theory]
    [InlineData(ModelKind.MrVae, false)]
    [InlineData(ModelKind.MoPoE, false)]
    [InlineData(ModelKind.Mvae, false)]
    [InlineData(ModelKind.Mmvae, false)]
    [InlineData(ModelKind.MrVae, true)]
    [InlineData(ModelKind.MoPoE, true)]
    // Missing modalities per sample (P = 0.5): each member encodes and decodes only the samples it holds.
    [InlineData(ModelKind.MrVae, true, 0.5)]
    [InlineData(ModelKind.MoPoE, true, 0.5)]
    [InlineData(ModelKind.Mvae, true, 0.5)]
    [InlineData(ModelKind.Mmvae, true, 0.5)]
    [InlineData(ModelKind.MrVae, false, 0.5)]
    // mrVAE's structure options (private positions, reverse structure KL, member marginal KL, the agreement prior, initial
    // member sets held through a 3-step structure warm-up, the conditional prior of the own variables, the subset view's own
    // variables half drawn from it), with samples missing.
    [InlineData(ModelKind.MrVae, true, 0.5, true)]
    // Equal digit weights with different digit squares in every modality: each modality node builds its own pixel scales.
    [InlineData(ModelKind.MrVae, false, 0, false, true)]
    public async Task GrainsReproduceTheSingleProcessTrainer(ModelKind kind, bool vectors, double missing = 0, bool structureOptions = false, bool equalDigitWeight = false)
    {
        var (data, observedDim) = MakeData(vectors, missing);
        var config = new ModelConfig { Kind = kind, Modalities = 5, LatentDim = 6, EncoderHidden = 32, ObservedDim = observedDim,
            Likelihood = vectors ? PixelLikelihood.Gaussian : PixelLikelihood.Laplace,
            PrivatePositions = structureOptions ? 2 : 0, ReverseStructureKl = structureOptions, MemberMarginalKl = structureOptions,
            AgreementPrior = structureOptions, InitialMemberSets = structureOptions, StructureWarmupSteps = structureOptions ? 3 : 0,
            ConditionalPrivatePrior = structureOptions, SubsetOwnDropout = structureOptions ? 0.5 : 0,
            EqualDigitWeight = equalDigitWeight,
            DigitSquares = equalDigitWeight ? Enumerable.Range(0, 5).SelectMany(j => new FactorPlacement[] { new(j, 0, 0, 28), new(j, 3 * j, 2 * j, 6 + 2 * j) }).ToArray() : [] };
        const int steps = 5, batch = 16;
        const long seed = 11;

        using var local = new LocalTrainer(config, new TrainOptions
        {
            RunDirectory = Path.Combine(root, "local"), BatchSize = batch, Steps = steps, Seed = seed, LearningRate = LearningRate, TestSamples = 24,
        }, Load(data, "train"), Load(data, "test"));
        var localSteps = new List<StepReport>();
        local.Run(localSteps.Add);
        double localTest = local.TestLoss();

        var coordinator = fixture.Cluster.GrainFactory.GetGrain<ICoordinatorGrain>($"equality-{kind}-{Guid.NewGuid():N}");
        await coordinator.Start(new RunSetup(data, config.ToJson(), seed, batch, steps, 1, LearningRate, null, 24, [0, 1, 2, 3, 4]));
        var status = await WaitUntilDone(coordinator);
        Assert.Equal(RunState.Finished, status.State);
        // Modalities really are spread over both silos.
        Assert.Equal(2, status.MemberSilos.Values.Distinct().Count());

        var remoteSteps = await coordinator.Metrics(0);
        Assert.Equal(steps, remoteSteps.Length);
        for (int s = 0; s < steps; s++)
        {
            var expected = localSteps[s].Terms;
            var actual = remoteSteps[s].Terms;
            Assert.Equal(expected.Keys.OrderBy(k => k), actual.Keys.OrderBy(k => k));
            foreach (var (key, value) in expected)
                Assert.True(Math.Abs(actual[key] - value) <= LossRelativeTolerance * Math.Max(1, Math.Abs(value)),
                    $"step {s} {key}: local {value}, grains {actual[key]}");
            Assert.True(remoteSteps[s].BytesMoved > 0);
        }
        var remoteTest = (await coordinator.TestMetrics()).Last().TestLoss;
        Assert.True(Math.Abs(remoteTest - localTest) <= LossRelativeTolerance * Math.Abs(localTest), $"test loss: local {localTest}, grains {remoteTest}");

        // Parameters after N steps: every modality's networks and the coordinator's parameters (mrVAE: its membership logits).
        var diffs = new List<double>();
        for (int j = 0; j < 5; j++)
        {
            var grain = fixture.Cluster.GrainFactory.GetGrain<IModalityGrain>(ModalityKey.For(coordinator.GetPrimaryKeyString(), j));
            AssertSame(local.Model.ModalityNets[j].parameters().Select(p => p.detach()).ToArray(), await grain.Parameters(), $"modality {j}", diffs);
        }
        AssertSame(local.Model.Coordinator.parameters().Select(p => p.detach()).ToArray(), await coordinator.Parameters(), "coordinator", diffs);
        diffs.Sort();
        double p999 = diffs[(int)(0.999 * (diffs.Count - 1))];
        Assert.True(p999 <= TypicalParameterTolerance, $"99.9th percentile of |local − grains| over {diffs.Count} weights is {p999}");
    }

    static void AssertSame(TorchSharp.torch.Tensor[] expected, TensorPayload[] actual, string what, List<double> all)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            var e = expected[i].data<float>().ToArray();
            var a = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(actual[i].Data).ToArray();
            Assert.Equal(e.Length, a.Length);
            var diffs = e.Zip(a).Select(p => Math.Abs((double)p.First - p.Second)).ToArray();
            Assert.True(diffs.Max() <= LearningRate, $"{what} parameter {i}: max |local − grains| = {diffs.Max()}");
            all.AddRange(diffs);
        }
    }

    internal static async Task<RunStatus> WaitUntilDone(ICoordinatorGrain coordinator)
    {
        var deadline = DateTime.UtcNow.AddMinutes(3);
        while (DateTime.UtcNow < deadline)
        {
            var status = await coordinator.Status();
            if (status.State is not (RunState.Running or RunState.Created)) return status;
            await Task.Delay(100);
        }
        throw new TimeoutException("the run did not finish in 3 minutes");
    }
}
