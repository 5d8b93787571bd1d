using MrVae.Model.Runtime;

namespace MrVae.Model.Tests;

public class MallocTuningTests
{
    [Fact]
    public void GlibcKeepsLargeTensorsWhenTheModelAssemblyLoads()
    {
        // The settings come from MrVae.Model's module initializer: no host has to remember to call anything.
        bool userSettings = MallocTuning.GlibcVariables.Any(n => Environment.GetEnvironmentVariable(n) is not null)
            || Environment.GetEnvironmentVariable("MRVAE_MALLOC_TUNING") == "0";
        bool glibc = OperatingSystem.IsLinux() && File.ReadAllText("/proc/self/maps").Contains("libc.so.6");
        Assert.Equal(glibc && !userSettings, MallocTuning.Applied);
    }
}
