using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MrVae.Grains.Tests;

/// <summary>
/// libtorch splits reductions (conv weight gradients, for one) across OpenMP threads, and how many threads a
/// parallel region gets varies when grains compute concurrently, which changes float summation order.
/// torch.set_num_threads only sets the calling thread's OpenMP team size, so the limit goes into the process
/// environment before libtorch (and libgomp, which reads it once at load) is loaded: then the local and the
/// distributed trainer do identical arithmetic and equality can be checked tightly.
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
