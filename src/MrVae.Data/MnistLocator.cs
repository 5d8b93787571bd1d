namespace MrVae.Data;

/// <summary>
/// Finds the MNIST IDX files: an explicit directory (--mnist), else $MRVAE_MNIST_DIR, else, for the repository
/// (the folder holding MrVae.Orleans.sln above the working directory or the binaries), ../shared/data/mnist beside
/// it, then data/mnist in it (where deploy/get-mnist.sh puts them), else data/mnist in the working directory.
/// </summary>
public static class MnistLocator
{
    public const string EnvironmentVariable = "MRVAE_MNIST_DIR";
    const string SolutionFile = "MrVae.Orleans.sln";

    public static string Resolve(string? explicitDir)
    {
        if (!string.IsNullOrEmpty(explicitDir))
        {
            if (!Directory.Exists(explicitDir)) throw new DataFormatException($"--mnist {explicitDir}: no such directory; {MnistIdx.FetchHint}");
            return explicitDir;
        }
        var env = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrEmpty(env))
        {
            if (!Directory.Exists(env)) throw new DataFormatException($"{EnvironmentVariable}={env}: no such directory; {MnistIdx.FetchHint}");
            return env;
        }
        foreach (var candidate in Candidates())
            if (HasMnist(candidate)) return candidate;
        throw new DataFormatException($"MNIST not found (looked in ${EnvironmentVariable}, ../shared/data/mnist and data/mnist of the repository); {MnistIdx.FetchHint}");
    }

    static IEnumerable<string> Candidates()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, SolutionFile)))
                {
                    if (dir.Parent is not null) yield return Path.Combine(dir.Parent.FullName, "shared", "data", "mnist");
                    yield return Path.Combine(dir.FullName, "data", "mnist");
                    break;
                }
        yield return Path.Combine(Directory.GetCurrentDirectory(), "data", "mnist");
    }

    static bool HasMnist(string dir) =>
        File.Exists(Path.Combine(dir, "train-images-idx3-ubyte.gz")) || File.Exists(Path.Combine(dir, "train-images-idx3-ubyte"));
}
