using System.Text.Json;

namespace MrVae.Grains.Tests;

/// <summary>
/// The Orleans dashboard on mrvae-silo processes: the first silo serves it on the configured loopback port, a second
/// silo configured with the same port finds it taken and runs without its own UI, and the one UI shows both.
/// </summary>
[Trait("Category", "Integration")]   // two silo processes serving the Orleans dashboard
public sealed class OrleansDashboardTests : IDisposable
{
    readonly LoopbackProcesses processes = new();
    public void Dispose() => processes.Dispose();

    [Fact]
    public async Task TheFirstSiloServesTheDashboardOnLoopbackAndItShowsTheWholeCluster()
    {
        int dashboard = LoopbackProcesses.FreePort(), primary = LoopbackProcesses.FreePort();
        var siloPorts = new[] { primary, LoopbackProcesses.FreePort() };
        for (int i = 0; i < 2; i++)
        {
            int gateway = LoopbackProcesses.FreePort();
            processes.StartSilo(new Dictionary<string, string>
            {
                ["MrVae__Dashboard__Enabled"] = "true",
                ["MrVae__Dashboard__Port"] = dashboard.ToString(),
                ["MrVae__Endpoints__SiloPort"] = siloPorts[i].ToString(),
                ["MrVae__Endpoints__GatewayPort"] = gateway.ToString(),
                ["MrVae__Endpoints__PrimarySiloPort"] = primary.ToString(),
            }, $"silo{i}");
            LoopbackProcesses.WaitForPort(gateway, TimeSpan.FromSeconds(90));
            if (i == 0) LoopbackProcesses.WaitForPort(dashboard, TimeSpan.FromSeconds(30));
        }

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        var page = await http.GetAsync($"http://127.0.0.1:{dashboard}/");
        Assert.True(page.IsSuccessStatusCode, $"GET / answered {(int)page.StatusCode}");
        Assert.Contains("html", page.Content.Headers.ContentType?.MediaType);

        // The counters list both silos as active (the dashboard refreshes them about every second).
        string[] active = [];
        for (var deadline = DateTime.UtcNow.AddSeconds(60); active.Length < 2 && DateTime.UtcNow < deadline; await Task.Delay(500))
        {
            using var counters = JsonDocument.Parse(await http.GetStringAsync($"http://127.0.0.1:{dashboard}/DashboardCounters"));
            active = counters.RootElement.GetProperty("hosts").EnumerateArray()
                .Where(h => h.GetProperty("status").GetString() == "Active").Select(h => h.GetProperty("siloAddress").GetString()!).ToArray();
        }
        Assert.True(active.Length == 2, $"active silos on the dashboard: [{string.Join(", ", active)}]\n{processes.Logs()}");
        Assert.Equal(siloPorts.Select(p => $"127.0.0.1:{p}").Order(), active.Select(a => a[..a.IndexOf('@')]).Order());
        Assert.True(processes.Logged($"[silo1] Orleans dashboard: 127.0.0.1:{dashboard} is in use; this silo runs without it"), processes.Logs());
    }
}
