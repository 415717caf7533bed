//! Runs the Cluster and MachinePool controllers until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
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
use crate::{addon_bundle, backoff, cluster, machine_pool};

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
    /// What `url` add-on sources may be fetched from (`slipway manager --allow-egress`, `--service-cidr`).
    pub egress: slipway_egress::EgressPolicy,
    /// How long one reconcile may run before it is stopped and counted as failed, so that a slow URL or BMC
    /// cannot hold a worker.
    pub reconcile_deadline: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            instance: "slipway-manager".into(),
            addon_resync: std::time::Duration::from_secs(60),
            egress: slipway_egress::EgressPolicy::default(),
            reconcile_deadline: RECONCILE_DEADLINE,
        }
    }
}

/// Runs both controllers until `shutdown` completes; in-flight reconciles finish first.
pub async fn run(
    client: Client,
    providers: ProviderRegistry,
    metrics: Arc<Metrics>,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let clusters: Api<Cluster> = Api::all(client.clone());
    let clusters_for_bundles = clusters.clone();
    let pools: Api<MachinePool> = Api::all(client.clone());
    let config = ControllerConfig::default().concurrency(settings.concurrency);

    let cluster_controller =
        Controller::new(clusters.clone(), watcher::Config::default()).with_config(config.clone());
    let pool_controller =
        Controller::new(pools.clone(), watcher::Config::default()).with_config(config.clone());
    let bundles: Api<AddonBundle> = Api::all(client.clone());
    let bundle_controller =
        Controller::new(bundles.clone(), watcher::Config::default()).with_config(config);
    // Caches that one controller reads of another's kind, with a flag for their first full list.
    let (cluster_cache, clusters_synced, clusters_task) = synced_cache(clusters.clone());
    let (bundle_cache, bundles_synced, bundles_task) = synced_cache(bundles.clone());
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
    let ctx = Arc::new(Context {
        client,
        providers,
        metrics,
        recorder,
        clusters: cluster_cache,
        pools: pool_controller.store(),
        secrets: secrets.clone(),
        bundles: bundle_cache,
        clusters_synced,
        bundles_synced,
        // Fails only when the TLS backend cannot start; reqwest::Client::new() panics the same way.
        http: slipway_addons::source::download_client(settings.egress.clone())
            .expect("building the add-on download client"),
        workload_clients: Default::default(),
        addon_resync: settings.addon_resync,
        reconcile_deadline: settings.reconcile_deadline,
        failures: Default::default(),
    });

    // Both controllers stop on the same signal.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let pool_store = ctx.pools.clone();
    let bundle_store = ctx.bundles.clone();
    let cluster_store = ctx.clusters.clone();
    let clusters_run = cluster_controller
        // A bundle's readiness changes the AddonsReady of the clusters it selects.
        .watches(
            bundles,
            watcher::Config::default(),
            move |bundle: AddonBundle| {
                cluster_store
                    .state()
                    .into_iter()
                    .filter(|c| addon_bundle::selects(&bundle, c))
                    .map(|c| ObjectRef::from_obj(c.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        // A pool's change (its readiness) changes its cluster's NodesReady.
        .watches(pools, watcher::Config::default(), |pool: MachinePool| {
            Some(
                ObjectRef::new(&pool.spec.cluster_name)
                    .within(&pool.namespace().unwrap_or_default()),
            )
        })
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(reconcile::<Cluster>, on_error::<Cluster>, ctx.clone())
        .for_each(|_| async {});
    let pools_run = pool_controller
        // A cluster's change (control plane ready, paused, deleted) changes what its pools may do.
        .watches(
            clusters,
            watcher::Config::default(),
            move |cluster: Cluster| {
                cluster::pools_in(&pool_store, &cluster)
                    .iter()
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(
            reconcile::<MachinePool>,
            on_error::<MachinePool>,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let bundles_run = bundle_controller
        // A cluster becoming ready (or changing labels) is a new target for the bundles that select it.
        .watches(
            clusters_for_bundles,
            watcher::Config::default(),
            move |cluster: Cluster| {
                bundle_store
                    .state()
                    .into_iter()
                    .filter(|b| addon_bundle::selects(b, &cluster))
                    .map(|b| ObjectRef::from_obj(b.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(stopped(stop_rx))
        .run(reconcile::<AddonBundle>, on_error::<AddonBundle>, ctx)
        .for_each(|_| async {});
    // Reconciles must not decide a Secret is missing before the cache has listed them once.
    let _ = secrets.wait_until_ready().await;
    tokio::join!(clusters_run, pools_run, bundles_run);
    secrets_task.abort();
    clusters_task.abort();
    bundles_task.abort();
}

/// A cache of every `K`, the flag that turns true once it has listed them all, and the task that keeps both.
///
/// Reconciles that read the cache wait on the flag: before its first list the cache is empty. (A controller's own
/// store is not used with `Store::wait_until_ready` for that: its ready signal wakes only the waiter polled last,
/// and the controller itself waits on it before it starts, so a second waiter can stall the controller.)
fn synced_cache<K>(
    api: Api<K>,
) -> (
    reflector::Store<K>,
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<()>,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (cache, writer) = reflector::store();
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let kind = K::kind(&()).to_string();
    let task = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(move |event| {
            match event {
                Ok(watcher::Event::InitDone) => {
                    synced_tx.send_replace(true);
                }
                Err(error) => warn!(%error, %kind, "watching for a cache"),
                Ok(_) => {}
            }
            async {}
        });
    (cache, synced, tokio::spawn(task))
}

fn key(kind: &str, obj: &impl ResourceExt) -> String {
    format!(
        "{kind}/{}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// A kind one of the manager's controllers reconciles: the controller's name (metrics, logs, backoff keys) and its
/// reconcile. [`reconcile`] and [`on_error`] wrap every controller the same way.
trait Reconciled: ResourceExt + Send + Sync + 'static {
    const CONTROLLER: &'static str;
    fn reconcile(
        obj: Arc<Self>,
        ctx: Arc<Context>,
    ) -> impl Future<Output = Result<Action, Error>> + Send;
}

impl Reconciled for Cluster {
    const CONTROLLER: &'static str = cluster::CONTROLLER;
    fn reconcile(
        obj: Arc<Self>,
        ctx: Arc<Context>,
    ) -> impl Future<Output = Result<Action, Error>> + Send {
        cluster::reconcile(obj, ctx)
    }
}

impl Reconciled for MachinePool {
    const CONTROLLER: &'static str = machine_pool::CONTROLLER;
    fn reconcile(
        obj: Arc<Self>,
        ctx: Arc<Context>,
    ) -> impl Future<Output = Result<Action, Error>> + Send {
        machine_pool::reconcile(obj, ctx)
    }
}

impl Reconciled for AddonBundle {
    const CONTROLLER: &'static str = addon_bundle::CONTROLLER;
    fn reconcile(
        obj: Arc<Self>,
        ctx: Arc<Context>,
    ) -> impl Future<Output = Result<Action, Error>> + Send {
        addon_bundle::reconcile(obj, ctx)
    }
}

/// One reconcile of `obj`: in a span naming it, within the deadline, timed for the metrics; a success resets the
/// object's error backoff.
async fn reconcile<K: Reconciled>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", controller = K::CONTROLLER, namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any());
    let started = Instant::now();
    let result = within_deadline(
        ctx.reconcile_deadline,
        K::reconcile(obj.clone(), ctx.clone()),
    )
    .instrument(span)
    .await;
    ctx.metrics.reconciled(K::CONTROLLER, started.elapsed());
    if result.is_ok() {
        backoff::reset(&ctx, &key(K::CONTROLLER, obj.as_ref()));
    }
    result
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
