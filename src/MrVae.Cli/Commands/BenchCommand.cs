using System.CommandLine;
using System.Globalization;
using MrVae.Bench;
using MrVae.Data;
using MrVae.Model;
using Spectre.Console;

namespace MrVae.Cli.Commands;

/// <summary>`mrvae bench`: step time, relation share, bytes and memory of the three trainers (logic in MrVae.Bench).</summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out") { Description = "JSON report to write", Required = true };
        var data = new Option<string>("--data") { Description = "dataset directory of either kind, e.g. vector data from `mrvae data make --dataset synthetic-ring` (default: extended PolyMNIST, made if it has no spec.json)", DefaultValueFactory = _ => Path.Combine("data", "bench") };
        var mnist = new Option<string?>("--mnist") { Description = "MNIST directory for making the dataset (default: mrvae's lookup order)" };
        var work = new Option<string>("--work") { Description = "run directories and silo logs", DefaultValueFactory = _ => Path.Combine("runs", "bench") };
        var models = new Option<string>("--models") { Description = "comma list of mrvae, mopoe, mvae, mmvae", DefaultValueFactory = _ => "mrvae,mopoe" };
        var latent = new Option<string>("--latent") { Description = "comma list of latent sizes D", DefaultValueFactory = _ => "32,64" };
        var modes = new Option<string>("--modes") { Description = "comma list of local, embedded, silos3", DefaultValueFactory = _ => "local,embedded,silos3" };
        var batch = new Option<int>("--batch") { Description = "batch size", DefaultValueFactory = _ => 256 };
        var warmup = new Option<int>("--warmup") { Description = "unmeasured steps at the start of every repeat (JIT, allocator and libtorch warm-up)", DefaultValueFactory = _ => 5 };
        var steps = new Option<int>("--steps") { Description = "measured steps per repeat", DefaultValueFactory = _ => 3 };
        var repeats = new Option<int>("--repeats") { Description = "fresh runs per configuration (modes interleaved)", DefaultValueFactory = _ => 3 };
        var seed = new Option<long>("--seed") { Description = "run seed", DefaultValueFactory = _ => 0 };
        var localThreads = new Option<int>("--local-threads") { Description = "libtorch threads of the single-process trainer (0: libtorch's default, one per core)", DefaultValueFactory = _ => 1 };
        var memorySteps = new Option<int>("--memory-steps") { Description = "long-run memory check: steps of the embedded cluster (0: skip)", DefaultValueFactory = _ => 2000 };
        var memoryBatch = new Option<int>("--memory-batch") { Description = "batch of the memory check", DefaultValueFactory = _ => 8 };
        var memoryLatent = new Option<int>("--memory-latent") { Description = "latent size of the memory check", DefaultValueFactory = _ => 8 };
        var silo = new Option<string?>("--silo") { Description = "mrvae-silo.dll for the loopback silos (default: the build beside this one)" };
        var cmd = new Command("bench", "Measure step time (single process, embedded cluster, three loopback silos), bytes per step and memory")
        {
            output, data, mnist, work, models, latent, modes, batch, warmup, steps, repeats, seed, localThreads, memorySteps, memoryBatch, memoryLatent, silo,
        };
        var settings = SettingsOption(cmd);
        cmd.Subcommands.Add(Chaos());
        cmd.SetAction(async (p, cancel) =>
        {
            var options = new BenchOptions
            {
                DataDirectory = p.GetValue(data)!, WorkDirectory = p.GetValue(work)!,
                Models = List(p.GetValue(models)!).Select(TrainCommand.ParseModel).ToArray(),
                LatentDims = List(p.GetValue(latent)!).Select(x => int.TryParse(x, out int d) && d > 0 ? d : throw new UserInputException($"--latent: '{x}' is not a positive integer")).ToArray(),
                Modes = List(p.GetValue(modes)!).Select(ParseMode).ToArray(),
                BatchSize = p.GetValue(batch), WarmupSteps = p.GetValue(warmup), Steps = p.GetValue(steps), Repeats = p.GetValue(repeats), Seed = p.GetValue(seed),
                LocalTorchThreads = p.GetValue(localThreads), MemorySteps = p.GetValue(memorySteps), MemoryBatch = p.GetValue(memoryBatch),
                MemoryLatent = p.GetValue(memoryLatent), SiloDll = p.GetValue(silo), ModelSettings = p.GetValue(settings) ?? [],
            };
            Benchmark.Validate(options);
            if (!File.Exists(Path.Combine(options.DataDirectory, PolyMnistStore.SpecFile)))
            {
                int largest = Math.Max(options.BatchSize, options.MemoryBatch);
                AnsiConsole.MarkupLineInterpolated($"making extended PolyMNIST in {options.DataDirectory} ...");
                DatasetMaker.Make(PolyMnistSpec.Extended(), MnistFetch.Resolve(p.GetValue(mnist)), options.DataDirectory, train: Math.Max(1024, 4 * largest), test: largest, seed: 0);
            }
            var report = await Benchmark.Run(options, line => AnsiConsole.WriteLine(line), cancel);
            string outFile = p.GetValue(output)!;
            if (Path.GetDirectoryName(Path.GetFullPath(outFile)) is { } dir) Directory.CreateDirectory(dir);
            File.WriteAllText(outFile, report.ToJson());
            Print(report);
            AnsiConsole.MarkupLineInterpolated($"[green]wrote[/] {outFile} ({report.WallSeconds:F0} s)");
            return 0;
        });
        return cmd;
    }

    /// <summary>`mrvae bench chaos`: the chaos soak (logic in MrVae.Bench.Chaos).</summary>
    static Command Chaos()
    {
        var data = new Option<string>("--data") { Description = "dataset directory (small vector data keeps the soak to minutes: mrvae data make --dataset synthetic-ring)", Required = true };
        var work = new Option<string>("--work") { Description = "run directory, silo logs and minidumps (emptied first)", DefaultValueFactory = _ => Path.Combine("runs", "chaos") };
        var output = new Option<string?>("--out") { Description = "JSON report to write (default: WORK/chaos.json)" };
        var steps = new Option<long>("--steps") { Description = "steps of the run", DefaultValueFactory = _ => 3000 };
        var every = new Option<long>("--every") { Description = "kill a random silo every this many steps (counted from the recovery from the last kill)", DefaultValueFactory = _ => 100 };
        var down = new Option<double>("--down") { Description = "seconds a killed silo stays down", DefaultValueFactory = _ => 5 };
        var tail = new Option<long?>("--quiet-tail") { Description = "no kill in the last this many steps, so all members are back for the final test loss (default: a fifth of --steps)" };
        var batch = new Option<int>("--batch") { Description = "batch size", DefaultValueFactory = _ => 32 };
        var latent = new Option<int>("--latent") { Description = "latent size D", DefaultValueFactory = _ => 16 };
        var seed = new Option<long>("--seed") { Description = "run seed (and the choice of victims)", DefaultValueFactory = _ => 0 };
        var margin = new Option<double>("--margin") { Description = "allowed relative difference of the final test loss from the undisturbed run's", DefaultValueFactory = _ => 0.05 };
        var silo = new Option<string?>("--silo") { Description = "mrvae-silo.dll (default: the build beside this one)" };
        var cmd = new Command("chaos", "Chaos soak: 3 loopback silos through a private Redis, SIGKILL a random one every K steps and restart it; report steps, reruns, rollbacks, exceptions and the final test loss against an undisturbed run")
        {
            data, work, output, steps, every, down, tail, batch, latent, seed, margin, silo,
        };
        cmd.SetAction(async (p, cancel) =>
        {
            var o = new ChaosOptions
            {
                DataDirectory = p.GetValue(data)!, WorkDirectory = p.GetValue(work)!, Steps = p.GetValue(steps), Every = p.GetValue(every), DownSeconds = p.GetValue(down), QuietTail = p.GetValue(tail),
                BatchSize = p.GetValue(batch), LatentDim = p.GetValue(latent), Seed = p.GetValue(seed), SiloDll = p.GetValue(silo),
            };
            var r = await MrVae.Bench.Chaos.Run(o, Console.WriteLine, cancel);
            string outFile = p.GetValue(output) ?? Path.Combine(o.WorkDirectory, "chaos.json");
            File.WriteAllText(outFile, r.ToJson());
            bool lossOk = r.RelativeDifference is { } d && d <= p.GetValue(margin);
            Console.WriteLine($"steps {r.Steps} (lines {r.StepLines}), kills {r.Kills} ({r.CoordinatorKills} of the coordinator's silo), steps rerun after drops {r.StepsRerunAfterDrops}, " +
                              $"steps redone after failovers {r.StepsRedoneAfterFailovers}, failovers {r.Failovers}, rollbacks while the coordinator lived {r.RollbacksWhileCoordinatorLived}, " +
                              $"unhandled exceptions {r.UnhandledExceptions} (lines naming an exception {r.ExceptionLines}), minidumps {r.Minidumps}");
            Console.WriteLine($"final test loss {r.FinalTestLoss:F3}, undisturbed {r.UndisturbedTestLoss:F3}: {r.RelativeDifference:P2} apart (margin {p.GetValue(margin):P0}); {r.WallSeconds:F0} s; report {outFile}");
            return r.RollbacksWhileCoordinatorLived == 0 && r.UnhandledExceptions == 0 && lossOk ? 0 : 1;
        });
        return cmd;
    }

    /// <summary>`--set NAME=VALUE`, as `mrvae train --set`: model options for every configuration measured.</summary>
    static Option<string[]> SettingsOption(Command command) => TrainCommand.SettingsOption(command,
        "a model option NAME=VALUE for every configuration (a ModelConfig property, e.g. MembershipPrior=0.1); repeatable");

    static string[] List(string value) => value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    static BenchMode ParseMode(string name) => name.ToLowerInvariant() switch
    {
        "local" => BenchMode.Local,
        "embedded" => BenchMode.Embedded,
        "silos3" => BenchMode.Silos3,
        _ => throw new UserInputException($"unknown mode '{name}': use local, embedded or silos3"),
    };

    /// <summary>The report as a markdown table (pastes into the README as is), then the memory check and the goals.</summary>
    public static void Print(BenchReport report)
    {
        var m = report.Machine;
        var s = report.Settings;
        Console.WriteLine($"{m.Cores} cores ({m.Cpu}), load average {Load(m.LoadAverageStart)} at start, {Load(m.LoadAverageEnd)} at end; " +
                          $"libtorch threads: local {m.LocalTorchThreads}, silo modality work {m.SiloTorchThreads} per lane × {m.SiloConcurrentCompute} lanes (embedded; {m.LoopbackSiloConcurrentCompute} per loopback silo), coordinator {m.CoordinatorTorchThreads}");
        Console.WriteLine($"batch {s.BatchSize}, M = 5, {s.Repeats} repeats × ({s.WarmupSteps} warm-up + {s.Steps} measured) steps per configuration, seed {s.Seed}");
        Console.WriteLine();
        Console.WriteLine("| model | D | mode | median step ms | IQR ms | min–max ms | × local | relation share (with its overlapped update) | MB moved/step | peak RSS MB |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
        foreach (var r in report.Results)
            Console.WriteLine($"| {r.Model} | {r.Latent} | {r.Mode.ToString().ToLowerInvariant()} | {F(r.StepMs.Median)} | {F(r.StepMs.Q1)}–{F(r.StepMs.Q3)} | " +
                              $"{F(r.StepMs.Min)}–{F(r.StepMs.Max)} | {(r.RatioToLocal is { } x ? x.ToString("F2", CultureInfo.InvariantCulture) : "")} | " +
                              $"{(r.RelationShare is { } rel ? rel.Median.ToString("P0", CultureInfo.InvariantCulture) : "")}" +
                              $"{(r.ShareWithUpdate is { } all ? $" ({all.Median.ToString("P0", CultureInfo.InvariantCulture)})" : "")} | " +
                              $"{(r.BytesPerStep is { } b ? (b / 1e6).ToString("F2", CultureInfo.InvariantCulture) : "")} | {Peak(r)} |");
        Console.WriteLine();
        if (report.Memory is { } mem)
            Console.WriteLine($"memory ({mem.Model} D={mem.Latent}, batch {mem.Batch}, embedded cluster): RSS {mem.EarlyRssMb:F0} MB after {mem.EarlyStep} steps, " +
                              $"{mem.LateRssMb:F0} MB after {mem.Steps} steps ({mem.Growth.ToString("+0.0%;-0.0%", CultureInfo.InvariantCulture)})");
        foreach (var g in report.Goals)
            AnsiConsole.MarkupLine($"{(g.Met ? "[green]met[/]    " : "[red]not met[/]")} {Markup.Escape($"{g.Name}: {g.Measured.ToString("G3", CultureInfo.InvariantCulture)} (goal ≤ {g.Limit.ToString(CultureInfo.InvariantCulture)})")}");
    }

    static string F(double v) => v.ToString(v >= 100 ? "F0" : "F1", CultureInfo.InvariantCulture);
    static string Load(double[]? l) => l is null ? "?" : string.Join(" ", l.Select(x => x.ToString("F2", CultureInfo.InvariantCulture)));
    static string Peak(BenchResult r) => r.SiloPeakRssMb is { } silos
        ? $"silos {string.Join(" / ", silos.Select(x => x.ToString("F0", CultureInfo.InvariantCulture)))}; client {r.PeakRssMb:F0}"
        : r.PeakRssMb is { } p ? p.ToString("F0", CultureInfo.InvariantCulture) : "";
}
