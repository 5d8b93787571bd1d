using System.Text.Json;
using System.Text.Json.Serialization;
using MrVae.Model;

namespace MrVae.Bench;

/// <summary>Where the three trainers run: one process; every grain in one in-process silo; three silo processes on loopback.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<BenchMode>))]
public enum BenchMode { Local, Embedded, Silos3 }

/// <summary>What `mrvae bench` measures and how much of it.</summary>
public sealed record BenchOptions
{
    public required string DataDirectory { get; init; }
    /// <summary>Run directories and silo logs go here.</summary>
    public required string WorkDirectory { get; init; }
    public ModelKind[] Models { get; init; } = [ModelKind.MrVae, ModelKind.MoPoE];
    public int[] LatentDims { get; init; } = [32, 64];
    public BenchMode[] Modes { get; init; } = [BenchMode.Local, BenchMode.Embedded, BenchMode.Silos3];
    public int BatchSize { get; init; } = 256;
    /// <summary>
    /// Steps at the start of every repeat that are not measured (allocator, JIT and libtorch warm-up): the first
    /// steps are several times slower than the steady state (docs/performance.md, the bench's warm-up).
    /// </summary>
    public int WarmupSteps { get; init; } = 5;
    /// <summary>Measured steps per repeat.</summary>
    public int Steps { get; init; } = 3;
    /// <summary>Model options NAME=VALUE applied to every configuration (<see cref="ModelConfig.WithSetting"/>), e.g. MembershipPrior=0.1.</summary>
    public string[] ModelSettings { get; init; } = [];
    /// <summary>Fresh runs (same data and seed) per configuration.</summary>
    public int Repeats { get; init; } = 3;
    public long Seed { get; init; }
    /// <summary>
    /// libtorch threads of the single-process trainer (0: libtorch's default, one per core). Default 1, as the silos'
    /// modality and coordinator lanes: on a shared machine an OpenMP team of several threads spins whenever another
    /// process holds one of its cores (docs/performance.md).
    /// </summary>
    public int LocalTorchThreads { get; init; } = 1;
    /// <summary>Long-run memory check: steps of the embedded cluster (0: skip), on its own small batch and latent size.</summary>
    public int MemorySteps { get; init; } = 2000;
    public int MemoryBatch { get; init; } = 8;
    public int MemoryLatent { get; init; } = 8;
    /// <summary>mrvae-silo.dll for the loopback silos (default: the build beside this one).</summary>
    public string? SiloDll { get; init; }
    /// <summary>Modality groups of the loopback silos, one per silo.</summary>
    public string[] SiloGroups { get; init; } = ["0,1", "2,3", "4"];
}

public sealed record MachineFacts(int Cores, string? Cpu, string Os, string Runtime, string TorchSharp, double[]? LoadAverageStart,
    double[]? LoadAverageEnd, int LocalTorchThreads, int SiloTorchThreads, int CoordinatorTorchThreads, int SiloConcurrentCompute,
    int LoopbackSiloConcurrentCompute, bool MallocTuned);

/// <summary>
/// One configuration (model, D, mode) over all its repeats; times are of measured steps only. RelationShare and
/// RelationMs: the coordinator's forward and backward phases, which the step waits for (the goal's measure).
/// CoordinatorUpdateMs: its parameter update (Adam), which runs beside the members' next encode; ShareWithUpdate counts
/// it in too, as if nothing overlapped.
/// </summary>
public sealed record BenchResult(string Model, int Latent, BenchMode Mode, int Batch, Spread StepMs, double[] RepeatMedianMs,
    double? RatioToLocal, Spread? RelationShare, Spread? RelationMs, long? BytesPerStep, double? PeakRssMb, double[]? SiloPeakRssMb,
    Spread? CoordinatorUpdateMs = null, Spread? ShareWithUpdate = null);

public sealed record MemorySample(long Step, double RssMb);

/// <summary>The long-run memory check: resident memory of the process hosting the embedded cluster along a long run.</summary>
public sealed record MemoryReport(string Model, int Latent, int Batch, long Steps, long EarlyStep, double EarlyRssMb, double LateRssMb,
    double Growth, MemorySample[] Samples, string Note);

public sealed record Goal(string Name, double Measured, double Limit, bool Met);

public sealed record BenchReport(string StartedUtc, double WallSeconds, MachineFacts Machine, BenchOptions Settings, BenchResult[] Results,
    MemoryReport? Memory, Goal[] Goals)
{
    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);
    public static BenchReport FromJson(string json) => JsonSerializer.Deserialize<BenchReport>(json, Json) ?? throw new ArgumentException("empty bench report");
}
