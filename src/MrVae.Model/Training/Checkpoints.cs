using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace MrVae.Model.Training;

/// <summary>What a checkpoint records besides tensors.</summary>
public sealed record CheckpointState
{
    public const int CurrentFormatVersion = 1;
    public int FormatVersion { get; init; } = CurrentFormatVersion;
    /// <summary>Number of optimiser steps taken (the next step to run).</summary>
    public long Step { get; init; }
    public double? TestLoss { get; init; }
    public double? BestTestLoss { get; init; }
    public long? BestStep { get; init; }
    /// <summary>libtorch generator state of the coordinator's step stream, base64.</summary>
    public string GeneratorState { get; init; } = "";
    public required ModelConfig Model { get; init; }
}

/// <summary>Thrown for a checkpoint that cannot be used; the message names the file and what to do.</summary>
public sealed class CheckpointException(string message, Exception? inner = null) : MrVae.Data.UserInputException(message, inner);

/// <summary>
/// Checkpoints as directories under RUNDIR/checkpoints/NAME. A checkpoint is written into a temporary sibling
/// directory and renamed into place only when complete, so a crash mid-write leaves the previous one intact.
/// Every file of it (state.json included) has its SHA-256 in SHA256SUMS (the format of `sha256sum -c`), checked
/// before anything of the checkpoint is used: a damaged file is refused by name, never loaded.
/// </summary>
public static class CheckpointDirectory
{
    public const string StateFile = "state.json";
    public const string ChecksumFile = "SHA256SUMS";
    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>Writes files through <paramref name="writeFiles"/> into a fresh directory, then swaps it in for <paramref name="target"/>.</summary>
    public static void WriteAtomically(string target, CheckpointState state, Action<string> writeFiles)
    {
        string parent = Path.GetDirectoryName(Path.GetFullPath(target))!;
        Directory.CreateDirectory(parent);
        string staging = Path.Combine(parent, $".{Path.GetFileName(target)}.writing-{Guid.NewGuid():N}");
        Directory.CreateDirectory(staging);
        try
        {
            writeFiles(staging);
            // state.json last: a directory without it is never a checkpoint.
            File.WriteAllText(Path.Combine(staging, StateFile), JsonSerializer.Serialize(state, Json));
            WriteChecksums(staging);
            string retired = Path.Combine(parent, $".{Path.GetFileName(target)}.old-{Guid.NewGuid():N}");
            if (Directory.Exists(target)) Directory.Move(target, retired);
            Directory.Move(staging, target);
            if (Directory.Exists(retired)) Directory.Delete(retired, recursive: true);
        }
        catch
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
            throw;
        }
    }

    /// <summary>
    /// The checkpoint at <paramref name="directory"/>, or, if a crash happened between retiring the old one and
    /// moving the new one in, the retired copy.
    /// </summary>
    public static (string Directory, CheckpointState State) Read(string directory)
    {
        string dir = directory;
        if (!File.Exists(Path.Combine(dir, StateFile)))
        {
            string parent = Path.GetDirectoryName(Path.GetFullPath(directory))!;
            var retired = Directory.Exists(parent)
                ? Directory.GetDirectories(parent, $".{Path.GetFileName(directory)}.old-*").FirstOrDefault(d => File.Exists(Path.Combine(d, StateFile)))
                : null;
            dir = retired ?? throw new CheckpointException($"no checkpoint at {directory} (missing {StateFile}): train first, or point --resume at a run directory that has checkpoints/");
        }
        VerifyChecksums(dir);
        CheckpointState? state;
        try { state = JsonSerializer.Deserialize<CheckpointState>(File.ReadAllText(Path.Combine(dir, StateFile)), Json); }
        catch (JsonException e) { throw new CheckpointException($"checkpoint {dir}/{StateFile} is corrupt ({e.Message}); delete it to fall back to another checkpoint", e); }
        if (state is null) throw new CheckpointException($"checkpoint {dir}/{StateFile} is empty");
        if (state.FormatVersion != CheckpointState.CurrentFormatVersion)
            throw new CheckpointException($"checkpoint {dir} has format version {state.FormatVersion}, this build reads {CheckpointState.CurrentFormatVersion}: use a matching mrvae version");
        return (dir, state);
    }

    /// <summary>Writes SHA256SUMS over every file in <paramref name="directory"/>.</summary>
    static void WriteChecksums(string directory)
    {
        var lines = Directory.GetFiles(directory).Select(Path.GetFileName).Where(f => f != ChecksumFile).Order(StringComparer.Ordinal)
            .Select(f => $"{Sha256(Path.Combine(directory, f!))}  {f}");
        File.WriteAllText(Path.Combine(directory, ChecksumFile), string.Join("\n", lines) + "\n");
    }

    /// <summary>
    /// Checks every file of the checkpoint at <paramref name="directory"/> against its SHA256SUMS; throws a
    /// <see cref="CheckpointException"/> naming the first file that is missing or differs.
    /// </summary>
    public static void VerifyChecksums(string directory)
    {
        string sums = Path.Combine(directory, ChecksumFile);
        if (!File.Exists(sums))
            throw new CheckpointException($"checkpoint {directory} has no {ChecksumFile}, so its files cannot be checked (it was written by an mrvae without checksums, or by hand): resume it with the version that wrote it, or start a new run directory");
        foreach (var line in File.ReadAllLines(sums).Where(l => l.Length > 0))
        {
            int split = line.IndexOf("  ", StringComparison.Ordinal);
            if (split != 64) throw new CheckpointException($"checkpoint file {sums} is damaged (line '{line}' is not 'SHA256  NAME'): delete the checkpoint to fall back to another one");
            string expected = line[..split], name = line[(split + 2)..], path = Path.Combine(directory, name);
            if (!File.Exists(path)) throw new CheckpointException($"checkpoint file {path} is missing ({ChecksumFile} lists it): the checkpoint is incomplete; delete it to fall back to another one");
            string actual = Sha256(path);
            if (actual != expected)
                throw new CheckpointException($"checkpoint file {path} is damaged (its SHA-256 is {actual[..12]}…, {ChecksumFile} says {expected[..12]}…): it was not loaded; delete checkpoint {directory} to fall back to another one, or resume from another run");
        }
    }

    static string Sha256(string path)
    {
        using var file = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(file));
    }
}
