using MrVae.Data;
using MrVae.Model;

namespace MrVae.Bench.Tests;

/// <summary>
/// The benchmark end to end at toy size (all three modes, the memory check), and the report's internal consistency:
/// no timing thresholds, only what must hold whatever the machine's speed.
/// </summary>
public sealed class BenchmarkTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-bench-" + Guid.NewGuid().ToString("N"));
    public void Dispose() { if (Directory.Exists(root)) Directory.Delete(root, recursive: true); }

    [Fact, Trait("Category", "Integration")]   // three loopback silo processes
    public async Task ToyBenchWritesAConsistentReport()
    {
        var mnist = MnistLocator.Resolve(null);
        var spec = PolyMnistSpec.Extended();
        string data = Path.Combine(root, "data");
        PolyMnistStore.Save(data, spec, PolyMnistGenerator.Generate(spec, MnistIdx.Load(mnist, train: true), 32, 1),
            PolyMnistGenerator.Generate(spec, MnistIdx.Load(mnist, train: false), 8, 1, streamOffset: 1));
        const int batch = 8, latent = 4, steps = 2, repeats = 2, memorySteps = 20;
        var options = new BenchOptions
        {
            DataDirectory = data, WorkDirectory = Path.Combine(root, "work"), Models = [ModelKind.MrVae], LatentDims = [latent],
            BatchSize = batch, WarmupSteps = 1, Steps = steps, Repeats = repeats, MemorySteps = memorySteps, MemoryBatch = batch, MemoryLatent = latent,
        };

        var written = await Benchmark.Run(options);
        var report = BenchReport.FromJson(written.ToJson());   // what --out holds, read back

        Assert.Equal(3, report.Results.Length);
        foreach (var r in report.Results)
        {
            var t = r.StepMs;
            Assert.Equal(steps * repeats, t.Count);
            Assert.True(0 < t.Min && t.Min <= t.Q1 && t.Q1 <= t.Median && t.Median <= t.Q3 && t.Q3 <= t.Max, $"{r.Mode}: {t}");
            Assert.Equal(repeats, r.RepeatMedianMs.Length);
            Assert.All(r.RepeatMedianMs, m => Assert.InRange(m, t.Min, t.Max));
            Assert.True(r.PeakRssMb > 0);
        }
        var local = report.Results.Single(r => r.Mode == BenchMode.Local);
        var embedded = report.Results.Single(r => r.Mode == BenchMode.Embedded);
        var silos = report.Results.Single(r => r.Mode == BenchMode.Silos3);
        Assert.Equal(1.0, local.RatioToLocal);
        Assert.Null(local.BytesPerStep);
        Assert.Null(local.RelationShare);
        foreach (var r in new[] { embedded, silos })
        {
            Assert.Equal(r.StepMs.Median / local.StepMs.Median, r.RatioToLocal!.Value, 12);
            Assert.True(r.RelationShare!.Min > 0 && r.RelationShare.Max < 1, $"{r.Mode}: relation share {r.RelationShare}");
            Assert.True(r.RelationMs!.Median > 0 && r.RelationMs.Max <= r.StepMs.Max);
            // The overlapped update (mrVAE: the chain's and networks' backward to their parameters, and Adam) is real
            // work, and counting it in can only raise the share.
            Assert.True(r.CoordinatorUpdateMs!.Min > 0, $"{r.Mode}: coordinator update {r.CoordinatorUpdateMs}");
            Assert.True(r.ShareWithUpdate!.Median > r.RelationShare.Median, $"{r.Mode}: {r.ShareWithUpdate} vs {r.RelationShare}");
        }
        // The same protocol moves the same bytes in one silo as in three: per modality, the batch's ids (int64),
        // μ and log σ² (B × D), the decoder input and its gradient (2 views × B × D: full-K and subset-K) plus the
        // decoder's float loss, and ∂μ, ∂log σ² (B × D); all float32.
        long perModality = batch * 8 + 2 * batch * latent * 4 + 2 * (2 * batch * latent * 4) + 4 + 2 * batch * latent * 4;
        Assert.Equal(5 * perModality, embedded.BytesPerStep);
        Assert.Equal(embedded.BytesPerStep, silos.BytesPerStep);
        Assert.Equal(3, silos.SiloPeakRssMb!.Length);
        Assert.All(silos.SiloPeakRssMb, p => Assert.True(p > 0));

        var machine = report.Machine;
        Assert.Equal(Environment.ProcessorCount, machine.Cores);
        Assert.Equal(3, machine.LoadAverageStart!.Length);
        Assert.Equal(1, machine.LocalTorchThreads);

        var memory = report.Memory!;
        Assert.Equal(memorySteps, memory.Steps);
        Assert.True(memory.EarlyStep >= memorySteps / 10 && memory.EarlyStep < memory.Steps);
        Assert.True(memory.Samples.Select(s => s.Step).SequenceEqual(memory.Samples.Select(s => s.Step).Order().Distinct()));
        Assert.Equal(memory.LateRssMb / memory.EarlyRssMb - 1, memory.Growth, 12);

        // Goals: one per distributed mode, the relation share, the memory growth; each verdict follows its numbers.
        Assert.Equal(4, report.Goals.Length);
        Assert.All(report.Goals, g => Assert.Equal(g.Measured <= g.Limit, g.Met));
        Assert.Contains(report.Goals, g => g.Name.Contains("relation") && g.Measured == embedded.RelationShare!.Median);
    }

    [Fact]
    public void MinorFaultsCountFirstTouchesOfFreshMemory()
    {
        if (!OperatingSystem.IsLinux()) return;
        // 48 MiB of fresh anonymous memory (over glibc's largest mmap threshold, so mapped anew): untouched, it costs no fault;
        // writing one byte per 4 KiB page faults each page in once (fewer if the kernel maps huge pages, hence ≥ 1/2).
        const int bytes = 48 << 20, page = 4096;
        var before = ProcessMemory.MinorFaults();
        IntPtr block = System.Runtime.InteropServices.Marshal.AllocHGlobal(bytes);
        try
        {
            var untouched = ProcessMemory.MinorFaults();
            for (int o = 0; o < bytes; o += page) System.Runtime.InteropServices.Marshal.WriteByte(block, o, 1);
            var touched = ProcessMemory.MinorFaults();
            Assert.NotNull(before);
            Assert.True(touched - untouched >= bytes / page / 2, $"{touched - untouched} faults for {bytes / page} fresh pages");
        }
        finally { System.Runtime.InteropServices.Marshal.FreeHGlobal(block); }
    }
}
