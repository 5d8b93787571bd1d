namespace MrVae.Grains;

/// <summary>
/// One modality of one run (key: "RUN/modality-J"): its encoder, decoder, optimiser and data shard. Raw data never
/// leaves it; only sample ids come in and latents and gradients go out.
/// </summary>
public interface IModalityGrain : IGrainWithStringKey
{
    Task<ShardInfo> Configure(ModalitySetup setup);
    /// <summary>
    /// Configures like <see cref="Configure"/>, then loads the grain's checkpoint snapshot at <paramref name="step"/>
    /// (null: its newest; with none stored it stays freshly initialised). Resume asks for the run's committed step,
    /// a rejoining member for its newest.
    /// </summary>
    Task<RestoredShard> Restore(ModalitySetup setup, long? step);
    /// <summary>Writes a snapshot at <paramref name="step"/> to grain storage, keeping the one at <paramref name="keepStep"/> (the run's committed checkpoint).</summary>
    Task SaveCheckpoint(long step, long keepStep);
    /// <summary>
    /// Encodes the samples <paramref name="ids"/> of a split (training: sample keys, of which it holds every one, or it fails
    /// with <c>MissingSampleException</c>; test: positions); with <paramref name="keepGraph"/> the autograd graph is kept
    /// for the step's backward. <paramref name="previous"/>: the last step's encoder gradients, applied first (encoder
    /// backward and optimiser step, as <see cref="ApplyEncoderGradients"/>); ignored if that step was applied already
    /// (a step run again after another member failed).
    /// </summary>
    Task<EncodeResult> Encode(long step, long[] ids, string split, bool keepGraph, EncoderGradients? previous = null);
    /// <summary>
    /// −log p(x | z̃) for the samples of the step's batch this grain encoded (z̃: V × B_j × D); with <paramref name="backward"/>,
    /// decoder gradients accumulate and ∂L/∂z̃ is returned. <paramref name="batch"/>: the whole batch's size B, which the
    /// sum over the grain's samples is divided by (0: B_j, a complete batch).
    /// </summary>
    Task<DecodeResult> Decode(long step, TensorPayload decoderInput, double[] viewWeights, bool backward, int batch = 0);
    /// <summary>Backward through the encoder with ∂L/∂μ and ∂L/∂log σ², then the optimiser step: for the gradients no next
    /// encode carries (before a checkpoint, an evaluation, a membership change or the run's end).</summary>
    Task ApplyEncoderGradients(long step, TensorPayload dMu, TensorPayload dLogVar);
    /// <summary>All parameters in registration order (for equality checks and checkpoints).</summary>
    Task<TensorPayload[]> Parameters();
    /// <summary>The role of the silo this grain is active on (MrVae:Silo:Role).</summary>
    Task<string> SiloRole();
    /// <summary>Moves the grain (not while it is a member of a step) to the silo placement picks for this call's request context.</summary>
    Task Migrate();
}

/// <summary>One training run (key: run id): the coordinator's objective, the step loop, membership and metrics.</summary>
public interface ICoordinatorGrain : IGrainWithStringKey
{
    /// <summary>Configures the run and its modality grains and starts the step loop in the background.</summary>
    Task<RunStatus> Start(RunSetup setup);
    Task<RunStatus> Status();
    /// <summary>Step metrics from <paramref name="fromStep"/> on (the client writes metrics.jsonl from them).</summary>
    Task<StepMetrics[]> Metrics(long fromStep);
    Task<TestMetrics[]> TestMetrics();
    Task<TensorPayload[]> Parameters();
    /// <summary>
    /// Adds a modality from the next step on (its grain loads its shard, from <paramref name="dataDirectory"/> if
    /// given), on a silo with role <paramref name="siloRole"/> if given (the grain moves there if it is elsewhere).
    /// </summary>
    Task<RunStatus> Attach(int modality, string? dataDirectory, string? siloRole = null);
    /// <summary>Removes a modality from the next step on; the run goes on with the others.</summary>
    Task<RunStatus> Detach(int modality);
    /// <summary>Ends the run after the step in flight, with a final checkpoint.</summary>
    Task<RunStatus> Stop();
    /// <summary>
    /// Continues a run from its last committed checkpoint in grain storage (after the whole cluster was stopped, or
    /// a stop on request); a no-op for a run that is running. A coordinator that finds its run interrupted when it
    /// is activated (its silo died) resumes by itself.
    /// </summary>
    Task<RunStatus> Resume();
}
