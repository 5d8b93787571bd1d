using Microsoft.Extensions.Configuration;
using MrVae.Data;
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

    public static ConfigurationOptions Options(string connection, RedisAuth? auth = null)
    {
        var options = ConfigurationOptions.Parse(connection);
        if (auth is not null)
        {
            options.Password = auth.Password;
            if (auth.User is not null) options.User = auth.User;
        }
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

/// <summary>
/// Redis authentication (requirepass, or an ACL user with its password) for every Redis connection of a process.
/// The password comes from a file (MrVae:Redis:PasswordFile, e.g. a mounted Secret) or the environment
/// (MRVAE_REDIS_PASSWORD, or MRVAE_REDIS_PASSWORD_FILE naming a file), never from a command-line argument.
/// </summary>
public sealed record RedisAuth(string? User, string Password)
{
    public const string PasswordFileKey = "MrVae:Redis:PasswordFile", UserKey = "MrVae:Redis:User";
    public const string PasswordVariable = "MRVAE_REDIS_PASSWORD", PasswordFileVariable = "MRVAE_REDIS_PASSWORD_FILE";

    /// <summary>The authentication configured, or null for none. A named file that is missing or empty is the user's mistake.</summary>
    public static RedisAuth? From(IConfiguration configuration)
    {
        string? user = configuration[UserKey] is { Length: > 0 } u ? u : null;
        string? password = null;
        foreach (var (name, file) in new[] { (PasswordFileKey, configuration[PasswordFileKey]), (PasswordFileVariable, Environment.GetEnvironmentVariable(PasswordFileVariable)) })
        {
            if (string.IsNullOrWhiteSpace(file)) continue;
            password = SecretFile.Read(file, name, "the Redis password");
            break;
        }
        password ??= Environment.GetEnvironmentVariable(PasswordVariable) is { Length: > 0 } p ? p : null;
        if (password is null)
            return user is null ? null : throw new UserInputException($"{UserKey} '{user}' is set but no password: set {PasswordFileKey} or {PasswordVariable}");
        return new RedisAuth(user, password);
    }

    /// <summary>Never the password itself.</summary>
    public override string ToString() => User is null ? "password" : $"user {User} with password";
}
