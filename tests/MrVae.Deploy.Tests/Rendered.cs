using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MrVae.Deploy.Tests;

/// <summary>
/// An overlay rendered by `kubectl kustomize k8s/overlays/NAME`, converted to JSON by kubectl itself
/// (`kubectl annotate --local -f - -o json`, which needs no cluster) and parsed with System.Text.Json.
/// kubectl: $KUBECTL, else kubectl on PATH (Debian: apt-get install kubernetes-client; .ci/run installs it).
/// </summary>
public sealed class Rendered
{
    public required string Overlay { get; init; }
    public required string Yaml { get; init; }
    public required string Json { get; init; }
    public required List<JsonObject> Objects { get; init; }

    public static string OverlaysDirectory => Repo.Path("k8s/overlays");
    public static IEnumerable<string> OverlayNames =>
        Directory.GetDirectories(OverlaysDirectory).Select(System.IO.Path.GetFileName).Order()!;

    static readonly ConcurrentDictionary<string, Lazy<Rendered>> cache = new();

    public static Rendered Of(string overlay) => cache.GetOrAdd(overlay, o => new Lazy<Rendered>(() => Render(o))).Value;

    public static string Kubectl()
    {
        string name = Environment.GetEnvironmentVariable("KUBECTL") is { Length: > 0 } k ? k : "kubectl";
        return Repo.Which(name) ?? throw new InvalidOperationException(
            $"kubectl not found ({name}): install Debian's kubernetes-client (apt-get install kubernetes-client; .ci/run does) or set KUBECTL");
    }

    static Rendered Render(string overlay)
    {
        string kubectl = Kubectl();
        var env = new Dictionary<string, string> { ["KUBECONFIG"] = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "mrvae-no-kubeconfig") };
        var build = Repo.Run(kubectl, ["kustomize", $"k8s/overlays/{overlay}"], TimeSpan.FromMinutes(2), environment: env);
        Assert.True(build.ExitCode == 0, build.Describe($"kubectl kustomize k8s/overlays/{overlay}"));
        // `annotate --local` removes an annotation that is not there: the objects come back unchanged, as JSON.
        var json = Repo.Run(kubectl, ["annotate", "--local", "-f", "-", "-o", "json", "mrvae.io/render-"], TimeSpan.FromMinutes(2), build.Stdout, env);
        Assert.True(json.ExitCode == 0, json.Describe("kubectl annotate --local -o json"));
        var objects = ParseStream(json.Stdout);
        foreach (var o in objects)
            if (o["metadata"]?["annotations"] is JsonObject { Count: 0 }) o["metadata"]!.AsObject().Remove("annotations");
        return new Rendered { Overlay = overlay, Yaml = build.Stdout, Json = json.Stdout, Objects = objects };
    }

    /// <summary>Parses a stream of JSON values (kubectl prints one object after another; a List is unpacked).</summary>
    public static List<JsonObject> ParseStream(string text)
    {
        var result = new List<JsonObject>();
        var reader = new Utf8JsonReader(Encoding.UTF8.GetBytes(text), new JsonReaderOptions { AllowMultipleValues = true });
        while (reader.Read())
        {
            var node = JsonNode.Parse(ref reader)!.AsObject();
            if ((string?)node["kind"] == "List" && node["items"] is JsonArray items)
                result.AddRange(items.Select(i => i!.DeepClone().AsObject()));
            else
                result.Add(node);
        }
        return result;
    }

    /// <summary>A deep copy of the objects, for tests that break something on purpose.</summary>
    public List<JsonObject> CloneObjects() => Objects.Select(o => o.DeepClone().AsObject()).ToList();
}
