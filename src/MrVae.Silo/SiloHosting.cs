using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using MrVae.Grains;
using MrVae.Storage;
using Orleans.Configuration;
using Orleans.Hosting;
using Orleans.Runtime.MembershipService.SiloMetadata;

namespace MrVae.Silo;

/// <summary>
/// Everything a MrVae silo needs, from configuration (appsettings, environment variables such as
/// MrVae__Silo__Modalities=0,1, or command-line --MrVae:Silo:Device=cuda:0):
///   MrVae:Silo:Device        cpu | cuda:N — where this silo's grains compute
///   MrVae:Silo:Modalities    modalities whose data this silo holds (empty: any)
///   MrVae:Silo:Role          this silo's name for `mrvae attach --silo ROLE` (default: the host name)
///   MrVae:Silo:TorchThreads  libtorch intra-op threads for modality work (0: default)
///   MrVae:Silo:CoordinatorTorchThreads  the same for the coordinator's objective (default 1)
///   MrVae:Silo:ConcurrentCompute  grains of this silo computing at once (default 1: each op gets all threads)
///   MrVae:Clustering:Redis   Redis connection string for membership and the grain directory; absent: localhost
///                            clustering and Orleans' in-cluster directory (one silo, the embedded default, needs no more).
///                            Timeouts default to 30 s (RedisConnection), not StackExchange.Redis' 5 s; syncTimeout=,
///                            asyncTimeout=, connectTimeout= in the string override them
///   MrVae:Cluster:ClusterId / ServiceId, MrVae:Endpoints:SiloPort / GatewayPort / PrimarySiloPort
///   MrVae:Endpoints:AdvertisedIP  with Redis clustering: the address to advertise (listens on all); default loopback
///   MrVae:Checkpoints:Directory  grain storage for checkpoints as files here (default ./mrvae-state without Redis)
///   MrVae:Checkpoints:Redis  grain storage in this Redis (default: the clustering Redis, when there is one)
///   MrVae:Tls:Certificate / Key / Ca  mutual TLS with this silo certificate, its key and the cluster CA (TlsHosting);
///                            the silo then serves only the modalities its certificate names
///   MrVae:Redis:PasswordFile, MrVae:Redis:User  Redis authentication (or MRVAE_REDIS_PASSWORD; RedisConnection)
/// </summary>
public static partial class SiloHosting
{
    public static ISiloBuilder ConfigureMrVae(this ISiloBuilder silo, IConfiguration configuration, bool clustering = true)
    {
        // Typed options, validated now and at start: a wrong value stops the silo naming its key.
        var settings = SiloSettings.AddSiloSettings(silo.Services, configuration.GetSection(SiloSettings.Section));
        var tls = TlsHosting.AddTlsSettings(silo.Services, configuration.GetSection(TlsSettings.Section));
        string served = string.Join(",", settings.ServedModalities);
        if (tls is not null)
        {
            // With TLS the certificate bounds what the configuration may claim: serve only modalities both name.
            var identity = silo.UseMrVaeTls(tls);
            var (allowed, refused) = CertifiedModalities(settings.ServedModalities, identity.Modalities);
            served = allowed.Length == 0 ? SiloSettings.NoModalities : string.Join(",", allowed);
            silo.AddStartupTask((services, _) =>
            {
                var log = services.GetRequiredService<ILoggerFactory>().CreateLogger("MrVae.Silo.Tls");
                if (refused.Length > 0) LogUncertified(log, string.Join(",", refused), identity.ToString());
                LogServing(log, identity.ToString(), served);
                return Task.CompletedTask;
            });
        }
        silo.UseSiloMetadata(new Dictionary<string, string>
        {
            [SiloSettings.ModalitiesMetadataKey] = served,
            [SiloSettings.RoleMetadataKey] = settings.EffectiveRole,
        });
        silo.Services.AddPlacementDirector<ModalityPlacementStrategy, ModalityPlacementDirector>();
        silo.Services.AddSingleton<ComputeGate>();
        // The coordinator's clock (member timeouts, rejoin probe, checkpoint interval); tests give a fake one.
        silo.Services.TryAddSingleton(TimeProvider.System);
        // A user's mistake found in a grain (UserInputException, DataFormatException, ...) reaches the client as itself.
        silo.Services.Configure<Orleans.Serialization.ExceptionSerializationOptions>(o => o.SupportedNamespacePrefixes.Add("MrVae"));
        // Spans cross grain calls, and so silos: a step's trace holds every modality's work.
        silo.AddActivityPropagation();

        if (clustering)
        {
            string clusterId = configuration["MrVae:Cluster:ClusterId"] ?? "mrvae";
            string serviceId = configuration["MrVae:Cluster:ServiceId"] ?? "mrvae";
            int siloPort = configuration.GetValue("MrVae:Endpoints:SiloPort", 11111);
            int gatewayPort = configuration.GetValue("MrVae:Endpoints:GatewayPort", 30000);
            string? redis = configuration["MrVae:Clustering:Redis"];
            var redisAuth = RedisAuth.From(configuration);
            if (string.IsNullOrWhiteSpace(redis))
            {
                int primary = configuration.GetValue("MrVae:Endpoints:PrimarySiloPort", 11111);
                silo.UseLocalhostClustering(siloPort, gatewayPort, new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, primary), serviceId, clusterId);
            }
            else
            {
                silo.UseRedisClustering(o => o.ConfigurationOptions = RedisConnection.Options(redis, redisAuth));
                // The grain directory in Redis too: Orleans' default directory is partitioned across the silos, and a
                // silo's death deactivates every activation whose entry it held, on whichever silo (a coordinator
                // would roll back to its checkpoint though its own silo lives). Entries in Redis outlive any silo.
                silo.UseRedisGrainDirectoryAsDefault(o => o.ConfigurationOptions = RedisConnection.Options(redis, redisAuth));
                silo.Configure<ClusterOptions>(o => { o.ClusterId = clusterId; o.ServiceId = serviceId; });
                // In a pod the silo must advertise its own address (MrVae:Endpoints:AdvertisedIP, e.g. status.podIP)
                // and listen on all interfaces; on one machine loopback is enough.
                string? advertised = configuration["MrVae:Endpoints:AdvertisedIP"];
                if (string.IsNullOrWhiteSpace(advertised))
                    silo.ConfigureEndpoints(System.Net.IPAddress.Loopback, siloPort, gatewayPort);
                else
                    silo.ConfigureEndpoints(System.Net.IPAddress.Parse(advertised), siloPort, gatewayPort, listenOnAnyHostAddress: true);
            }
        }
        // Checkpoints: every silo of a cluster must reach the same storage, so a grain restored on another silo finds
        // its state. Redis when the cluster has one; files for one machine (the embedded default, local clusters).
        string? checkpointDirectory = configuration["MrVae:Checkpoints:Directory"];
        string? checkpointRedis = configuration["MrVae:Checkpoints:Redis"];
        if (string.IsNullOrWhiteSpace(checkpointRedis) && string.IsNullOrWhiteSpace(checkpointDirectory)) checkpointRedis = configuration["MrVae:Clustering:Redis"];
        if (!string.IsNullOrWhiteSpace(checkpointRedis))
            silo.AddRedisGrainStorage(Checkpointing.StorageName, options => options.Configure<IServiceProvider>((o, services) =>
            {
                o.ConfigurationOptions = RedisConnection.Options(checkpointRedis, RedisAuth.From(configuration));
                // Binary, not the default JSON: snapshots are megabytes of tensor bytes.
                o.GrainStorageSerializer = ActivatorUtilities.CreateInstance<Orleans.Storage.OrleansGrainStorageSerializer>(services);
            }));
        else
            silo.Services.AddFileGrainStorage(Checkpointing.StorageName, string.IsNullOrWhiteSpace(checkpointDirectory) ? "mrvae-state" : checkpointDirectory);

        // A training step can take seconds on a CPU; grain calls must not time out under normal load.
        silo.Configure<SiloMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromMinutes(5));
        return silo;
    }

    /// <summary>
    /// The modalities a silo serves when its certificate names <paramref name="certified"/>: those configured that
    /// the certificate names (all it names when the configuration says "any"), and those configured that it does not.
    /// </summary>
    public static (int[] Allowed, int[] Refused) CertifiedModalities(IReadOnlyList<int> configured, IReadOnlyList<int> certified) =>
        configured.Count == 0
            ? (certified.ToArray(), [])
            : (configured.Where(certified.Contains).ToArray(), configured.Where(j => !certified.Contains(j)).ToArray());

    [LoggerMessage(EventId = 2102, Level = LogLevel.Warning, Message = "TLS: MrVae:Silo:Modalities claims modalities {Modalities} that this silo's certificate {Identity} does not name: it does not serve them")]
    static partial void LogUncertified(ILogger logger, string modalities, string identity);

    [LoggerMessage(EventId = 2103, Level = LogLevel.Information, Message = "TLS: mutual TLS on as {Identity}; serving modalities: {Served}")]
    static partial void LogServing(ILogger logger, string identity, string served);
}
