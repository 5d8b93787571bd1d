using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MrVae.Evaluation.Tests;

/// <summary>
/// One libtorch (OpenMP/MKL) thread in this test process. `dotnet test` on the solution runs every test project at
/// once; on a 2-core machine several processes with spinning OpenMP teams slow each other down many times over.
/// The limit goes into the environment before libtorch and libgomp load (libgomp reads it once).
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
