using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json.Nodes;
using MrVae.Security;

namespace MrVae.Deploy.Tests;

/// <summary>
/// The secured Kubernetes deployment: silos and the client Job mount their certificates and the Redis password from
/// Secrets, deploy/k8s-secrets.sh makes every Secret they use (with the keys and the silo groups' modalities), the
/// NetworkPolicy lets only silos and the Job reach the silo ports and Redis, and the Aspire dashboard asks for a
/// token and an API key.
/// </summary>
[Trait("Category", "Integration")]   // kubectl renders the overlays; the secrets script runs mrvae
public sealed class SecurityManifestTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-k8s-secrets-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose() { if (Directory.Exists(root)) Directory.Delete(root, recursive: true); }

    public static TheoryData<string> Overlays() => new(Rendered.OverlayNames);

    static IEnumerable<(string Secret, string? Key, string Where)> SecretUses(List<JsonObject> objects)
    {
        foreach (var pod in ManifestChecks.Pods(objects))
        {
            foreach (var v in (pod.Spec["volumes"] as JsonArray ?? []).OfType<JsonObject>())
                if (v["secret"]?["secretName"] is JsonNode name) yield return ((string)name!, null, $"{pod.Id} volume {v["name"]}");
            foreach (var c in ManifestChecks.ContainerSpecs(pod).Concat(ManifestChecks.ContainerSpecs(pod, init: true)))
                foreach (var e in (c["env"] as JsonArray ?? []).OfType<JsonObject>())
                    if (e["valueFrom"]?["secretKeyRef"] is JsonObject r) yield return ((string)r["name"]!, (string?)r["key"], $"{pod.Id}/{c["name"]} env {e["name"]}");
        }
    }

    /// <summary>The file a container reads at <paramref name="path"/>: the Secret volume mounted above it and the key it names.</summary>
    static (string Secret, string Key)? SecretFile(ManifestChecks.Pod pod, JsonObject container, string path)
    {
        foreach (var m in (container["volumeMounts"] as JsonArray ?? []).OfType<JsonObject>())
        {
            string mount = ((string)m["mountPath"]!).TrimEnd('/') + "/";
            if (!path.StartsWith(mount, StringComparison.Ordinal)) continue;
            var volume = (pod.Spec["volumes"] as JsonArray ?? []).OfType<JsonObject>().FirstOrDefault(v => (string?)v["name"] == (string?)m["name"]);
            if (volume?["secret"]?["secretName"] is JsonNode name) return ((string)name!, path[mount.Length..]);
        }
        return null;
    }

    [Theory, MemberData(nameof(Overlays))]
    public void SilosAndTheClientReadTheirCertificatesAndTheRedisPasswordFromSecrets(string overlay)
    {
        var objects = Rendered.Of(overlay).Objects;
        var problems = new List<string>();
        var silos = ManifestChecks.SiloContainers(objects, problems);
        Assert.Equal(3, silos.Count);
        foreach (var silo in silos)
            foreach (var key in new[] { "MrVae:Tls:Certificate", "MrVae:Tls:Key", "MrVae:Tls:Ca", "MrVae:Redis:PasswordFile" })
            {
                string? path = silo.Config(key);
                Assert.False(string.IsNullOrEmpty(path), $"{silo.Id}: {key} is not set");
                var file = SecretFile(silo.Pod, silo.Spec, path!);
                Assert.True(file is not null, $"{silo.Id}: {key}={path} is not in a mounted Secret");
                string group = (string)silo.Pod.Labels["mrvae.io/modality-group"]!;
                Assert.Equal(key.StartsWith("MrVae:Tls") ? $"mrvae-tls-silo-{group}" : "mrvae-redis-password", file!.Value.Secret);
            }
        var job = ManifestChecks.Pods(objects).Single(p => (string?)p.Owner["kind"] == "Job");
        var train = ManifestChecks.ContainerSpecs(job).Single();
        var args = (train["args"] as JsonArray)!.Select(a => (string)a!).ToList();
        int tls = args.IndexOf("--tls");
        Assert.True(tls >= 0, "the client Job does not pass --tls");
        Assert.Equal(("mrvae-tls-operator", "cert.pem"), SecretFile(job, train, args[tls + 1] + "/cert.pem"));
        var passwordFile = (train["env"] as JsonArray)!.OfType<JsonObject>().Single(e => (string?)e["name"] == "MRVAE_REDIS_PASSWORD_FILE");
        Assert.Equal(("mrvae-redis-password", "password"), SecretFile(job, train, (string)passwordFile["value"]!));
        // No secret value is written into a manifest.
        Assert.DoesNotContain("requirepass ", Rendered.Of(overlay).Yaml.Replace("'requirepass %s", ""));
    }

    [Theory, MemberData(nameof(Overlays))]
    public void TheDashboardAsksForATokenAndAnApiKey(string overlay)
    {
        var dashboard = ManifestChecks.Pods(Rendered.Of(overlay).Objects).Single(p => (string?)p.Owner["metadata"]?["name"] == "mrvae-dashboard");
        var env = (ManifestChecks.ContainerSpecs(dashboard).Single()["env"] as JsonArray)!.OfType<JsonObject>().ToDictionary(e => (string)e["name"]!);
        Assert.Equal("BrowserToken", (string?)env["DASHBOARD__FRONTEND__AUTHMODE"]["value"]);
        Assert.Equal("ApiKey", (string?)env["DASHBOARD__OTLP__AUTHMODE"]["value"]);
        Assert.Equal("mrvae-dashboard", (string?)env["DASHBOARD__FRONTEND__BROWSERTOKEN"]["valueFrom"]?["secretKeyRef"]?["name"]);
        Assert.Equal("mrvae-dashboard", (string?)env["DASHBOARD__OTLP__PRIMARYAPIKEY"]["valueFrom"]?["secretKeyRef"]?["name"]);
        Assert.DoesNotContain("Unsecured", Rendered.Of(overlay).Yaml);
    }

    [Theory, MemberData(nameof(Overlays))]
    public void OnlySilosAndTheClientJobReachTheSiloPortsAndRedis(string overlay)
    {
        var objects = Rendered.Of(overlay).Objects;
        var pods = ManifestChecks.Pods(objects).ToList();
        static bool Selects(JsonObject? selector, JsonObject labels) =>
            selector?["matchLabels"] is JsonObject match && match.All(kv => (string?)labels[kv.Key] == (string?)kv.Value);
        var policies = objects.Where(o => (string?)o["kind"] == "NetworkPolicy").ToList();
        foreach (var (target, ports) in new[] { ("mrvae-silo", new[] { 11111, 30000 }), ("mrvae-redis", new[] { 6379 }) })
        {
            var targetPods = pods.Where(p => (string?)p.Labels["app.kubernetes.io/name"] == target).ToList();
            Assert.NotEmpty(targetPods);
            var policy = policies.Single(n => targetPods.All(p => Selects(n["spec"]?["podSelector"]?.AsObject(), p.Labels)));
            var rule = Assert.Single((policy["spec"]!["ingress"] as JsonArray)!.OfType<JsonObject>());
            Assert.Equal(ports.Order(), (rule["ports"] as JsonArray)!.Select(p => (int)p!["port"]!).Order());
            var admitted = pods.Where(p => (rule["from"] as JsonArray)!.OfType<JsonObject>().Any(f => Selects(f["podSelector"]?.AsObject(), p.Labels)))
                .Select(p => (string)p.Owner["kind"]! + "/" + (string)p.Owner["metadata"]!["name"]!).Order().ToArray();
            Assert.Equal(["Job/mrvae-train", "StatefulSet/mrvae-silo-m01", "StatefulSet/mrvae-silo-m23", "StatefulSet/mrvae-silo-m4"], admitted);
        }
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void TheSecretsScriptMakesEverySecretTheManifestsUseWithTheGroupsModalities()
    {
        string cli = Repo.Path($"src/MrVae.Cli/bin/{Repo.Configuration}/net10.0/mrvae.dll");
        var env = new Dictionary<string, string> { ["MRVAE_CLI"] = $"dotnet {cli}", ["KUBECONFIG"] = Path.Combine(root, "no-kubeconfig") };
        string certs = Path.Combine(root, "certs");
        var run = Repo.Run("bash", ["deploy/k8s-secrets.sh", "--certs", certs], TimeSpan.FromMinutes(3), environment: env);
        Assert.True(run.ExitCode == 0, run.Describe("deploy/k8s-secrets.sh"));
        var json = Repo.Run(Rendered.Kubectl(), ["annotate", "--local", "-f", "-", "-o", "json", "mrvae.io/render-"], TimeSpan.FromMinutes(1), run.Stdout, env);
        Assert.True(json.ExitCode == 0, json.Describe("kubectl annotate --local"));
        var secrets = Rendered.ParseStream(json.Stdout).Where(o => (string?)o["kind"] == "Secret")
            .ToDictionary(o => (string)o["metadata"]!["name"]!, o => (JsonObject)o["data"]!);
        Assert.All(secrets.Keys, name => Assert.Equal("mrvae", (string?)Rendered.ParseStream(json.Stdout).First(o => (string?)o["metadata"]?["name"] == name)["metadata"]!["namespace"]));
        Assert.DoesNotContain("PRIVATE KEY", run.Stderr);

        var objects = Rendered.Of("cpu").Objects;
        foreach (var (secret, key, where) in SecretUses(objects))
        {
            Assert.True(secrets.ContainsKey(secret), $"{where} uses Secret {secret}, which the script does not make");
            if (key is not null) Assert.True(secrets[secret].ContainsKey(key), $"{where} uses {secret}/{key}, which the script does not make");
        }
        // Each group's certificate names the modalities its StatefulSet serves, is a silo's and chains to the CA the
        // operator's Secret carries; the operator's is an operator's.
        string Text(string secret, string key) => Encoding.UTF8.GetString(Convert.FromBase64String((string)secrets[secret][key]!));
        using var ca = X509Certificate2.CreateFromPem(Text("mrvae-tls-operator", "ca.pem"));
        var check = new PeerCheck(ca);
        foreach (var silo in ManifestChecks.SiloContainers(objects, []))
        {
            string secret = $"mrvae-tls-silo-{silo.Pod.Labels["mrvae.io/modality-group"]}";
            using var certificate = X509Certificate2.CreateFromPem(Text(secret, "cert.pem"), Text(secret, "key.pem"));
            Assert.Null(check.Refusal(certificate, NodeRole.Silo));
            Assert.Equal(silo.Config("MrVae:Silo:Modalities"), string.Join(",", ClusterCertificates.IdentityOf(certificate)!.Modalities));
        }
        using var op = X509Certificate2.CreateFromPem(Text("mrvae-tls-operator", "cert.pem"), Text("mrvae-tls-operator", "key.pem"));
        Assert.Null(check.Refusal(op, NodeRole.Operator));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(certs, "redis-password")));

        // A second run reuses the CA and the passwords: running silos and Redis keep working.
        var again = Repo.Run("bash", ["deploy/k8s-secrets.sh", "--certs", certs], TimeSpan.FromMinutes(3), environment: env);
        Assert.True(again.ExitCode == 0, again.Describe("deploy/k8s-secrets.sh (again)"));
        Assert.Contains((string)secrets["mrvae-redis-password"]["password"]!, again.Stdout);
        Assert.Contains((string)secrets["mrvae-tls-operator"]["ca.pem"]!, again.Stdout);
    }
}
