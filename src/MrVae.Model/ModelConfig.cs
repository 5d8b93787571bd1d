using MrVae.Data;
using System.Text.Json.Serialization;

namespace MrVae.Model;

/// <summary>Which multimodal objective the coordinator runs over the shared encoders and decoders.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ModelKind>))]
public enum ModelKind { MrVae, MoPoE, Mvae, Mmvae }

/// <summary>The decoders' pixel likelihood p(x_j | z̃_j), with the fixed scale <see cref="ModelConfig.LikelihoodScale"/>.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<PixelLikelihood>))]
public enum PixelLikelihood
{
    /// <summary>Laplace (L1), MoPoE's PolyMNIST choice and model.md's default.</summary>
    Laplace,
    /// <summary>
    /// Gaussian (L2). At short budgets it learns digits where Laplace does not: L1 pulls every pixel to its
    /// conditional median, which is background wherever the decoder is not yet sure of a stroke, so the digit
    /// gives no gradient until it is already half learned; L2 pulls to the mean and rewards partial digits.
    /// </summary>
    Gaussian,
}

/// <summary>Everything that defines a model and its objective (not the optimiser or the data).</summary>
public sealed record ModelConfig
{
    public ModelKind Kind { get; init; } = ModelKind.MrVae;
    public int Modalities { get; init; } = 5;
    /// <summary>Latent size D per modality.</summary>
    public int LatentDim { get; init; } = 32;
    /// <summary>Width of the encoder's penultimate layer (model.md: D').</summary>
    public int EncoderHidden { get; init; } = 128;
    /// <summary>Largest shared subset order (null: all subsets of size ≥ 2).</summary>
    public int? MaxSubsetOrder { get; init; }
    public double Beta { get; init; } = 2.5;
    /// <summary>mrVAE: weight β_n of the membership structure's KL against its prior (once per step).</summary>
    public double BetaSize { get; init; } = 3.0;
    public PixelLikelihood Likelihood { get; init; } = PixelLikelihood.Laplace;
    /// <summary>Likelihood scale on pixels in [0,1]: Laplace b (0.75 as MoPoE's PolyMNIST code) or Gaussian σ.</summary>
    public double LikelihoodScale { get; init; } = 0.75;
    /// <summary>
    /// Images: within each square where the dataset draws one of the modality's digits (<see cref="DigitSquares"/>), the
    /// likelihood scale is <see cref="LikelihoodScale"/> · side / (the modality's largest side), so that a small digit
    /// (extended PolyMNIST's 10 × 10 corners) weighs as much in total as the largest one; elsewhere it is
    /// <see cref="LikelihoodScale"/>. Off: <see cref="LikelihoodScale"/> on every pixel.
    /// </summary>
    public bool EqualDigitWeight { get; init; }
    /// <summary>Images: where the dataset's sharing spec draws its digits (spec.json's placements), set from the data by <see cref="WithDigitSquares"/>.</summary>
    public FactorPlacement[] DigitSquares { get; init; } = [];
    /// <summary>Weight of the subset-training term (K drawn per sample); 0 turns it off.</summary>
    public double SubsetWeight { get; init; } = 1.0;
    /// <summary>Linear KL warm-up: β grows from 0 to <see cref="Beta"/> over this many steps (0: none).</summary>
    public long BetaWarmupSteps { get; init; }
    /// <summary>mrVAE: β_n grows linearly from 0 to <see cref="BetaSize"/> over this many steps (0: none), so the structure prior does not prune shared positions before the encoders carry content.</summary>
    public long StructureWarmupSteps { get; init; }
    /// <summary>Size of a vector modality (0: PolyMNIST images, 3 × 28 × 28).</summary>
    public int ObservedDim { get; init; }
    /// <summary>mrVAE: the prior probability ρ that a modality is a member of a latent position's shared variable.</summary>
    public double MembershipPrior { get; init; } = 0.1;
    /// <summary>mrVAE: the last this many latent positions are every modality's own and never shared, so joining a shared position does not cost a modality private capacity (0: every position may be shared).</summary>
    public int PrivatePositions { get; init; }
    /// <summary>mrVAE: the structure term is KL(p(G) ‖ q(G)) instead of KL(q(G) ‖ p(G)): its gradient per membership logit is β_n (q − ρ), which does not vanish when a membership saturates.</summary>
    public bool ReverseStructureKl { get; init; }
    /// <summary>mrVAE: each member's expert is charged, weighted by its membership, the KL from the prior of its aggregate posterior over the batch (moment-matched), so a member cannot hold an input-independent, off-centre expert for free.</summary>
    public bool MemberMarginalKl { get; init; }
    /// <summary>mrVAE: the membership prior of a modality at a position is 1 − ρ where its code there agrees with the position's other members' consensus or its whole code predicts that consensus (per batch, either r² ≥ 0.2) and ρ elsewhere, so members that say nothing of the shared content leave and modalities that can say it join; ρ for every modality at a position where fewer than two members carry information (≥ 0.2 nats).</summary>
    public bool AgreementPrior { get; init; }
    /// <summary>mrVAE: each shareable position starts with the members of one shared subset (smallest subsets first, cycling; q ≈ 0.88 inside, 0.12 outside) instead of ½ for every modality, and the memberships hold through the structure warm-up, so that small member sets exist while the encoders align.</summary>
    public bool InitialMemberSets { get; init; }
    /// <summary>mrVAE: a modality's own variables have the prior N(A_j s, diag(1 − ‖A_{j,d}‖²)) given the shared variables s of the positions it is a member of in the most probable structure (a learned linear map per modality, starting at 0), instead of N(0, 1): with s drawn from its prior each own variable is still N(0, 1); a missing modality's own variables are drawn from it.</summary>
    public bool ConditionalPrivatePrior { get; init; }
    /// <summary>mrVAE: in the subset view each available member's own variables are drawn from their prior instead of its posterior with this probability (per sample and member), so its decoder must take what the member shares with others from the shared positions (0: never).</summary>
    public double SubsetOwnDropout { get; init; }

    /// <summary>This configuration with the digit squares of <paramref name="spec"/> (null: vector data, none).</summary>
    public ModelConfig WithDigitSquares(PolyMnistSpec? spec) => this with { DigitSquares = spec?.Factors.SelectMany(f => f.Placements).ToArray() ?? [] };

    // Value equality through the JSON form: the record's own would compare DigitSquares by reference.
    public bool Equals(ModelConfig? other) => other is not null && ToJson() == other.ToJson();
    public override int GetHashCode() => ToJson().GetHashCode();

    public string ToJson() => System.Text.Json.JsonSerializer.Serialize(this);

    public static ModelConfig FromJson(string json) =>
        System.Text.Json.JsonSerializer.Deserialize<ModelConfig>(json) ?? throw new UserInputException("empty model configuration");

    /// <summary>"Name=Value" for each setting whose value in this configuration differs from <paramref name="other"/>'s (values as JSON).</summary>
    public IReadOnlyList<string> SettingsDifferentFrom(ModelConfig other)
    {
        var mine = System.Text.Json.Nodes.JsonNode.Parse(ToJson())!.AsObject();
        var theirs = System.Text.Json.Nodes.JsonNode.Parse(other.ToJson())!.AsObject();
        return mine.Where(p => p.Value?.ToJsonString() != theirs[p.Key]?.ToJsonString()).Select(p => $"{p.Key}={p.Value?.ToJsonString()}").ToList();
    }

    /// <summary>
    /// This configuration with one property set from "Name=Value" (the property's name, any case, snake_case too; the value as JSON,
    /// or a bare word for enums): how the command line reaches options that have no flag of their own.
    /// </summary>
    public ModelConfig WithSetting(string assignment)
    {
        int eq = assignment.IndexOf('=');
        if (eq <= 0) throw new UserInputException($"model setting '{assignment}' is not NAME=VALUE");
        string name = assignment[..eq].Trim(), text = assignment[(eq + 1)..].Trim();
        var json = System.Text.Json.Nodes.JsonNode.Parse(ToJson())!.AsObject();
        // Any case, with or without underscores: run directories' config.json spells the same names in snake_case.
        static string Plain(string n) => n.Replace("_", "").ToLowerInvariant();
        string key = json.Select(p => p.Key).FirstOrDefault(k => Plain(k) == Plain(name))
            ?? throw new UserInputException($"unknown model setting '{name}': one of {string.Join(", ", json.Select(p => p.Key))}");
        System.Text.Json.Nodes.JsonNode? value;
        try { value = System.Text.Json.Nodes.JsonNode.Parse(text); }
        catch (System.Text.Json.JsonException) { value = System.Text.Json.Nodes.JsonValue.Create(text); }
        json[key] = value;
        try { return FromJson(json.ToJsonString()); }
        catch (System.Text.Json.JsonException e) { throw new UserInputException($"model setting {key}={text}: {e.Message}"); }
    }

    /// <summary><see cref="WithSetting"/> for each assignment, in order (later ones win).</summary>
    public ModelConfig WithSettings(IEnumerable<string> assignments) => assignments.Aggregate(this, (config, assignment) => config.WithSetting(assignment));

    /// <summary>This configuration, or a <see cref="UserInputException"/> naming the first setting out of range and its valid range.</summary>
    public ModelConfig Validated()
    {
        static void Require(bool ok, string what) { if (!ok) throw new UserInputException($"model setting {what} (set it with --set NAME=VALUE or the command's flag)"); }
        Require(Modalities >= 2, $"Modalities={Modalities}: a multimodal model needs at least 2 modalities");
        Require(LatentDim >= 1, $"LatentDim={LatentDim}: the latent size must be at least 1");
        Require(EncoderHidden >= 1, $"EncoderHidden={EncoderHidden}: must be at least 1");
        Require(MaxSubsetOrder is null || (MaxSubsetOrder >= 2 && MaxSubsetOrder <= Modalities), $"MaxSubsetOrder={MaxSubsetOrder}: must be between 2 and the number of modalities ({Modalities}), or null for all");
        Require(double.IsFinite(Beta) && Beta >= 0, $"Beta={Beta}: must be a finite number ≥ 0");
        Require(double.IsFinite(BetaSize) && BetaSize >= 0, $"BetaSize={BetaSize}: must be a finite number ≥ 0");
        Require(double.IsFinite(LikelihoodScale) && LikelihoodScale > 0, $"LikelihoodScale={LikelihoodScale}: must be a finite number > 0");
        Require(!EqualDigitWeight || ObservedDim == 0, $"EqualDigitWeight=true: applies to images only (this is vector data of size {ObservedDim}); set it false");
        Require(!EqualDigitWeight || DigitSquares.Length > 0, "EqualDigitWeight=true: needs DigitSquares, where the dataset draws its digits; train and experiment take them from the dataset's spec.json");
        foreach (var q in DigitSquares)
            Require(q.Modality >= 0 && q.Modality < Modalities && q.Size > 0 && q.X >= 0 && q.Y >= 0 && q.X + q.Size <= PolyMnistSpec.Side && q.Y + q.Size <= PolyMnistSpec.Side,
                $"DigitSquares: {q} is not a square inside a {PolyMnistSpec.Side} × {PolyMnistSpec.Side} image of one of the {Modalities} modalities");
        Require(double.IsFinite(SubsetWeight) && SubsetWeight >= 0, $"SubsetWeight={SubsetWeight}: must be a finite number ≥ 0");
        Require(SubsetOwnDropout is >= 0 and <= 1, $"SubsetOwnDropout={SubsetOwnDropout}: must be a probability in [0, 1]");
        Require(BetaWarmupSteps >= 0, $"BetaWarmupSteps={BetaWarmupSteps}: must be ≥ 0 (0: no warm-up)");
        Require(StructureWarmupSteps >= 0, $"StructureWarmupSteps={StructureWarmupSteps}: must be ≥ 0 (0: no warm-up)");
        Require(ObservedDim >= 0, $"ObservedDim={ObservedDim}: must be ≥ 0 (0: images)");
        Require(MembershipPrior > 0 && MembershipPrior < 1, $"MembershipPrior={MembershipPrior}: a probability strictly between 0 and 1");
        Require(PrivatePositions >= 0 && PrivatePositions < LatentDim, $"PrivatePositions={PrivatePositions}: must be ≥ 0 and below LatentDim ({LatentDim}), so that at least one position can be shared");
        var structureOnly = SettingsDifferentFrom(WithoutStructureOptions());
        Require(Kind == ModelKind.MrVae || structureOnly.Count == 0,
            $"{string.Join(", ", structureOnly)}: mrVAE's structure options, which {Kind} has no structure to apply to; leave them at their defaults for {Kind}");
        return this;
    }

    /// <summary>
    /// This configuration, with mrVAE's structure switches back at their defaults unless it is an mrVAE: how a command that
    /// applies one set of --set values to several models (`experiment paper`, `bench`) gives those switches to mrVAE alone.
    /// </summary>
    public ModelConfig WithStructureOptionsForMrVaeOnly() => Kind == ModelKind.MrVae ? this : WithoutStructureOptions();

    /// <summary>This configuration with mrVAE's structure switches off, as a baseline must have them (it would ignore them silently).</summary>
    ModelConfig WithoutStructureOptions() => this with
    {
        PrivatePositions = 0, ReverseStructureKl = false, MemberMarginalKl = false, AgreementPrior = false,
        InitialMemberSets = false, ConditionalPrivatePrior = false, SubsetOwnDropout = 0,
    };

    public SubsetFamily SharedSubsets() => SubsetFamily.All(Modalities, MaxSubsetOrder);

    public double BetaScale(long step) => Ramp(step, BetaWarmupSteps);

    public double StructureScale(long step) => Ramp(step, StructureWarmupSteps);

    static double Ramp(long step, long length) => length <= 0 ? 1.0 : Math.Min(1.0, (double)step / length);
}
