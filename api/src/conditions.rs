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

/// `Condition.status` values (`metav1.ConditionStatus`).
pub const STATUS_TRUE: &str = "True";
/// See [`STATUS_TRUE`].
pub const STATUS_FALSE: &str = "False";
/// See [`STATUS_TRUE`].
pub const STATUS_UNKNOWN: &str = "Unknown";

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
