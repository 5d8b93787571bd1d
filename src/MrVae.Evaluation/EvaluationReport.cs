using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace MrVae.Evaluation;

/// <summary>
/// report.json of `mrvae eval` on image data, typed. The JSON keys are the report's public format (tests, users and
/// their scripts read them): each property names its key, and properties serialise in the order of the keys. Maps
/// keyed by a cell ("in=0,1->out=0"), a paper row ("x0->x0") or a classifier keep their insertion order. A value that
/// is not finite is null.
/// </summary>
public sealed class EvaluationReport
{
    [JsonPropertyName("model")] public required ModelSection Model { get; init; }
    [JsonPropertyName("data")] public required DataSection Data { get; init; }
    /// <summary>Test tuples per input subset.</summary>
    [JsonPropertyName("samples")] public int Samples { get; init; }
    [JsonPropertyName("seed")] public long Seed { get; init; }
    /// <summary>Test accuracy per digit classifier, then "main_mean" (images with a main digit) and "other_positions_mean" (with corners).</summary>
    [JsonPropertyName("classifier_accuracy")] public required Dictionary<string, double?> ClassifierAccuracy { get; init; }
    [JsonPropertyName("coherence")] public required CoherenceSection Coherence { get; init; }
    [JsonPropertyName("fd")] public required FdSection Fd { get; init; }
    /// <summary>mrVAE's learned relation; null for the baselines, which infer none.</summary>
    [JsonPropertyName("relation")] public ImageRelation? Relation { get; init; }
    [JsonPropertyName("joint_coherence")] public required JointCoherenceSection JointCoherence { get; init; }
    [JsonPropertyName("test_log_likelihood")] public LikelihoodSection? TestLogLikelihood { get; init; }
    [JsonPropertyName("latent_probe")] public required ProbeSection LatentProbe { get; init; }
    [JsonPropertyName("fid")] public FidSection? Fid { get; init; }
    /// <summary>Seconds per part (cross_modal_seconds, …, total_seconds).</summary>
    [JsonPropertyName("timing")] public required Dictionary<string, double> Timing { get; init; }
    /// <summary>The PNGs beside the report (set when it is written).</summary>
    [JsonPropertyName("figures"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public List<string>? Figures { get; set; }

    [JsonIgnore] public double? ClassifierMainMean => ClassifierAccuracy.GetValueOrDefault("main_mean");
    [JsonIgnore] public double? ClassifierOtherPositionsMean => ClassifierAccuracy.GetValueOrDefault("other_positions_mean");

    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>The report as a JSON object (what report.json holds).</summary>
    public JsonObject ToJsonObject() => JsonSerializer.SerializeToNode(this, Json)!.AsObject();

    public static EvaluationReport FromJson(string json) => JsonSerializer.Deserialize<EvaluationReport>(json, Json)
        ?? throw new JsonException("empty report");

    /// <summary>A measurement as the report keeps it: rounded, or null when it is not finite.</summary>
    public static double? Round(double v, int digits = 4) => double.IsFinite(v) ? Math.Round(v, digits) : null;

    public sealed class ModelSection
    {
        [JsonPropertyName("kind")] public required string Kind { get; init; }
        [JsonPropertyName("latent")] public int Latent { get; init; }
        [JsonPropertyName("run")] public string? Run { get; init; }
        [JsonPropertyName("checkpoint")] public string? Checkpoint { get; init; }
        [JsonPropertyName("step")] public long? Step { get; init; }
        [JsonPropertyName("test_loss")] public double? TestLoss { get; init; }
        /// <summary>The model's configuration as the run's config.json spells it.</summary>
        [JsonPropertyName("config")] public JsonNode? Config { get; init; }
    }

    public sealed class DataSection
    {
        [JsonPropertyName("dir")] public string? Dir { get; init; }
        [JsonPropertyName("spec")] public required string Spec { get; init; }
        [JsonPropertyName("modalities")] public int Modalities { get; init; }
        [JsonPropertyName("train")] public int Train { get; init; }
        [JsonPropertyName("test")] public int Test { get; init; }
        [JsonPropertyName("shared_member_sets")] public required string[] SharedMemberSets { get; init; }
        /// <summary>The evaluated data against the run's training data (Evaluator.CheckData); absent where not checked.</summary>
        [JsonPropertyName("fingerprint"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public FingerprintCheck? Fingerprint { get; set; }
    }

    public sealed class FingerprintCheck
    {
        [JsonPropertyName("evaluated")] public JsonNode? Evaluated { get; init; }
        [JsonPropertyName("training")] public JsonNode? Training { get; init; }
        [JsonPropertyName("matches_training")] public bool? MatchesTraining { get; init; }
        [JsonPropertyName("warning"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string? Warning { get; init; }
    }

    public sealed class CoherenceSection
    {
        /// <summary>Mean main-digit coherence over the cells with k inputs (images with a main digit only).</summary>
        [JsonPropertyName("main_mean_by_input_count"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public Dictionary<string, double?>? MainMeanByInputCount { get; init; }
        /// <summary>Main-digit coherence per "in=A->out=j" cell.</summary>
        [JsonPropertyName("main")] public required Dictionary<string, double?> Main { get; init; }
        /// <summary>The paper's rows (x0->x0, X{0,1}->x0, X{0,1,2}->x0).</summary>
        [JsonPropertyName("paper_rows")] public required Dictionary<string, double?> PaperRows { get; init; }
        /// <summary>Corner-digit coherence per "in=A->out=j:factor" (images with corners only).</summary>
        [JsonPropertyName("corner"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public Dictionary<string, double?>? Corner { get; init; }
        [JsonPropertyName("corner_summary"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public CornerSummary? CornerSummary { get; init; }
    }

    public sealed class CornerSummary
    {
        [JsonPropertyName("shared_mean")] public double? SharedMean { get; init; }
        [JsonPropertyName("unshared_mean")] public double? UnsharedMean { get; init; }
        [JsonPropertyName("self_mean")] public double? SelfMean { get; init; }
        [JsonPropertyName("chance")] public double Chance { get; init; }
        [JsonPropertyName("rows")] public required List<CornerRow> Rows { get; init; }
    }

    /// <summary>One input modality → one output modality: its corners the input shows too (shared) and the others.</summary>
    public sealed class CornerRow
    {
        [JsonPropertyName("in")] public int In { get; init; }
        [JsonPropertyName("out")] public int Out { get; init; }
        [JsonPropertyName("shared")] public required Dictionary<string, double?> Shared { get; init; }
        [JsonPropertyName("unshared")] public required Dictionary<string, double?> Unshared { get; init; }
    }

    public sealed class FdSection
    {
        [JsonPropertyName("features")] public required string Features { get; init; }
        [JsonPropertyName("samples")] public int Samples { get; init; }
        [JsonPropertyName("paper_rows")] public required Dictionary<string, double?> PaperRows { get; init; }
        [JsonPropertyName("matrix")] public required Dictionary<string, double?> Matrix { get; init; }
        /// <summary>The floor: real training images against as many real test images, per output ("out=0").</summary>
        [JsonPropertyName("real_train_vs_test")] public required Dictionary<string, double?> RealTrainVsTest { get; init; }
    }

    public sealed class ImageRelation
    {
        [JsonPropertyName("subsets")] public required List<RelationSubset> Subsets { get; init; }
        [JsonPropertyName("rule")] public required string Rule { get; init; }
        [JsonPropertyName("precision")] public double? Precision { get; init; }
        [JsonPropertyName("recall")] public double? Recall { get; init; }
        [JsonPropertyName("predicted")] public int Predicted { get; init; }
        [JsonPropertyName("truth")] public int Truth { get; init; }
        [JsonPropertyName("true_positives")] public int TruePositives { get; init; }
        [JsonPropertyName("missed")] public required string[] Missed { get; init; }
        [JsonPropertyName("spurious")] public required string[] Spurious { get; init; }
        /// <summary>Per modality, the expected latent positions it shares with no other.</summary>
        [JsonPropertyName("private_mean")] public required double?[] PrivateMean { get; init; }
        /// <summary>Per pair of modalities, the expected latent positions they share (the pair heatmap).</summary>
        [JsonPropertyName("pair_shared_dims")] public required double?[][] PairSharedDims { get; init; }
        /// <summary>q(j ∈ A_d): one row per latent position, one column per modality.</summary>
        [JsonPropertyName("membership")] public required double[][] Membership { get; init; }
        /// <summary>I_{d,j}: what modality j's encoder says about its input at position d, nats (<see cref="EncoderInformation"/>); absent in reports written before 2026-12-05.</summary>
        [JsonPropertyName("information"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double[][]? Information { get; init; }
        /// <summary>r²_{d,j}: the share of member or non-member j's code at d that the other members' consensus explains (<see cref="EncoderInformation"/>); null where d has no other member; absent in reports written before 2026-12-05.</summary>
        [JsonPropertyName("agreement"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double?[][]? Agreement { get; init; }
        /// <summary>The leave-one-out r² with which j's whole code predicts d's other members' consensus (<see cref="EncoderInformation"/>); null where d has no other member; absent in reports written before 2026-12-05.</summary>
        [JsonPropertyName("predictability"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double?[][]? Predictability { get; init; }
    }

    public sealed class RelationSubset
    {
        [JsonPropertyName("subset")] public required string Subset { get; init; }
        [JsonPropertyName("mean_size")] public double? MeanSize { get; init; }
        [JsonPropertyName("most_probable_size")] public int MostProbableSize { get; init; }
        [JsonPropertyName("found")] public bool Found { get; init; }
        [JsonPropertyName("shared_in_spec")] public bool SharedInSpec { get; init; }
    }

    public sealed class JointCoherenceSection
    {
        [JsonPropertyName("samples")] public int Samples { get; init; }
        [JsonPropertyName("main")] public double? Main { get; init; }
        [JsonPropertyName("factors")] public required Dictionary<string, JointFactor> Factors { get; init; }
        [JsonPropertyName("definition")] public required string Definition { get; init; }
    }

    public sealed class JointFactor
    {
        [JsonPropertyName("members")] public required string Members { get; init; }
        [JsonPropertyName("agreement")] public double? Agreement { get; init; }
        [JsonPropertyName("chance")] public double? Chance { get; init; }
    }

    public sealed class LikelihoodSection
    {
        [JsonPropertyName("mean_nats")] public double? MeanNats { get; init; }
        [JsonPropertyName("standard_error")] public double? StandardError { get; init; }
        [JsonPropertyName("importance_samples")] public int ImportanceSamples { get; init; }
        [JsonPropertyName("tuples")] public int Tuples { get; init; }
        [JsonPropertyName("estimator")] public required string Estimator { get; init; }
    }

    public sealed class ProbeSection
    {
        /// <summary>Main-digit accuracy per input subset ("in=0", …, "in=0,1,2,3,4").</summary>
        [JsonPropertyName("main")] public required Dictionary<string, double?> Main { get; init; }
        [JsonPropertyName("train_samples")] public int TrainSamples { get; init; }
        [JsonPropertyName("test_samples")] public int TestSamples { get; init; }
        [JsonPropertyName("features")] public required string Features { get; init; }
        /// <summary>Per "in=j:factor", the accuracy on the other factors (images with corners only).</summary>
        [JsonPropertyName("factors"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public Dictionary<string, double?>? Factors { get; init; }
        /// <summary>mrVAE only: per factor of the spec, how well its label is read from its own subspace and from each member's private positions.</summary>
        [JsonPropertyName("subspaces"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public List<SubspaceProbe>? Subspaces { get; init; }
    }

    public sealed class SubspaceProbe
    {
        [JsonPropertyName("factor")] public required string Factor { get; init; }
        [JsonPropertyName("members")] public required string Members { get; init; }
        /// <summary>Positions whose most probable member set is exactly the factor's members.</summary>
        [JsonPropertyName("subspace_positions")] public int SubspacePositions { get; init; }
        [JsonPropertyName("by_member")] public required Dictionary<string, SubspaceAccuracy> ByMember { get; init; }
    }

    public sealed class SubspaceAccuracy
    {
        /// <summary>Probe accuracy from μ_j at the factor's subspace (null when it has no position).</summary>
        [JsonPropertyName("subspace")] public double? Subspace { get; init; }
        /// <summary>Probe accuracy from μ_j at j's private positions (no other member).</summary>
        [JsonPropertyName("private")] public double? Private { get; init; }
        [JsonPropertyName("private_positions")] public int PrivatePositions { get; init; }
    }

    public sealed class FidSection
    {
        [JsonPropertyName("paper_rows")] public required Dictionary<string, double?> PaperRows { get; init; }
        [JsonPropertyName("samples")] public int Samples { get; init; }
        [JsonPropertyName("weights")] public required string Weights { get; init; }
        [JsonPropertyName("features")] public required string Features { get; init; }
    }
}
