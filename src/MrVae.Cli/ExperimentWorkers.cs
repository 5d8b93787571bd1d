using System.Diagnostics;
using System.Reflection;
using System.Text;

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
                while (running.Count < parallel && pending.Count > 0 && failures.Count == 0)
                {
                    string dataset = pending.Dequeue();
                    var worker = Worker.Start(dataset, workerArguments(dataset), threads, Path.Combine(logs, Path.GetFileNameWithoutExtension(dataset) + ".log"));
                    log($"[{worker.Name}] started (pid {worker.Process.Id}, {threads} libtorch thread{(threads == 1 ? "" : "s")}); log: {worker.LogFile}");
                    running.Add(worker);
                }
                if (failures.Count > 0) pending.Clear();
                Thread.Sleep(500);
                foreach (var w in running.ToList())
                {
                    foreach (var line in w.NewLines()) log($"[{w.Name}] {line}");
                    if (!w.Process.HasExited) continue;
                    w.Process.WaitForExit();
                    foreach (var line in w.NewLines(final: true)) log($"[{w.Name}] {line}");
                    running.Remove(w);
                    if (w.Process.ExitCode != 0)
                    {
                        failures.Add($"{w.Name} (exit code {w.Process.ExitCode}; log: {w.LogFile})");
                        Stop();
                    }
                }
            }
        }
        finally { Console.CancelKeyPress -= cancel; Stop(); }
        return failures;
    }

    sealed class Worker
    {
        public required string Name { get; init; }
        public required Process Process { get; init; }
        public required string LogFile { get; init; }
        long offset;
        readonly StringBuilder partial = new();

        public static Worker Start(string dataset, string[] arguments, int threads, string logFile)
        {
            // `dotnet mrvae.dll ...` or the apphost `mrvae ...`: start this same program again.
            string self = Environment.ProcessPath!;
            var psi = new ProcessStartInfo(self) { UseShellExecute = false };
            if (Path.GetFileNameWithoutExtension(self) == "dotnet") psi.ArgumentList.Add(Assembly.GetEntryAssembly()!.Location);
            foreach (var a in arguments) psi.ArgumentList.Add(a);
            psi.RedirectStandardOutput = true; psi.RedirectStandardError = true;
            psi.Environment["OMP_NUM_THREADS"] = threads.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var writer = new StreamWriter(logFile, append: false) { AutoFlush = true };
            var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
            var gate = new object();
            process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (gate) writer.WriteLine(e.Data); };
            process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (gate) writer.WriteLine(e.Data); };
            process.Start();
            process.BeginOutputReadLine(); process.BeginErrorReadLine();
            process.Exited += (_, _) => { process.WaitForExit(); lock (gate) writer.Dispose(); };
            return new Worker { Name = Path.GetFileNameWithoutExtension(dataset), Process = process, LogFile = logFile };
        }

        /// <summary>The complete lines the worker wrote since the last call (and the unfinished one when final).</summary>
        public IEnumerable<string> NewLines(bool final = false)
        {
            using var stream = new FileStream(LogFile, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            stream.Seek(offset, SeekOrigin.Begin);
            using var reader = new StreamReader(stream, Encoding.UTF8);
            partial.Append(reader.ReadToEnd());
            offset = stream.Length;
            var text = partial.ToString();
            int end = final ? text.Length : text.LastIndexOf('\n') + 1;
            partial.Clear().Append(text[end..]);
            return text[..end].Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd('\r')).ToList();
        }

        public void Kill() { try { if (!Process.HasExited) Process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { } }
    }
}
