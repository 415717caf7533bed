//! Which of a pool's machines are unhealthy, and which of them may be replaced now (the pool's `spec.health`).
//!
//! A machine is unhealthy when the provider reports it failed, or, once the workload cluster's Nodes are listed,
//! when its Node has not been Ready for `unhealthyAfter` or it has had no Node for `nodeStartupTimeout` since it
//! was created. Replacing is deleting: the pool's ordinary scaling makes the machine again. When more machines are
//! unhealthy than `maxUnhealthy` allows, none is replaced: that many failing at once points at the network or the
//! control plane, and replacing them would only wipe the pool.
//!
//! Everything here is decided from the provider's listing and the Nodes as they are now, so a pass interrupted
//! after a deletion and run again finds that machine gone or being deleted, and does not replace another for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use slipway_api::{MachineHealth, MachinePhase};
use slipway_provider::Machine;

/// A pool's `spec.health`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub unhealthy_after: SignedDuration,
    pub node_startup_timeout: SignedDuration,
    /// The most machines that may be unhealthy for any to be replaced.
    pub max_unhealthy: usize,
    /// The most machines replaced at once.
    pub at_once: usize,
}

impl Policy {
    /// The policy of a pool of `replicas` machines. A percentage of `maxUnhealthy` rounds down, but never below one
    /// machine, so a pool of one or two is still repaired. Values admission would refuse fall back to the defaults.
    pub fn new(health: &MachineHealth, replicas: usize, max_surge: usize) -> Self {
        let defaults = MachineHealth::default();
        let duration = |text: &str, default: &str| {
            text.parse::<SignedDuration>()
                .or_else(|_| default.parse())
                .unwrap_or(SignedDuration::from_mins(5))
        };
        let max_unhealthy = match health.max_unhealthy.strip_suffix('%') {
            Some(percent) => {
                let percent: usize = percent.parse().unwrap_or(40).min(100);
                (replicas * percent / 100).max(1)
            }
            None => health.max_unhealthy.parse().unwrap_or(replicas * 40 / 100),
        };
        Self {
            unhealthy_after: duration(&health.unhealthy_after, &defaults.unhealthy_after),
            node_startup_timeout: duration(
                &health.node_startup_timeout,
                &defaults.node_startup_timeout,
            ),
            max_unhealthy,
            at_once: max_surge.max(1),
        }
    }
}

/// An unhealthy machine and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    pub machine: String,
    pub why: String,
}

/// What the pool's health allows this pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remediation {
    /// Every unhealthy machine, by name.
    pub unhealthy: Vec<Unhealthy>,
    /// The machines to replace now (deleted this pass, made again by the pool's scaling).
    pub replace: Vec<Unhealthy>,
    /// Why none is replaced although some are unhealthy, when too many are.
    pub blocked: Option<String>,
    /// When a machine that is not unhealthy yet will be, if nothing changes: the pool looks again then.
    pub next_check: Option<Duration>,
}

/// Assesses the live machines and decides which to replace. `nodes` are the workload cluster's Nodes by provider
/// ID, when every Node has been listed; without them only a provider's failure counts.
pub fn decide(
    machines: &[Machine],
    nodes: Option<&HashMap<String, Arc<Node>>>,
    policy: &Policy,
    now: Timestamp,
) -> Remediation {
    let mut remediation = Remediation::default();
    let mut soonest: Option<SignedDuration> = None;
    let mut later = |at: Timestamp| {
        let left = at.duration_since(now);
        soonest = Some(soonest.map_or(left, |s| s.min(left)));
    };
    for machine in machines {
        if machine.phase == MachinePhase::Deleting {
            continue;
        }
        let unhealthy = |why: String| Unhealthy {
            machine: machine.name.clone(),
            why,
        };
        if machine.phase == MachinePhase::Failed {
            remediation
                .unhealthy
                .push(unhealthy("the provider reports it failed".into()));
            continue;
        }
        let Some(nodes) = nodes else { continue };
        match nodes.get(&machine.provider_id) {
            Some(node) if !crate::nodes::is_ready(node) => {
                let since = not_ready_since(node).unwrap_or(machine.created_at);
                let deadline = since
                    .saturating_add(policy.unhealthy_after)
                    .unwrap_or(since);
                if now >= deadline {
                    remediation.unhealthy.push(unhealthy(format!(
                        "its Node {} has not been Ready for {}",
                        node.metadata.name.as_deref().unwrap_or_default(),
                        rounded(now.duration_since(since))
                    )));
                } else {
                    later(deadline);
                }
            }
            Some(_) => {}
            None => {
                let deadline = machine
                    .created_at
                    .saturating_add(policy.node_startup_timeout)
                    .unwrap_or(machine.created_at);
                if now >= deadline {
                    remediation.unhealthy.push(unhealthy(format!(
                        "it has had no Node for {} since it was created",
                        rounded(now.duration_since(machine.created_at))
                    )));
                } else {
                    later(deadline);
                }
            }
        }
    }
    remediation.next_check = soonest.map(|s| Duration::try_from(s).unwrap_or_default());

    let count = remediation.unhealthy.len();
    if count > policy.max_unhealthy {
        let names: Vec<String> = remediation
            .unhealthy
            .iter()
            .map(|u| format!("{} ({})", u.machine, u.why))
            .collect();
        remediation.blocked = Some(format!(
            "{count} machines are unhealthy, more than spec.health.maxUnhealthy allows ({}), so none is replaced \
             until fewer are: {}",
            policy.max_unhealthy,
            slipway_api::conditions::join_truncated(&names, ", ")
        ));
        return remediation;
    }
    // Machines already on their way out count against how many are replaced at once.
    let leaving = machines
        .iter()
        .filter(|m| m.phase == MachinePhase::Deleting)
        .count();
    let room = policy.at_once.saturating_sub(leaving);
    remediation.replace = remediation.unhealthy.iter().take(room).cloned().collect();
    remediation
}

/// When the Node's `Ready` condition last changed to what it is, if it has one.
fn not_ready_since(node: &Node) -> Option<Timestamp> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

/// A duration to the second, for messages.
fn rounded(duration: SignedDuration) -> String {
    let seconds = duration.as_secs().max(0);
    format!("{:#}", SignedDuration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    use super::*;

    fn now() -> Timestamp {
        "2026-12-03T12:00:00Z".parse().unwrap()
    }

    fn machine(name: &str, phase: MachinePhase, age_secs: i64) -> Machine {
        Machine {
            name: name.into(),
            provider_id: format!("local://ns/c/{name}"),
            phase,
            ready: phase == MachinePhase::Running,
            template_hash: "abc".into(),
            created_at: now() - SignedDuration::from_secs(age_secs),
            version: None,
        }
    }

    fn node(name: &str, ready: &str, changed_secs_ago: i64) -> (String, Arc<Node>) {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some(format!("local://ns/c/{name}")),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    last_transition_time: Some(Time(
                        now() - SignedDuration::from_secs(changed_secs_ago),
                    )),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        };
        (format!("local://ns/c/{name}"), Arc::new(node))
    }

    fn policy(replicas: usize) -> Policy {
        Policy::new(&MachineHealth::default(), replicas, 1)
    }

    #[test]
    fn defaults_are_five_and_ten_minutes_and_forty_percent_but_at_least_one() {
        let p = policy(5);
        assert_eq!(p.unhealthy_after, SignedDuration::from_mins(5));
        assert_eq!(p.node_startup_timeout, SignedDuration::from_mins(10));
        assert_eq!(p.max_unhealthy, 2, "40% of 5");
        assert_eq!(
            policy(1).max_unhealthy,
            1,
            "a pool of one is still repaired"
        );
        let counted = MachineHealth {
            max_unhealthy: "3".into(),
            ..Default::default()
        };
        assert_eq!(Policy::new(&counted, 10, 1).max_unhealthy, 3);
    }

    #[test]
    fn a_node_not_ready_past_the_limit_a_missing_node_past_startup_and_a_failed_machine_are_unhealthy()
     {
        let machines = vec![
            machine("a", MachinePhase::Running, 3600),
            machine("b", MachinePhase::Running, 3600),
            machine("c", MachinePhase::Running, 700),
            machine("d", MachinePhase::Failed, 3600),
            machine("e", MachinePhase::Running, 3600),
        ];
        let nodes: HashMap<_, _> = [
            node("a", "False", 301),
            node("b", "Unknown", 60),
            node("e", "True", 10),
        ]
        .into();
        let policy = Policy {
            max_unhealthy: 5,
            at_once: 5,
            ..policy(5)
        };
        let r = decide(&machines, Some(&nodes), &policy, now());
        let names: Vec<&str> = r.unhealthy.iter().map(|u| u.machine.as_str()).collect();
        assert_eq!(names, ["a", "c", "d"], "{r:?}");
        assert_eq!(
            r.unhealthy[0].why,
            "its Node a has not been Ready for 5m 1s"
        );
        assert_eq!(
            r.unhealthy[1].why,
            "it has had no Node for 11m 40s since it was created"
        );
        assert_eq!(r.replace.len(), 3);
        assert_eq!(r.blocked, None);
        // b turns unhealthy first: 240 s from now.
        assert_eq!(r.next_check, Some(Duration::from_secs(240)));

        // Without the Nodes, only the provider's failure counts.
        let r = decide(&machines, None, &policy, now());
        assert_eq!(r.unhealthy.len(), 1);
        assert_eq!(r.unhealthy[0].machine, "d");
    }

    #[test]
    fn more_unhealthy_than_allowed_replaces_none_and_says_why() {
        let machines: Vec<Machine> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| machine(n, MachinePhase::Running, 3600))
            .collect();
        let nodes: HashMap<_, _> = [
            node("a", "False", 600),
            node("b", "False", 600),
            node("c", "Unknown", 600),
            node("d", "True", 600),
            node("e", "True", 600),
        ]
        .into();
        let r = decide(&machines, Some(&nodes), &policy(5), now());
        assert_eq!(r.unhealthy.len(), 3);
        assert!(r.replace.is_empty());
        let blocked = r.blocked.expect("blocked");
        assert!(
            blocked.starts_with(
                "3 machines are unhealthy, more than spec.health.maxUnhealthy allows (2)"
            ),
            "{blocked}"
        );
        assert!(
            blocked.contains("a (its Node a has not been Ready for 10m)"),
            "{blocked}"
        );
    }

    #[test]
    fn replacements_go_at_most_max_surge_at_a_time_counting_machines_still_leaving() {
        let mut machines: Vec<Machine> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| machine(n, MachinePhase::Failed, 3600))
            .collect();
        let lenient = Policy {
            max_unhealthy: 5,
            ..policy(5)
        };
        let r = decide(&machines, None, &lenient, now());
        assert_eq!(r.replace.len(), 1, "maxSurge 1");
        assert_eq!(r.replace[0].machine, "a");
        // Interrupted after deleting a and run again: a is leaving, nothing more goes until it is gone.
        machines[0].phase = MachinePhase::Deleting;
        let r = decide(&machines, None, &lenient, now());
        assert!(r.replace.is_empty(), "{r:?}");
        assert_eq!(r.unhealthy.len(), 4);
    }
}
