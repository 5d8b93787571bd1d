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
    /// <summary>libtorch intra-op threads (0: libtorch's default).</summary>
    public int TorchThreads { get; set; }

    /// <summary>Silo metadata key carrying <see cref="Modalities"/> to the placement director on every silo.</summary>
    public const string ModalitiesMetadataKey = "mrvae.modalities";

    public static bool Serves(string? modalities, int modality) =>
        string.IsNullOrWhiteSpace(modalities) ||
        modalities.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Contains(modality.ToString());
}
