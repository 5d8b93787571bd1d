using System.Text.Json.Nodes;

namespace MrVae.Evaluation.Tests;

/// <summary>The typed report reads and writes report.json in the shape users and scripts read (every key as before).</summary>
public sealed class EvaluationReportTests
{
    // report.json as `mrvae eval` wrote it before the report was typed (an mrVAE run on extended PolyMNIST, cut down:
    // two modalities' worth of cells), with every optional part present, and NaN where a value was not finite.
    const string Written = """
    {
      "model": { "kind": "mrvae", "latent": 16, "run": "runs/ext", "checkpoint": "best", "step": 600, "test_loss": 1234.5,
                 "config": { "kind": "MrVae", "modalities": 5, "latent_dim": 16 } },
      "data": { "dir": "data/ext", "spec": "polymnist-extended", "modalities": 5, "train": 2000, "test": 500,
                "shared_member_sets": ["{0,1}", "{0,1,2,3,4}"],
                "fingerprint": { "evaluated": { "spec": "polymnist-extended", "seed": 0 }, "training": { "spec": "polymnist-extended", "seed": 1 },
                                 "matches_training": false, "warning": "the data was made with another seed" } },
      "samples": 200,
      "seed": 0,
      "classifier_accuracy": { "x0:digit": 0.98, "x0:corner-0-1": 0.91, "main_mean": 0.975, "other_positions_mean": 0.9 },
      "coherence": {
        "main_mean_by_input_count": { "1": 0.5, "5": 0.8 },
        "main": { "in=0->out=0": 0.84, "in=1->out=0": 0.55 },
        "paper_rows": { "x0->x0": 0.84, "X{0,1}->x0": 0.83, "X{0,1,2}->x0": 0.83 },
        "corner": { "in=0->out=1:corner-0-1": 0.9, "in=0->out=1:corner-1-2": null },
        "corner_summary": { "shared_mean": 0.9, "unshared_mean": 0.1, "self_mean": null, "chance": 0.1,
                            "rows": [ { "in": 0, "out": 1, "shared": { "corner-0-1": 0.9 }, "unshared": { "corner-1-2": 0.1 } } ] }
      },
      "fd": { "features": "penultimate layer", "samples": 200, "paper_rows": { "x0->x0": 12.5, "x1->x0": 20.25, "X{1,2}->x0": 18 },
              "matrix": { "in=0->out=0": 12.5 }, "real_train_vs_test": { "out=0": 3.5 } },
      "relation": {
        "subsets": [ { "subset": "{0,1}", "mean_size": 2.5, "most_probable_size": 3, "found": true, "shared_in_spec": true } ],
        "rule": "found: ...", "precision": 0.5, "recall": 1, "predicted": 2, "truth": 1, "true_positives": 1,
        "missed": [], "spurious": ["{2,3}"], "private_mean": [13.5, null], "pair_shared_dims": [[null, 2.5], [2.5, null]],
        "membership": [[0.9, 0.1], ["NaN", 0.5]],
        "information": [[1.25, 0.0], [0.03, 2.5]]
      },
      "joint_coherence": { "samples": 200, "main": 0.3, "factors": { "digit": { "members": "0,1,2,3,4", "agreement": 0.3, "chance": 0.0001 } },
                           "definition": "latents from the prior" },
      "test_log_likelihood": { "mean_nats": -1500.25, "standard_error": 3.5, "importance_samples": 100, "tuples": 500, "estimator": "IWAE" },
      "latent_probe": { "main": { "in=0": 0.9, "in=0,1,2,3,4": 0.95 }, "train_samples": 5000, "test_samples": 200, "features": "encoder means",
                        "factors": { "in=0:corner-0-1": 0.7 } },
      "fid": { "paper_rows": { "x0->x0": 80.5 }, "samples": 200, "weights": "inception.dat", "features": "InceptionV3 pool features" },
      "timing": { "cross_modal_seconds": 10.5, "joint_coherence_seconds": 1, "likelihood_seconds": 2, "probe_seconds": 3, "fid_seconds": 4,
                  "classifier_train_seconds": 0, "total_seconds": 20.5 },
      "figures": ["coherence.png", "relation_heatmap.png", "relation_pairs.png"]
    }
    """;

    [Fact]
    public void TheTypedReportRoundTripsReportJsonKeyForKey()
    {
        var report = EvaluationReport.FromJson(Written);
        Assert.Equal(0.84, report.Coherence.PaperRows["x0->x0"]);
        Assert.Equal(0.9, report.ClassifierOtherPositionsMean);
        Assert.Equal(2.5, report.Relation!.PairSharedDims[0][1]);
        Assert.True(double.IsNaN(report.Relation.Membership[1][0]));
        Assert.Equal("the data was made with another seed", report.Data.Fingerprint!.Warning);

        string again = report.ToJson();
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(Written), JsonNode.Parse(again)), again);
        Assert.Equal(Keys(JsonNode.Parse(Written)!), Keys(JsonNode.Parse(again)!));   // every key, in its order
        Assert.Equal(again, EvaluationReport.FromJson(again).ToJson());
    }

    [Fact]
    public void AbsentPartsStayAbsentAndNullOnesNull()
    {
        // A baseline on vanilla PolyMNIST: no relation, no FID, no likelihood; no corners; not yet written (no figures).
        var full = EvaluationReport.FromJson(Written);
        var baseline = new EvaluationReport
        {
            Model = full.Model, Samples = 10, Seed = 1, ClassifierAccuracy = new() { ["x0:digit"] = 0.9, ["main_mean"] = 0.9 },
            Data = new() { Spec = "polymnist", Modalities = 5, Train = 10, Test = 10, SharedMemberSets = ["{0,1,2,3,4}"] },
            Coherence = new() { MainMeanByInputCount = new() { ["1"] = 0.5 }, Main = new() { ["in=0->out=0"] = 0.5 }, PaperRows = new() { ["x0->x0"] = null } },
            Fd = full.Fd, JointCoherence = full.JointCoherence, LatentProbe = new() { Main = new(), Features = "f" },
            Timing = new() { ["total_seconds"] = 1 },
        };
        var json = JsonNode.Parse(baseline.ToJson())!.AsObject();
        Assert.Equal(["model", "data", "samples", "seed", "classifier_accuracy", "coherence", "fd", "relation", "joint_coherence",
            "test_log_likelihood", "latent_probe", "fid", "timing"], json.Select(p => p.Key));
        Assert.Null(json["relation"]); Assert.Null(json["fid"]); Assert.Null(json["test_log_likelihood"]);
        Assert.Equal(["main_mean_by_input_count", "main", "paper_rows"], json["coherence"]!.AsObject().Select(p => p.Key));
        Assert.True(json["coherence"]!["paper_rows"]!.AsObject().ContainsKey("x0->x0"));
        Assert.False(json["data"]!.AsObject().ContainsKey("fingerprint"));
        Assert.False(json["latent_probe"]!.AsObject().ContainsKey("factors"));
        Assert.Equal(baseline.ToJson(), EvaluationReport.FromJson(baseline.ToJson()).ToJson());
    }

    static List<string> Keys(JsonNode node, string path = "")
    {
        var keys = new List<string>();
        if (node is JsonObject o)
            foreach (var (k, v) in o) { keys.Add(path + "/" + k); if (v is not null) keys.AddRange(Keys(v, path + "/" + k)); }
        else if (node is JsonArray a)
            for (int i = 0; i < a.Count; i++) if (a[i] is { } item) keys.AddRange(Keys(item, $"{path}[{i}]"));
        return keys;
    }
}
