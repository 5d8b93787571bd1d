namespace MrVae.Security;

/// <summary>What a node certificate allows: a silo joins the cluster (and serves its modalities), an operator controls runs.</summary>
public enum NodeRole { Silo, Operator }

/// <summary>
/// A node's identity as its certificate states it: its name (the subject's CN), its role and, for a silo, the
/// modalities whose grains it may host (empty: none; it can still host coordinators).
/// </summary>
public sealed record NodeIdentity(string Name, NodeRole Role, IReadOnlyList<int> Modalities)
{
    public string RoleName => Role.ToString().ToLowerInvariant();

    public override string ToString() => Role == NodeRole.Silo
        ? $"{Name} (silo, modalities {(Modalities.Count == 0 ? "none" : string.Join(",", Modalities))})"
        : $"{Name} ({RoleName})";
}
