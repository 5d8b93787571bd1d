using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;
using Orleans.Dashboard;
using MrVae.Data;

namespace MrVae.Silo;

/// <summary>
/// The Orleans dashboard (Microsoft.Orleans.Dashboard: silos, grains, calls, errors, for the whole cluster) on a
/// mrvae-silo process. Every silo collects the dashboard's statistics; the web UI is served by a silo when
///   MrVae:Dashboard:Enabled  true (default) | false
///   MrVae:Dashboard:Host     the address to listen on (default 127.0.0.1: only this machine; 0.0.0.0 for all)
///   MrVae:Dashboard:Port     default 8080 (0: a free port, printed at start)
/// and its port is free: a second silo on the same machine logs that the port is taken and runs without the UI
/// (one UI shows the whole cluster).
/// </summary>
public static class OrleansDashboardHosting
{
    /// <summary>The builder for a silo process: a web application when it serves the dashboard, else a plain host.</summary>
    public static IHostApplicationBuilder CreateSiloBuilder(string[] args)
    {
        var plain = Host.CreateApplicationBuilder(args);
        var configuration = plain.Configuration;
        if (!configuration.GetValue("MrVae:Dashboard:Enabled", true)) return plain;
        string host = configuration["MrVae:Dashboard:Host"] ?? "127.0.0.1";
        int port = configuration.GetValue("MrVae:Dashboard:Port", 8080);
        if (!IPAddress.TryParse(host, out var address))
            throw new UserInputException($"MrVae:Dashboard:Host '{host}' is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)");
        if (port != 0 && !PortFree(address, port))
        {
            Console.Error.WriteLine($"Orleans dashboard: {host}:{port} is in use; this silo runs without it (MrVae__Dashboard__Port picks another, MrVae__Dashboard__Enabled=false turns it off)");
            return plain;
        }
        var web = WebApplication.CreateBuilder(args);
        web.WebHost.ConfigureKestrel(k => k.Listen(address, port));
        return web;
    }

    /// <summary>Dashboard statistics on this silo (every silo of a cluster with a dashboard needs them).</summary>
    public static ISiloBuilder AddMrVaeOrleansDashboard(this ISiloBuilder silo) => silo.AddDashboard();

    /// <summary>Builds the host; a web application also maps the dashboard's UI and API at its root.</summary>
    public static IHost BuildSilo(this IHostApplicationBuilder builder)
    {
        if (builder is not WebApplicationBuilder web) return ((HostApplicationBuilder)builder).Build();
        var app = web.Build();
        app.MapOrleansDashboard();
        return app;
    }

    static bool PortFree(IPAddress address, int port)
    {
        try
        {
            using var probe = new TcpListener(address, port);
            probe.Start();
            return true;
        }
        catch (SocketException) { return false; }
    }
}
