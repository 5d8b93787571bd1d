// MSBuild inline task (see LibTorchSharpGlibcxx.targets): marks one GNU symbol-version requirement of an
// ELF64 shared library as weak, when the system libstdc++ does not provide that version.
// Compiled by RoslynCodeTaskFactory against netstandard2.0: keep to that API surface.
#nullable enable
using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class WeakenGlibcxxRequirement : Task
{
    [Required] public ITaskItem[] Libraries { get; set; } = Array.Empty<ITaskItem>();
    [Required] public string VersionName { get; set; } = "";

    const uint ShtGnuVerneed = 0x6ffffffe;
    const ushort VerFlgWeak = 0x2;

    public override bool Execute()
    {
        string? libstdcxx = FindSystemLibStdCxx();
        if (libstdcxx == null)
        {
            Log.LogMessage(MessageImportance.Low, "No system libstdc++ found; leaving libLibTorchSharp.so unchanged.");
            return true;
        }
        if (Contains(File.ReadAllBytes(libstdcxx), Encoding.ASCII.GetBytes(VersionName + "\0")))
        {
            Log.LogMessage(MessageImportance.Low, $"{libstdcxx} provides {VersionName}; nothing to patch.");
            return true;
        }
        foreach (var item in Libraries)
        {
            string path = item.ItemSpec;
            try
            {
                switch (Patch(path))
                {
                    case PatchResult.Patched:
                        Log.LogMessage(MessageImportance.Normal, $"Marked {VersionName} weak in {path} (system libstdc++ lacks it).");
                        break;
                    case PatchResult.AlreadyWeak:
                        break;
                    case PatchResult.NotRequired:
                        Log.LogMessage(MessageImportance.Low, $"{path} does not require {VersionName}.");
                        break;
                }
            }
            catch (Exception e) when (e is IOException || e is InvalidDataException || e is UnauthorizedAccessException)
            {
                Log.LogError($"Could not patch {path}: {e.Message}");
            }
        }
        return !Log.HasLoggedErrors;
    }

    enum PatchResult { NotRequired, AlreadyWeak, Patched }

    PatchResult Patch(string path)
    {
        byte[] elf = File.ReadAllBytes(path);
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException("only little-endian ELF64 is supported");

        ulong shoff = BitConverter.ToUInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3A);
        int shnum = BitConverter.ToUInt16(elf, 0x3C);
        byte[] wanted = Encoding.ASCII.GetBytes(VersionName);

        for (int s = 0; s < shnum; s++)
        {
            int sh = checked((int)shoff + s * shentsize);
            if (BitConverter.ToUInt32(elf, sh + 4) != ShtGnuVerneed) continue;
            int offset = checked((int)BitConverter.ToUInt64(elf, sh + 24));
            int strtabIndex = (int)BitConverter.ToUInt32(elf, sh + 40);
            int verneedCount = (int)BitConverter.ToUInt32(elf, sh + 44);
            int strtab = checked((int)BitConverter.ToUInt64(elf, (int)shoff + strtabIndex * shentsize + 24));

            int vn = offset;
            for (int n = 0; n < verneedCount; n++)
            {
                int auxCount = BitConverter.ToUInt16(elf, vn + 2);
                int vna = vn + (int)BitConverter.ToUInt32(elf, vn + 8);
                for (int a = 0; a < auxCount; a++)
                {
                    int name = strtab + (int)BitConverter.ToUInt32(elf, vna + 8);
                    if (NameEquals(elf, name, wanted))
                    {
                        ushort flags = BitConverter.ToUInt16(elf, vna + 4);
                        if ((flags & VerFlgWeak) != 0) return PatchResult.AlreadyWeak;
                        flags |= VerFlgWeak;
                        elf[vna + 4] = (byte)(flags & 0xff);
                        elf[vna + 5] = (byte)(flags >> 8);
                        // Stage the patched bytes next to the library, then replace the directory entry (never
                        // write through it: with hard-linked copy-local files it is the NuGet cache's copy too).
                        string tmp = path + ".weaken.tmp";
                        File.WriteAllBytes(tmp, elf);
                        File.Delete(path);
                        File.Move(tmp, path);
                        return PatchResult.Patched;
                    }
                    vna += (int)BitConverter.ToUInt32(elf, vna + 12);
                }
                vn += (int)BitConverter.ToUInt32(elf, vn + 12);
            }
        }
        return PatchResult.NotRequired;
    }

    static bool NameEquals(byte[] data, int at, byte[] name)
    {
        if (at + name.Length >= data.Length) return false;
        for (int i = 0; i < name.Length; i++)
            if (data[at + i] != name[i]) return false;
        return data[at + name.Length] == 0;
    }

    static bool Contains(byte[] haystack, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= haystack.Length; i++)
        {
            int k = 0;
            while (k < needle.Length && haystack[i + k] == needle[k]) k++;
            if (k == needle.Length) return true;
        }
        return false;
    }

    // The libstdc++ this process (MSBuild on .NET, which links it) has loaded is the one the loader will
    // also give TorchSharp; fall back to the usual multiarch locations.
    static string? FindSystemLibStdCxx()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/maps"))
            {
                int slash = line.IndexOf('/');
                if (slash >= 0 && line.IndexOf("libstdc++.so", StringComparison.Ordinal) >= 0)
                    return line.Substring(slash).Trim();
            }
        }
        catch (IOException) { }
        foreach (string candidate in new[]
        {
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/usr/lib/aarch64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6",
        })
            if (File.Exists(candidate)) return candidate;
        return null;
    }
}
