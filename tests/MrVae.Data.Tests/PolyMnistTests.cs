using System.Buffers.Binary;
using System.IO.Compression;
using MrVae.Data;

namespace MrVae.Data.Tests;

public class PolyMnistTests
{
    const int Tuples = 300;

    [Fact]
    public void ExtendedCornersAreSharedByExactlyTheirPairWithDifferentInstances()
    {
        var spec = PolyMnistSpec.Extended();
        var split = PolyMnistGenerator.Generate(spec, TestData.Train, Tuples, seed: 3);
        int m = spec.Modalities;
        for (int t = 0; t < Tuples; t++)
            for (int f = 0; f < spec.Factors.Length; f++)
            {
                var members = spec.Factors[f].Members;
                Assert.Equal(f == 0 ? 5 : 2, members.Length);
                var sources = members.Select(j => split.Sources![(t * spec.Factors.Length + f) * m + j]).ToArray();
                // Every member shows an MNIST image of the factor's label...
                Assert.All(sources, s => Assert.Equal(split.Label(t, f), TestData.Train.Labels[s]));
                // ...and each member its own instance.
                Assert.Equal(sources.Length, sources.Distinct().Count());
                // Non-members draw nothing for this factor.
                for (int j = 0; j < m; j++)
                    if (!members.Contains(j)) Assert.Equal(-1, split.Sources![(t * spec.Factors.Length + f) * m + j]);
            }
        // All 15 instances of a tuple (5 main, 2 per corner) are different MNIST images.
        for (int t = 0; t < Tuples; t++)
        {
            var all = split.Sources!.AsSpan(t * spec.Factors.Length * m, spec.Factors.Length * m).ToArray().Where(s => s >= 0).ToArray();
            Assert.Equal(15, all.Length);
            Assert.Equal(15, all.Distinct().Count());
        }
        // Corner pairs form the ring {k, k+1 mod 5}.
        for (int k = 0; k < 5; k++)
            Assert.Equal(new[] { k, (k + 1) % 5 }.OrderBy(x => x), spec.Factors[k + 1].Members);
    }

    [Fact]
    public void SameSeedIsByteIdenticalAndADifferentSeedDiffers()
    {
        var spec = PolyMnistSpec.Extended();
        var a = PolyMnistGenerator.Generate(spec, TestData.Train, 50, seed: 9);
        var b = PolyMnistGenerator.Generate(spec, TestData.Train, 50, seed: 9);
        var c = PolyMnistGenerator.Generate(spec, TestData.Train, 50, seed: 10);
        for (int j = 0; j < 5; j++) Assert.Equal(a.Pixels[j], b.Pixels[j]);
        Assert.Equal(a.Labels, b.Labels);
        Assert.NotEqual(a.Pixels[0], c.Pixels[0]);
    }

    [Fact]
    public void VanillaStrokesAreInvertedBackground()
    {
        var spec = PolyMnistSpec.Vanilla();
        var split = PolyMnistGenerator.Generate(spec, TestData.Train, 20, seed: 1);
        for (int t = 0; t < 20; t++)
            for (int j = 0; j < 5; j++)
            {
                int source = split.Sources![t * 5 + j];
                var digit = TestData.Train.Image(source);
                var img = split.Pixels[j].AsSpan(t * PolyMnistSplit.ImageBytes, PolyMnistSplit.ImageBytes);
                // Find the crop offset: the background is smooth, so compare a stroke pixel with its non-stroke neighbourhood.
                int strokes = 0, matches = 0;
                for (int y = 1; y < 27; y++)
                    for (int x = 1; x < 27; x++)
                    {
                        bool stroke = digit[y * 28 + x] > 128;
                        bool neighbourBackground = digit[y * 28 + x - 1] <= 128;
                        if (!stroke || !neighbourBackground) continue;
                        strokes++;
                        // Inverting a background value v gives 255 − v: pixel + neighbour ≈ 255 per channel (smooth texture).
                        int sum = 0;
                        for (int c = 0; c < 3; c++) sum += Math.Abs(img[(c * 28 + y) * 28 + x] + img[(c * 28 + y) * 28 + x - 1] - 255);
                        if (sum < 3 * 40) matches++;
                    }
                Assert.True(strokes > 0);
                Assert.True(matches >= 0.9 * strokes, $"tuple {t} modality {j}: {matches}/{strokes} stroke pixels look like inverted background");
            }
    }

    [Fact]
    public void VanillaFollowsMnistOrderAndShowsEveryImageOncePerModality()
    {
        var mnist = TestData.Test;
        var split = PolyMnistGenerator.Generate(PolyMnistSpec.Vanilla(), mnist, mnist.Count, seed: 11, streamOffset: 1);
        for (int t = 0; t < mnist.Count; t++) Assert.Equal(mnist.Labels[t], split.Label(t, 0));
        for (int j = 0; j < 5; j++)
        {
            var seen = new bool[mnist.Count];
            for (int t = 0; t < mnist.Count; t++)
            {
                int s = split.Sources![t * 5 + j];
                Assert.False(seen[s], $"modality {j} shows MNIST image {s} twice");
                seen[s] = true;
            }
        }
        // The modalities' permutations are independent: modality 0 and 1 rarely show images at the same rank.
        int equalOrder = Enumerable.Range(0, mnist.Count).Count(t => split.Sources![t * 5] == t);
        Assert.True(equalOrder < 50, $"{equalOrder} tuples show MNIST image t in modality 0: not permuted");
    }

    [Fact]
    public void PixelsShowTheRecordedInstancesAsInvertedBackgroundAndNothingElse()
    {
        foreach (var spec in new[] { PolyMnistSpec.Vanilla(), PolyMnistSpec.Extended() })
        {
            var split = PolyMnistGenerator.Generate(spec, TestData.Train, 4, seed: 21);
            int m = spec.Modalities, factors = spec.Factors.Length;
            for (int j = 0; j < m; j++)
            {
                var bg = Backgrounds.Texture(j, m, seed: 21);
                for (int t = 0; t < 4; t++)
                {
                    var img = split.Pixels[j].AsSpan(t * PolyMnistSplit.ImageBytes, PolyMnistSplit.ImageBytes).ToArray();
                    var strokes = StrokesOnBackground(img, bg);
                    Assert.True(strokes is not null, $"{spec.Name} tuple {t} modality {j}: not a crop of the background with inverted strokes");
                    var covered = new bool[28 * 28];
                    for (int f = 0; f < factors; f++)
                        foreach (var place in spec.Factors[f].Placements.Where(p => p.Modality == j))
                        {
                            int source = split.Sources![(t * factors + f) * m + j];
                            var expected = BoxResize(TestData.Train.Image(source), place.Size);
                            int both = 0, either = 0;
                            for (int y = 0; y < place.Size; y++)
                                for (int x = 0; x < place.Size; x++)
                                {
                                    int at = (place.Y + y) * 28 + place.X + x;
                                    covered[at] = true;
                                    if (strokes![at] && expected[y * place.Size + x]) both++;
                                    if (strokes![at] || expected[y * place.Size + x]) either++;
                                }
                            double iou = (double)both / either;
                            // Full size is the binarised digit itself; downscaled, the test's own box filter agrees closely.
                            Assert.True(place.Size == 28 ? iou == 1 : iou > 0.6, $"{spec.Name} tuple {t} modality {j} factor {spec.Factors[f].Name}: IoU {iou:F2} with MNIST image {source}");
                        }
                    for (int i = 0; i < 28 * 28; i++)
                        if (!covered[i]) Assert.False(strokes![i], $"{spec.Name} tuple {t} modality {j}: stroke outside every placement at {i % 28},{i / 28}");
                }
            }
        }
    }

    /// <summary>Finds the 28 × 28 crop of the background this image was drawn on (every value equals v or 255 − v)
    /// and returns where it is inverted; null when no crop fits.</summary>
    static bool[]? StrokesOnBackground(byte[] img, byte[] bg)
    {
        int side = PolyMnistGenerator.BackgroundSide;
        for (int oy = 0; oy <= side - 28; oy++)
            for (int ox = 0; ox <= side - 28; ox++)
            {
                var strokes = new bool[28 * 28];
                bool fits = true;
                for (int i = 0; i < 28 * 28 && fits; i++)
                {
                    int x = i % 28, y = i / 28;
                    bool inverted = true, plain = true;
                    for (int c = 0; c < 3; c++)
                    {
                        byte v = bg[(c * side + oy + y) * side + ox + x], p = img[(c * 28 + y) * 28 + x];
                        inverted &= p == 255 - v; plain &= p == v;
                    }
                    fits = inverted || plain;
                    strokes[i] = inverted;
                }
                if (fits) return strokes;
            }
        return null;
    }

    /// <summary>The test's own downscale: a target pixel is a stroke when ≥ 35% of the source pixels whose centre falls in it are (> 128).</summary>
    static bool[] BoxResize(ReadOnlySpan<byte> digit, int size)
    {
        var hits = new int[size * size];
        var total = new int[size * size];
        for (int sy = 0; sy < 28; sy++)
            for (int sx = 0; sx < 28; sx++)
            {
                int at = (int)((sy + 0.5) * size / 28) * size + (int)((sx + 0.5) * size / 28);
                total[at]++;
                if (digit[sy * 28 + sx] > 128) hits[at]++;
            }
        var result = new bool[size * size];
        for (int i = 0; i < result.Length; i++) result[i] = total[i] > 0 && hits[i] >= 0.35 * total[i];
        return result;
    }

    [Fact]
    public void VanillaMainDigitSharesTheLabelAcrossAllModalities()
    {
        var split = PolyMnistGenerator.Generate(PolyMnistSpec.Vanilla(), TestData.Train, Tuples, seed: 5);
        for (int t = 0; t < Tuples; t++)
        {
            var sources = Enumerable.Range(0, 5).Select(j => split.Sources![t * 5 + j]).ToArray();
            Assert.All(sources, s => Assert.Equal(split.Label(t, 0), TestData.Train.Labels[s]));
            Assert.Equal(5, sources.Distinct().Count());
        }
    }

    [Fact]
    public void CustomSpecRoundTripsAndGenerates()
    {
        var dir = TestData.TempDir();
        var spec = new PolyMnistSpec("three", 3,
        [
            new SharedFactor("main", [new(0, 0, 0, 28), new(1, 0, 0, 28), new(2, 0, 0, 28)]),
            new SharedFactor("pair", [new(0, 18, 0, 10), new(2, 0, 18, 10)]),
        ]);
        var path = Path.Combine(dir, "spec.json");
        spec.Save(path);
        var loaded = PolyMnistSpec.Load(path);
        Assert.Equal(spec.Name, loaded.Name);
        Assert.Equal(new[] { new[] { 0, 1, 2 }, new[] { 0, 2 } }, loaded.SharedMemberSets);
        var split = PolyMnistGenerator.Generate(loaded, TestData.Train, 30, seed: 1);
        Assert.Equal(3, split.Modalities);
        for (int t = 0; t < 30; t++)
        {
            Assert.Equal(-1, split.Sources![(t * 2 + 1) * 3 + 1]);
            Assert.Equal(TestData.Train.Labels[split.Sources![(t * 2 + 1) * 3 + 0]], TestData.Train.Labels[split.Sources![(t * 2 + 1) * 3 + 2]]);
        }
    }

    [Fact]
    public void CustomSpecWithoutAnAllMemberFactorDrawsEveryLabelUniformly()
    {
        // Two pairwise factors on 3 modalities, no main digit: labels uniform, each member its own instance.
        var spec = new PolyMnistSpec("pairs", 3,
        [
            new SharedFactor("a", [new(0, 0, 0, 14), new(1, 14, 14, 14)]),
            new SharedFactor("b", [new(1, 0, 0, 14), new(2, 7, 7, 14)]),
        ]);
        Assert.Equal(-1, PolyMnistGenerator.MainFactor(spec));
        var split = PolyMnistGenerator.Generate(spec, TestData.Train, 2000, seed: 4);
        var histogram = new int[10];
        for (int t = 0; t < 2000; t++)
            for (int f = 0; f < 2; f++)
            {
                histogram[split.Label(t, f)]++;
                var sources = spec.Factors[f].Members.Select(j => split.Sources![(t * 2 + f) * 3 + j]).ToArray();
                Assert.All(sources, s => Assert.Equal(split.Label(t, f), TestData.Train.Labels[s]));
                Assert.NotEqual(sources[0], sources[1]);
            }
        Assert.All(histogram, h => Assert.InRange(h, 320, 480));   // 400 expected per digit
        // The main digit is the first all-member factor, wherever it is listed.
        var later = new PolyMnistSpec("later", 2, [new SharedFactor("corner", [new(0, 0, 0, 10)]), new SharedFactor("main", [new(0, 0, 10, 18), new(1, 0, 10, 18)])]);
        Assert.Equal(1, PolyMnistGenerator.MainFactor(later));
        var laterSplit = PolyMnistGenerator.Generate(later, TestData.Train, 100, seed: 4);
        for (int t = 0; t < 100; t++) Assert.Equal(TestData.Train.Labels[t], laterSplit.Label(t, 1));
    }

    [Fact]
    public void SpecJsonListsTheMembersAndAcceptsAnyKeyCase()
    {
        var dir = TestData.TempDir();
        var path = Path.Combine(dir, "spec.json");
        PolyMnistSpec.Extended().Save(path);
        var json = File.ReadAllText(path);
        Assert.Contains("\"members\"", json);
        Assert.Contains("\"placements\"", json);
        var back = PolyMnistSpec.Load(path);
        Assert.Equal(PolyMnistSpec.Extended().SharedMemberSets, back.SharedMemberSets);
        Assert.Equal(PolyMnistSpec.Extended().Factors.SelectMany(f => f.Placements), back.Factors.SelectMany(f => f.Placements));

        File.WriteAllText(path, "{ \"Name\": \"x\", \"Modalities\": 2, // a comment\n \"Factors\": [{\"Name\": \"d\", \"Placements\": [{\"Modality\": 0, \"X\": 0, \"Y\": 0, \"Size\": 28}, {\"Modality\": 1, \"X\": 0, \"Y\": 0, \"Size\": 28}]}] }");
        Assert.Equal(new[] { new[] { 0, 1 } }, PolyMnistSpec.Load(path).SharedMemberSets);
        Assert.Equal("x", PolyMnistSpec.Resolve(path).Name);
    }

    [Theory]
    [InlineData("{ not json")]
    [InlineData("null")]
    [InlineData("{\"modalities\":1,\"factors\":[{\"name\":\"a\",\"placements\":[{\"modality\":0,\"x\":0,\"y\":0,\"size\":28}]}]}")]
    [InlineData("{\"name\":\"x\",\"modalities\":1,\"factors\":[null]}")]
    [InlineData("{\"name\":\"x\",\"modalities\":1,\"factors\":[{\"name\":\"a\",\"placements\":[null]}]}")]
    [InlineData("{\"name\":\"x\",\"modalities\":2,\"factors\":[{\"name\":\"a\",\"placements\":[{\"modality\":0,\"x\":0,\"y\":0,\"size\":28}]}]}")]
    [InlineData("{\"name\":\"x\",\"modalities\":1,\"factors\":[{\"name\":\"a\",\"placements\":[{\"modality\":0,\"x\":0,\"y\":0,\"size\":28},{\"modality\":0,\"x\":0,\"y\":0,\"size\":10}]}]}")]
    [InlineData("{\"name\":\"x\",\"modalities\":1,\"factors\":[{\"name\":\"a\",\"placements\":[{\"modality\":0,\"x\":0,\"y\":0,\"size\":28}]},{\"name\":\"a\",\"placements\":[{\"modality\":0,\"x\":0,\"y\":0,\"size\":10}]}]}")]
    [InlineData("{\"name\":\"x\",\"modalities\":\"two\",\"factors\":[]}")]
    [InlineData("{\"name\":\"x\",\"modalities\":2,\"factors\":[]}")]
    [InlineData("{\"name\":\"x\",\"modalities\":2,\"factors\":[{\"name\":\"a\",\"placements\":[{\"modality\":5,\"x\":0,\"y\":0,\"size\":28}]}]}")]
    [InlineData("{\"name\":\"x\",\"modalities\":1,\"factors\":[{\"name\":\"a\",\"placements\":[{\"modality\":0,\"x\":20,\"y\":0,\"size\":28}]}]}")]
    public void MalformedSpecsAreRejectedWithOneSentence(string json)
    {
        var path = Path.Combine(TestData.TempDir(), "bad.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<DataFormatException>(() => PolyMnistSpec.Load(path));
        Assert.Contains(path, e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void MissingSpecFileIsADataFormatError()
        => Assert.Contains("not found", Assert.Throws<DataFormatException>(() => PolyMnistSpec.Resolve(Path.Combine(TestData.TempDir(), "none.json"))).Message);

    [Fact]
    public void UnknownDatasetNameIsRejected()
        => Assert.Contains("unknown dataset", Assert.Throws<DataFormatException>(() => PolyMnistSpec.Resolve("polymnist-huge")).Message);

    [Fact]
    public void StoreRoundTripsAndDetectsTruncation()
    {
        var dir = TestData.TempDir();
        var spec = PolyMnistSpec.Extended();
        var train = PolyMnistGenerator.Generate(spec, TestData.Train, 40, seed: 2);
        var test = PolyMnistGenerator.Generate(spec, TestData.Test, 10, seed: 2, streamOffset: 1);
        PolyMnistStore.Save(dir, spec, train, test);
        for (int j = 0; j < 5; j++)
        {
            Assert.Equal(train.Pixels[j], PolyMnistStore.LoadModality(dir, "train", j, out int n));
            Assert.Equal(40, n);
        }
        Assert.Equal(test.Labels, PolyMnistStore.LoadLabels(dir, "test", out int count, out int factors));
        Assert.Equal((10, 6), (count, factors));
        Assert.Equal(spec.SharedMemberSets, PolyMnistStore.LoadSpec(dir).SharedMemberSets);

        var path = PolyMnistStore.ModalityPath(dir, "train", 3);
        var bytes = File.ReadAllBytes(path); File.WriteAllBytes(path, bytes[..^100]);
        var e = Assert.Throws<DataFormatException>(() => PolyMnistStore.LoadModality(dir, "train", 3, out _));
        Assert.Contains("mrvae data make", e.Message);
        Assert.Contains("truncated", e.Message);
        Assert.Contains(path, e.Message);
        // The other shards are untouched and still load: each modality reads only its own file.
        Assert.Equal(train.Pixels[4], PolyMnistStore.LoadModality(dir, "train", 4, out _));
    }

    [Theory]
    [InlineData("magic", 0, 0x58)]
    [InlineData("version", 4, 0x07)]
    public void StoreRejectsAForeignOrNewerFile(string expected, int offset, byte value)
    {
        var dir = TestData.TempDir();
        var spec = PolyMnistSpec.Vanilla(2);
        PolyMnistStore.Save(dir, spec, PolyMnistGenerator.Generate(spec, TestData.Train, 5, 1), PolyMnistGenerator.Generate(spec, TestData.Test, 5, 1, 1));
        foreach (var path in new[] { PolyMnistStore.ModalityPath(dir, "test", 1), PolyMnistStore.LabelsPath(dir, "test") })
        {
            var bytes = File.ReadAllBytes(path); bytes[offset] = value; File.WriteAllBytes(path, bytes);
        }
        var e1 = Assert.Throws<DataFormatException>(() => PolyMnistStore.LoadModality(dir, "test", 1, out _));
        var e2 = Assert.Throws<DataFormatException>(() => PolyMnistStore.LoadLabels(dir, "test", out _, out _));
        foreach (var e in new[] { e1, e2 })
        {
            Assert.Contains(expected, e.Message);
            Assert.Contains("re-run `mrvae data make`", e.Message);
        }
        Assert.Contains("modality-1.bin", e1.Message);
        Assert.Contains("labels.bin", e2.Message);
    }

    [Fact]
    public void StoreRewriteRemovesShardsOfAnEarlierLargerDataset()
    {
        var dir = TestData.TempDir();
        var five = PolyMnistSpec.Vanilla(5);
        PolyMnistStore.Save(dir, five, PolyMnistGenerator.Generate(five, TestData.Train, 5, 1), PolyMnistGenerator.Generate(five, TestData.Test, 5, 1, 1));
        var three = PolyMnistSpec.Vanilla(3);
        PolyMnistStore.Save(dir, three, PolyMnistGenerator.Generate(three, TestData.Train, 7, 1), PolyMnistGenerator.Generate(three, TestData.Test, 6, 1, 1));
        Assert.False(File.Exists(PolyMnistStore.ModalityPath(dir, "train", 3)));
        Assert.False(File.Exists(PolyMnistStore.ModalityPath(dir, "test", 4)));
        Assert.Equal(3, PolyMnistStore.LoadSpec(dir).Modalities);
        PolyMnistStore.LoadModality(dir, "test", 2, out int n);
        Assert.Equal(6, n);
    }

    [Fact]
    public void MissingDatasetDirectoryNamesTheFix()
        => Assert.Contains("mrvae data make", Assert.Throws<DataFormatException>(() => PolyMnistStore.LoadSpec(Path.Combine(TestData.TempDir(), "none"))).Message);

    [Fact]
    public void GridPlacesCellsWithPaddingScaleAndFloats()
    {
        var red = new byte[ImageGrid.ImageBytes];
        Array.Fill(red, (byte)200, 0, 28 * 28);                       // channel R only
        var grey = new float[ImageGrid.ImageBytes];
        Array.Fill(grey, 0.5f);
        grey[0] = float.NaN; grey[1] = 2f;
        var rgb = ImageGrid.Compose([[red, null], [null, ImageGrid.FromFloats(grey)]], scale: 2, out int w, out int h);
        Assert.Equal((2 * (56 + 2) + 2, 2 * (56 + 2) + 2), (w, h));
        byte[] Pixel(int x, int y) => rgb.AsSpan((y * w + x) * 3, 3).ToArray();
        Assert.Equal(new byte[] { 255, 255, 255 }, Pixel(0, 0));         // padding
        Assert.Equal(new byte[] { 200, 0, 0 }, Pixel(2, 2));             // first cell, top-left
        Assert.Equal(new byte[] { 200, 0, 0 }, Pixel(57, 57));           // first cell, bottom-right (scaled)
        Assert.Equal(new byte[] { 255, 255, 255 }, Pixel(58, 2));        // padding between cells
        Assert.Equal(new byte[] { 255, 255, 255 }, Pixel(62, 2));        // empty cell
        int o = 2 + 58;
        Assert.Equal(new byte[] { 0, 128, 128 }, Pixel(o, o));           // NaN -> 0 (R), G and B 0.5
        Assert.Equal(new byte[] { 255, 128, 128 }, Pixel(o + 2, o));     // 2.0 clamps to 255
        Assert.Equal(new byte[] { 128, 128, 128 }, Pixel(o + 4, o));

        var path = Path.Combine(TestData.TempDir(), "g.png");
        ImageGrid.Write(path, new[] { new float[]?[] { grey } });
        Assert.Equal(0x89, File.ReadAllBytes(path)[0]);
        Assert.Throws<ArgumentException>(() => ImageGrid.Write(path, new[] { new byte[]?[] { new byte[10] } }));
    }

    [Fact]
    public void PngDecodesToTheWrittenPixels()
    {
        var path = Path.Combine(TestData.TempDir(), "x.png");
        int w = 7, h = 5;
        var rgb = Enumerable.Range(0, w * h * 3).Select(i => (byte)(i * 37 % 251)).ToArray();
        Png.WriteRgb(path, w, h, rgb);
        var file = File.ReadAllBytes(path);
        Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, file[..8]);
        Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(file, 12, 4));
        Assert.Equal(w, BinaryPrimitives.ReadInt32BigEndian(file.AsSpan(16)));
        Assert.Equal(h, BinaryPrimitives.ReadInt32BigEndian(file.AsSpan(20)));
        int idat = 8 + 25;   // signature + IHDR chunk
        int len = BinaryPrimitives.ReadInt32BigEndian(file.AsSpan(idat));
        Assert.Equal("IDAT", System.Text.Encoding.ASCII.GetString(file, idat + 4, 4));
        using var z = new ZLibStream(new MemoryStream(file, idat + 8, len), CompressionMode.Decompress);
        using var raw = new MemoryStream(); z.CopyTo(raw);
        var scan = raw.ToArray();
        Assert.Equal(h * (1 + w * 3), scan.Length);
        for (int y = 0; y < h; y++)
        {
            Assert.Equal(0, scan[y * (1 + w * 3)]);
            Assert.Equal(rgb.AsSpan(y * w * 3, w * 3).ToArray(), scan.AsSpan(y * (1 + w * 3) + 1, w * 3).ToArray());
        }
    }
}
