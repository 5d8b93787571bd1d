using System.CommandLine;
using System.Net.Sockets;
using Microsoft.Extensions.Hosting;
using MrVae.Client;
using MrVae.Data;

namespace MrVae.Cli;

/// <summary>Connecting the console to a running cluster, failing in seconds with one line when nothing answers.</summary>
public static class CliCluster
{
    /// <summary>
    /// Checks that the cluster's entry point (the gateway of HOST:PORT, or the Redis of redis://HOST:PORT) accepts
    /// TCP connections, then connects a client. Without the check an unreachable gateway costs the client's whole
    /// connection timeout.
    /// </summary>
    public static async Task<IHost> Connect(string connection, string? tlsDirectory = null, CancellationToken cancel = default)
    {
        if (Endpoint(connection) is var (host, port))
        {
            using var tcp = new TcpClient();
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancel);
            timeout.CancelAfter(TimeSpan.FromSeconds(5));
            try { await tcp.ConnectAsync(host, port, timeout.Token); }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                string why = e is SocketException s ? s.SocketErrorCode switch
                {
                    SocketError.ConnectionRefused => "connection refused",
                    SocketError.HostNotFound or SocketError.NoData => "unknown host",
                    _ => s.Message,
                } : "no answer in 5 s";
                string what = connection.StartsWith("redis://", StringComparison.OrdinalIgnoreCase) ? "the cluster's Redis server" : "a silo's gateway";
                throw new UserInputException($"cannot reach the cluster at {connection}: nothing answers on {host}:{port}, where {what} should be ({why}); start silos first (deploy/local-cluster.sh or mrvae-silo) or check --cluster");
            }
        }
        return await ClusterTraining.ConnectClient(connection, tlsDirectory: tlsDirectory);
    }

    /// <summary>The environment variable that stands for `--tls DIR`.</summary>
    public const string TlsVariable = "MRVAE_TLS_DIR";

    /// <summary>The `--tls DIR` option of the commands that reach a cluster (default: $MRVAE_TLS_DIR).</summary>
    public static Option<string?> TlsOption() => new("--tls")
    {
        Description = $"mutual TLS with the operator certificate in DIR (cert.pem, key.pem, ca.pem from `mrvae certs issue --role operator`); default ${TlsVariable}",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable(TlsVariable) is { Length: > 0 } dir ? dir : null,
    };

    /// <summary>HOST and PORT of "HOST:PORT" or "redis://HOST:PORT"; null for anything richer (Redis options, several hosts).</summary>
    public static (string Host, int Port)? Endpoint(string connection)
    {
        string rest = connection.StartsWith("redis://", StringComparison.OrdinalIgnoreCase) ? connection["redis://".Length..] : connection;
        int colon = rest.LastIndexOf(':');
        if (colon <= 0 || rest.Contains(',') || !int.TryParse(rest[(colon + 1)..], out int port) || port is < 1 or > 65535) return null;
        return (rest[..colon], port);
    }
}
