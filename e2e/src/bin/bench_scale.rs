//! `bench-scale`: how long one `slipway manager` takes to bring N sim clusters (control plane 1, one pool of 3) to
//! Ready, what that costs the apiserver (requests by verb) and the manager (peak RSS, CPU seconds), and whether the
//! manager then stays quiet while it holds the fleet (writes, RSS sampled every 10 s and CPU during `--hold`).
//! With `--floor-result` it prints the run next to `bench-floor`'s for the same N. Prints one markdown report on
//! stdout; progress goes to stderr.
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
use kube::api::{Api, ApiResource, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use slipway_api::Cluster;
use slipway_api::conditions::{self, NODES_READY, READY};
use slipway_e2e::apiserver_requests::{RequestCounts, RequestKind};
use slipway_e2e::bench_setup::{client_for, prepare_namespace, scrape_apiserver};
use slipway_e2e::floor::{FloorResult, ScaleFigures, render_comparison};
use slipway_e2e::manager_metrics::ManagerMetrics;
use slipway_e2e::percentile::percentile;
use slipway_e2e::process_usage::{self, ProcessUsage};
use slipway_e2e::prometheus_text;
use slipway_e2e::rss_samples::RssSamples;
use slipway_e2e::sim_fleet::{
    CONTROL_PLANE_REPLICAS, WORKERS_PER_POOL, cluster_names, clusters_api, pool_name, pools_api,
    sim_cluster, warm_up,
};
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
    /// How long to keep the fleet after everything is Ready, measuring the manager idle: its writes (zero
    /// expected), its RSS every 10 s and its CPU. `--steady-seconds`, the old name, means the same.
    #[arg(long, alias = "steady-seconds", default_value_t = 60)]
    hold: u64,
    /// A `bench-floor --json` result for the same number of clusters, to print next to this run.
    #[arg(long)]
    floor_result: Option<PathBuf>,
    /// Create requests in flight at once.
    #[arg(long, default_value_t = 32)]
    create_concurrency: usize,
    /// Give up when not every cluster is Ready this long after the first create.
    #[arg(long, default_value_t = 900)]
    timeout_seconds: u64,
}

/// How often the manager's resident memory is sampled while clusters come up.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How often it is sampled, and printed, while the fleet is held.
const HOLD_SAMPLE_EVERY: Duration = Duration::from_secs(10);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const HOLD_PROGRESS_EVERY: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // kube panics when two rustls providers are compiled in and none is chosen; choose before anything else.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    if args.clusters == 0 || args.create_concurrency == 0 {
        bail!("--clusters and --create-concurrency must be at least 1");
    }
    // Read before anything runs: a floor for another N, or no file, is a mistake to report now, not after the run.
    let floor = args.floor_result.as_deref().map(read_floor).transpose()?;
    if let Some(floor) = &floor
        && floor.clusters != args.clusters
    {
        bail!(
            "the floor result is for {} clusters, this run is for {}: run bench-floor with --clusters {}",
            floor.clusters,
            args.clusters,
            args.clusters
        );
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
    let first_create = warm_up(&client, &args.namespace)
        .await
        .context("creating a Cluster and a MachinePool as a dry run")?;

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

    // The hold: nothing changes any more, so the manager should write nothing, and its memory should stay flat.
    eprintln!(
        "all {} clusters Ready after {:.1} s; holding the fleet for {} s",
        args.clusters,
        run.all_ready.as_secs_f64(),
        args.hold
    );
    let requests_hold_start = scrape_apiserver(&client).await?;
    let usage_hold_start = process_usage::read(manager)?;
    let hold_rss = hold(manager, Duration::from_secs(args.hold)).await?;
    let requests_hold_end = scrape_apiserver(&client).await?;
    let usage_end = process_usage::read(manager)?;
    let manager_metrics_end = scrape_manager(args.manager_metrics_addr).await?;

    let report = Report {
        args: &args,
        first_create,
        run,
        run_requests: requests_after_run.since(&requests_before),
        hold_requests: requests_hold_end.since(&requests_hold_start),
        run_peak_rss,
        usage_before,
        usage_after_run,
        usage_hold_start,
        usage_end,
        hold_rss,
        floor,
        run_reconciles: manager_metrics_after_run
            .as_ref()
            .zip(manager_metrics_before.as_ref())
            .map(|(after, before)| after.since(before)),
        hold_reconciles: manager_metrics_end
            .as_ref()
            .zip(manager_metrics_after_run.as_ref())
            .map(|(after, before)| after.since(before)),
    };
    print!("{}", report.render());
    Ok(())
}

fn read_floor(path: &std::path::Path) -> anyhow::Result<FloorResult> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the floor result {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a bench-floor --json result", path.display()))
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

/// Keeps the fleet for `length`, sampling the manager's VmRSS at the start, every [`HOLD_SAMPLE_EVERY`] and at
/// the end; fails when the manager stops meanwhile.
async fn hold(pid: u32, length: Duration) -> anyhow::Result<RssSamples> {
    let start = tokio::time::Instant::now();
    let end = start + length;
    let mut samples = RssSamples::default();
    let mut next = start;
    let mut next_progress = start + HOLD_PROGRESS_EVERY;
    loop {
        let usage = process_usage::read(pid).context("the manager stopped during the hold")?;
        samples.push(next - start, usage.rss_bytes);
        if next >= next_progress {
            eprintln!(
                "[hold {:5} / {} s] manager RSS {}",
                (next - start).as_secs(),
                length.as_secs(),
                mib(usage.rss_bytes)
            );
            next_progress += HOLD_PROGRESS_EVERY;
        }
        if next >= end {
            return Ok(samples);
        }
        next = (next + HOLD_SAMPLE_EVERY).min(end);
        tokio::time::sleep_until(next).await;
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
    let names = cluster_names(n);
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
    let clusters = clusters_api(&client, &namespace);
    let pools = pools_api(&client, &namespace);
    futures::stream::iter(names)
        .map(|name| {
            let (clusters, pools, sent_at) = (&clusters, &pools, &sent_at);
            async move {
                let (cluster, pool) = sim_cluster(&name);
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
                    .with_context(|| format!("creating MachinePool {}", pool_name(&name)))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
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
    hold_requests: RequestCounts,
    run_peak_rss: u64,
    usage_before: ProcessUsage,
    usage_after_run: ProcessUsage,
    usage_hold_start: ProcessUsage,
    usage_end: ProcessUsage,
    hold_rss: RssSamples,
    floor: Option<FloorResult>,
    run_reconciles: Option<ManagerMetrics>,
    hold_reconciles: Option<ManagerMetrics>,
}

/// The manager's own writes: Slipway's objects, the Secrets it makes for clusters and the Events it records. With
/// leader election off it writes nothing else, and the bench writes nothing during the hold. The report lists
/// every write of the hold next to this, so a write of any other kind would still show.
fn is_manager_write(kind: &RequestKind) -> bool {
    kind.is_write()
        && (kind.group == slipway_api::GROUP
            || (kind.group.is_empty() && kind.resource == "secrets")
            || kind.resource == "events")
}

/// How many of the run's requests of `kind` the bench sent itself: its creates, and the LIST and WATCH of its
/// watch on Clusters (kube-apiserver counts a WATCH when it ends, so the bench's appears in the run only when it
/// ended before the run's last scrape). `None`: none of them are the bench's.
fn sent_by_the_bench(kind: &RequestKind, clusters: usize) -> Option<String> {
    if kind.group != slipway_api::GROUP || !kind.subresource.is_empty() {
        return None;
    }
    match (kind.verb.as_str(), kind.resource.as_str()) {
        ("POST", "clusters" | "machinepools") => Some(clusters.to_string()),
        ("LIST", "clusters") => Some("1".to_string()),
        ("WATCH", "clusters") => Some("0 or 1".to_string()),
        _ => None,
    }
}

impl Report<'_> {
    fn render(&self) -> String {
        let n = self.args.clusters;
        let hold = self.args.hold;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## {n} clusters (control plane {CONTROL_PLANE_REPLICAS} + one pool of {WORKERS_PER_POOL}, sim provider, zero delay)\n"
        );
        if let Some(floor) = &self.floor {
            let _ = writeln!(
                out,
                "### Slipway next to the floor (bench-floor, the same {n} clusters on its own fresh apiserver, no manager)\n"
            );
            out.push_str(&render_comparison(
                &ScaleFigures {
                    clusters: n,
                    all_ready_seconds: self.run.all_ready.as_secs_f64(),
                    apiserver_requests: self.run_requests.total(),
                },
                floor,
            ));
            let _ = writeln!(out, "\n### The run\n");
        }
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
            "apiserver requests per cluster (all clients, the bench's 2 creates included)".into(),
            format!("{:.1}", self.run_requests.total() as f64 / n as f64),
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
            "manager CPU seconds during the run".into(),
            format!(
                "{:.2}",
                self.usage_after_run.cpu_seconds - self.usage_before.cpu_seconds
            ),
        );
        let every = HOLD_SAMPLE_EVERY.as_secs();
        if let Some(rss) = self.hold_rss.summary() {
            row(
                format!(
                    "manager RSS during the {hold} s hold, every {every} s: first / last / min / max"
                ),
                format!(
                    "{} / {} / {} / {}",
                    mib(rss.first),
                    mib(rss.last),
                    mib(rss.min),
                    mib(rss.max)
                ),
            );
            row(
                "manager RSS change over the hold (last - first)".into(),
                format!("{:+.1} MiB", rss.change() as f64 / (1024.0 * 1024.0)),
            );
        }
        let hold_cpu = self.usage_end.cpu_seconds - self.usage_hold_start.cpu_seconds;
        row(
            format!("manager CPU seconds during the {hold} s hold"),
            format!("{hold_cpu:.2}"),
        );
        row(
            "manager CPU seconds per idle minute (over the hold)".into(),
            if hold > 0 {
                format!("{:.3}", hold_cpu * 60.0 / hold as f64)
            } else {
                "n/a".into()
            },
        );
        row(
            format!("manager writes during the {hold} s hold"),
            self.hold_requests
                .filter(is_manager_write)
                .total()
                .to_string(),
        );
        row(
            format!("apiserver requests during the {hold} s hold (all clients, reads included)"),
            self.hold_requests.total().to_string(),
        );
        if let (Some(run), Some(hold_window)) = (&self.run_reconciles, &self.hold_reconciles) {
            for (controller, stats) in &run.controllers {
                row(
                    format!("{controller} reconciles during the run (errors)"),
                    format!("{} ({})", stats.reconciles, stats.error_count()),
                );
            }
            for (controller, stats) in &hold_window.controllers {
                row(
                    format!("{controller} reconciles during the hold"),
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
            "\n### apiserver requests during the run, by verb and resource\n\nAll clients. The bench's own requests are the ones counted in the last column (its creates, and the LIST and WATCH of its watch on Clusters); the rest are the manager's and kube-apiserver's own (`leases`, `openapi`).\n\n| request | count | of which the bench's |\n|---|---|---|"
        );
        for (kind, count) in self.run_requests.most_frequent() {
            let bench = sent_by_the_bench(kind, n).unwrap_or_default();
            let _ = writeln!(out, "| {kind} | {count} | {bench} |");
        }
        let _ = writeln!(
            out,
            "\n### apiserver requests during the {hold} s hold, all clients\n"
        );
        if self.hold_requests.total() == 0 {
            let _ = writeln!(out, "none");
        } else {
            let _ = writeln!(
                out,
                "| request | count | a write by the manager |\n|---|---|---|"
            );
            for (kind, count) in self.hold_requests.most_frequent() {
                let manager = if is_manager_write(kind) { "yes" } else { "no" };
                let _ = writeln!(out, "| {kind} | {count} | {manager} |");
            }
        }
        if !self.hold_rss.is_empty() {
            let _ = writeln!(
                out,
                "\n### manager RSS during the hold, MiB, one sample every {every} s (each line starts at the offset of its first sample)\n\n```\n{}```",
                self.hold_rss.render_lines()
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(verb: &str, group: &str, resource: &str, subresource: &str) -> RequestKind {
        RequestKind {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
        }
    }

    #[test]
    fn the_bench_owns_its_creates_and_its_watch_only() {
        let of = |k: RequestKind| sent_by_the_bench(&k, 1000);
        assert_eq!(
            of(kind("POST", "slipway.dev", "clusters", "")).as_deref(),
            Some("1000")
        );
        assert_eq!(
            of(kind("POST", "slipway.dev", "machinepools", "")).as_deref(),
            Some("1000")
        );
        assert_eq!(
            of(kind("LIST", "slipway.dev", "clusters", "")).as_deref(),
            Some("1")
        );
        assert_eq!(
            of(kind("WATCH", "slipway.dev", "clusters", "")).as_deref(),
            Some("0 or 1")
        );
        // The manager's.
        assert_eq!(of(kind("APPLY", "slipway.dev", "clusters", "status")), None);
        assert_eq!(of(kind("LIST", "slipway.dev", "machinepools", "")), None);
        assert_eq!(of(kind("PATCH", "slipway.dev", "clusters", "")), None);
        assert_eq!(of(kind("POST", "", "secrets", "")), None);
        assert_eq!(of(kind("POST", "events.k8s.io", "events", "")), None);
    }

    #[test]
    fn manager_writes_are_slipway_objects_secrets_and_events_not_leases_or_reads() {
        assert!(is_manager_write(&kind(
            "APPLY",
            "slipway.dev",
            "clusters",
            "status"
        )));
        assert!(is_manager_write(&kind(
            "PATCH",
            "slipway.dev",
            "machinepools",
            ""
        )));
        assert!(is_manager_write(&kind("APPLY", "", "secrets", "")));
        assert!(is_manager_write(&kind(
            "POST",
            "events.k8s.io",
            "events",
            ""
        )));
        assert!(is_manager_write(&kind("POST", "", "events", "")));
        assert!(!is_manager_write(&kind(
            "PUT",
            "coordination.k8s.io",
            "leases",
            ""
        )));
        assert!(!is_manager_write(&kind(
            "LIST",
            "slipway.dev",
            "clusters",
            ""
        )));
        assert!(!is_manager_write(&kind("GET", "", "secrets", "")));
    }
}
