using System.Security.Cryptography;

namespace MrVae.Deploy.Tests;

/// <summary>
/// Schema validation of every rendered object against the Kubernetes OpenAPI schemas, offline: the npm package
/// kubernetes-models (pinned in schema/package-lock.json) ships them compiled; schema/validate.mjs runs them under
/// node. The package is installed once per lock file into a folder under the temporary directory (npm ci).
/// No offline validator exists in Debian's packages (kubeconform/kubeval are not packaged), and kubectl's own
/// validation needs an API server.
/// </summary>
[Trait("Category", "Integration")]   // node and npm packages validate the manifests
public sealed class SchemaTests
{
    static readonly Lazy<string> validator = new(Install);

    static string Install()
    {
        string source = Repo.Path("tests/MrVae.Deploy.Tests/schema");
        _ = Repo.Which("node") ?? throw new InvalidOperationException("node not found (Node.js runs the schema validator)");
        string npm = Repo.Which("npm") ?? throw new InvalidOperationException("npm not found (it installs kubernetes-models for the schema validator)");
        var hash = Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(Path.Combine(source, "package-lock.json"))))[..16];
        string dir = Path.Combine(Path.GetTempPath(), $"mrvae-k8s-schema-{hash}");
        if (!File.Exists(Path.Combine(dir, "node_modules", "kubernetes-models", "package.json")))
        {
            string staging = dir + "-" + Guid.NewGuid().ToString("N")[..8];
            Directory.CreateDirectory(staging);
            foreach (var f in new[] { "package.json", "package-lock.json" }) File.Copy(Path.Combine(source, f), Path.Combine(staging, f));
            var ci = Repo.Run(npm, ["ci", "--no-audit", "--no-fund", "--ignore-scripts"], TimeSpan.FromMinutes(5), workingDirectory: staging);
            Assert.True(ci.ExitCode == 0, ci.Describe("npm ci (kubernetes-models)"));
            try { Directory.Move(staging, dir); }
            catch (IOException) { Directory.Delete(staging, recursive: true); } // another run installed it first
        }
        File.Copy(Path.Combine(source, "validate.mjs"), Path.Combine(dir, "validate.mjs"), overwrite: true);
        return dir;
    }

    static Repo.Result Validate(string json)
    {
        string dir = validator.Value;
        return Repo.Run(Repo.Which("node")!, [Path.Combine(dir, "validate.mjs")], TimeSpan.FromMinutes(2), json, workingDirectory: dir);
    }

    public static TheoryData<string> Overlays() => new(Rendered.OverlayNames);

    [Theory, MemberData(nameof(Overlays))]
    public void EveryRenderedObjectMatchesTheKubernetesSchema(string overlay)
    {
        var r = Rendered.Of(overlay);
        var result = Validate(r.Json);
        Assert.True(result.ExitCode == 0, result.Describe($"schema validation of k8s/overlays/{overlay}"));
        Assert.Contains($"{r.Objects.Count} objects, 0 invalid", result.Stdout);
    }

    [Fact]
    public void TheValidatorRejectsAWrongType()
    {
        var objects = Rendered.Of("cpu").CloneObjects();
        var sts = objects.First(o => (string?)o["kind"] == "StatefulSet");
        sts["spec"]!["template"]!["spec"]!["containers"]![0]!["ports"]![0]!["containerPort"] = "eleven";
        var result = Validate(string.Join("\n", objects.Select(o => o.ToJsonString())));
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("containerPort must be integer", result.Stdout);
    }
}
