using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace MrVae.Deploy.Tests;

/// <summary>
/// deploy/dashboard.sh as a user runs it: the Aspire dashboard comes up on the given loopback ports, takes a trace
/// over OTLP/HTTP without credentials and returns it through its telemetry API.
/// </summary>
[Trait("Category", "Integration")]   // runs deploy/dashboard.sh: the Aspire dashboard
public sealed class DashboardScriptTests
{
    static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    [Fact]
    public async Task TheDashboardReceivesATraceOnLoopbackAndServesItThroughItsApi()
    {
        int ui = FreePort(), grpc = FreePort(), otlpHttp = FreePort();
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = Repo.Root };
        foreach (var a in new[] { "deploy/dashboard.sh", "--ui-port", ui.ToString(), "--otlp-port", grpc.ToString(), "--otlp-http-port", otlpHttp.ToString() })
            psi.ArgumentList.Add(a);
        var output = new StringBuilder();
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var process = Process.Start(psi)!;
        void Line(string? line)
        {
            if (line is null) return;
            lock (output) output.AppendLine(line);
            if (line.Contains($"OTLP/HTTP listening on: http://127.0.0.1:{otlpHttp}")) ready.TrySetResult();
        }
        process.OutputDataReceived += (_, e) => Line(e.Data);
        process.ErrorDataReceived += (_, e) => Line(e.Data);
        process.BeginOutputReadLine(); process.BeginErrorReadLine();
        try
        {
            // The first run restores the package (a few seconds when the NuGet cache has it).
            await ready.Task.WaitAsync(TimeSpan.FromSeconds(180));
            string text; lock (output) text = output.ToString();
            Assert.Contains($"Aspire dashboard: http://127.0.0.1:{ui}", text);
            Assert.Contains($"export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{grpc}", text);
            Assert.Contains($"OTLP/gRPC listening on: http://127.0.0.1:{grpc}", text);
            Assert.Contains($"Now listening on: http://127.0.0.1:{ui}", text);

            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
            string traceId = Convert.ToHexStringLower(Guid.NewGuid().ToByteArray());
            long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1_000_000;
            var trace = new
            {
                resourceSpans = new[] { new {
                    resource = new { attributes = new[] { new { key = "service.name", value = new { stringValue = "dashboard-script-test" } } } },
                    scopeSpans = new[] { new {
                        scope = new { name = "test" },
                        spans = new[] { new { traceId, spanId = "00f067aa0ba902b7", name = "probe span", kind = 1,
                            startTimeUnixNano = now.ToString(), endTimeUnixNano = (now + 1_000_000).ToString() } },
                    } },
                } },
            };
            // No credentials: the OTLP endpoint is unsecured (loopback only).
            var post = await http.PostAsync($"http://127.0.0.1:{otlpHttp}/v1/traces",
                new StringContent(JsonSerializer.Serialize(trace), Encoding.UTF8, "application/json"));
            Assert.True(post.IsSuccessStatusCode, $"OTLP/HTTP export answered {(int)post.StatusCode}");

            HttpResponseMessage answer;
            for (var deadline = DateTime.UtcNow.AddSeconds(20); ; await Task.Delay(200))
            {
                answer = await http.GetAsync($"http://127.0.0.1:{ui}/api/telemetry/traces/{traceId}");
                if (answer.StatusCode != HttpStatusCode.NotFound || DateTime.UtcNow > deadline) break;
            }
            Assert.True(answer.IsSuccessStatusCode, $"GET /api/telemetry/traces/{traceId} answered {(int)answer.StatusCode}");
            using var doc = JsonDocument.Parse(await answer.Content.ReadAsStringAsync());
            var span = doc.RootElement.GetProperty("data").GetProperty("resourceSpans")[0].GetProperty("scopeSpans")[0].GetProperty("spans")[0];
            Assert.Equal("probe span", span.GetProperty("name").GetString());
            Assert.Equal(traceId, span.GetProperty("traceId").GetString());
        }
        finally
        {
            // The script execs the dashboard: this PID is the dashboard itself.
            if (!process.HasExited) { process.Kill(entireProcessTree: true); process.WaitForExit(10_000); }
        }
    }

    [Fact]
    public void BadArgumentsAreRefused()
    {
        var r = Repo.Run("bash", ["deploy/dashboard.sh", "--ui-port", "http"], TimeSpan.FromSeconds(30));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("port must be 1-65535, got 'http'", r.Stderr);
        r = Repo.Run("bash", ["deploy/dashboard.sh", "--bogus"], TimeSpan.FromSeconds(30));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("unknown option '--bogus'", r.Stderr);
        r = Repo.Run("bash", ["deploy/dashboard.sh", "--help"], TimeSpan.FromSeconds(30));
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("--otlp-port N", r.Stdout);
    }
}
