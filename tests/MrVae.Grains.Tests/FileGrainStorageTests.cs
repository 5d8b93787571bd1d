using Microsoft.Extensions.DependencyInjection;
using MrVae.Storage;
using Orleans.Serialization;
using Orleans.Storage;

namespace MrVae.Grains.Tests;

/// <summary>The file grain storage: round trip, optimistic concurrency, a write that dies half-way, damaged files.</summary>
public sealed class FileGrainStorageTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mrvae-files-" + Guid.NewGuid().ToString("N"));
    readonly ServiceProvider services = new ServiceCollection().AddSerializer().BuildServiceProvider();
    static readonly GrainId Grain = GrainId.Create("modality", "run-1/modality-3");

    public void Dispose()
    {
        services.Dispose();
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
    }

    FileGrainStorage Storage() => new("test", root, ActivatorUtilities.CreateInstance<OrleansGrainStorageSerializer>(services));

    static ModalitySnapshot Snapshot(long step, int size) => new()
    {
        FormatVersion = Checkpointing.FormatVersion, Step = step, ModelConfigJson = "{}",
        Network = Enumerable.Range(0, size).Select(i => (byte)(i * 7 + step)).ToArray(), Optimizer = [1, 2, 3],
    };

    static async Task<GrainState<ModalitySnapshot>> Read(FileGrainStorage storage)
    {
        var state = new GrainState<ModalitySnapshot>();
        await storage.ReadStateAsync("snapshot-a", Grain, state);
        return state;
    }

    [Fact]
    public async Task WrittenStateReadsBackWithItsEtag()
    {
        var storage = Storage();
        var empty = await Read(storage);
        Assert.False(empty.RecordExists);
        Assert.Equal(-1, empty.State!.Step);

        var state = new GrainState<ModalitySnapshot> { State = Snapshot(4, 5000) };
        await storage.WriteStateAsync("snapshot-a", Grain, state);
        var back = await Read(Storage());   // a new instance: nothing cached
        Assert.True(back.RecordExists);
        Assert.Equal(state.ETag, back.ETag);
        Assert.Equal(4, back.State!.Step);
        Assert.Equal(state.State.Network, back.State!.Network);

        // A second state name of the same grain is a different record.
        var other = new GrainState<ModalitySnapshot>();
        await storage.ReadStateAsync("snapshot-b", Grain, other);
        Assert.False(other.RecordExists);
    }

    [Fact]
    public async Task AWriterWithAStaleEtagIsRefused()
    {
        var storage = Storage();
        var first = new GrainState<ModalitySnapshot> { State = Snapshot(1, 10) };
        await storage.WriteStateAsync("snapshot-a", Grain, first);
        var stale = await Read(storage);
        first.State = Snapshot(2, 10);
        await storage.WriteStateAsync("snapshot-a", Grain, first);
        stale.State = Snapshot(3, 10);
        await Assert.ThrowsAsync<InconsistentStateException>(() => storage.WriteStateAsync("snapshot-a", Grain, stale));
        Assert.Equal(2, (await Read(storage)).State!.Step);
    }

    [Fact]
    public async Task AWriteThatDiesHalfWayLeavesThePreviousStateLoadable()
    {
        var storage = Storage();
        var state = new GrainState<ModalitySnapshot> { State = Snapshot(6, 20_000) };
        await storage.WriteStateAsync("snapshot-a", Grain, state);
        string file = storage.PathFor("snapshot-a", Grain);
        byte[] before = File.ReadAllBytes(file);

        // The disk fills (or the process dies) after 10 kB of the next checkpoint.
        storage.WrapWriteStream = s => new FailingStream(s, failAfterBytes: 10_000);
        state.State = Snapshot(9, 20_000);
        await Assert.ThrowsAsync<IOException>(() => storage.WriteStateAsync("snapshot-a", Grain, state));
        Assert.Equal(before, File.ReadAllBytes(file));
        Assert.Single(Directory.GetFiles(root));   // no half-written file left behind

        // A crash (no cleanup) leaves a stray temporary file: reading ignores it.
        File.WriteAllBytes(file + ".writing-crashed", before.AsSpan(0, 1000).ToArray());
        var back = await Read(Storage());
        Assert.Equal(6, back.State!.Step);
        Assert.Equal(Snapshot(6, 20_000).Network, back.State!.Network);
    }

    [Fact]
    public async Task DamagedOrForeignFilesAreReportedByNameWithTheFix()
    {
        var storage = Storage();
        await storage.WriteStateAsync("snapshot-a", Grain, new GrainState<ModalitySnapshot> { State = Snapshot(2, 3000) });
        string file = storage.PathFor("snapshot-a", Grain);
        byte[] good = File.ReadAllBytes(file);

        var flipped = good.ToArray();
        flipped[100] ^= 0x40;
        File.WriteAllBytes(file, flipped);
        var e = await Assert.ThrowsAsync<GrainStateCorruptException>(() => Read(storage));
        Assert.Contains(file, e.Message);
        Assert.Contains("checksum", e.Message);
        Assert.Contains("delete it", e.Message);

        File.WriteAllBytes(file, good.AsSpan(0, good.Length - 50).ToArray());
        Assert.Contains("payload bytes", (await Assert.ThrowsAsync<GrainStateCorruptException>(() => Read(storage))).Message);

        File.WriteAllText(file, "{\"not\": \"ours\", \"but\": \"long enough to have a header and a hash in it\"}");
        Assert.Contains("not an mrvae grain state file", (await Assert.ThrowsAsync<GrainStateCorruptException>(() => Read(storage))).Message);

        var newer = good.ToArray();
        newer[8] = 99;   // format version
        File.WriteAllBytes(file, newer);
        Assert.Contains("format version 99", (await Assert.ThrowsAsync<GrainStateCorruptException>(() => Read(storage))).Message);
    }

    /// <summary>Passes writes through until a byte budget is spent, then fails like a full disk.</summary>
    sealed class FailingStream(Stream inner, long failAfterBytes) : Stream
    {
        long written;
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();
        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            long room = failAfterBytes - written;
            if (buffer.Length > room)
            {
                await inner.WriteAsync(buffer[..(int)Math.Max(0, room)], cancellationToken);
                written = failAfterBytes;
                throw new IOException("No space left on device (simulated)");
            }
            await inner.WriteAsync(buffer, cancellationToken);
            written += buffer.Length;
        }
    }
}
