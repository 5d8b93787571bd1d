using System.Text.Json.Nodes;

namespace MrVae.Deploy.Tests;

/// <summary>Every overlay under k8s/overlays, rendered by `kubectl kustomize`, against the silo's real options.</summary>
[Trait("Category", "Integration")]   // kubectl renders the overlays
public sealed class KustomizeTests
{
    public static TheoryData<string> Overlays() => new(Rendered.OverlayNames);

    static void NoProblems(IReadOnlyCollection<string> problems, string what) =>
        Assert.True(problems.Count == 0, $"{what}:\n  " + string.Join("\n  ", problems));

    [Fact]
    public void TheOverlaysAreCpuAndGpu() => Assert.Equal(["cpu", "gpu"], Rendered.OverlayNames.ToArray());

    [Theory, MemberData(nameof(Overlays))]
    public void RendersTheWholeDeployment(string overlay)
    {
        var r = Rendered.Of(overlay);
        var kinds = r.Objects.Select(o => $"{o["kind"]}/{o["metadata"]?["name"]}").ToHashSet();
        foreach (var expected in new[] { "Service/mrvae-silo", "Deployment/mrvae-redis", "Service/mrvae-redis", "Deployment/mrvae-otel-collector",
                     "ConfigMap/mrvae-otel-collector-config", "Deployment/mrvae-dashboard", "Service/mrvae-dashboard", "Job/mrvae-train", "ConfigMap/mrvae-silo-config" })
            Assert.Contains(expected, kinds);
        Assert.Equal(3, r.Objects.Count(o => (string?)o["kind"] == "StatefulSet"));
        var headless = r.Objects.Single(o => (string?)o["kind"] == "Service" && (string?)o["metadata"]?["name"] == "mrvae-silo");
        Assert.Equal("None", (string?)headless["spec"]?["clusterIP"]);
        foreach (var sts in r.Objects.Where(o => (string?)o["kind"] == "StatefulSet"))
            Assert.Equal("mrvae-silo", (string?)sts["spec"]?["serviceName"]);
        // Everything namespaced lands in one namespace.
        Assert.All(r.Objects.Where(o => (string?)o["kind"] != "Namespace"), o => Assert.Equal("mrvae", (string?)o["metadata"]?["namespace"]));
        // Nothing needs RBAC: no ServiceAccount, Role or binding is rendered, and no pod names a service account.
        Assert.DoesNotContain(r.Objects, o => ((string?)o["kind"])?.Contains("Role") == true || (string?)o["kind"] == "ServiceAccount");
    }

    [Theory, MemberData(nameof(Overlays))]
    public void EverySiloVariableAndConfigMapKeyIsAnOptionTheSiloReads(string overlay) =>
        NoProblems(ManifestChecks.UnknownKeys(Rendered.Of(overlay).Objects, SiloOptions.Current), $"{overlay}: settings mrvae-silo does not read");

    [Theory, MemberData(nameof(Overlays))]
    public void EveryReferencedConfigMapIsRendered(string overlay) =>
        NoProblems(ManifestChecks.MissingReferences(Rendered.Of(overlay).Objects), $"{overlay}: dangling ConfigMap references");

    [Theory, MemberData(nameof(Overlays))]
    public void PortsAndProbesAreTheConfiguredSiloAndGatewayPorts(string overlay) =>
        NoProblems(ManifestChecks.PortProblems(Rendered.Of(overlay).Objects, SiloOptions.Current), $"{overlay}: ports");

    [Theory, MemberData(nameof(Overlays))]
    public void SiloGroupsCoverEveryModalityOnce(string overlay) =>
        NoProblems(ManifestChecks.ModalityProblems(Rendered.Of(overlay).Objects), $"{overlay}: modality groups");

    [Theory, MemberData(nameof(Overlays))]
    public void TheClientJobTrainsThroughTheSilosRedisOnTheSilosData(string overlay) =>
        NoProblems(ManifestChecks.ClientProblems(Rendered.Of(overlay).Objects), $"{overlay}: client Job");

    [Fact]
    public void GpuOverlayRequestsGpusAndComputesOnCuda0() =>
        NoProblems(ManifestChecks.GpuProblems(Rendered.Of("gpu").Objects), "gpu overlay");

    [Fact]
    public void CpuOverlayRequestsNoGpus() =>
        NoProblems(ManifestChecks.CpuProblems(Rendered.Of("cpu").Objects, SiloOptions.Current), "cpu overlay");

    [Fact]
    public void SiloConfigMapKeysAreTheEnvironmentFormOfSiloKeys()
    {
        var cm = Rendered.Of("cpu").Objects.Single(o => (string?)o["kind"] == "ConfigMap" && (string?)o["metadata"]?["name"] == "mrvae-silo-config");
        var keys = ((JsonObject)cm["data"]!).Select(kv => kv.Key).ToList();
        Assert.Contains("MrVae__Clustering__Redis", keys);
        Assert.Contains("MrVae__Endpoints__SiloPort", keys);
        Assert.Contains("MrVae__Endpoints__GatewayPort", keys);
        Assert.All(keys, k => Assert.True(SiloOptions.Current.Reads(SiloOptions.KeyOfVariable(k)), $"{k} is not read by the silo"));
    }
}
