using MrVae.Data;

namespace MrVae.Data.Tests;

/// <summary>Real MNIST for the tests ($MRVAE_MNIST_DIR, data/mnist or shared/data/mnist above the test binaries); a missing MNIST fails the tests.</summary>
static class TestData
{
    static readonly Lazy<string> Dir = new(() => MnistLocator.Resolve(null));
    static readonly Lazy<MnistSet> TrainSet = new(() => MnistIdx.Load(Dir.Value, train: true));
    static readonly Lazy<MnistSet> TestSet = new(() => MnistIdx.Load(Dir.Value, train: false));

    public static string MnistDir => Dir.Value;
    public static MnistSet Train => TrainSet.Value;
    public static MnistSet Test => TestSet.Value;

    public static string TempDir()
    {
        var d = Path.Combine(Path.GetTempPath(), "mrvae-data-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }
}
