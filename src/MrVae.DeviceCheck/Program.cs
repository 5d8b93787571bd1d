using System.Globalization;
using System.Runtime.InteropServices;
using MrVae.Model;
using MrVae.Model.Training;
using TorchSharp;
using static TorchSharp.torch;

// mrvae-device-check [--device cuda:0] [--torch-lib DIR] [--batch 256] [--steps 10]
// 1. One step of every model on the device against the CPU, float64, evaluation and training (same draws): loss and
//    every parameter's gradient.
// 2. Training-step times on the device, float32. Exit code: 0 all agree, 2 a mismatch, 1 no such device.
// --torch-lib: a Python install of PyTorch as libtorch (its torch/lib folder; TorchSharp's documented route for a
// libtorch other than its packages'), for a machine without the TorchSharp-cuda packages.
var options = ParseOptions(args);
if (options.TorchLib is { } lib)
{
    NativeLibrary.Load(Path.Combine(lib, "libtorch_cuda.so"));
    torch.InitializeDeviceType(DeviceType.CUDA);
}
var device = new Device(options.Device);
Console.WriteLine($"TorchSharp {typeof(torch).Assembly.GetName().Version}, device {device}, cuda available: {cuda.is_available()}");
if (device.type == DeviceType.CUDA && !cuda.is_available())
{
    Console.Error.WriteLine($"error: {device} is not available here (no CUDA libtorch loaded: build with -p:TorchBackend=cuda, or pass --torch-lib a PyTorch install's torch/lib)");
    return 1;
}

int mismatches = 0;
void Report(DeviceComparison.Result r, string variant)
{
    if (!r.Agrees) mismatches++;
    Console.WriteLine($"{r.Kind,-6} {variant,-16} {(r.Training ? "training" : "evaluation"),-10} loss {r.Loss.ToString("R", CultureInfo.InvariantCulture)} vs {r.OtherLoss.ToString("R", CultureInfo.InvariantCulture)} " +
                      $"(rel {r.LossRelative:E1}); gradients of {r.Tensors} tensors, max |diff| / max |g| {r.GradientRelative:E1}  {(r.Agrees ? "agree" : "MISMATCH")}");
}

foreach (var kind in Enum.GetValues<ModelKind>())
    foreach (bool training in new[] { false, true })
    {
        var config = new ModelConfig { Kind = kind, Modalities = 5, LatentDim = 8 };
        Report(DeviceComparison.Compare(config, CPU, device, training), "");
    }

foreach (var (kind, d) in new[] { (ModelKind.MrVae, 64), (ModelKind.MrVae, 32), (ModelKind.MoPoE, 64) })
{
    var config = new ModelConfig { Kind = kind, Modalities = 5, LatentDim = d };
    var times = DeviceComparison.StepTimes(config, device, options.Batch, warmup: 3, steps: options.Steps).Order().ToArray();
    Console.WriteLine($"step {kind,-6} D={d,-3} batch {options.Batch}: " +
                      $"median {times[times.Length / 2]:F1} ms (min {times[0]:F1}, max {times[^1]:F1}, {times.Length} steps)");
}
Console.WriteLine(mismatches == 0 ? "all agree" : $"{mismatches} mismatches");
return mismatches == 0 ? 0 : 2;

static (string Device, string? TorchLib, int Batch, int Steps) ParseOptions(string[] args)
{
    string device = "cuda:0"; string? torchLib = null; int batch = 256, steps = 10;
    for (int i = 0; i < args.Length; i++)
    {
        string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
        switch (args[i])
        {
            case "--device": device = Value(); break;
            case "--torch-lib": torchLib = Value(); break;
            case "--batch": batch = int.Parse(Value(), CultureInfo.InvariantCulture); break;
            case "--steps": steps = int.Parse(Value(), CultureInfo.InvariantCulture); break;
            default: throw new ArgumentException($"unknown option {args[i]}: use --device, --torch-lib, --batch, --steps");
        }
    }
    return (device, torchLib, batch, steps);
}
