using MrVae.Model;
using MrVae.Model.Numerics;
using MrVae.Model.Training;
using static TorchSharp.torch;

namespace MrVae.Evaluation;

/// <summary>
/// What each modality's encoder says at each latent position, on data: the information I_{d,j} = ½ log(1 + Var_x[μ_{j,d}] /
/// E_x[σ²_{j,d}]) nats (a Gaussian channel whose signal is the spread of the posterior means over the data and whose noise
/// is the mean posterior variance; an expert that gives the same mean for every input scores 0), and, for a structure, the
/// agreement r²_{d,j}: the share of the variance of μ_{j,d} that the product-of-experts mean of the position's other
/// members explains (their squared correlation; absent where d has no other member). A member that says nothing of what
/// the others say has agreement near 0. And the predictability: how much of that consensus j's whole code predicts
/// (<see cref="Model.Objectives.MrVaeObjective.Predictability"/>), for members and non-members alike.
/// </summary>
public static class EncoderInformation
{
    /// <summary>I and the agreement (D × M each) on the first <paramref name="count"/> samples of <paramref name="data"/> (every modality present); <paramref name="members"/>[d][j]: j ∈ A_d, or null for no agreement.</summary>
    public static (double[][] Information, double?[][]? Agreement, double?[][]? Predictability) Compute(MultimodalVae model, MultimodalDataset data, int count, bool[][]? members = null, int batchSize = 500)
    {
        count = Math.Min(count, data.Count);
        if (count < 2) throw new ArgumentException($"the encoders' information needs at least 2 samples, got {count}", nameof(count));
        int m = model.Config.Modalities, d = model.Config.LatentDim;
        using var scope = NewDisposeScope();
        var mu = new Tensor[m]; var logVars = new Tensor[m];
        var information = Enumerable.Range(0, d).Select(_ => new double[m]).ToArray();
        for (int j = 0; j < m; j++)
        {
            var shard = data.Modalities[j] ?? throw new ArgumentException($"modality {j} is missing from the data; the encoders' information needs every modality", nameof(data));
            var (mean, logVar) = LatentProbe.Encode(model, j, shard, count, batchSize);
            mu[j] = mean.to(ScalarType.Float64); logVars[j] = logVar.to(ScalarType.Float64);
        }
        var muAll = stack(mu, 1); var logVarAll = stack(logVars, 1); var everyone = ones(count, m, dtype: ScalarType.Float64);
        var info = Model.Objectives.MrVaeObjective.Information(muAll, logVarAll, everyone).cpu().data<double>().ToArray();   // M × D
        for (int j = 0; j < m; j++)
            for (int k = 0; k < d; k++) information[k][j] = Math.Round(info[j * d + k], 4);
        if (members is null) return (information, null, null);
        var member = ManagedArrays.ToTensor(members.SelectMany(row => row.Select(x => x ? 1.0 : 0.0)).ToArray(), [d, m]).t();
        var r2 = Model.Objectives.MrVaeObjective.Agreement(member, muAll, logVarAll, everyone).cpu().data<double>().ToArray();
        var predicted = Model.Objectives.MrVaeObjective.Predictability(member, muAll, logVarAll, everyone).cpu().data<double>().ToArray();
        double?[][] PerPosition(double[] values) => Enumerable.Range(0, d).Select(k => Enumerable.Range(0, m)
            .Select(j => Enumerable.Range(0, m).Any(i => i != j && members[k][i]) ? Math.Round(values[k * m + j], 4) : (double?)null).ToArray()).ToArray();
        return (information, PerPosition(r2), PerPosition(predicted));
    }
}
