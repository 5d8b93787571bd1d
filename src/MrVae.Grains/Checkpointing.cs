using System.Security.Cryptography;
using TorchSharp;
using static TorchSharp.torch;
using MrVae.Data;

namespace MrVae.Grains;

/// <summary>
/// Checkpoints live in Orleans grain storage under <see cref="StorageName"/>: files for the embedded default and
/// single machines, Redis for a cluster (MrVae.Silo chooses). A run's checkpoint at step s is consistent across
/// parties: every member first writes a snapshot at s, then the coordinator writes its record, which names s and
/// the members; that write is the commit. Members keep two snapshot slots, so the committed one survives while
/// the next is written.
/// </summary>
public static class Checkpointing
{
    public const string StorageName = "mrvae-checkpoints";
    /// <summary>Bumped whenever the meaning of a stored field changes; older states are refused with a clear error.
    /// 2: the tensor bytes carry a SHA-256 (<see cref="Checksum"/>).</summary>
    public const int FormatVersion = 2;

    /// <summary>SHA-256 over the given byte arrays, each prefixed by its length, as lower-case hex.</summary>
    public static string Checksum(params byte[][] parts)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var part in parts)
        {
            hash.AppendData(BitConverter.GetBytes((long)part.Length));
            hash.AppendData(part);
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>Throws, naming <paramref name="what"/>, unless the bytes have the recorded checksum: damaged state is never loaded.</summary>
    public static void Verify(string recorded, string what, params byte[][] parts)
    {
        string actual = Checksum(parts);
        if (actual != recorded)
            throw new UserInputException($"{what} is damaged (its SHA-256 is {actual[..12]}…, the stored one {(recorded.Length >= 12 ? recorded[..12] : "missing")}…): it was not loaded; the run cannot resume from it (check the grain storage, MrVae:Checkpoints)");
    }

    public static byte[] Save(nn.Module module)
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true)) module.save(writer);
        return stream.ToArray();
    }

    public static void Load(nn.Module module, byte[] bytes)
    {
        using var reader = new BinaryReader(new MemoryStream(bytes));
        module.load(reader);
    }

    public static byte[] Save(TorchSharp.Modules.OptimizerHelper optimizer)
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true)) optimizer.save_state_dict(writer);
        return stream.ToArray();
    }

    public static void Load(TorchSharp.Modules.OptimizerHelper optimizer, byte[] bytes)
    {
        using var reader = new BinaryReader(new MemoryStream(bytes));
        optimizer.load_state_dict(reader);
    }

    public static byte[] Save(Generator generator)
    {
        using var state = generator.get_state();
        return state.data<byte>().ToArray();
    }

    public static void Load(Generator generator, byte[] bytes)
    {
        using var state = tensor(bytes, dtype: ScalarType.Byte);
        generator.set_state(state);
    }
}

/// <summary>One modality grain's weights and optimiser state after <see cref="Step"/> optimiser steps.</summary>
[GenerateSerializer]
public sealed class ModalitySnapshot
{
    [Id(0)] public int FormatVersion { get; set; }
    /// <summary>Optimiser steps taken; −1: an empty slot.</summary>
    [Id(1)] public long Step { get; set; } = -1;
    [Id(2)] public string ModelConfigJson { get; set; } = "";
    [Id(3)] public byte[] Network { get; set; } = [];
    [Id(4)] public byte[] Optimizer { get; set; } = [];
    [Id(5)] public DateTime SavedUtc { get; set; }
    /// <summary><see cref="Checkpointing.Checksum"/> of Network and Optimizer.</summary>
    [Id(6)] public string Checksum { get; set; } = "";
}

/// <summary>The coordinator's commit record of a run: everything needed to resume it at <see cref="Step"/>.</summary>
[GenerateSerializer]
public sealed class RunCheckpoint
{
    [Id(0)] public int FormatVersion { get; set; }
    [Id(1)] public RunSetup? Setup { get; set; }
    /// <summary>Optimiser steps taken (the next step to run).</summary>
    [Id(2)] public long Step { get; set; }
    [Id(3)] public RunState State { get; set; }
    [Id(4)] public string? Error { get; set; }
    /// <summary>Members whose snapshots at <see cref="Step"/> belong to this checkpoint.</summary>
    [Id(5)] public int[] Members { get; set; } = [];
    /// <summary>Members that failed and should rejoin from their own last snapshot when their silo is back.</summary>
    [Id(6)] public int[] Dropped { get; set; } = [];
    /// <summary>Data directory per modality where an attach named one other than the run's.</summary>
    [Id(7)] public Dictionary<int, string> DataDirectories { get; set; } = new();
    [Id(8)] public byte[] Objective { get; set; } = [];
    [Id(9)] public byte[] Optimizer { get; set; } = [];
    [Id(10)] public byte[] StepGenerator { get; set; } = [];
    [Id(11)] public List<TestMetrics> TestMetrics { get; set; } = new();
    [Id(12)] public List<RunEvent> Events { get; set; } = new();
    [Id(13)] public long Incarnation { get; set; }
    [Id(14)] public DateTime SavedUtc { get; set; }
    /// <summary>
    /// Attach and detach requests acknowledged but not yet applied at a step boundary: written when they are made,
    /// so a coordinator that dies before the boundary applies them after it resumes instead of losing them.
    /// </summary>
    [Id(15)] public int[] PendingAttach { get; set; } = [];
    [Id(16)] public int[] PendingDetach { get; set; } = [];
    /// <summary><see cref="Checkpointing.Checksum"/> of Objective, Optimizer and StepGenerator.</summary>
    [Id(17)] public string Checksum { get; set; } = "";
    /// <summary>
    /// The metrics of the steps since the previous checkpoint (at most a thousand): a client that had not fetched them
    /// when the coordinator's silo died gets them from the resumed activation, so the run's history keeps every step.
    /// </summary>
    [Id(18)] public List<StepMetrics> RecentMetrics { get; set; } = new();
    /// <summary>The run's training samples (the sorted union of its members' keys; null: positions), so a resumed run keeps its schedule.</summary>
    [Id(19)] public long[]? SampleKeys { get; set; }
}
