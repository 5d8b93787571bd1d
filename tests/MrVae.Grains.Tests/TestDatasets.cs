using MrVae.Data;

namespace MrVae.Grains.Tests;

/// <summary>Small extended-PolyMNIST dataset directories from the real MNIST files, read once per test process.</summary>
static class TestDatasets
{
    static readonly Lazy<(MnistSet Train, MnistSet Test)> Mnist = new(() =>
    {
        var dir = MnistLocator.Resolve(null);
        return (MnistIdx.Load(dir, train: true), MnistIdx.Load(dir, train: false));
    });

    /// <summary>Writes an extended PolyMNIST dataset (as `mrvae data make` does) to <paramref name="dir"/> and returns it.</summary>
    public static string Extended(string dir, int train, int test, int seed)
    {
        var spec = PolyMnistSpec.Extended();
        PolyMnistStore.Save(dir, spec,
            PolyMnistGenerator.Generate(spec, Mnist.Value.Train, train, seed),
            PolyMnistGenerator.Generate(spec, Mnist.Value.Test, test, seed, streamOffset: 1));
        return dir;
    }
}
