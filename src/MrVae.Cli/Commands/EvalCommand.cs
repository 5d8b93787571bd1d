using System.CommandLine;
using System.Globalization;
using MrVae.Evaluation;
using Spectre.Console;

namespace MrVae.Cli.Commands;

/// <summary>`mrvae eval`: coherence, FD, learned relation and latent probe of a trained run (docs/setup.md, "Evaluation").</summary>
public static class EvalCommand
{
    public static Command Create()
    {
        var run = new Option<string>("--run") { Description = "run directory of `mrvae train` (holds checkpoints/)", Required = true };
        var data = new Option<string>("--data") { Description = "dataset directory the run was trained on (`mrvae data make`)", Required = true };
        var output = new Option<string>("--out") { Description = "report directory: report.json, report.md, PNGs", Required = true };
        var checkpoint = new Option<string>("--checkpoint") { Description = "checkpoint under RUNDIR/checkpoints: best (lowest test loss), last, or final (distributed runs)", DefaultValueFactory = _ => "best" };
        var samples = new Option<int>("--samples") { Description = "test tuples per input subset for coherence and FD", DefaultValueFactory = _ => 1000 };
        var batch = new Option<int>("--batch") { Description = "generation batch size", DefaultValueFactory = _ => 250 };
        var seed = new Option<long>("--seed") { Description = "seed of the generation noise", DefaultValueFactory = _ => 0 };
        var classifierEpochs = new Option<int>("--classifier-epochs") { Description = "epochs for the digit classifiers when they must be trained", DefaultValueFactory = _ => new ClassifierTraining().Epochs };
        var classifierDir = new Option<string?>("--classifiers") { Description = "where the digit classifiers are kept (default DATA/classifiers)" };
        var probeSamples = new Option<int>("--probe-train") { Description = "training tuples for the latent probe", DefaultValueFactory = _ => 5000 };
        var fdMatrix = new Option<bool>("--fd-matrix") { Description = "FD for every (input subset, output) cell, not only the paper's rows (slower)" };
        var inception = new Option<string?>("--inception") { Description = "TorchSharp-format state dict of torchvision's inception_v3 (exportsd.py): also compute FID (slow on a CPU)" };
        var allowOther = new Option<bool>("--allow-other-data") { Description = "evaluate even when --data has another sharing structure than the run's training data" };
        var relationOnly = new Option<bool>("--relation-only") { Description = "mrVAE: only the inferred relation against the data's truth, with each encoder's information and agreement per position (seconds; no classifiers; for a run in progress use --checkpoint last)" };
        var cmd = new Command("eval", "Evaluate a trained run: coherence, FD, learned relation, latent probe; writes report.json, report.md and PNGs")
        {
            run, data, output, checkpoint, samples, batch, seed, classifierEpochs, classifierDir, probeSamples, fdMatrix, allowOther, inception, relationOnly,
        };
        cmd.SetAction(p =>
        {
            CliErrors.Require(p.GetValue(samples) >= 2, "--samples must be at least 2");
            CliErrors.Require(p.GetValue(batch) >= 1, "--batch must be at least 1");
            CliErrors.Require(p.GetValue(classifierEpochs) >= 1, "--classifier-epochs must be at least 1");
            CliErrors.Require(p.GetValue(probeSamples) >= 10, "--probe-train must be at least 10");
            var options = new EvalOptions
            {
                RunDirectory = p.GetValue(run)!, DataDirectory = p.GetValue(data)!, OutputDirectory = p.GetValue(output)!,
                Checkpoint = p.GetValue(checkpoint)!, Seed = p.GetValue(seed), ClassifierDirectory = p.GetValue(classifierDir),
                CrossModal = new CrossModalSettings { Samples = p.GetValue(samples), BatchSize = p.GetValue(batch), FullFdMatrix = p.GetValue(fdMatrix) },
                Classifiers = new ClassifierTraining { Epochs = p.GetValue(classifierEpochs) },
                ProbeTrainSamples = p.GetValue(probeSamples), AllowOtherData = p.GetValue(allowOther), InceptionWeights = p.GetValue(inception),
            };
            bool vectors = MrVae.Data.DatasetDirectory.KindOf(options.DataDirectory) == MrVae.Data.DatasetKind.Vectors;
            if (p.GetValue(relationOnly) && !vectors)
            {
                var (relation, step) = Evaluator.RelationOnly(options, line => AnsiConsole.WriteLine(line));
                PrintRelation(relation, step);
                return 0;
            }
            if (vectors)
            {
                if (p.GetValue(relationOnly)) AnsiConsole.WriteLine("vector data: the whole evaluation takes seconds, so --relation-only runs all of it");
                var report = VectorEvaluator.Run(options, line => AnsiConsole.WriteLine(line));
                PrintSummary(report);
                return 0;
            }
            var evaluation = Evaluator.Run(options, line => AnsiConsole.WriteLine(line));
            PrintSummary(evaluation.Report);
            return 0;
        });
        return cmd;
    }

    static string F(double? v, string format = "F3") => v is not { } x ? "-" : x.ToString(format, CultureInfo.InvariantCulture);

    static void PrintSummary(VectorReport report)
    {
        var table = new Table().AddColumn("measure").AddColumn("value");
        table.AddRow("mean r2 / r2_optimal (single inputs)", report.Prediction.MeanRatioSingle.ToString("F3", CultureInfo.InvariantCulture));
        if (report.Relation is { } rel)
        {
            table.AddRow("relation precision / recall", $"{rel.Precision?.ToString("F3", CultureInfo.InvariantCulture) ?? "-"} / {rel.Recall?.ToString("F3", CultureInfo.InvariantCulture) ?? "-"}");
            foreach (var s in rel.Subsets.Where(s => s.Found || s.SharedInSpec))
                table.AddRow(Markup.Escape($"E[n] {s.Name}{(s.SharedInSpec ? " (true)" : "")}"), s.MeanSize.ToString("F2", CultureInfo.InvariantCulture));
        }
        AnsiConsole.Write(table);
    }

    /// <summary>The found subsets and, per shared position, each member's information (nats) and agreement with the other members (r²).</summary>
    static void PrintRelation(EvaluationReport.ImageRelation relation, long step)
    {
        AnsiConsole.WriteLine($"step {step}: relation precision {F(relation.Precision)}, recall {F(relation.Recall)}; missed {Join(relation.Missed)}; spurious {Join(relation.Spurious)}");
        var found = new Table().AddColumn("member set").AddColumn("positions").AddColumn("in the data");
        foreach (var subset in relation.Subsets.Where(x => x.Found || x.SharedInSpec))
            found.AddRow(Markup.Escape(subset.Subset), subset.MostProbableSize.ToString(CultureInfo.InvariantCulture), subset.SharedInSpec ? "shared" : "-");
        AnsiConsole.Write(found);
        var positions = new Table().AddColumn("position").AddColumn("members: information (nats) / agreement (r2) / predictability (r2)").AddColumn("non-members: predictability (r2)");
        for (int d = 0; d < relation.Membership.Length; d++)
        {
            var members = Enumerable.Range(0, relation.Membership[d].Length).Where(j => relation.Membership[d][j] >= 0.5).ToArray();
            if (members.Length < 2) continue;
            var outsiders = Enumerable.Range(0, relation.Membership[d].Length).Except(members);
            positions.AddRow($"d{d}", Markup.Escape(string.Join("  ", members.Select(j =>
                $"x{j} {F(relation.Information?[d][j], "F2")} / {F(relation.Agreement?[d][j], "F2")} / {F(relation.Predictability?[d][j], "F2")}"))),
                Markup.Escape(string.Join("  ", outsiders.Select(j => $"x{j} {F(relation.Predictability?[d][j], "F2")}"))));
        }
        AnsiConsole.Write(positions);
        static string Join(string[] sets) => sets.Length == 0 ? "none" : string.Join(" ", sets);
    }

    public static void PrintSummary(EvaluationReport report)
    {
        var table = new Table().AddColumn("measure").AddColumn("value");
        table.AddRow("classifier accuracy (main digit, mean)", F(report.ClassifierMainMean));
        if (report.ClassifierOtherPositionsMean is { } other) table.AddRow("classifier accuracy (corner digits, mean)", F(other));
        foreach (var (k, v) in report.Coherence.PaperRows) table.AddRow(Markup.Escape($"coherence {k}"), F(v));
        if (report.Coherence.CornerSummary is { } cs)
            table.AddRow("corner coherence shared / unshared", $"{F(cs.SharedMean)} / {F(cs.UnsharedMean)}");
        foreach (var (k, v) in report.Fd.PaperRows) table.AddRow(Markup.Escape($"FD {k}"), F(v, "F1"));
        if (report.Fid is { } fid)
            foreach (var (k, v) in fid.PaperRows) table.AddRow(Markup.Escape($"FID {k}"), F(v, "F1"));
        if (report.Relation is { } rel) table.AddRow("relation precision / recall", $"{F(rel.Precision)} / {F(rel.Recall)}");
        var probe = report.LatentProbe.Main;
        if (probe.Count > 0) table.AddRow(Markup.Escape($"latent probe {probe.First().Key} / {probe.Last().Key}"), $"{F(probe.First().Value)} / {F(probe.Last().Value)}");
        AnsiConsole.Write(table);
    }
}
