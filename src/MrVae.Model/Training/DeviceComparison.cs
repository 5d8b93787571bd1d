using System.Diagnostics;
using MrVae.Model.Objectives;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Training;

/// <summary>
/// One step of the training objective — its loss and every parameter's gradient — for the same model, inputs and
/// random draws on two devices (the draws come from CPU generators on both, see DeviceRandom), and step times on
/// one. What `mrvae-device-check` runs on a GPU silo's machine against the CPU.
/// </summary>
public static class DeviceComparison
{
    /// <param name="LossRelative">|loss − other loss| / |loss|.</param>
    /// <param name="GradientRelative">max over all parameters' entries of |g − other g|, over max |g|.</param>
    public sealed record Result(ModelKind Kind, bool Training, double Loss, double OtherLoss, double LossRelative, double GradientRelative, int Tensors)
    {
        /// <summary>Within what float64 rounding on two devices (another summation order) explains.</summary>
        public bool Agrees => LossRelative < 1e-9 && GradientRelative < 1e-7;
    }

    /// <param name="configureOther">Adjusts the other device's model before its step (e.g. another code path).</param>
    public static Result Compare(ModelConfig config, Device reference, Device other, bool training, int batch = 16,
        ScalarType dtype = ScalarType.Float64, Action<MultimodalVae>? configureOther = null)
    {
        var (loss, gradients) = Step(config, reference, dtype, training, batch, null);
        var (otherLoss, otherGradients) = Step(config, other, dtype, training, batch, configureOther);
        double worst = 0, scale = 0;
        for (int i = 0; i < gradients.Length; i++)
            for (int k = 0; k < gradients[i].Length; k++)
            {
                worst = Math.Max(worst, Math.Abs(gradients[i][k] - otherGradients[i][k]));
                scale = Math.Max(scale, Math.Abs(gradients[i][k]));
            }
        return new Result(config.Kind, training, loss, otherLoss, Math.Abs(loss - otherLoss) / Math.Abs(loss), worst / scale, gradients.Length);
    }

    /// <summary>
    /// The loss and the parameters' gradients (as float64 arrays, in parameter order) of one step of a model built
    /// from seed 1 on random images (seed 2) with step draws from seed 3: training (noise, sampled latents, subset
    /// view) or evaluation (the most probable structure, posterior means).
    /// </summary>
    public static (double Loss, double[][] Gradients) Step(ModelConfig config, Device device, ScalarType dtype, bool training, int batch,
        Action<MultimodalVae>? configure)
    {
        using var scope = NewDisposeScope();
        var model = new MultimodalVae(config, seed: 1);
        model.to(dtype).to(device);
        configure?.Invoke(model);
        var (x, available) = Inputs(config, batch, dtype, device);
        var context = new StepContext { Generator = new Generator(3), Training = training, SampleLatents = training };
        using var loss = model.Loss(x, available, context);
        loss.Total.backward();
        var gradients = model.parameters()
            .Select(p => p.grad is { } g ? g.cpu().to(ScalarType.Float64).data<double>().ToArray() : new double[p.numel()]).ToArray();
        return (loss.Total.cpu().to(ScalarType.Float64).item<double>(), gradients);
    }

    /// <summary>Wall ms of each measured training step (forward, backward, Adam), float32, after <paramref name="warmup"/> steps.</summary>
    public static double[] StepTimes(ModelConfig config, Device device, int batch, int warmup, int steps, Action<MultimodalVae>? configure = null)
    {
        using var model = new MultimodalVae(config, seed: 1);
        model.to(device);
        configure?.Invoke(model);
        using var optimizer = optim.Adam(model.parameters(), 1e-3);
        var (x, available) = Inputs(config, batch, ScalarType.Float32, device);
        var generator = new Generator(3);
        var times = new List<double>();
        for (int s = 0; s < warmup + steps; s++)
        {
            var watch = Stopwatch.StartNew();
            using (NewDisposeScope())
            {
                optimizer.zero_grad();
                using var loss = model.Loss(x, available, new StepContext { Generator = generator, Training = true });
                loss.Total.backward();
                optimizer.step();
                _ = loss.Total.item<float>();   // waits for the device
            }
            if (s >= warmup) times.Add(watch.Elapsed.TotalMilliseconds);
        }
        return times.ToArray();
    }

    static (Tensor[] X, Tensor Available) Inputs(ModelConfig config, int batch, ScalarType dtype, Device device)
    {
        var generator = new Generator(2);
        var x = Enumerable.Range(0, config.Modalities)
            .Select(_ => rand([batch, 3, 28, 28], generator: generator).to(dtype).to(device)).ToArray();
        return (x, MultimodalVae.AllAvailable(Enumerable.Repeat(true, config.Modalities).ToArray(), batch, dtype, device));
    }
}
