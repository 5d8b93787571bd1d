using Microsoft.Extensions.Time.Testing;

namespace MrVae.Grains.Tests;

/// <summary>The coordinator's timeouts on a fake clock: a member that does not answer, and the rejoin probe's pace.</summary>
public sealed class FakeClockTests
{
    static readonly TensorPayload Empty = new([0], "Float32", []);

    /// <summary>A member that answers Encode at once, or never (until its silo is back, which it is not).</summary>
    sealed class Member(bool answers) : IStepMember
    {
        public int Calls;
        public Task<EncodeResult> Encode(long step, long[] ids, string split, bool keepGraph, EncoderGradients? previous = null)
        {
            Calls++;
            return answers ? Task.FromResult(new EncodeResult(Empty, Empty)) : new TaskCompletionSource<EncodeResult>().Task;
        }
        public Task<DecodeResult> Decode(long step, TensorPayload decoderInput, double[] viewWeights, bool backward, int batch = 0) => throw new NotSupportedException();
        public Task ApplyEncoderGradients(long step, TensorPayload dMu, TensorPayload dLogVar) => throw new NotSupportedException();
    }

    [Fact]
    public async Task AMemberThatDoesNotAnswerTimesOutOnTheClockAndIsNamed()
    {
        var clock = new FakeTimeProvider();
        var members = new Dictionary<int, Member> { [0] = new(answers: true), [2] = new(answers: false) };
        var calls = new MemberCalls(j => members[j], TimeSpan.FromSeconds(60), clock);

        var pending = calls.OnAll([0, 2], "encode", (_, m) => m.Encode(0, [1, 2], "train", keepGraph: true));
        clock.Advance(TimeSpan.FromSeconds(59));
        await Task.Delay(50);
        Assert.False(pending.IsCompleted);   // within the timeout the step waits for every member

        clock.Advance(TimeSpan.FromSeconds(2));
        var failure = await Assert.ThrowsAsync<MembersFailedException>(() => pending.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal("encode", failure.Phase);
        var (modality, reason) = Assert.Single(failure.Failures);
        Assert.Equal(2, modality);
        Assert.Equal("encode timed out", reason);

        // The answers of the others are kept when the caller sorts rather than throws (checkpoint, rejoin).
        var sorted = calls.Call([0, 2], "rejoin", (_, m) => m.Encode(0, [1], "train", keepGraph: false));
        clock.Advance(TimeSpan.FromSeconds(61));
        var (results, failures) = await sorted.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal([0], results.Keys);
        Assert.Equal([(2, "rejoin timed out")], failures);
    }

    [Fact]
    public async Task TheRejoinProbeRunsAtOnceThenOncePerIntervalAndNeverTwiceAtATime()
    {
        var clock = new FakeTimeProvider();
        var probe = new RejoinProbe(clock, TimeSpan.FromSeconds(5));
        int probes = 0;
        Task Done() { probes++; return Task.CompletedTask; }

        Assert.True(probe.TryStart(Done));    // the first probe goes at once
        clock.Advance(TimeSpan.FromSeconds(4.9));
        Assert.False(probe.TryStart(Done));   // not again within the interval
        clock.Advance(TimeSpan.FromSeconds(0.1));
        Assert.True(probe.TryStart(Done));
        Assert.Equal(2, probes);

        // A probe still waiting on its members (their silo is gone) is not joined by another, however long it takes.
        var slow = new TaskCompletionSource();
        clock.Advance(TimeSpan.FromSeconds(5));
        Assert.True(probe.TryStart(() => { probes++; return slow.Task; }));
        clock.Advance(TimeSpan.FromMinutes(10));
        Assert.False(probe.TryStart(Done));
        slow.SetResult();
        await slow.Task;
        Assert.True(probe.TryStart(Done));
        Assert.Equal(4, probes);
    }
}
