namespace MrVae.Data;

/// <summary>
/// A mistake in what the user gave (a data directory, an option, a modality, a checkpoint, a run id): raised where
/// the input is judged, and reported in one line that names the cause and the fix. Every other exception is a bug.
/// Defined here, in the project every layer references; it crosses grain calls by name (namespace prefix "MrVae",
/// see ExceptionSerializationOptions in the silo and client).
/// </summary>
public class UserInputException : Exception
{
    public UserInputException() { }
    public UserInputException(string message) : base(message) { }
    public UserInputException(string message, Exception? inner) : base(message, inner) { }
}
