using MrVae.Data;
using MrVae.Model.Training;
using static TorchSharp.torch;

namespace MrVae.Evaluation;

/// <summary>One split of a PolyMNIST dataset with its labels: every modality's images and Count × Factors labels.</summary>
public sealed class LabelledSplit
{
    public ModalityImages[] Images { get; }
    /// <summary>Count × Factors, row-major, factor order of the spec.</summary>
    public int[] Labels { get; }
    public int Count { get; }
    public int Factors { get; }
    public int Modalities => Images.Length;

    public LabelledSplit(ModalityImages[] images, int[] labels, int count, int factors)
    {
        if (images.Length == 0) throw new ArgumentException("a split needs at least one modality");
        foreach (var m in images)
            if (m.Count != count) throw new DataFormatException($"a modality holds {m.Count} images where the labels name {count} tuples; re-run `mrvae data make`");
        if (labels.Length != (long)count * factors) throw new ArgumentException($"expected {count}x{factors} labels, got {labels.Length}");
        Images = images; Labels = labels; Count = count; Factors = factors;
    }

    public int Label(int tuple, int factor) => Labels[tuple * Factors + factor];

    /// <summary>Labels of <paramref name="factor"/> at <paramref name="ids"/> as an int64 tensor.</summary>
    public Tensor LabelTensor(IReadOnlyList<long> ids, int factor) =>
        tensor(ids.Select(i => (long)Label(checked((int)i), factor)).ToArray(), dtype: int64);

    public MultimodalDataset ToDataset() => new(Images.Select(m => (ModalityImages?)m).ToArray());

    public static LabelledSplit From(PolyMnistSplit split) =>
        new(split.Pixels.Select(p => new ModalityImages(p, split.Count)).ToArray(), split.Labels, split.Count, split.Factors);

    /// <summary>Reads a split of a dataset directory and checks it against <paramref name="spec"/>.</summary>
    public static LabelledSplit Load(string dir, string split, PolyMnistSpec spec)
    {
        if (SampleIds.LoadModality(dir, split, 0) is not null || Enumerable.Range(0, spec.Modalities).Any(j => File.Exists(SampleIds.ModalityPath(dir, split, j))))
            throw new UserInputException($"{dir} lacks modalities per sample (made with `data make --missing`), so its {split} split has no whole tuples to train digit classifiers on; " +
                "evaluate with --data a complete dataset of the same spec, --seed and sizes (made without --missing): its test split is the same");
        var labels = PolyMnistStore.LoadLabels(dir, split, out int count, out int factors);
        if (factors != spec.Factors.Length)
            throw new DataFormatException($"{PolyMnistStore.LabelsPath(dir, split)} has {factors} factors where {dir}/spec.json names {spec.Factors.Length}; re-run `mrvae data make` for {dir}");
        var images = new ModalityImages[spec.Modalities];
        for (int j = 0; j < spec.Modalities; j++)
        {
            var pixels = PolyMnistStore.LoadModality(dir, split, j, out int n);
            if (n != count) throw new DataFormatException($"{PolyMnistStore.ModalityPath(dir, split, j)} holds {n} images where labels.bin names {count}; re-run `mrvae data make` for {dir}");
            images[j] = new ModalityImages(pixels, n);
        }
        return new LabelledSplit(images, labels, count, factors);
    }

    /// <summary>Ids 0..n−1 as the sample ids of a batch.</summary>
    public static long[] Range(int start, int count) => Enumerable.Range(start, count).Select(i => (long)i).ToArray();
}
