using MrVae.Data;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MrVae.Evaluation;

/// <summary>
/// InceptionV3 up to its global average pool (2048 features): the network FID is defined on. The layout and the
/// parameter names are torchvision's <c>inception_v3</c> (Conv2d_1a_3x3 … Mixed_7c, each conv a BasicConv2d
/// "conv" without bias and "bn" with eps 0.001), so a torchvision or pytorch-fid state dict exported to
/// TorchSharp's format (TorchSharp's exportsd.py) loads by name; the classifier head ("fc", "AuxLogits") is not
/// part of it and is skipped when loading. The project ships no weights: FID is computed only when a user passes them.
/// </summary>
public sealed class InceptionV3Features : Module<Tensor, Tensor>
{
    public const int FeatureWidth = 2048, InputSide = 299;
    readonly Module<Tensor, Tensor>[] stages;

    public InceptionV3Features() : base(nameof(InceptionV3Features))
    {
        var named = new (string Name, Module<Tensor, Tensor> Module)[]
        {
            ("Conv2d_1a_3x3", new BasicConv(3, 32, 3, stride: 2)),
            ("Conv2d_2a_3x3", new BasicConv(32, 32, 3)),
            ("Conv2d_2b_3x3", new BasicConv(32, 64, 3, padding: 1)),
            ("maxpool1", MaxPool2d(3, stride: 2)),
            ("Conv2d_3b_1x1", new BasicConv(64, 80, 1)),
            ("Conv2d_4a_3x3", new BasicConv(80, 192, 3)),
            ("maxpool2", MaxPool2d(3, stride: 2)),
            ("Mixed_5b", new InceptionA(192, 32)),
            ("Mixed_5c", new InceptionA(256, 64)),
            ("Mixed_5d", new InceptionA(288, 64)),
            ("Mixed_6a", new InceptionB(288)),
            ("Mixed_6b", new InceptionC(768, 128)),
            ("Mixed_6c", new InceptionC(768, 160)),
            ("Mixed_6d", new InceptionC(768, 160)),
            ("Mixed_6e", new InceptionC(768, 192)),
            ("Mixed_7a", new InceptionD(768)),
            ("Mixed_7b", new InceptionE(1280)),
            ("Mixed_7c", new InceptionE(2048)),
        };
        stages = named.Select(n => n.Module).ToArray();
        foreach (var (name, module) in named) register_module(name, module);
    }

    /// <summary>
    /// Pool features (B × 2048) of images in [0, 1] (B × 3 × H × W): resized to 299 × 299 (bilinear) and scaled
    /// to [−1, 1], as torchvision's transform_input and pytorch-fid's normalize_input do.
    /// </summary>
    public override Tensor forward(Tensor images)
    {
        using var scope = NewDisposeScope();
        var x = images.shape[2] == InputSide && images.shape[3] == InputSide
            ? images.alias()
            : functional.interpolate(images, size: [InputSide, InputSide], mode: InterpolationMode.Bilinear, align_corners: false);
        x = 2 * x - 1;
        foreach (var stage in stages) x = stage.forward(x);
        return functional.adaptive_avg_pool2d(x, 1).flatten(1).MoveToOuterDisposeScope();
    }

    /// <summary>Loads a TorchSharp-format state dict; every parameter and buffer of this network must be in it.</summary>
    public static InceptionV3Features Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Inception weights {path} not found: pass a TorchSharp-format state dict of torchvision's inception_v3 (exported with TorchSharp's exportsd.py)", path);
        var net = new InceptionV3Features();
        try
        {
            // Not strict: a full inception_v3 state dict also holds fc and AuxLogits, which the features do not use.
            var loaded = new Dictionary<string, bool>();
            net.load(path, strict: false, skip: null, loadedParameters: loaded);
            var missing = net.state_dict().Keys.Where(k => !loaded.GetValueOrDefault(k)).ToArray();
            if (missing.Length > 0)
                throw new UserInputException($"{missing.Length} of the network's tensors are not in the file (first: {string.Join(", ", missing.Take(3))})");
        }
        catch (Exception e) when (e is not FileNotFoundException)
        {
            net.Dispose();
            throw new UserInputException($"{path} is not a usable InceptionV3 state dict ({e.Message.ReplaceLineEndings(" ")}): export torchvision's inception_v3 weights with TorchSharp's exportsd.py", e);
        }
        net.eval();
        return net;
    }

    /// <summary>Conv (no bias) → BatchNorm (eps 0.001) → ReLU, named "conv" and "bn" as torchvision's BasicConv2d.</summary>
    sealed class BasicConv : Module<Tensor, Tensor>
    {
        readonly Conv2d conv;
        readonly BatchNorm2d bn;

        public BasicConv(long input, long output, long kernel, long stride = 1, long padding = 0) : base(nameof(BasicConv))
        {
            conv = Conv2d(input, output, kernel, stride: stride, padding: padding, bias: false);
            bn = BatchNorm2d(output, eps: 0.001);
            register_module("conv", conv); register_module("bn", bn);
        }

        public BasicConv(long input, long output, (long, long) kernel, (long, long) padding) : base(nameof(BasicConv))
        {
            conv = Conv2d(input, output, kernel, padding: padding, bias: false);
            bn = BatchNorm2d(output, eps: 0.001);
            register_module("conv", conv); register_module("bn", bn);
        }

        public override Tensor forward(Tensor x)
        {
            using var c = conv.forward(x);
            using var b = bn.forward(c);
            return functional.relu(b);
        }
    }

    /// <summary>Base of the mixed blocks: named branches registered under torchvision's names.</summary>
    abstract class Mixed : Module<Tensor, Tensor>
    {
        protected Mixed(string name) : base(name) { }

        protected BasicConv Branch(string name, BasicConv module)
        {
            register_module(name, module);
            return module;
        }

        protected static Tensor AvgPool3(Tensor x) => functional.avg_pool2d(x, 3, stride: 1, padding: 1);
        protected static Tensor MaxPool3(Tensor x) => functional.max_pool2d(x, 3, stride: 2);
    }

    sealed class InceptionA : Mixed
    {
        readonly BasicConv b1, b5a, b5b, d1, d2, d3, pool;

        public InceptionA(long input, long poolFeatures) : base(nameof(InceptionA))
        {
            b1 = Branch("branch1x1", new BasicConv(input, 64, 1));
            b5a = Branch("branch5x5_1", new BasicConv(input, 48, 1));
            b5b = Branch("branch5x5_2", new BasicConv(48, 64, 5, padding: 2));
            d1 = Branch("branch3x3dbl_1", new BasicConv(input, 64, 1));
            d2 = Branch("branch3x3dbl_2", new BasicConv(64, 96, 3, padding: 1));
            d3 = Branch("branch3x3dbl_3", new BasicConv(96, 96, 3, padding: 1));
            pool = Branch("branch_pool", new BasicConv(input, poolFeatures, 1));
        }

        public override Tensor forward(Tensor x)
        {
            using var scope = NewDisposeScope();
            var result = cat([b1.forward(x), b5b.forward(b5a.forward(x)), d3.forward(d2.forward(d1.forward(x))), pool.forward(AvgPool3(x))], 1);
            return result.MoveToOuterDisposeScope();
        }
    }

    sealed class InceptionB : Mixed
    {
        readonly BasicConv b3, d1, d2, d3;

        public InceptionB(long input) : base(nameof(InceptionB))
        {
            b3 = Branch("branch3x3", new BasicConv(input, 384, 3, stride: 2));
            d1 = Branch("branch3x3dbl_1", new BasicConv(input, 64, 1));
            d2 = Branch("branch3x3dbl_2", new BasicConv(64, 96, 3, padding: 1));
            d3 = Branch("branch3x3dbl_3", new BasicConv(96, 96, 3, stride: 2));
        }

        public override Tensor forward(Tensor x)
        {
            using var scope = NewDisposeScope();
            return cat([b3.forward(x), d3.forward(d2.forward(d1.forward(x))), MaxPool3(x)], 1).MoveToOuterDisposeScope();
        }
    }

    sealed class InceptionC : Mixed
    {
        readonly BasicConv b1, s1, s2, s3, d1, d2, d3, d4, d5, pool;

        public InceptionC(long input, long c7) : base(nameof(InceptionC))
        {
            b1 = Branch("branch1x1", new BasicConv(input, 192, 1));
            s1 = Branch("branch7x7_1", new BasicConv(input, c7, 1));
            s2 = Branch("branch7x7_2", new BasicConv(c7, c7, (1, 7), (0, 3)));
            s3 = Branch("branch7x7_3", new BasicConv(c7, 192, (7, 1), (3, 0)));
            d1 = Branch("branch7x7dbl_1", new BasicConv(input, c7, 1));
            d2 = Branch("branch7x7dbl_2", new BasicConv(c7, c7, (7, 1), (3, 0)));
            d3 = Branch("branch7x7dbl_3", new BasicConv(c7, c7, (1, 7), (0, 3)));
            d4 = Branch("branch7x7dbl_4", new BasicConv(c7, c7, (7, 1), (3, 0)));
            d5 = Branch("branch7x7dbl_5", new BasicConv(c7, 192, (1, 7), (0, 3)));
            pool = Branch("branch_pool", new BasicConv(input, 192, 1));
        }

        public override Tensor forward(Tensor x)
        {
            using var scope = NewDisposeScope();
            var seven = s3.forward(s2.forward(s1.forward(x)));
            var dbl = d5.forward(d4.forward(d3.forward(d2.forward(d1.forward(x)))));
            return cat([b1.forward(x), seven, dbl, pool.forward(AvgPool3(x))], 1).MoveToOuterDisposeScope();
        }
    }

    sealed class InceptionD : Mixed
    {
        readonly BasicConv b1, b2, s1, s2, s3, s4;

        public InceptionD(long input) : base(nameof(InceptionD))
        {
            b1 = Branch("branch3x3_1", new BasicConv(input, 192, 1));
            b2 = Branch("branch3x3_2", new BasicConv(192, 320, 3, stride: 2));
            s1 = Branch("branch7x7x3_1", new BasicConv(input, 192, 1));
            s2 = Branch("branch7x7x3_2", new BasicConv(192, 192, (1, 7), (0, 3)));
            s3 = Branch("branch7x7x3_3", new BasicConv(192, 192, (7, 1), (3, 0)));
            s4 = Branch("branch7x7x3_4", new BasicConv(192, 192, 3, stride: 2));
        }

        public override Tensor forward(Tensor x)
        {
            using var scope = NewDisposeScope();
            return cat([b2.forward(b1.forward(x)), s4.forward(s3.forward(s2.forward(s1.forward(x)))), MaxPool3(x)], 1).MoveToOuterDisposeScope();
        }
    }

    sealed class InceptionE : Mixed
    {
        readonly BasicConv b1, t1, t2a, t2b, d1, d2, d3a, d3b, pool;

        public InceptionE(long input) : base(nameof(InceptionE))
        {
            b1 = Branch("branch1x1", new BasicConv(input, 320, 1));
            t1 = Branch("branch3x3_1", new BasicConv(input, 384, 1));
            t2a = Branch("branch3x3_2a", new BasicConv(384, 384, (1, 3), (0, 1)));
            t2b = Branch("branch3x3_2b", new BasicConv(384, 384, (3, 1), (1, 0)));
            d1 = Branch("branch3x3dbl_1", new BasicConv(input, 448, 1));
            d2 = Branch("branch3x3dbl_2", new BasicConv(448, 384, 3, padding: 1));
            d3a = Branch("branch3x3dbl_3a", new BasicConv(384, 384, (1, 3), (0, 1)));
            d3b = Branch("branch3x3dbl_3b", new BasicConv(384, 384, (3, 1), (1, 0)));
            pool = Branch("branch_pool", new BasicConv(input, 192, 1));
        }

        public override Tensor forward(Tensor x)
        {
            using var scope = NewDisposeScope();
            var t = t1.forward(x);
            var d = d2.forward(d1.forward(x));
            return cat([b1.forward(x), cat([t2a.forward(t), t2b.forward(t)], 1), cat([d3a.forward(d), d3b.forward(d)], 1), pool.forward(AvgPool3(x))], 1)
                .MoveToOuterDisposeScope();
        }
    }
}

/// <summary>
/// FID of conditional generations (the paper's sample-quality rows) against the real test images of the same
/// tuples, on <see cref="InceptionV3Features"/>. Only with user-supplied weights; slow on a CPU (≈ 6 GFLOP per image).
/// </summary>
public static class InceptionFid
{
    public static Dictionary<(int Mask, int Output), double> Compute(IConditionalGenerator generator, InceptionV3Features inception, LabelledSplit test,
        IReadOnlyCollection<(int Mask, int Output)> cells, int samples, int batchSize = 50, Action<string>? log = null)
    {
        int m = generator.Modalities;
        int n = Math.Min(samples, test.Count);
        if (n < 2) throw new ArgumentException("FID needs at least two samples");
        inception.eval();
        using var _ = no_grad();
        var real = cells.Select(c => c.Output).Distinct().ToDictionary(j => j, _ => new MomentAccumulator(InceptionV3Features.FeatureWidth));
        var fake = cells.ToDictionary(c => c, _ => new MomentAccumulator(InceptionV3Features.FeatureWidth));
        try
        {
            for (int start = 0; start < n; start += batchSize)
            {
                using var scope = NewDisposeScope();
                var ids = LabelledSplit.Range(start, Math.Min(batchSize, n - start));
                foreach (var (j, acc) in real) acc.Add(inception.forward(test.Images[j].Batch(ids)));
                foreach (var mask in cells.Select(c => c.Mask).Distinct())
                {
                    var inputs = Enumerable.Range(0, m).Select(j => (mask >> j & 1) == 1).ToArray();
                    var x = Enumerable.Range(0, m).Select(j => inputs[j] ? test.Images[j].Batch(ids) : null).ToArray();
                    var images = generator.Generate(x, inputs, ids);
                    foreach (var ((cellMask, j), acc) in fake)
                        if (cellMask == mask) acc.Add(inception.forward(images[j]));
                }
                log?.Invoke($"FID: {start + ids.Length}/{n} tuples through Inception");
            }
            return fake.ToDictionary(kv => kv.Key, kv => Frechet.Distance(real[kv.Key.Output], kv.Value));
        }
        finally
        {
            foreach (var a in real.Values) a.Dispose();
            foreach (var a in fake.Values) a.Dispose();
        }
    }
}
