using MrVae.Model.Objectives;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Tests;

public class RelationNetworksTests
{
    [Fact]
    public void BatchedNetworksAreTheirPerGroupFormula()
    {
        // The batched networks (one product per layer over all groups, the first layer's bias folded into its product,
        // the availability mask applied after its ReLU) against the formula written out per subset / pair and per
        // sample, with plain matrix products: the outputs, and the gradients of z and of every parameter for a random
        // linear functional of both outputs.
        const int batch = 7;
        var (family, nets, gen, z) = Setup(batch, seed: 3);
        using var _ = nets;
        var rows = new double[batch * m];
        var rng = new Random(5);
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < m; j++) rows[b * m + j] = b == 0 ? 1 : b == 1 ? (j == 0 ? 1 : 0) : rng.Next(2);   // all, one alone, random
        using var available = tensor(rows, [batch, m], dtype: float64);
        var p = nets.named_parameters().ToDictionary(x => x.name, x => (Tensor)x.parameter);

        // z_i → W1 → ReLU for each input of a group, mean over the available inputs (0 where none), → W2 → ReLU → W3.
        Tensor Formula(string prefix, int[] groupOfInput, int[] inputModality, int groups)
        {
            var outputs = new List<Tensor>();
            for (int b = 0; b < batch; b++)
                for (int g = 0; g < groups; g++)
                {
                    Tensor sum = zeros(h, dtype: float64);
                    int count = 0;
                    for (int t = 0; t < groupOfInput.Length; t++)
                    {
                        if (groupOfInput[t] != g || rows[b * m + inputModality[t]] == 0) continue;
                        sum = sum + relu(z[b, inputModality[t]].matmul(p[prefix + "W1"][t]) + p[prefix + "B1"][t]);
                        count++;
                    }
                    var mean = sum / Math.Max(count, 1);
                    var hidden = relu(mean.matmul(p[prefix + "W2"][g]) + p[prefix + "B2"][g]);
                    outputs.Add(hidden.matmul(p[prefix + "W3"][g]) + p[prefix + "B3"][g]);
                }
            return stack(outputs).view(batch, groups, -1);
        }

        var size = nets.SizeLogits(z, available);
        var selection = nets.SelectionScores(z, available);
        var sizeFormula = Formula("size", family.PairSubset, family.PairMember, family.Subsets.Count);
        var selectionFormula = Formula("sel", family.TriplePair, family.TripleInput, family.PairCount);
        Assert.Equal(sizeFormula.shape, size.shape);
        Assert.Equal(selectionFormula.shape, selection.shape);
        Assert.True(allclose(size, sizeFormula, rtol: 1e-12, atol: 1e-12), $"size logits differ by {(size - sizeFormula).abs().max().ToDouble()}");
        Assert.True(allclose(selection, selectionFormula, rtol: 1e-12, atol: 1e-12), $"selection scores differ by {(selection - selectionFormula).abs().max().ToDouble()}");

        var wSize = randn(size.shape, dtype: float64, generator: gen);
        var wSelection = randn(selection.shape, dtype: float64, generator: gen);
        double[] Gradients(Tensor a, Tensor b)
        {
            z.grad?.zero_();
            foreach (var q in p.Values) q.grad?.zero_();
            ((a * wSize).sum() + (b * wSelection).sum()).backward();
            return TinyModels.Values(z.grad!).Concat(p.Values.SelectMany(q => TinyModels.Values(q.grad!))).ToArray();
        }
        var batched = Gradients(nets.SizeLogits(z, available), nets.SelectionScores(z, available));
        var formula = Gradients(Formula("size", family.PairSubset, family.PairMember, family.Subsets.Count),
            Formula("sel", family.TriplePair, family.TripleInput, family.PairCount));
        Assert.True(batched.Skip(batch * m * d).Any(g => g != 0), "no parameter gets a gradient");
        for (int i = 0; i < batched.Length; i++)
            Assert.True(Math.Abs(batched[i] - formula[i]) <= 1e-10 * (1 + Math.Abs(formula[i])), $"gradient {i}: batched {batched[i]}, formula {formula[i]}");
    }

    [Fact]
    public void SeveralViewsGiveEachViewsOwnOutputsAndGradients()
    {
        // Views share the first layer's product and the later layers' products; each view's outputs must be those of the
        // network run on that view alone, and the gradients of a functional of all views the sum of the per-view ones.
        const int batch = 9;
        var (_, nets, gen, z) = Setup(batch, seed: 11);
        using var __ = nets;
        using var all = ones([batch, m], dtype: float64);
        using var some = (rand([batch, m], dtype: float64, generator: gen) > 0.5).to(float64);
        using var none = zeros([batch, m], dtype: float64);
        Tensor[] views = [all, some, none];
        var parameters = nets.parameters().ToArray();
        var size = nets.SizeLogits(z, views);
        var selection = nets.SelectionScores(z, views);
        var weights = views.Select(_ => (randn(size[0].shape, dtype: float64, generator: gen), randn(selection[0].shape, dtype: float64, generator: gen))).ToArray();

        double[] Gradients(Func<int, (Tensor Size, Tensor Selection)> outputs)
        {
            z.grad?.zero_();
            foreach (var q in parameters) q.grad?.zero_();
            Tensor total = zeros(1, dtype: float64);
            for (int v = 0; v < views.Length; v++)
            {
                var (a, b) = outputs(v);
                total = total + (a * weights[v].Item1).sum() + (b * weights[v].Item2).sum();
            }
            total.backward();
            return TinyModels.Values(z.grad!).Concat(parameters.SelectMany(q => TinyModels.Values(q.grad!))).ToArray();
        }
        for (int v = 0; v < views.Length; v++)
        {
            using var alone = nets.SizeLogits(z, views[v]);
            using var aloneSelection = nets.SelectionScores(z, views[v]);
            Assert.True(allclose(size[v], alone, rtol: 1e-12, atol: 1e-12), $"view {v}: size logits differ by {(size[v] - alone).abs().max().ToDouble()}");
            Assert.True(allclose(selection[v], aloneSelection, rtol: 1e-12, atol: 1e-12), $"view {v}: selection scores differ");
        }
        // The views differ (else the check above proves little): the mask reaches the outputs.
        Assert.False(allclose(selection[0], selection[1]));
        var together = Gradients(v => (size[v], selection[v]));
        var separately = Gradients(v => (nets.SizeLogits(z, views[v]), nets.SelectionScores(z, views[v])));
        Assert.True(together.Skip(batch * m * d).Any(g => g != 0), "no parameter gets a gradient");
        for (int i = 0; i < together.Length; i++)
            Assert.True(Math.Abs(together[i] - separately[i]) <= 1e-10 * (1 + Math.Abs(separately[i])), $"gradient {i}: views together {together[i]}, separately {separately[i]}");
    }

    [Fact]
    public void BFloat16ProductsStayNearTheFloat32NetworksAndLeaveFloat64Exact()
    {
        // The same weights with and without RelationBf16: in float32 the outputs move by about bf16's rounding (2⁻⁸
        // relative per operand; measured 0.3 %), the parameters' gradients by a few percent at most (up to three bf16
        // products chained in the backward, and sums over the batch that cancel: 3.5 % for the first layer's weights),
        // while parameters and gradients stay float32; float64 networks ignore the option.
        const int batch = 64, latent = 16, hidden = 32;
        var family = SubsetFamily.All(m);
        var exact = Seeds.Construct(4, "relation", () => new RelationNetworks(family, latent, hidden));
        var rounded = Seeds.Construct(4, "relation", () => new RelationNetworks(family, latent, hidden, bfloat16: true));
        var z = randn([batch, m, latent], generator: new Generator(8));
        var views = new[] { ones(batch, m), (rand([batch, m], generator: new Generator(9)) > 0.4).to(float32) };
        var weights = randn([family.PairCount, latent], generator: new Generator(10));

        (Tensor[] Outputs, Tensor[] Gradients) Run(RelationNetworks nets)
        {
            nets.zero_grad();
            var size = nets.SizeLogits(z, views); var selection = nets.SelectionScores(z, views);
            var outputs = size.Concat(selection).ToArray();
            var loss = size.Select(o => o.square().mean()).Concat(selection.Select(o => (o.mean([0L]) * weights).sum())).Aggregate((a, b) => a + b);
            loss.backward();
            return (outputs, nets.parameters().Select(q => q.grad!.clone()).ToArray());
        }
        static double RelativeL2(Tensor a, Tensor b) => ((a - b).norm() / b.norm()).ToDouble();

        var (lowOut, lowGrad) = Run(rounded);
        var (outF32, gradF32) = Run(exact);
        Assert.All(rounded.parameters(), q => Assert.Equal(ScalarType.Float32, q.dtype));
        Assert.All(lowGrad, g => Assert.Equal(ScalarType.Float32, g.dtype));
        for (int i = 0; i < outF32.Length; i++)
        {
            double e = RelativeL2(lowOut[i], outF32[i]);
            Assert.True(e is > 1e-5 and < 1e-2, $"output {i}: relative L2 {e} (0 would mean the bf16 path did not run)");
        }
        for (int i = 0; i < gradF32.Length; i++)
        {
            double e = RelativeL2(lowGrad[i], gradF32[i]);
            Assert.True(e < 6e-2, $"gradient of parameter {i}: relative L2 {e}");
        }

        exact.to(float64); rounded.to(float64);
        z = z.to(float64); views = views.Select(v => v.to(float64)).ToArray(); weights = weights.to(float64);
        var (lowOut64, lowGrad64) = Run(rounded);
        var (out64, grad64) = Run(exact);
        for (int i = 0; i < out64.Length; i++) Assert.Equal(0, (lowOut64[i] - out64[i]).abs().max().ToDouble());
        for (int i = 0; i < grad64.Length; i++) Assert.Equal(0, (lowGrad64[i] - grad64[i]).abs().max().ToDouble());
    }

    const int m = 4, d = 5, h = 6;

    /// <summary>Float64 networks for all subsets of <see cref="m"/> modalities, a generator, and latents that take gradients.</summary>
    static (SubsetFamily Family, RelationNetworks Nets, Generator Gen, Tensor Z) Setup(int batch, int seed)
    {
        var family = SubsetFamily.All(m);
        var nets = new RelationNetworks(family, d, h);
        nets.to(float64);
        var gen = new Generator((ulong)seed);
        return (family, nets, gen, randn([batch, m, d], dtype: float64, generator: gen).requires_grad_());
    }

    static Tensor relu(Tensor x) => nn.functional.relu(x);
}
