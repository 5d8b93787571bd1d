using System.CommandLine;
using MrVae.Data;
using MrVae.Security;

namespace MrVae.Cli.Commands;

/// <summary>`mrvae certs init` (a cluster CA) and `mrvae certs issue` (a silo's or an operator's certificate from it).</summary>
public static class CertsCommand
{
    public static Command Create()
    {
        var certs = new Command("certs", "Make the certificates of a secured cluster: a CA, then one certificate per silo and operator (docs/security.md)");
        certs.Subcommands.Add(Init());
        certs.Subcommands.Add(Issue());
        return certs;
    }

    static Command Init()
    {
        var output = new Option<string>("--out") { Description = "directory for ca.pem and ca-key.pem (the key: mode 0600; keep it off the nodes)", Required = true };
        var name = new Option<string>("--name") { Description = "the CA's common name", DefaultValueFactory = _ => "mrvae cluster CA" };
        var days = new Option<int>("--days") { Description = "validity in days", DefaultValueFactory = _ => 3650 };
        var cmd = new Command("init", "Make a cluster CA: every silo and operator certificate is issued from it, and only its certificates are let in") { output, name, days };
        cmd.SetAction(p =>
        {
            string dir = p.GetValue(output)!;
            using var ca = ClusterCertificates.InitAuthority(dir, p.GetValue(name)!, Days(p.GetValue(days)));
            Console.WriteLine($"CA '{p.GetValue(name)}' in {dir} (valid until {ca.NotAfter:yyyy-MM-dd}); next: mrvae certs issue --ca {dir} --name NAME --role silo|operator --out DIR");
            return 0;
        });
        return cmd;
    }

    static Command Issue()
    {
        var ca = new Option<string>("--ca") { Description = "the CA directory of `mrvae certs init`", Required = true };
        var name = new Option<string>("--name") { Description = "the node's name (its certificate's common name; logs name peers by it)", Required = true };
        var role = new Option<NodeRole>("--role") { Description = "silo (joins the cluster, serves the modalities named) or operator (starts, stops, attaches, detaches runs; asks their status)", Required = true };
        var modalities = new Option<string?>("--modalities") { Description = "silo only: the modalities whose grains it may host, e.g. 0,1 (default: none; it can still host coordinators)" };
        var output = new Option<string>("--out") { Description = "directory for cert.pem, key.pem (mode 0600) and the CA's ca.pem: the silo's MrVae:Tls:* files, or the client's --tls DIR", Required = true };
        var days = new Option<int>("--days") { Description = "validity in days (at most the CA's)", DefaultValueFactory = _ => 365 };
        var cmd = new Command("issue", "Issue a silo's or an operator's certificate from the cluster CA; it names the role and, for a silo, its modalities") { ca, name, role, modalities, output, days };
        cmd.SetAction(p =>
        {
            int[] served = [];
            if (p.GetValue(modalities) is { } text)
            {
                if (p.GetValue(role) != NodeRole.Silo) throw new UserInputException("--modalities: only a silo certificate names modalities");
                served = ClusterCertificates.ParseModalities(text) ?? throw new UserInputException($"--modalities '{text}': give distinct modality indices separated by commas, e.g. 0,1");
            }
            var identity = new NodeIdentity(p.GetValue(name)!, p.GetValue(role), served);
            using var issued = ClusterCertificates.IssueTo(p.GetValue(ca)!, identity, p.GetValue(output)!, Days(p.GetValue(days)));
            Console.WriteLine($"{identity} in {p.GetValue(output)} (valid until {issued.NotAfter:yyyy-MM-dd})");
            return 0;
        });
        return cmd;
    }

    static TimeSpan Days(int days) => days >= 1 ? TimeSpan.FromDays(days) : throw new UserInputException($"--days {days}: give 1 or more");
}
