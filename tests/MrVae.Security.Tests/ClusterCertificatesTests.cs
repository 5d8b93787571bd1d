using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Time.Testing;
using MrVae.Data;

namespace MrVae.Security.Tests;

/// <summary>`mrvae certs`: a CA, node certificates that chain to it and state role and modalities, and the peer check.</summary>
public sealed class ClusterCertificatesTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-certs-" + Guid.NewGuid().ToString("N"));
    static readonly TimeSpan Year = TimeSpan.FromDays(365);

    public void Dispose() { if (Directory.Exists(root)) Directory.Delete(root, recursive: true); }

    [Fact]
    public void AnIssuedCertificateChainsToItsCaAndStatesItsRoleAndModalities()
    {
        using var ca = ClusterCertificates.CreateAuthority("ca", Year);
        using var silo = ClusterCertificates.Issue(ca, new NodeIdentity("silo-a", NodeRole.Silo, [3, 0]), Year);
        using var op = ClusterCertificates.Issue(ca, new NodeIdentity("alice", NodeRole.Operator, []), Year);
        using var bare = ClusterCertificates.Issue(ca, new NodeIdentity("coordinators", NodeRole.Silo, []), Year);

        var identity = ClusterCertificates.IdentityOf(silo)!;
        Assert.Equal(("silo-a", NodeRole.Silo), (identity.Name, identity.Role));
        Assert.Equal([3, 0], identity.Modalities);
        Assert.Equal(new NodeIdentity("alice", NodeRole.Operator, []).ToString(), ClusterCertificates.IdentityOf(op)!.ToString());
        Assert.Empty(ClusterCertificates.IdentityOf(bare)!.Modalities);
        Assert.True(silo.HasPrivateKey);

        var check = new PeerCheck(ca);
        Assert.Null(check.Refusal(silo, NodeRole.Silo));
        Assert.Null(check.Refusal(op, NodeRole.Operator));
        // The roles are not interchangeable.
        Assert.Contains("a silo certificate where only operator certificates are let in", check.Refusal(silo, NodeRole.Operator));
        Assert.Contains("an operator certificate", "an " + check.Refusal(op, NodeRole.Silo)!.Split(": a ")[1]);
        Assert.Equal("no certificate", check.Refusal(null, NodeRole.Silo));
    }

    [Fact]
    public void ACertificateFromAnotherCaIsRefusedEvenWithTheSameName()
    {
        using var ca = ClusterCertificates.CreateAuthority("cluster CA", Year);
        using var foreign = ClusterCertificates.CreateAuthority("cluster CA", Year);
        using var intruder = ClusterCertificates.Issue(foreign, new NodeIdentity("mallory", NodeRole.Operator, []), Year);
        Assert.Contains("not issued by this cluster's CA", new PeerCheck(ca).Refusal(intruder, NodeRole.Operator));
        Assert.Null(new PeerCheck(foreign).Refusal(intruder, NodeRole.Operator));
        // A self-signed certificate claiming to be the CA's child is no better.
        using var selfSigned = ClusterCertificates.CreateAuthority("mallory", Year);
        Assert.NotNull(new PeerCheck(ca).Refusal(selfSigned, NodeRole.Operator));
    }

    [Fact]
    public void AnExpiredCertificateIsRefused()
    {
        using var ca = ClusterCertificates.CreateAuthority("ca", TimeSpan.FromDays(3650));
        using var node = ClusterCertificates.Issue(ca, new NodeIdentity("silo", NodeRole.Silo, [1]), TimeSpan.FromDays(2));
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        Assert.Null(new PeerCheck(ca, clock).Refusal(node, NodeRole.Silo));
        clock.Advance(TimeSpan.FromDays(3));
        Assert.NotNull(new PeerCheck(ca, clock).Refusal(node, NodeRole.Silo));
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void FilesRoundTripAndKeysAreOwnerOnly()
    {
        string caDir = Path.Combine(root, "ca"), nodeDir = Path.Combine(root, "silo-b");
        ClusterCertificates.InitAuthority(caDir, "ca", Year).Dispose();
        ClusterCertificates.IssueTo(caDir, new NodeIdentity("silo-b", NodeRole.Silo, [2, 4]), nodeDir, Year).Dispose();

        const UnixFileMode ownerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        Assert.Equal(ownerOnly, File.GetUnixFileMode(Path.Combine(caDir, ClusterCertificates.CaKeyFile)));
        Assert.Equal(ownerOnly, File.GetUnixFileMode(Path.Combine(nodeDir, ClusterCertificates.KeyFile)));
        Assert.NotEqual(0, (int)(File.GetUnixFileMode(Path.Combine(nodeDir, ClusterCertificates.CertificateFile)) & UnixFileMode.OtherRead));

        using var node = ClusterCertificates.LoadWithKey(Path.Combine(nodeDir, ClusterCertificates.CertificateFile), Path.Combine(nodeDir, ClusterCertificates.KeyFile));
        using var ca = ClusterCertificates.LoadCertificate(Path.Combine(nodeDir, ClusterCertificates.CaCertificateFile));
        Assert.True(node.HasPrivateKey);
        Assert.Equal([2, 4], ClusterCertificates.IdentityOf(node)!.Modalities);
        Assert.Null(new PeerCheck(ca).Refusal(node, NodeRole.Silo));
        // The key file holds a key, the certificate file none.
        Assert.Contains("PRIVATE KEY", File.ReadAllText(Path.Combine(nodeDir, ClusterCertificates.KeyFile)));
        Assert.DoesNotContain("PRIVATE KEY", File.ReadAllText(Path.Combine(nodeDir, ClusterCertificates.CertificateFile)));
    }

    [Fact]
    public void MistakesAreTheUsersToFix()
    {
        string caDir = Path.Combine(root, "ca");
        ClusterCertificates.InitAuthority(caDir, "ca", Year).Dispose();
        Assert.Contains("a CA is already there", Assert.Throws<UserInputException>(() => ClusterCertificates.InitAuthority(caDir, "ca", Year)).Message);
        Assert.Contains("mrvae certs init", Assert.Throws<UserInputException>(() =>
            ClusterCertificates.IssueTo(Path.Combine(root, "nowhere"), new NodeIdentity("x", NodeRole.Operator, []), Path.Combine(root, "x"), Year)).Message);
        Assert.Contains("only a silo certificate names modalities", Assert.Throws<UserInputException>(() =>
            ClusterCertificates.IssueTo(caDir, new NodeIdentity("x", NodeRole.Operator, [1]), Path.Combine(root, "x"), Year)).Message);
        Assert.Null(ClusterCertificates.ParseModalities("1,1"));
        Assert.Null(ClusterCertificates.ParseModalities("a"));
        Assert.Null(ClusterCertificates.ParseModalities(""));
    }
}
