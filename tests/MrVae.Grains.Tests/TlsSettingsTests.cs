using MrVae.Security;
using MrVae.Silo;

namespace MrVae.Grains.Tests;

/// <summary>The silo's MrVae:Tls settings are checked at start, and its certificate bounds the modalities it serves.</summary>
public sealed class TlsSettingsTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-tlsset-" + Guid.NewGuid().ToString("N"));

    public void Dispose() { if (Directory.Exists(root)) Directory.Delete(root, recursive: true); }

    [Fact]
    public void TheCertificateBoundsTheConfiguredModalities()
    {
        Check([0, 2], [0, 1], allowed: [0], refused: [2]);
        Check([0], [3, 4], allowed: [], refused: [0]);
        // "Any" in the configuration means whatever the certificate names.
        Check([], [3, 4], allowed: [3, 4], refused: []);
        Assert.False(MrVae.Grains.SiloSettings.Serves(MrVae.Grains.SiloSettings.NoModalities, 0));
        Assert.True(MrVae.Grains.SiloSettings.Serves("", 0));
    }

    static void Check(int[] configured, int[] certified, int[] allowed, int[] refused)
    {
        var (a, r) = SiloHosting.CertifiedModalities(configured, certified);
        Assert.Equal(allowed, a);
        Assert.Equal(refused, r);
    }

    [Fact]
    public void MissingOrWrongFilesAreRefusedWithTheKeysName()
    {
        var validator = new TlsSettingsValidator();
        Assert.True(validator.Validate(null, new TlsSettings()).Succeeded);
        var missing = validator.Validate(null, new TlsSettings { Certificate = "/nowhere/cert.pem" });
        Assert.Contains(missing.Failures!, f => f.StartsWith("MrVae:Tls:Key is missing"));
        Assert.Contains(missing.Failures!, f => f.StartsWith("MrVae:Tls:Certificate: /nowhere/cert.pem not found"));

        var year = TimeSpan.FromDays(365);
        ClusterCertificates.InitAuthority(Path.Combine(root, "ca"), "ca", year).Dispose();
        ClusterCertificates.IssueTo(Path.Combine(root, "ca"), new NodeIdentity("op", NodeRole.Operator, []), Path.Combine(root, "op"), year).Dispose();
        ClusterCertificates.IssueTo(Path.Combine(root, "ca"), new NodeIdentity("s", NodeRole.Silo, [1]), Path.Combine(root, "s"), year).Dispose();
        TlsSettings In(string dir) => new() { Certificate = Path.Combine(root, dir, "cert.pem"), Key = Path.Combine(root, dir, "key.pem"), Ca = Path.Combine(root, dir, "ca.pem") };
        Assert.True(validator.Validate(null, In("s")).Succeeded);
        // An operator's certificate cannot run a silo.
        Assert.Contains(validator.Validate(null, In("op")).Failures!, f => f.StartsWith("MrVae:Tls:Certificate:") && f.Contains("operator"));
    }
}
