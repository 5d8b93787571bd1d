using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace MrVae.Grains.Tests;

/// <summary>Silo settings are typed options: checked when the silo is built and when it starts, each failure naming its key.</summary>
public sealed class SiloSettingsTests
{
    static IConfigurationSection Section(params (string Key, string Value)[] values) => new ConfigurationBuilder()
        .AddInMemoryCollection(values.ToDictionary(v => $"{SiloSettings.Section}:{v.Key}", v => (string?)v.Value)).Build().GetSection(SiloSettings.Section);

    [Fact]
    public void ModalitiesAreParsedOnceIntoIndices()
    {
        var settings = SiloSettings.AddSiloSettings(new ServiceCollection(), Section(("Modalities", " 0, 2,4"), ("Device", "cuda:1")));
        Assert.Equal([0, 2, 4], settings.ServedModalities);
        Assert.Same(settings.ServedModalities, settings.ServedModalities);
        Assert.Empty(SiloSettings.AddSiloSettings(new ServiceCollection(), Section()).ServedModalities);   // any
        Assert.True(SiloSettings.Serves("0,2", 2));
        Assert.False(SiloSettings.Serves("0,2", 1));
        Assert.True(SiloSettings.Serves("", 7));
    }

    [Theory]
    [InlineData("Modalities", "0,x", "MrVae:Silo:Modalities: '0,x'")]
    [InlineData("Modalities", "1,1", "MrVae:Silo:Modalities: '1,1'")]
    [InlineData("Device", "gpu", "MrVae:Silo:Device: 'gpu' is not cpu or cuda:N")]
    [InlineData("ConcurrentCompute", "0", "MrVae:Silo:ConcurrentCompute: 0 is below 1")]
    [InlineData("TorchThreads", "-1", "MrVae:Silo:TorchThreads")]
    public void AWrongValueFailsNamingItsKey(string key, string value, string expected)
    {
        var e = Assert.Throws<OptionsValidationException>(() => SiloSettings.AddSiloSettings(new ServiceCollection(), Section((key, value))));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public async Task AValueSetAfterBindingFailsWhenTheHostStarts()
    {
        var builder = Host.CreateApplicationBuilder();
        SiloSettings.AddSiloSettings(builder.Services, Section(("Modalities", "0")));
        builder.Services.Configure<SiloSettings>(o => o.Device = "tpu");
        using var host = builder.Build();
        var e = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
        Assert.Contains("MrVae:Silo:Device: 'tpu'", e.Message);
    }
}
