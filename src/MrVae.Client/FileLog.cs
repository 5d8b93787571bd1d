using Microsoft.Extensions.Logging;

namespace MrVae.Client;

/// <summary>
/// Warnings and errors of an embedded silo, appended to one file (RUNDIR/silo.log): the console belongs to the
/// progress bar, but a run that fails or drops a member must leave its full story, stack traces included.
/// </summary>
public sealed class FileLogProvider(string path, LogLevel minimum = LogLevel.Warning) : ILoggerProvider
{
    readonly object gate = new();
    LogLevel Minimum { get; } = minimum;

    public ILogger CreateLogger(string categoryName) => new FileLogger(this, categoryName);

    public void Dispose() { }

    void Write(string line)
    {
        lock (gate) File.AppendAllText(path, line + Environment.NewLine);
    }

    sealed class FileLogger(FileLogProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => logLevel >= owner.Minimum;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            owner.Write($"{DateTime.UtcNow:O} {logLevel} {category}: {formatter(state, exception)}{(exception is null ? "" : Environment.NewLine + exception)}");
        }
    }
}
