using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MrVae.Model.Runtime;

/// <summary>
/// Keeps glibc from handing libtorch's large tensors back to the kernel after every op. By default an allocation over
/// the mmap threshold (128 KB, raised as such chunks are freed, at most 32 MB) is a fresh mmap, and free memory at the
/// top of a heap over the trim threshold is unmapped: each new activation or gradient of megabytes is then
/// page-faulted and zeroed by the kernel again (what it saved: docs/performance.md). Memory is held at its peak
/// instead of returned between ops, which also keeps the RSS flat over a run.
/// Applied once, when this assembly loads (before any tensor exists); skipped where the user set glibc's own MALLOC_*
/// variables, and with MRVAE_MALLOC_TUNING=0.
/// </summary>
public static class MallocTuning
{
    // glibc's mallopt parameters (malloc.h).
    const int TrimThreshold = -1, TopPad = -2, MmapThreshold = -3;
    const int MmapThresholdMax = 32 << 20;   // glibc's largest mmap threshold on 64-bit systems

    /// <summary>glibc's own variables for these settings: where the user set any of them, theirs stand.</summary>
    public static readonly string[] GlibcVariables = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"];

    /// <summary>Whether the settings were applied in this process (false: not glibc, opted out, or user settings).</summary>
    public static bool Applied { get; private set; }

#pragma warning disable CA2255   // a library's module initializer on purpose: every host (CLI, silo, tests) gets it first
    [ModuleInitializer]
    internal static void Apply()
    {
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("MRVAE_MALLOC_TUNING") == "0") return;
        if (GlibcVariables.Any(name => Environment.GetEnvironmentVariable(name) is not null)) return;
        try
        {
            Applied = mallopt(MmapThreshold, MmapThresholdMax) == 1
                & mallopt(TrimThreshold, int.MaxValue) == 1
                & mallopt(TopPad, 64 << 20) == 1;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { /* not glibc: leave it */ }
    }
#pragma warning restore CA2255

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int mallopt(int parameter, int value);
}
