//! Condition types the controllers report, and the few operations on a condition list that every status
//! writer needs.
//!
//! Conditions are plain `metav1.Condition`s (type, status, CamelCase reason, message, lastTransitionTime,
//! observedGeneration) so that `kubectl wait --for=condition=Ready` and every tool that reads Cluster API
//! conditions work on Slipway objects unchanged. The lists are `x-kubernetes-list-type: map` keyed by `type`.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Cluster: the provider's network, load balancer and other shared infrastructure exist.
pub const INFRASTRUCTURE_READY: &str = "InfrastructureReady";
/// Cluster: the control plane machines run and the workload cluster's API answers.
pub const CONTROL_PLANE_READY: &str = "ControlPlaneReady";
/// Cluster: every MachinePool of the cluster has all its replicas ready.
pub const NODES_READY: &str = "NodesReady";
/// Cluster: every AddonBundle selecting the cluster is applied and ready.
pub const ADDONS_READY: &str = "AddonsReady";
/// Cluster and MachinePool: the summary. On a Cluster it is True when all the other conditions are; on a
/// MachinePool, when every desired replica runs the current template and is ready.
pub const READY: &str = "Ready";
/// MachinePool: machines are being created to reach `spec.replicas`.
pub const SCALING_UP: &str = "ScalingUp";
/// MachinePool: surplus machines are being deleted to reach `spec.replicas`.
pub const SCALING_DOWN: &str = "ScalingDown";
/// MachinePool: outdated machines are being replaced within `maxSurge`/`maxUnavailable`.
pub const ROLLING_OUT: &str = "RollingOut";
/// MachinePool: Nodes of machines about to be deleted are being drained; the message names the Pods still on them.
pub const DRAINING: &str = "Draining";
/// MachinePool: more machines are unhealthy than `spec.health.maxUnhealthy` allows, so none is replaced.
pub const REMEDIATION_BLOCKED: &str = "RemediationBlocked";

/// Every condition type a Cluster reports, in the order the provisioning steps reach them.
pub const CLUSTER_CONDITION_TYPES: [&str; 5] = [
    INFRASTRUCTURE_READY,
    CONTROL_PLANE_READY,
    NODES_READY,
    ADDONS_READY,
    READY,
];
/// Every condition type a MachinePool reports.
pub const MACHINE_POOL_CONDITION_TYPES: [&str; 4] = [READY, SCALING_UP, SCALING_DOWN, ROLLING_OUT];

/// The `reason`s Slipway's controllers give, one name for each, so the manager, the CLI and the benches agree.
/// A provider's failure is reported with the provider's own reason (`ProviderError::reason`, e.g.
/// `InvalidCredentials`), which is not listed here.
pub mod reason {
    /// The condition holds.
    pub const READY: &str = "Ready";
    /// Cluster: steps are under way.
    pub const PROVISIONING: &str = "Provisioning";
    /// Cluster `InfrastructureReady`: the provider's infrastructure exists.
    pub const PROVISIONED: &str = "Provisioned";
    /// Cluster or MachinePool being deleted.
    pub const DELETING: &str = "Deleting";
    /// Cluster: its `spec.infrastructure` names a provider this manager does not run.
    pub const PROVIDER_NOT_REGISTERED: &str = "ProviderNotRegistered";
    /// Cluster `ControlPlaneReady`: the infrastructure is not ready yet.
    pub const WAITING_FOR_INFRASTRUCTURE: &str = "WaitingForInfrastructure";
    /// Cluster `ControlPlaneReady` or MachinePool `Ready`: machines are not all ready yet.
    pub const WAITING_FOR_MACHINES: &str = "WaitingForMachines";
    /// Cluster `ControlPlaneReady` or MachinePool `RollingOut`: outdated machines are being replaced.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// Cluster `NodesReady`: the cluster has no MachinePools, so there is nothing to wait for.
    pub const NO_MACHINE_POOLS: &str = "NoMachinePools";
    /// Cluster `NodesReady`: some MachinePool is not ready.
    pub const WAITING_FOR_NODES: &str = "WaitingForNodes";
    /// Cluster `AddonsReady`: no AddonBundle selects the cluster.
    pub const NO_ADDON_BUNDLES: &str = "NoAddonBundles";
    /// Cluster `AddonsReady`: the cluster's provider gives it no workload API, so no add-on is installed.
    pub const NO_WORKLOAD_API: &str = "NoWorkloadApi";
    /// Cluster `AddonsReady`: some selecting AddonBundle is not ready on the cluster.
    pub const WAITING_FOR_ADDONS: &str = "WaitingForAddons";
    /// MachinePool: its `spec.clusterName` names no Cluster in its namespace.
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
    /// MachinePool: its cluster's control plane is not ready, so no worker is made yet.
    pub const WAITING_FOR_CONTROL_PLANE: &str = "WaitingForControlPlane";
    /// MachinePool `ScalingUp`: machines are being added.
    pub const SCALING_UP: &str = "ScalingUp";
    /// MachinePool `ScalingDown`: machines are being removed.
    pub const SCALING_DOWN: &str = "ScalingDown";
    /// MachinePool `ScalingUp`/`ScalingDown`: the pool has the replicas it asks for.
    pub const AT_REPLICAS: &str = "AtReplicas";
    /// MachinePool `RollingOut`: every machine runs the current template.
    pub const UP_TO_DATE: &str = "UpToDate";
    /// MachinePool `Ready`: the pool's `spec.version` is outside what its control plane's version allows; the pool's
    /// machines are left as they are.
    pub const VERSION_SKEW: &str = "VersionSkew";
    /// MachinePool `Draining`: Pods are being evicted from Nodes of machines about to be deleted.
    pub const DRAINING: &str = "Draining";
    /// MachinePool `Draining` False: no Node is being drained.
    pub const NOT_DRAINING: &str = "NotDraining";
    /// MachinePool `RemediationBlocked`: more machines unhealthy than `spec.health.maxUnhealthy`.
    pub const TOO_MANY_UNHEALTHY: &str = "TooManyUnhealthy";
    /// MachinePool `RemediationBlocked` False: unhealthy machines, if any, may be replaced.
    pub const WITHIN_LIMIT: &str = "WithinLimit";
}

/// `Condition.status` values (`metav1.ConditionStatus`).
pub const STATUS_TRUE: &str = "True";
/// See [`STATUS_TRUE`].
pub const STATUS_FALSE: &str = "False";
/// See [`STATUS_TRUE`].
pub const STATUS_UNKNOWN: &str = "Unknown";

/// The most characters of a message Slipway writes into a condition, or into a status entry such as an
/// AddonBundle's per-cluster `message`: enough to say what is wrong and what to do, small enough that no error text
/// (a provider's, a manifest's) can grow an object towards the apiserver's size limit.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// `message` as it is when it has at most [`MAX_MESSAGE_CHARS`] characters; otherwise its beginning and how much
/// was left out, e.g. `… (2048 more characters)`, within [`MAX_MESSAGE_CHARS`] in all.
pub fn truncate_message(message: impl Into<String>) -> String {
    truncate_message_to(message.into(), MAX_MESSAGE_CHARS)
}

fn truncate_message_to(message: String, max: usize) -> String {
    let total = message.chars().count();
    if total <= max {
        return message;
    }
    // The suffix's length depends on the count it shows; the count of a longer kept part is never larger, so
    // sizing it for the whole message is enough.
    let reserve = format!("… ({total} more characters)").chars().count();
    let kept = max.saturating_sub(reserve);
    let mut out: String = message.chars().take(kept).collect();
    out.push_str(&format!("… ({} more characters)", total - kept));
    out
}

/// `items` joined by `separator`, as many as fit in [`MAX_MESSAGE_CHARS`] characters, followed by how many were left
/// out, e.g. `a, b, c … and 97 more`. For messages that list names (machines, objects, hosts).
pub fn join_truncated<T: AsRef<str>>(items: &[T], separator: &str) -> String {
    join_truncated_within(items, separator, MAX_MESSAGE_CHARS)
}

/// [`join_truncated`] within `max` characters, for a list that shares a message with other text.
pub fn join_truncated_within<T: AsRef<str>>(items: &[T], separator: &str, max: usize) -> String {
    let reserve = format!(" … and {} more", items.len()).chars().count();
    let mut out = String::new();
    let mut used = 0;
    for (index, item) in items.iter().enumerate() {
        let item = item.as_ref();
        let piece = if index == 0 {
            item.chars().count()
        } else {
            separator.chars().count() + item.chars().count()
        };
        let left_after = items.len() - index - 1;
        // The last item needs no room for the count; any other must leave room for it.
        let room = if left_after == 0 {
            max
        } else {
            max - reserve.min(max)
        };
        if used + piece > room {
            let omitted = items.len() - index;
            let tail = format!("… and {omitted} more");
            if out.is_empty() {
                // Not even the first item fits: say how many there are, with as much of the first as fits.
                let head = truncate_message_to(
                    item.to_string(),
                    max.saturating_sub(tail.chars().count() + 1),
                );
                return format!("{head} {tail}");
            }
            out.push(' ');
            out.push_str(&tail);
            return out;
        }
        if index > 0 {
            out.push_str(separator);
        }
        out.push_str(item);
        used += piece;
    }
    out
}

/// The condition of the given type, if the list has one.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == STATUS_TRUE)
}

/// Puts `new` into the list, replacing the condition of the same type, and says whether anything a reader
/// would notice changed.
///
/// `lastTransitionTime` means "when the status last changed", so when the status stays the same the old
/// time is kept, whatever `new` carries. That also makes a reconcile that finds nothing new write nothing:
/// the caller can compare and skip the status update when this returns `false`.
pub fn set(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            if *old == new {
                return false;
            }
            *old = new;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn condition(type_: &str, status: &str, reason: &str, at_second: i64) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::from_second(at_second).unwrap()),
        }
    }

    #[test]
    fn setting_the_same_status_keeps_the_transition_time_and_reports_no_change() {
        let mut list = vec![condition(READY, STATUS_FALSE, "Provisioning", 10)];
        assert!(!set(
            &mut list,
            condition(READY, STATUS_FALSE, "Provisioning", 99)
        ));
        assert_eq!(list[0].last_transition_time.0.as_second(), 10);
    }

    #[test]
    fn a_new_reason_with_the_same_status_is_a_change_but_keeps_the_transition_time() {
        let mut list = vec![condition(READY, STATUS_FALSE, "Provisioning", 10)];
        assert!(set(
            &mut list,
            condition(READY, STATUS_FALSE, "WaitingForNodes", 99)
        ));
        assert_eq!(list[0].reason, "WaitingForNodes");
        assert_eq!(list[0].last_transition_time.0.as_second(), 10);
    }

    #[test]
    fn a_status_change_takes_the_new_transition_time() {
        let mut list = vec![condition(READY, STATUS_FALSE, "Provisioning", 10)];
        assert!(set(&mut list, condition(READY, STATUS_TRUE, "Ready", 99)));
        assert_eq!(list[0].last_transition_time.0.as_second(), 99);
        assert!(is_true(&list, READY));
    }

    #[test]
    fn a_long_message_is_cut_to_the_limit_and_says_how_much_was_left_out() {
        let short = "x".repeat(MAX_MESSAGE_CHARS);
        assert_eq!(truncate_message(short.clone()), short);
        let long = format!("{}{}", "é".repeat(MAX_MESSAGE_CHARS), "tail");
        let cut = truncate_message(long.clone());
        assert!(cut.chars().count() <= MAX_MESSAGE_CHARS, "{}", cut.len());
        assert!(!cut.contains("tail"));
        let kept = cut.chars().take_while(|c| *c == 'é').count();
        let total = long.chars().count();
        assert!(
            cut.ends_with(&format!("… ({} more characters)", total - kept)),
            "{cut}"
        );
        assert_eq!(
            truncate_message_to("abcdefghijklmnopqrstuvwxyz0123456789".repeat(2), 40),
            "abcdefghijklmnopqr… (54 more characters)"
        );
    }

    #[test]
    fn a_long_list_keeps_what_fits_and_counts_the_rest() {
        let names: Vec<String> = (0..500).map(|i| format!("machine-{i}")).collect();
        let joined = join_truncated(&names, ", ");
        assert!(joined.chars().count() <= MAX_MESSAGE_CHARS, "{joined}");
        let shown = joined.matches("machine-").count();
        assert!(shown > 50, "{joined}");
        assert!(
            joined.ends_with(&format!("… and {} more", 500 - shown)),
            "{joined}"
        );
        assert_eq!(join_truncated(&["a", "b"], "; "), "a; b");
        assert_eq!(
            join_truncated_within(&["aaaa", "bbbb", "cccc", "dddd"], ", ", 23),
            "aaaa, bbbb … and 2 more"
        );
        assert_eq!(
            join_truncated_within(&["aaaa", "bbbb", "cccc", "dddd"], ", ", 22),
            "aaaa … and 3 more"
        );
        // A first item too long for the message alone still says how many there are.
        let huge = ["y".repeat(5000), "z".into()];
        let joined = join_truncated(&huge, ", ");
        assert!(
            joined.chars().count() <= MAX_MESSAGE_CHARS,
            "{}",
            joined.len()
        );
        assert!(joined.ends_with("… and 2 more"), "{joined}");
    }

    #[test]
    fn a_new_type_is_appended() {
        let mut list = vec![condition(READY, STATUS_FALSE, "Provisioning", 10)];
        assert!(set(
            &mut list,
            condition(NODES_READY, STATUS_UNKNOWN, "Pending", 20)
        ));
        assert_eq!(list.len(), 2);
        assert!(find(&list, NODES_READY).is_some());
        assert!(!is_true(&list, NODES_READY));
    }
}
