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
