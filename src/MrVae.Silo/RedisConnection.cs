using StackExchange.Redis;

namespace MrVae.Silo;

/// <summary>
/// The one place where a Redis connection string becomes StackExchange.Redis options, for clustering (silos and
/// clients), the grain directory and checkpoint storage. Defaults are for a loaded machine: every activation is a
/// directory round trip, and the library's 5 s timeouts fail grain activations when the CPUs are starved
/// (docs/failure-semantics.md). Settings named in the connection string win.
/// </summary>
public static class RedisConnection
{
    /// <summary>Sync and async operation timeout unless the connection string names syncTimeout / asyncTimeout.</summary>
    public static readonly TimeSpan OperationTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Connect timeout unless the connection string names connectTimeout.</summary>
    public static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(15);

    public static ConfigurationOptions Options(string connection)
    {
        var options = ConfigurationOptions.Parse(connection);
        if (!Names(connection, "syncTimeout")) options.SyncTimeout = (int)OperationTimeout.TotalMilliseconds;
        if (!Names(connection, "asyncTimeout")) options.AsyncTimeout = (int)OperationTimeout.TotalMilliseconds;
        if (!Names(connection, "connectTimeout")) options.ConnectTimeout = (int)ConnectTimeout.TotalMilliseconds;
        // Keep retrying a Redis that is slow to answer at start-up instead of failing the silo on the first try.
        if (!Names(connection, "abortConnect")) options.AbortOnConnectFail = false;
        return options;
    }

    static bool Names(string connection, string key) =>
        connection.Split(',').Any(part => part.Trim().StartsWith(key + "=", StringComparison.OrdinalIgnoreCase));
}
