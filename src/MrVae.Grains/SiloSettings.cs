namespace MrVae.Grains;

/// <summary>
/// What a silo offers to runs (configuration section "MrVae:Silo"): the device its grains compute on, the modalities
/// it serves (their data lives here), and libtorch's intra-op thread count.
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

    /// <summary>Silo metadata key carrying <see cref="Modalities"/> to the placement director on every silo.</summary>
    public const string ModalitiesMetadataKey = "mrvae.modalities";
    /// <summary>Silo metadata key carrying <see cref="EffectiveRole"/>.</summary>
    public const string RoleMetadataKey = "mrvae.role";

    public static bool Serves(string? modalities, int modality) =>
        string.IsNullOrWhiteSpace(modalities) ||
        modalities.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Contains(modality.ToString());
}
