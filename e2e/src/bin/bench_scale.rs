//! `bench-scale`: how long one `slipway manager` takes to bring N sim clusters (control plane 1, one pool of 3) to
//! Ready, what that costs the apiserver (requests by verb) and the manager (peak RSS, CPU seconds), and whether the
//! manager then stays quiet (writes during a steady window). Prints one markdown report on stdout; progress goes to
//! stderr.
//!
//! It expects an apiserver with Slipway's CRDs and a running manager; `hack/bench-scale.sh N` sets both up.
//! See docs/benchmarks.md for what the numbers mean and for recorded runs.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use slipway_api::conditions::{self, NODES_READY, READY};
use slipway_api::{Cluster, MachinePool};
use slipway_e2e::apiserver_requests::{RequestCounts, RequestKind};
use slipway_e2e::bench_setup::{client_for, prepare_namespace, scrape_apiserver};
use slipway_e2e::manager_metrics::ManagerMetrics;
use slipway_e2e::percentile::percentile;
use slipway_e2e::process_usage::{self, ProcessUsage};
use slipway_e2e::prometheus_text;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
#[command(
    name = "bench-scale",
    about = "Time N sim clusters to Ready against a running manager"
)]
struct Args {
    /// How many Clusters to create, each with one MachinePool of 3.
    #[arg(long)]
    clusters: usize,
    /// Admin kubeconfig of the apiserver the manager runs against.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Process id of the running `slipway manager`, whose memory and CPU are measured from /proc.
    #[arg(long)]
    manager_pid: u32,
    /// Address of the manager's /metrics (its --metrics-addr), for reconcile counts and durations.
    #[arg(long)]
    manager_metrics_addr: Option<SocketAddr>,
    /// Namespace for the clusters; it must hold no Clusters yet.
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// Length of the window after everything is Ready in which the manager should write nothing.
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// Create requests in flight at once.
    #[arg(long, default_value_t = 32)]
    create_concurrency: usize,
    /// Give up when not every cluster is Ready this long after the first create.
    #[arg(long, default_value_t = 900)]
    timeout_seconds: u64,
}

const KUBERNETES_VERSION: &str = "v1.37.2";
const CONTROL_PLANE_REPLICAS: u32 = 1;
const WORKERS_PER_POOL: u32 = 3;
/// How often the manager's resident memory is sampled while clusters come up.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // kube panics when two rustls providers are compiled in and none is chosen; choose before anything else.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    if args.clusters == 0 || args.create_concurrency == 0 {
        bail!("--clusters and --create-concurrency must be at least 1");
    }
    let client = client_for(&args.kubeconfig).await?;
    let manager = args.manager_pid;
    process_usage::read(manager)
        .with_context(|| format!("the manager (pid {manager}) is not running or not readable"))?;
    prepare_namespace(
        &client,
        &args.namespace,
        &ApiResource::erase::<Cluster>(&()),
    )
    .await?;
    let first_create = warm_up(&client, &args.namespace).await?;

    // Before: everything that the run's numbers are differences from.
    let requests_before = scrape_apiserver(&client).await?;
    let manager_metrics_before = scrape_manager(args.manager_metrics_addr).await?;
    let usage_before = process_usage::read(manager)?;
    let peak_rss = Arc::new(AtomicU64::new(usage_before.rss_bytes));
    let rss_sampler = tokio::spawn(sample_peak_rss(manager, peak_rss.clone()));

    let run = bring_up(&client, &args).await;
    rss_sampler.abort();
    let run = run?;

    // All Ready: the run's cost.
    let requests_after_run = scrape_apiserver(&client).await?;
    let manager_metrics_after_run = scrape_manager(args.manager_metrics_addr).await?;
    let usage_after_run = process_usage::read(manager)?;
    let run_peak_rss = peak_rss
        .load(Ordering::Relaxed)
        .max(usage_after_run.rss_bytes);

    // Steady state: nothing changes any more, so the manager should write nothing.
    eprintln!(
        "all {} clusters Ready after {:.1} s; watching a {} s steady window",
        args.clusters,
        run.all_ready.as_secs_f64(),
        args.steady_seconds
    );
    let requests_steady_start = scrape_apiserver(&client).await?;
    let usage_steady_start = process_usage::read(manager)?;
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let requests_steady_end = scrape_apiserver(&client).await?;
    let usage_end = process_usage::read(manager)?;
    let manager_metrics_end = scrape_manager(args.manager_metrics_addr).await?;

    let report = Report {
        args: &args,
        first_create,
        run,
        run_requests: requests_after_run.since(&requests_before),
        steady_requests: requests_steady_end.since(&requests_steady_start),
        run_peak_rss,
        usage_before,
        usage_after_run,
        usage_steady_start,
        usage_end,
        run_reconciles: manager_metrics_after_run
            .as_ref()
            .zip(manager_metrics_before.as_ref())
            .map(|(after, before)| after.since(before)),
        steady_reconciles: manager_metrics_end
            .as_ref()
            .zip(manager_metrics_after_run.as_ref())
            .map(|(after, before)| after.since(before)),
    };
    print!("{}", report.render());
    Ok(())
}

/// Sends one Cluster and one MachinePool as server-side dry runs and says how long that took. A fresh apiserver
/// spends about 2 s on the first create of a Cluster (it builds the CRD's validation, CEL rules included, on first
/// use); that is a one-off of the apiserver, not of the manager, so it happens before the clock starts.
async fn warm_up(client: &Client, namespace: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (cluster, pool) = sim_cluster("bench-warm-up")?;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    Api::<DynamicObject>::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::erase::<Cluster>(&()),
    )
    .create(&dry_run, &cluster)
    .await
    .context("creating a Cluster as a dry run")?;
    Api::<DynamicObject>::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::erase::<MachinePool>(&()),
    )
    .create(&dry_run, &pool)
    .await
    .context("creating a MachinePool as a dry run")?;
    Ok(started.elapsed())
}

/// The manager's reconcile metrics, when its address was given.
async fn scrape_manager(addr: Option<SocketAddr>) -> anyhow::Result<Option<ManagerMetrics>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let text = http_get(addr, "/metrics")
        .await
        .with_context(|| format!("GET http://{addr}/metrics from the manager"))?;
    let samples = prometheus_text::parse(&text).context("reading the manager's /metrics")?;
    Ok(Some(ManagerMetrics::from_samples(&samples)))
}

/// A plain HTTP/1.0 GET: the server closes the connection after the body, so no chunking or keep-alive to handle,
/// and no HTTP client crate for one loopback request.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8(response).context("the response is not UTF-8")?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("the response has no end of headers")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("answered {status:?}");
    }
    Ok(body.to_string())
}

/// Keeps the highest VmRSS seen, until aborted or the process is gone.
async fn sample_peak_rss(pid: u32, peak: Arc<AtomicU64>) {
    let mut every = tokio::time::interval(RSS_SAMPLE_EVERY);
    loop {
        every.tick().await;
        match process_usage::read(pid) {
            Ok(usage) => {
                peak.fetch_max(usage.rss_bytes, Ordering::Relaxed);
            }
            Err(_) => return,
        }
    }
}

/// What bringing the clusters up took.
struct BringUp {
    /// From the first create request until the last cluster was seen Ready.
    all_ready: Duration,
    /// From the first create request until the last one was answered.
    all_created: Duration,
    /// Per cluster, Ready's lastTransitionTime minus creationTimestamp: the apiserver's clock, 1 s resolution.
    server_latencies: Vec<f64>,
    /// Per cluster, from sending its create to seeing it Ready: the bench's clock.
    observed_latencies: Vec<f64>,
}

/// Creates the clusters and watches them until all are Ready or the timeout passes.
async fn bring_up(client: &Client, args: &Args) -> anyhow::Result<BringUp> {
    let n = args.clusters;
    let width = n.to_string().len();
    let names: Vec<String> = (0..n).map(|i| format!("bench-{i:0width$}")).collect();
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();

    // Watch before creating, so that no transition to Ready can be missed.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &args.namespace);
    let mut events = watcher(clusters, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut ready: HashMap<String, (Instant, f64)> = HashMap::new();
    // The Ready condition of every cluster not Ready yet, to say where they stand on a timeout.
    let mut waiting: HashMap<String, String> = HashMap::new();

    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_seconds);
    let mut creating = tokio::spawn(create_clusters(
        client.clone(),
        args.namespace.clone(),
        names,
        args.create_concurrency,
        sent_at.clone(),
    ));
    let mut all_created = None;
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.tick().await;

    while ready.len() < n {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(cluster) | watcher::Event::InitApply(cluster))) => {
                    observe(&cluster, &mut ready, &mut waiting);
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => eprintln!("watching Clusters failed, retrying: {error}"),
                None => bail!("the watch on Clusters ended"),
            },
            created = &mut creating, if all_created.is_none() => {
                created.context("the create task panicked")??;
                all_created = Some(started.elapsed());
                eprintln!("created {n} Clusters and {n} MachinePools in {:.1} s", started.elapsed().as_secs_f64());
            }
            _ = progress.tick() => {
                process_usage::read(args.manager_pid).context("the manager stopped during the run")?;
                let created = sent_at.lock().unwrap_or_else(|e| e.into_inner()).len();
                eprintln!(
                    "[{:6.1} s] {created}/{n} clusters created, {}/{n} Ready",
                    started.elapsed().as_secs_f64(),
                    ready.len()
                );
            }
            _ = tokio::time::sleep_until(deadline) => {
                creating.abort();
                eprintln!("{}", where_they_stand(n, &ready, &waiting));
                bail!(
                    "only {} of {n} clusters were Ready after {} s",
                    ready.len(),
                    args.timeout_seconds
                );
            }
        }
    }
    let all_ready = started.elapsed();
    let all_created = match all_created {
        Some(took) => took,
        // Every cluster can be Ready before the answer to the last create has been read.
        None => {
            creating.await.context("the create task panicked")??;
            started.elapsed()
        }
    };
    let sent_at = sent_at.lock().unwrap_or_else(|e| e.into_inner());
    let observed_latencies = ready
        .iter()
        .filter_map(|(name, (seen, _))| {
            Some(seen.duration_since(*sent_at.get(name)?).as_secs_f64())
        })
        .collect();
    Ok(BringUp {
        all_ready,
        all_created,
        server_latencies: ready.values().map(|(_, latency)| *latency).collect(),
        observed_latencies,
    })
}

/// Creates each Cluster and then its MachinePool, `concurrency` clusters at a time.
async fn create_clusters(
    client: Client,
    namespace: String,
    names: Vec<String>,
    concurrency: usize,
    sent_at: Arc<Mutex<HashMap<String, Instant>>>,
) -> anyhow::Result<()> {
    // Untyped objects: the apiserver gets exactly what a user's YAML would say, with the CRD's defaults applied
    // by the apiserver rather than by our Rust types.
    let clusters: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &namespace,
        &ApiResource::erase::<Cluster>(&()),
    );
    let pools: Api<DynamicObject> =
        Api::namespaced_with(client, &namespace, &ApiResource::erase::<MachinePool>(&()));
    futures::stream::iter(names)
        .map(|name| {
            let (clusters, pools, sent_at) = (&clusters, &pools, &sent_at);
            async move {
                let (cluster, pool) = sim_cluster(&name)?;
                sent_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.clone(), Instant::now());
                clusters
                    .create(&PostParams::default(), &cluster)
                    .await
                    .with_context(|| format!("creating Cluster {name}"))?;
                pools
                    .create(&PostParams::default(), &pool)
                    .await
                    .with_context(|| format!("creating MachinePool {name}-workers"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

/// A sim Cluster at zero delay with its pool, as in `config/samples/sim-cluster.yaml` without the delays.
fn sim_cluster(name: &str) -> anyhow::Result<(DynamicObject, DynamicObject)> {
    let cluster = json!({
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": { "name": name },
        "spec": {
            "kubernetes": { "version": KUBERNETES_VERSION },
            "controlPlane": { "replicas": CONTROL_PLANE_REPLICAS },
            "infrastructure": { "sim": {} },
        },
    });
    let pool = json!({
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": "MachinePool",
        "metadata": { "name": format!("{name}-workers") },
        "spec": { "clusterName": name, "replicas": WORKERS_PER_POOL },
    });
    Ok((
        serde_json::from_value(cluster)?,
        serde_json::from_value(pool)?,
    ))
}

/// Notes a cluster that became Ready (once), or where a not-Ready one stands.
fn observe(
    cluster: &Cluster,
    ready: &mut HashMap<String, (Instant, f64)>,
    waiting: &mut HashMap<String, String>,
) {
    let name = cluster.name_any();
    if ready.contains_key(&name) {
        return;
    }
    let list = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    // Every cluster here has a pool: a Ready that does not count it (a reconcile that ran before the pool
    // existed) is not the Ready being measured.
    let counts_its_pool =
        conditions::find(list, NODES_READY).is_some_and(|c| c.reason != "NoMachinePools");
    match conditions::find(list, READY) {
        Some(condition) if condition.status == conditions::STATUS_TRUE && counts_its_pool => {
            let latency = cluster
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|created| {
                    condition
                        .last_transition_time
                        .0
                        .duration_since(created.0)
                        .as_secs_f64()
                })
                .unwrap_or(f64::NAN);
            waiting.remove(&name);
            ready.insert(name, (Instant::now(), latency));
        }
        Some(condition) => {
            waiting.insert(
                name,
                format!(
                    "Ready={} {}: {}",
                    condition.status, condition.reason, condition.message
                ),
            );
        }
        None => {
            waiting.insert(name, "no Ready condition yet".into());
        }
    }
}

/// On a timeout: how many are Ready, and the most common states of the rest.
fn where_they_stand(
    n: usize,
    ready: &HashMap<String, (Instant, f64)>,
    waiting: &HashMap<String, String>,
) -> String {
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for state in waiting.values() {
        *states.entry(state.as_str()).or_default() += 1;
    }
    let mut states: Vec<(&str, usize)> = states.into_iter().collect();
    states.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    let mut text = format!(
        "{} of {n} clusters Ready; {} seen not Ready; never seen: {}\nmost common states of those not Ready:\n",
        ready.len(),
        waiting.len(),
        n.saturating_sub(ready.len() + waiting.len())
    );
    for (state, count) in states.into_iter().take(10) {
        let _ = writeln!(text, "  {count:6}  {state}");
    }
    text
}

struct Report<'a> {
    args: &'a Args,
    first_create: Duration,
    run: BringUp,
    run_requests: RequestCounts,
    steady_requests: RequestCounts,
    run_peak_rss: u64,
    usage_before: ProcessUsage,
    usage_after_run: ProcessUsage,
    usage_steady_start: ProcessUsage,
    usage_end: ProcessUsage,
    run_reconciles: Option<ManagerMetrics>,
    steady_reconciles: Option<ManagerMetrics>,
}

/// The manager's own writes: Slipway's objects and the Events it records. With leader election off it writes
/// nothing else, and the bench writes nothing during the steady window.
fn is_manager_write(kind: &RequestKind) -> bool {
    kind.is_write()
        && ((kind.group == slipway_api::GROUP
            && (kind.resource == "clusters" || kind.resource == "machinepools"))
            || kind.resource == "events")
}

impl Report<'_> {
    fn render(&self) -> String {
        let n = self.args.clusters;
        let steady = self.args.steady_seconds;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## {n} clusters (control plane {CONTROL_PLANE_REPLICAS} + one pool of {WORKERS_PER_POOL}, sim provider, zero delay)\n"
        );
        let _ = writeln!(out, "| metric | value |\n|---|---|");
        let mut row = |metric: String, value: String| {
            let _ = writeln!(out, "| {metric} | {value} |");
        };
        row(
            "seconds until all clusters Ready".into(),
            format!("{:.1}", self.run.all_ready.as_secs_f64()),
        );
        row(
            format!(
                "seconds to create {n} Clusters + {n} MachinePools ({} at a time)",
                self.args.create_concurrency
            ),
            format!("{:.1}", self.run.all_created.as_secs_f64()),
        );
        row(
            "seconds for the apiserver's first Cluster + MachinePool create (dry run, before the clock starts)"
                .into(),
            format!("{:.1}", self.first_create.as_secs_f64()),
        );
        row(
            "cluster latency median / p99 (Ready lastTransitionTime - creationTimestamp, 1 s resolution)".into(),
            seconds_pair(&self.run.server_latencies, 0),
        );
        row(
            "cluster latency median / p99 (bench clock: create sent -> Ready seen)".into(),
            seconds_pair(&self.run.observed_latencies, 2),
        );
        row(
            "apiserver requests during the run (all clients)".into(),
            self.run_requests.total().to_string(),
        );
        row(
            "manager peak RSS during the run (VmRSS sampled every 100 ms)".into(),
            mib(self.run_peak_rss),
        );
        row(
            "manager peak RSS over its life (VmHWM at the end)".into(),
            mib(self.usage_end.peak_rss_bytes),
        );
        row(
            "manager RSS at the end of the steady window".into(),
            mib(self.usage_end.rss_bytes),
        );
        row(
            "manager CPU seconds during the run".into(),
            format!(
                "{:.2}",
                self.usage_after_run.cpu_seconds - self.usage_before.cpu_seconds
            ),
        );
        row(
            format!("manager CPU seconds during the {steady} s steady window"),
            format!(
                "{:.2}",
                self.usage_end.cpu_seconds - self.usage_steady_start.cpu_seconds
            ),
        );
        row(
            format!("manager writes during the {steady} s steady window"),
            self.steady_requests
                .filter(is_manager_write)
                .total()
                .to_string(),
        );
        if let (Some(run), Some(steady_window)) = (&self.run_reconciles, &self.steady_reconciles) {
            for (controller, stats) in &run.controllers {
                row(
                    format!("{controller} reconciles during the run (errors)"),
                    format!("{} ({})", stats.reconciles, stats.error_count()),
                );
            }
            for (controller, stats) in &steady_window.controllers {
                row(
                    format!("{controller} reconciles during the steady window"),
                    stats.reconciles.to_string(),
                );
            }
        }

        let _ = writeln!(
            out,
            "\n### apiserver requests during the run, by verb\n\n| verb | requests |\n|---|---|"
        );
        for (verb, count) in self.run_requests.by_verb() {
            let _ = writeln!(out, "| {verb} | {count} |");
        }
        let _ = writeln!(
            out,
            "\n### apiserver requests during the run, by verb and resource\n\n| request | count |\n|---|---|"
        );
        for (kind, count) in self.run_requests.most_frequent() {
            let _ = writeln!(out, "| {kind} | {count} |");
        }
        let _ = writeln!(
            out,
            "\n### apiserver writes during the {steady} s steady window, all clients\n"
        );
        let steady_writes = self.steady_requests.filter(RequestKind::is_write);
        if steady_writes.total() == 0 {
            let _ = writeln!(out, "none");
        } else {
            let _ = writeln!(out, "| request | count | by the manager |\n|---|---|---|");
            for (kind, count) in steady_writes.most_frequent() {
                let manager = if is_manager_write(kind) { "yes" } else { "no" };
                let _ = writeln!(out, "| {kind} | {count} | {manager} |");
            }
        }
        if let Some(run) = &self.run_reconciles {
            let _ = writeln!(
                out,
                "\n### manager reconciles during the run (slipway_reconcile_duration_seconds)\n\n| controller | reconciles | errors | mean ms | p50 <= ms | p99 <= ms |\n|---|---|---|---|---|---|"
            );
            for (controller, stats) in &run.controllers {
                let errors = if stats.errors.is_empty() {
                    "0".to_string()
                } else {
                    stats
                        .errors
                        .iter()
                        .map(|(error, count)| format!("{count} {error}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(
                    out,
                    "| {controller} | {} | {errors} | {} | {} | {} |",
                    stats.reconciles,
                    millis(stats.mean_seconds()),
                    millis(stats.quantile_upper_bound(0.5)),
                    millis(stats.quantile_upper_bound(0.99)),
                );
            }
            let _ = writeln!(out, "\nprovider calls during the run: {}", {
                let calls: Vec<String> = run
                    .provider_calls
                    .iter()
                    .map(|(call, count)| format!("{call}: {count}"))
                    .collect();
                if calls.is_empty() {
                    "none".to_string()
                } else {
                    calls.join(", ")
                }
            });
        }
        out
    }
}

fn seconds_pair(values: &[f64], decimals: usize) -> String {
    match (percentile(values, 50.0), percentile(values, 99.0)) {
        (Some(median), Some(p99)) => format!("{median:.decimals$} s / {p99:.decimals$} s"),
        _ => "n/a".into(),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn millis(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) if s.is_infinite() => "> largest bucket".into(),
        Some(s) => format!("{:.1}", s * 1000.0),
        None => "n/a".into(),
    }
}
