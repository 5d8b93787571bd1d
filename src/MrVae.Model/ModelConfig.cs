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
    /// <summary>Hidden width of the size and selection networks.</summary>
    public int RelationHidden { get; init; } = 64;
    /// <summary>
    /// mrVAE: the size and selection networks' products in bfloat16 (inputs and weights rounded to bf16, outputs back in
    /// float32; biases, means, ReLUs, parameters, gradients and Adam stay float32), as mixed-precision training does.
    /// Default: on where this CPU multiplies bf16 natively (AVX-512 BF16 or AMX, <see cref="NativeBf16"/>), where it
    /// makes the networks' forward and backward ~1.7× faster at D = 64; elsewhere bf16 products can be slower than
    /// float32 ones, so off. The value is resolved when a configuration is made and recorded in the run's config.json
    /// (a resumed run keeps it). It changes the numerics (outputs within ~0.4 %); at the quick budget mrVAE learned as
    /// well with it as without (README, Performance). Applies to float32 networks only (float64 ones stay exact).
    /// </summary>
    public bool RelationBf16 { get; init; } = NativeBf16;

    /// <summary>
    /// Whether this CPU has bf16 dot products (x86 flags avx512_bf16 or amx_bf16 in /proc/cpuinfo; false where that
    /// cannot be read). libtorch then multiplies bf16 matrices several times faster than float32 ones.
    /// </summary>
    public static bool NativeBf16 { get; } = ReadNativeBf16();

    static bool ReadNativeBf16()
    {
        try
        {
            if (!OperatingSystem.IsLinux() || !File.Exists("/proc/cpuinfo")) return false;
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("flags", StringComparison.Ordinal))
                    return line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Any(f => f is "avx512_bf16" or "amx_bf16");
            return false;
        }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return false; }
    }
    /// <summary>Largest shared subset order (null: all subsets of size ≥ 2).</summary>
    public int? MaxSubsetOrder { get; init; }
    public double Beta { get; init; } = 2.5;
    /// <summary>mrVAE: weight β_n of the structure's KL against its prior, per sample.</summary>
    public double BetaSize { get; init; } = 3.0;
    public double BetaSelection { get; init; } = 1.0;
    public PixelLikelihood Likelihood { get; init; } = PixelLikelihood.Laplace;
    /// <summary>Likelihood scale on pixels in [0,1]: Laplace b (0.75 as MoPoE's PolyMNIST code) or Gaussian σ.</summary>
    public double LikelihoodScale { get; init; } = 0.75;
    /// <summary>Weight of the subset-training term (K drawn per sample); 0 turns it off.</summary>
    public double SubsetWeight { get; init; } = 1.0;
    /// <summary>Linear KL warm-up: β grows from 0 to <see cref="Beta"/> over this many steps (0: none).</summary>
    public long BetaWarmupSteps { get; init; }
    /// <summary>mrVAE: initialise the size networks' output bias at the log prior (untrained sizes follow H_A, not uniform).</summary>
    public bool SizeLogitsFromPrior { get; init; }
    /// <summary>
    /// mrVAE: the selection networks' output bias starts at the ramp −slope·k over factor index k (0: model.md's plain
    /// init). Shared factors are aligned by rank across members; untrained scores are tiny next to the standard Gumbel
    /// noise, so every member of every sample ranks its factors at random each step and the product of experts fuses
    /// unrelated factors (the decoders see a scrambled latent and learn to ignore it). With the ramp, rank r is factor r
    /// for every member (adjacent factors swap under the noise with probability 1/(1+e^slope)), later subsets take the
    /// next free factors in the same order, and the networks can learn away from it. Off by default: measured (README,
    /// vanilla, 600 steps) it sharpens each modality's own reconstruction but the shared subspaces then empty.
    /// </summary>
    public double SelectionRampSlope { get; init; }
    /// <summary>
    /// mrVAE: the size and selection networks read sg(z), so the straight-through gradients of the discrete structure
    /// train those networks but not the encoders. Undetached, with the Gaussian σ = 0.1 likelihood, these gradients
    /// (reconstruction-sized, times NeuralSort's (D+1−2r)/τ) drove the encoders' log σ² up until the KL terms reached
    /// 10⁸–10⁹ after 130–220 steps (vanilla PolyMNIST, D = 16, lr 1e-3, with or without τ annealing); Adam's second
    /// moments then froze the networks and the decoders drew only backgrounds. Detached, no run diverged.
    /// </summary>
    public bool RelationReadsDetachedLatents { get; init; } = true;
    /// <summary>Size of a vector modality (0: PolyMNIST images, 3 × 28 × 28).</summary>
    public int ObservedDim { get; init; }
    public bool AlignedStructure { get; init; } = true;
    /// <summary>mrVAE: the prior probability ρ that a modality is a member of a latent position's shared variable.</summary>
    public double MembershipPrior { get; init; } = 0.1;
    public double TauStart { get; init; } = 1.0;
    public double TauEnd { get; init; } = 0.1;

    public string ToJson() => System.Text.Json.JsonSerializer.Serialize(this);

    public static ModelConfig FromJson(string json) =>
        System.Text.Json.JsonSerializer.Deserialize<ModelConfig>(json) ?? throw new ArgumentException("empty model configuration");

    /// <summary>
    /// This configuration with one property set from "Name=Value" (the property's name, any case, snake_case too; the value as JSON,
    /// or a bare word for enums): how the command line reaches options that have no flag of their own.
    /// </summary>
    public ModelConfig WithSetting(string assignment)
    {
        int eq = assignment.IndexOf('=');
        if (eq <= 0) throw new ArgumentException($"model setting '{assignment}' is not NAME=VALUE");
        string name = assignment[..eq].Trim(), text = assignment[(eq + 1)..].Trim();
        var json = System.Text.Json.Nodes.JsonNode.Parse(ToJson())!.AsObject();
        // Any case, with or without underscores: run directories' config.json spells the same names in snake_case.
        static string Plain(string n) => n.Replace("_", "").ToLowerInvariant();
        string key = json.Select(p => p.Key).FirstOrDefault(k => Plain(k) == Plain(name))
            ?? throw new ArgumentException($"unknown model setting '{name}': one of {string.Join(", ", json.Select(p => p.Key))}");
        System.Text.Json.Nodes.JsonNode? value;
        try { value = System.Text.Json.Nodes.JsonNode.Parse(text); }
        catch (System.Text.Json.JsonException) { value = System.Text.Json.Nodes.JsonValue.Create(text); }
        json[key] = value;
        try { return FromJson(json.ToJsonString()); }
        catch (System.Text.Json.JsonException e) { throw new ArgumentException($"model setting {key}={text}: {e.Message}"); }
    }

    /// <summary><see cref="WithSetting"/> for each assignment, in order (later ones win).</summary>
    public ModelConfig WithSettings(IEnumerable<string> assignments) => assignments.Aggregate(this, (config, assignment) => config.WithSetting(assignment));

    public SubsetFamily SharedSubsets() => SubsetFamily.All(Modalities, MaxSubsetOrder);

    public double BetaScale(long step) => BetaWarmupSteps <= 0 ? 1.0 : Math.Min(1.0, (double)step / BetaWarmupSteps);

    /// <summary>Temperature after <paramref name="step"/> of <paramref name="annealSteps"/>: geometric from TauStart to TauEnd.</summary>
    public double Temperature(long step, long annealSteps)
    {
        if (annealSteps <= 0) return TauEnd;
        double f = Math.Clamp((double)step / annealSteps, 0, 1);
        return TauStart * Math.Pow(TauEnd / TauStart, f);
    }
}
