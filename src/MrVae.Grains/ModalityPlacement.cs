using Orleans.Placement;
using Orleans.Runtime;
using Orleans.Runtime.MembershipService.SiloMetadata;
using Orleans.Runtime.Placement;

namespace MrVae.Grains;

/// <summary>
/// Places a modality grain on a silo that declares that modality in its metadata (where its data lives); when the
/// activating call carries a silo role (<see cref="ModalityPlacementDirector.RoleRequestKey"/>, from `attach --silo`),
/// only on a silo with that role.
/// </summary>
[GenerateSerializer, Immutable, SuppressReferenceTracking]
public sealed class ModalityPlacementStrategy : PlacementStrategy;

[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class ModalityPlacementAttribute() : PlacementAttribute(new ModalityPlacementStrategy());

public sealed class ModalityPlacementDirector(ISiloMetadataCache metadata) : IPlacementDirector
{
    /// <summary>Request-context key of the silo role a modality grain must be activated on.</summary>
    public const string RoleRequestKey = "mrvae.silo-role";

    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var compatible = context.GetCompatibleSilos(target).OrderBy(s => s.ToString()).ToArray();
        int modality = ModalityKey.Parse(target.GrainIdentity.Key.ToString()!).Modality;
        string? Declared(SiloAddress s) => metadata.GetSiloMetadata(s).Metadata.GetValueOrDefault(SiloSettings.ModalitiesMetadataKey);
        string? Role(SiloAddress s) => metadata.GetSiloMetadata(s).Metadata.GetValueOrDefault(SiloSettings.RoleMetadataKey);
        if (target.RequestContextData?.GetValueOrDefault(RoleRequestKey) is string role)
        {
            var serving = compatible.Where(s => SiloSettings.Serves(Declared(s), modality)).ToArray();
            var chosen = serving.Where(s => Role(s) == role).ToArray();
            if (chosen.Length == 0)
                throw serving.Length == 0 ? new NoServingSiloException(modality) : new OrleansException(
                    $"no silo with role '{role}' serves modality {modality} (silos serving it: {string.Join(", ", serving.Select(s => Role(s) ?? s.ToString()).Distinct())}); start one with MrVae:Silo:Role={role}, or pick one of those");
            return Task.FromResult(chosen[Math.Abs(target.GrainIdentity.GetUniformHashCode() % chosen.Length)]);
        }
        // Silos that name this modality first, then silos that serve any modality; never one that names only others.
        var candidates = compatible.Where(s => !string.IsNullOrWhiteSpace(Declared(s)) && SiloSettings.Serves(Declared(s), modality)).ToArray();
        if (candidates.Length == 0) candidates = compatible.Where(s => string.IsNullOrWhiteSpace(Declared(s))).ToArray();
        if (candidates.Length == 0)
            throw new NoServingSiloException(modality);
        return Task.FromResult(candidates[Math.Abs(target.GrainIdentity.GetUniformHashCode() % candidates.Length)]);
    }
}

/// <summary>No active silo declares the modality (none was started, or one is still joining the cluster).</summary>
[GenerateSerializer]
public sealed class NoServingSiloException : OrleansException
{
    public NoServingSiloException(int modality)
        : base($"no silo serves modality {modality}: start a silo with MrVae:Silo:Modalities including {modality}") { }
}

/// <summary>Modality grain keys: "RUN/modality-J".</summary>
public static class ModalityKey
{
    public static string For(string runId, int modality) => $"{runId}/modality-{modality}";

    public static (string RunId, int Modality) Parse(string key)
    {
        int slash = key.LastIndexOf("/modality-", StringComparison.Ordinal);
        if (slash < 0 || !int.TryParse(key.AsSpan(slash + "/modality-".Length), out int j))
            throw new ArgumentException($"'{key}' is not a modality grain key (RUN/modality-J)");
        return (key[..slash], j);
    }
}
