using System.Diagnostics;
using MrVae.Model;
using MrVae.Model.Objectives;
using MrVae.Model.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Bench;

/// <summary>
/// mrVAE's coordinator alone (`mrvae bench relation`): size and selection networks, sizes, sorts, products of experts
/// and KL terms, forward and backward, on random posteriors and all modalities available. The relation module's cost
/// without encoders, decoders or grains, and without the noise of a whole step: for measuring changes to it.
/// </summary>
public static class RelationBenchmark
{
    /// <param name="CpuMs">Process CPU time per step (forward + backward): steadier than wall time on a shared machine.</param>
    /// <param name="PageFaults">Minor page faults per step (null where /proc is not readable).</param>
    public sealed record Result(int Latent, int Batch, int Modalities, int Threads, Spread ForwardMs, Spread BackwardMs, Spread CpuMs, Spread? PageFaults);

    /// <param name="settings">Model options NAME=VALUE (<see cref="ModelConfig.WithSetting"/>), e.g. RelationBf16=true.</param>
    public static Result Run(int latent, int batch, int modalities, int steps, int warmup, int threads, long seed, double tau = 0.5, string[]? settings = null)
    {
        Result? result = null;
        // One thread of our own: libtorch's thread count belongs to the calling thread (see ComputeGate).
        var thread = new Thread(() =>
        {
            set_num_threads(threads);
            result = NativeCallGuard.Run(() => Measure(latent, batch, modalities, steps, warmup, threads, seed, tau, settings ?? []));
        }) { Name = "mrvae-bench-relation" };
        thread.Start();
        thread.Join();
        return result!;
    }

    static Result Measure(int latent, int batch, int modalities, int steps, int warmup, int threads, long seed, double tau, string[] settings)
    {
        manual_seed(seed);
        var config = new ModelConfig { Kind = ModelKind.MrVae, Modalities = modalities, LatentDim = latent }.WithSettings(settings);
        using var objective = new MrVaeObjective(config);
        var generator = new Generator((ulong)seed);
        var mu = Enumerable.Range(0, modalities).Select(_ => randn(batch, latent, generator: generator).requires_grad_()).ToArray();
        var logVar = Enumerable.Range(0, modalities).Select(_ => (0.3 * randn(batch, latent, generator: generator)).requires_grad_()).ToArray();
        using var available = ones(batch, modalities);
        var decode = Enumerable.Repeat(true, modalities).ToArray();
        var process = Process.GetCurrentProcess();
        var (forward, backward, cpu, faults) = (new List<double>(), new List<double>(), new List<double>(), new List<double>());
        for (int s = 0; s < warmup + steps; s++)
        {
            using var scope = NewDisposeScope();
            var context = new StepContext { Generator = generator, TauSize = tau, TauSelection = tau };
            process.Refresh();
            var cpuStart = process.TotalProcessorTime;
            long? faultsStart = ProcessMemory.MinorFaults();
            var watch = Stopwatch.StartNew();
            using var output = objective.Forward(mu.Select(t => (Tensor?)t).ToArray(), logVar.Select(t => (Tensor?)t).ToArray(), available, decode, context);
            // Stand-ins for the decoders' gradients: every decoder input reaches the loss.
            var loss = output.Loss;
            foreach (var input in output.DecoderInputs) loss = loss + input!.square().mean();
            double forwardMs = watch.Elapsed.TotalMilliseconds;
            watch.Restart();
            loss.backward();
            double backwardMs = watch.Elapsed.TotalMilliseconds;
            process.Refresh();
            double cpuMs = (process.TotalProcessorTime - cpuStart).TotalMilliseconds;
            long? faultsEnd = ProcessMemory.MinorFaults();
            foreach (var t in mu.Concat(logVar)) t.grad?.zero_();
            objective.zero_grad();
            if (s < warmup) continue;
            forward.Add(forwardMs); backward.Add(backwardMs); cpu.Add(cpuMs);
            if (faultsStart is { } f0 && faultsEnd is { } f1) faults.Add(f1 - f0);
        }
        foreach (var t in mu.Concat(logVar)) t.Dispose();
        return new Result(latent, batch, modalities, threads, Spread.Of(forward), Spread.Of(backward), Spread.Of(cpu),
            faults.Count == forward.Count ? Spread.Of(faults) : null);
    }
}
