using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Objectives;

/// <summary>
/// The subset-level size and selection networks of mrVAE (model.md §2), as batched ops over all (subset, member)
/// pairs and (subset, member, input) triples instead of one small layer per pair:
///   size:      c_A     = W3_A · ReLU(W2_A · mean_{i∈A∩K} ReLU(W1_{A,i} z_i))          ∈ R^{D+1}
///   selection: w_{j,A} = V3_{A,j} · ReLU(V2_{A,j} · mean_{i∈A∩K} ReLU(V1_{A,j,i} z_i)) ∈ R^D
/// Averaging over available members only is what lets a missing modality simply shrink the subset.
/// </summary>
public sealed class RelationNetworks : nn.Module
{
    readonly SubsetFamily family;
    readonly bool bfloat16;

    readonly TorchSharp.Modules.Parameter sizeW1, sizeB1, sizeW2, sizeB2, sizeW3, sizeB3;
    readonly TorchSharp.Modules.Parameter selW1, selB1, selW2, selB2, selW3, selB3;

    /// <param name="bfloat16">The products in bfloat16 for float32 networks (<see cref="ModelConfig.RelationBf16"/>).</param>
    public RelationNetworks(SubsetFamily family, int latentDim, int hidden, bool bfloat16 = false) : base(nameof(RelationNetworks))
    {
        this.family = family;
        this.bfloat16 = bfloat16;
        int p = family.PairCount, t = family.TripleCount, s = family.Subsets.Count, d = latentDim, h = hidden;
        (sizeW1, sizeB1) = Layer(p, d, h);
        (sizeW2, sizeB2) = Layer(s, h, h);
        (sizeW3, sizeB3) = Layer(s, h, d + 1);
        (selW1, selB1) = Layer(t, d, h);
        (selW2, selB2) = Layer(p, h, h);
        (selW3, selB3) = Layer(p, h, d);
        RegisterComponents();
        // Index tables are constants, not state: keep them out of the state dict but on the module's device.
        register_buffer("pair_member", tensor(family.PairMember.Select(x => (long)x).ToArray()), persistent: false);
        register_buffer("triple_input", tensor(family.TripleInput.Select(x => (long)x).ToArray()), persistent: false);
        register_buffer("pair_subset", tensor(family.PairSubset.Select(x => (long)x).ToArray()), persistent: false);
        register_buffer("triple_pair", tensor(family.TriplePair.Select(x => (long)x).ToArray()), persistent: false);
    }

    /// <summary>Size logits c_A for every shared subset: B × S × (D+1).</summary>
    public Tensor SizeLogits(Tensor z, Tensor available) => SizeLogits(z, [available])[0];

    /// <summary>Selection scores w_{j,A} for every (subset, member) pair: B × P × D.</summary>
    public Tensor SelectionScores(Tensor z, Tensor available) => SelectionScores(z, [available])[0];

    /// <summary>Size logits for several availability masks (views) of the same latents: one B × S × (D+1) per view.</summary>
    public Tensor[] SizeLogits(Tensor z, Tensor[] views)
        => Network(z, views, Buffer("pair_member", z.device), Buffer("pair_subset", z.device), family.Subsets.Count, sizeW1, sizeB1, sizeW2, sizeB2, sizeW3, sizeB3, bfloat16);

    /// <summary>Selection scores for several availability masks (views) of the same latents: one B × P × D per view.</summary>
    public Tensor[] SelectionScores(Tensor z, Tensor[] views)
        => Network(z, views, Buffer("triple_input", z.device), Buffer("triple_pair", z.device), family.PairCount, selW1, selB1, selW2, selB2, selW3, selB3, bfloat16);

    public SubsetFamily Family => family;

    /// <summary>
    /// An index table on <paramref name="device"/>. After the model's to(cuda) these non-persistent buffers were still
    /// on the CPU (seen on an H200: index_select refused a CPU index for CUDA tensors; why TorchSharp's Module.to left
    /// them was not isolated), so a table needed elsewhere is copied there once and kept (the size networks may ask
    /// from a second thread, hence the lock).
    /// </summary>
    Tensor Buffer(string name, Device device)
    {
        var table = get_buffer(name)!;
        if (table.device_type == device.type && table.device_index == device.index) return table;
        lock (movedTables)
        {
            if (movedTables.TryGetValue(name, out var copy) && copy.device_type == device.type && copy.device_index == device.index) return copy;
            copy = table.to(device).DetachFromDisposeScope();
            movedTables[name] = copy;
            return copy;
        }
    }

    readonly Dictionary<string, Tensor> movedTables = new();

    /// <summary>
    /// W3_g · ReLU(W2_g · mean_{available inputs i of g} ReLU(W1_{g,i} z_i + b1) + b2) + b3 for every group g and view,
    /// computed group-major (group × B × features): each layer is one batched product (bmm) and needs no permuted copies;
    /// the inputs' means are sums by scatter_add (a product with a 0/1 matrix cost about as much as the first layer).
    /// The first layer does not depend on the view (a view only decides which inputs enter the mean), so it runs once for
    /// all views, its bias riding in the product ([z, 1] · [W1; b1]); each view masks it (m·ReLU(·) with m ∈ {0, 1}),
    /// and the views share the second and third layers' products (views × B rows). Returns B × groups × out per view
    /// (transposed views). With <paramref name="bfloat16"/> (float32 only) the three products take bf16 operands and
    /// their results return to float32 before anything else (autograd's casts give the backward the same precisions).
    /// </summary>
    static Tensor[] Network(Tensor z, Tensor[] views, Tensor inputIndex, Tensor groupOf, long groups,
        Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor w3, Tensor b3, bool bfloat16)
    {
        bool low = bfloat16 && z.dtype == ScalarType.Float32;
        Tensor Product(Tensor x, Tensor w)
            => low ? x.to(ScalarType.BFloat16).bmm(w.to(ScalarType.BFloat16)).to(ScalarType.Float32) : x.bmm(w);
        // Bias + x·w: one baddbmm in float32; a product and a broadcast add in bf16 (the bias stays float32).
        Tensor Affine(Tensor x, Tensor w, Tensor b)
            => low ? Product(x, w) + b.unsqueeze(1) : x.baddbmm(w, b.unsqueeze(1).expand(w.shape[0], x.shape[1], -1));
        long batch = z.shape[0], modalities = z.shape[1];
        var zOne = cat([z, ones([batch, modalities, 1], dtype: z.dtype, device: z.device)], -1);
        var zIn = zOne.transpose(0, 1).index_select(0, inputIndex);                      // G × B × (D+1)
        var h = nn.functional.relu(Product(zIn, cat([w1, b1.unsqueeze(1)], 1)));         // G × B × H, every input
        var groupIndex = groupOf.view(-1, 1, 1).expand(h.shape);
        var means = views.Select(available =>
        {
            var maskIn = available.t().index_select(0, inputIndex).unsqueeze(-1);       // G × B × 1
            // A view where every modality is available (the full one, in training) needs no mask on the largest tensor.
            bool everyInput = available.min().ToDouble() == 1;
            var sum = zeros([groups, batch, h.shape[2]], dtype: h.dtype, device: h.device)
                .scatter_add(0, groupIndex, everyInput ? h : h * maskIn);                // groups × B × H, available inputs only
            var count = zeros([groups, batch, 1], dtype: maskIn.dtype, device: maskIn.device)
                .scatter_add(0, groupOf.view(-1, 1, 1).expand(maskIn.shape), maskIn);
            return sum / count.clamp_min(1);
        }).ToArray();
        var mean = means.Length == 1 ? means[0] : cat(means, 1);                           // groups × (views·B) × H
        // TorchSharp's x.baddbmm(w, bias) is bias + x·w (torch.baddbmm's input comes last); the bias is expanded by hand.
        var hidden = nn.functional.relu(Affine(mean, w2, b2));
        var output = Affine(hidden, w3, b3);                                               // groups × (views·B) × out
        return Enumerable.Range(0, views.Length).Select(v => output.narrow(1, v * batch, batch).transpose(0, 1)).ToArray();
    }

    /// <summary>
    /// Adds <paramref name="logPrior"/> (S × (D+1), log H_A) to the size logits' bias, so the untrained size networks
    /// draw sizes near the prior instead of near-uniform over 0..D (which lets the first subsets take every factor).
    /// Impossible sizes (−∞) get −30.
    /// </summary>
    public void StartSizesAtPrior(double[][] logPrior)
    {
        using var _ = no_grad();
        var flat = logPrior.SelectMany(row => row.Select(v => (float)Math.Max(v, -30))).ToArray();
        using var prior = tensor(flat, [logPrior.Length, logPrior[0].Length]);
        sizeB3.add_(prior);
    }

    /// <summary>
    /// Adds −<paramref name="slope"/>·k to every (subset, member) pair's selection bias for factor k, so untrained
    /// members rank their factors in index order and rank r aligns factor r of every member (see
    /// <see cref="ModelConfig.SelectionRampSlope"/>).
    /// </summary>
    public void StartSelectionsAtRamp(double slope)
    {
        using var _ = no_grad();
        long d = selB3.shape[1];
        using var ramp = arange(d, dtype: selB3.dtype) * -slope;
        selB3.add_(ramp.unsqueeze(0));
    }

    /// <summary>A stack of <paramref name="count"/> linear layers in → out, initialised like nn.Linear (U(±1/√in)).</summary>
    static (TorchSharp.Modules.Parameter W, TorchSharp.Modules.Parameter B) Layer(int count, int inDim, int outDim)
    {
        double bound = 1.0 / Math.Sqrt(inDim);
        var w = (rand(count, inDim, outDim) * 2 - 1) * bound;
        var b = (rand(count, outDim) * 2 - 1) * bound;
        return (new TorchSharp.Modules.Parameter(w), new TorchSharp.Modules.Parameter(b));
    }
}
