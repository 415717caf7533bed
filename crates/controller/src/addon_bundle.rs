//! The AddonBundle reconciler: each bundle is applied to every Cluster it selects, in `order` across bundles (a
//! bundle waits until every lower-order bundle is ready on that cluster), with readiness checks, pruning of what a
//! new revision dropped, and drift repair on every resync in `Reconcile` mode.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use sha2::{Digest, Sha256};
use slipway_addons::{ApplyOptions, Inventory};
use slipway_api::conditions::{self, ADDONS_READY, CONTROL_PLANE_READY};
use slipway_api::{AddonBundle, AddonBundleStatus, AddonClusterStatus, AddonMode, Cluster};
use tracing::{info, warn};

use crate::context::Context;
use crate::error::Result;

pub const CONTROLLER: &str = "addonbundle";

/// The reason the cluster reconciler gives clusters without a workload API; no bundle applies to them.
pub const NO_WORKLOAD_API: &str = "NoWorkloadApi";

/// How soon a bundle that is not ready everywhere is looked at again.
const NOT_READY_POLL: Duration = Duration::from_secs(3);

/// Whether `bundle` selects `cluster`: same namespace and matching labels.
pub fn selects(bundle: &AddonBundle, cluster: &Cluster) -> bool {
    // Compared in place: this runs for every cluster of the cache on each bundle event.
    bundle.metadata.namespace == cluster.metadata.namespace
        && Selector::try_from(bundle.spec.cluster_selector.clone())
            .is_ok_and(|s| s.matches(cluster.labels()))
}

fn entry<'a>(bundle: &'a AddonBundle, cluster: &str) -> Option<&'a AddonClusterStatus> {
    bundle
        .status
        .as_ref()?
        .clusters
        .iter()
        .find(|c| c.cluster == cluster)
}

/// Whether `bundle` is applied and ready on `cluster` at its current generation.
pub fn ready_on(bundle: &AddonBundle, cluster: &str) -> bool {
    entry(bundle, cluster)
        .is_some_and(|e| e.ready && e.observed_generation == bundle.metadata.generation)
}

pub async fn reconcile(bundle: Arc<AddonBundle>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = bundle.namespace().unwrap_or_default();
    let api: Api<AddonBundle> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut clusters: Vec<Arc<Cluster>> = ctx
        .clusters
        .state()
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none() && selects(&bundle, c))
        .collect();
    clusters.sort_by_key(|c| c.name_any());

    let mut entries = Vec::new();
    for cluster in &clusters {
        let conditions = cluster
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        if conditions::find(&conditions, ADDONS_READY).is_some_and(|c| c.reason == NO_WORKLOAD_API)
        {
            continue;
        }
        let previous = entry(&bundle, &cluster.name_any()).cloned();
        let mut status = AddonClusterStatus {
            cluster: cluster.name_any(),
            revision: previous.as_ref().and_then(|p| p.revision.clone()),
            ready: false,
            message: None,
            observed_generation: bundle.metadata.generation,
        };
        if !conditions::is_true(&conditions, CONTROL_PLANE_READY) {
            status.message = Some("waiting for the cluster's control plane".into());
        } else if let Some(blocker) = earlier_bundle_not_ready(&ctx, &bundle, cluster) {
            status.message = Some(format!("waiting for bundle {blocker} to be ready first"));
        } else {
            match apply_to_cluster(&ctx, &bundle, cluster, previous.as_ref()).await {
                Ok((revision, not_ready)) => {
                    status.revision = Some(revision);
                    status.ready = not_ready.is_empty();
                    if !not_ready.is_empty() {
                        status.message = Some(not_ready.join("; "));
                    }
                }
                Err(message) => {
                    warn!(bundle = %bundle.name_any(), cluster = %cluster.name_any(), %message, "add-on apply failed");
                    status.message = Some(message);
                }
            }
        }
        status.message = status.message.map(conditions::truncate_message);
        entries.push(status);
    }

    let new = AddonBundleStatus { clusters: entries };
    let all_ready = new.clusters.iter().all(|c| c.ready);
    crate::status::apply_if_changed(&api, &bundle.name_any(), bundle.status.as_ref(), &new).await?;
    Ok(if !all_ready {
        Action::requeue(NOT_READY_POLL)
    } else if bundle.spec.mode == AddonMode::Reconcile && !new.clusters.is_empty() {
        // A resync re-applies with force: what someone deleted or changed in the workload cluster comes back.
        Action::requeue(ctx.addon_resync)
    } else {
        Action::await_change()
    })
}

/// The first bundle with a lower `order` that selects the cluster and is not ready on it.
fn earlier_bundle_not_ready(
    ctx: &Context,
    bundle: &AddonBundle,
    cluster: &Cluster,
) -> Option<String> {
    ctx.bundles
        .state()
        .into_iter()
        .filter(|other| other.spec.order < bundle.spec.order && selects(other, cluster))
        .find(|other| !ready_on(other, &cluster.name_any()))
        .map(|other| format!("{} (order {})", other.name_any(), other.spec.order))
}

/// Applies the bundle to one cluster; returns its revision and what is not ready, or a message saying what failed.
async fn apply_to_cluster(
    ctx: &Context,
    bundle: &AddonBundle,
    cluster: &Cluster,
    previous: Option<&AddonClusterStatus>,
) -> Result<(String, Vec<String>), String> {
    let namespace = cluster.namespace().unwrap_or_default();
    let text =
        slipway_addons::source::resolve(&bundle.spec.source, &ctx.client, &namespace, &ctx.http)
            .await
            .map_err(|e| e.to_string())?;
    let rendered =
        slipway_addons::render(&text, &values(bundle, cluster)).map_err(|e| e.to_string())?;
    let revision = hex::encode(&Sha256::digest(rendered.as_bytes())[..6]);
    let workload = crate::workload::client(ctx, cluster)
        .await
        .map_err(|e| e.to_string())?;

    let unchanged = previous.is_some_and(|p| p.revision.as_deref() == Some(&revision) && p.ready);
    if bundle.spec.mode == AddonMode::ApplyOnce && unchanged {
        return Ok((revision, Vec::new()));
    }
    let objects = slipway_addons::parse(&rendered).map_err(|e| e.to_string())?;
    slipway_addons::wait_for_api(&workload, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    let report = slipway_addons::apply(&workload, &objects, &ApplyOptions::default())
        .await
        .map_err(|e| e.to_string())?;

    // The inventory lives in the management cluster, next to the Cluster: pruning must know what Slipway applied
    // even when the workload cluster was changed by hand.
    let inventory_name = format!("{}-addons-{}", cluster.name_any(), bundle.name_any());
    let old = slipway_addons::inventory::load(&ctx.client, &namespace, &inventory_name)
        .await
        .map_err(|e| e.to_string())?;
    let new = Inventory::new(report.objects.clone());
    if let Some(old) = old.filter(|_| report.failures.is_empty()) {
        let pruned = slipway_addons::prune(&workload, &old, &report.objects)
            .await
            .map_err(|e| e.to_string())?;
        if !pruned.deleted.is_empty() {
            info!(bundle = %bundle.name_any(), cluster = %cluster.name_any(), deleted = pruned.deleted.len(), "pruned objects the bundle dropped");
        }
    }
    slipway_addons::inventory::store(&ctx.client, &namespace, &inventory_name, &new)
        .await
        .map_err(|e| e.to_string())?;
    let refused: Vec<String> = report.failures.iter().map(|f| f.to_string()).collect();
    if !refused.is_empty() {
        return Err(format!("refused: {}", refused.join("; ")));
    }
    let not_ready = slipway_addons::readiness(&workload, &report.objects)
        .await
        .map_err(|e| e.to_string())?;
    if !unchanged {
        info!(bundle = %bundle.name_any(), cluster = %cluster.name_any(), %revision, objects = report.objects.len(), "applied add-on bundle");
    }
    Ok((revision, not_ready.iter().map(|n| n.to_string()).collect()))
}

/// The bundle's own values, plus what Slipway knows of the cluster.
fn values(bundle: &AddonBundle, cluster: &Cluster) -> BTreeMap<String, String> {
    let network = &cluster.spec.kubernetes.network;
    let mut values = BTreeMap::from([
        ("CLUSTER_NAME".to_string(), cluster.name_any()),
        ("DNS_DOMAIN".to_string(), network.dns_domain.clone()),
        ("POD_CIDR".to_string(), network.pod_cidr.clone()),
        ("SERVICE_CIDR".to_string(), network.service_cidr.clone()),
    ]);
    values.extend(bundle.spec.values.clone());
    values
}
