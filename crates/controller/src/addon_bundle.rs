//! The AddonBundle reconciler: each bundle is applied to every Cluster it selects, in `order` across bundles (a
//! bundle waits until every lower-order bundle is ready on that cluster), with readiness checks, pruning of what a
//! new revision dropped, and drift repair on every resync in `Reconcile` mode.
//!
//! Each bundle applies with its own field manager and keeps, per cluster, an inventory of what it applied with the
//! UIDs of what it created ([`slipway_addons::inventory`]): prune deletes only those. Deleting a bundle prunes what
//! it created on every cluster (finalizer `slipway.dev/addonbundle`) and deletes its inventories; a cluster that is
//! gone or being deleted takes the bundle's objects with it, so it does not hold the bundle's deletion.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::events::Event;
use sha2::{Digest, Sha256};
use slipway_addons::inventory::{self, Stored};
use slipway_addons::{ApplyOptions, Inventory, InventoryKey, PruneReport};
use slipway_api::conditions::{self, ADDONS_READY, CONTROL_PLANE_READY, reason};
use slipway_api::{AddonBundle, AddonBundleStatus, AddonClusterStatus, AddonMode, Cluster};
use tracing::{info, warn};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::outcome::Outcome;
use crate::{ADDON_BUNDLE_FINALIZER, events, finalizer};

pub const CONTROLLER: &str = "addonbundle";

/// How soon a bundle that is not ready everywhere is looked at again.
const NOT_READY_POLL: Duration = Duration::from_secs(3);
/// How soon a deleting bundle that waits for a cluster looks again.
const DELETION_POLL: Duration = Duration::from_secs(5);
/// How long a deleting bundle waits for a cluster's API in one reconcile before it says it is waiting.
const DELETION_API_WAIT: Duration = Duration::from_secs(5);
/// How many objects a status message names before it only counts the rest.
const NAMED_IN_MESSAGE: usize = 5;

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

pub async fn reconcile(bundle: Arc<AddonBundle>, ctx: Arc<Context>) -> Outcome<AddonBundleStatus> {
    let namespace = bundle.namespace().unwrap_or_default();
    let api: Api<AddonBundle> = Api::namespaced(ctx.client.clone(), &namespace);
    if bundle.metadata.deletion_timestamp.is_some() {
        return finalize(&bundle, &api, &ctx).await;
    }
    if let Err(error) = finalizer::ensure(&api, bundle.as_ref(), ADDON_BUNDLE_FINALIZER, None).await
    {
        return Outcome::of(AddonBundleStatus::default(), Vec::new(), Err(error));
    }
    // The targets come from the Cluster cache. Read before its first list, it is empty: the bundle would get an
    // empty status and wait for a change that may never come (a paused or settled Cluster does not change).
    ctx.clusters_listed().await;
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
        if conditions::find(&conditions, ADDONS_READY)
            .is_some_and(|c| c.reason == reason::NO_WORKLOAD_API)
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
                Ok(applied) => {
                    let outcome = applied;
                    status.revision = Some(outcome.revision);
                    status.ready = outcome.not_ready.is_empty();
                    let message: Vec<String> = outcome
                        .not_ready
                        .into_iter()
                        .chain(outcome.pruning)
                        .collect();
                    if !message.is_empty() {
                        status.message = Some(message.join("; "));
                    }
                }
                Err(error) => {
                    // Counted like a failed reconcile: one cluster's failure does not fail the others' pass.
                    ctx.metrics.failed(CONTROLLER, error.metric_label());
                    warn!(bundle = %bundle.name_any(), cluster = %cluster.name_any(), %error, "add-on apply failed");
                    status.message = Some(error.to_string());
                }
            }
        }
        status.message = status.message.map(conditions::truncate_message);
        entries.push(status);
    }

    let new = AddonBundleStatus { clusters: entries };
    let all_ready = new.clusters.iter().all(|c| c.ready);
    let next = if !all_ready {
        Action::requeue(NOT_READY_POLL)
    } else if bundle.spec.mode == AddonMode::Reconcile && !new.clusters.is_empty() {
        // A resync re-applies with force: what someone deleted or changed in the workload cluster comes back.
        Action::requeue(ctx.addon_resync)
    } else {
        Action::await_change()
    };
    Outcome::of(new, Vec::new(), Ok(next))
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

/// What applying a bundle to one cluster came to.
struct Applied {
    /// A digest of the rendered manifests.
    revision: String,
    /// The objects that are not ready yet, and why.
    not_ready: Vec<String>,
    /// What a prune left in place for now (or failed to delete), and why.
    pruning: Vec<String>,
}

/// Where the inventory of `bundle` on `cluster` is kept.
fn inventory_key(bundle: &AddonBundle, cluster: &Cluster) -> InventoryKey {
    InventoryKey {
        namespace: cluster.namespace().unwrap_or_default(),
        cluster: cluster.name_any(),
        cluster_uid: cluster.uid().unwrap_or_default(),
        bundle: bundle.name_any(),
    }
}

/// Applies the bundle to one cluster and prunes what it dropped; or says what failed.
async fn apply_to_cluster(
    ctx: &Context,
    bundle: &AddonBundle,
    cluster: &Cluster,
    previous: Option<&AddonClusterStatus>,
) -> Result<Applied> {
    let namespace = cluster.namespace().unwrap_or_default();
    let text =
        slipway_addons::source::resolve(&bundle.spec.source, &ctx.client, &namespace, &ctx.http)
            .await?;
    let rendered = slipway_addons::render(&text, &values(bundle, cluster))?;
    let revision = hex::encode(&Sha256::digest(rendered.as_bytes())[..6]);
    let workload = crate::workload::client(ctx, cluster)
        .await
        .map_err(|source| Error::Workload {
            cluster: cluster.name_any(),
            source,
        })?;

    let unchanged = previous.is_some_and(|p| p.revision.as_deref() == Some(&revision) && p.ready);
    if bundle.spec.mode == AddonMode::ApplyOnce && unchanged {
        return Ok(Applied {
            revision,
            not_ready: Vec::new(),
            pruning: Vec::new(),
        });
    }
    let objects = slipway_addons::parse(&rendered)?;
    slipway_addons::wait_for_api(&workload, Duration::from_secs(10)).await?;
    let field_manager = slipway_addons::field_manager(&bundle.name_any());
    let options = ApplyOptions {
        field_manager: field_manager.clone(),
        ..ApplyOptions::default()
    };
    let report = slipway_addons::apply(&workload, &objects, &options).await?;

    // The inventory lives in the management cluster, next to the Cluster: pruning must know what Slipway created
    // even when the workload cluster was changed by hand.
    let key = inventory_key(bundle, cluster);
    let stored = inventory::load(&ctx.client, &key).await?;
    let legacy = match stored {
        Some(_) => None,
        None => inventory::load_legacy(&ctx.client, &key).await?,
    };
    let old = stored.clone().or(legacy.clone());
    let applied = Inventory::after_apply(old.as_ref(), &report);
    // Stored before pruning, with what the new set dropped still in it: after a crash anywhere below, the next
    // reconcile still knows which objects Slipway created and what is left to prune.
    let pending = applied.with(old.iter().flat_map(|old| old.dropped(&applied)));
    if stored.as_ref() != Some(&pending) {
        inventory::store(&ctx.client, &key, &pending).await?;
    }
    if legacy.is_some() {
        inventory::delete_legacy(&ctx.client, &key).await?;
    }
    let mut pruning = Vec::new();
    // After a refused object, the new set may be incomplete: prune waits for an apply that went through.
    if report.failures.is_empty()
        && let Some(old) = &old
    {
        let pruned = slipway_addons::prune(&workload, old, &applied, &field_manager).await?;
        if !pruned.deleted.is_empty() {
            info!(bundle = %bundle.name_any(), cluster = %cluster.name_any(), deleted = pruned.deleted.len(), "pruned objects the bundle dropped");
        }
        pruning = prune_notes(&pruned);
        let remaining = applied.with(pruned.unfinished.iter().cloned());
        if remaining != pending {
            inventory::store(&ctx.client, &key, &remaining).await?;
        }
    }
    let refused: Vec<String> = report.failures.iter().map(|f| f.to_string()).collect();
    if !refused.is_empty() {
        return Err(Error::AddonsRefused(refused.join("; ")));
    }
    let not_ready = slipway_addons::readiness(&workload, &report.objects).await?;
    if !unchanged {
        info!(bundle = %bundle.name_any(), cluster = %cluster.name_any(), %revision, objects = report.objects.len(), "applied add-on bundle");
    }
    Ok(Applied {
        revision,
        not_ready: not_ready.iter().map(|n| n.to_string()).collect(),
        pruning,
    })
}

/// What a prune left for later, for the bundle's status: at most [`NAMED_IN_MESSAGE`] objects, then a count.
fn prune_notes(report: &PruneReport) -> Vec<String> {
    let mut notes: Vec<String> = report
        .blocked
        .iter()
        .map(|(object, reason)| format!("not pruned: {object}: {reason}"))
        .chain(
            report
                .failures
                .iter()
                .map(|failure| format!("prune failed: {failure}")),
        )
        .collect();
    if notes.len() > NAMED_IN_MESSAGE {
        let more = notes.len() - NAMED_IN_MESSAGE;
        notes.truncate(NAMED_IN_MESSAGE);
        notes.push(format!("and {more} more not pruned"));
    }
    notes
}

/// Deleting a bundle: prune what it created on each cluster it has an inventory for, delete the inventories, then
/// let the bundle go. A cluster that is gone, was re-created, or is being deleted needs no pruning (its workload
/// cluster goes too); a live cluster whose API does not answer holds the deletion, and the bundle's status and an
/// Event say so. What a prune must leave in place (a Namespace holding others' objects, a CRD still in use) is left
/// behind with a Warning Event naming it, rather than holding the deletion until someone removes those.
async fn finalize(
    bundle: &AddonBundle,
    api: &Api<AddonBundle>,
    ctx: &Context,
) -> Outcome<AddonBundleStatus> {
    if !bundle
        .finalizers()
        .iter()
        .any(|f| f == ADDON_BUNDLE_FINALIZER)
    {
        return Outcome::unchanged(Action::await_change());
    }
    let mut events = Vec::new();
    match prune_and_release(bundle, api, ctx, &mut events).await {
        Ok(None) => Outcome {
            status: None,
            events,
            next: Ok(Action::await_change()),
        },
        Ok(Some(waiting)) => Outcome::of(waiting, events, Ok(Action::requeue(DELETION_POLL))),
        Err(error) => Outcome {
            status: None,
            events,
            next: Err(error),
        },
    }
}

/// Prunes and deletes the inventories, and removes the finalizer when nothing is left; otherwise returns the status
/// that says which clusters the deletion waits for.
async fn prune_and_release(
    bundle: &AddonBundle,
    api: &Api<AddonBundle>,
    ctx: &Context,
    events: &mut Vec<Event>,
) -> Result<Option<AddonBundleStatus>> {
    let namespace = bundle.namespace().unwrap_or_default();
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let stored = inventory::list(&ctx.client, &namespace, &bundle.name_any()).await?;
    let mut waiting = Vec::new();
    for stored in stored {
        let cluster = clusters
            .get_opt(&stored.key.cluster)
            .await?
            .filter(|c| c.uid().as_deref() == Some(stored.key.cluster_uid.as_str()))
            .filter(|c| c.metadata.deletion_timestamp.is_none());
        let name = stored.key.name();
        let Some(cluster) = cluster else {
            inventory::delete(&ctx.client, &namespace, &name).await?;
            continue;
        };
        match prune_everything(ctx, bundle, &cluster, &stored).await {
            Ok(report) => {
                if !report.blocked.is_empty() {
                    let left: Vec<String> = report
                        .blocked
                        .iter()
                        .map(|(object, reason)| format!("{object}: {reason}"))
                        .collect();
                    events.push(events::warning(
                        "LeftInPlace",
                        "Delete",
                        format!(
                            "on cluster {}, left in place: {}",
                            cluster.name_any(),
                            bounded(&left)
                        ),
                    ));
                }
                if report.failures.is_empty() {
                    inventory::delete(&ctx.client, &namespace, &name).await?;
                } else {
                    let failed = report
                        .unfinished
                        .iter()
                        .filter(|e| report.failures.iter().any(|f| f.object == e.object))
                        .cloned();
                    inventory::store(&ctx.client, &stored.key, &Inventory::new(failed)).await?;
                    let failures: Vec<String> =
                        report.failures.iter().map(ToString::to_string).collect();
                    waiting.push((
                        cluster.name_any(),
                        format!("deleting: could not delete {}", bounded(&failures)),
                    ));
                }
            }
            Err(error) => waiting.push((
                cluster.name_any(),
                format!("deleting: waiting for the cluster's API to remove what this bundle created: {error}"),
            )),
        }
    }
    // Inventories under the old `<cluster>-addons-<bundle>` names carry no UIDs: nothing in them is pruned.
    for cluster in ctx
        .clusters
        .state()
        .into_iter()
        .filter(|c| c.metadata.namespace.as_deref() == Some(namespace.as_str()))
    {
        inventory::delete_legacy(&ctx.client, &inventory_key(bundle, &cluster)).await?;
    }

    if waiting.is_empty() {
        finalizer::remove(api, bundle, ADDON_BUNDLE_FINALIZER).await?;
        info!(bundle = %bundle.name_any(), "add-on bundle deleted");
        return Ok(None);
    }
    let new = AddonBundleStatus {
        clusters: waiting
            .iter()
            .map(|(cluster, message)| AddonClusterStatus {
                cluster: cluster.clone(),
                revision: entry(bundle, cluster).and_then(|e| e.revision.clone()),
                ready: false,
                message: Some(message.clone()),
                observed_generation: bundle.metadata.generation,
            })
            .collect(),
    };
    // Told once, when what the deletion waits for changes, not on every look.
    if bundle.status.as_ref() != Some(&new) {
        let notes: Vec<String> = waiting
            .iter()
            .map(|(cluster, message)| format!("{cluster}: {message}"))
            .collect();
        events.push(events::warning(
            "DeletionWaiting",
            "Delete",
            bounded(&notes),
        ));
    }
    Ok(Some(new))
}

/// Prunes everything a stored inventory holds from its cluster.
async fn prune_everything(
    ctx: &Context,
    bundle: &AddonBundle,
    cluster: &Cluster,
    stored: &Stored,
) -> Result<PruneReport> {
    let workload = crate::workload::client(ctx, cluster)
        .await
        .map_err(|source| Error::Workload {
            cluster: cluster.name_any(),
            source,
        })?;
    slipway_addons::wait_for_api(&workload, DELETION_API_WAIT).await?;
    let field_manager = slipway_addons::field_manager(&bundle.name_any());
    slipway_addons::prune(
        &workload,
        &stored.inventory,
        &Inventory::default(),
        &field_manager,
    )
    .await
    .map_err(Error::from)
}

/// `items` joined, at most [`NAMED_IN_MESSAGE`] of them, then how many more.
fn bounded(items: &[String]) -> String {
    let mut text = items
        .iter()
        .take(NAMED_IN_MESSAGE)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > NAMED_IN_MESSAGE {
        text.push_str(&format!("; and {} more", items.len() - NAMED_IN_MESSAGE));
    }
    text
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
