namespace MrVae.Data;

/// <summary>Finds MNIST: an explicit directory, $MRVAE_MNIST_DIR, data/mnist in the repository, or ../shared/data/mnist.</summary>
public static class MnistLocator
{
    public static string Resolve(string? explicitDir)
    {
        if (explicitDir is not null)
        {
            if (!Directory.Exists(explicitDir)) throw new DataFormatException($"--mnist {explicitDir}: no such directory; {MnistIdx.FetchHint}");
            return explicitDir;
        }
        var env = Environment.GetEnvironmentVariable("MRVAE_MNIST_DIR");
        if (!string.IsNullOrEmpty(env)) return env;
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                foreach (var candidate in new[] { Path.Combine(dir.FullName, "data", "mnist"), Path.Combine(dir.FullName, "shared", "data", "mnist") })
                    if (File.Exists(Path.Combine(candidate, "train-images-idx3-ubyte.gz")) || File.Exists(Path.Combine(candidate, "train-images-idx3-ubyte")))
                        return candidate;
        throw new DataFormatException($"MNIST not found; {MnistIdx.FetchHint}");
    }
}
