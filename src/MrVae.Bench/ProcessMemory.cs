using System.Globalization;

namespace MrVae.Bench;

/// <summary>Linux process memory and machine facts from /proc (values null where /proc is not readable).</summary>
public static class ProcessMemory
{
    /// <summary>Peak resident set size (VmHWM) of a process, in MiB.</summary>
    public static double? PeakRssMb(int? pid = null) => StatusKb(pid, "VmHWM:") / 1024.0;

    /// <summary>Current resident set size (VmRSS) of a process, in MiB.</summary>
    public static double? RssMb(int? pid = null) => StatusKb(pid, "VmRSS:") / 1024.0;

    /// <summary>Resets this process's VmHWM to its current RSS (Linux ≥ 4.0: "5" to clear_refs), so the next peak belongs to what runs next.</summary>
    public static bool ResetPeak()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); return true; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    static long? StatusKb(int? pid, string key)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{(pid is { } p ? p.ToString(CultureInfo.InvariantCulture) : "self")}/status"))
                if (line.StartsWith(key, StringComparison.Ordinal))
                    return long.Parse(line[key.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>
    /// Minor page faults of this process so far (/proc/self/stat field 10): each is a first touch of memory the kernel
    /// had to map and zero, which on this virtual machine costs several microseconds.
    /// </summary>
    public static long? MinorFaults()
    {
        try
        {
            var stat = File.ReadAllText("/proc/self/stat");
            // Fields after the command name (which is in parentheses and may hold spaces): state is field 3, minflt 10.
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return long.Parse(fields[10 - 3], CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { return null; }
    }

    /// <summary>The 1, 5 and 15 minute load averages.</summary>
    public static double[]? LoadAverage()
    {
        try { return File.ReadAllText("/proc/loadavg").Split(' ').Take(3).Select(x => double.Parse(x, CultureInfo.InvariantCulture)).ToArray(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    public static string? CpuModel()
    {
        try { return File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }
}
