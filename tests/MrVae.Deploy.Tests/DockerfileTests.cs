using System.Text.RegularExpressions;
using System.Xml.Linq;

namespace MrVae.Deploy.Tests;

/// <summary>
/// The Dockerfiles against the repository (no Docker engine runs here, so they are checked by reading): what they
/// copy exists, the restore stage copies every project file the published project needs, the entry point is the
/// published assembly, the CUDA image builds with TorchBackend=cuda, and the images the manifests run have a
/// Dockerfile.
/// </summary>
public sealed partial class DockerfileTests
{
    public sealed record Instruction(string Stage, string Keyword, string Arguments);

    public static List<Instruction> Parse(string file)
    {
        var text = File.ReadAllText(file).Replace("\\\n", " ");
        var result = new List<Instruction>();
        string stage = "";
        foreach (var raw in text.Split('\n'))
        {
            string line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#')) continue;
            int space = line.IndexOf(' ');
            string keyword = (space < 0 ? line : line[..space]).ToUpperInvariant(), args = space < 0 ? "" : line[(space + 1)..].Trim();
            if (keyword == "FROM") stage = FromAlias().Match(args) is { Success: true } m ? m.Groups[1].Value : args;
            result.Add(new Instruction(stage, keyword, args));
        }
        return result;
    }

    public static TheoryData<string> Dockerfiles() => new(new[] { "Dockerfile.silo", "Dockerfile.silo-cuda", "Dockerfile.client" });

    static List<Instruction> Of(string name) => Parse(Repo.Path($"deploy/{name}"));

    static string PublishedProject(List<Instruction> instructions) =>
        PublishProject().Match(instructions.Single(i => i.Keyword == "RUN" && i.Arguments.Contains("dotnet publish")).Arguments).Groups[1].Value;

    /// <summary>The project and every project it references, transitively, as repository-relative paths.</summary>
    static SortedSet<string> ProjectClosure(string project)
    {
        var seen = new SortedSet<string>(StringComparer.Ordinal);
        var todo = new Stack<string>([project]);
        while (todo.Count > 0)
        {
            string p = todo.Pop();
            if (!seen.Add(p)) continue;
            string dir = Path.GetDirectoryName(p)!;
            foreach (var r in XDocument.Load(Repo.Path(p)).Descendants("ProjectReference"))
                todo.Push(Path.GetRelativePath(Repo.Root, Path.GetFullPath(Path.Combine(Repo.Root, dir, r.Attribute("Include")!.Value))).Replace('\\', '/'));
        }
        return seen;
    }

    [Theory, MemberData(nameof(Dockerfiles))]
    public void EverythingCopiedFromTheContextExists(string name)
    {
        foreach (var copy in Of(name).Where(i => i.Keyword == "COPY" && !i.Arguments.StartsWith("--from")))
        {
            var parts = copy.Arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            foreach (var source in parts[..^1])
                Assert.True(File.Exists(Repo.Path(source)) || Directory.Exists(Repo.Path(source)), $"{name}: COPY {source}: not in the repository");
        }
    }

    [Theory, MemberData(nameof(Dockerfiles))]
    public void TheRestoreStageCopiesEveryProjectFileThePublishedProjectNeeds(string name)
    {
        var instructions = Of(name);
        string project = PublishedProject(instructions);
        Assert.True(File.Exists(Repo.Path(project)), $"{name}: publishes {project}, which does not exist");
        int restore = instructions.FindIndex(i => i.Keyword == "RUN" && i.Arguments.Contains("dotnet restore"));
        Assert.True(restore >= 0, $"{name}: no dotnet restore step");
        Assert.Contains(project, instructions[restore].Arguments);
        var copied = instructions.Take(restore).Where(i => i.Keyword == "COPY" && !i.Arguments.StartsWith("--from"))
            .SelectMany(i => i.Arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries)[..^1]).ToHashSet();
        foreach (var needed in ProjectClosure(project))
            Assert.True(copied.Contains(needed), $"{name}: restores {project} before copying {needed} (it references that project; add a COPY line)");
        foreach (var file in new[] { "Directory.Build.props", "Directory.Build.targets", "Directory.Packages.props", "build/" })
            Assert.True(copied.Contains(file), $"{name}: the restore stage lacks {file}");
    }

    [Theory, MemberData(nameof(Dockerfiles))]
    public void TheEntryPointIsThePublishedAssembly(string name)
    {
        var instructions = Of(name);
        string project = PublishedProject(instructions);
        string assembly = XDocument.Load(Repo.Path(project)).Descendants("AssemblyName").Single().Value;
        var entry = instructions.Last(i => i.Keyword == "ENTRYPOINT").Arguments;
        Assert.Equal($"[\"dotnet\", \"/app/{assembly}.dll\"]", entry);
        Assert.Contains(instructions, i => i.Keyword == "COPY" && i.Arguments == "--from=build /app ./");
        Assert.Contains("-o /app", instructions.Single(i => i.Keyword == "RUN" && i.Arguments.Contains("dotnet publish")).Arguments);
    }

    [Fact]
    public void SiloImagesBuildTheRightTorchBackendAndExposeTheSiloPorts()
    {
        foreach (var (name, backend) in new[] { ("Dockerfile.silo", "cpu"), ("Dockerfile.silo-cuda", "cuda") })
        {
            var instructions = Of(name);
            Assert.Equal("src/MrVae.Silo/MrVae.Silo.csproj", PublishedProject(instructions));
            foreach (var run in instructions.Where(i => i.Keyword == "RUN" && i.Arguments.Contains("dotnet ")))
                Assert.Contains($"-p:TorchBackend={backend}", run.Arguments);
            var ports = instructions.Where(i => i.Keyword == "EXPOSE").SelectMany(i => i.Arguments.Split(' ')).ToHashSet();
            Assert.Equal(new HashSet<string> { SiloOptions.Current.Defaults["MrVae:Endpoints:SiloPort"], SiloOptions.Current.Defaults["MrVae:Endpoints:GatewayPort"] }, ports);
        }
        var cuda = Of("Dockerfile.silo-cuda");
        Assert.Contains(cuda, i => i.Keyword == "ARG" && i.Arguments.StartsWith("CUDA_IMAGE=nvidia/cuda:") && i.Arguments.Contains("runtime"));
        Assert.Equal("${CUDA_IMAGE} AS final", cuda.Last(i => i.Keyword == "FROM").Arguments);
        // The TorchBackend property is what the model project switches on.
        var model = File.ReadAllText(Repo.Path("src/MrVae.Model/MrVae.Model.csproj"));
        Assert.Contains("TorchSharp-cuda-linux\" Condition=\"'$(TorchBackend)' == 'cuda'\"", model);
    }

    [Fact]
    public void TheClientImageCarriesMnist()
    {
        var client = Of("Dockerfile.client");
        Assert.Contains(client, i => i.Keyword == "RUN" && i.Arguments.Contains("get-mnist.sh /mnist"));
        Assert.Contains(client, i => i.Keyword == "COPY" && i.Arguments == "--from=mnist /mnist /opt/mnist");
        Assert.Contains(client, i => i.Keyword == "ENV" && i.Arguments.Contains("MRVAE_MNIST_DIR=/opt/mnist"));
        Assert.Contains("MRVAE_MNIST_DIR", File.ReadAllText(Repo.Path("README.md")));
    }

    [Fact]
    public void EveryProjectImageTheManifestsRunHasADockerfile()
    {
        foreach (var overlay in Rendered.OverlayNames)
            foreach (var pod in ManifestChecks.Pods(Rendered.Of(overlay).Objects))
                foreach (var c in ManifestChecks.ContainerSpecs(pod, init: true).Concat(ManifestChecks.ContainerSpecs(pod)))
                {
                    string image = ManifestChecks.ImageName((string?)c["image"] ?? "");
                    if (image.StartsWith("mrvae-"))
                        Assert.True(File.Exists(Repo.Path($"deploy/Dockerfile.{image["mrvae-".Length..]}")), $"{overlay}: {pod.Id} runs {image}, but deploy/Dockerfile.{image["mrvae-".Length..]} does not exist");
                }
    }

    /// <summary>
    /// The .NET image a Dockerfile runs on has every shared framework the published program asks for in its
    /// runtimeconfig.json (built by this test project): the silo needs ASP.NET Core for the Orleans dashboard.
    /// </summary>
    [Theory, MemberData(nameof(Dockerfiles))]
    public void TheRuntimeImageHasEverySharedFrameworkTheProgramNeeds(string name)
    {
        var instructions = Of(name);
        string project = PublishedProject(instructions);
        string output = Repo.Path($"{Path.GetDirectoryName(project)}/bin/{Repo.Configuration}/net10.0");
        string assembly = XDocument.Load(Repo.Path(project)).Descendants("AssemblyName").Single().Value;
        using var config = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(output, $"{assembly}.runtimeconfig.json")));
        var options = config.RootElement.GetProperty("runtimeOptions");
        var needed = (options.TryGetProperty("frameworks", out var list) ? list.EnumerateArray().ToList() : [options.GetProperty("framework")])
            .Select(f => f.GetProperty("name").GetString()!).ToList();
        var image = instructions.Where(i => i.Keyword == "FROM").Select(i => DotnetImage().Match(i.Arguments)).Last(m => m.Success).Groups[1].Value;
        string[] provided = image switch
        {
            "runtime" => ["Microsoft.NETCore.App"],
            "aspnet" => ["Microsoft.NETCore.App", "Microsoft.AspNetCore.App"],
            _ => throw new InvalidOperationException($"{name}: unexpected .NET image dotnet/{image}"),
        };
        Assert.All(needed, f => Assert.Contains(f, provided));
    }

    [GeneratedRegex(@"mcr\.microsoft\.com/dotnet/(runtime|aspnet|sdk):")] private static partial Regex DotnetImage();
    [GeneratedRegex(@"\bAS\s+(\S+)\s*$", RegexOptions.IgnoreCase)] private static partial Regex FromAlias();
    [GeneratedRegex(@"dotnet publish\s+(\S+\.csproj)")] private static partial Regex PublishProject();
}
