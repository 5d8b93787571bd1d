using System.Diagnostics;
using MrVae.Data;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace MrVae.Evaluation.Tests;

/// <summary>
/// Small real PolyMNIST sets (vanilla and extended, made from the real MNIST files) and their digit classifiers,
/// trained once for every test that needs them.
/// </summary>
public sealed class PolyMnistFixture
{
    public const int TrainCount = 3000, TestCount = 500;
    public static readonly ClassifierTraining Training = new() { Epochs = 3, BatchSize = 64, LearningRate = 2e-3, Seed = 0 };

    public PolyMnistSpec VanillaSpec { get; } = PolyMnistSpec.Vanilla();
    public PolyMnistSpec ExtendedSpec { get; } = PolyMnistSpec.Extended();
    readonly Lazy<MnistSet> mnistTrain, mnistTest;
    readonly Lazy<(PolyMnistSplit Train, PolyMnistSplit Test)> vanillaRaw, extendedRaw;
    readonly Lazy<(LabelledSplit Train, LabelledSplit Test)> vanilla, extended;
    readonly Lazy<(ClassifierSet Set, double Seconds)> vanillaClassifiers, extendedClassifiers;

    public PolyMnistFixture()
    {
        var dir = MnistLocator.Resolve(null);
        mnistTrain = new(() => MnistIdx.Load(dir, train: true));
        mnistTest = new(() => MnistIdx.Load(dir, train: false));
        vanillaRaw = new(() => Make(VanillaSpec));
        extendedRaw = new(() => Make(ExtendedSpec));
        vanilla = new(() => (LabelledSplit.From(vanillaRaw.Value.Train), LabelledSplit.From(vanillaRaw.Value.Test)));
        extended = new(() => (LabelledSplit.From(extendedRaw.Value.Train), LabelledSplit.From(extendedRaw.Value.Test)));
        vanillaClassifiers = new(() => TrainClassifiers(VanillaSpec, Vanilla));
        extendedClassifiers = new(() => TrainClassifiers(ExtendedSpec, Extended));
    }

    (PolyMnistSplit, PolyMnistSplit) Make(PolyMnistSpec spec) =>
        (PolyMnistGenerator.Generate(spec, mnistTrain.Value, TrainCount, seed: 3),
         PolyMnistGenerator.Generate(spec, mnistTest.Value, TestCount, seed: 3, streamOffset: 1));

    /// <summary>Writes the extended set (both splits) as a dataset directory, as `mrvae data make` does.</summary>
    public void SaveExtended(string dir) => PolyMnistStore.Save(dir, ExtendedSpec, extendedRaw.Value.Train, extendedRaw.Value.Test);

    static (ClassifierSet, double) TrainClassifiers(PolyMnistSpec spec, (LabelledSplit Train, LabelledSplit Test) data)
    {
        var watch = Stopwatch.StartNew();
        var set = ClassifierSet.Train(spec, data.Train, data.Test, Training);
        return (set, watch.Elapsed.TotalSeconds);
    }

    public (LabelledSplit Train, LabelledSplit Test) Vanilla => vanilla.Value;
    public (LabelledSplit Train, LabelledSplit Test) Extended => extended.Value;
    public ClassifierSet VanillaClassifiers => vanillaClassifiers.Value.Set;
    public ClassifierSet ExtendedClassifiers => extendedClassifiers.Value.Set;
    public double VanillaClassifierSeconds => vanillaClassifiers.Value.Seconds;
    public double ExtendedClassifierSeconds => extendedClassifiers.Value.Seconds;
}

[CollectionDefinition(Name)]
public sealed class PolyMnistCollection : ICollectionFixture<PolyMnistFixture>
{
    public const string Name = "real PolyMNIST";
}
