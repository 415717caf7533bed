//! `slipway manager`: the controllers, behind leader election, with metrics and health endpoints, JSON or text
//! logs, and a graceful stop on SIGTERM (in-flight reconciles finish, the lease is released).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use slipway_controller::{Metrics, ProviderRegistry, Settings};
use slipway_provider_aws::{AwsConfig, AwsProvider, SecretCredentials};
use slipway_provider_baremetal::config_drive::{self, ServerTls};
use slipway_provider_baremetal::host_controller::HostControllerSettings;
use slipway_provider_baremetal::{BareMetalProvider, ConfigDriveSettings};
use slipway_provider_local::LocalProvider;
use slipway_provider_sim::SimProvider;
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(clap::Args)]
pub struct Args {
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, default_value = "127.0.0.1:8080")]
    metrics_addr: SocketAddr,
    /// Reconciles in flight per controller.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Seconds between re-applies of `Reconcile`-mode add-on bundles, which repair drift in workload clusters.
    #[arg(long, default_value_t = 60)]
    addon_resync_seconds: u64,
    /// Seconds between listings of a ready pool's machines, which notice a machine the provider now reports
    /// failed (say, a stopped instance) so that it is replaced.
    #[arg(long, default_value_t = 60)]
    machine_resync_seconds: u64,
    /// Requests per second the manager may send to the management cluster's API; 0 (the default) leaves the
    /// pacing to the apiserver's own API Priority and Fairness, which queues a busy client instead of failing it.
    #[arg(long, default_value_t = 0)]
    qps: u64,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Take part in leader election; only the holder of the Lease reconciles.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "slipway-manager")]
    lease_name: String,
    /// Seconds a leader's Lease stays valid without renewal; a standby takes over after it.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// This instance's identity in the Lease and in Events (default: host name and process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Keep the sim provider's machines in this JSON file, so they outlive the process (for tests).
    #[arg(long)]
    sim_state_file: Option<PathBuf>,
    /// Development providers to run besides aws and baremetal, comma-separated: `sim` (in-memory machines) and
    /// `local` (workload clusters as processes on the manager's own host). Off by default, because a manager
    /// shared by teams must not run tenants' clusters on itself; Clusters that use a provider that is off say so in
    /// their conditions (`ProviderNotRegistered`).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        env = "SLIPWAY_ENABLE_PROVIDER"
    )]
    enable_provider: Vec<DevProvider>,
    /// Where the local provider keeps its clusters (default: ${SLIPWAY_CACHE:-~/.cache/slipway}/clusters). A
    /// Cluster's `spec.infrastructure.local.stateDir` must lie inside it.
    #[arg(long, env = "SLIPWAY_LOCAL_STATE_DIR")]
    local_state_dir: Option<PathBuf>,
    /// Where the local provider finds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
    /// (default: what hack/build-k8s.sh builds).
    #[arg(long, env = "SLIPWAY_K8S_BIN")]
    local_bin_dir: Option<PathBuf>,
    /// The HAProxy binary the local provider runs as each cluster's API endpoint (default: `haproxy` on PATH or in
    /// /usr/sbin).
    #[arg(long, env = "SLIPWAY_LOCAL_HAPROXY")]
    local_haproxy: Option<PathBuf>,
    /// EC2 and Elastic Load Balancing endpoint of the aws provider, for a compatible cloud or an emulator such as
    /// moto (default: AWS).
    #[arg(long, env = "SLIPWAY_AWS_ENDPOINT_URL")]
    aws_endpoint_url: Option<String>,
    /// ConfigMap `<namespace>/<name>` whose entries override the aws provider's embedded hourly prices (key: an
    /// instance type, value: USD per hour, e.g. `m5.large: "0.096"`), for `status.cost`. Read once at start.
    #[arg(
        long,
        env = "SLIPWAY_AWS_PRICE_CONFIGMAP",
        value_name = "NAMESPACE/NAME"
    )]
    aws_price_configmap: Option<String>,
    /// A CIDR (or single address) the manager may reach although it is loopback, link-local, private, reserved
    /// or in the Service range; add-on URLs and BMC addresses there are refused otherwise. Repeat the flag or
    /// separate CIDRs with commas: e.g. the BMC network (10.20.0.0/16), or 127.0.0.0/8 for a local mirror.
    #[arg(long, env = "SLIPWAY_ALLOW_EGRESS", value_name = "CIDR", value_delimiter = ',', value_parser = slipway_egress::parse_cidr)]
    allow_egress: Vec<slipway_egress::IpNet>,
    /// Where kubeadm machines install kubelet, kubeadm and kubectl from when their image lacks them: the
    /// Kubernetes project's repositories or a mirror laid out the same way (`<url>/v<major>.<minor>/deb/`). Only
    /// the Kubernetes package signing key is trusted, whatever the mirror serves.
    #[arg(long, env = "SLIPWAY_KUBERNETES_PACKAGE_REPOSITORY", default_value = slipway_bootstrap::node_packages::DEFAULT_REPOSITORY, value_parser = slipway_bootstrap::node_packages::PackageRepository::new)]
    kubernetes_package_repository: slipway_bootstrap::node_packages::PackageRepository,
    /// The HTTPS address at which BMCs reach this manager's config drive server, e.g.
    /// https://slipway.example.com:8443 (a Service or load balancer in front of --config-drive-listen). Bare-metal
    /// hosts get their user data as a config drive from there; without it they boot from their image with none.
    #[arg(long, env = "SLIPWAY_CONFIG_DRIVE_URL", value_parser = ConfigDriveSettings::new)]
    config_drive_url: Option<ConfigDriveSettings>,
    /// Where the config drive server listens (only with --config-drive-url).
    #[arg(
        long,
        env = "SLIPWAY_CONFIG_DRIVE_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    config_drive_listen: SocketAddr,
    /// PEM certificate (chain) of the config drive server; without it and --config-drive-tls-key, a self-signed
    /// certificate for the host of --config-drive-url is made at start (BMCs do not check virtual media
    /// certificates by default).
    #[arg(
        long,
        env = "SLIPWAY_CONFIG_DRIVE_TLS_CERT",
        requires = "config_drive_tls_key"
    )]
    config_drive_tls_cert: Option<PathBuf>,
    /// PEM private key of --config-drive-tls-cert.
    #[arg(
        long,
        env = "SLIPWAY_CONFIG_DRIVE_TLS_KEY",
        requires = "config_drive_tls_cert"
    )]
    config_drive_tls_key: Option<PathBuf>,
    /// The management cluster's Service range(s): refused as add-on URL or BMC addresses unless --allow-egress
    /// allows them.
    #[arg(long, env = "SLIPWAY_SERVICE_CIDR", value_name = "CIDR", value_delimiter = ',', default_value = slipway_egress::DEFAULT_SERVICE_CIDR, value_parser = slipway_egress::parse_cidr)]
    service_cidr: Vec<slipway_egress::IpNet>,
}

/// The Kubernetes version `hack/build-k8s.sh` builds, so the default binary directory matches it.
const VERSIONS: &str = include_str!("../../../hack/versions.env");

fn cache_dir() -> PathBuf {
    std::env::var_os("SLIPWAY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".cache")
                .join("slipway")
        })
}

fn default_bin_dir() -> PathBuf {
    let version = VERSIONS
        .lines()
        .find_map(|l| l.strip_prefix("KUBERNETES_VERSION="))
        .unwrap_or("unknown")
        .trim();
    cache_dir().join("k8s").join(version).join("bin")
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DevProvider {
    Sim,
    Local,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    init_logging(args.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run_async(args))
}

/// Log targets of dependencies whose debug and trace events print credentials: the AWS SDK's request
/// orchestrator writes the resolved identity (with the access key id) into "resolving endpoint" and "resolved
/// identity", and SigV4 signing traces what it signs. They stay at `info` whatever `RUST_LOG` asks for, so that a
/// debug log can be shared.
const CREDENTIAL_LOGGING_TARGETS: &[&str] = &["aws_smithy_runtime", "aws_sigv4"];

fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    let mut filter = rust_log
        .and_then(|text| tracing_subscriber::EnvFilter::try_new(text).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    for target in CREDENTIAL_LOGGING_TARGETS {
        filter = filter.add_directive(format!("{target}=info").parse().expect("a valid directive"));
    }
    filter
}

fn init_logging(format: LogFormat) {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

async fn run_async(args: Args) -> anyhow::Result<()> {
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let client = client(args.qps).await?;
    ensure_crds(&client).await?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let server = serve(args.metrics_addr, metrics.clone(), ready.clone()).await?;

    let mut aws = AwsProvider::new(
        AwsConfig {
            endpoint_url: args.aws_endpoint_url.clone(),
            ..AwsConfig::default()
        },
        Arc::new(SecretCredentials::new(client.clone())),
    );
    if let Some(reference) = &args.aws_price_configmap {
        aws = aws.with_prices(aws_prices(&client, reference).await?);
    }
    let egress = slipway_egress::EgressPolicy::allowing(args.allow_egress.clone())
        .with_service_ranges(args.service_cidr.clone());
    info!(allowed = ?egress.allowed(), service_ranges = ?egress.service_ranges(), "egress policy for add-on URLs and BMCs");
    let redfish = slipway_provider_baremetal::ClientOptions {
        egress: egress.clone(),
        ..Default::default()
    };
    let config_drive = args.config_drive_url.clone();
    match &config_drive {
        Some(settings) => serve_config_drives(&args, settings, client.clone()).await?,
        None => info!(
            "--config-drive-url is not set: bare-metal hosts boot from their image without a config drive, so without their user data"
        ),
    }
    let hosts = HostControllerSettings {
        redfish: redfish.clone(),
        config_drive: config_drive.clone(),
        ..HostControllerSettings::default()
    };
    let mut baremetal = BareMetalProvider::with_options(client.clone(), redfish);
    if let Some(settings) = config_drive {
        baremetal = baremetal.with_config_drive(settings);
    }
    let mut providers = ProviderRegistry::new()
        .register(Arc::new(aws))
        .register(Arc::new(baremetal));
    if args.enable_provider.contains(&DevProvider::Sim) {
        let sim = match &args.sim_state_file {
            Some(path) => SimProvider::with_state_file(path)
                .with_context(|| format!("reading the sim state file {}", path.display()))?,
            None => SimProvider::new(),
        };
        providers = providers.register(Arc::new(sim));
    }
    if args.enable_provider.contains(&DevProvider::Local) {
        let state_dir = args
            .local_state_dir
            .clone()
            .unwrap_or_else(|| cache_dir().join("clusters"));
        // The root must exist for stateDir checks to resolve symbolic links against it.
        std::fs::create_dir_all(&state_dir).with_context(|| {
            format!(
                "creating the local provider's state directory {}",
                state_dir.display()
            )
        })?;
        let mut local = LocalProvider::new(
            state_dir,
            args.local_bin_dir.clone().unwrap_or_else(default_bin_dir),
        );
        if let Some(haproxy) = &args.local_haproxy {
            local = local.with_haproxy(haproxy);
        }
        providers = providers.register(Arc::new(local));
    }
    info!(providers = ?providers.names(), "providers enabled");
    let settings = Settings {
        concurrency: args.concurrency,
        instance: identity.clone(),
        addon_resync: Duration::from_secs(args.addon_resync_seconds),
        machine_resync: Duration::from_secs(args.machine_resync_seconds),
        node_packages: args.kubernetes_package_repository.clone(),
        egress,
        ..Settings::default()
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("stop requested; finishing in-flight reconciles");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    if !args.leader_elect {
        ready.store(true, Ordering::Relaxed);
        let controllers = run_controllers(
            client,
            providers,
            metrics,
            settings,
            hosts,
            stopped(stop_rx.clone()),
        );
        finish_within_grace(controllers, stop_rx).await;
        server.abort();
        return Ok(());
    }

    let lease = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(args.lease_duration)
        .with_grace(args.lease_duration.div_ceil(3).max(1))
        .build()
        .await
        .context("setting up leader election")?;
    let (mut leader, lease_task) = lease.watch().await;
    // A standby is ready too: it serves health and waits its turn.
    ready.store(true, Ordering::Relaxed);
    info!(%identity, lease = %args.lease_name, namespace = %args.lease_namespace, "waiting to become the leader");
    let mut stop = stop_rx.clone();
    loop {
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leader.changed() => { changed.context("leader election ended")?; }
            _ = stop.wait_for(|s| *s) => {
                drop(leader);
                let _ = lease_task.await;
                server.abort();
                return Ok(());
            }
        }
    }
    info!(%identity, "became the leader; starting controllers");

    let (lost_tx, mut lost_rx) = watch::channel(false);
    let mut watch_leader = leader.clone();
    let watcher = tokio::spawn(async move {
        let _ = watch_leader.wait_for(|is_leader| !*is_leader).await;
        let _ = lost_tx.send(true);
    });
    let mut stop_for_run = stop_rx.clone();
    let shutdown = async move {
        tokio::select! {
            _ = stop_for_run.wait_for(|s| *s) => {}
            _ = lost_rx.wait_for(|lost| *lost) => warn!("lost the leader lease; stopping controllers"),
        }
    };
    let controllers = run_controllers(client, providers, metrics, settings, hosts, shutdown);
    finish_within_grace(controllers, stop_rx).await;
    let lost = !*leader.borrow();
    watcher.abort();
    // Dropping the receiver makes the lease task release the Lease, so a standby takes over at once.
    drop(leader);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => info!("released the leader lease"),
        other => warn!(
            ?other,
            "could not release the leader lease; it expires by itself"
        ),
    }
    server.abort();
    if lost {
        anyhow::bail!("lost leadership");
    }
    Ok(())
}

/// The price overrides in ConfigMap `reference` (`<namespace>/<name>`).
async fn aws_prices(
    client: &Client,
    reference: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let (namespace, name) = reference
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .with_context(|| {
            format!("--aws-price-configmap {reference:?}: write it as <namespace>/<name>")
        })?;
    let config_map = kube::Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("reading the aws price ConfigMap {reference}"))?;
    let prices =
        slipway_provider_aws::PriceTable::parse_overrides(&config_map.data.unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("aws price ConfigMap {reference}: {e}"))?;
    info!(configmap = %reference, types = prices.len(), "aws prices overridden");
    Ok(prices)
}

/// A client for the management cluster (KUBECONFIG or in-cluster config) that sends at most `qps` requests per
/// second, so a large fleet cannot flood the apiserver.
async fn client(qps: u64) -> anyhow::Result<Client> {
    let config = kube::Config::infer()
        .await
        .context("finding the management cluster (KUBECONFIG or in-cluster config)")?;
    let builder = kube::client::ClientBuilder::try_from(config)
        .context("building a client for the management cluster")?;
    Ok(if qps == 0 {
        builder.build()
    } else {
        builder
            .with_layer(&tower::limit::RateLimitLayer::new(
                qps,
                Duration::from_secs(1),
            ))
            .build()
    })
}

/// Slipway's controllers and the bare-metal host controller, until `shutdown`.
async fn run_controllers(
    client: Client,
    providers: ProviderRegistry,
    metrics: Arc<Metrics>,
    settings: Settings,
    hosts: HostControllerSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let hosts = slipway_provider_baremetal::host_controller::run(
        client.clone(),
        hosts,
        stopped(stop_rx.clone()),
    );
    let clusters = slipway_controller::run(client, providers, metrics, settings, stopped(stop_rx));
    tokio::join!(clusters, hosts);
}

/// How long in-flight reconciles may take after a stop was requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Runs the controllers to completion, but gives up `SHUTDOWN_GRACE` after a stop request: a reconcile stuck on a
/// slow provider must not keep a terminating pod alive forever.
async fn finish_within_grace(
    controllers: impl std::future::Future<Output = ()>,
    mut stop: watch::Receiver<bool>,
) {
    let deadline = async move {
        let _ = stop.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = controllers => info!("controllers stopped"),
        _ = deadline => warn!(grace = ?SHUTDOWN_GRACE, "in-flight reconciles did not finish in time; exiting anyway"),
    }
}

/// Fails early, with the fix, when the management cluster lacks Slipway's CRDs: without them the controllers
/// would wait for caches that never fill.
async fn ensure_crds(client: &Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::ResourceExt;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    let mut missing = Vec::new();
    for crd in slipway_api::crds() {
        let name = crd.name_any();
        let established = api
            .get_opt(&name)
            .await
            .with_context(|| format!("reading CRD {name}"))?
            .is_some_and(|c| {
                c.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if !established {
            missing.push(name);
        }
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "the management cluster lacks Slipway's CRDs ({}): install them with \
             `slipway crds --stdout | kubectl apply --server-side -f -`",
            missing.join(", ")
        );
    }
    Ok(())
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

#[derive(Clone)]
struct ServerState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz_handler))
        .with_state(ServerState { metrics, ready });
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("listening on {addr} for /metrics (choose another with --metrics-addr)")
    })?;
    info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            warn!(%error, "metrics server stopped");
        }
    }))
}

/// Starts the config drive server on --config-drive-listen; it runs as long as the process.
async fn serve_config_drives(
    args: &Args,
    settings: &ConfigDriveSettings,
    client: kube::Client,
) -> anyhow::Result<()> {
    let tls = match (&args.config_drive_tls_cert, &args.config_drive_tls_key) {
        (Some(cert), Some(key)) => {
            let read = |path: &PathBuf, flag: &str| {
                std::fs::read(path).with_context(|| format!("reading {flag} {}", path.display()))
            };
            ServerTls::from_pem(
                read(cert, "--config-drive-tls-cert")?,
                read(key, "--config-drive-tls-key")?,
            )
        }
        _ => ServerTls::self_signed(vec![settings.host()]).map_err(anyhow::Error::msg)?,
    };
    let addr = args.config_drive_listen;
    let listener = std::net::TcpListener::bind(addr).with_context(|| {
        format!("listening on {addr} for config drives (choose another with --config-drive-listen)")
    })?;
    let local = listener.local_addr()?;
    let server = config_drive::Server::new(listener, tls)
        .await
        .context("the config drive server's certificate or key (--config-drive-tls-cert, --config-drive-tls-key)")?;
    info!(addr = %local, url = ?settings, "serving bare-metal config drives over HTTPS");
    tokio::spawn(async move {
        if let Err(error) = server.run(client, std::future::pending()).await {
            warn!(%error, "config drive server stopped");
        }
    });
    Ok(())
}

async fn metrics_handler(
    State(state): State<ServerState>,
) -> ([(&'static str, &'static str); 1], String) {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn readyz_handler(State(state): State<ServerState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "slipway".into())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log writer that keeps what it is given.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged_with(rust_log: Option<&str>) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(log_filter(rust_log))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "aws_smithy_runtime::client::orchestrator::endpoints", "sdk-debug");
            tracing::trace!(target: "aws_sigv4::http_request::sign", "sigv4-trace");
            tracing::info!(target: "aws_smithy_runtime::client::retries", "sdk-info");
            tracing::debug!(target: "slipway_controller::cluster", "own-debug");
        });
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn the_aws_sdk_never_logs_below_info_even_when_rust_log_asks_for_it() {
        for asked in [
            "debug",
            "trace",
            "aws_smithy_runtime=trace,aws_sigv4=trace,debug",
        ] {
            let logged = logged_with(Some(asked));
            assert!(
                !logged.contains("sdk-debug") && !logged.contains("sigv4-trace"),
                "RUST_LOG={asked}: {logged}"
            );
            assert!(
                logged.contains("sdk-info") && logged.contains("own-debug"),
                "RUST_LOG={asked}: {logged}"
            );
        }
        let default = logged_with(None);
        assert!(
            default.contains("sdk-info") && !default.contains("own-debug"),
            "{default}"
        );
    }
}
