using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MrVae.Security;
using Orleans.Configuration;
using Orleans.Connections.Security;

namespace MrVae.Silo;

/// <summary>
/// A silo's TLS files (configuration section "MrVae:Tls"): its certificate and key from `mrvae certs issue --role
/// silo` and the cluster's CA certificate. All three or none; with none the silo runs plain TCP as before.
/// </summary>
public sealed class TlsSettings
{
    public const string Section = "MrVae:Tls";
    /// <summary>PEM certificate (cert.pem).</summary>
    public string Certificate { get; set; } = "";
    /// <summary>PEM private key (key.pem).</summary>
    public string Key { get; set; } = "";
    /// <summary>PEM certificate of the cluster's CA (ca.pem): the only root a peer's chain may end in.</summary>
    public string Ca { get; set; } = "";

    public bool Enabled => !string.IsNullOrWhiteSpace(Certificate) || !string.IsNullOrWhiteSpace(Key) || !string.IsNullOrWhiteSpace(Ca);
}

/// <summary>Checks <see cref="TlsSettings"/>: all three files or none, each readable, the certificate a silo's from that CA.</summary>
public sealed class TlsSettingsValidator : IValidateOptions<TlsSettings>
{
    public ValidateOptionsResult Validate(string? name, TlsSettings o)
    {
        if (!o.Enabled) return ValidateOptionsResult.Success;
        const string s = TlsSettings.Section;
        var failures = new List<string>();
        foreach (var (key, value) in new[] { ("Certificate", o.Certificate), ("Key", o.Key), ("Ca", o.Ca) })
            if (string.IsNullOrWhiteSpace(value)) failures.Add($"{s}:{key} is missing (TLS needs {s}:Certificate, {s}:Key and {s}:Ca; see docs/security.md)");
            else if (!File.Exists(value)) failures.Add($"{s}:{key}: {value} not found");
        if (failures.Count > 0) return ValidateOptionsResult.Fail(failures);
        try
        {
            using var certificate = ClusterCertificates.LoadWithKey(o.Certificate, o.Key);
            using var ca = ClusterCertificates.LoadCertificate(o.Ca);
            if (new PeerCheck(ca).Refusal(certificate, NodeRole.Silo) is { } refusal)
                failures.Add($"{s}:Certificate: {refusal} (issue one with `mrvae certs issue --role silo` from the CA in {s}:Ca)");
        }
        catch (MrVae.Data.UserInputException e) { failures.Add($"{s}: {e.Message}"); }
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}

/// <summary>
/// Mutual TLS through Orleans' own middleware (Microsoft.Orleans.Connections.Security), with one policy per link:
/// the silo port takes only silo certificates, the gateway only operator certificates (clients: start, stop,
/// attach, detach, status), and a silo dialling another silo accepts only a silo certificate. Every chain must end
/// in the cluster's CA. A refused connection is logged once, with the peer's address and the reason.
/// </summary>
public static partial class TlsHosting
{
    /// <summary>The validated settings, bound as typed options (checked again at start); null when TLS is off.</summary>
    public static TlsSettings? AddTlsSettings(IServiceCollection services, IConfigurationSection section)
    {
        services.AddOptions<TlsSettings>().Bind(section).ValidateOnStart();
        services.AddSingleton<IValidateOptions<TlsSettings>, TlsSettingsValidator>();
        var settings = section.Get<TlsSettings>() ?? new TlsSettings();
        var result = new TlsSettingsValidator().Validate(Microsoft.Extensions.Options.Options.DefaultName, settings);
        if (result.Failed) throw new OptionsValidationException(Microsoft.Extensions.Options.Options.DefaultName, typeof(TlsSettings), result.Failures);
        return settings.Enabled ? settings : null;
    }

    /// <summary>Turns on mutual TLS for the silo's three kinds of connection; returns the identity its certificate states.</summary>
    public static NodeIdentity UseMrVaeTls(this ISiloBuilder silo, TlsSettings settings)
    {
        var certificate = ClusterCertificates.LoadWithKey(settings.Certificate, settings.Key);
        var check = new PeerCheck(ClusterCertificates.LoadCertificate(settings.Ca));
        // Orleans' middleware logs each failed handshake as a warning with a stack trace; LogRefusals says it in one line.
        silo.Services.AddLogging(b => b.AddFilter("Orleans.Connections.Security", LogLevel.Error));
        silo.Configure<SiloConnectionOptions>(o =>
        {
            o.ConfigureSiloInboundConnection(b => b.LogRefusals("silo port").UseServerTls(LinkOptions(certificate, check, NodeRole.Silo)));
            o.ConfigureGatewayInboundConnection(b => b.LogRefusals("gateway").UseServerTls(LinkOptions(certificate, check, NodeRole.Operator)));
            o.ConfigureSiloOutboundConnection(b => b.LogRefusals("outbound silo link", inbound: false).UseClientTls(LinkOptions(certificate, check, NodeRole.Silo)));
        });
        return ClusterCertificates.IdentityOf(certificate)!;
    }

    /// <summary>
    /// Mutual TLS for a client (the console): an operator certificate from <paramref name="directory"/>; it accepts
    /// only silos of the same CA. <paramref name="onRefusal"/> hears why it refused a gateway.
    /// </summary>
    public static IClientBuilder UseMrVaeTls(this IClientBuilder client, string directory, Action<string>? onRefusal = null)
    {
        var certificate = ClusterCertificates.LoadWithKey(Path.Combine(directory, ClusterCertificates.CertificateFile), Path.Combine(directory, ClusterCertificates.KeyFile));
        var check = new PeerCheck(ClusterCertificates.LoadCertificate(Path.Combine(directory, ClusterCertificates.CaCertificateFile)));
        client.Configure<ClientConnectionOptions>(o => o.ConfigureConnection(b => b.UseClientTls(LinkOptions(certificate, check, NodeRole.Silo, onRefusal))));
        return client;
    }

    /// <summary>TLS options for one link: our certificate, a peer certificate required, and the peer check for <paramref name="peerRole"/>.</summary>
    static TlsOptions LinkOptions(X509Certificate2 certificate, PeerCheck check, NodeRole peerRole, Action<string>? onRefusal = null)
    {
        var options = new TlsOptions
        {
            LocalCertificate = certificate,
            RemoteCertificateMode = RemoteCertificateMode.RequireCertificate,
            ClientCertificateMode = RemoteCertificateMode.RequireCertificate,
            HandshakeTimeout = HandshakeTimeout,
        };
        // The chain SslStream built against the system's roots is ignored: PeerCheck rebuilds it on the cluster CA alone.
        options.RemoteCertificateValidation = (peer, _, _) =>
        {
            string? refusal = check.Refusal(peer, peerRole);
            if (refusal is not null && Verdict.Value is { } verdict) verdict.Reason = refusal;
            if (refusal is not null) onRefusal?.Invoke(refusal);
            return refusal is null;
        };
        return options;
    }

    /// <summary>How long a peer has to complete its handshake (a loaded machine may take seconds).</summary>
    static readonly TimeSpan HandshakeTimeout = TimeSpan.FromSeconds(30);

    /// <summary>The refusal reason of the handshake in flight, written by the peer check and read by <see cref="LogRefusals"/>.</summary>
    sealed class HandshakeVerdict { public string? Reason; }
    static readonly AsyncLocal<HandshakeVerdict?> Verdict = new();

    /// <summary>
    /// Wraps the TLS middleware: a connection that ends without a verified peer certificate was refused at the
    /// handshake; one line names the peer and why (a plain-TCP client, no certificate, or what the peer check said).
    /// A connection that closes after a good handshake has its certificate and is not logged. On inbound links
    /// (<paramref name="inbound"/>) a TCP probe that connects and closes without a byte (Kubernetes' probes, the
    /// console's reachability check) is not a refusal and is not logged.
    /// </summary>
    static IConnectionBuilder LogRefusals(this IConnectionBuilder builder, string link, bool inbound = true)
    {
        var logger = builder.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger("MrVae.Silo.Tls");
        return builder.Use(next => async context =>
        {
            string peer = context.RemoteEndPoint?.ToString() ?? "unknown peer";
            if (inbound)
            {
                // Peek: wait for the first bytes (the ClientHello) without consuming them.
                using var wait = new CancellationTokenSource(HandshakeTimeout);
                System.IO.Pipelines.ReadResult first;
                try { first = await context.Transport.Input.ReadAsync(wait.Token); }
                catch (OperationCanceledException)
                {
                    LogRefused(logger, peer, link, $"no TLS handshake within {HandshakeTimeout.TotalSeconds:0} s");
                    context.Abort();
                    return;
                }
                catch (IOException) { return; }
                bool probe = first.Buffer.IsEmpty && first.IsCompleted;
                context.Transport.Input.AdvanceTo(first.Buffer.Start);
                if (probe) return;
            }
            var verdict = new HandshakeVerdict();
            Verdict.Value = verdict;
            await next(context);
            if (context.Features.Get<ITlsConnectionFeature>()?.RemoteCertificate is null)
                LogRefused(logger, peer, link, verdict.Reason ?? (inbound
                    ? "no client certificate (not TLS, or TLS without a certificate)"
                    : "handshake failed (the peer refused this silo's certificate, or is not TLS)"));
        });
    }

    [LoggerMessage(EventId = 2101, Level = LogLevel.Warning, Message = "TLS: refused {Peer} on the {Link}: {Reason}")]
    static partial void LogRefused(ILogger logger, string peer, string link, string reason);
}
