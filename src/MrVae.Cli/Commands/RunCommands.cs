using System.CommandLine;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using MrVae.Client;
using MrVae.Grains;
using Spectre.Console;
using Spectre.Console.Rendering;
using MrVae.Data;

namespace MrVae.Cli.Commands;

/// <summary>
/// `mrvae status|attach|detach|stop --run ID`: control a run that is going on, from any machine that reaches the
/// cluster (an embedded run listens on localhost:30000 unless that port was taken; `train` prints the command).
/// </summary>
public static class RunCommands
{
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true, Converters = { new System.Text.Json.Serialization.JsonStringEnumConverter() } };

    public static IEnumerable<Command> CreateAll() => [Status(), Attach(), Detach(), Stop()];

    static Option<string> RunOption() => new("--run") { Description = "the run id (`mrvae train` prints it; RUNDIR/config.json has it)", Required = true };
    static Option<string> ClusterOption() => new("--cluster")
    {
        Description = "the cluster: HOST:GATEWAYPORT or redis://HOST:PORT",
        DefaultValueFactory = _ => $"localhost:{ClusterTraining.DefaultGatewayPort}",
    };
    static Option<bool> JsonOption() => new("--json") { Description = "print the run's status as JSON (for scripts)" };
    static Option<int> ModalityOption() => new("--modality") { Description = "modality index (0-based)", Required = true };

    static Command Status()
    {
        var run = RunOption(); var cluster = ClusterOption(); var tls = CliCluster.TlsOption(); var json = JsonOption();
        var watch = new Option<bool>("--watch") { Description = "keep the table live until the run ends (Ctrl+C to leave; the run goes on)" };
        var cmd = new Command("status", "Show a run: state, step, loss, checkpoint, and each modality's silo and health") { run, cluster, tls, json, watch };
        cmd.SetAction(async (p, cancel) =>
        {
            using var client = await CliCluster.Connect(p.GetValue(cluster)!, p.GetValue(tls));
            var coordinator = Coordinator(client, p.GetValue(run)!);
            RunStatus status;
            try { status = await Known(coordinator, p.GetValue(run)!).WaitAsync(TimeSpan.FromSeconds(20), cancel); }
            catch (Exception e) when (e is OrleansException or TimeoutException)
            {
                // A failover in progress: the coordinator's silo died and the cluster has not yet declared it dead.
                string message = $"run {p.GetValue(run)}: coordinator unreachable ({e.Message.ReplaceLineEndings(" ")}); its silo may have died: the run resumes from its last checkpoint on another silo once the cluster declares that silo dead; ask again in a few seconds";
                if (p.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(new { run = p.GetValue(run), state = "unreachable", error = message }));
                else AnsiConsole.MarkupLineInterpolated($"[red]unreachable[/]: {message}");
                return 3;
            }
            if (p.GetValue(json)) { Console.WriteLine(ToJson(p.GetValue(run)!, status)); return 0; }
            if (!p.GetValue(watch)) { AnsiConsole.Write(Render(p.GetValue(run)!, status)); return 0; }
            await AnsiConsole.Live(Render(p.GetValue(run)!, status)).StartAsync(async live =>
            {
                while (!cancel.IsCancellationRequested && status.State is RunState.Running)
                {
                    try { await Task.Delay(1000, cancel); } catch (OperationCanceledException) { break; }
                    try { status = await coordinator.Status().WaitAsync(TimeSpan.FromSeconds(20), cancel); }
                    catch (Exception e) when (e is OrleansException or TimeoutException)
                    {
                        live.UpdateTarget(new Markup($"[red]coordinator unreachable[/] since step {status.Step}: waiting for the run to resume on another silo ({Markup.Escape(e.Message.ReplaceLineEndings(" "))})"));
                        continue;
                    }
                    live.UpdateTarget(Render(p.GetValue(run)!, status));
                }
            });
            return 0;
        });
        return cmd;
    }

    static Command Attach()
    {
        var run = RunOption(); var cluster = ClusterOption(); var tls = CliCluster.TlsOption(); var json = JsonOption(); var modality = ModalityOption();
        var data = new Option<string?>("--data") { Description = "the modality's dataset directory as its silo sees it (default: the run's)" };
        var silo = new Option<string?>("--silo") { Description = "run it on a silo with this role (MrVae:Silo:Role; default role: the silo's host name); default: any silo serving the modality" };
        var cmd = new Command("attach", "Add a modality to a running run from the next step on (it restores its last checkpoint if it had one)") { run, cluster, tls, modality, data, silo, json };
        cmd.SetAction(async (p, cancel) =>
        {
            using var client = await CliCluster.Connect(p.GetValue(cluster)!, p.GetValue(tls));
            var coordinator = Coordinator(client, p.GetValue(run)!);
            await Known(coordinator, p.GetValue(run)!);
            var status = await coordinator.Attach(p.GetValue(modality), p.GetValue(data), p.GetValue(silo));
            Report(p.GetValue(run)!, status, p.GetValue(json), $"modality {p.GetValue(modality)} joins run {p.GetValue(run)} at the next step boundary");
            return 0;
        });
        return cmd;
    }

    static Command Detach()
    {
        var run = RunOption(); var cluster = ClusterOption(); var tls = CliCluster.TlsOption(); var json = JsonOption(); var modality = ModalityOption();
        var cmd = new Command("detach", "Remove a modality from a running run after the step in flight (it saves a snapshot first)") { run, cluster, tls, modality, json };
        cmd.SetAction(async (p, cancel) =>
        {
            using var client = await CliCluster.Connect(p.GetValue(cluster)!, p.GetValue(tls));
            var coordinator = Coordinator(client, p.GetValue(run)!);
            await Known(coordinator, p.GetValue(run)!);
            var status = await coordinator.Detach(p.GetValue(modality));
            Report(p.GetValue(run)!, status, p.GetValue(json), $"modality {p.GetValue(modality)} leaves run {p.GetValue(run)} at the next step boundary");
            return 0;
        });
        return cmd;
    }

    static Command Stop()
    {
        var run = RunOption(); var cluster = ClusterOption(); var tls = CliCluster.TlsOption(); var json = JsonOption();
        var wait = new Option<bool>("--wait") { Description = "wait until the run has stopped and written its final checkpoint" };
        var cmd = new Command("stop", "End a run after the step in flight, with a final checkpoint (mrvae train --resume continues it)") { run, cluster, tls, wait, json };
        cmd.SetAction(async (p, cancel) =>
        {
            using var client = await CliCluster.Connect(p.GetValue(cluster)!, p.GetValue(tls));
            var coordinator = Coordinator(client, p.GetValue(run)!);
            await Known(coordinator, p.GetValue(run)!);
            var status = await coordinator.Stop();
            while (p.GetValue(wait) && status.State == RunState.Running)
            {
                await Task.Delay(200, cancel);
                status = await coordinator.Status();
            }
            Report(p.GetValue(run)!, status, p.GetValue(json), p.GetValue(wait)
                ? $"run {p.GetValue(run)} stopped at step {status.Step}, checkpoint at step {status.CheckpointStep}"
                : $"run {p.GetValue(run)} stops after the step in flight");
            return 0;
        });
        return cmd;
    }

    static ICoordinatorGrain Coordinator(IHost client, string run) => client.Services.GetRequiredService<IGrainFactory>().GetGrain<ICoordinatorGrain>(run);

    /// <summary>The run's status, or a clear error when the cluster has never heard of it.</summary>
    static async Task<RunStatus> Known(ICoordinatorGrain coordinator, string run)
    {
        var status = await coordinator.Status();
        return status.State == RunState.Created
            ? throw new UserInputException($"unknown run {run} on this cluster: check --run (mrvae train prints the id) and --cluster")
            : status;
    }

    static void Report(string run, RunStatus status, bool json, string message)
    {
        if (json) Console.WriteLine(ToJson(run, status));
        else AnsiConsole.MarkupLineInterpolated($"[green]ok[/]: {message} (members: {string.Join(",", status.Members)})");
    }

    public static string ToJson(string run, RunStatus s) => JsonSerializer.Serialize(new
    {
        run, state = s.State, step = s.Step, total_steps = s.TotalSteps, last_loss = s.LastLoss, checkpoint_step = s.CheckpointStep,
        incarnation = s.Incarnation, coordinator_silo = s.CoordinatorSilo, error = s.Error, unreachable_silos = s.UnreachableSilos ?? [],
        modalities = Health(s).Select(h => new { modality = h.Modality, silo = h.Silo, health = h.Health }),
        events = s.Events.TakeLast(20).Select(e => new { step = e.Step, kind = e.Kind, modality = e.Modality, message = e.Message, utc = e.Utc }),
    }, Json);

    /// <summary>Each modality the run has known: where it is and how it is doing (from members, drops and events).</summary>
    static IEnumerable<(int Modality, string Silo, string Health)> Health(RunStatus s)
    {
        var known = s.Members.Concat(s.Dropped ?? []).Concat(s.Events.Where(e => e.Modality >= 0).Select(e => e.Modality)).Distinct().OrderBy(j => j);
        foreach (int j in known)
        {
            string silo = s.MemberSilos.GetValueOrDefault(j) ?? "";
            var lastEvent = s.Events.LastOrDefault(e => e.Modality == j);
            bool unreachable = s.UnreachableSilos?.Contains(silo) == true;
            string health = s.Members.Contains(j) ? (unreachable ? "unreachable (its silo is not active; dropped at the next step boundary if it does not answer)" : "training")
                : s.Dropped?.Contains(j) == true && unreachable ? $"unreachable: dropped ({lastEvent?.Message ?? "failed"}); rejoins when its silo is back"
                : s.Dropped?.Contains(j) == true ? $"dropped: {lastEvent?.Message ?? "failed"} (rejoins when its silo is back)"
                : lastEvent?.Kind == "detached" ? "detached"
                : lastEvent?.Kind ?? "";
            yield return (j, silo, health);
        }
    }

    static IRenderable Render(string run, RunStatus s)
    {
        string state = s.State switch
        {
            RunState.Running => "[green]running[/]", RunState.Finished => "[blue]finished[/]", RunState.Failed => "[red]failed[/]",
            RunState.Stopped => "[yellow]stopped[/]", _ => s.State.ToString(),
        };
        var summary = new Grid().AddColumn().AddColumn();
        summary.AddRow("[bold]run[/]", Markup.Escape(run));
        summary.AddRow("[bold]state[/]", state + (s.Error is null ? "" : $" [red]{Markup.Escape(s.Error)}[/]"));
        summary.AddRow("[bold]step[/]", $"{s.Step} / {s.TotalSteps}");
        summary.AddRow("[bold]loss[/]", s.LastLoss is { } l ? $"{l:F2}" : "-");
        summary.AddRow("[bold]checkpoint[/]", s.CheckpointStep is { } c ? $"step {c}" : "none yet");
        summary.AddRow("[bold]coordinator[/]", Markup.Escape(s.CoordinatorSilo) + (s.Incarnation > 0 ? $" (resumed {s.Incarnation}×, from step {s.StartStep})" : ""));

        var members = new Table().Border(TableBorder.Rounded).AddColumn("modality").AddColumn("silo").AddColumn("health");
        foreach (var (j, silo, health) in Health(s))
        {
            string colour = health == "training" ? "green" : health.StartsWith("dropped") || health.StartsWith("unreachable") ? "red" : "yellow";
            members.AddRow(j.ToString(), Markup.Escape(silo), $"[{colour}]{Markup.Escape(health)}[/]");
        }
        var events = new Table().Border(TableBorder.Simple).AddColumn("step").AddColumn("event").AddColumn("modality").AddColumn("message");
        foreach (var e in s.Events.TakeLast(10))
            events.AddRow(e.Step.ToString(), e.Kind, e.Modality >= 0 ? e.Modality.ToString() : "", Markup.Escape(e.Message));
        return new Rows(summary, members, events);
    }
}
