namespace MrVae.Data.Tests;

public sealed class SecretFileTests : IDisposable
{
    readonly string dir = Path.Combine(Path.GetTempPath(), "mrvae-secret-" + Guid.NewGuid().ToString("N"));
    public SecretFileTests() => Directory.CreateDirectory(dir);
    public void Dispose() => Directory.Delete(dir, recursive: true);

    string Write(string name, string text) { string f = Path.Combine(dir, name); File.WriteAllText(f, text); return f; }

    [Fact]
    public void OnlyTheTrailingLineBreakGoes()
    {
        Assert.Equal("s3cret", SecretFile.Read(Write("echo", "s3cret\n"), "SETTING", "the secret"));
        Assert.Equal("s3cret", SecretFile.Read(Write("crlf", "s3cret\r\n"), "SETTING", "the secret"));
        Assert.Equal(" two words ", SecretFile.Read(Write("spaces", " two words \n"), "SETTING", "the secret"));
    }

    [Fact]
    public void AMissingOrBlankFileNamesTheSettingThatPointsAtIt()
    {
        string missing = Path.Combine(dir, "nope");
        var e = Assert.Throws<UserInputException>(() => SecretFile.Read(missing, "MRVAE_X_FILE", "the X secret"));
        Assert.Equal($"MRVAE_X_FILE names {missing}, which does not exist: point it at the file holding the X secret", e.Message);
        string blank = Write("blank", " \n");
        e = Assert.Throws<UserInputException>(() => SecretFile.Read(blank, "MrVae:X:File", "the X secret"));
        Assert.Equal($"MrVae:X:File: {blank} is empty; put the X secret in it", e.Message);
    }
}
