using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using MrVae.Client;
using MrVae.Data;
using MrVae.Grains;
using MrVae.Model;
using MrVae.Model.Training;

namespace MrVae.Bench;

/// <summary>
/// Runs the benchmark: for every model and latent size, the same data, seed and batch through the single-process
/// trainer, the embedded cluster and loopback silo processes; several fresh repeats each, warm-up steps dropped.
/// Step times are the trainers' own per-step clocks (LocalTrainer's step, the coordinator's step), so start-up,
/// polling and the final test loss are not counted.
/// </summary>
public static class Benchmark
{
    /// <summary>Refuses out-of-range counts and any model's --set values before data are made or a model is timed (the data's modalities are not known yet: the defaults stand in).</summary>
    public static void Validate(BenchOptions o)
    {
        if (o.Steps < 1 || o.Repeats < 1 || o.WarmupSteps < 0 || o.BatchSize < 1) throw new UserInputException("steps, repeats and batch must be at least 1 (warm-up at least 0)");
        foreach (var kind in o.Models)
            foreach (int latent in o.LatentDims)
                Config(o, kind, latent).Validated();
    }

    /// <summary>One configuration of the benchmark: the model and latent size with the user's --set values (mrVAE's structure switches to mrVAE only).</summary>
    static ModelConfig Config(BenchOptions o, ModelKind kind, int latent, int modalities = 5, int observedDim = 0) =>
        new ModelConfig { Kind = kind, Modalities = modalities, LatentDim = latent, ObservedDim = observedDim }.WithSettings(o.ModelSettings).WithStructureOptionsForMrVaeOnly();

    public static async Task<BenchReport> Run(BenchOptions o, Action<string>? log = null, CancellationToken cancel = default)
    {
        log ??= _ => { };
        Validate(o);
        var started = DateTime.UtcNow;
        var wall = Stopwatch.StartNew();
        var loadStart = ProcessMemory.LoadAverage();
        var spec = DatasetDirectory.LoadSpec(o.DataDirectory);
        int observedDim = spec.Vectors?.ObservedDim ?? 0;
        var train = MultimodalDataset.Load(o.DataDirectory, "train", spec.Modalities);
        if (o.SiloGroups.SelectMany(g => g.Split(',')).Select(int.Parse).Order().SequenceEqual(Enumerable.Range(0, spec.Modalities)) is false && o.Modes.Contains(BenchMode.Silos3))
            throw new UserInputException($"the silo groups {string.Join(" ", o.SiloGroups)} must cover modalities 0..{spec.Modalities - 1} once each");
        int localThreads = o.LocalTorchThreads > 0 ? o.LocalTorchThreads : Environment.ProcessorCount;
        var siloSettings = new SiloSettings();

        using var lane = new LocalLane(localThreads);
        var results = new List<BenchResult>();
        foreach (var kind in o.Models)
            foreach (int latent in o.LatentDims)
            {
                var config = Config(o, kind, latent, spec.Modalities, observedDim);
                log($"{Name(config)} D={latent}: {o.Repeats} × ({o.WarmupSteps} warm-up + {o.Steps}) steps, batch {o.BatchSize}, modes {string.Join(", ", o.Modes.Select(ModeName))}");
                foreach (var result in await RunConfiguration(config, o, train, lane, cancel))
                {
                    results.Add(result);
                    log($"  {ModeName(result.Mode)}: median {result.StepMs.Median:F1} ms (IQR {result.StepMs.Q1:F1}–{result.StepMs.Q3:F1})");
                }
            }
        var withRatios = results.Select(r => r with { RatioToLocal = results.FirstOrDefault(l => l.Mode == BenchMode.Local && l.Model == r.Model && l.Latent == r.Latent) is { } local ? r.StepMs.Median / local.StepMs.Median : null }).ToArray();

        MemoryReport? memory = null;
        if (o.MemorySteps > 0)
        {
            log($"memory: embedded mrvae D={o.MemoryLatent}, batch {o.MemoryBatch}, {o.MemorySteps} steps");
            memory = await RunMemory(spec.Modalities, observedDim, o, Path.Combine(o.WorkDirectory, "memory"), cancel);
            log($"  RSS {memory.EarlyRssMb:F0} MB after {memory.EarlyStep} steps, {memory.LateRssMb:F0} MB after {memory.Steps} ({memory.Growth:+0.0%;-0.0%})");
        }

        var machine = new MachineFacts(Environment.ProcessorCount, ProcessMemory.CpuModel(), RuntimeInformation.OSDescription, RuntimeInformation.FrameworkDescription,
            typeof(TorchSharp.torch).Assembly.GetName().Version?.ToString() ?? "?", loadStart, ProcessMemory.LoadAverage(),
            localThreads, siloSettings.TorchThreads, siloSettings.CoordinatorTorchThreads, siloSettings.ConcurrentCompute,
            LoopbackSilos.ConcurrentComputePerSilo(o.SiloGroups.Length), MrVae.Model.Runtime.MallocTuning.Applied);
        return new BenchReport(started.ToString("o", CultureInfo.InvariantCulture), wall.Elapsed.TotalSeconds, machine, o, withRatios, memory, Goals(withRatios, memory));
    }

    /// <summary>The issue's goals, from this run's numbers.</summary>
    public static Goal[] Goals(IReadOnlyList<BenchResult> results, MemoryReport? memory)
    {
        var goals = new List<Goal>();
        foreach (var r in results.Where(r => r.RatioToLocal is not null && r.Mode != BenchMode.Local))
        {
            double limit = r.Mode == BenchMode.Embedded ? 1.10 : 1.25;
            goals.Add(new Goal($"{r.Mode.ToString().ToLowerInvariant()} / local step, {r.Model} D={r.Latent}", r.RatioToLocal!.Value, limit, r.RatioToLocal <= limit));
        }
        // The relation module's share of an mrVAE step at the largest D measured (the issue names D = 64).
        var relation = results.Where(r => r.Model == "mrvae" && r.RelationShare is not null)
            .OrderByDescending(r => r.Latent).ThenBy(r => r.Mode).FirstOrDefault();
        if (relation is not null)
            goals.Add(new Goal($"relation module share of the mrvae step, D={relation.Latent} ({relation.Mode.ToString().ToLowerInvariant()})", relation.RelationShare!.Median, 0.25, relation.RelationShare.Median <= 0.25));
        if (memory is not null)
            goals.Add(new Goal($"RSS growth from step {memory.EarlyStep} to step {memory.Steps}", memory.Growth, 0.10, memory.Growth <= 0.10));
        return goals.ToArray();
    }

    /// <summary>
    /// One configuration in every mode, the modes interleaved repeat by repeat (local, embedded, silos, local, ...) so
    /// that a change in the machine's load during the run falls on all of them alike. The embedded silo and the silo
    /// processes start at their first repeat and serve all repeats. Peak RSS is each mode's first repeat: the bench
    /// process's peak is reset before it, so it includes what earlier modes left resident (malloc keeps freed blocks);
    /// the silo processes run nothing else.
    /// </summary>
    static async Task<BenchResult[]> RunConfiguration(ModelConfig config, BenchOptions o, MultimodalDataset train, LocalLane lane, CancellationToken cancel)
    {
        var measurements = o.Modes.ToDictionary(m => m, _ => new Measurements());
        IHost? embedded = null;
        LoopbackSilos? silos = null;
        try
        {
            for (int r = 0; r < o.Repeats; r++)
                foreach (var mode in o.Modes)
                {
                    cancel.ThrowIfCancellationRequested();
                    var m = measurements[mode];
                    string dir = Path.Combine(o.WorkDirectory, $"{Name(config)}-d{config.LatentDim}-{ModeName(mode)}");
                    if (r == 0) ProcessMemory.ResetPeak();
                    switch (mode)
                    {
                        case BenchMode.Local:
                            await RunLocal(config, o, train, Path.Combine(dir, $"r{r}"), lane, m);
                            break;
                        case BenchMode.Embedded:
                            embedded ??= await ClusterTraining.StartEmbeddedSilo(Path.Combine(dir, "silo-state"));
                            await RunThroughGrains(embedded.Services.GetRequiredService<IGrainFactory>(), config, o, Path.Combine(dir, $"r{r}"), m, cancel);
                            break;
                        default:
                            silos ??= await LoopbackSilos.Start(LoopbackSilos.SiloDll(o.SiloDll), o.SiloGroups, dir, TimeSpan.FromSeconds(120));
                            await RunThroughGrains(silos.Grains, config, o, Path.Combine(dir, $"r{r}"), m, cancel);
                            break;
                    }
                    if (r == 0) m.PeakRssMb = ProcessMemory.PeakRssMb();
                }
            if (silos is not null) measurements[BenchMode.Silos3].SiloPeakRssMb = silos.Processes.Select(p => ProcessMemory.PeakRssMb(p.Id) ?? double.NaN).ToArray();
        }
        finally
        {
            if (embedded is not null) { await embedded.StopAsync(CancellationToken.None); embedded.Dispose(); }
            if (silos is not null) await silos.DisposeAsync();
        }
        return o.Modes.Select(mode => measurements[mode].Result(config, mode, o.BatchSize)).ToArray();
    }

    /// <summary>What the repeats of one mode measured (times of measured steps only).</summary>
    sealed class Measurements
    {
        public List<double> StepMs { get; } = new();
        public List<double> RepeatMedians { get; } = new();
        public List<double> RelationMs { get; } = new();
        public List<double> RelationShare { get; } = new();
        public List<double> CoordinatorUpdateMs { get; } = new();
        public List<double> ShareWithUpdate { get; } = new();
        public List<long> Bytes { get; } = new();
        public double? PeakRssMb { get; set; }
        public double[]? SiloPeakRssMb { get; set; }

        public void AddRepeat(List<double> stepMs)
        {
            StepMs.AddRange(stepMs);
            RepeatMedians.Add(Spread.Of(stepMs).Median);
        }

        public BenchResult Result(ModelConfig config, BenchMode mode, int batch) => new(Name(config), config.LatentDim, mode, batch,
            Spread.Of(StepMs), RepeatMedians.ToArray(), null,
            RelationShare.Count > 0 ? Spread.Of(RelationShare) : null, RelationMs.Count > 0 ? Spread.Of(RelationMs) : null,
            Bytes.Count > 0 ? (long)Spread.Of(Bytes.Select(b => (double)b)).Median : null, PeakRssMb, SiloPeakRssMb,
            CoordinatorUpdateMs.Count > 0 ? Spread.Of(CoordinatorUpdateMs) : null, ShareWithUpdate.Count > 0 ? Spread.Of(ShareWithUpdate) : null);
    }

    static Task RunLocal(ModelConfig config, BenchOptions o, MultimodalDataset train, string runDirectory, LocalLane lane, Measurements m)
        => lane.Run(() =>
        {
            var options = new TrainOptions { RunDirectory = runDirectory, BatchSize = o.BatchSize, Steps = o.WarmupSteps + o.Steps, Seed = o.Seed };
            using var trainer = new LocalTrainer(config, options, train, test: null);
            var measured = new List<double>();
            for (int s = 0; s < o.WarmupSteps + o.Steps; s++)
            {
                var report = trainer.RunStep();
                if (s >= o.WarmupSteps) measured.Add(report.StepMilliseconds);
            }
            m.AddRepeat(measured);
        });

    /// <summary>One fresh run through the coordinator grain; reads its metrics.jsonl (step_ms, bytes, ms_* per phase).</summary>
    static async Task RunThroughGrains(IGrainFactory grains, ModelConfig config, BenchOptions o, string runDirectory, Measurements m, CancellationToken cancel)
    {
        int total = o.WarmupSteps + o.Steps;
        var options = new TrainOptions
        {
            RunDirectory = runDirectory, BatchSize = o.BatchSize, Steps = total, Seed = o.Seed, EvaluateEvery = total, TestSamples = o.BatchSize,
        };
        await ClusterTraining.Train(grains, config, options, Path.GetFullPath(o.DataDirectory), Enumerable.Range(0, config.Modalities).ToArray(), cancel: cancel);
        var measured = new List<double>();
        foreach (var line in File.ReadLines(Path.Combine(runDirectory, LocalTrainer.MetricsFile)))
        {
            using var json = JsonDocument.Parse(line);
            var root = json.RootElement;
            if (root.TryGetProperty("event", out _) || root.GetProperty("step").GetInt64() < o.WarmupSteps) continue;
            double step = root.GetProperty("step_ms").GetDouble();
            // The relation module runs in the coordinator's forward and backward phases (mrVAE; the baselines' objectives there are small).
            double relation = root.GetProperty("ms_coordinator_forward").GetDouble() + root.GetProperty("ms_coordinator_backward").GetDouble();
            // The coordinator's parameter update (mrVAE: the chain's and networks' backward to their parameters, and
            // Adam) runs beside the members' next encode: not in the step's wait, but work the relation module does.
            double update = root.TryGetProperty("ms_coordinator_update", out var u) ? u.GetDouble() : 0;
            measured.Add(step);
            m.RelationMs.Add(relation);
            m.RelationShare.Add(relation / step);
            m.CoordinatorUpdateMs.Add(update);
            m.ShareWithUpdate.Add((relation + update) / step);
            m.Bytes.Add(root.GetProperty("bytes").GetInt64());
        }
        if (measured.Count != o.Steps) throw new InvalidOperationException($"run {runDirectory} reported {measured.Count} measured steps, expected {o.Steps}");
        m.AddRepeat(measured);
    }

    static async Task<MemoryReport> RunMemory(int modalities, int observedDim, BenchOptions o, string dir, CancellationToken cancel)
    {
        var config = new ModelConfig { Kind = ModelKind.MrVae, Modalities = modalities, LatentDim = o.MemoryLatent, ObservedDim = observedDim };
        long early = Math.Max(1, o.MemorySteps / 10), every = Math.Max(1, o.MemorySteps / 20);
        var samples = new List<MemorySample>();
        using var host = await ClusterTraining.StartEmbeddedSilo(Path.Combine(dir, "silo-state"));
        var options = new TrainOptions
        {
            RunDirectory = dir, BatchSize = o.MemoryBatch, Steps = o.MemorySteps, Seed = o.Seed, EvaluateEvery = o.MemorySteps, TestSamples = o.MemoryBatch,
        };
        long next = every;
        // Metrics arrive in polls (a few steps at a time): a sample is the RSS when step s was reported, s ≥ the sampling point.
        await ClusterTraining.Train(host.Services.GetRequiredService<IGrainFactory>(), config, options, Path.GetFullPath(o.DataDirectory),
            Enumerable.Range(0, modalities).ToArray(), report =>
            {
                long done = report.Step + 1;
                if (done >= next || done == o.MemorySteps)
                {
                    samples.Add(new MemorySample(done, ProcessMemory.RssMb() ?? double.NaN));
                    while (next <= done) next += every;
                }
            }, cancel);
        await host.StopAsync(CancellationToken.None);
        var earlySample = samples.First(s => s.Step >= early);
        var late = samples[^1];
        return new MemoryReport("mrvae", o.MemoryLatent, o.MemoryBatch, late.Step, earlySample.Step, earlySample.RssMb, late.RssMb,
            late.RssMb / earlySample.RssMb - 1, samples.ToArray(),
            $"resident memory of the process hosting the embedded cluster (all grains and the coordinator); batch {o.MemoryBatch} and D = {o.MemoryLatent} keep the long run affordable");
    }

    static string Name(ModelConfig config) => config.Kind.ToString().ToLowerInvariant();
    static string ModeName(BenchMode mode) => mode.ToString().ToLowerInvariant();

    /// <summary>
    /// One long-lived thread for every single-process run: libtorch's OpenMP team size belongs to the calling thread
    /// (see ComputeGate), and glibc gives each new thread its own malloc arena, which keeps what libtorch freed; a new
    /// thread per run would pile up arenas of several GB at D = 64.
    /// </summary>
    sealed class LocalLane : IDisposable
    {
        readonly System.Collections.Concurrent.BlockingCollection<Action> queue = new();

        public LocalLane(int torchThreads)
        {
            new Thread(() =>
            {
                TorchSharp.torch.set_num_threads(torchThreads);
                foreach (var work in queue.GetConsumingEnumerable()) work();
            }) { IsBackground = true, Name = "mrvae-bench-local" }.Start();
        }

        public Task Run(Action work)
        {
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            queue.Add(() =>
            {
                try { work(); done.SetResult(); }
                catch (Exception e) { done.SetException(e); }
            });
            return done.Task;
        }

        public void Dispose() => queue.CompleteAdding();
    }
}
