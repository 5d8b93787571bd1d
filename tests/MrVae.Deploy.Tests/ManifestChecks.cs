using System.Text.Json.Nodes;

namespace MrVae.Deploy.Tests;

/// <summary>
/// Checks on rendered Kubernetes objects. Each returns the problems it finds (empty: fine), so that tests can
/// assert on the real overlays and on copies broken on purpose.
/// </summary>
public static class ManifestChecks
{
    /// <summary>Extended PolyMNIST, the dataset the manifests make and train on, has five modalities.</summary>
    public const int Modalities = 5;

    public sealed record Pod(JsonObject Owner, JsonObject Spec, JsonObject Labels)
    {
        public string Id => $"{Owner["kind"]}/{Owner["metadata"]?["name"]}";
        public string? Namespace => (string?)Owner["metadata"]?["namespace"];
    }

    /// <summary>One variable of a container's environment: its name, its value where known, where it comes from.</summary>
    public sealed record Variable(string Name, string? Value, string Source);

    public sealed record Container(Pod Pod, JsonObject Spec, List<Variable> Environment)
    {
        public string Id => $"{Pod.Id}/{Spec["name"]}";
        public string Image => (string?)Spec["image"] ?? "";
        public string? Config(string key) => Environment.LastOrDefault(v => SiloOptions.KeyOfVariable(v.Name).Equals(key, StringComparison.OrdinalIgnoreCase))?.Value;
    }

    public static IEnumerable<Pod> Pods(IEnumerable<JsonObject> objects)
    {
        foreach (var o in objects)
        {
            JsonNode? template = (string?)o["kind"] switch
            {
                "Deployment" or "StatefulSet" or "DaemonSet" or "ReplicaSet" or "Job" => o["spec"]?["template"],
                "CronJob" => o["spec"]?["jobTemplate"]?["spec"]?["template"],
                "Pod" => o,
                _ => null,
            };
            if (template?["spec"] is JsonObject spec)
                yield return new Pod(o, spec, template["metadata"]?["labels"] as JsonObject ?? new JsonObject());
        }
    }

    public static IEnumerable<JsonObject> ContainerSpecs(Pod pod, bool init = false) =>
        ((init ? pod.Spec["initContainers"] : pod.Spec["containers"]) as JsonArray ?? []).OfType<JsonObject>();

    /// <summary>The image's name without registry, tag or digest: REGISTRY/mrvae-silo-cuda:1.0 → mrvae-silo-cuda.</summary>
    public static string ImageName(string image)
    {
        string last = image.Split('/')[^1];
        return last.Split('@')[0].Split(':')[0];
    }

    public static bool IsSiloImage(string image) => ImageName(image).StartsWith("mrvae-silo", StringComparison.Ordinal);

    static JsonObject? Find(IEnumerable<JsonObject> objects, string kind, string? name, string? ns) =>
        objects.FirstOrDefault(o => (string?)o["kind"] == kind && (string?)o["metadata"]?["name"] == name &&
                                    ((string?)o["metadata"]?["namespace"] ?? ns) == ns);

    /// <summary>A container with its environment resolved: env (values, ConfigMap keys) and envFrom ConfigMaps.</summary>
    public static Container Resolve(List<JsonObject> objects, Pod pod, JsonObject spec, List<string> problems)
    {
        var vars = new List<Variable>();
        string id = $"{pod.Id}/{spec["name"]}";
        foreach (var from in (spec["envFrom"] as JsonArray ?? []).OfType<JsonObject>())
        {
            string prefix = (string?)from["prefix"] ?? "";
            if (from["configMapRef"] is JsonObject cmRef)
            {
                string? name = (string?)cmRef["name"];
                var cm = Find(objects, "ConfigMap", name, pod.Namespace);
                if (cm is null) { if (cmRef["optional"]?.GetValue<bool>() != true) problems.Add($"{id}: envFrom ConfigMap '{name}' is not in the rendered objects"); continue; }
                foreach (var (k, v) in cm["data"] as JsonObject ?? new JsonObject())
                    vars.Add(new Variable(prefix + k, (string?)v, $"ConfigMap {name}"));
            }
            else problems.Add($"{id}: envFrom other than a ConfigMap ({from.ToJsonString()}) cannot be checked offline");
        }
        foreach (var e in (spec["env"] as JsonArray ?? []).OfType<JsonObject>())
        {
            string name = (string?)e["name"] ?? "";
            if (e["value"] is JsonNode value) vars.Add(new Variable(name, (string?)value, "env"));
            else if (e["valueFrom"]?["configMapKeyRef"] is JsonObject keyRef)
            {
                string? cmName = (string?)keyRef["name"], key = (string?)keyRef["key"];
                var cm = Find(objects, "ConfigMap", cmName, pod.Namespace);
                string? v = (string?)cm?["data"]?[key ?? ""];
                if (v is null && keyRef["optional"]?.GetValue<bool>() != true) problems.Add($"{id}: env {name} refers to ConfigMap '{cmName}' key '{key}', which the rendered objects lack");
                vars.Add(new Variable(name, v, $"ConfigMap {cmName} key {key}"));
            }
            else if (e["valueFrom"] is JsonObject valueFrom) vars.Add(new Variable(name, null, $"valueFrom {valueFrom.ToJsonString()}"));
            else vars.Add(new Variable(name, "", "env"));
        }
        return new Container(pod, spec, vars);
    }

    /// <summary>Every container that runs mrvae-silo, environment resolved.</summary>
    public static List<Container> SiloContainers(List<JsonObject> objects, List<string> problems) =>
        Pods(objects).SelectMany(p => ContainerSpecs(p).Where(c => IsSiloImage((string?)c["image"] ?? "")).Select(c => Resolve(objects, p, c, problems))).ToList();

    /// <summary>Every variable set for a silo, and every MrVae__ key of any ConfigMap, is a key the silo reads.</summary>
    public static List<string> UnknownKeys(List<JsonObject> objects, SiloOptions options)
    {
        var problems = new List<string>();
        var silos = SiloContainers(objects, problems);
        if (silos.Count == 0) problems.Add("no container runs an mrvae-silo image");
        foreach (var c in silos)
            foreach (var v in c.Environment)
                if (!options.Reads(SiloOptions.KeyOfVariable(v.Name)))
                    problems.Add($"{c.Id}: {v.Name} (from {v.Source}) sets '{SiloOptions.KeyOfVariable(v.Name)}', which mrvae-silo does not read");
        foreach (var cm in objects.Where(o => (string?)o["kind"] == "ConfigMap"))
            foreach (var (k, _) in cm["data"] as JsonObject ?? new JsonObject())
                if (k.StartsWith("MrVae__", StringComparison.OrdinalIgnoreCase) && !options.Reads(SiloOptions.KeyOfVariable(k)))
                    problems.Add($"ConfigMap {cm["metadata"]?["name"]}: key {k} is not an option mrvae-silo reads");
        return problems;
    }

    /// <summary>Every ConfigMap a pod refers to (envFrom, env, volumes) is among the rendered objects.</summary>
    public static List<string> MissingReferences(List<JsonObject> objects)
    {
        var problems = new List<string>();
        foreach (var pod in Pods(objects))
        {
            foreach (var c in ContainerSpecs(pod, init: true).Concat(ContainerSpecs(pod)))
                Resolve(objects, pod, c, problems);
            foreach (var v in (pod.Spec["volumes"] as JsonArray ?? []).OfType<JsonObject>())
                if (v["configMap"] is JsonObject cm && cm["optional"]?.GetValue<bool>() != true && Find(objects, "ConfigMap", (string?)cm["name"], pod.Namespace) is null)
                    problems.Add($"{pod.Id}: volume {v["name"]} mounts ConfigMap '{cm["name"]}', which is not in the rendered objects");
        }
        return problems;
    }

    static int? Port(SiloOptions options, Container c, string key)
    {
        string? s = c.Config(key) ?? options.Defaults.GetValueOrDefault(key);
        return int.TryParse(s, out int p) ? p : null;
    }

    /// <summary>A probe's or Service's port (number or container port name) as a number, or null.</summary>
    static int? ResolvePort(JsonObject container, JsonNode? port)
    {
        if (port is null) return null;
        if (port.GetValueKind() == System.Text.Json.JsonValueKind.Number) return port.GetValue<int>();
        string name = port.GetValue<string>();
        if (int.TryParse(name, out int n)) return n;
        return (container["ports"] as JsonArray ?? []).OfType<JsonObject>().FirstOrDefault(p => (string?)p["name"] == name)?["containerPort"]?.GetValue<int>();
    }

    /// <summary>
    /// Silo containers expose exactly the configured SiloPort and GatewayPort (named silo and gateway), their
    /// readiness and liveness probes (and startup probe, if any) connect to one of them, and every Service that
    /// selects silo pods forwards to them.
    /// </summary>
    public static List<string> PortProblems(List<JsonObject> objects, SiloOptions options)
    {
        var problems = new List<string>();
        foreach (var c in SiloContainers(objects, problems))
        {
            int? silo = Port(options, c, "MrVae:Endpoints:SiloPort"), gateway = Port(options, c, "MrVae:Endpoints:GatewayPort");
            if (silo is null || gateway is null) { problems.Add($"{c.Id}: SiloPort/GatewayPort not configured and no default found in the silo's source"); continue; }
            var ports = (c.Spec["ports"] as JsonArray ?? []).OfType<JsonObject>().ToList();
            var numbers = ports.Select(p => p["containerPort"]?.GetValue<int>()).Order().ToList();
            if (!numbers.SequenceEqual(new int?[] { silo, gateway }.Order()))
                problems.Add($"{c.Id}: container ports [{string.Join(", ", numbers)}], but the silo listens on SiloPort {silo} and GatewayPort {gateway}");
            foreach (var (name, expected) in new[] { ("silo", silo), ("gateway", gateway) })
                if (ports.FirstOrDefault(p => (string?)p["name"] == name)?["containerPort"]?.GetValue<int>() != expected)
                    problems.Add($"{c.Id}: the port named '{name}' is not {expected}");
            foreach (var probe in new[] { "readinessProbe", "livenessProbe", "startupProbe" })
            {
                if (c.Spec[probe] is not JsonObject p)
                {
                    if (probe != "startupProbe") problems.Add($"{c.Id}: no {probe}");
                    continue;
                }
                JsonNode? target = p["tcpSocket"]?["port"] ?? p["httpGet"]?["port"] ?? p["grpc"]?["port"];
                int? port = ResolvePort(c.Spec, target);
                if (port != silo && port != gateway)
                    problems.Add($"{c.Id}: {probe} connects to port {target?.ToJsonString() ?? "(none)"} = {port?.ToString() ?? "?"}, not the silo port {silo} or gateway port {gateway}");
            }
            foreach (var svc in objects.Where(o => (string?)o["kind"] == "Service"))
            {
                var selector = svc["spec"]?["selector"] as JsonObject;
                if (selector is null || selector.Count == 0 || !selector.All(kv => (string?)c.Pod.Labels[kv.Key] == (string?)kv.Value)) continue;
                foreach (var sp in (svc["spec"]?["ports"] as JsonArray ?? []).OfType<JsonObject>())
                {
                    int? target = ResolvePort(c.Spec, sp["targetPort"] ?? sp["port"]);
                    if (target != silo && target != gateway)
                        problems.Add($"Service {svc["metadata"]?["name"]}: port {sp["name"]} forwards to {target?.ToString() ?? "?"} on {c.Id}, not its silo port {silo} or gateway port {gateway}");
                }
            }
        }
        return problems;
    }

    static bool HasGpuResource(JsonObject container) =>
        new[] { "limits", "requests" }.Any(k => container["resources"]?[k]?["nvidia.com/gpu"] is not null);

    static int GpuLimit(JsonObject container) =>
        container["resources"]?["limits"]?["nvidia.com/gpu"] is JsonNode n && int.TryParse(n.ToString(), out int g) ? g : 0;

    /// <summary>GPU overlay: every silo asks for a GPU, computes on cuda:0 and runs the CUDA image.</summary>
    public static List<string> GpuProblems(List<JsonObject> objects)
    {
        var problems = new List<string>();
        var silos = SiloContainers(objects, problems);
        if (silos.Count == 0) problems.Add("no silo containers");
        foreach (var c in silos)
        {
            if (GpuLimit(c.Spec) < 1) problems.Add($"{c.Id}: no nvidia.com/gpu limit");
            if (c.Config("MrVae:Silo:Device") != "cuda:0") problems.Add($"{c.Id}: MrVae:Silo:Device is '{c.Config("MrVae:Silo:Device")}', not cuda:0");
            if (!ImageName(c.Image).Contains("cuda")) problems.Add($"{c.Id}: image {c.Image} is not the CUDA silo image");
        }
        return problems;
    }

    /// <summary>CPU overlay: no container anywhere asks for GPUs; silos compute on the CPU with the CPU image.</summary>
    public static List<string> CpuProblems(List<JsonObject> objects, SiloOptions options)
    {
        var problems = new List<string>();
        foreach (var pod in Pods(objects))
            foreach (var c in ContainerSpecs(pod, init: true).Concat(ContainerSpecs(pod)))
                if (HasGpuResource(c)) problems.Add($"{pod.Id}/{c["name"]}: requests nvidia.com/gpu");
        var silos = SiloContainers(objects, problems);
        if (silos.Count == 0) problems.Add("no silo containers");
        foreach (var c in silos)
        {
            string device = c.Config("MrVae:Silo:Device") ?? options.Defaults.GetValueOrDefault("MrVae:Silo:Device") ?? "?";
            if (device != "cpu") problems.Add($"{c.Id}: MrVae:Silo:Device is '{device}', not cpu");
            if (ImageName(c.Image).Contains("cuda")) problems.Add($"{c.Id}: runs the CUDA image {c.Image}");
        }
        return problems;
    }

    /// <summary>The silo groups serve disjoint modality sets that together cover every modality of the dataset.</summary>
    public static List<string> ModalityProblems(List<JsonObject> objects)
    {
        var problems = new List<string>();
        var owner = new Dictionary<int, string>();
        foreach (var c in SiloContainers(objects, problems))
        {
            string? list = c.Config("MrVae:Silo:Modalities");
            if (string.IsNullOrWhiteSpace(list)) { problems.Add($"{c.Id}: MrVae:Silo:Modalities is not set (the silo would take any modality)"); continue; }
            foreach (var item in list.Split(',', StringSplitOptions.TrimEntries))
            {
                if (!int.TryParse(item, out int j) || j < 0 || j >= Modalities) { problems.Add($"{c.Id}: modality '{item}' is not one of 0..{Modalities - 1}"); continue; }
                if (owner.TryGetValue(j, out var other)) problems.Add($"modality {j} is served by both {other} and {c.Id}");
                else owner[j] = c.Id;
            }
        }
        for (int j = 0; j < Modalities; j++)
            if (!owner.ContainsKey(j)) problems.Add($"no silo serves modality {j}");
        return problems;
    }

    static string? Arg(JsonArray args, string option)
    {
        var list = args.Select(a => (string?)a).ToList();
        int i = list.IndexOf(option);
        return i >= 0 && i + 1 < list.Count ? list[i + 1] : null;
    }

    /// <summary>
    /// The client Job trains through the silos' Redis (a Service with that name and port), the data it makes is
    /// the data the silos make, the silos mount the --silo-data path, and the OTLP endpoints are Services.
    /// </summary>
    public static List<string> ClientProblems(List<JsonObject> objects)
    {
        var problems = new List<string>();
        var silos = SiloContainers(objects, problems);
        var jobs = Pods(objects).Where(p => (string?)p.Owner["kind"] == "Job").ToList();
        var train = jobs.SelectMany(p => ContainerSpecs(p).Select(c => (pod: p, c))).Where(x => x.c["args"] is JsonArray a && (string?)a.FirstOrDefault() == "train").ToList();
        if (train.Count == 0) { problems.Add("no Job runs `mrvae train`"); return problems; }
        bool ServiceHas(string host, int port) => objects.Any(o => (string?)o["kind"] == "Service" && (string?)o["metadata"]?["name"] == host &&
            (o["spec"]?["ports"] as JsonArray ?? []).OfType<JsonObject>().Any(p => p["port"]?.GetValue<int>() == port));
        foreach (var (pod, c) in train)
        {
            var args = (JsonArray)c["args"]!;
            string? cluster = Arg(args, "--cluster");
            if (cluster is null || !cluster.StartsWith("redis://")) { problems.Add($"{pod.Id}: --cluster is '{cluster}', not redis://HOST:PORT"); continue; }
            string redis = cluster["redis://".Length..];
            var parts = redis.Split(':');
            if (parts.Length != 2 || !int.TryParse(parts[1], out int port) || !ServiceHas(parts[0], port)) problems.Add($"{pod.Id}: --cluster {cluster} is not a Service in the rendered objects");
            foreach (var s in silos.Where(s => s.Config("MrVae:Clustering:Redis") != redis))
                problems.Add($"{s.Id}: clusters through Redis '{s.Config("MrVae:Clustering:Redis")}', the client through '{redis}'");
            string? siloData = Arg(args, "--silo-data") ?? Arg(args, "--dataset");
            foreach (var s in silos)
            {
                bool mounted = (s.Spec["volumeMounts"] as JsonArray ?? []).OfType<JsonObject>().Any(m => siloData is not null && (siloData + "/").StartsWith(((string?)m["mountPath"])!.TrimEnd('/') + "/"));
                if (!mounted) problems.Add($"{s.Id}: nothing is mounted at the client's --silo-data {siloData}");
            }
            // Same dataset everywhere: the client's `data make` arguments are the silos' (generation is deterministic by seed).
            string? Make(Pod p) => ContainerSpecs(p, init: true).Select(i => i["args"] as JsonArray).FirstOrDefault(a => (string?)a?.FirstOrDefault() == "data")?.ToJsonString();
            string? clientMake = Make(pod);
            foreach (var s in silos)
                if (Make(s.Pod) is { } siloMake && siloMake != clientMake)
                    problems.Add($"{s.Id}: makes its data with {siloMake}, the client Job with {clientMake ?? "(nothing)"}");
        }
        foreach (var pod in Pods(objects))
            foreach (var c in ContainerSpecs(pod))
            {
                var env = Resolve(objects, pod, c, problems);
                if (env.Config("OTEL_EXPORTER_OTLP_ENDPOINT") is { Length: > 0 } endpoint && Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) && !ServiceHas(uri.Host, uri.Port))
                    problems.Add($"{env.Id}: OTEL_EXPORTER_OTLP_ENDPOINT {endpoint} is not a Service in the rendered objects");
            }
        return problems;
    }
}
