namespace MrVae.Grains;

/// <summary>
/// A tensor on the wire: shape, element type and the contiguous bytes. Immutable, so Orleans passes it by
/// reference between grains in one process instead of deep-copying megabytes per call.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record TensorPayload([property: Id(0)] long[] Shape, [property: Id(1)] string DType, [property: Id(2)] byte[] Data)
{
    public long ByteCount => Data.LongLength;
}

/// <summary>A modality's posterior for one batch: μ and log σ² (B × D).</summary>
[GenerateSerializer, Immutable]
public sealed record EncodeResult([property: Id(0)] TensorPayload Mu, [property: Id(1)] TensorPayload LogVar);

/// <summary>
/// ∂L/∂μ_j and ∂L/∂log σ²_j of a finished step, delivered with the next step's encode (one round trip fewer per
/// step): the grain runs its encoder backward and optimiser step for <see cref="Step"/> before it encodes.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record EncoderGradients([property: Id(0)] long Step, [property: Id(1)] TensorPayload DMu, [property: Id(2)] TensorPayload DLogVar);

/// <summary>−log p(x_j | z̃_j) for the batch, and ∂L/∂z̃_j when the decoder ran backward.</summary>
[GenerateSerializer, Immutable]
public sealed record DecodeResult([property: Id(0)] float NegativeLogLikelihood, [property: Id(1)] TensorPayload? Gradient);

/// <summary>What a modality grain needs to join a run: its index, where its shard is, the model and optimiser settings.</summary>
[GenerateSerializer, Immutable]
public sealed record ModalitySetup(
    [property: Id(0)] string RunId,
    [property: Id(1)] int Modality,
    [property: Id(2)] string DataDirectory,
    [property: Id(3)] string ModelConfigJson,
    [property: Id(4)] long Seed,
    [property: Id(5)] double LearningRate);

/// <summary>
/// Shard sizes a modality grain reports after loading its data, and the keys of its training samples (null: the
/// positions 0..TrainCount−1 of a complete shard). Keys are sample ids, or their HMAC under the nodes' shared secret:
/// only the coordinator receives them.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record ShardInfo([property: Id(0)] int TrainCount, [property: Id(1)] int TestCount, [property: Id(2)] string Silo, [property: Id(3)] string Device,
    [property: Id(4)] long[]? TrainKeys = null);

/// <summary>A modality grain configured from a checkpoint: its shard, and the step of the snapshot it loaded (null: none, fresh weights).</summary>
[GenerateSerializer, Immutable]
public sealed record RestoredShard([property: Id(0)] ShardInfo Shard, [property: Id(1)] long? Step);

/// <summary>A training run as the client asks for it.</summary>
[GenerateSerializer, Immutable]
public sealed record RunSetup(
    [property: Id(0)] string DataDirectory,
    [property: Id(1)] string ModelConfigJson,
    [property: Id(2)] long Seed,
    [property: Id(3)] int BatchSize,
    [property: Id(4)] long? Steps,
    [property: Id(5)] int Epochs,
    [property: Id(6)] double LearningRate,
    [property: Id(7)] long? EvaluateEvery,
    [property: Id(8)] int? TestSamples,
    [property: Id(9)] int[] Modalities,
    [property: Id(10)] double MemberTimeoutSeconds = 60,
    // Checkpoint every this many steps (null: at every evaluation), and at stop and end.
    [property: Id(11)] long? CheckpointEvery = null,
    // How often a dropped member's grain is asked to rejoin (its silo may be back).
    [property: Id(12)] double RejoinProbeSeconds = 5,
    // With CheckpointEvery null: also checkpoint once this many seconds have passed since the last one, so a
    // coordinator's failover reruns at most about this much work (0: only at evaluations).
    [property: Id(13)] double CheckpointSeconds = 30,
    // At a step whose loss or gradients are NaN or infinite: skip it (true) or fail the run, keeping its last checkpoint.
    [property: Id(14)] bool SkipNonFinite = false,
    // With CheckpointEvery null: checkpoint sooner than CheckpointSeconds once the time since the last checkpoint is
    // that checkpoint's cost divided by this share, so checkpoints take about this share of the run's time and a
    // silo's death loses as little training as that buys (0: only CheckpointSeconds).
    [property: Id(15)] double CheckpointShare = 0.05);

/// <summary>One step's numbers: loss terms with the local trainer's keys, wall time, bytes moved, and time per phase of the protocol.</summary>
[GenerateSerializer, Immutable]
public sealed record StepMetrics(
    [property: Id(0)] long Step,
    [property: Id(1)] int Epoch,
    [property: Id(2)] Dictionary<string, double> Terms,
    [property: Id(3)] double StepMilliseconds,
    [property: Id(4)] long BytesMoved,
    [property: Id(5)] Dictionary<string, double> PhaseMilliseconds,
    [property: Id(6)] int[] Members);

[GenerateSerializer, Immutable]
public sealed record TestMetrics([property: Id(0)] long Step, [property: Id(1)] double TestLoss);

public enum RunState { Created, Running, Finished, Failed, Stopped }

[GenerateSerializer, Immutable]
public sealed record RunStatus(
    [property: Id(0)] RunState State,
    [property: Id(1)] long Step,
    [property: Id(2)] long TotalSteps,
    [property: Id(3)] double? LastLoss,
    [property: Id(4)] string? Error,
    [property: Id(5)] Dictionary<int, string> MemberSilos,
    [property: Id(6)] int[] Members,
    [property: Id(7)] RunEvent[] Events,
    [property: Id(8)] string CoordinatorSilo,
    // Bumped whenever the run continues from a checkpoint (resume, or the coordinator's silo died); steps from
    // StartStep on are run again, so a client drops what it had recorded from there.
    [property: Id(9)] long Incarnation = 0,
    [property: Id(10)] long StartStep = 0,
    [property: Id(11)] long? CheckpointStep = null,
    [property: Id(12)] int[]? Dropped = null,
    // Silos of members (or dropped members) that the cluster's membership does not list as active right now.
    [property: Id(13)] string[]? UnreachableSilos = null,
    // The coordinator's current step loop: a new one after every resume, even two from the same checkpoint; empty
    // while an activation restores the run from its checkpoint.
    [property: Id(14)] Guid LoopId = default);

/// <summary>
/// An event of a run: started (a first member), attached, detached, dropped (a failed or timed-out call), rejoined,
/// failover (the coordinator came back on another silo), resumed, skipped or diverged (a non-finite step), stopped.
/// Modality −1: the run as a whole.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record RunEvent(
    [property: Id(0)] long Step,
    [property: Id(1)] string Kind,
    [property: Id(2)] int Modality,
    [property: Id(3)] string Message,
    [property: Id(4)] DateTime Utc);
