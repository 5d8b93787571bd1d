using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MrVae.Model.Runtime;

namespace MrVae.Grains;

/// <summary>
/// Runs this silo's libtorch work on dedicated threads, in two lanes: modality work (convolutional encoders and
/// decoders: worth libtorch's intra-op threads) and coordinator work (the objective: many small ops, fastest on
/// one thread; docs/performance.md has the measurement). Grain turns hopping across thread-pool threads would each
/// start their own OpenMP team, so teams would spin on the same cores.
/// Dedicated threads keep one team per lane, and keep TorchSharp's thread-bound dispose scopes on one thread.
/// Grains on different silos still compute in parallel.
/// </summary>
public sealed partial class ComputeGate : IDisposable
{
    readonly Lane modality, coordinator;

    public ComputeGate(IOptions<SiloSettings> settings, ILogger<ComputeGate> logger)
    {
        var s = settings.Value;
        // A breach is a libtorch call the guard did not protect: say so once, it explains any crash that follows.
        NativeCallGuard.FirstBreach += message => LogBreach(logger, message);
        modality = new Lane("modality", Math.Max(1, s.ConcurrentCompute), s.TorchThreads);
        coordinator = new Lane("coordinator", 1, s.CoordinatorTorchThreads);
    }

    /// <summary>Runs a modality grain's synchronous tensor work; the grain awaits it without blocking its scheduler.</summary>
    public Task<T> RunModality<T>(Func<T> work) => modality.Run(work);

    /// <summary>Runs the coordinator's synchronous tensor work.</summary>
    public Task<T> RunCoordinator<T>(Func<T> work) => coordinator.Run(work);

    public void Dispose() { modality.Dispose(); coordinator.Dispose(); }

    [LoggerMessage(EventId = 1, Level = LogLevel.Warning, Message = "NativeCallGuard: {Message}")]
    static partial void LogBreach(ILogger logger, string message);

    sealed class Lane : IDisposable
    {
        readonly BlockingCollection<Action> queue = new();

        public Lane(string name, int threads, int torchThreads)
        {
            for (int i = 0; i < threads; i++)
                new Thread(() =>
                {
                    // OpenMP's team size is per calling thread: set it on the thread that will compute.
                    if (torchThreads > 0) TorchSharp.torch.set_num_threads(torchThreads);
                    foreach (var item in queue.GetConsumingEnumerable()) item();
                }) { IsBackground = true, Name = $"mrvae-{name}-{i}" }.Start();
        }

        public Task<T> Run<T>(Func<T> work)
        {
            var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
            queue.Add(() =>
            {
                // No GC during libtorch calls (TorchSharp's temporary Scalars, see NativeCallGuard).
                try { done.SetResult(NativeCallGuard.Run(work)); }
                catch (Exception e) { done.SetException(e); }
            });
            return done.Task;
        }

        public void Dispose() => queue.CompleteAdding();
    }
}
