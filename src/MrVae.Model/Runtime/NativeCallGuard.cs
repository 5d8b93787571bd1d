using System.Runtime;

namespace MrVae.Model.Runtime;

/// <summary>
/// Keeps the garbage collector out of libtorch calls. TorchSharp 0.107 passes temporary <c>Scalar</c>s to native code
/// without keeping them alive (e.g. <c>Tensor.add(Scalar)</c> calls <c>add(scalar, 1)</c> and hands the new alpha's
/// handle to libtorch): a GC during the call finalizes the Scalar, and libtorch reads freed memory. Seen in a silo as
/// "Expected false to be true ... toFloat" from <c>Scalar.h</c> after a few hundred steps, and reproduced in a loop
/// of <c>1 - t * 0.5</c> beside a thread that allocates (errors and segfaults; none without the allocating thread).
/// Holding our own Scalars does not help, the temporaries are TorchSharp's. So torch work runs inside one long
/// no-GC region; the region is renewed (one blocking GC) only when no guarded work is in flight.
/// </summary>
public static class NativeCallGuard
{
    // Allocation allowed in a region (small and large object heaps each get half), and how much is used before the
    // next renewal: the rest is room for other threads' allocations while guarded work drains.
    const long RegionBytes = 256L << 20, LargeObjectBytes = 128L << 20, RenewAfterBytes = 32L << 20;
    static readonly object gate = new();
    static int active;
    static bool draining;
    static long regionStart;
    [ThreadStatic] static int depth;
    [ThreadStatic] static int collectionsAtEnter;
    /// <summary>Regions started, and starts the runtime refused (diagnostics).</summary>
    public static long Regions { get; private set; }
    public static long Refusals { get; private set; }
    /// <summary>
    /// Guarded calls during which a collection happened anyway (the region's allocation budget ran out, or something
    /// forced a GC): each one is a call the guard did not protect. Zero in a healthy process.
    /// </summary>
    public static long Breaches => Interlocked.Read(ref breaches);
    static long breaches;
    /// <summary>Raised (on the thread that saw it) the first time a guarded call was breached, for a log line.</summary>
    public static event Action<string>? FirstBreach;

    /// <summary>Whether guarded work runs inside a no-GC region (false where the runtime refused one).</summary>
    public static bool Protecting => GCSettings.LatencyMode == GCLatencyMode.NoGCRegion;

    public static T Run<T>(Func<T> work)
    {
        if (depth++ > 0)
        {
            try { return work(); } finally { depth--; }
        }
        Enter();
        collectionsAtEnter = GC.CollectionCount(0);
        try { return work(); }
        finally
        {
            if (GC.CollectionCount(0) != collectionsAtEnter && Interlocked.Increment(ref breaches) == 1)
                FirstBreach?.Invoke($"a garbage collection ran during guarded libtorch work ({GC.GetTotalAllocatedBytes() - regionStart} bytes allocated since the no-GC region started, budget {RegionBytes}); TorchSharp temporaries may have been freed under a native call");
            Exit(); depth--;
        }
    }

    public static void Run(Action work) => Run(() => { work(); return true; });

    /// <summary>
    /// Runs work that allocates a lot at once (loading a data shard, serialising a checkpoint) with no guarded work in
    /// flight and none starting: the GCs it causes cannot meet a libtorch call. Not from inside guarded work.
    /// </summary>
    public static async Task<T> ExclusiveAsync<T>(Func<Task<T>> work)
    {
        if (depth > 0) throw new InvalidOperationException("NativeCallGuard: exclusive work inside guarded work would wait for itself");
        // Waits asynchronously: blocked thread-pool threads (five grains checkpointing at once) starve Orleans' own
        // scheduling on a small machine, and a status call then times out.
        await exclusiveTurn.WaitAsync();
        try
        {
            await BeginExclusive();
            try { return await work(); }
            finally { EndExclusive(); }
        }
        finally { exclusiveTurn.Release(); }
    }

    static readonly SemaphoreSlim exclusiveTurn = new(1, 1);

    // Exclusive work is rare (checkpoints, shard loads) and waits for at most one step's compute: polling is cheap
    // and keeps the wait free of any thread.
    static async Task BeginExclusive()
    {
        while (!TryUnderGate(() => draining ? false : draining = true)) await Task.Delay(5);
        while (!TryUnderGate(() => { if (active > 0) return false; EndRegion(); return true; })) await Task.Delay(5);
    }

    static bool TryUnderGate(Func<bool> attempt)
    {
        lock (gate) return attempt();
    }

    static void EndExclusive()
    {
        lock (gate)
        {
            draining = false;   // the next guarded call starts a fresh region
            Monitor.PulseAll(gate);
        }
    }

    public static Task ExclusiveAsync(Func<Task> work) => ExclusiveAsync(async () => { await work(); return true; });

    static void Enter()
    {
        lock (gate)
        {
            while (draining) Monitor.Wait(gate);
            bool stale = GC.GetTotalAllocatedBytes() - regionStart > RenewAfterBytes;
            if (!Protecting || stale)
            {
                // Renew only with nothing in flight: the GC that starting a region performs must not meet a native call.
                draining = true;
                while (active > 0) Monitor.Wait(gate);
                EndRegion();
                // A collection first: starting a region collects only when the budget does not fit, so without it the
                // garbage of every past region piles up. Young generations only: a step's garbage dies young, and a full
                // collection each time pauses every step (both measured in docs/performance.md).
                GC.Collect(1);
                try { if (GC.TryStartNoGCRegion(RegionBytes, LargeObjectBytes)) Regions++; else Refusals++; }
                catch (InvalidOperationException) { /* another region is in progress */ }
                catch (ArgumentOutOfRangeException) { /* budget too large for this runtime: run unprotected */ }
                regionStart = GC.GetTotalAllocatedBytes();
                draining = false;
                Monitor.PulseAll(gate);
            }
            active++;
        }
    }

    static void EndRegion()
    {
        if (!Protecting) return;
        try { GC.EndNoGCRegion(); }
        catch (InvalidOperationException) { /* ended by a GC already */ }
    }

    static void Exit()
    {
        lock (gate)
        {
            active--;
            Monitor.PulseAll(gate);
        }
    }
}
