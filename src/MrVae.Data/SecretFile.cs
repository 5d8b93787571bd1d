namespace MrVae.Data;

/// <summary>Secrets kept in files (a mounted Kubernetes Secret, a file made by `echo`), read the same way everywhere.</summary>
public static class SecretFile
{
    /// <summary>
    /// The secret in <paramref name="file"/> without the line break an editor or `echo` leaves at its end. A missing
    /// or blank file is the user's mistake, named with the <paramref name="setting"/> that points at it.
    /// </summary>
    public static string Read(string file, string setting, string what)
    {
        if (!File.Exists(file)) throw new UserInputException($"{setting} names {file}, which does not exist: point it at the file holding {what}");
        string text = File.ReadAllText(file).TrimEnd('\r', '\n');
        if (string.IsNullOrWhiteSpace(text)) throw new UserInputException($"{setting}: {file} is empty; put {what} in it");
        return text;
    }
}
