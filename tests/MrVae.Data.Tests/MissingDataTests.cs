using MrVae.Data;

namespace MrVae.Data.Tests;

/// <summary>`data make --missing P`: each modality's training shard keeps its own tuples, keyed by opaque ids; the test split stays complete.</summary>
public sealed class MissingDataTests : IDisposable
{
    readonly string root = TestData.TempDir();
    public void Dispose() => Directory.Delete(root, recursive: true);

    string MakeRing(string name, int seed = 4)
    {
        string dir = Path.Combine(root, name);
        VectorStore.Make(dir, VectorSpec.Ring(), train: 400, test: 50, seed: seed);
        return dir;
    }

    [Fact]
    public void EachModalityKeepsItsOwnTuplesByIdAndEveryTupleKeepsOne()
    {
        string complete = MakeRing("complete"), missing = MakeRing("missing");
        var before = DatasetFingerprint.Of(missing);
        var kept = SampleIds.ApplyMissing(missing, 0.5, seed: 4);

        var tuples = SampleIds.LoadTuples(missing)!;
        Assert.Equal(400, tuples.Length);
        Assert.Equal(400, tuples.Distinct().Count());
        Assert.NotEqual(Enumerable.Range(0, 400).Select(i => (long)i), tuples);   // opaque, not positions
        var index = tuples.Select((id, t) => (id, t)).ToDictionary(p => p.id, p => p.t);
        var observed = new int[400];
        for (int j = 0; j < 5; j++)
        {
            var ids = SampleIds.LoadModality(missing, "train", j)!;
            var values = VectorStore.LoadModality(missing, "train", j, out int count, out int dim);
            var all = VectorStore.LoadModality(complete, "train", j, out _, out _);
            Assert.Equal(kept[j], count);
            Assert.Equal(count, ids.Length);
            // Dropped with probability 0.5 (a tuple that lost all keeps one): about half, and not the same tuples everywhere.
            Assert.InRange(count, 170, 260);
            for (int r = 0; r < count; r++)
            {
                int t = index[ids[r]];
                observed[t]++;
                Assert.Equal(all.AsSpan(t * dim, dim).ToArray(), values.AsSpan(r * dim, dim).ToArray());
            }
            // The test split is complete and unchanged.
            Assert.Null(SampleIds.LoadModality(missing, "test", j));
            Assert.Equal(VectorStore.LoadModality(complete, "test", j, out _, out _), VectorStore.LoadModality(missing, "test", j, out _, out _));
        }
        Assert.All(observed, n => Assert.InRange(n, 1, 5));
        Assert.Contains(observed, n => n < 5);
        // The fingerprint tells it from the complete data; the tuple count stays the tuples'.
        var after = DatasetFingerprint.Of(missing);
        Assert.NotEqual(before.ContentSha256, after.ContentSha256);
        Assert.Equal((400, 50), (after.Train, after.Test));
    }

    [Fact]
    public void AnotherSeedOrDatasetGivesOtherIdsAndTheSameSeedTheSame()
    {
        string a = MakeRing("a"), b = MakeRing("b"), c = MakeRing("c", seed: 5);
        SampleIds.ApplyMissing(a, 0.3, seed: 4);
        SampleIds.ApplyMissing(b, 0.3, seed: 4);
        SampleIds.ApplyMissing(c, 0.3, seed: 5);
        Assert.Equal(SampleIds.LoadTuples(a), SampleIds.LoadTuples(b));
        Assert.Equal(SampleIds.LoadModality(a, "train", 2), SampleIds.LoadModality(b, "train", 2));
        Assert.Empty(SampleIds.LoadTuples(a)!.Intersect(SampleIds.LoadTuples(c)!));
    }

    [Fact]
    public void CompleteDataIsUntouchedAndMakingItAgainRemovesTheIds()
    {
        string dir = MakeRing("again");
        var fingerprint = DatasetFingerprint.Of(dir);
        Assert.Empty(SampleIds.ApplyMissing(dir, 0, seed: 4));
        Assert.Equal(fingerprint, DatasetFingerprint.Of(dir));
        SampleIds.ApplyMissing(dir, 0.4, seed: 4);
        Assert.True(File.Exists(SampleIds.ModalityPath(dir, "train", 0)));
        MakeRing("again");
        Assert.False(File.Exists(SampleIds.ModalityPath(dir, "train", 0)));
        Assert.False(File.Exists(SampleIds.TuplesPath(dir)));
        Assert.Equal(fingerprint, DatasetFingerprint.Of(dir));
    }

    [Fact]
    public void AMissingProbabilityOutsideZeroToOneIsRefusedAndASpecCanNameIt()
    {
        Assert.Throws<UserInputException>(() => SampleIds.DrawAvailability(3, 2, 1.0, 0));
        Assert.Throws<UserInputException>(() => SampleIds.DrawAvailability(3, 2, -0.1, 0));
        string spec = Path.Combine(root, "ring.json");
        File.WriteAllText(spec, """{"name": "r", "kind": "vector", "modalities": 2, "observed_dim": 4, "private_dim": 1, "noise": 0.1, "factors": [], "missing": 0.3}""");
        Assert.Equal(0.3, SampleIds.MissingOfSpecFile(spec));
        Assert.Equal("r", VectorSpec.Load(spec).Name);   // the field does not disturb the spec itself
    }
}
