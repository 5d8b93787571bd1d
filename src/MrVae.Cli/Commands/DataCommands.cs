using System.CommandLine;
using System.Diagnostics;
using MrVae.Data;
using Spectre.Console;

namespace MrVae.Cli.Commands;

/// <summary>`mrvae data make` and `mrvae data grid`.</summary>
public static class DataCommands
{
    public static Command Create()
    {
        var data = new Command("data", "Generate PolyMNIST datasets and look at them");
        data.Subcommands.Add(Make());
        data.Subcommands.Add(Grid());
        return data;
    }

    static Command Make()
    {
        var dataset = new Option<string>("--dataset") { Description = "polymnist, polymnist-extended, or a JSON sharing spec file", Required = true };
        var output = new Option<string>("--out") { Description = "directory to write the dataset to", Required = true };
        var mnist = new Option<string?>("--mnist") { Description = "directory with the MNIST IDX files (default: $MRVAE_MNIST_DIR, data/mnist, or ../shared/data/mnist)" };
        var train = new Option<int>("--train") { Description = "training tuples", DefaultValueFactory = _ => 10000 };
        var test = new Option<int>("--test") { Description = "test tuples", DefaultValueFactory = _ => 2000 };
        var seed = new Option<int>("--seed") { Description = "generator seed", DefaultValueFactory = _ => 0 };
        var cmd = new Command("make", "Generate a PolyMNIST dataset (vanilla, extended or from a sharing spec) into a compact cache") { dataset, output, mnist, train, test, seed };
        cmd.SetAction(p =>
        {
            var spec = PolyMnistSpec.Resolve(p.GetValue(dataset)!);
            string mnistDir = MnistLocator.Resolve(p.GetValue(mnist));
            var watch = Stopwatch.StartNew();
            var result = DatasetMaker.Make(spec, mnistDir, p.GetValue(output)!, p.GetValue(train), p.GetValue(test), p.GetValue(seed));
            AnsiConsole.MarkupLineInterpolated($"[green]wrote[/] {spec.Name} ({spec.Modalities} modalities, {spec.Factors.Length} factors; {result.Train} train / {result.Test} test tuples) to {p.GetValue(output)} in {watch.Elapsed.TotalSeconds:F1} s");
            foreach (var f in spec.Factors)
                AnsiConsole.MarkupLineInterpolated($"  factor [bold]{f.Name}[/] shared by {{{string.Join(",", f.Members)}}}");
            return 0;
        });
        return cmd;
    }

    static Command Grid()
    {
        var dataDir = new Option<string>("--data") { Description = "dataset directory (from `mrvae data make`)", Required = true };
        var output = new Option<string>("--out") { Description = "PNG file to write", Required = true };
        var count = new Option<int>("--count") { Description = "tuples (columns)", DefaultValueFactory = _ => 10 };
        var split = new Option<string>("--split") { Description = "train or test", DefaultValueFactory = _ => "test" };
        var cmd = new Command("grid", "Write a PNG grid: one row per modality, one column per tuple") { dataDir, output, count, split };
        cmd.SetAction(p =>
        {
            string dir = p.GetValue(dataDir)!;
            var spec = PolyMnistStore.LoadSpec(dir);
            int n = p.GetValue(count);
            var rows = new byte[]?[spec.Modalities][];
            for (int j = 0; j < spec.Modalities; j++)
            {
                var pixels = PolyMnistStore.LoadModality(dir, p.GetValue(split)!, j, out int available);
                rows[j] = Enumerable.Range(0, Math.Min(n, available))
                    .Select(i => (byte[]?)pixels.AsSpan(i * PolyMnistSplit.ImageBytes, PolyMnistSplit.ImageBytes).ToArray()).ToArray();
            }
            ImageGrid.Write(p.GetValue(output)!, rows);
            AnsiConsole.MarkupLineInterpolated($"[green]wrote[/] {p.GetValue(output)} ({spec.Modalities} rows x {rows[0].Length} columns)");
            return 0;
        });
        return cmd;
    }
}

/// <summary>Generation of both splits into a directory.</summary>
public static class DatasetMaker
{
    public static (int Train, int Test) Make(PolyMnistSpec spec, string mnistDir, string outDir, int train, int test, int seed)
    {
        if (train < 1 || test < 1) throw new ArgumentException("--train and --test must be at least 1");
        var mnistTrain = MnistIdx.Load(mnistDir, train: true);
        var mnistTest = MnistIdx.Load(mnistDir, train: false);
        var trainSplit = PolyMnistGenerator.Generate(spec, mnistTrain, train, seed);
        // Test tuples come from MNIST's test images, with their own stream but the same backgrounds.
        var testSplit = PolyMnistGenerator.Generate(spec, mnistTest, test, seed, streamOffset: 1);
        PolyMnistStore.Save(outDir, spec, trainSplit, testSplit);
        return (train, test);
    }
}
