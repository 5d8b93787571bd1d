using System.Text.Json.Nodes;

namespace MrVae.Deploy.Tests;

/// <summary>The checks find what they are for: options derived from the source, and manifests broken on purpose.</summary>
[Trait("Category", "Integration")]   // kubectl renders the overlays
public sealed class ChecksCanFailTests
{
    static string Source(string file) => File.ReadAllText(Repo.Path(file));

    static SiloOptions OptionsWith(string hosting) =>
        SiloOptions.Parse(Source(SiloOptions.ProgramFile), hosting, Source(SiloOptions.TelemetryFile), Source(SiloOptions.SettingsFile));

    static JsonObject Silo(List<JsonObject> objects) =>
        objects.First(o => (string?)o["kind"] == "StatefulSet")["spec"]!["template"]!["spec"]!["containers"]![0]!.AsObject();

    [Fact]
    public void OptionsComeFromTheSiloSource()
    {
        var o = SiloOptions.Current;
        foreach (var key in new[] { "MrVae:Silo:Device", "MrVae:Silo:Modalities", "MrVae:Silo:TorchThreads", "MrVae:Clustering:Redis",
                     "MrVae:Cluster:ClusterId", "MrVae:Cluster:ServiceId", "MrVae:Endpoints:SiloPort", "MrVae:Endpoints:GatewayPort", "MrVae:Endpoints:PrimarySiloPort" })
            Assert.True(o.Reads(key), $"{key} not found in the silo's source");
        Assert.True(o.Reads("mrvae:silo:device"));   // configuration keys are case-insensitive
        Assert.False(o.Reads("MrVae:Silo:Devices"));
        Assert.False(o.Reads("POD_NAME"));
        Assert.Equal("11111", o.Defaults["MrVae:Endpoints:SiloPort"]);
        Assert.Equal("30000", o.Defaults["MrVae:Endpoints:GatewayPort"]);
        Assert.Equal("cpu", o.Defaults["MrVae:Silo:Device"]);
        Assert.Equal("MrVae:Silo:Modalities", SiloOptions.KeyOfVariable("MrVae__Silo__Modalities"));
    }

    [Fact]
    public void ARenamedOptionFailsTheKeyCheck()
    {
        string hosting = Source(SiloOptions.HostingFile);
        Assert.Contains("\"MrVae:Endpoints:GatewayPort\"", hosting);
        var renamed = OptionsWith(hosting.Replace("\"MrVae:Endpoints:GatewayPort\"", "\"MrVae:Endpoints:ProxyPort\""));
        Assert.False(renamed.Reads("MrVae:Endpoints:GatewayPort"));
        var problems = ManifestChecks.UnknownKeys(Rendered.Of("cpu").Objects, renamed);
        Assert.Contains(problems, p => p.Contains("MrVae__Endpoints__GatewayPort"));
        // A key only mentioned in a comment is not an option; the settings section counts only while it is bound.
        var parsed = SiloOptions.Parse("silo.ConfigureMrVae(c);", "var a = configuration[\"MrVae:A:B\"]; // configuration[\"MrVae:X:Y\"]\n/* c.GetValue(\"MrVae:Z:W\", 1) */",
            "", "public const string Section = \"MrVae:Silo\"; public int Threads { get; set; } = 2;");
        Assert.True(parsed.Reads("MrVae:A:B"));
        Assert.False(parsed.Reads("MrVae:X:Y"));
        Assert.False(parsed.Reads("MrVae:Z:W"));
        Assert.False(parsed.Reads("MrVae:Silo:Threads"));
    }

    [Fact]
    public void AMisspelledVariableIsReported()
    {
        var objects = Rendered.Of("cpu").CloneObjects();
        ((JsonArray)Silo(objects)["env"]!).Add(new JsonObject { ["name"] = "MrVae__Silo__Devise", ["value"] = "cpu" });
        ((JsonArray)Silo(objects)["env"]!).Add(new JsonObject { ["name"] = "POD_IP", ["valueFrom"] = new JsonObject { ["fieldRef"] = new JsonObject { ["fieldPath"] = "status.podIP" } } });
        var problems = ManifestChecks.UnknownKeys(objects, SiloOptions.Current);
        Assert.Contains(problems, p => p.Contains("MrVae__Silo__Devise"));
        Assert.Contains(problems, p => p.Contains("POD_IP"));
        var cm = objects.First(o => (string?)o["metadata"]?["name"] == "mrvae-silo-config");
        cm["data"]!["MrVae__Silo__Threads"] = "2";
        Assert.Contains(ManifestChecks.UnknownKeys(objects, SiloOptions.Current), p => p.Contains("MrVae__Silo__Threads"));
    }

    [Fact]
    public void WrongPortsAndProbesAreReported()
    {
        var objects = Rendered.Of("cpu").CloneObjects();
        Silo(objects)["ports"]![1]!["containerPort"] = 30001;
        Assert.Contains(ManifestChecks.PortProblems(objects, SiloOptions.Current), p => p.Contains("container ports"));

        objects = Rendered.Of("cpu").CloneObjects();
        Silo(objects)["readinessProbe"]!["tcpSocket"]!["port"] = 8080;
        Assert.Contains(ManifestChecks.PortProblems(objects, SiloOptions.Current), p => p.Contains("readinessProbe"));

        objects = Rendered.Of("cpu").CloneObjects();
        Silo(objects).Remove("livenessProbe");
        Assert.Contains(ManifestChecks.PortProblems(objects, SiloOptions.Current), p => p.Contains("no livenessProbe"));

        // The configured port moves, the container port does not.
        objects = Rendered.Of("cpu").CloneObjects();
        objects.First(o => (string?)o["metadata"]?["name"] == "mrvae-silo-config")["data"]!["MrVae__Endpoints__SiloPort"] = "12000";
        Assert.Contains(ManifestChecks.PortProblems(objects, SiloOptions.Current), p => p.Contains("SiloPort 12000"));
    }

    [Fact]
    public void GpuAndCpuChecksTellTheOverlaysApart()
    {
        Assert.NotEmpty(ManifestChecks.GpuProblems(Rendered.Of("cpu").Objects));
        Assert.NotEmpty(ManifestChecks.CpuProblems(Rendered.Of("gpu").Objects, SiloOptions.Current));
        var objects = Rendered.Of("gpu").CloneObjects();
        Silo(objects)["resources"]!["limits"]!.AsObject().Remove("nvidia.com/gpu");
        Assert.Contains(ManifestChecks.GpuProblems(objects), p => p.Contains("no nvidia.com/gpu limit"));
    }

    [Fact]
    public void ModalityGapsOverlapsAndDanglingReferencesAreReported()
    {
        var objects = Rendered.Of("cpu").CloneObjects();
        var env = (JsonArray)Silo(objects)["env"]!;
        env.OfType<JsonObject>().First(e => (string?)e["name"] == "MrVae__Silo__Modalities")["value"] = "2";
        var problems = ManifestChecks.ModalityProblems(objects);
        Assert.Contains(problems, p => p.Contains("modality 2 is served by both"));
        Assert.Contains(problems, p => p.Contains("no silo serves modality 0"));

        objects = Rendered.Of("cpu").CloneObjects();
        objects.RemoveAll(o => (string?)o["metadata"]?["name"] == "mrvae-silo-config");
        Assert.Contains(ManifestChecks.MissingReferences(objects), p => p.Contains("mrvae-silo-config"));
    }
}
