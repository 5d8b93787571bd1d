using System.Text.RegularExpressions;

namespace MrVae.Deploy.Tests;

/// <summary>
/// The configuration keys mrvae-silo actually reads, derived from its source so that a renamed or removed option
/// makes the manifest checks fail: the silo's Program.cs (which hosting extensions it calls), SiloHosting.cs and
/// TelemetryHosting.cs (configuration["KEY"] and GetValue("KEY", default)) and SiloSettings.cs (the section bound
/// with GetSection(SiloSettings.Section) and its settable properties). Keys compare case-insensitively, as
/// Microsoft.Extensions.Configuration does.
/// </summary>
public sealed partial class SiloOptions
{
    public HashSet<string> Keys { get; } = new(StringComparer.OrdinalIgnoreCase);
    public Dictionary<string, string> Defaults { get; } = new(StringComparer.OrdinalIgnoreCase);

    public const string ProgramFile = "src/MrVae.Silo/Program.cs";
    public const string HostingFile = "src/MrVae.Silo/SiloHosting.cs";
    public const string TelemetryFile = "src/MrVae.Silo/TelemetryHosting.cs";
    public const string SettingsFile = "src/MrVae.Grains/SiloSettings.cs";
    public const string TlsFile = "src/MrVae.Silo/TlsHosting.cs";
    public const string RedisFile = "src/MrVae.Silo/RedisConnection.cs";

    static readonly Lazy<SiloOptions> current = new(() => Parse(
        File.ReadAllText(Repo.Path(ProgramFile)), File.ReadAllText(Repo.Path(HostingFile)),
        File.ReadAllText(Repo.Path(TelemetryFile)), File.ReadAllText(Repo.Path(SettingsFile)),
        File.ReadAllText(Repo.Path(TlsFile)), File.ReadAllText(Repo.Path(RedisFile))));

    /// <summary>The options of the silo in this checkout.</summary>
    public static SiloOptions Current => current.Value;

    /// <summary>
    /// Also, when given: TlsHosting.cs (the MrVae:Tls section bound with GetSection(TlsSettings.Section) and its
    /// settable properties) and RedisConnection.cs (the MrVae:Redis:* keys RedisAuth reads, when SiloHosting calls it).
    /// </summary>
    public static SiloOptions Parse(string program, string hosting, string telemetry, string settings, string tls = "", string redis = "")
    {
        var o = new SiloOptions();
        program = StripComments(program);
        hosting = StripComments(hosting);
        telemetry = StripComments(telemetry);
        settings = StripComments(settings);
        if (program.Contains("ConfigureMrVae(")) o.AddReads(hosting);
        if (program.Contains("AddMrVaeTelemetry(")) o.AddReads(telemetry);
        if (hosting.Contains("GetSection(SiloSettings.Section)") && SectionConst().Match(settings) is { Success: true } section)
        {
            foreach (Match m in SettableProperty().Matches(settings))
            {
                string key = $"{section.Groups[1].Value}:{m.Groups[1].Value}";
                o.Keys.Add(key);
                if (m.Groups[2].Success) o.Defaults[key] = m.Groups[2].Value.Trim().Trim('"');
            }
        }
        tls = StripComments(tls);
        if (hosting.Contains("GetSection(TlsSettings.Section)") && SectionConst().Match(tls) is { Success: true } tlsSection)
            foreach (Match m in SettableProperty().Matches(tls)) o.Keys.Add($"{tlsSection.Groups[1].Value}:{m.Groups[1].Value}");
        if (hosting.Contains("RedisAuth.From(configuration)"))
            foreach (Match m in RedisKey().Matches(StripComments(redis))) o.Keys.Add(m.Groups[1].Value);
        return o;
    }

    void AddReads(string source)
    {
        foreach (Match m in IndexerRead().Matches(source)) Keys.Add(m.Groups[1].Value);
        foreach (Match m in GetValueRead().Matches(source))
        {
            Keys.Add(m.Groups[1].Value);
            if (m.Groups[2].Success) Defaults[m.Groups[1].Value] = m.Groups[2].Value.Trim().Trim('"');
        }
    }

    /// <summary>The configuration key an environment variable sets (MrVae__Silo__Device → MrVae:Silo:Device).</summary>
    public static string KeyOfVariable(string name) => name.Replace("__", ":");

    public bool Reads(string key) => Keys.Contains(key);

    static string StripComments(string source) => LineComment().Replace(BlockComment().Replace(source, ""), "");

    [GeneratedRegex(@"(?m)(?<=^|\s)//.*$")] private static partial Regex LineComment();
    [GeneratedRegex(@"/\*.*?\*/", RegexOptions.Singleline)] private static partial Regex BlockComment();
    [GeneratedRegex(@"configuration\s*\[\s*""([^""]+)""\s*\]")] private static partial Regex IndexerRead();
    [GeneratedRegex(@"\.GetValue(?:<[^>]+>)?\(\s*""([^""]+)""\s*(?:,\s*([^)]+?))?\s*\)")] private static partial Regex GetValueRead();
    [GeneratedRegex(@"""(MrVae:Redis:\w+)""")] private static partial Regex RedisKey();
    [GeneratedRegex(@"const\s+string\s+Section\s*=\s*""([^""]+)""")] private static partial Regex SectionConst();
    [GeneratedRegex(@"public\s+(?:string|int|long|bool|double|float)\??\s+(\w+)\s*\{\s*get;\s*set;\s*\}(?:\s*=\s*([^;]+);)?")] private static partial Regex SettableProperty();
}
