using System.Security.Cryptography;
using System.Text;
using static TorchSharp.torch;

namespace MrVae.Model;

/// <summary>
/// Seeds for every party of a run, derived from the run seed and the party's name, so the single-process
/// trainer and the distributed one (where each party lives in its own grain) draw identical random streams.
/// </summary>
public static class Seeds
{
    static readonly object ConstructionLock = new();

    public static long Derive(long runSeed, string party)
    {
        var bytes = SHA256.HashData(Encoding.UTF8.GetBytes($"{runSeed}/{party}"));
        return BitConverter.ToInt64(bytes, 0) & long.MaxValue;
    }

    public static string ModalityParty(int modality) => $"modality/{modality}";
    public const string CoordinatorParty = "coordinator";
    public const string CoordinatorStepsParty = "coordinator/steps";
    public const string DataOrderParty = "data-order";

    /// <summary>
    /// Builds modules under libtorch's global generator seeded for <paramref name="party"/>. Module initialisers
    /// read the global generator, which every grain in a process shares: the lock keeps constructions apart. The
    /// guard is entered before the lock: a thread holding the lock while it waited for a drain deadlocked with guarded
    /// work waiting for the lock.
    /// </summary>
    public static T Construct<T>(long runSeed, string party, Func<T> build) => Runtime.NativeCallGuard.Run(() =>
    {
        lock (ConstructionLock)
        {
            manual_seed(Derive(runSeed, party));
            return build();
        }
    });

    /// <summary>A fresh generator for the party's own random draws (noise, subset choices).</summary>
    public static Generator Generator(long runSeed, string party) => new((ulong)Derive(runSeed, party));
}
