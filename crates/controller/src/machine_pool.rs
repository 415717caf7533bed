//! The MachinePool reconciler: the pool's machines follow `spec.replicas` and its template, within the rollout
//! strategy, once the cluster's control plane is ready.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::SignedDuration;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Event;
use kube::{Resource, ResourceExt};
use slipway_api::conditions::{
    self, CONTROL_PLANE_READY, Condition, DRAINING, READY, REMEDIATION_BLOCKED, ROLLING_OUT,
    SCALING_DOWN, SCALING_UP, reason,
};
use slipway_api::limits::MAX_LISTED_MACHINES;
use slipway_api::{
    Cluster, MachinePhase, MachinePool, MachinePoolStatus, MachineStatus, MachineTemplate, NodeRef,
};
use slipway_provider::{MachineRole, ProviderError};
use tracing::info;

use crate::cluster::{cluster_info, is_paused};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::health;
use crate::join_token::{self, Publish};
use crate::machines::{self, Boot, Draining, GroupSpec, GroupState, Workload};
use crate::nodes::NodeView;
use crate::outcome::Outcome;
use crate::status::{self, condition, set_all};
use crate::{
    MACHINE_POOL_FINALIZER, PAUSED_ANNOTATION, POOL_LABEL, backoff, drain, events, finalizer,
    node_metadata,
};

pub const CONTROLLER: &str = "machinepool";

const POLL: Duration = Duration::from_secs(2);

pub async fn reconcile(pool: Arc<MachinePool>, ctx: Arc<Context>) -> Outcome<MachinePoolStatus> {
    let mut status = pool.status.clone().unwrap_or_default();
    status.observed_generation = pool.metadata.generation;
    status.selector = Some(format!("{POOL_LABEL}={}", pool.name_any()));
    let mut events = Vec::new();
    let next = converge(&pool, &ctx, &mut status, &mut events).await;
    match next {
        Ok(LeaveStatus) => Outcome::unchanged(Action::await_change()),
        Ok(Next(action)) => Outcome::of(status, events, Ok(action)),
        Err(error) => Outcome::of(status, events, Err(error)),
    }
}

/// How a pass ended when it did not fail.
enum Step {
    /// Nothing to write: the pool is paused, or its finalizer is done.
    LeaveStatus,
    Next(Action),
}
use Step::{LeaveStatus, Next};

async fn converge(
    pool: &MachinePool,
    ctx: &Context,
    status: &mut MachinePoolStatus,
    events: &mut Vec<Event>,
) -> Result<Step> {
    let namespace = pool.namespace().unwrap_or_default();
    let api: Api<MachinePool> = Api::namespaced(ctx.client.clone(), &namespace);
    let generation = pool.metadata.generation;
    let cluster = ctx.cluster(&namespace, &pool.spec.cluster_name).await?;

    if pool.metadata.deletion_timestamp.is_some() {
        return finalize(pool, &api, ctx, cluster.as_deref(), status).await;
    }
    let Some(cluster) = cluster else {
        let message = format!(
            "Cluster {:?} does not exist in namespace {namespace}",
            pool.spec.cluster_name
        );
        conditions::set(
            &mut status.conditions,
            condition(READY, false, reason::CLUSTER_NOT_FOUND, message, generation),
        );
        // The Cluster watch wakes us when it appears.
        return Ok(Next(Action::await_change()));
    };
    if is_paused(&cluster)
        || pool
            .annotations()
            .get(PAUSED_ANNOTATION)
            .is_some_and(|v| v != "false")
    {
        return Ok(LeaveStatus);
    }
    finalizer::ensure(
        &api,
        pool,
        MACHINE_POOL_FINALIZER,
        Some(owner_reference(&cluster)),
    )
    .await?;
    if cluster.metadata.deletion_timestamp.is_some() {
        // The cluster deletes its pools; nothing to grow meanwhile.
        return Ok(Next(Action::await_change()));
    }
    let Some(cluster_status) = &cluster.status else {
        // The cluster has not been looked at yet (they were created together a moment ago): its first status is
        // about to say where its control plane stands, and the Cluster watch wakes this pool then. Saying "waiting"
        // before that would be a write the next pass overtakes.
        return Ok(LeaveStatus);
    };
    if !conditions::is_true(&cluster_status.conditions, CONTROL_PLANE_READY) {
        // The shared Cluster cache wakes this pool when the cluster's status changes.
        set_all(
            &mut status.conditions,
            [
                condition(
                    READY,
                    false,
                    reason::WAITING_FOR_CONTROL_PLANE,
                    "the cluster's control plane is not ready yet",
                    generation,
                ),
                condition(
                    SCALING_UP,
                    false,
                    reason::WAITING_FOR_CONTROL_PLANE,
                    "",
                    generation,
                ),
            ],
        );
        return Ok(Next(Action::await_change()));
    }

    // A pool on its own version stays within what the control plane's version allows (CEL on the pool cannot
    // see the Cluster). Its machines are left alone until the versions fit again.
    if let Some(version) = &pool.spec.version
        && let Err(skew) = crate::version_skew::pool_skew(&cluster.spec.kubernetes.version, version)
    {
        set_all(
            &mut status.conditions,
            [condition(
                READY,
                false,
                reason::VERSION_SKEW,
                skew.to_string(),
                generation,
            )],
        );
        return Ok(Next(Action::await_change()));
    }

    // Workers move to a version only once every control-plane member runs it (or a newer one): the Cluster's
    // `status.version`, which is absent while the members differ.
    let wanted = pool
        .spec
        .version
        .as_deref()
        .unwrap_or(&cluster.spec.kubernetes.version);
    if !runs_at_least(cluster_status.version.as_deref(), wanted) {
        set_all(
            &mut status.conditions,
            [condition(
                READY,
                false,
                reason::WAITING_FOR_CONTROL_PLANE,
                format!(
                    "waiting for every control-plane member to run {wanted} before these machines change (the \
                     control plane runs {})",
                    cluster_status
                        .version
                        .as_deref()
                        .unwrap_or("more than one version")
                ),
                generation,
            )],
        );
        return Ok(Next(Action::await_change()));
    }

    let provider = ctx.provider_for(&cluster).inspect_err(|error| {
        conditions::set(
            &mut status.conditions,
            condition(
                READY,
                false,
                reason::PROVIDER_NOT_REGISTERED,
                error.to_string(),
                generation,
            ),
        );
    })?;
    let info = cluster_info(&cluster);
    let replicas = usize::try_from(pool.spec.replicas).unwrap_or(0);
    let spec = GroupSpec {
        role: MachineRole::Worker {
            pool: pool.name_any(),
        },
        prefix: pool.name_any(),
        replicas,
        settings: pool.spec.template.machine.clone(),
        kubernetes_version: pool
            .spec
            .version
            .clone()
            .unwrap_or_else(|| cluster.spec.kubernetes.version.clone()),
        max_surge: usize::try_from(pool.spec.strategy.max_surge).unwrap_or(0),
        max_unavailable: usize::try_from(pool.spec.strategy.max_unavailable).unwrap_or(0),
        serial: false,
    };
    let pool_name = pool.name_any();
    let boot = Boot::Worker {
        cluster: &cluster,
        pool: &pool_name,
    };
    // The workload cluster's Nodes, where the manager watches them: each machine's Node, by provider ID, once every
    // Node has been listed (before that, a machine without a Node may only be one not listed yet).
    let nodes = ctx.nodes.view(&cluster.uid().unwrap_or_default());
    let by_provider_id = nodes
        .as_ref()
        .filter(|view| view.listed())
        .map(NodeView::by_provider_id);
    let health = health::Policy::new(&pool.spec.health, replicas, spec.max_surge);
    let workload = workload(ctx, &cluster, pool, by_provider_id.as_ref()).await?;
    let step = match machines::converge_step(
        ctx,
        provider.as_ref(),
        &info,
        &spec,
        boot,
        workload.as_ref(),
        Some(&health),
    )
    .await
    {
        Ok(step) => step,
        // Nothing is known of the machines: say why, and keep what the status said of them.
        Err(error) => {
            if let Error::Provider { source, .. } = &error {
                let mut failed = vec![condition(
                    READY,
                    false,
                    source.reason(),
                    source.to_string(),
                    generation,
                )];
                if source.is_retryable() {
                    failed.push(condition(
                        SCALING_UP,
                        true,
                        source.reason(),
                        source.to_string(),
                        generation,
                    ));
                }
                set_all(&mut status.conditions, failed);
            }
            return Err(error);
        }
    };
    let group = step.state;
    // Machines that booted with the join token must still be let in when they get to it.
    let joining = group
        .machines
        .iter()
        .any(|m| !m.ready && m.phase != MachinePhase::Deleting);
    if joining && provider.needs_user_data() && group.created.is_empty() {
        join_token::ensure(ctx, &cluster, Publish::ThroughApi).await?;
    }
    events.extend(events::machine_changes(
        "worker",
        group.listed > 0,
        &group.created,
        &group.deleted,
    ));
    for replaced in &group.remediation.replace {
        if group.deleted.contains(&replaced.machine) {
            ctx.metrics.remediated();
            info!(pool = %pool_name, machine = %replaced.machine, why = %replaced.why, "replacing an unhealthy machine");
            events.push(events::warning(
                "MachineRemediated",
                "Remediate",
                format!("replacing machine {}: {}", replaced.machine, replaced.why),
            ));
        }
    }

    status.replicas = group.machines.len() as i32;
    status.ready_replicas = group.ready as i32;
    status.updated_replicas = group.updated as i32;
    (status.machines, status.unlisted_machines) =
        listed_machines(&group.machines, by_provider_id.as_ref());
    let ready = group_conditions(&mut status.conditions, &group, replicas, generation);
    remediation_condition(&mut status.conditions, &group.remediation, generation);
    draining_condition(&mut status.conditions, &group.draining, generation);
    if let Some(view) = nodes.as_ref().filter(|view| !view.listed()) {
        note_nodes_not_listed(&mut status.conditions, view.error());
    }
    // Labels and taints on the Nodes the machines registered as. A Node that changed meanwhile refuses the patch;
    // its change wakes the pool again.
    if let Some(workload) = &workload {
        label_nodes(&cluster, &pool.spec.template, &group, workload).await?;
    }
    // A step that stopped halfway: the machines above are what there is, and the conditions say what stopped it.
    if let Some(Error::Provider { source, .. }) = &step.failure {
        record_step_failure(&mut status.conditions, source, generation);
    }
    // A machine about to turn unhealthy (a Node not Ready, a Node that has not registered) does so without any
    // change to wake the pool, and so does a machine the provider starts to report failed: a ready pool looks
    // again when the first may have happened, and every `machine_resync` for the second (a listing; it writes
    // nothing when nothing changed).
    let resync = group
        .remediation
        .next_check
        .map_or(ctx.machine_resync, |at| {
            ctx.machine_resync.min(at + Duration::from_secs(1))
        });
    match step.failure {
        None => Ok(Next(Action::requeue(if ready { resync } else { POLL }))),
        // No room for another machine right now (no free host, a quota): the condition says so, and the pool
        // looks again at a slow pace instead of retrying as a failure.
        Some(Error::Provider {
            source: ProviderError::Capacity { .. },
            ..
        }) => Ok(Next(Action::requeue(backoff::capacity_retry()))),
        Some(error) => Err(error),
    }
}

/// `Ready`, `ScalingUp`, `ScalingDown` and `RollingOut` from where the group stands; says whether it is ready.
fn group_conditions(
    list: &mut Vec<Condition>,
    group: &GroupState,
    replicas: usize,
    generation: Option<i64>,
) -> bool {
    let current = group
        .machines
        .iter()
        .filter(|m| m.template_hash == group.hash)
        .count();
    let outdated = group.machines.len() - current;
    let ready = group.converged(replicas);
    let scaling_up = current < replicas || (group.ready < replicas && outdated == 0);
    let scaling_down = group.machines.len() > replicas && outdated == 0;
    let rolling_out = outdated > 0;
    let summary = format!(
        "{} of {replicas} machines ready, {} up to date",
        group.ready, group.updated
    );
    let when = |on: bool, text: String| if on { text } else { String::new() };
    set_all(
        list,
        [
            condition(
                READY,
                ready,
                if ready {
                    reason::READY
                } else {
                    reason::WAITING_FOR_MACHINES
                },
                summary.clone(),
                generation,
            ),
            condition(
                SCALING_UP,
                scaling_up,
                if scaling_up {
                    reason::SCALING_UP
                } else {
                    reason::AT_REPLICAS
                },
                when(scaling_up, summary.clone()),
                generation,
            ),
            condition(
                SCALING_DOWN,
                scaling_down,
                if scaling_down {
                    reason::SCALING_DOWN
                } else {
                    reason::AT_REPLICAS
                },
                when(scaling_down, summary.clone()),
                generation,
            ),
            condition(
                ROLLING_OUT,
                rolling_out,
                if rolling_out {
                    reason::ROLLING_OUT
                } else {
                    reason::UP_TO_DATE
                },
                when(rolling_out, format!("{outdated} machines to replace")),
                generation,
            ),
        ],
    );
    ready
}

/// `RemediationBlocked`: true, saying which machines are unhealthy, when more are than `spec.health.maxUnhealthy`
/// allows.
fn remediation_condition(
    list: &mut Vec<Condition>,
    remediation: &crate::health::Remediation,
    generation: Option<i64>,
) {
    let (blocked, why, message) = match &remediation.blocked {
        Some(message) => (true, reason::TOO_MANY_UNHEALTHY, message.clone()),
        None => (false, reason::WITHIN_LIMIT, String::new()),
    };
    conditions::set(
        list,
        condition(REMEDIATION_BLOCKED, blocked, why, message, generation),
    );
}

/// `Draining`: which Nodes are drained before their machines are deleted, and which Pods they wait for.
fn draining_condition(list: &mut Vec<Condition>, draining: &[Draining], generation: Option<i64>) {
    let (on, why, message) = if draining.is_empty() {
        (false, reason::NOT_DRAINING, String::new())
    } else {
        let each: Vec<String> = draining
            .iter()
            .map(|d| {
                format!(
                    "Node {} of machine {} (deleted anyway at {}) waits for {}",
                    d.node,
                    d.machine,
                    d.deadline,
                    conditions::join_truncated(&d.pods, ", ")
                )
            })
            .collect();
        (true, reason::DRAINING, each.join("; "))
    };
    conditions::set(list, condition(DRAINING, on, why, message, generation));
}

/// A step that failed halfway: `Ready` says why, and so does the scaling condition the step was working on.
fn record_step_failure(list: &mut Vec<Condition>, source: &ProviderError, generation: Option<i64>) {
    let summary = conditions::find(list, READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let message = format!("{summary}; {source}");
    let mut failed = vec![condition(
        READY,
        false,
        source.reason(),
        &message,
        generation,
    )];
    for scaling in [SCALING_UP, SCALING_DOWN] {
        if conditions::is_true(list, scaling) {
            failed.push(condition(
                scaling,
                true,
                source.reason(),
                &message,
                generation,
            ));
        }
    }
    set_all(list, failed);
}

/// Deletes every machine of the pool, then lets the object go.
async fn finalize(
    pool: &MachinePool,
    api: &Api<MachinePool>,
    ctx: &Context,
    cluster: Option<&Cluster>,
    status: &mut MachinePoolStatus,
) -> Result<Step> {
    if !pool
        .finalizers()
        .iter()
        .any(|f| f == MACHINE_POOL_FINALIZER)
    {
        return Ok(LeaveStatus);
    }
    let generation = pool.metadata.generation;
    // Without its cluster there is nothing left to delete machines from.
    if let Some(cluster) = cluster {
        // The machines stay, and so does the pool, until the provider can delete them (say, once a credentials
        // Secret is back): say so where the person waiting for the deletion looks.
        let blocked = |status: &mut MachinePoolStatus, error: &Error| {
            status::deletion_blocked(
                &mut status.conditions,
                "the pool's machines",
                error,
                generation,
            );
        };
        let provider = ctx
            .provider_for(cluster)
            .inspect_err(|error| blocked(status, error))?;
        let info = cluster_info(cluster);
        let role = MachineRole::Worker {
            pool: pool.name_any(),
        };
        // The Nodes are drained first, unless the whole cluster is going and the pool says not to.
        let cluster_going = cluster.metadata.deletion_timestamp.is_some();
        let drain = !cluster_going || pool.spec.strategy.drain_on_cluster_deletion;
        let nodes = ctx
            .nodes
            .view(&cluster.uid().unwrap_or_default())
            .filter(|view| drain && view.listed())
            .map(|view| view.by_provider_id());
        let workload = workload(ctx, cluster, pool, nodes.as_ref())
            .await
            .inspect_err(|error| blocked(status, error))?;
        let remaining =
            machines::delete_all(ctx, provider.as_ref(), &info, &role, workload.as_ref())
                .await
                .inspect_err(|error| blocked(status, error))?;
        if !remaining.is_empty() {
            let message = format!(
                "deleting machines: {}",
                conditions::join_truncated(&remaining, ", ")
            );
            conditions::set(
                &mut status.conditions,
                condition(READY, false, reason::DELETING, message, generation),
            );
            return Ok(Next(Action::requeue(Duration::from_secs(1))));
        }
    }
    finalizer::remove(api, pool, MACHINE_POOL_FINALIZER).await?;
    info!(pool = %pool.name_any(), "machine pool deleted");
    // The object is going: nothing of its status to write.
    Ok(LeaveStatus)
}

/// What the pool needs of its workload cluster to drain Nodes, when `nodes` (every Node listed) are known.
async fn workload<'a>(
    ctx: &Context,
    cluster: &Cluster,
    pool: &MachinePool,
    nodes: Option<&'a HashMap<String, Arc<Node>>>,
) -> Result<Option<Workload<'a>>> {
    let Some(nodes) = nodes else {
        return Ok(None);
    };
    let client = crate::workload::client(ctx, cluster)
        .await
        .map_err(|source| Error::Workload {
            cluster: cluster.name_any(),
            source,
        })?;
    // Admission accepts only durations; the default stands in for anything else.
    let drain_timeout = pool
        .spec
        .strategy
        .drain_timeout
        .parse()
        .unwrap_or(SignedDuration::from_mins(10));
    Ok(Some(Workload {
        nodes,
        client,
        drain_timeout,
    }))
}

/// `status.machines`: the first [`MAX_LISTED_MACHINES`] machines by name, each with its Node when `nodes` has it, and
/// how many are left out, so that a pool of a thousand machines still fits in one object.
fn listed_machines(
    machines: &[slipway_provider::Machine],
    nodes: Option<&HashMap<String, Arc<Node>>>,
) -> (Vec<MachineStatus>, i32) {
    let listed = machines.len().min(MAX_LISTED_MACHINES);
    let entries = machines[..listed]
        .iter()
        .map(|m| MachineStatus {
            name: m.name.clone(),
            provider_id: Some(m.provider_id.clone()),
            phase: m.phase,
            node_ref: nodes
                .and_then(|nodes| nodes.get(&m.provider_id))
                .map(|node| NodeRef {
                    name: node.name_any(),
                    ready: crate::nodes::is_ready(node),
                    created: node.metadata.creation_timestamp.clone(),
                }),
        })
        .collect();
    (entries, (machines.len() - listed) as i32)
}

/// Puts the template's labels and taints on every live machine's Node that lacks them (and takes off those that
/// left the template), and uncordons a Node Slipway cordoned for a drain its machine no longer waits for (the pool
/// was scaled back up). Writes nothing when every Node is as wanted.
async fn label_nodes(
    cluster: &Cluster,
    template: &MachineTemplate,
    group: &GroupState,
    workload: &Workload<'_>,
) -> Result<()> {
    let name = cluster.name_any();
    let live_nodes = group
        .machines
        .iter()
        .filter(|m| m.phase != MachinePhase::Deleting)
        .filter_map(|m| Some((m, workload.nodes.get(&m.provider_id)?)));
    let mut patches: Vec<(String, serde_json::Value)> = Vec::new();
    for (machine, node) in live_nodes {
        if !group.draining.iter().any(|d| d.machine == machine.name) {
            drain::cancel(&workload.client, node)
                .await
                .map_err(|e| Error::WorkloadApi {
                    cluster: name.clone(),
                    message: format!("uncordoning Node {}: {e}", node.name_any()),
                })?;
        }
        if let Some(patch) = node_metadata::patch(node, &template.node_labels, &template.taints) {
            patches.push((node.name_any(), patch));
        }
    }
    let api: Api<Node> = Api::all(workload.client.clone());
    for (node, patch) in patches {
        api.patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::WorkloadApi {
                cluster: name.clone(),
                message: format!("setting the labels and taints of Node {node}: {e}"),
            })?;
        info!(cluster = %name, %node, "set the Node's labels and taints");
    }
    Ok(())
}

/// `Ready`'s message says that machines count as the provider reports them, because the Nodes are not listed yet.
fn note_nodes_not_listed(list: &mut [Condition], error: Option<&str>) {
    if let Some(ready) = list.iter_mut().find(|c| c.type_ == READY) {
        ready.message = format!(
            "{}; the workload cluster's Nodes are not listed yet ({}), so machines count as ready as the provider \
             reports them",
            ready.message,
            error.unwrap_or("listing"),
        );
    }
}

fn owner_reference(cluster: &Cluster) -> OwnerReference {
    let mut owner = cluster
        .controller_owner_ref(&())
        .expect("a stored Cluster has a name and uid");
    // The pool is the cluster's part, but deleting it must go through the cluster's ordered teardown.
    owner.block_owner_deletion = Some(true);
    owner
}

/// Whether a control plane at `control_plane` runs `wanted` or a newer version. Unparsable versions (admission
/// refuses them) count as not.
fn runs_at_least(control_plane: Option<&str>, wanted: &str) -> bool {
    use crate::version_skew::KubernetesVersion;
    let (Some(Ok(control_plane)), Ok(wanted)) = (
        control_plane.map(str::parse::<KubernetesVersion>),
        wanted.parse::<KubernetesVersion>(),
    ) else {
        return false;
    };
    control_plane >= wanted
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    #[test]
    fn workers_wait_until_the_control_plane_runs_their_version() {
        assert!(runs_at_least(Some("v1.37.2"), "v1.37.2"));
        assert!(
            runs_at_least(Some("v1.37.2"), "v1.36.3"),
            "a pinned older pool"
        );
        assert!(!runs_at_least(Some("v1.36.3"), "v1.37.2"), "mid-upgrade");
        assert!(!runs_at_least(None, "v1.37.2"), "members differ");
        assert!(!runs_at_least(Some("v1.37.2"), "1.37"), "unparsable");
    }

    fn machines(count: usize) -> Vec<slipway_provider::Machine> {
        (0..count)
            .map(|i| slipway_provider::Machine {
                name: format!("w-abc1234-{i:04}"),
                provider_id: format!("sim://w-{i}"),
                phase: MachinePhase::Running,
                ready: true,
                template_hash: "abc1234".into(),
                created_at: Timestamp::UNIX_EPOCH,
                version: None,
            })
            .collect()
    }

    #[test]
    fn status_lists_at_most_a_hundred_machines_and_counts_the_rest() {
        let (listed, unlisted) = listed_machines(&machines(1000), None);
        assert_eq!(listed.len(), MAX_LISTED_MACHINES);
        assert_eq!(unlisted, 900);
        assert_eq!(listed[0].name, "w-abc1234-0000");
        assert_eq!(listed[99].name, "w-abc1234-0099");

        let (listed, unlisted) = listed_machines(&machines(3), None);
        assert_eq!((listed.len(), unlisted), (3, 0));
        assert_eq!(listed[2].provider_id.as_deref(), Some("sim://w-2"));
    }
}
