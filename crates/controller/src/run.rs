//! Runs the Cluster and MachinePool controllers until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::NamespaceResourceScope;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::{self, reflector};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use slipway_api::{AddonBundle, Cluster, MachinePool};
use slipway_provider::ProviderError;
use tracing::{Instrument, info_span, warn};

use crate::context::{Context, ProviderRegistry};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::{addon_bundle, backoff, cluster, events, machine_pool, status};

/// How long a reconcile may run by default: well past the add-on download timeout (60 s) and a BMC task wait,
/// and short of holding a worker indefinitely.
pub const RECONCILE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// How the controllers run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Reconciles in flight per controller.
    pub concurrency: u16,
    /// Name of this manager instance in Events.
    pub instance: String,
    /// How often `Reconcile`-mode add-on bundles are re-applied to repair drift.
    pub addon_resync: std::time::Duration,
    /// How often a ready pool lists its machines again, to notice one the provider now reports failed.
    pub machine_resync: std::time::Duration,
    /// What `url` add-on sources may be fetched from (`slipway manager --allow-egress`, `--service-cidr`).
    pub egress: slipway_egress::EgressPolicy,
    /// How long one reconcile may run before it is stopped and counted as failed, so that a slow URL or BMC
    /// cannot hold a worker.
    pub reconcile_deadline: std::time::Duration,
    /// Where kubeadm machines install their node software from when their image lacks it
    /// (`slipway manager --kubernetes-package-repository`).
    pub node_packages: slipway_bootstrap::node_packages::PackageRepository,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            instance: "slipway-manager".into(),
            addon_resync: std::time::Duration::from_secs(60),
            machine_resync: std::time::Duration::from_secs(60),
            egress: slipway_egress::EgressPolicy::default(),
            reconcile_deadline: RECONCILE_DEADLINE,
            node_packages: Default::default(),
        }
    }
}

/// Room for this many trigger notices per subscriber before the shared watch waits for the slowest controller.
const TRIGGER_BUFFER: usize = 1024;

/// Runs the Cluster, MachinePool and AddonBundle controllers until `shutdown` completes; in-flight reconciles finish
/// first.
///
/// Each kind is watched once: one reflector per kind fills a store that every controller reads and tells each
/// interested controller of every change (kube's shared streams). A controller woken by another kind's change reads
/// the store that change was written to first, so it never sees the wake-up without the change.
pub async fn run(
    client: Client,
    providers: ProviderRegistry,
    metrics: Arc<Metrics>,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let clusters = SharedWatch::<Cluster>::new();
    let pools = SharedWatch::<MachinePool>::new();
    let bundles = SharedWatch::<AddonBundle>::new();
    // Every subscription is made before its watch starts, so none misses the first list.
    let clusters_for_clusters = clusters.subscribe();
    let clusters_for_pools = clusters.subscribe();
    let clusters_for_bundles = clusters.subscribe();
    let pools_for_pools = pools.subscribe();
    let pools_for_clusters = pools.subscribe();
    let bundles_for_bundles = bundles.subscribe();
    let bundles_for_clusters = bundles.subscribe();

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "slipway".into(),
            instance: Some(settings.instance.clone()),
        },
    );
    // Secrets are watched for their metadata only: existence and annotations are all reconciles need to know.
    let (secrets, secrets_writer) = reflector::store();
    let secrets_api: Api<PartialObjectMeta<Secret>> = Api::all(client.clone());
    let secrets_config =
        watcher::Config::default().labels(slipway_bootstrap::secrets::CLUSTER_NAME_LABEL);
    let secrets_watch = reflector(secrets_writer, watcher(secrets_api, secrets_config))
        .default_backoff()
        .for_each(|event| async move {
            if let Err(error) = event {
                warn!(%error, "watching cluster Secrets");
            }
        });
    let secrets_task = tokio::spawn(secrets_watch);
    // The workload clusters' Node watches wake the pools whose Nodes changed.
    let (wake_pools, pools_woken) = futures::channel::mpsc::unbounded();
    let ctx = Arc::new(Context {
        client: client.clone(),
        providers,
        metrics,
        recorder,
        clusters: clusters.store.clone(),
        pools: pools.store.clone(),
        secrets: secrets.clone(),
        bundles: bundles.store.clone(),
        clusters_synced: clusters.listed.clone(),
        bundles_synced: bundles.listed.clone(),
        // Fails only when the TLS backend cannot start; reqwest::Client::new() panics the same way.
        http: slipway_addons::source::download_client(settings.egress.clone())
            .expect("building the add-on download client"),
        workload_clients: Default::default(),
        nodes: crate::nodes::NodeWatches::new(wake_pools),
        addon_resync: settings.addon_resync,
        machine_resync: settings.machine_resync,
        reconcile_deadline: settings.reconcile_deadline,
        node_packages: settings.node_packages.clone(),
        failures: Default::default(),
        status_in_flight: Default::default(),
    });

    // All controllers stop on the same signal.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let config = ControllerConfig::default().concurrency(settings.concurrency);

    let cluster_store = ctx.clusters.clone();
    let clusters_run = Controller::for_shared_stream(clusters_for_clusters, ctx.clusters.clone())
        .with_config(config.clone())
        // A bundle's readiness changes the AddonsReady of the clusters it selects.
        .watches_shared_stream(bundles_for_clusters, move |bundle: Arc<AddonBundle>| {
            cluster_store
                .state()
                .into_iter()
                .filter(|c| addon_bundle::selects(&bundle, c))
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        })
        // A pool's change (its readiness) changes its cluster's NodesReady.
        .watches_shared_stream(pools_for_clusters, |pool: Arc<MachinePool>| {
            Some(
                ObjectRef::new(&pool.spec.cluster_name)
                    .within(&pool.namespace().unwrap_or_default()),
            )
        })
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(reconcile::<Cluster>, on_error::<Cluster>, ctx.clone())
        .for_each(|_| async {});
    let pool_store = ctx.pools.clone();
    let pools_run = Controller::for_shared_stream(pools_for_pools, ctx.pools.clone())
        .with_config(config.clone())
        // A cluster's change (control plane ready, paused, deleted) changes what its pools may do.
        .watches_shared_stream(clusters_for_pools, move |cluster: Arc<Cluster>| {
            cluster::pools_in(&pool_store, &cluster)
                .iter()
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        // A Node's change (it registered, became Ready, lost a label) is for its pool to act on.
        .reconcile_on(pools_woken)
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(
            reconcile::<MachinePool>,
            on_error::<MachinePool>,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let bundle_store = ctx.bundles.clone();
    let bundles_run = Controller::for_shared_stream(bundles_for_bundles, ctx.bundles.clone())
        .with_config(config)
        // A cluster becoming ready (or changing labels) is a new target for the bundles that select it.
        .watches_shared_stream(clusters_for_bundles, move |cluster: Arc<Cluster>| {
            bundle_store
                .state()
                .into_iter()
                .filter(|b| addon_bundle::selects(b, &cluster))
                .map(|b| ObjectRef::from_obj(b.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stopped(stop_rx))
        .run(reconcile::<AddonBundle>, on_error::<AddonBundle>, ctx)
        .for_each(|_| async {});

    let watches = [
        clusters.start(Api::all(client.clone())),
        pools.start(Api::all(client.clone())),
        bundles.start(Api::all(client)),
    ];
    // Reconciles must not decide a Secret is missing before the cache has listed them once.
    let _ = secrets.wait_until_ready().await;
    tokio::join!(clusters_run, pools_run, bundles_run);
    secrets_task.abort();
    for watch in watches {
        watch.abort();
    }
}

/// One watch of every `K`: the store all controllers read, subscriptions that tell each controller of every
/// change, and a flag that turns true once the store has listed every object.
///
/// Reconciles that read another kind's store wait on the flag: before its first list the store is empty. (The
/// store's own `wait_until_ready` is not used for that: its ready signal wakes only the waiter polled last, and the
/// controller that owns the store waits on it before it starts, so a second waiter can stall that controller.)
struct SharedWatch<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store: reflector::Store<K>,
    writer: reflector::store::Writer<K>,
    listed: tokio::sync::watch::Receiver<bool>,
    listed_tx: tokio::sync::watch::Sender<bool>,
}

impl<K> SharedWatch<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    fn new() -> Self {
        let (store, writer) = reflector::store_shared(TRIGGER_BUFFER);
        let (listed_tx, listed) = tokio::sync::watch::channel(false);
        Self {
            store,
            writer,
            listed,
            listed_tx,
        }
    }

    /// A stream of every object the watch applies to the store, after it is there.
    fn subscribe(&self) -> reflector::ReflectHandle<K> {
        self.writer
            .subscribe()
            .expect("a store made by store_shared can be subscribed to")
    }

    /// Starts the watch; it relists after an expired watch or a lost connection (with backoff) until aborted.
    fn start(self, api: Api<K>) -> tokio::task::JoinHandle<()> {
        let kind = K::kind(&()).to_string();
        let listed_tx = self.listed_tx;
        let watch = reflector(self.writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .for_each(move |event| {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        listed_tx.send_replace(true);
                    }
                    Err(error) => warn!(%error, %kind, "watching"),
                    Ok(_) => {}
                }
                async {}
            });
        tokio::spawn(watch)
    }
}

fn key(kind: &str, obj: &impl ResourceExt) -> String {
    format!(
        "{kind}/{}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// A kind one of the manager's controllers reconciles: the controller's name (metrics, logs, backoff keys), its
/// status, and its reconcile. [`reconcile`] and [`on_error`] wrap every controller the same way.
trait Reconciled:
    kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const CONTROLLER: &'static str;
    type Status: serde::Serialize + serde::de::DeserializeOwned + PartialEq + Send + Sync;
    fn status(&self) -> Option<&Self::Status>;
    fn set_status(&mut self, status: Self::Status);
    fn reconcile(
        obj: Arc<Self>,
        ctx: Arc<Context>,
    ) -> impl Future<Output = Outcome<Self::Status>> + Send;
}

/// `impl Reconciled` for a kind whose status is `status: Option<$status>` and whose reconcile is `$module::reconcile`.
macro_rules! reconciled {
    ($kind:ty, $status:ty, $module:ident) => {
        impl Reconciled for $kind {
            const CONTROLLER: &'static str = $module::CONTROLLER;
            type Status = $status;
            fn status(&self) -> Option<&Self::Status> {
                self.status.as_ref()
            }
            fn set_status(&mut self, status: Self::Status) {
                self.status = Some(status);
            }
            fn reconcile(
                obj: Arc<Self>,
                ctx: Arc<Context>,
            ) -> impl Future<Output = Outcome<Self::Status>> + Send {
                $module::reconcile(obj, ctx)
            }
        }
    };
}

reconciled!(Cluster, slipway_api::ClusterStatus, cluster);
reconciled!(MachinePool, slipway_api::MachinePoolStatus, machine_pool);
reconciled!(AddonBundle, slipway_api::AddonBundleStatus, addon_bundle);

/// One reconcile of `obj`: in a span naming it, within the deadline, timed for the metrics; a success resets the
/// object's error backoff.
async fn reconcile<K: Reconciled>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", controller = K::CONTROLLER, namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any());
    let started = Instant::now();
    let result = within_deadline(
        ctx.reconcile_deadline,
        reconcile_and_record(obj.clone(), ctx.clone()),
    )
    .instrument(span)
    .await;
    ctx.metrics.reconciled(K::CONTROLLER, started.elapsed());
    if result.is_ok() {
        backoff::reset(&ctx, &key(K::CONTROLLER, obj.as_ref()));
    }
    result
}

/// Runs the reconcile, writes the status it computed (once, and only when it changed), then publishes its Events.
async fn reconcile_and_record<K: Reconciled>(
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let key = key(K::CONTROLLER, obj.as_ref());
    // Woken before the cache shows this manager's last status write: start from what was written.
    let obj = match ctx
        .status_in_flight
        .newer::<K::Status>(&key, obj.resource_version().as_deref())
    {
        Some(written) => {
            let mut newer = K::clone(&obj);
            newer.set_status(written);
            Arc::new(newer)
        }
        None => obj,
    };
    let outcome = K::reconcile(obj.clone(), ctx.clone()).await;
    if let Some(new) = &outcome.status {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
        match status::apply_if_changed(&api, &obj.name_any(), obj.status(), new).await {
            Ok(Some(written)) => ctx.status_in_flight.record(key, &written, new),
            Ok(None) => {}
            // The pass's own failure says more than the failed write of it.
            Err(error) => return outcome.next.and(Err(error)),
        }
    }
    events::publish(&ctx, obj.as_ref(), outcome.events).await;
    outcome.next
}

/// Runs `reconcile`, or stops it at `deadline` with [`Error::Deadline`] (dropping it mid-step is safe: every step
/// is idempotent and the next attempt starts over).
async fn within_deadline(
    deadline: std::time::Duration,
    reconcile: impl Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    tokio::time::timeout(deadline, reconcile)
        .await
        .unwrap_or(Err(Error::Deadline {
            seconds: deadline.as_secs(),
        }))
}

/// What a failed reconcile of `obj` comes to: counted, logged, and retried after the object's backoff.
fn on_error<K: Reconciled>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    error_policy(K::CONTROLLER, obj.as_ref(), error, &ctx)
}

fn error_policy(
    controller: &'static str,
    obj: &impl ResourceExt,
    error: &Error,
    ctx: &Context,
) -> Action {
    ctx.metrics.failed(controller, error.metric_label());
    // Short of capacity is a wait, not a fault: a steady slow look again instead of a growing backoff that would
    // notice a freed host only minutes later.
    let capacity = matches!(
        error,
        Error::Provider {
            source: ProviderError::Capacity { .. },
            ..
        }
    );
    let delay = if capacity {
        backoff::capacity_retry()
    } else if matches!(error, Error::UnknownProvider { .. }) {
        // A person must act (start the manager with the provider, or change the cluster): look again slowly.
        backoff::SLOW_RETRY
    } else if error.is_apiserver_unreachable() {
        backoff::next_delay(ctx, &key(controller, obj)).min(backoff::UNREACHABLE_CAP)
    } else {
        backoff::next_delay(ctx, &key(controller, obj))
    };
    warn!(controller, namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_reconcile_past_its_deadline_is_stopped_as_an_error() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Action::await_change())
        };
        let started = std::time::Instant::now();
        let result = within_deadline(Duration::from_millis(200), slow).await;
        assert!(
            matches!(result, Err(Error::Deadline { seconds: 0 })),
            "{result:?}"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(10),
            "{took:?}"
        );
        assert_eq!(result.unwrap_err().metric_label(), "deadline");

        let quick = async { Ok(Action::requeue(Duration::from_secs(1))) };
        assert!(
            within_deadline(Duration::from_secs(300), quick)
                .await
                .is_ok()
        );
    }
}
