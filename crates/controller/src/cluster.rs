//! The Cluster reconciler: infrastructure, control plane, nodes, add-ons, Ready; and deletion in reverse.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use slipway_api::conditions::{
    self, ADDONS_READY, CONTROL_PLANE_READY, INFRASTRUCTURE_READY, NODES_READY, READY,
};
use slipway_api::{
    AddonBundle, ApiEndpoint, Cluster, ClusterPhase, ClusterStatus, MachinePool, SecretRef,
};
use slipway_bootstrap::secrets::Purpose;
use slipway_provider::{ClusterInfo, Deletion, InfrastructureProvider, MachineRole};
use tracing::{info, warn};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::machines::{self, Boot, GroupSpec, call};
use crate::status::{apply_if_changed, condition, set_all};
use crate::{CLUSTER_FINALIZER, PAUSED_ANNOTATION, finalizer};
use crate::{addon_bundle, cluster_secrets, cost};

pub const CONTROLLER: &str = "cluster";

/// How often a cluster that is not Ready yet is looked at again (machines come up without telling us).
const POLL: Duration = Duration::from_secs(2);
/// How long to wait before retrying a step that needs a person to act (unknown provider, bad settings).
const SLOW_RETRY: Duration = Duration::from_secs(300);

pub async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action> {
    let api: Api<Cluster> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    if is_paused(&cluster) {
        return Ok(Action::await_change());
    }
    if cluster.metadata.deletion_timestamp.is_some() {
        return finalize(&cluster, &api, &ctx).await;
    }
    // Carry on in the same reconcile: the status writes below do not depend on the metadata just patched.
    finalizer::ensure(&api, cluster.as_ref(), CLUSTER_FINALIZER, None).await?;
    // AddonsReady reads the AddonBundle cache: before its first list it is empty, and "no bundle selects this
    // cluster" would be written for a cluster whose bundles are not applied.
    ctx.bundles_listed().await;
    let expires_at = expiry(&cluster);
    if let Some(at) = expires_at
        && at <= Timestamp::now()
    {
        info!(cluster = %cluster.name_any(), "TTL expired, deleting the cluster");
        publish(
            &ctx,
            cluster.as_ref(),
            EventType::Normal,
            "Expired",
            "Delete",
            format!(
                "TTL {} expired",
                cluster.spec.ttl.clone().unwrap_or_default()
            ),
        )
        .await;
        api.delete(&cluster.name_any(), &DeleteParams::background())
            .await?;
        return Ok(Action::await_change());
    }

    let generation = cluster.metadata.generation;
    let old = cluster.status.as_ref();
    let mut status = old.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.expires_at = expires_at.map(Time);
    let provider_name = cluster
        .spec
        .infrastructure
        .provider_name()
        .unwrap_or_default();
    status.provider = Some(provider_name.to_string());

    let provider = match ctx.providers.get(provider_name) {
        Ok(provider) => provider.clone(),
        Err(error) => {
            let message = format!(
                "{error}; this manager runs the providers {:?}",
                ctx.providers.names()
            );
            set_all(
                &mut status.conditions,
                [
                    condition(
                        INFRASTRUCTURE_READY,
                        false,
                        "ProviderNotRegistered",
                        &message,
                        generation,
                    ),
                    condition(READY, false, "ProviderNotRegistered", &message, generation),
                ],
            );
            status.phase = Some(ClusterPhase::Failed);
            apply_if_changed(&api, &cluster.name_any(), old, &status).await?;
            return Ok(Action::requeue(SLOW_RETRY));
        }
    };
    let info = cluster_info(&cluster);
    let pools = current_pools(&cluster, &ctx).await?;
    // The estimate goes into every status written below, the failing steps' too.
    status.cost = cost::estimate(
        |instance_type| provider.price_per_hour(instance_type),
        &cost::groups(&cluster, &pools),
    );

    // 1. Infrastructure.
    let infrastructure = match call(
        &ctx,
        provider.as_ref(),
        "reconcile_cluster",
        provider.reconcile_cluster(&info).await,
    ) {
        Ok(infrastructure) => infrastructure,
        Err(source) => {
            set_all(
                &mut status.conditions,
                [
                    condition(
                        INFRASTRUCTURE_READY,
                        false,
                        source.reason(),
                        source.to_string(),
                        generation,
                    ),
                    condition(
                        READY,
                        false,
                        source.reason(),
                        source.to_string(),
                        generation,
                    ),
                ],
            );
            status.phase = Some(if source.is_retryable() {
                ClusterPhase::Provisioning
            } else {
                ClusterPhase::Failed
            });
            apply_if_changed(&api, &cluster.name_any(), old, &status).await?;
            return Err(Error::Provider {
                provider: provider_name.to_string(),
                source,
            });
        }
    };
    status.control_plane_endpoint =
        infrastructure
            .endpoint
            .as_ref()
            .map(|(host, port)| ApiEndpoint {
                host: host.clone(),
                port: i32::from(*port),
            });
    let reason = if infrastructure.ready {
        "Provisioned"
    } else {
        "Provisioning"
    };
    conditions::set(
        &mut status.conditions,
        condition(
            INFRASTRUCTURE_READY,
            infrastructure.ready,
            reason,
            infrastructure.message.clone(),
            generation,
        ),
    );

    // 2. The cluster's CAs and service-account key, before any machine needs them.
    if infrastructure.ready {
        cluster_secrets::ensure_pki(&ctx, &cluster).await?;
    }

    // 3. Control plane machines.
    let control_plane_ready = if infrastructure.ready {
        match reconcile_control_plane(
            &cluster,
            &ctx,
            provider.as_ref(),
            &info,
            &infrastructure.endpoint,
            &mut status,
        )
        .await
        {
            Ok(ready) => ready,
            Err(error) => {
                if let Error::Provider { source, .. } = &error {
                    set_all(
                        &mut status.conditions,
                        [
                            condition(
                                CONTROL_PLANE_READY,
                                false,
                                source.reason(),
                                source.to_string(),
                                generation,
                            ),
                            condition(
                                READY,
                                false,
                                source.reason(),
                                source.to_string(),
                                generation,
                            ),
                        ],
                    );
                    apply_if_changed(&api, &cluster.name_any(), old, &status).await?;
                }
                return Err(error);
            }
        }
    } else {
        conditions::set(
            &mut status.conditions,
            condition(
                CONTROL_PLANE_READY,
                false,
                "WaitingForInfrastructure",
                "infrastructure is not ready yet",
                generation,
            ),
        );
        false
    };

    // 4. The admin kubeconfig, once there is a control plane to talk to.
    if control_plane_ready && let Some((host, port)) = &infrastructure.endpoint {
        cluster_secrets::ensure_kubeconfig(
            &ctx,
            &cluster,
            &crate::workload::server_url(host, port),
        )
        .await?;
        status.kubeconfig_secret_ref = Some(SecretRef {
            name: Purpose::Kubeconfig.secret_name(&cluster.name_any()),
        });
    }

    // 5. Worker nodes, as their pools report them.
    let nodes_ready = reconcile_nodes_condition(&cluster, &pools, &mut status);

    // 6. Add-ons.
    let addons_ready =
        reconcile_addons_condition(&cluster, &ctx, infrastructure.workload_api, &mut status);

    // 7. Ready.
    let ready = infrastructure.ready && control_plane_ready && nodes_ready && addons_ready;
    let waiting_for: Vec<&str> = [
        (infrastructure.ready, INFRASTRUCTURE_READY),
        (control_plane_ready, CONTROL_PLANE_READY),
        (nodes_ready, NODES_READY),
        (addons_ready, ADDONS_READY),
    ]
    .into_iter()
    .filter_map(|(ok, name)| (!ok).then_some(name))
    .collect();
    let message = if ready {
        "the cluster is ready".to_string()
    } else {
        format!("waiting for {}", waiting_for.join(", "))
    };
    let was_ready = old.is_some_and(|s| conditions::is_true(&s.conditions, READY));
    conditions::set(
        &mut status.conditions,
        condition(
            READY,
            ready,
            if ready { "Ready" } else { "Provisioning" },
            message,
            generation,
        ),
    );
    status.phase = Some(if ready {
        ClusterPhase::Provisioned
    } else {
        ClusterPhase::Provisioning
    });

    apply_if_changed(&api, &cluster.name_any(), old, &status).await?;
    if ready && !was_ready {
        info!(cluster = %cluster.name_any(), "cluster is ready");
        publish(
            &ctx,
            cluster.as_ref(),
            EventType::Normal,
            "Ready",
            "Provision",
            "every condition is True".into(),
        )
        .await;
    }

    let mut next = if ready { None } else { Some(POLL) };
    if let Some(at) = expires_at {
        let until = Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default();
        next = Some(next.map_or(until, |n| n.min(until)));
    }
    Ok(next.map_or_else(Action::await_change, Action::requeue))
}

async fn reconcile_control_plane(
    cluster: &Cluster,
    ctx: &Context,
    provider: &dyn InfrastructureProvider,
    info: &ClusterInfo,
    endpoint: &Option<(String, u16)>,
    status: &mut ClusterStatus,
) -> Result<bool> {
    let replicas = usize::try_from(cluster.spec.control_plane.replicas).unwrap_or(0);
    let spec = GroupSpec {
        role: MachineRole::ControlPlane,
        prefix: format!("{}-control-plane", cluster.name_any()),
        replicas,
        settings: cluster.spec.control_plane.machine.clone(),
        kubernetes_version: cluster.spec.kubernetes.version.clone(),
        // One at a time, and never below quorum: a new member joins before an old one leaves.
        max_surge: 1,
        max_unavailable: 0,
    };
    let boot = Boot::ControlPlane {
        cluster,
        endpoint: endpoint.clone(),
    };
    let group = machines::converge(ctx, provider, info, &spec, boot).await?;
    report_machine_changes(
        ctx,
        cluster,
        "control-plane",
        &group.created,
        &group.deleted,
    )
    .await;
    let ready = group.converged(replicas);
    let (reason, message) = if ready {
        (
            "Ready",
            format!("{replicas} of {replicas} control-plane machines ready"),
        )
    } else if group.updated < replicas && group.machines.len() >= replicas {
        (
            "RollingOut",
            format!(
                "{} of {replicas} control-plane machines up to date",
                group.updated
            ),
        )
    } else {
        (
            "WaitingForMachines",
            format!("{} of {replicas} control-plane machines ready", group.ready),
        )
    };
    conditions::set(
        &mut status.conditions,
        condition(
            CONTROL_PLANE_READY,
            ready,
            reason,
            message,
            cluster.metadata.generation,
        ),
    );
    Ok(ready)
}

/// The cluster's pools: from the cache when it holds some and all are ready, otherwise from the apiserver, because
/// the cache this reconcile reads may lag the watch event that woke it (a pool just scaled, just became ready, or
/// just created with the cluster: without the LIST a cluster would count as having no pools, and be Ready).
async fn current_pools(cluster: &Cluster, ctx: &Context) -> Result<Vec<Arc<MachinePool>>> {
    let pools = pools_in(&ctx.pools, cluster);
    if !pools.is_empty() && pools.iter().all(|pool| pool_is_ready(pool)) {
        return Ok(pools);
    }
    let api: Api<MachinePool> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let selector = format!("spec.clusterName={}", cluster.name_any());
    Ok(api
        .list(&ListParams::default().fields(&selector))
        .await?
        .items
        .into_iter()
        .map(Arc::new)
        .collect())
}

fn reconcile_nodes_condition(
    cluster: &Cluster,
    pools: &[Arc<MachinePool>],
    status: &mut ClusterStatus,
) -> bool {
    let generation = cluster.metadata.generation;
    if pools.is_empty() {
        conditions::set(
            &mut status.conditions,
            condition(
                NODES_READY,
                true,
                "NoMachinePools",
                "the cluster has no MachinePools",
                generation,
            ),
        );
        return true;
    }
    let not_ready: Vec<String> = pools
        .iter()
        .filter(|pool| !pool_is_ready(pool))
        .map(|pool| {
            let s = pool.status.clone().unwrap_or_default();
            format!(
                "{} ({}/{})",
                pool.name_any(),
                s.ready_replicas,
                pool.spec.replicas
            )
        })
        .collect();
    let ready = not_ready.is_empty();
    let message = if ready {
        format!("{} MachinePools ready", pools.len())
    } else {
        format!(
            "MachinePools not ready: {}",
            conditions::join_truncated(&not_ready, ", ")
        )
    };
    conditions::set(
        &mut status.conditions,
        condition(
            NODES_READY,
            ready,
            if ready { "Ready" } else { "WaitingForNodes" },
            message,
            generation,
        ),
    );
    ready
}

/// Add-ons: none on clusters without a workload API; otherwise every AddonBundle that selects the cluster must be
/// ready on it (the AddonBundle controller reports that in the bundle's status).
fn reconcile_addons_condition(
    cluster: &Cluster,
    ctx: &Context,
    workload_api: bool,
    status: &mut ClusterStatus,
) -> bool {
    let generation = cluster.metadata.generation;
    let (ready, reason, message) = if !workload_api {
        let provider = cluster
            .spec
            .infrastructure
            .provider_name()
            .unwrap_or_default();
        (
            true,
            addon_bundle::NO_WORKLOAD_API,
            format!("{provider} clusters have no workload API, so no add-ons are installed"),
        )
    } else {
        let mut selected: Vec<Arc<AddonBundle>> = ctx
            .bundles
            .state()
            .into_iter()
            .filter(|b| addon_bundle::selects(b, cluster))
            .collect();
        selected.sort_by_key(|b| (b.spec.order, b.name_any()));
        let name = cluster.name_any();
        let waiting: Vec<String> = selected
            .iter()
            .filter(|b| !addon_bundle::ready_on(b, &name))
            .map(|b| b.name_any())
            .collect();
        if selected.is_empty() {
            (
                true,
                "NoAddonBundles",
                "no AddonBundle selects this cluster".to_string(),
            )
        } else if waiting.is_empty() {
            (
                true,
                "Ready",
                format!("{} add-on bundles ready", selected.len()),
            )
        } else {
            (
                false,
                "WaitingForAddons",
                format!(
                    "add-on bundles not ready: {}",
                    conditions::join_truncated(&waiting, ", ")
                ),
            )
        }
    };
    conditions::set(
        &mut status.conditions,
        condition(ADDONS_READY, ready, reason, message, generation),
    );
    ready
}

fn pool_is_ready(pool: &MachinePool) -> bool {
    pool.status.as_ref().is_some_and(|s| {
        s.observed_generation == pool.metadata.generation
            && conditions::is_true(&s.conditions, READY)
    })
}

/// The pools of `cluster` in `store` (the MachinePool controller's cache). A scan of every pool, so it compares in place rather than through
/// `ResourceExt::namespace`, which would allocate a String per pool: at 1000 clusters that allocation was the
/// manager's largest single cost.
pub fn pools_in(store: &Store<MachinePool>, cluster: &Cluster) -> Vec<Arc<MachinePool>> {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    store
        .state()
        .into_iter()
        .filter(|p| {
            p.spec.cluster_name == name && p.metadata.namespace == cluster.metadata.namespace
        })
        .collect()
}

/// Deletion in reverse order: MachinePools, control plane, infrastructure; then the finalizer.
async fn finalize(cluster: &Cluster, api: &Api<Cluster>, ctx: &Context) -> Result<Action> {
    if !cluster.finalizers().iter().any(|f| f == CLUSTER_FINALIZER) {
        return Ok(Action::await_change());
    }
    let generation = cluster.metadata.generation;
    let old = cluster.status.as_ref();
    let mut status = old.cloned().unwrap_or_default();
    status.phase = Some(ClusterPhase::Deleting);
    let waiting = |status: &mut ClusterStatus, message: String| {
        conditions::set(
            &mut status.conditions,
            condition(READY, false, "Deleting", message, generation),
        );
    };

    // 1. MachinePools: their own finalizers delete their machines.
    let namespace = cluster.namespace().unwrap_or_default();
    let pools: Api<MachinePool> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("spec.clusterName={}", cluster.name_any());
    let remaining = pools
        .list(&ListParams::default().fields(&selector))
        .await?
        .items;
    if !remaining.is_empty() {
        for pool in remaining
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            match pools
                .delete(&pool.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let pools: Vec<String> = remaining.iter().map(pool_deletion_progress).collect();
        waiting(
            &mut status,
            format!(
                "deleting MachinePools: {}",
                conditions::join_truncated(&pools, "; ")
            ),
        );
        apply_if_changed(api, &cluster.name_any(), old, &status).await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    let provider_name = cluster
        .spec
        .infrastructure
        .provider_name()
        .unwrap_or_default();
    let provider = ctx
        .providers
        .get(provider_name)
        .inspect_err(|e| warn!(error = %e, "cannot clean up"))?
        .clone();
    let info = cluster_info(cluster);

    // 2. Control plane machines.
    let remaining =
        match machines::delete_all(ctx, provider.as_ref(), &info, &MachineRole::ControlPlane).await
        {
            Ok(remaining) => remaining,
            Err(error) => {
                return deletion_blocked(api, cluster, status, "the control-plane machines", error)
                    .await;
            }
        };
    if !remaining.is_empty() {
        waiting(
            &mut status,
            format!("deleting control-plane machines: {}", remaining.join(", ")),
        );
        apply_if_changed(api, &cluster.name_any(), old, &status).await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    // 3. Infrastructure.
    let deletion = match call(
        ctx,
        provider.as_ref(),
        "delete_cluster",
        provider.delete_cluster(&info).await,
    ) {
        Ok(deletion) => deletion,
        Err(source) => {
            let error = Error::Provider {
                provider: provider_name.to_string(),
                source,
            };
            return deletion_blocked(api, cluster, status, "the cluster's infrastructure", error)
                .await;
        }
    };
    if let Deletion::InProgress(what) = deletion {
        waiting(&mut status, format!("deleting infrastructure: {what}"));
        apply_if_changed(api, &cluster.name_any(), old, &status).await?;
        return Ok(Action::requeue(Duration::from_secs(2)));
    }

    // 4. Its Secrets (the apiserver's garbage collector would too, but only where a controller-manager runs).
    cluster_secrets::delete_owned(ctx, cluster).await?;

    crate::workload::forget_cluster(ctx, &cluster.uid().unwrap_or_default());

    // 5. Nothing of the cluster is left: let the object go.
    finalizer::remove(api, cluster, CLUSTER_FINALIZER).await?;
    info!(cluster = %cluster.name_any(), "cluster deleted");
    Ok(Action::await_change())
}

/// A provider that cannot delete (its credentials are gone, say) holds the deletion: nothing is dropped while it
/// may still exist. Says on the Cluster what is stuck and why, and returns the error for the retry.
async fn deletion_blocked(
    api: &Api<Cluster>,
    cluster: &Cluster,
    mut status: ClusterStatus,
    what: &str,
    error: Error,
) -> Result<Action> {
    if let Error::Provider { source, .. } = &error {
        let message = format!("cannot delete {what}: {source}");
        conditions::set(
            &mut status.conditions,
            condition(
                READY,
                false,
                source.reason(),
                message,
                cluster.metadata.generation,
            ),
        );
        apply_if_changed(api, &cluster.name_any(), cluster.status.as_ref(), &status).await?;
    }
    Err(error)
}

/// A pool being deleted, with what holds it up when its own status says so (a provider that cannot delete its
/// machines), so the cluster shows why its deletion does not move.
fn pool_deletion_progress(pool: &MachinePool) -> String {
    let ready = pool
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, READY));
    match ready {
        Some(c)
            if pool.metadata.deletion_timestamp.is_some()
                && c.status == conditions::STATUS_FALSE
                && c.reason != "Deleting" =>
        {
            format!("{} ({}: {})", pool.name_any(), c.reason, c.message)
        }
        _ => pool.name_any(),
    }
}

/// `spec.paused`, or the `slipway.dev/paused` annotation set to anything but "false".
pub fn is_paused(cluster: &Cluster) -> bool {
    cluster.spec.paused
        || cluster
            .annotations()
            .get(PAUSED_ANNOTATION)
            .is_some_and(|v| v != "false")
}

/// When the cluster's TTL runs out: creation time plus `spec.ttl`.
pub fn expiry(cluster: &Cluster) -> Option<Timestamp> {
    let ttl: SignedDuration = cluster.spec.ttl.as_deref()?.parse().ok()?;
    let created = cluster.metadata.creation_timestamp.as_ref()?.0;
    created.checked_add(ttl).ok()
}

pub fn cluster_info(cluster: &Cluster) -> ClusterInfo {
    ClusterInfo {
        namespace: cluster.namespace().unwrap_or_default(),
        name: cluster.name_any(),
        uid: cluster.uid().unwrap_or_default(),
        kubernetes_version: cluster.spec.kubernetes.version.clone(),
        infrastructure: cluster.spec.infrastructure.clone(),
    }
}

/// Machine names for an Event's note after `prefix`: the apiserver refuses notes over 1 kB.
fn names_within_note(names: &[String], prefix: &str) -> String {
    conditions::join_truncated_within(
        names,
        ", ",
        conditions::MAX_MESSAGE_CHARS.saturating_sub(prefix.len()),
    )
}

pub(crate) async fn report_machine_changes<K>(
    ctx: &Context,
    obj: &K,
    group: &str,
    created: &[String],
    deleted: &[String],
) where
    K: Resource<DynamicType = ()>,
{
    if !created.is_empty() {
        let prefix = format!("created {} {group} machines: ", created.len());
        let note = format!("{prefix}{}", names_within_note(created, &prefix));
        publish(
            ctx,
            obj,
            EventType::Normal,
            "MachinesCreated",
            "Scale",
            note,
        )
        .await;
    }
    if !deleted.is_empty() {
        let prefix = format!("deleting {} {group} machines: ", deleted.len());
        let note = format!("{prefix}{}", names_within_note(deleted, &prefix));
        publish(
            ctx,
            obj,
            EventType::Normal,
            "MachinesDeleted",
            "Scale",
            note,
        )
        .await;
    }
}

pub(crate) async fn publish<K>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(%error, "could not publish an event");
    }
}
