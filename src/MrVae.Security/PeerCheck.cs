using System.Security.Cryptography.X509Certificates;

namespace MrVae.Security;

/// <summary>
/// The test every TLS link of a cluster applies to its peer: a certificate chaining to this cluster's CA only (the
/// system's trusted roots count for nothing) and carrying the role that link needs. Host names are not checked:
/// a node is who its certificate says, wherever it runs.
/// </summary>
public sealed class PeerCheck(X509Certificate2 authority, TimeProvider? clock = null)
{
    readonly TimeProvider clock = clock ?? TimeProvider.System;

    public X509Certificate2 Authority => authority;

    /// <summary>Null when <paramref name="peer"/> may take part with <paramref name="required"/>; else the reason it may not.</summary>
    public string? Refusal(X509Certificate2? peer, NodeRole required)
    {
        if (peer is null) return "no certificate";
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(authority);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationTime = clock.GetUtcNow().UtcDateTime;
        if (!chain.Build(peer))
        {
            var problems = chain.ChainStatus.Select(s => s.Status).Where(s => s != X509ChainStatusFlags.NoError).ToArray();
            string why = problems.Any(p => p is X509ChainStatusFlags.PartialChain or X509ChainStatusFlags.UntrustedRoot)
                ? $"not issued by this cluster's CA (its issuer, {peer.Issuer}, is not the CA key {authority.Thumbprint[..12]}… this node trusts)"
                : string.Join(", ", problems);
            return $"certificate {peer.Subject}: {why}";
        }
        var identity = ClusterCertificates.IdentityOf(peer);
        if (identity is null) return $"certificate {peer.Subject}: names no mrvae role";
        if (identity.Role != required) return $"certificate {identity}: a {identity.RoleName} certificate where only {(required == NodeRole.Silo ? "silo" : "operator")} certificates are let in";
        return null;
    }
}
