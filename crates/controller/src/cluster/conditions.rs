//! The Cluster's step conditions: what each provisioning step found, as `InfrastructureReady`,
//! `ControlPlaneReady`, `NodesReady` and `AddonsReady`.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::events::Event;
use slipway_api::conditions::{
    self, ADDONS_READY, CONTROL_PLANE_READY, Condition, INFRASTRUCTURE_READY, NODES_READY, READY,
    reason,
};
use slipway_api::{AddonBundle, Cluster, ClusterStatus, MachinePool};
use slipway_provider::{ClusterInfo, InfrastructureProvider, InfrastructureStatus, MachineRole};

use crate::context::Context;
use crate::error::Result;
use crate::machines::{self, Boot, GroupSpec};
use crate::status::condition;
use crate::{addon_bundle, events};

pub fn infrastructure(
    list: &mut Vec<Condition>,
    infrastructure: &InfrastructureStatus,
    generation: Option<i64>,
) {
    let why = if infrastructure.ready {
        reason::PROVISIONED
    } else {
        reason::PROVISIONING
    };
    conditions::set(
        list,
        condition(
            INFRASTRUCTURE_READY,
            infrastructure.ready,
            why,
            infrastructure.message.clone(),
            generation,
        ),
    );
}

pub fn waiting_for_infrastructure(list: &mut Vec<Condition>, generation: Option<i64>) {
    conditions::set(
        list,
        condition(
            CONTROL_PLANE_READY,
            false,
            reason::WAITING_FOR_INFRASTRUCTURE,
            "infrastructure is not ready yet",
            generation,
        ),
    );
}

/// Converges the control-plane machines one step and sets `ControlPlaneReady`; says whether it is True.
pub async fn control_plane(
    cluster: &Cluster,
    ctx: &Context,
    provider: &dyn InfrastructureProvider,
    info: &ClusterInfo,
    endpoint: &Option<(String, u16)>,
    status: &mut ClusterStatus,
    events: &mut Vec<Event>,
) -> Result<bool> {
    let replicas = usize::try_from(cluster.spec.control_plane.replicas).unwrap_or(0);
    let spec = GroupSpec {
        role: MachineRole::ControlPlane,
        prefix: format!("{}-control-plane", cluster.name_any()),
        replicas,
        settings: cluster.spec.control_plane.machine.clone(),
        kubernetes_version: cluster.spec.kubernetes.version.clone(),
        // One at a time: a new machine is made before an old one is deleted, and joins only a control plane
        // whose members are all ready.
        max_surge: 1,
        max_unavailable: 0,
        serial: true,
    };
    let boot = Boot::ControlPlane {
        cluster,
        endpoint: endpoint.clone(),
    };
    let group = machines::converge(ctx, provider, info, &spec, boot).await?;
    events.extend(events::machine_changes(
        "control-plane",
        group.listed > 0,
        &group.created,
        &group.deleted,
    ));
    let desired = &cluster.spec.kubernetes.version;
    let versions = member_versions(&group);
    let at_desired = versions.iter().filter(|v| *v == desired).count();
    status.version = match versions.first() {
        Some(first) if versions.iter().all(|v| v == first) => Some(first.clone()),
        _ => None,
    };
    let ready = group.converged(replicas) && at_desired == replicas;
    let (why, message) = if ready {
        (
            reason::READY,
            format!("{replicas} of {replicas} control-plane machines ready"),
        )
    } else if at_desired < replicas && group.machines.len() >= replicas {
        (
            reason::ROLLING_OUT,
            format!("{at_desired} of {replicas} control-plane members at {desired}"),
        )
    } else {
        (
            reason::WAITING_FOR_MACHINES,
            format!("{} of {replicas} control-plane machines ready", group.ready),
        )
    };
    conditions::set(
        &mut status.conditions,
        condition(
            CONTROL_PLANE_READY,
            ready,
            why,
            message,
            cluster.metadata.generation,
        ),
    );
    Ok(ready)
}

/// The version each live control-plane machine runs: what it reports (a local member's apiserver), else the
/// version it was made for when it is of the current template (providers that cannot ask). A machine of an older
/// template that reports nothing counts as no version: it is not what the spec asks for.
fn member_versions(group: &machines::GroupState) -> Vec<String> {
    group
        .machines
        .iter()
        .filter(|m| m.phase != slipway_api::MachinePhase::Deleting)
        .map(|m| match &m.version {
            Some(version) => version.clone(),
            None if m.template_hash == group.hash => group.kubernetes_version.clone(),
            None => String::new(),
        })
        .collect()
}

/// `NodesReady`: every pool ready at its current generation, or no pools at all.
pub fn nodes(list: &mut Vec<Condition>, pools: &[Arc<MachinePool>], generation: Option<i64>) {
    if pools.is_empty() {
        conditions::set(
            list,
            condition(
                NODES_READY,
                true,
                reason::NO_MACHINE_POOLS,
                "the cluster has no MachinePools",
                generation,
            ),
        );
        return;
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
    let why = if ready {
        reason::READY
    } else {
        reason::WAITING_FOR_NODES
    };
    conditions::set(
        list,
        condition(NODES_READY, ready, why, message, generation),
    );
}

/// `AddonsReady`: none on clusters without a workload API; otherwise every AddonBundle that selects the cluster
/// must be ready on it (the AddonBundle controller reports that in the bundle's status).
pub fn addons(
    list: &mut Vec<Condition>,
    cluster: &Cluster,
    ctx: &Context,
    workload_api: bool,
    generation: Option<i64>,
) {
    let (ready, why, message) = if !workload_api {
        let provider = cluster
            .spec
            .infrastructure
            .provider_name()
            .unwrap_or_default();
        (
            true,
            reason::NO_WORKLOAD_API,
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
                reason::NO_ADDON_BUNDLES,
                "no AddonBundle selects this cluster".to_string(),
            )
        } else if waiting.is_empty() {
            (
                true,
                reason::READY,
                format!("{} add-on bundles ready", selected.len()),
            )
        } else {
            (
                false,
                reason::WAITING_FOR_ADDONS,
                format!(
                    "add-on bundles not ready: {}",
                    conditions::join_truncated(&waiting, ", ")
                ),
            )
        }
    };
    conditions::set(
        list,
        condition(ADDONS_READY, ready, why, message, generation),
    );
}

fn pool_is_ready(pool: &MachinePool) -> bool {
    pool.status.as_ref().is_some_and(|s| {
        s.observed_generation == pool.metadata.generation
            && conditions::is_true(&s.conditions, READY)
    })
}
