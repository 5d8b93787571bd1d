using System.Text.RegularExpressions;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace MrVae.Grains;

/// <summary>
/// What a silo offers to runs (configuration section "MrVae:Silo"): the device its grains compute on, the modalities
/// it serves (their data lives here), and libtorch's intra-op thread count. Bound as typed options and checked by
/// <see cref="SiloSettingsValidator"/> when the silo starts (<see cref="AddSiloSettings"/>): a wrong value stops it
/// with the key's name.
/// </summary>
public sealed class SiloSettings
{
    public const string Section = "MrVae:Silo";
    /// <summary>cpu or cuda:N.</summary>
    public string Device { get; set; } = "cpu";
    /// <summary>Comma-separated modality indices this silo serves; empty: any.</summary>
    public string Modalities { get; set; } = "";
    /// <summary>
    /// This silo's name for `mrvae attach --silo ROLE` (e.g. "gpu-a"); empty: the host name (in Kubernetes the pod's,
    /// such as silo-m01-0).
    /// </summary>
    public string Role { get; set; } = "";

    /// <summary>The role this silo declares: <see cref="Role"/>, or the host name.</summary>
    public string EffectiveRole => string.IsNullOrWhiteSpace(Role) ? Environment.MachineName : Role.Trim();
    /// <summary>libtorch intra-op threads for modality work (0: libtorch's default, one per core). Default 1: on CPU,
    /// grains computing side by side on one thread each beat one grain at a time on all threads (see ComputeGate).</summary>
    public int TorchThreads { get; set; } = 1;
    /// <summary>libtorch intra-op threads for the coordinator's objective (many small ops: 1 is fastest on CPU).</summary>
    public int CoordinatorTorchThreads { get; set; } = 1;
    /// <summary>How many grains may run libtorch work at the same time on this silo (see <see cref="ComputeGate"/>).</summary>
    public int ConcurrentCompute { get; set; } = Environment.ProcessorCount;

    int[]? served;
    /// <summary><see cref="Modalities"/> parsed (once, on first use; the validator has checked it): empty means any.</summary>
    public int[] ServedModalities => served ??= ParseModalities(Modalities) ?? throw new OptionsValidationException(Section, typeof(SiloSettings),
        [$"{Section}:Modalities: '{Modalities}' is not a comma-separated list of modality indices (e.g. 0,2)"]);

    /// <summary>Silo metadata key carrying <see cref="ServedModalities"/> to the placement director on every silo.</summary>
    public const string ModalitiesMetadataKey = "mrvae.modalities";
    /// <summary>The metadata value of a silo that serves no modality (its certificate names none of those configured).</summary>
    public const string NoModalities = "none";
    /// <summary>Silo metadata key carrying <see cref="EffectiveRole"/>.</summary>
    public const string RoleMetadataKey = "mrvae.role";

    /// <summary>"0, 2,4" → [0, 2, 4]; empty → [] (any); null when an entry is not a non-negative integer or repeats.</summary>
    public static int[]? ParseModalities(string? text)
    {
        var parts = (text ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var list = new List<int>();
        foreach (var p in parts)
        {
            if (!int.TryParse(p, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int j) || list.Contains(j)) return null;
            list.Add(j);
        }
        return list.ToArray();
    }

    /// <summary>Whether a silo declaring <paramref name="modalities"/> (its metadata) serves <paramref name="modality"/>.</summary>
    public static bool Serves(string? modalities, int modality) =>
        modalities != NoModalities && ParseModalities(modalities) is { } list && (list.Length == 0 || list.Contains(modality));

    /// <summary>
    /// Binds the section as typed options, validated when the host starts (ValidateOnStart), and returns them bound
    /// and validated now, for what the silo's builder needs before it starts (its metadata).
    /// </summary>
    public static SiloSettings AddSiloSettings(IServiceCollection services, IConfigurationSection section)
    {
        services.AddOptions<SiloSettings>().Bind(section).ValidateOnStart();
        services.AddSingleton<IValidateOptions<SiloSettings>, SiloSettingsValidator>();
        var settings = section.Get<SiloSettings>() ?? new SiloSettings();
        var result = new SiloSettingsValidator().Validate(Options.DefaultName, settings);
        if (result.Failed) throw new OptionsValidationException(Options.DefaultName, typeof(SiloSettings), result.Failures);
        return settings;
    }
}

/// <summary>Checks <see cref="SiloSettings"/>; every failure names its configuration key, the value and what is allowed.</summary>
public sealed partial class SiloSettingsValidator : IValidateOptions<SiloSettings>
{
    public ValidateOptionsResult Validate(string? name, SiloSettings o)
    {
        const string s = SiloSettings.Section;
        var failures = new List<string>();
        if (!DeviceName().IsMatch(o.Device ?? ""))
            failures.Add($"{s}:Device: '{o.Device}' is not cpu or cuda:N (e.g. cuda:0)");
        if (SiloSettings.ParseModalities(o.Modalities) is null)
            failures.Add($"{s}:Modalities: '{o.Modalities}' is not a comma-separated list of distinct modality indices (e.g. 0,2; empty: any)");
        if (o.TorchThreads < 0) failures.Add($"{s}:TorchThreads: {o.TorchThreads} is below 0 (0: libtorch's default)");
        if (o.CoordinatorTorchThreads < 0) failures.Add($"{s}:CoordinatorTorchThreads: {o.CoordinatorTorchThreads} is below 0 (0: libtorch's default)");
        if (o.ConcurrentCompute < 1) failures.Add($"{s}:ConcurrentCompute: {o.ConcurrentCompute} is below 1");
        // The nodes' id secret (environment, not configuration: see SampleIds): a file named but missing stops the silo at start.
        try { MrVae.Data.SampleIds.SecretFromEnvironment(); }
        catch (MrVae.Data.UserInputException e) { failures.Add(e.Message); }
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }

    [GeneratedRegex(@"^(cpu|cuda(:\d+)?)$")] private static partial Regex DeviceName();
}
