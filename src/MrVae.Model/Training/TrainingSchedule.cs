using MrVae.Data;
namespace MrVae.Model.Training;

/// <summary>
/// Which samples each step uses: one permutation per epoch derived from (run seed, epoch), so any step's batch
/// can be computed without replaying the run (what resume and the distributed coordinator need).
/// The last incomplete batch of an epoch is dropped.
/// </summary>
public sealed class TrainingSchedule
{
    readonly long seed;
    public int SampleCount { get; }
    public int BatchSize { get; }
    public long StepsPerEpoch { get; }
    int cachedEpoch = -1;
    long[] cachedPermutation = [];

    public TrainingSchedule(long seed, int sampleCount, int batchSize)
    {
        if (batchSize < 1) throw new UserInputException("batch size must be at least 1");
        if (sampleCount < batchSize)
            throw new UserInputException($"the training split has {sampleCount} samples, fewer than one batch of {batchSize}: lower --batch or make more data");
        this.seed = seed; SampleCount = sampleCount; BatchSize = batchSize;
        StepsPerEpoch = sampleCount / batchSize;
    }

    public int EpochOf(long step) => (int)(step / StepsPerEpoch);

    public long[] BatchIds(long step)
    {
        int epoch = EpochOf(step);
        if (epoch != cachedEpoch)
        {
            var rng = new Random((int)(Seeds.Derive(seed, $"{Seeds.DataOrderParty}/{epoch}") & int.MaxValue));
            var perm = new long[SampleCount];
            for (int i = 0; i < perm.Length; i++) perm[i] = i;
            for (int i = perm.Length - 1; i > 0; i--) { int k = rng.Next(i + 1); (perm[i], perm[k]) = (perm[k], perm[i]); }
            cachedPermutation = perm; cachedEpoch = epoch;
        }
        long offset = (step % StepsPerEpoch) * BatchSize;
        return cachedPermutation.AsSpan((int)offset, BatchSize).ToArray();
    }
}
