using Microsoft.Extensions.Logging;

namespace MrVae.Grains;

/// <summary>The coordinator's log messages, source-generated.</summary>
public sealed partial class CoordinatorGrain
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Warning, Message = "run {Run} was interrupted; resuming from its checkpoint at step {Step}")]
    partial void LogInterrupted(string run, long step);

    [LoggerMessage(EventId = 2, Level = LogLevel.Error, Message = "run {Run} failed at step {Step}")]
    partial void LogRunFailed(Exception exception, string run, long step);

    [LoggerMessage(EventId = 3, Level = LogLevel.Error, Message = "run {Run}: could not record the failure")]
    partial void LogFailureNotRecorded(Exception exception, string run);

    [LoggerMessage(EventId = 4, Level = LogLevel.Warning, Message = "run {Run}: could not record the pending membership change in its checkpoint")]
    partial void LogRequestNotRecorded(Exception exception, string run);

    [LoggerMessage(EventId = 5, Level = LogLevel.Warning, Message = "run {Run}: modality {Modality} could not save on detach: {Reason}")]
    partial void LogDetachSaveFailed(string run, int modality, string reason);

    [LoggerMessage(EventId = 6, Level = LogLevel.Warning, Message = "run {Run} step {Step}: modality {Modality} {Kind}: {Message}")]
    partial void LogEvent(string run, long step, int modality, string kind, string message);
}
