using MrVae.Data;

namespace MrVae.Data.Tests;

/// <summary>Real MNIST for the tests: $MRVAE_MNIST_DIR or a shared/data/mnist folder above the test binaries.</summary>
static class TestData
{
    static readonly Lazy<string> Dir = new(() =>
    {
        var env = Environment.GetEnvironmentVariable("MRVAE_MNIST_DIR");
        if (!string.IsNullOrEmpty(env)) return env;
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var candidate = Path.Combine(d.FullName, "shared", "data", "mnist");
            if (File.Exists(Path.Combine(candidate, "train-images-idx3-ubyte.gz"))) return candidate;
        }
        throw new InvalidOperationException("MNIST not found: set MRVAE_MNIST_DIR or run deploy/get-mnist.sh (tests need real MNIST)");
    });
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
