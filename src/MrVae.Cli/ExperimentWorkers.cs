using System.Collections.Concurrent;
using System.Diagnostics;
using System.Reflection;

namespace MrVae.Cli;

/// <summary>
/// `experiment paper --parallel N`: one worker process per dataset (`experiment paper --part DATASET`), N at a time,
/// each with cores / N libtorch threads. Processes, not threads: each has its own garbage collector and libtorch
/// generator, so a worker's numbers are those of a sequential run with the same thread count. The workers' log
/// lines are relayed with their dataset in front; their own logs stay in OUT/logs/.
/// </summary>
public static class ExperimentWorkers
{
    /// <summary>Runs a worker per dataset; returns the failures (dataset, exit code, log), none when all succeeded.</summary>
    public static List<string> Run(IReadOnlyList<string> datasets, int parallel, string outputDirectory, Func<string, string[]> workerArguments, Action<string> log)
    {
        // libtorch sizes its thread pool from OMP_NUM_THREADS: the user's value is kept, else the cores are shared out.
        int threads = int.TryParse(Environment.GetEnvironmentVariable("OMP_NUM_THREADS"), out int set) && set > 0
            ? set : Math.Max(1, Environment.ProcessorCount / parallel);
        string logs = Path.Combine(outputDirectory, "logs");
        Directory.CreateDirectory(logs);
        var pending = new Queue<string>(datasets);
        var running = new List<Worker>();
        var failures = new List<string>();
        void Stop() { foreach (var w in running) w.Kill(); }
        ConsoleCancelEventHandler cancel = (_, _) => Stop();
        Console.CancelKeyPress += cancel;
        try
        {
            while (pending.Count > 0 || running.Count > 0)
            {
                while (running.Count < parallel && pending.Count > 0)
                {
                    string dataset = pending.Dequeue();
                    var worker = Worker.Start(dataset, workerArguments(dataset), threads, Path.Combine(logs, Path.GetFileNameWithoutExtension(dataset) + ".log"));
                    log($"[{worker.Name}] started (pid {worker.Process.Id}, {threads} libtorch thread{(threads == 1 ? "" : "s")}); log: {worker.LogFile}");
                    running.Add(worker);
                }
                Thread.Sleep(500);
                foreach (var w in running.ToList())
                {
                    bool exited = w.Process.HasExited;
                    if (exited) w.Process.WaitForExit();   // and for the last lines of its output
                    foreach (var line in w.NewLines()) log($"[{w.Name}] {line}");
                    if (!exited) continue;
                    w.Dispose();
                    running.Remove(w);
                    if (w.Process.ExitCode != 0)
                    {
                        failures.Add($"{w.Name} (exit code {w.Process.ExitCode}; log: {w.LogFile})");
                        pending.Clear();
                        Stop();
                    }
                }
            }
        }
        finally
        {
            Console.CancelKeyPress -= cancel;
            Stop();
            foreach (var w in running) w.Dispose();
        }
        return failures;
    }

    sealed class Worker : IDisposable
    {
        public required string Name { get; init; }
        public required Process Process { get; init; }
        public required string LogFile { get; init; }
        readonly ConcurrentQueue<string> unread = new();
        StreamWriter? writer;

        public static Worker Start(string dataset, string[] arguments, int threads, string logFile)
        {
            // `dotnet mrvae.dll ...` or the apphost `mrvae ...`: start this same program again.
            string self = Environment.ProcessPath!;
            var psi = new ProcessStartInfo(self) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
            if (Path.GetFileNameWithoutExtension(self) == "dotnet") psi.ArgumentList.Add(Assembly.GetEntryAssembly()!.Location);
            foreach (var a in arguments) psi.ArgumentList.Add(a);
            psi.Environment["OMP_NUM_THREADS"] = threads.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var worker = new Worker
            {
                Name = Path.GetFileNameWithoutExtension(dataset), Process = new Process { StartInfo = psi }, LogFile = logFile,
                writer = new StreamWriter(logFile, append: false) { AutoFlush = true },
            };
            // Each line goes to the worker's log and waits for the relay.
            DataReceivedEventHandler keep = (_, e) => { if (e.Data is not null) worker.Keep(e.Data); };
            worker.Process.OutputDataReceived += keep;
            worker.Process.ErrorDataReceived += keep;
            worker.Process.Start();
            worker.Process.BeginOutputReadLine(); worker.Process.BeginErrorReadLine();
            return worker;
        }

        void Keep(string line)
        {
            lock (unread) writer?.WriteLine(line);
            unread.Enqueue(line);
        }

        /// <summary>The lines the worker wrote since the last call.</summary>
        public List<string> NewLines()
        {
            var lines = new List<string>();
            while (unread.TryDequeue(out var line)) lines.Add(line);
            return lines;
        }

        public void Kill() { try { if (!Process.HasExited) Process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { } }

        public void Dispose() { lock (unread) { writer?.Dispose(); writer = null; } }
    }
}
