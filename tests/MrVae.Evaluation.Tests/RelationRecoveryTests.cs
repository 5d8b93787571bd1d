using MrVae.Data;

namespace MrVae.Evaluation.Tests;

public sealed class RelationRecoveryTests
{
    static SubsetSize Size(double mean, params int[] s) => new(s, mean, (int)Math.Round(mean), false);
    static SubsetSize Structure(double mean, int mostProbable, params int[] s) => new(s, mean, mostProbable, false);

    [Fact]
    public void ExtendedTruthIsTheFullSetAndTheFivePairsOfTheRing()
    {
        var truth = RelationRecovery.Truth(PolyMnistSpec.Extended()).Select(s => string.Join(",", s)).Order().ToArray();
        Assert.Equal(["0,1", "0,1,2,3,4", "0,4", "1,2", "2,3", "3,4"], truth);
        Assert.Equal(["0,1,2,3,4"], RelationRecovery.Truth(PolyMnistSpec.Vanilla()).Select(s => string.Join(",", s)));
    }

    [Fact]
    public void PrecisionAndRecallOfHandMadeCases()
    {
        var truth = RelationRecovery.Truth(PolyMnistSpec.Extended());
        // Two ring pairs right, one wrong pair: precision 2/3, recall 2/6.
        var s = RelationRecovery.Score([[0, 1], [1, 2], [0, 2]], truth);
        Assert.Equal(2.0 / 3, s.Precision!.Value, 12);
        Assert.Equal(2.0 / 6, s.Recall!.Value, 12);
        Assert.Equal([[0, 2]], s.Spurious);
        Assert.Equal(4, s.Missed.Length);
        // Everything: precision 1, recall 1; member order does not matter.
        var all = RelationRecovery.Score([[1, 0], [2, 1], [3, 2], [4, 3], [4, 0], [4, 3, 2, 1, 0]], truth);
        Assert.Equal((1.0, 1.0), (all.Precision!.Value, all.Recall!.Value));
        // Nothing predicted: precision undefined (null), recall 0.
        var none = RelationRecovery.Score([], truth);
        Assert.Null(none.Precision);
        Assert.Equal(0, none.Recall);
        // Vanilla: only the full set is shared; predicting it and one pair gives 1/2 and 1.
        var vanilla = RelationRecovery.Score([[0, 1, 2, 3, 4], [0, 1]], RelationRecovery.Truth(PolyMnistSpec.Vanilla()));
        Assert.Equal((0.5, 1.0), (vanilla.Precision!.Value, vanilla.Recall!.Value));
    }

    [Fact]
    public void SubsetsCountAsRecoveredFromOnePositionOfTheMostProbableStructure()
    {
        var spec = PolyMnistSpec.Extended();
        // Found: the most probable structure gives the subset a position, whatever E_q[n_A] is ({1,2}: 2.4 expected
        // positions spread thinly, none most probable; {0,1}: 0.8 expected, one most probable).
        var sizes = new[] { Structure(12.3, 12, 0, 1, 2, 3, 4), Structure(0.8, 1, 0, 1), Structure(2.4, 0, 1, 2), Structure(3.5, 3, 0, 2), Structure(0, 0, 2, 3) };
        var s = RelationRecovery.ScoreFound(sizes, RelationRecovery.Truth(spec));
        Assert.Equal(3, s.Predicted);            // {0..4}, {0,1}, {0,2}
        Assert.Equal(2, s.TruePositives);
        Assert.Equal(2.0 / 3, s.Precision!.Value, 12);
        Assert.Equal(2.0 / 6, s.Recall!.Value, 12);
    }

    [Fact]
    public void PairMatrixSumsSharedDimensions()
    {
        var m = RelationRecovery.PairMatrix([Size(2, 0, 1, 2), Size(3, 0, 1), Size(1, 1, 2)], 3);
        Assert.Equal(5, m[0, 1]); Assert.Equal(5, m[1, 0]);
        Assert.Equal(2, m[0, 2]); Assert.Equal(3, m[1, 2]);
        Assert.Equal(0, m[0, 0]);
    }
}
