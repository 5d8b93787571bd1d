using Microsoft.Extensions.Options;
using MrVae.Data;
using MrVae.Model;
using MrVae.Model.Networks;
using MrVae.Model.Training;
using MrVae.Model.Runtime;
using Orleans.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Grains;

/// <summary>
/// One modality of one run. Holds the encoder, decoder, their Adam and the modality's data shard (loaded from the
/// silo's own disk), and the autograd graph of the step in flight. Tensor work stays synchronous between awaits:
/// TorchSharp's dispose scopes belong to the thread that opened them. Checkpoints go to two snapshot slots in grain
/// storage, written alternately so the run's committed one is never overwritten.
/// </summary>
[ModalityPlacement]
public sealed class ModalityGrain(
    IOptions<SiloSettings> settings, ILocalSiloDetails silo, ComputeGate gate,
    [PersistentState("snapshot-a", Checkpointing.StorageName)] IPersistentState<ModalitySnapshot> slotA,
    [PersistentState("snapshot-b", Checkpointing.StorageName)] IPersistentState<ModalitySnapshot> slotB) : Grain, IModalityGrain
{
    ModalityNetwork? network;
    TorchSharp.Modules.Adam? optimizer;
    ModalityShard? train, test;
    ModalitySetup? setup;
    readonly Device device = new(settings.Value.Device);

    // The step in flight: its batch and, in training, the encoder outputs with their graph.
    long step = -1;
    Tensor? batch, mu, logVar;
    // The last step whose encoder gradients this grain applied (its optimiser has stepped for it).
    long appliedStep = -1;

    public async Task<RestoredShard> Restore(ModalitySetup s, long? step)
    {
        var shard = await Configure(s);
        var stored = new[] { slotA.State, slotB.State }.Where(x => x.Step >= 0).ToArray();
        foreach (var x in stored)
            if (x.FormatVersion != Checkpointing.FormatVersion)
                throw new UserInputException($"modality grain {this.GetPrimaryKeyString()}: its checkpoint has format version {x.FormatVersion}, this build reads {Checkpointing.FormatVersion}; resume with the mrvae version that wrote it, or start a new run");
        var chosen = step is { } wanted
            ? stored.FirstOrDefault(x => x.Step == wanted) ?? throw new UserInputException(
                $"modality grain {this.GetPrimaryKeyString()} has no checkpoint at step {wanted} (it has {(stored.Length == 0 ? "none" : string.Join(", ", stored.Select(x => x.Step)))}); its storage was lost or belongs to another run")
            : stored.MaxBy(x => x.Step);
        if (chosen is null) return new RestoredShard(shard, null);
        if (chosen.ModelConfigJson != s.ModelConfigJson)
            throw new UserInputException($"modality grain {this.GetPrimaryKeyString()}: its checkpoint at step {chosen.Step} was trained with another model configuration");
        Checkpointing.Verify(chosen.Checksum, $"modality grain {this.GetPrimaryKeyString()}'s checkpoint at step {chosen.Step}", chosen.Network, chosen.Optimizer);
        await Compute(() =>
        {
            Checkpointing.Load(network!, chosen.Network);
            Checkpointing.Load(optimizer!, chosen.Optimizer);
            return true;
        });
        return new RestoredShard(shard, chosen.Step);
    }

    public async Task SaveCheckpoint(long step, long keepStep)
    {
        var net = Network();
        var (networkBytes, optimizerBytes) = await Compute(() => (Checkpointing.Save(net), Checkpointing.Save(optimizer!)));
        // Overwrite the slot that does not hold the committed checkpoint (of two such, the older).
        var slot = slotA.State.Step == keepStep ? slotB : slotB.State.Step == keepStep ? slotA : slotA.State.Step <= slotB.State.Step ? slotA : slotB;
        slot.State = new ModalitySnapshot
        {
            FormatVersion = Checkpointing.FormatVersion, Step = step, ModelConfigJson = setup!.ModelConfigJson,
            Network = networkBytes, Optimizer = optimizerBytes, SavedUtc = DateTime.UtcNow,
            Checksum = Checkpointing.Checksum(networkBytes, optimizerBytes),
        };
        // Serialising megabytes: no libtorch call may be in flight when that allocation collects.
        await NativeCallGuard.ExclusiveAsync(() => slot.WriteStateAsync());
    }

    public async Task<ShardInfo> Configure(ModalitySetup s)
    {
        var (_, keyModality) = ModalityKey.Parse(this.GetPrimaryKeyString());
        if (keyModality != s.Modality) throw new ArgumentException($"grain {this.GetPrimaryKeyString()} cannot serve modality {s.Modality}");
        var config = ModelConfig.FromJson(s.ModelConfigJson);
        if (s.Modality < 0 || s.Modality >= config.Modalities)
            throw new UserInputException($"unknown modality {s.Modality}: the model has modalities 0..{config.Modalities - 1}");
        // Shards are large managed arrays: load them with no libtorch call in flight.
        (train, test) = await NativeCallGuard.ExclusiveAsync(() => Task.FromResult((LoadShard(s.DataDirectory, "train", s.Modality), LoadShard(s.DataDirectory, "test", s.Modality))));
        // libtorch work, so on the compute lane (NativeCallGuard), not on the grain's thread.
        await Compute(() =>
        {
            ResetStep();
            network?.Dispose(); optimizer?.Dispose();
            appliedStep = -1;
            network = Seeds.Construct(s.Seed, Seeds.ModalityParty(s.Modality), () => new ModalityNetwork(config, s.Modality));
            network.to(device);
            optimizer = optim.Adam(network.parameters(), lr: s.LearningRate);
            return true;
        });
        setup = s;
        return new ShardInfo(train!.Count, test!.Count, silo.SiloAddress.ToString(), settings.Value.Device, train.Keys);
    }

    public async Task<EncodeResult> Encode(long step, long[] ids, string split, bool keepGraph, EncoderGradients? previous = null)
    {
        using var span = StartSpan("modality encode", step);
        if (previous is not null)
        {
            // The last step's update first, as its own span (tagged with that step) inside this encode.
            using var backward = StartSpan("modality encoder backward", previous.Step);
            backward?.SetTag(TrainingTelemetry.Bytes, previous.DMu.ByteCount + previous.DLogVar.ByteCount);
            await Compute(() => ApplyPreviousNow(previous));
        }
        var result = await Compute(() => EncodeNow(step, ids, split, keepGraph));
        span?.SetTag(TrainingTelemetry.Bytes, ids.LongLength * sizeof(long) + result.Mu.ByteCount + result.LogVar.ByteCount);   // the gradients: their own span
        return result;
    }

    bool ApplyPreviousNow(EncoderGradients previous)
    {
        if (previous.Step <= appliedStep) return false;   // applied at the first try of a step that ran again
        return ApplyEncoderGradientsNow(previous.Step, previous.DMu, previous.DLogVar);
    }

    public async Task<DecodeResult> Decode(long step, TensorPayload decoderInput, double[] viewWeights, bool backward, int batch = 0)
    {
        using var span = StartSpan("modality decode", step);
        var result = await Compute(() => DecodeNow(step, decoderInput, viewWeights, backward, batch));
        span?.SetTag(TrainingTelemetry.Bytes, decoderInput.ByteCount + (result.Gradient?.ByteCount ?? 0) + sizeof(float));
        return result;
    }

    public async Task ApplyEncoderGradients(long step, TensorPayload dMu, TensorPayload dLogVar)
    {
        using var span = StartSpan("modality encoder backward", step);
        span?.SetTag(TrainingTelemetry.Bytes, dMu.ByteCount + dLogVar.ByteCount);
        // Idempotent like the update carried by an encode: after a step that failed elsewhere, this grain may have
        // applied it already (and hold the next step), and the coordinator's separate call must then do nothing.
        await Compute(() => ApplyPreviousNow(new EncoderGradients(step, dMu, dLogVar)));
    }

    System.Diagnostics.Activity? StartSpan(string name, long step)
    {
        var span = TrainingTelemetry.Source.StartActivity(name);
        span?.SetTag(TrainingTelemetry.Run, setup?.RunId);
        span?.SetTag(TrainingTelemetry.Modality, setup?.Modality);
        span?.SetTag(TrainingTelemetry.Step, step);
        span?.SetTag(TrainingTelemetry.Silo, silo.SiloAddress.ToString());
        return span;
    }

    EncodeResult EncodeNow(long step, long[] ids, string split, bool keepGraph)
    {
        var net = Network();
        ResetStep();
        using var scope = NewDisposeScope();
        var shard = split == "train" ? train! : split == "test" ? test! : throw new ArgumentException($"unknown split '{split}'");
        var x = shard.Batch(ids, device: device);
        // A training step starts from zero gradients: after a step that was run again (another member failed) or
        // skipped (non-finite), the decoder's gradients of the abandoned try must not add to this one's.
        if (keepGraph) optimizer!.zero_grad();
        Tensor m, lv;
        if (keepGraph) (m, lv) = net.Encoder.forward(x);
        else using (no_grad()) (m, lv) = net.Encoder.forward(x);
        var result = new EncodeResult(TensorWire.ToPayload(m), TensorWire.ToPayload(lv));
        this.step = step;
        batch = x.MoveToOuterDisposeScope();
        if (keepGraph) { mu = m.MoveToOuterDisposeScope(); logVar = lv.MoveToOuterDisposeScope(); }
        return result;
    }

    DecodeResult DecodeNow(long step, TensorPayload decoderInput, double[] viewWeights, bool backward, int batchSize)
    {
        long? whole = batchSize > 0 ? batchSize : null;
        var net = Network();
        CheckStep(step);
        using var scope = NewDisposeScope();
        var z = TensorWire.FromPayload(decoderInput, device);
        if (backward)
        {
            z.requires_grad_();
            var nll = net.NegativeLogLikelihood(batch!, z, viewWeights, whole);
            nll.backward();
            return new DecodeResult(nll.item<float>(), TensorWire.ToPayload(z.grad!));
        }
        using (no_grad())
        {
            var nll = net.NegativeLogLikelihood(batch!, z, viewWeights, whole);
            return new DecodeResult(nll.item<float>(), null);
        }
    }

    bool ApplyEncoderGradientsNow(long step, TensorPayload dMu, TensorPayload dLogVar)
    {
        Network();
        CheckStep(step);
        if (mu is null || logVar is null) throw new InvalidOperationException($"step {step} was encoded without a graph; nothing to backpropagate");
        using (var scope = NewDisposeScope())
        {
            autograd.backward([mu, logVar], [TensorWire.FromPayload(dMu, device), TensorWire.FromPayload(dLogVar, device)]);
            optimizer!.step();
            optimizer.zero_grad();
        }
        ResetStep();
        appliedStep = step;
        return true;
    }

    public Task<TensorPayload[]> Parameters()
    {
        var net = Network();
        return Compute(() => net.parameters().Select(p => TensorWire.ToPayload(p)).ToArray());
    }

    public Task<string> SiloRole() => Task.FromResult(settings.Value.EffectiveRole);

    public Task Migrate()
    {
        // Migration hands this call's request context (the wanted role) to the placement director, which picks the
        // new silo. Plain deactivation would not: the next call from this silo re-creates the grain where it was.
        // It deactivates this activation first (OnDeactivateAsync: waits for compute, frees the networks); the
        // snapshot stays in storage for Restore on the new silo.
        this.MigrateOnIdle();
        return Task.CompletedTask;
    }

    ModalityNetwork Network() => network ?? throw new InvalidOperationException($"modality grain {this.GetPrimaryKeyString()} is not configured: attach it to a run first");

    void CheckStep(long s)
    {
        if (s != step || batch is null)
            throw new InvalidOperationException($"modality grain {this.GetPrimaryKeyString()} holds step {step}, was asked about step {s}");
    }

    void ResetStep()
    {
        batch?.Dispose(); mu?.Dispose(); logVar?.Dispose();
        batch = mu = logVar = null;
        step = -1;
    }

    static ModalityShard LoadShard(string dir, string split, int modality) => ModalityShard.Load(dir, split, modality);

    // The grain's latest compute-lane work: deactivation (a silo shutting down mid-call) waits for it before freeing
    // the networks it may be using.
    Task lastCompute = Task.CompletedTask;

    Task<T> Compute<T>(Func<T> work)
    {
        var task = gate.RunModality(work);
        lastCompute = task;
        return task;
    }

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        try { await lastCompute.WaitAsync(cancellationToken); }
        catch (Exception) { /* failed or timed out: checked below */ }
        if (!lastCompute.IsCompleted) return;   // still computing: leave the networks to the finalizer, never free memory in use
        ResetStep();
        optimizer?.Dispose(); network?.Dispose();
    }
}
