//! Converging one group of machines (a cluster's control plane, or a pool) on what its spec asks for: create the
//! missing, delete the surplus, replace outdated machines within `maxSurge` / `maxUnavailable`.
//!
//! The provider's listing is the truth. Names are deterministic (`<prefix>-<template hash>-<index>`, the lowest free
//! index first), so a reconcile interrupted after a create and run again finds that machine instead of making a
//! second one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use sha2::{Digest, Sha256};
use slipway_api::{MachinePhase, MachineSettings};
use slipway_provider::{
    ClusterInfo, Deletion, InfrastructureProvider, Machine, MachineRequest, MachineRole,
};

use crate::context::Context;
use crate::drain::{self, Drain};
use crate::error::{Error, Result};
use crate::health;
pub use crate::user_data::Boot;

/// What a group should look like.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub role: MachineRole,
    /// Machine names start with this.
    pub prefix: String,
    pub replicas: usize,
    pub settings: MachineSettings,
    pub kubernetes_version: String,
    pub max_surge: usize,
    pub max_unavailable: usize,
    /// One change at a time, as a control plane's etcd needs: a machine is created only while every other one is
    /// ready and nothing is being deleted, and at most one machine is deleted per step (none while one is created).
    pub serial: bool,
}

/// A short hash of everything that makes a machine of this group what it is; machines with another hash are
/// outdated and get replaced.
pub fn template_hash(role: &MachineRole, version: &str, settings: &MachineSettings) -> String {
    #[derive(Serialize)]
    struct Template<'a> {
        role: &'a str,
        version: &'a str,
        settings: &'a MachineSettings,
    }
    let role = match role {
        MachineRole::ControlPlane => "control-plane",
        MachineRole::Worker { .. } => "worker",
    };
    let json = serde_json::to_vec(&Template {
        role,
        version,
        settings,
    })
    .expect("machine settings serialize");
    hex::encode(&Sha256::digest(json)[..4])[..7].to_string()
}

/// The most machines one pass creates: a pool scaled to a thousand asks the provider for ten, reports, and comes
/// back for the next ten, so no single reconcile holds a worker (or a provider's rate budget) for minutes.
pub const MAX_CREATES_PER_PASS: usize = 10;

/// Creates and deletions that move a group one step towards its spec.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub create: Vec<String>,
    pub delete: Vec<String>,
}

/// Decides the next step, the way a Deployment rolls: never more than `replicas + max_surge` machines, and while
/// replacing outdated machines never fewer than `replicas - max_unavailable` ready ones. Scaling down is what the
/// user asked for and is not held back. At most [`MAX_CREATES_PER_PASS`] creates; the rest come in later passes.
pub fn plan(machines: &[Machine], spec: &GroupSpec, hash: &str) -> Plan {
    plan_replacing(machines, spec, hash, &BTreeSet::new())
}

/// [`plan`], with the machines named in `replace` (unhealthy ones) deleted first and counted as gone, so that their
/// replacements are made as for missing machines.
pub fn plan_replacing(
    machines: &[Machine],
    spec: &GroupSpec,
    hash: &str,
    replace: &BTreeSet<&str>,
) -> Plan {
    let (replaced, live): (Vec<&Machine>, Vec<&Machine>) = machines
        .iter()
        .filter(|m| m.phase != MachinePhase::Deleting)
        .partition(|m| replace.contains(m.name.as_str()));
    let (current, outdated): (Vec<&Machine>, Vec<&Machine>) =
        live.iter().partition(|m| m.template_hash == hash);
    let desired = spec.replicas;
    let mut delete: Vec<&Machine> = Vec::new();

    // Outdated machines that are not ready serve nobody: replace them first.
    delete.extend(outdated.iter().filter(|m| !m.ready));
    // Scale-down: the least useful current machines beyond `replicas`.
    delete.extend(least_useful_first(&current).take(current.len().saturating_sub(desired)));
    // Ready outdated machines, as far as the availability budget allows.
    let ready_left =
        live.iter().filter(|m| m.ready).count() - delete.iter().filter(|m| m.ready).count();
    let budget = ready_left.saturating_sub(desired.saturating_sub(spec.max_unavailable));
    delete.extend(outdated.iter().filter(|m| m.ready).take(budget));

    let used: BTreeSet<&str> = machines.iter().map(|m| m.name.as_str()).collect();
    let missing = desired.saturating_sub(current.len());
    let room = (desired + spec.max_surge).saturating_sub(live.len() - delete.len());
    let mut most = missing.min(room).min(MAX_CREATES_PER_PASS);
    // The replaced machines go too; they were never counted as live, so they leave the budgets above alone.
    delete.splice(0..0, replaced);
    if spec.serial {
        delete.truncate(1);
        let settled = machines
            .iter()
            .all(|m| m.ready && m.phase != MachinePhase::Deleting);
        most = if delete.is_empty() && settled {
            most.min(1)
        } else {
            0
        };
    }
    Plan {
        create: free_names(&spec.prefix, hash, &used).take(most).collect(),
        delete: delete.into_iter().map(|m| m.name.clone()).collect(),
    }
}

fn least_useful_first<'a>(machines: &[&'a Machine]) -> impl Iterator<Item = &'a Machine> {
    let mut sorted = machines.to_vec();
    sorted.sort_by(|a, b| {
        a.ready
            .cmp(&b.ready)
            .then(b.created_at.cmp(&a.created_at))
            .then(b.name.cmp(&a.name))
    });
    sorted.into_iter()
}

fn free_names<'a>(
    prefix: &'a str,
    hash: &'a str,
    used: &'a BTreeSet<&str>,
) -> impl Iterator<Item = String> + 'a {
    (0..)
        .map(move |i| format!("{prefix}-{hash}-{i}"))
        .filter(|name| !used.contains(name.as_str()))
}

/// Where a group stands after one step.
#[derive(Debug, Clone, Default)]
pub struct GroupState {
    /// How many machines the provider listed before the step (the group's size as the step found it).
    pub listed: usize,
    pub machines: Vec<Machine>,
    pub created: Vec<String>,
    pub deleted: Vec<String>,
    pub ready: usize,
    pub updated: usize,
    pub hash: String,
    /// The Kubernetes version of the group's current template.
    pub kubernetes_version: String,
    /// The unhealthy machines and what was done about them (nothing for groups without a health policy).
    pub remediation: health::Remediation,
    /// Machines to be deleted whose Nodes are still being drained.
    pub draining: Vec<Draining>,
}

/// A machine waiting for its Node's drain before it is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draining {
    pub machine: String,
    pub node: String,
    /// The Pods still on the Node, as `namespace/name (why)`.
    pub pods: Vec<String>,
    /// When the machine is deleted anyway.
    pub deadline: Timestamp,
}

/// The workload cluster as a group converging on its spec sees it: its Nodes by provider ID (every Node listed), a
/// client to drain them with, and how long a drain may take.
pub struct Workload<'a> {
    pub nodes: &'a HashMap<String, Arc<Node>>,
    pub client: kube::Client,
    pub drain_timeout: SignedDuration,
}

impl GroupState {
    /// Every machine current, ready and none too many.
    pub fn converged(&self, replicas: usize) -> bool {
        self.machines.len() == replicas && self.ready == replicas && self.updated == replicas
    }
}

/// Lists the group, carries out one [`plan`], and returns the group as it now is; the first provider failure
/// is an error. See [`converge_step`] for the group as far as it got when a step fails halfway.
pub async fn converge(
    ctx: &Context,
    provider: &dyn InfrastructureProvider,
    cluster: &ClusterInfo,
    spec: &GroupSpec,
    boot: Boot<'_>,
) -> Result<GroupState> {
    let step = converge_step(ctx, provider, cluster, spec, boot, None, None).await?;
    match step.failure {
        Some(error) => Err(error),
        None => Ok(step.state),
    }
}

/// One step towards the spec, and how it ended.
#[derive(Debug)]
pub struct Step {
    /// The group as it is after the step, including what the step made or removed before any failure.
    pub state: GroupState,
    /// The first provider failure of the step, if any.
    pub failure: Option<Error>,
}

/// Lists the group and carries out one [`plan`]. A failing create or delete does not lose what the step did
/// before it: the machines that exist are in the returned state, and the failure beside it. Every planned
/// deletion is tried (hosts fail independently); creation stops at the first failure, since the next create
/// would mostly meet the same shortage or refusal. Errors only when nothing is known (the listing failed, the
/// user data could not be rendered).
///
/// With the `workload` cluster's Nodes (when every Node has been listed) a machine is ready only when the provider
/// says so and its Node is Ready, which is what the plan's rollout budget counts, and a machine's Node is drained
/// before the machine is deleted. With a `health` policy, unhealthy machines are replaced as [`health::decide`]
/// allows.
pub async fn converge_step(
    ctx: &Context,
    provider: &dyn InfrastructureProvider,
    cluster: &ClusterInfo,
    spec: &GroupSpec,
    boot: Boot<'_>,
    workload: Option<&Workload<'_>>,
    health: Option<&health::Policy>,
) -> Result<Step> {
    let nodes = workload.map(|w| w.nodes);
    let hash = template_hash(&spec.role, &spec.kubernetes_version, &spec.settings);
    let provider_error = |source| Error::Provider {
        provider: provider.name().to_string(),
        source,
    };
    let mut machines = call(
        ctx,
        provider,
        "list_machines",
        provider.list_machines(cluster, &spec.role).await,
    )
    .map_err(provider_error)?;
    if let Some(nodes) = nodes {
        for machine in &mut machines {
            machine.ready = machine.ready
                && nodes
                    .get(&machine.provider_id)
                    .is_some_and(|node| crate::nodes::is_ready(node));
        }
    }
    let remediation =
        health.map(|policy| health::decide(&machines, nodes, policy, Timestamp::now()));
    let replace: BTreeSet<&str> = remediation
        .iter()
        .flat_map(|r| &r.replace)
        .map(|u| u.machine.as_str())
        .collect();
    let step = plan_replacing(&machines, spec, &hash, &replace);
    // A control plane that has a member (a live one: a member being deleted is leaving it) is joined, not
    // initialised again. With `serial`, a new member is planned only while every other one is ready.
    let has_machines = machines.iter().any(|m| m.phase != MachinePhase::Deleting);
    let boot = boot.for_group(has_machines);
    // Rendered only when a machine is to be made: it reads the cluster's key material.
    let user_data = if step.create.is_empty() || !provider.needs_user_data() {
        None
    } else {
        boot.render(ctx, provider.provider_id_from_instance_data())
            .await?
    };

    let mut state = GroupState {
        listed: machines.len(),
        remediation: remediation.clone().unwrap_or_default(),
        hash: hash.clone(),
        kubernetes_version: spec.kubernetes_version.clone(),
        ..Default::default()
    };
    let mut failure = None;
    for name in &step.delete {
        if let Some(workload) = workload
            && let Some(machine) = machines.iter().find(|m| &m.name == name)
            && let Some(node) = workload.nodes.get(&machine.provider_id)
        {
            match drain::step(
                &workload.client,
                node,
                workload.drain_timeout,
                Timestamp::now(),
            )
            .await
            {
                Ok(Drain::Done) => {}
                Ok(Drain::Waiting { pods, deadline }) => {
                    state.draining.push(Draining {
                        machine: name.clone(),
                        node: node.metadata.name.clone().unwrap_or_default(),
                        pods,
                        deadline,
                    });
                    continue;
                }
                Err(error) => {
                    failure.get_or_insert(Error::WorkloadApi {
                        cluster: cluster.name.clone(),
                        message: format!(
                            "draining Node {}: {error}",
                            node.metadata.name.as_deref().unwrap_or_default()
                        ),
                    });
                    continue;
                }
            }
        }
        let outcome = provider.delete_machine(cluster, &spec.role, name).await;
        match call(ctx, provider, "delete_machine", outcome) {
            Ok(Deletion::Done) => machines.retain(|m| &m.name != name),
            Ok(Deletion::InProgress(_)) => {
                if let Some(m) = machines.iter_mut().find(|m| &m.name == name) {
                    m.phase = MachinePhase::Deleting;
                    m.ready = false;
                }
            }
            Err(source) => {
                failure.get_or_insert(provider_error(source));
                continue;
            }
        }
        state.deleted.push(name.clone());
    }
    // A machine still being drained is still there: no more machines than `replicas + maxSurge` with it.
    let live = machines
        .iter()
        .filter(|m| m.phase != MachinePhase::Deleting)
        .count();
    let room = (spec.replicas + spec.max_surge).saturating_sub(live);
    for name in step.create.iter().take(room) {
        let request = MachineRequest {
            name: name.clone(),
            role: spec.role.clone(),
            settings: spec.settings.clone(),
            kubernetes_version: spec.kubernetes_version.clone(),
            template_hash: hash.clone(),
            user_data: user_data.clone(),
        };
        let outcome = provider.create_machine(cluster, &request).await;
        match call(ctx, provider, "create_machine", outcome) {
            Ok(machine) => {
                machines.push(machine);
                state.created.push(name.clone());
            }
            Err(source) => {
                failure.get_or_insert(provider_error(source));
                break;
            }
        }
    }
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    state.ready = machines
        .iter()
        .filter(|m| m.ready && m.phase != MachinePhase::Deleting)
        .count();
    state.updated = machines
        .iter()
        .filter(|m| m.template_hash == hash && m.phase != MachinePhase::Deleting)
        .count();
    state.machines = machines;
    Ok(Step { state, failure })
}

/// Deletes every machine of a group; true once none is left.
///
/// With the `workload` cluster's Nodes, each machine's Node is drained first; a machine whose drain waits stays,
/// listed with the Pods it waits for.
pub async fn delete_all(
    ctx: &Context,
    provider: &dyn InfrastructureProvider,
    cluster: &ClusterInfo,
    role: &MachineRole,
    workload: Option<&Workload<'_>>,
) -> Result<Vec<String>> {
    let provider_error = |source| Error::Provider {
        provider: provider.name().to_string(),
        source,
    };
    let machines = call(
        ctx,
        provider,
        "list_machines",
        provider.list_machines(cluster, role).await,
    )
    .map_err(provider_error)?;
    let mut remaining = Vec::new();
    for machine in machines {
        if machine.phase != MachinePhase::Deleting
            && let Some(workload) = workload
            && let Some(node) = workload.nodes.get(&machine.provider_id)
        {
            let node_name = node.metadata.name.clone().unwrap_or_default();
            let drain = drain::step(
                &workload.client,
                node,
                workload.drain_timeout,
                Timestamp::now(),
            )
            .await
            .map_err(|e| Error::WorkloadApi {
                cluster: cluster.name.clone(),
                message: format!("draining Node {node_name}: {e}"),
            })?;
            if let Drain::Waiting { pods, deadline } = drain {
                remaining.push(format!(
                    "{} (draining Node {node_name} until {deadline}: waiting for {})",
                    machine.name,
                    slipway_api::conditions::join_truncated(&pods, ", ")
                ));
                continue;
            }
        }
        let outcome = provider.delete_machine(cluster, role, &machine.name).await;
        if let Deletion::InProgress(_) =
            call(ctx, provider, "delete_machine", outcome).map_err(provider_error)?
        {
            remaining.push(machine.name);
        }
    }
    Ok(remaining)
}

/// Counts a provider call's outcome in the metrics and passes it on.
pub fn call<T>(
    ctx: &Context,
    provider: &dyn InfrastructureProvider,
    operation: &'static str,
    outcome: slipway_provider::Result<T>,
) -> slipway_provider::Result<T> {
    let label = match &outcome {
        Ok(_) => "ok",
        Err(e) => e.metric_label(),
    };
    ctx.metrics.provider_call(provider.name(), operation, label);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    const NEW: &str = "new";
    const OLD: &str = "old";

    fn machine(name: &str, hash: &str, ready: bool, age: i64) -> Machine {
        Machine {
            name: name.into(),
            provider_id: format!("sim://{name}"),
            phase: if ready {
                MachinePhase::Running
            } else {
                MachinePhase::Provisioning
            },
            ready,
            template_hash: hash.into(),
            created_at: Timestamp::from_second(1_000_000 - age).unwrap(),
            version: None,
        }
    }

    fn spec(replicas: usize, max_surge: usize, max_unavailable: usize) -> GroupSpec {
        GroupSpec {
            role: MachineRole::Worker { pool: "w".into() },
            prefix: "w".into(),
            replicas,
            settings: MachineSettings::default(),
            kubernetes_version: "v1.37.2".into(),
            max_surge,
            max_unavailable,
            serial: false,
        }
    }

    #[test]
    fn an_empty_group_gets_every_replica_at_once_with_deterministic_names() {
        let plan = plan(&[], &spec(3, 1, 0), NEW);
        assert_eq!(plan.create, ["w-new-0", "w-new-1", "w-new-2"]);
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn a_large_scale_up_creates_a_bounded_number_per_pass_and_gets_there() {
        let group = spec(1000, 1, 0);
        let mut machines: Vec<Machine> = Vec::new();
        let mut passes = 0;
        loop {
            let plan = plan(&machines, &group, NEW);
            assert!(
                plan.create.len() <= MAX_CREATES_PER_PASS,
                "{} creates in one pass",
                plan.create.len()
            );
            assert!(plan.delete.is_empty());
            if plan.create.is_empty() {
                break;
            }
            machines.extend(plan.create.iter().map(|n| machine(n, NEW, true, 0)));
            passes += 1;
            assert!(passes <= 1000, "the pool never gets there");
        }
        assert_eq!(machines.len(), 1000);
        assert_eq!(passes, 1000 / MAX_CREATES_PER_PASS);
        // Names stay unique and deterministic across passes.
        let names: BTreeSet<&str> = machines.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names.len(), 1000);
        assert!(names.contains("w-new-999"));
    }

    fn control_plane(replicas: usize) -> GroupSpec {
        GroupSpec {
            serial: true,
            ..spec(replicas, 1, 0)
        }
    }

    #[test]
    fn a_serial_group_grows_one_ready_member_at_a_time() {
        let group = control_plane(3);
        assert_eq!(plan(&[], &group, NEW).create, ["w-new-0"]);
        let mut machines = vec![machine("w-new-0", NEW, false, 0)];
        assert_eq!(
            plan(&machines, &group, NEW),
            Plan::default(),
            "no second member while the first is not ready"
        );
        machines[0] = machine("w-new-0", NEW, true, 0);
        assert_eq!(plan(&machines, &group, NEW).create, ["w-new-1"]);
        machines.push(machine("w-new-1", NEW, true, 0));
        assert_eq!(plan(&machines, &group, NEW).create, ["w-new-2"]);
    }

    #[test]
    fn a_serial_group_shrinks_one_member_per_step() {
        let machines: Vec<_> = (0..5)
            .map(|i| machine(&format!("w-new-{i}"), NEW, true, i))
            .collect();
        let plan = plan(&machines, &control_plane(1), NEW);
        assert_eq!(plan.delete.len(), 1, "{plan:?}");
        assert!(plan.create.is_empty());
    }

    #[test]
    fn a_serial_group_replaces_by_adding_a_member_before_removing_one() {
        let group = control_plane(3);
        let mut machines: Vec<_> = (0..3)
            .map(|i| machine(&format!("w-old-{i}"), OLD, true, 10 - i))
            .collect();
        let mut passes = 0;
        loop {
            let step = plan(&machines, &group, NEW);
            if step == Plan::default() {
                break;
            }
            assert!(step.create.len() + step.delete.len() == 1, "{step:?}");
            // Never fewer than three ready members: the new one is ready before an old one goes.
            machines.retain(|m| !step.delete.contains(&m.name));
            assert!(machines.iter().filter(|m| m.ready).count() >= 3);
            machines.extend(step.create.iter().map(|n| machine(n, NEW, true, 0)));
            passes += 1;
            assert!(passes <= 10, "never done: {machines:?}");
        }
        assert!(machines.iter().all(|m| m.template_hash == NEW));
        assert_eq!(machines.len(), 3);
        assert_eq!(passes, 6);
    }

    #[test]
    fn a_converged_group_needs_nothing() {
        let machines: Vec<_> = (0..3)
            .map(|i| machine(&format!("w-new-{i}"), NEW, true, i))
            .collect();
        assert_eq!(plan(&machines, &spec(3, 1, 0), NEW), Plan::default());
    }

    #[test]
    fn scaling_up_fills_the_lowest_free_indices() {
        let machines = vec![
            machine("w-new-0", NEW, true, 1),
            machine("w-new-2", NEW, true, 1),
        ];
        let plan = plan(&machines, &spec(4, 1, 0), NEW);
        assert_eq!(plan.create, ["w-new-1", "w-new-3"]);
    }

    #[test]
    fn a_replaced_machine_is_deleted_and_made_again_under_a_new_name_in_the_same_step() {
        let machines = vec![
            machine("w-new-0", NEW, true, 1),
            machine("w-new-1", NEW, false, 1),
            machine("w-new-2", NEW, true, 1),
        ];
        let replace = BTreeSet::from(["w-new-1"]);
        let plan = plan_replacing(&machines, &spec(3, 1, 0), NEW, &replace);
        assert_eq!(plan.delete, ["w-new-1"]);
        assert_eq!(plan.create, ["w-new-3"]);
        // Run again after the deletion was asked for: nothing more.
        let mut leaving = machines.clone();
        leaving[1].phase = MachinePhase::Deleting;
        leaving.push(machine("w-new-3", NEW, false, 0));
        let plan = plan_replacing(&leaving, &spec(3, 1, 0), NEW, &BTreeSet::new());
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn scaling_down_removes_not_ready_then_newest_machines() {
        let machines = vec![
            machine("w-new-0", NEW, true, 30),
            machine("w-new-1", NEW, true, 10),
            machine("w-new-2", NEW, false, 20),
            machine("w-new-3", NEW, true, 20),
        ];
        let plan = plan(&machines, &spec(2, 1, 0), NEW);
        assert_eq!(plan.delete, ["w-new-2", "w-new-1"]);
        assert!(plan.create.is_empty());
    }

    #[test]
    fn rolling_with_surge_one_creates_one_before_removing_any() {
        let machines: Vec<_> = (0..3)
            .map(|i| machine(&format!("w-old-{i}"), OLD, true, 10))
            .collect();
        let first = plan(&machines, &spec(3, 1, 0), NEW);
        assert_eq!(first.create, ["w-new-0"]);
        assert!(
            first.delete.is_empty(),
            "maxUnavailable 0: nothing goes before its replacement is ready"
        );

        // The replacement exists but is not ready yet: wait.
        let mut machines = machines;
        machines.push(machine("w-new-0", NEW, false, 0));
        assert_eq!(plan(&machines, &spec(3, 1, 0), NEW), Plan::default());

        // Ready: one old machine goes, one more new one comes.
        machines.last_mut().unwrap().ready = true;
        let next = plan(&machines, &spec(3, 1, 0), NEW);
        assert_eq!(next.delete.len(), 1);
        assert!(next.delete[0].starts_with("w-old-"));
        assert_eq!(next.create, ["w-new-1"]);
    }

    #[test]
    fn rolling_with_unavailable_one_and_no_surge_removes_first() {
        let machines: Vec<_> = (0..3)
            .map(|i| machine(&format!("w-old-{i}"), OLD, true, 10))
            .collect();
        let first = plan(&machines, &spec(3, 0, 1), NEW);
        assert_eq!(first.delete.len(), 1);
        assert_eq!(first.create, ["w-new-0"]);
    }

    #[test]
    fn a_rollout_never_exceeds_surge_or_unavailability_limits() {
        // Simulate a rollout where every created machine becomes ready one step later.
        for (surge, unavailable) in [(1, 0), (0, 1), (2, 1), (1, 2)] {
            let group = spec(5, surge, unavailable);
            let mut machines: Vec<Machine> = (0..5)
                .map(|i| machine(&format!("w-old-{i}"), OLD, true, 10))
                .collect();
            for _step in 0..40 {
                let plan = plan(&machines, &group, NEW);
                machines.retain(|m| !plan.delete.contains(&m.name));
                let ready = machines.iter().filter(|m| m.ready).count();
                assert!(
                    ready >= 5 - unavailable,
                    "too few ready ({ready}) with {surge}/{unavailable}"
                );
                machines.extend(plan.create.iter().map(|n| machine(n, NEW, false, 0)));
                assert!(
                    machines.len() <= 5 + surge,
                    "too many machines with {surge}/{unavailable}"
                );
                // Time passes: what was created becomes ready.
                for m in machines.iter_mut() {
                    m.ready = true;
                }
            }
            assert!(
                machines.iter().all(|m| m.template_hash == NEW && m.ready),
                "rollout finished"
            );
            assert_eq!(machines.len(), 5);
        }
    }

    #[test]
    fn the_template_hash_changes_with_version_and_settings_only() {
        let role = MachineRole::Worker { pool: "a".into() };
        let other_pool = MachineRole::Worker { pool: "b".into() };
        let base = template_hash(&role, "v1.37.2", &MachineSettings::default());
        assert_eq!(
            base,
            template_hash(&other_pool, "v1.37.2", &MachineSettings::default())
        );
        assert_ne!(
            base,
            template_hash(&role, "v1.37.3", &MachineSettings::default())
        );
        let bigger = MachineSettings {
            instance_type: Some("m5.large".into()),
            ..Default::default()
        };
        assert_ne!(base, template_hash(&role, "v1.37.2", &bigger));
        assert_eq!(base.len(), 7);
    }
}
