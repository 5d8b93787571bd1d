using System.Formats.Asn1;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using MrVae.Data;

namespace MrVae.Security;

/// <summary>
/// The cluster's certificate authority and the node certificates it issues (`mrvae certs init|issue`). A node
/// certificate names its role and modalities as SAN URIs (urn:mrvae:role:silo, urn:mrvae:modalities:0,1), so any
/// TLS peer can read them from the handshake. Keys are ECDSA P-256, written as PKCS#8 PEM with mode 0600.
/// </summary>
public static class ClusterCertificates
{
    /// <summary>Files of a CA directory (`certs init --out DIR`).</summary>
    public const string CaCertificateFile = "ca.pem", CaKeyFile = "ca-key.pem";
    /// <summary>Files of a node directory (`certs issue --out DIR`): its certificate, its key and the cluster's CA certificate.</summary>
    public const string CertificateFile = "cert.pem", KeyFile = "key.pem";

    const string RolePrefix = "urn:mrvae:role:", ModalitiesPrefix = "urn:mrvae:modalities:";
    static readonly Oid ServerAuth = new("1.3.6.1.5.5.7.3.1"), ClientAuth = new("1.3.6.1.5.5.7.3.2");

    /// <summary>A self-signed CA certificate with its private key.</summary>
    public static X509Certificate2 CreateAuthority(string name, TimeSpan lifetime)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(new X500DistinguishedName($"CN={Escape(name)}"), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        var now = DateTimeOffset.UtcNow;
        return request.CreateSelfSigned(now.AddMinutes(-5), now + lifetime);
    }

    /// <summary>A node certificate for <paramref name="identity"/>, signed by <paramref name="authority"/> (which must hold its key), with its private key.</summary>
    public static X509Certificate2 Issue(X509Certificate2 authority, NodeIdentity identity, TimeSpan lifetime)
    {
        if (!authority.HasPrivateKey) throw new UserInputException("the CA certificate has no private key: give the directory `mrvae certs init` wrote");
        if (identity.Role == NodeRole.Operator && identity.Modalities.Count > 0)
            throw new UserInputException("--modalities: only a silo certificate names modalities");
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(new X500DistinguishedName($"CN={Escape(identity.Name)}"), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyAgreement, true));
        // A silo is a TLS server (its silo and gateway ports) and a client (to other silos); an operator only a client.
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(identity.Role == NodeRole.Silo ? [ServerAuth, ClientAuth] : [ClientAuth], false));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(authority, true, false));
        var san = new SubjectAlternativeNameBuilder();
        san.AddUri(new Uri(RolePrefix + identity.RoleName));
        if (identity.Role == NodeRole.Silo) san.AddUri(new Uri(ModalitiesPrefix + (identity.Modalities.Count == 0 ? "none" : string.Join(",", identity.Modalities))));
        request.CertificateExtensions.Add(san.Build());
        var now = DateTimeOffset.UtcNow;
        var notAfter = now + lifetime < authority.NotAfter ? now + lifetime : new DateTimeOffset(authority.NotAfter.ToUniversalTime());
        var serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7f;
        using var issued = request.Create(authority, now.AddMinutes(-5), notAfter, serial);
        return issued.CopyWithPrivateKey(key);
    }

    /// <summary>The identity a certificate states; null when it is not a node certificate of ours (no role URI, or a malformed one).</summary>
    public static NodeIdentity? IdentityOf(X509Certificate2 certificate)
    {
        var san = certificate.Extensions.OfType<X509SubjectAlternativeNameExtension>().FirstOrDefault();
        if (san is null) return null;
        NodeRole? role = null;
        int[] modalities = [];
        foreach (var text in Uris(san))
        {
            if (text.StartsWith(RolePrefix, StringComparison.Ordinal))
                role = text[RolePrefix.Length..] switch { "silo" => NodeRole.Silo, "operator" => NodeRole.Operator, _ => null };
            else if (text.StartsWith(ModalitiesPrefix, StringComparison.Ordinal))
            {
                string list = text[ModalitiesPrefix.Length..];
                if (list != "none" && (modalities = ParseModalities(list) ?? []).Length == 0) return null;
            }
        }
        return role is null ? null : new NodeIdentity(certificate.GetNameInfo(X509NameType.SimpleName, false), role.Value, modalities);
    }

    /// <summary>The URIs among a SAN extension's names (GeneralName [6] IA5String); .NET enumerates only DNS names and addresses.</summary>
    static IEnumerable<string> Uris(X509Extension san)
    {
        var uris = new List<string>();
        try
        {
            var reader = new AsnReader(san.RawData, AsnEncodingRules.DER).ReadSequence();
            var uriTag = new Asn1Tag(TagClass.ContextSpecific, 6);
            while (reader.HasData)
            {
                if (reader.PeekTag().HasSameClassAndValue(uriTag)) uris.Add(reader.ReadCharacterString(UniversalTagNumber.IA5String, uriTag));
                else reader.ReadEncodedValue();
            }
        }
        catch (AsnContentException) { return []; }
        return uris;
    }

    /// <summary>"0,2" → [0, 2]; null when an entry is not a non-negative integer or repeats, or the list is empty.</summary>
    public static int[]? ParseModalities(string text)
    {
        var list = new List<int>();
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(part, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int j) || list.Contains(j)) return null;
            list.Add(j);
        }
        return list.Count == 0 ? null : list.ToArray();
    }

    /// <summary>`certs init`: writes a new CA into <paramref name="directory"/>; refuses to replace an existing CA key.</summary>
    public static X509Certificate2 InitAuthority(string directory, string name, TimeSpan lifetime)
    {
        string keyPath = Path.Combine(directory, CaKeyFile);
        if (File.Exists(keyPath)) throw new UserInputException($"{keyPath} exists: a CA is already there (remove the directory to start a new cluster CA, which every node certificate must then be issued from again)");
        Directory.CreateDirectory(directory);
        var authority = CreateAuthority(name, lifetime);
        WriteKey(keyPath, authority);
        File.WriteAllText(Path.Combine(directory, CaCertificateFile), authority.ExportCertificatePem() + "\n");
        return authority;
    }

    /// <summary>`certs issue`: writes cert.pem, key.pem (0600) and the CA's ca.pem into <paramref name="directory"/>.</summary>
    public static X509Certificate2 IssueTo(string authorityDirectory, NodeIdentity identity, string directory, TimeSpan lifetime)
    {
        using var authority = LoadAuthority(authorityDirectory);
        Directory.CreateDirectory(directory);
        var issued = Issue(authority, identity, lifetime);
        WriteKey(Path.Combine(directory, KeyFile), issued);
        File.WriteAllText(Path.Combine(directory, CertificateFile), issued.ExportCertificatePem() + "\n");
        File.WriteAllText(Path.Combine(directory, CaCertificateFile), authority.ExportCertificatePem() + "\n");
        return issued;
    }

    /// <summary>The CA of a `certs init` directory, with its key.</summary>
    public static X509Certificate2 LoadAuthority(string directory)
    {
        string cert = Path.Combine(directory, CaCertificateFile), key = Path.Combine(directory, CaKeyFile);
        if (!File.Exists(cert) || !File.Exists(key)) throw new UserInputException($"--ca {directory}: no {CaCertificateFile} and {CaKeyFile} there (make them with `mrvae certs init --out {directory}`)");
        return LoadWithKey(cert, key);
    }

    /// <summary>A certificate and its private key from PEM files; a missing or unreadable file is the user's to fix, named in the message.</summary>
    public static X509Certificate2 LoadWithKey(string certificatePath, string keyPath)
    {
        foreach (var path in new[] { certificatePath, keyPath })
            if (!File.Exists(path)) throw new UserInputException($"{path} not found");
        try { return X509Certificate2.CreateFromPemFile(certificatePath, keyPath); }
        catch (CryptographicException e) { throw new UserInputException($"{certificatePath} with key {keyPath}: not a PEM certificate and its private key ({e.Message})"); }
    }

    /// <summary>A certificate (no key) from a PEM file.</summary>
    public static X509Certificate2 LoadCertificate(string path)
    {
        if (!File.Exists(path)) throw new UserInputException($"{path} not found");
        try { return X509Certificate2.CreateFromPem(File.ReadAllText(path)); }
        catch (CryptographicException e) { throw new UserInputException($"{path}: not a PEM certificate ({e.Message})"); }
    }

    /// <summary>Writes the private key as PKCS#8 PEM into a file created with owner-only permissions (0600) from the start.</summary>
    static void WriteKey(string path, X509Certificate2 certificate)
    {
        using var key = certificate.GetECDsaPrivateKey() ?? throw new InvalidOperationException("an ECDSA key was expected");
        if (File.Exists(path)) File.Delete(path);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using var stream = new FileStream(path, options);
        using var writer = new StreamWriter(stream);
        writer.Write(key.ExportPkcs8PrivateKeyPem());
        writer.Write('\n');
    }

    static string Escape(string name) => name.Replace("\\", "\\\\").Replace(",", "\\,").Replace("=", "\\=").Replace("+", "\\+").Replace("\"", "\\\"");
}
