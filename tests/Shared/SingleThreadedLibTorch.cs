using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MrVae.Tests.Shared;

/// <summary>
/// One libtorch (OpenMP/MKL) thread in a test process; linked into the test projects that need it.
/// - Equality checks: libtorch splits reductions (conv weight gradients, for one) across OpenMP threads, and how many
///   threads a parallel region gets varies when grains compute concurrently, which changes float summation order.
/// - Speed: `dotnet test` on the solution runs every test project at once; on 2 cores several processes with
///   spinning OpenMP teams slow each other down many times over.
/// torch.set_num_threads only sets the calling thread's OpenMP team size, so the limit goes into the process
/// environment before libtorch (and libgomp, which reads it once at load) is loaded.
/// </summary>
static class SingleThreadedLibTorch
{
    [DllImport("libc", SetLastError = true)]
    static extern int setenv(string name, string value, int overwrite);

    [ModuleInitializer]
    internal static void Apply()
    {
        foreach (var name in new[] { "OMP_NUM_THREADS", "MKL_NUM_THREADS" })
        {
            setenv(name, "1", 1);
            Environment.SetEnvironmentVariable(name, "1");
        }
    }
}
