using Microsoft.Extensions.Configuration;
using MrVae.Silo;

namespace MrVae.Grains.Tests;

/// <summary>The Redis options every silo and client uses: long timeouts for a loaded machine, the string's own settings kept.</summary>
public class RedisConnectionTests
{
    [Fact]
    public void APlainConnectionStringGetsTheLongTimeouts()
    {
        var o = RedisConnection.Options("127.0.0.1:6379");
        Assert.Equal(30_000, o.SyncTimeout);
        Assert.Equal(30_000, o.AsyncTimeout);
        Assert.Equal(15_000, o.ConnectTimeout);
        Assert.False(o.AbortOnConnectFail);
        Assert.Equal("127.0.0.1:6379", Assert.Single(o.EndPoints).ToString());
    }

    [Fact]
    public void SettingsNamedInTheStringWin()
    {
        var o = RedisConnection.Options("redis.local:6380, SyncTimeout=2000,asyncTimeout=3000,connectTimeout=4000,abortConnect=true,password=x");
        Assert.Equal(2000, o.SyncTimeout);
        Assert.Equal(3000, o.AsyncTimeout);
        Assert.Equal(4000, o.ConnectTimeout);
        Assert.True(o.AbortOnConnectFail);
        Assert.Equal("x", o.Password);
    }
}

/// <summary>Redis authentication: from a file or the environment, applied to the options, never printed.</summary>
public sealed class RedisAuthTests : IDisposable
{
    readonly string file = Path.Combine(Path.GetTempPath(), "mrvae-redis-pw-" + Guid.NewGuid().ToString("N"));

    public void Dispose() => File.Delete(file);

    static Microsoft.Extensions.Configuration.IConfiguration Config(params (string, string)[] pairs) =>
        new Microsoft.Extensions.Configuration.ConfigurationBuilder().AddInMemoryCollection(pairs.Select(p => new KeyValuePair<string, string?>(p.Item1, p.Item2))).Build();

    [Fact]
    public void APasswordFileIsReadAndApplied()
    {
        File.WriteAllText(file, "hunter2\n");
        var auth = RedisAuth.From(Config((RedisAuth.PasswordFileKey, file), (RedisAuth.UserKey, "mrvae")))!;
        Assert.Equal(new RedisAuth("mrvae", "hunter2"), auth);
        Assert.DoesNotContain("hunter2", auth.ToString());
        var o = RedisConnection.Options("127.0.0.1:6379", auth);
        Assert.Equal("hunter2", o.Password);
        Assert.Equal("mrvae", o.User);
        Assert.Null(RedisConnection.Options("127.0.0.1:6379").Password);
    }

    [Fact]
    public void AMissingFileOrAUserWithoutPasswordNamesTheKey()
    {
        Assert.Contains(RedisAuth.PasswordFileKey, Assert.Throws<MrVae.Data.UserInputException>(() => RedisAuth.From(Config((RedisAuth.PasswordFileKey, file)))).Message);
        File.WriteAllText(file, "\n");
        Assert.Contains("is empty", Assert.Throws<MrVae.Data.UserInputException>(() => RedisAuth.From(Config((RedisAuth.PasswordFileKey, file)))).Message);
        if (Environment.GetEnvironmentVariable(RedisAuth.PasswordVariable) is null)
        {
            Assert.Null(RedisAuth.From(Config()));
            Assert.Contains(RedisAuth.UserKey, Assert.Throws<MrVae.Data.UserInputException>(() => RedisAuth.From(Config((RedisAuth.UserKey, "u")))).Message);
        }
    }
}
