using System.CommandLine;
using MrVae.Cli;
using MrVae.Cli.Commands;

var root = new RootCommand("mrvae: train and evaluate the multimodal relational VAE (single process or on Orleans silos)");
root.Subcommands.Add(DataCommands.Create());
root.Subcommands.Add(TrainCommand.Create());
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(EvalCommand.Create());
root.Subcommands.Add(ExperimentCommand.Create());
root.Subcommands.Add(CertsCommand.Create());
foreach (var command in RunCommands.CreateAll()) root.Subcommands.Add(command);
Examples.Install(root);
return CliErrors.Invoke(root, args);
