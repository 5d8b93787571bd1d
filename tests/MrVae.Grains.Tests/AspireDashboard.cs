using System.Diagnostics;
using System.Reflection;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace MrVae.Grains.Tests;

/// <summary>
/// The standalone Aspire dashboard (NuGet package Aspire.Dashboard.Sdk.linux-x64, restored by this test project) as a
/// real OTLP receiver: bound to loopback on ports the OS picks, no authentication, and its telemetry HTTP API on, so a
/// test reads back exactly what the exporters sent. Killed on dispose.
/// </summary>
public sealed partial class AspireDashboard : IDisposable
{
    readonly Process process;
    readonly List<string> log = new();
    readonly HttpClient http = new() { Timeout = TimeSpan.FromSeconds(30) };

    /// <summary>The UI and the telemetry API, e.g. http://127.0.0.1:PORT.</summary>
    public string Url { get; }
    /// <summary>OTLP over gRPC: the value for OTEL_EXPORTER_OTLP_ENDPOINT with the default protocol.</summary>
    public string OtlpGrpc { get; }
    /// <summary>OTLP over HTTP (OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf).</summary>
    public string OtlpHttp { get; }

    public static string Executable()
    {
        var path = typeof(AspireDashboard).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "AspireDashboard").Value;
        Assert.False(string.IsNullOrEmpty(path), "AspireDashboardPath was not set: is the package Aspire.Dashboard.Sdk.linux-x64 restored?");
        Assert.True(File.Exists(path), $"the Aspire dashboard is not at {path} (restore tests/MrVae.Grains.Tests)");
        return path!;
    }

    public AspireDashboard(TimeSpan startTimeout)
    {
        var psi = new ProcessStartInfo(Executable()) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        // Port 0 everywhere: the dashboard prints the ports it got, so parallel tests never collide.
        foreach (var (k, v) in new Dictionary<string, string>
        {
            ["ASPNETCORE_URLS"] = "http://127.0.0.1:0",
            ["ASPIRE_DASHBOARD_OTLP_ENDPOINT_URL"] = "http://127.0.0.1:0",
            ["ASPIRE_DASHBOARD_OTLP_HTTP_ENDPOINT_URL"] = "http://127.0.0.1:0",
            ["ASPIRE_ALLOW_UNSECURED_TRANSPORT"] = "true",
            ["DASHBOARD__FRONTEND__AUTHMODE"] = "Unsecured",
            ["DASHBOARD__OTLP__AUTHMODE"] = "Unsecured",
            // The telemetry API (/api/telemetry/*) is off unless enabled.
            ["DASHBOARD__API__ENABLED"] = "true",
            ["DASHBOARD__API__AUTHMODE"] = "Unsecured",
        })
            psi.Environment[k] = v;
        process = Process.Start(psi)!;
        var ports = new TaskCompletionSource<(string, string, string)>(TaskCreationOptions.RunContinuationsAsynchronously);
        string? ui = null, grpc = null, otlpHttp = null;
        void Line(string? text)
        {
            if (text is null) return;
            lock (log)
            {
                log.Add(text);
                var m = Listening().Match(text);
                if (!m.Success) return;
                switch (m.Groups[1].Value)
                {
                    case "Now": ui = m.Groups[2].Value; break;
                    case "OTLP/gRPC": grpc = m.Groups[2].Value; break;
                    case "OTLP/HTTP": otlpHttp = m.Groups[2].Value; break;
                }
                if (ui is not null && grpc is not null && otlpHttp is not null) ports.TrySetResult((ui, grpc, otlpHttp));
            }
        }
        process.OutputDataReceived += (_, e) => Line(e.Data);
        process.ErrorDataReceived += (_, e) => Line(e.Data);
        process.BeginOutputReadLine(); process.BeginErrorReadLine();
        process.EnableRaisingEvents = true;
        process.Exited += (_, _) =>
        {
            // Only an exit during start-up is an error (Dispose kills it later on purpose).
            if (!ports.Task.IsCompleted) ports.TrySetException(new InvalidOperationException($"the Aspire dashboard exited during start-up:\n{Log()}"));
        };
        if (!ports.Task.Wait(startTimeout))
        {
            Dispose();
            throw new TimeoutException($"the Aspire dashboard did not report its endpoints within {startTimeout.TotalSeconds} s:\n{Log()}");
        }
        (Url, OtlpGrpc, OtlpHttp) = ports.Task.Result;
    }

    public string Log() { lock (log) return string.Join("\n", log.TakeLast(40)); }

    /// <summary>Every span the dashboard holds, flattened from its OTLP JSON (resourceSpans / scopeSpans / spans).</summary>
    public async Task<List<ReceivedSpan>> Spans()
    {
        using var doc = JsonDocument.Parse(await http.GetStringAsync($"{Url}/api/telemetry/spans?limit=100000"));
        var spans = new List<ReceivedSpan>();
        foreach (var rs in doc.RootElement.GetProperty("data").GetProperty("resourceSpans").EnumerateArray())
        {
            var resource = Attributes(rs.GetProperty("resource"));
            string service = resource.GetValueOrDefault("service.name") ?? "";
            foreach (var ss in rs.GetProperty("scopeSpans").EnumerateArray())
            {
                string scope = ss.TryGetProperty("scope", out var s) && s.TryGetProperty("name", out var n) ? n.GetString() ?? "" : "";
                foreach (var span in ss.GetProperty("spans").EnumerateArray())
                    spans.Add(new ReceivedSpan(service, scope, span.GetProperty("traceId").GetString()!, span.GetProperty("spanId").GetString()!,
                        span.TryGetProperty("parentSpanId", out var p) ? p.GetString() ?? "" : "", span.GetProperty("name").GetString()!, Attributes(span)));
            }
        }
        return spans;
    }

    /// <summary>OTLP attributes as strings (int values arrive as JSON strings or numbers, per the OTLP JSON mapping).</summary>
    static Dictionary<string, string> Attributes(JsonElement owner)
    {
        var result = new Dictionary<string, string>();
        if (!owner.TryGetProperty("attributes", out var attributes)) return result;
        foreach (var a in attributes.EnumerateArray())
        {
            var value = a.GetProperty("value").EnumerateObject().FirstOrDefault();
            result[a.GetProperty("key").GetString()!] = value.Value.ValueKind == JsonValueKind.String ? value.Value.GetString()! : value.Value.GetRawText();
        }
        return result;
    }

    public void Dispose()
    {
        http.Dispose();
        try { if (!process.HasExited) { process.Kill(entireProcessTree: true); process.WaitForExit(10_000); } } catch (InvalidOperationException) { }
        process.Dispose();
    }

    [GeneratedRegex(@"(Now|OTLP/gRPC|OTLP/HTTP) listening on: (http://\S+)")] private static partial Regex Listening();
}

/// <summary>One span as the dashboard returns it, with the service.name of the process that exported it.</summary>
public sealed record ReceivedSpan(string Service, string Scope, string TraceId, string SpanId, string ParentSpanId, string Name, Dictionary<string, string> Attributes)
{
    public string? this[string key] => Attributes.GetValueOrDefault(key);
}
