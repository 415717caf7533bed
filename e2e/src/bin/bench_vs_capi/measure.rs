//! One side's run: warm the apiserver up, scrape it, create N clusters, watch until all are Ready (or the timeout
//! passes) while sampling the managers' memory, scrape again, watch a steady window, and write the result.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use backon::{ExponentialBuilder, Retryable};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use slipway_e2e::apiserver_requests::RequestCounts;
use slipway_e2e::bench_setup::{client_for, prepare_namespace, scrape_apiserver};
use slipway_e2e::process_usage::{self, ProcessUsage};

use crate::report::{ProcessResult, RequestRow, SideResult};
use crate::side::{ClusterState, MACHINES_PER_CLUSTER, Side, machine_running};

#[derive(clap::Args)]
pub struct MeasureArgs {
    #[arg(long, value_enum)]
    side: Side,
    /// How many clusters to create (each 1 control-plane machine and a pool of 3 workers).
    #[arg(long)]
    clusters: usize,
    /// Admin kubeconfig of this side's apiserver.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// One of this side's manager processes, as NAME=PID; repeat for every process. Their CPU and memory are
    /// summed.
    #[arg(long = "manager", value_parser = named_pid, required = true)]
    managers: Vec<(String, u32)>,
    /// kube-apiserver or etcd as NAME=PID; their CPU is reported on its own, not as the side's.
    #[arg(long = "control-plane", value_parser = named_pid)]
    control_plane: Vec<(String, u32)>,
    /// Namespace for the clusters; it must hold no clusters yet.
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// Length of the window after all are Ready in which the managers should write nothing.
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// Clusters being created at once.
    #[arg(long, default_value_t = 32)]
    create_concurrency: usize,
    /// Stop waiting this long after the first create; the result then says how far the side got.
    #[arg(long, default_value_t = 1800)]
    timeout_seconds: u64,
    /// Where to write the result (JSON).
    #[arg(long)]
    out: PathBuf,
}

fn named_pid(text: &str) -> Result<(String, u32), String> {
    let (name, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PID, got {text:?}"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("not a process id: {pid:?}"))?;
    Ok((name.to_string(), pid))
}

/// How often the managers' resident memory is sampled while clusters come up.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub async fn run(args: MeasureArgs) -> anyhow::Result<()> {
    if args.clusters == 0 || args.create_concurrency == 0 {
        bail!("--clusters and --create-concurrency must be at least 1");
    }
    let side = args.side;
    let client = client_for(&args.kubeconfig).await?;
    for (name, pid) in args.managers.iter().chain(&args.control_plane) {
        process_usage::read(*pid)
            .with_context(|| format!("{name} (pid {pid}) is not running or not readable"))?;
    }
    prepare_namespace(&client, &args.namespace, &side.clusters()).await?;
    let load_before = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let warm_up = warm_up(&client, side, &args.namespace).await?;

    let requests_before = scrape_apiserver(&client).await?;
    let managers_before = usage_of(&args.managers)?;
    let control_plane_before = usage_of(&args.control_plane)?;
    let sampler = Arc::new(Mutex::new(RssSampler::new(args.managers.len())));
    let sampling = tokio::spawn(sample_rss(args.managers.clone(), sampler.clone()));

    let run = bring_up(&client, &args).await;
    sampling.abort();
    let run = run?;

    let requests_after_run = scrape_apiserver(&client).await?;
    let managers_after = usage_of(&args.managers)?;
    let control_plane_after = usage_of(&args.control_plane)?;
    let sampled = sampler.lock().unwrap_or_else(|e| e.into_inner()).clone();

    let mut steady_writes = Vec::new();
    let mut steady_manager_cpu_seconds = None;
    if run.finished {
        eprintln!(
            "{}: all {} clusters Ready after {:.1} s; watching a {} s steady window",
            side.label(),
            args.clusters,
            run.elapsed.as_secs_f64(),
            args.steady_seconds
        );
        let requests_start = scrape_apiserver(&client).await?;
        let cpu_start = usage_of(&args.managers)?;
        tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
        let requests_end = scrape_apiserver(&client).await?;
        let cpu_end = usage_of(&args.managers)?;
        steady_writes = rows(&requests_end.since(&requests_start).filter(|k| k.is_write()));
        steady_manager_cpu_seconds = Some(
            cpu_end.iter().map(|u| u.cpu_seconds).sum::<f64>()
                - cpu_start.iter().map(|u| u.cpu_seconds).sum::<f64>(),
        );
    }

    let processes = |names: &[(String, u32)],
                     before: &[ProcessUsage],
                     after: &[ProcessUsage],
                     peaks: Option<&[u64]>| {
        names
            .iter()
            .enumerate()
            .map(|(i, (name, pid))| ProcessResult {
                name: name.clone(),
                pid: *pid,
                cpu_seconds: after[i].cpu_seconds - before[i].cpu_seconds,
                peak_rss_bytes: peaks.map_or(after[i].rss_bytes, |p| p[i].max(after[i].rss_bytes)),
                high_water_mark_bytes: after[i].peak_rss_bytes,
            })
            .collect::<Vec<_>>()
    };
    let result = SideResult {
        side,
        clusters: args.clusters,
        machines_checked: side.machines().is_some(),
        load_before,
        finished: run.finished,
        timeout_seconds: args.timeout_seconds,
        clusters_ready: run.server_latencies.len(),
        machines_running: run.machines_running,
        seconds: run.elapsed.as_secs_f64(),
        created_seconds: run.all_created.map(|d| d.as_secs_f64()),
        create_concurrency: args.create_concurrency,
        warm_up_seconds: warm_up.as_secs_f64(),
        latencies_seconds: run.server_latencies,
        observed_latencies_seconds: run.observed_latencies,
        managers: processes(
            &args.managers,
            &managers_before,
            &managers_after,
            Some(&sampled.peak_per_process),
        ),
        peak_rss_sum_bytes: sampled
            .peak_sum
            .max(managers_after.iter().map(|u| u.rss_bytes).sum()),
        control_plane: processes(
            &args.control_plane,
            &control_plane_before,
            &control_plane_after,
            None,
        ),
        run_requests: rows(&requests_after_run.since(&requests_before)),
        steady_seconds: args.steady_seconds,
        steady_writes,
        steady_manager_cpu_seconds,
        not_ready_states: run.not_ready_states,
    };
    let text = serde_json::to_string_pretty(&result)?;
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}

/// Sends one cluster's objects as server-side dry runs: a fresh apiserver spends seconds on the first create of a
/// custom resource (it builds the CRD's validators, CEL rules included, on first use), and the webhooks' clients
/// connect. That is a one-off, so it happens before the clock starts, and it is reported on its own.
async fn warm_up(client: &Client, side: Side, namespace: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    for (resource, object) in side.objects("bench-warm-up")? {
        Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
            .create(&dry_run, &object)
            .await
            .with_context(|| format!("creating a {} as a dry run", resource.kind))?;
    }
    Ok(started.elapsed())
}

fn rows(counts: &RequestCounts) -> Vec<RequestRow> {
    counts
        .most_frequent()
        .into_iter()
        .map(|(kind, count)| RequestRow {
            verb: kind.verb.clone(),
            resource: kind.resource_name(),
            count,
        })
        .collect()
}

fn usage_of(processes: &[(String, u32)]) -> anyhow::Result<Vec<ProcessUsage>> {
    processes
        .iter()
        .map(|(name, pid)| {
            process_usage::read(*pid).with_context(|| format!("{name} (pid {pid}) is gone"))
        })
        .collect()
}

/// The highest resident memory seen, per process and summed over the processes at the same moment.
#[derive(Clone)]
struct RssSampler {
    peak_per_process: Vec<u64>,
    peak_sum: u64,
}

impl RssSampler {
    fn new(processes: usize) -> Self {
        Self {
            peak_per_process: vec![0; processes],
            peak_sum: 0,
        }
    }
}

async fn sample_rss(processes: Vec<(String, u32)>, sampler: Arc<Mutex<RssSampler>>) {
    let mut every = tokio::time::interval(RSS_SAMPLE_EVERY);
    loop {
        every.tick().await;
        let mut sum = 0;
        let mut sampler = sampler.lock().unwrap_or_else(|e| e.into_inner());
        for (i, (_, pid)) in processes.iter().enumerate() {
            // A process that is gone ends the sampling; the run notices it and fails.
            let Ok(usage) = process_usage::read(*pid) else {
                return;
            };
            sum += usage.rss_bytes;
            sampler.peak_per_process[i] = sampler.peak_per_process[i].max(usage.rss_bytes);
        }
        sampler.peak_sum = sampler.peak_sum.max(sum);
    }
}

/// What bringing the clusters up took, or how far it got.
struct BringUp {
    finished: bool,
    /// From the first create request until the last cluster (and machine) was seen Ready; or until the timeout.
    elapsed: Duration,
    all_created: Option<Duration>,
    /// Per Ready cluster: the ready condition's lastTransitionTime minus creationTimestamp (apiserver clock).
    server_latencies: Vec<f64>,
    /// Per Ready cluster: from sending its first create to seeing it Ready (the bench's clock).
    observed_latencies: Vec<f64>,
    machines_running: usize,
    /// On a timeout: the most common states of the clusters not Ready, with counts.
    not_ready_states: Vec<(String, usize)>,
}

enum Seen {
    Cluster(Result<watcher::Event<DynamicObject>, watcher::Error>),
    Machine(Result<watcher::Event<DynamicObject>, watcher::Error>),
}

async fn bring_up(client: &Client, args: &MeasureArgs) -> anyhow::Result<BringUp> {
    let side = args.side;
    let n = args.clusters;
    let width = n.to_string().len();
    let names: Vec<String> = (0..n).map(|i| format!("bench-{i:0width$}")).collect();
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();

    // Watch before creating, so that no transition can be missed.
    let watch = |resource: &ApiResource| {
        watcher(
            Api::<DynamicObject>::namespaced_with(client.clone(), &args.namespace, resource),
            watcher::Config::default(),
        )
        .default_backoff()
    };
    let clusters = watch(&side.clusters()).map(Seen::Cluster).boxed();
    let mut events = match side.machines() {
        Some(machines) => {
            futures::stream::select(clusters, watch(&machines).map(Seen::Machine)).boxed()
        }
        None => clusters,
    };
    let machines_wanted = if side.machines().is_some() {
        n * MACHINES_PER_CLUSTER
    } else {
        0
    };
    let mut ready: HashMap<String, (Instant, f64)> = HashMap::new();
    let mut waiting: HashMap<String, String> = HashMap::new();
    let mut running: HashMap<String, bool> = HashMap::new();
    let count_running = |running: &HashMap<String, bool>| running.values().filter(|r| **r).count();

    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_seconds);
    let mut creating = tokio::spawn(create_clusters(
        client.clone(),
        side,
        args.namespace.clone(),
        names,
        args.create_concurrency,
        sent_at.clone(),
    ));
    let mut all_created = None;
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.tick().await;
    let mut timed_out = false;

    while ready.len() < n || count_running(&running) < machines_wanted {
        tokio::select! {
            event = events.next() => match event {
                Some(Seen::Cluster(Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)))) => {
                    let name = object.name_any();
                    if ready.contains_key(&name) {
                        continue;
                    }
                    match side.cluster_state(&object) {
                        ClusterState::Ready { latency_seconds } => {
                            waiting.remove(&name);
                            ready.insert(name, (Instant::now(), latency_seconds));
                        }
                        ClusterState::Waiting(state) => {
                            waiting.insert(name, state);
                        }
                    }
                }
                Some(Seen::Machine(Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)))) => {
                    running.insert(object.name_any(), machine_running(&object));
                }
                Some(Seen::Machine(Ok(watcher::Event::Delete(object)))) => {
                    running.remove(&object.name_any());
                }
                Some(Seen::Cluster(Ok(_)) | Seen::Machine(Ok(_))) => {}
                Some(Seen::Cluster(Err(error)) | Seen::Machine(Err(error))) => {
                    eprintln!("a watch failed, retrying: {error}");
                }
                None => bail!("the watches ended"),
            },
            created = &mut creating, if all_created.is_none() => {
                created.context("the create task panicked")??;
                all_created = Some(started.elapsed());
                eprintln!("{}: created {n} clusters in {:.1} s", side.label(), started.elapsed().as_secs_f64());
            }
            _ = progress.tick() => {
                for (name, pid) in &args.managers {
                    process_usage::read(*pid)
                        .with_context(|| format!("{name} (pid {pid}) exited during the run"))?;
                }
                let created = sent_at.lock().unwrap_or_else(|e| e.into_inner()).len();
                let machines = if machines_wanted > 0 {
                    format!(", {}/{machines_wanted} Machines Running", count_running(&running))
                } else {
                    String::new()
                };
                eprintln!(
                    "[{:7.1} s] {}: {created}/{n} created, {}/{n} {}{machines}",
                    started.elapsed().as_secs_f64(),
                    side.label(),
                    ready.len(),
                    side.ready_condition(),
                );
            }
            _ = tokio::time::sleep_until(deadline) => {
                creating.abort();
                timed_out = true;
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    if !timed_out && all_created.is_none() {
        // Every cluster can be Ready before the answer to the last create has been read.
        creating.await.context("the create task panicked")??;
        all_created = Some(started.elapsed());
    }
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for state in waiting.values() {
        *states.entry(state.clone()).or_default() += 1;
    }
    let never_seen = n.saturating_sub(ready.len() + waiting.len());
    if never_seen > 0 {
        states.insert("never seen (not created)".into(), never_seen);
    }
    let mut not_ready_states: Vec<(String, usize)> = states.into_iter().collect();
    not_ready_states.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    not_ready_states.truncate(10);
    if timed_out {
        eprintln!(
            "{}: only {}/{n} clusters {} and {}/{machines_wanted} machines Running after {} s; most common states:",
            side.label(),
            ready.len(),
            side.ready_condition(),
            count_running(&running),
            args.timeout_seconds
        );
        for (state, count) in &not_ready_states {
            eprintln!("  {count:6}  {state}");
        }
    }
    let sent_at = sent_at.lock().unwrap_or_else(|e| e.into_inner());
    let observed_latencies = ready
        .iter()
        .filter_map(|(name, (seen, _))| {
            Some(seen.duration_since(*sent_at.get(name)?).as_secs_f64())
        })
        .collect();
    Ok(BringUp {
        finished: !timed_out,
        elapsed,
        all_created,
        server_latencies: ready.values().map(|(_, latency)| *latency).collect(),
        observed_latencies,
        machines_running: count_running(&running),
        not_ready_states,
    })
}

/// Creates each cluster's objects in order, `concurrency` clusters at a time.
async fn create_clusters(
    client: Client,
    side: Side,
    namespace: String,
    names: Vec<String>,
    concurrency: usize,
    sent_at: Arc<Mutex<HashMap<String, Instant>>>,
) -> anyhow::Result<()> {
    futures::stream::iter(names)
        .map(|name| {
            let (client, namespace, sent_at) = (&client, &namespace, &sent_at);
            async move {
                let objects = side.objects(&name)?;
                sent_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.clone(), Instant::now());
                for (resource, object) in objects {
                    let api =
                        Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource);
                    let create = || async { api.create(&PostParams::default(), &object).await };
                    let created = create
                        .retry(create_backoff())
                        .when(is_overload)
                        .notify(|error, delay| {
                            eprintln!(
                                "{}: creating {} {} failed ({error}); again in {delay:?}",
                                side.label(),
                                resource.kind,
                                object.name_any()
                            );
                        })
                        .await;
                    match created {
                        Ok(_) => {}
                        // The namespace was empty: only an earlier try of this very create can have made it.
                        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
                        Err(error) => {
                            return Err(error).with_context(|| {
                                format!("creating {} {}", resource.kind, object.name_any())
                            });
                        }
                    }
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

/// Creates are tried again, a few times, when the apiserver (or a webhook it calls) is overloaded, as `kubectl`
/// users would: a side whose admission times out under its own load is still measured, not aborted.
fn create_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(6)
        .with_jitter()
}

/// Overload: 429, a 5xx (a webhook call that timed out is a 500), or no answer at all.
fn is_overload(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        _ => true,
    }
}
