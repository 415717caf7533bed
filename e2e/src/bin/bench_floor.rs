//! `bench-floor`: with no manager running, sends for N sim clusters exactly the writes a provisioner cannot avoid
//! (see `slipway_e2e::floor`: 2 creates, 2 finalizer patches, 4 PKI Secrets, 2 status applies per cluster), as
//! fast as the apiserver accepts them, and says how long that took. That time is the floor `bench-scale`'s
//! all-Ready time is compared with. Prints a markdown report on stdout (progress on stderr) and, with `--json`,
//! writes the result for `bench-scale --floor-result`.
//!
//! It expects an apiserver with Slipway's CRDs and no manager; `hack/bench-floor.sh N` and `hack/bench-scale.sh N`
//! set one up. See docs/benchmarks.md.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use slipway_api::Cluster;
use slipway_bootstrap::ClusterPki;
use slipway_bootstrap::secrets::pki_secrets;
use slipway_e2e::bench_setup::{client_for, prepare_namespace, scrape_apiserver};
use slipway_e2e::floor::{
    CLUSTER_FINALIZER, FloorResult, MACHINE_POOL_FINALIZER, WRITES_PER_CLUSTER, finalizer_patch,
    ready_cluster_status, ready_pool_status, status_apply,
};
use slipway_e2e::percentile::percentile;
use slipway_e2e::process_usage;
use slipway_e2e::sim_fleet::{
    CONTROL_PLANE_REPLICAS, WORKERS_PER_POOL, cluster_names, clusters_api, pool_name, pools_api,
    sim_cluster, warm_up,
};

/// The middle of 16-64, the range in which issue 18's measurement at N = 1000 found the floor's time flat
/// (12.3-12.5 s), and the number of creates bench-scale keeps in flight. Trials of 16, 32 and 64 on a busy machine
/// with a debug client did not single one out (docs/benchmarks.md).
const DEFAULT_CONCURRENCY: usize = 32;
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(
    name = "bench-floor",
    about = "Time the writes a provisioner cannot avoid for N sim clusters, with no manager"
)]
struct Args {
    /// How many clusters (a Cluster and one MachinePool of 3 each).
    #[arg(long)]
    clusters: usize,
    /// Admin kubeconfig of an apiserver with Slipway's CRDs and no manager running.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Namespace for the clusters; it must hold no Clusters yet.
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// Clusters in flight at once; each sends its writes one after the other, so this is also the number of
    /// requests in flight.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Also write the result as JSON to this file, for `bench-scale --floor-result`.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // kube panics when two rustls providers are compiled in and none is chosen; choose before anything else.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    if args.clusters == 0 || args.concurrency == 0 {
        bail!("--clusters and --concurrency must be at least 1");
    }
    let client = client_for(&args.kubeconfig).await?;
    prepare_namespace(
        &client,
        &args.namespace,
        &ApiResource::erase::<Cluster>(&()),
    )
    .await?;
    let first_create = warm_up(&client, &args.namespace)
        .await
        .context("creating a Cluster and a MachinePool as a dry run")?;
    // One key set for every cluster: what the apiserver stores and serves is the same size as the manager's
    // Secrets (same key types, same PEM layout); generating keys is the manager's CPU, not the apiserver's.
    let pki = ClusterPki::generate("bench-floor").context("generating the PKI once")?;

    let requests_before = scrape_apiserver(&client).await?;
    let own_cpu_before = process_usage::read(std::process::id())?.cpu_seconds;
    let writes = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let progress = tokio::spawn(report_progress(args.clusters, done.clone()));
    let started = Instant::now();
    let run = Floor {
        clusters: clusters_api(&client, &args.namespace),
        pools: pools_api(&client, &args.namespace),
        secrets: Api::namespaced(client.clone(), &args.namespace),
        namespace: args.namespace.clone(),
        pki,
        writes: writes.clone(),
    };
    let durations: anyhow::Result<Vec<f64>> = futures::stream::iter(cluster_names(args.clusters))
        .map(|name| {
            let (run, done) = (&run, &done);
            async move {
                let took = run.provision(&name).await?;
                done.fetch_add(1, Ordering::Relaxed);
                anyhow::Ok(took.as_secs_f64())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    progress.abort();
    let own_cpu = process_usage::read(std::process::id())?.cpu_seconds - own_cpu_before;
    let durations = durations?;
    let requests = scrape_apiserver(&client).await?.since(&requests_before);

    let result = FloorResult {
        clusters: args.clusters,
        concurrency: args.concurrency,
        seconds,
        writes: writes.load(Ordering::Relaxed),
        apiserver_requests: requests.total(),
    };
    eprintln!(
        "floor: {} clusters' writes answered in {seconds:.1} s",
        args.clusters
    );
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&result)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }

    let n = args.clusters;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## The floor: {n} clusters (control plane {CONTROL_PLANE_REPLICAS} + one pool of {WORKERS_PER_POOL}), the {WRITES_PER_CLUSTER} writes a provisioner cannot avoid, no manager\n"
    );
    let _ = writeln!(out, "| metric | value |\n|---|---|");
    let mut row = |metric: String, value: String| {
        let _ = writeln!(out, "| {metric} | {value} |");
    };
    row(
        format!(
            "seconds until every cluster's writes were answered ({} clusters at a time)",
            args.concurrency
        ),
        format!("{seconds:.1}"),
    );
    row(
        format!("writes sent and accepted ({WRITES_PER_CLUSTER} per cluster)"),
        result.writes.to_string(),
    );
    row(
        "writes per second".into(),
        format!("{:.0}", result.writes_per_second()),
    );
    row(
        "seconds per cluster, median / p99 (its first create sent -> its last write answered)"
            .into(),
        match (percentile(&durations, 50.0), percentile(&durations, 99.0)) {
            (Some(median), Some(p99)) => format!("{median:.2} s / {p99:.2} s"),
            _ => "n/a".into(),
        },
    );
    row(
        "apiserver requests during the run (all clients)".into(),
        result.apiserver_requests.to_string(),
    );
    row(
        "apiserver requests per cluster (all clients)".into(),
        format!("{:.2}", result.requests_per_cluster()),
    );
    row(
        "bench-floor's own CPU seconds during the run (the client, on the same cores as the apiserver)".into(),
        format!("{own_cpu:.2}"),
    );
    row(
        "seconds for the apiserver's first Cluster + MachinePool create (dry run, before the clock starts)"
            .into(),
        format!("{:.1}", first_create.as_secs_f64()),
    );
    let _ = writeln!(
        out,
        "\n### the floor: apiserver requests during the run, by verb and resource (all clients)\n\n| request | count |\n|---|---|"
    );
    for (kind, count) in requests.most_frequent() {
        let _ = writeln!(out, "| {kind} | {count} |");
    }
    print!("{out}");
    Ok(())
}

/// What every cluster's writes go through.
struct Floor {
    clusters: Api<DynamicObject>,
    pools: Api<DynamicObject>,
    secrets: Api<Secret>,
    namespace: String,
    pki: ClusterPki,
    writes: Arc<AtomicU64>,
}

impl Floor {
    /// One cluster's writes, one after the other (each needs the one before it: the finalizers and the Secrets'
    /// owner references need the created objects' uids). Says how long they took.
    async fn provision(&self, name: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let pool = pool_name(name);
        let (cluster_object, pool_object) = sim_cluster(name);
        let cluster = self
            .clusters
            .create(&PostParams::default(), &cluster_object)
            .await
            .with_context(|| format!("creating Cluster {name}"))?;
        self.wrote();
        self.pools
            .create(&PostParams::default(), &pool_object)
            .await
            .with_context(|| format!("creating MachinePool {pool}"))?;
        self.wrote();

        let owner = cluster
            .controller_owner_ref(&ApiResource::erase::<Cluster>(&()))
            .context("the created Cluster has no uid")?;
        self.clusters
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Json::<()>(finalizer_patch(CLUSTER_FINALIZER, None)),
            )
            .await
            .with_context(|| format!("adding the finalizer to Cluster {name}"))?;
        self.wrote();
        // The manager's pool owner reference blocks the owner's deletion: the cluster tears its pools down first.
        let pool_owner = OwnerReference {
            block_owner_deletion: Some(true),
            ..owner.clone()
        };
        self.pools
            .patch(
                &pool,
                &PatchParams::default(),
                &Patch::Json::<()>(finalizer_patch(MACHINE_POOL_FINALIZER, Some(&pool_owner))),
            )
            .await
            .with_context(|| format!("adding the finalizer to MachinePool {pool}"))?;
        self.wrote();

        for secret in pki_secrets(name, &self.pki, Some(owner)) {
            let secret_name = secret.metadata.name.clone().unwrap_or_default();
            self.secrets
                .create(&PostParams::default(), &secret)
                .await
                .with_context(|| format!("creating Secret {secret_name}"))?;
            self.wrote();
        }

        let apply = PatchParams::apply(slipway_api::FIELD_MANAGER).force();
        self.clusters
            .patch_status(
                name,
                &apply,
                &Patch::Apply(status_apply(
                    "Cluster",
                    &ready_cluster_status(name, &self.namespace, Timestamp::now()),
                )),
            )
            .await
            .with_context(|| format!("applying the status of Cluster {name}"))?;
        self.wrote();
        self.pools
            .patch_status(
                &pool,
                &apply,
                &Patch::Apply(status_apply(
                    "MachinePool",
                    &ready_pool_status(name, &pool, &self.namespace, Timestamp::now()),
                )),
            )
            .await
            .with_context(|| format!("applying the status of MachinePool {pool}"))?;
        self.wrote();
        Ok(started.elapsed())
    }

    fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

async fn report_progress(n: usize, done: Arc<AtomicUsize>) {
    let started = Instant::now();
    let mut every = tokio::time::interval(PROGRESS_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        eprintln!(
            "[{:6.1} s] floor: {}/{n} clusters done",
            started.elapsed().as_secs_f64(),
            done.load(Ordering::Relaxed)
        );
    }
}
