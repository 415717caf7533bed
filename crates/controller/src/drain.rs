//! Draining a machine's Node before the machine is deleted: cordon it, then evict its Pods through the Eviction
//! API (so PodDisruptionBudgets are honoured), leaving DaemonSet and mirror Pods alone, until none is left or the
//! pool's `drainTimeout` has passed.
//!
//! When the drain started is recorded on the Node itself (an annotation written with the cordon), so a pass
//! interrupted anywhere, or a manager restarted, goes on with the same drain and the same deadline. A Node that is
//! not Ready is not drained: its kubelet could not stop the Pods, so waiting would only delay the replacement.

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// When Slipway cordoned the Node to drain it (RFC 3339).
pub const DRAIN_STARTED_ANNOTATION: &str = "slipway.dev/drain-started";

/// Where a drain stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drain {
    /// The machine may be deleted: the Node is empty of Pods to evict, not Ready, or its drain timed out.
    Done,
    /// Pods are still on the Node: each as `namespace/name`, with why it is still there when it is known.
    Waiting {
        pods: Vec<String>,
        deadline: Timestamp,
    },
}

/// One step of draining `node`: cordons it (once), asks every Pod to leave, and says whether it is done.
pub async fn step(
    client: &Client,
    node: &Node,
    timeout: SignedDuration,
    now: Timestamp,
) -> Result<Drain, kube::Error> {
    if timeout.is_zero() || !crate::nodes::is_ready(node) {
        return Ok(Drain::Done);
    }
    let name = node.name_any();
    let started = node
        .annotations()
        .get(DRAIN_STARTED_ANNOTATION)
        .and_then(|t| t.parse::<Timestamp>().ok());
    let deadline = started
        .unwrap_or(now)
        .saturating_add(timeout)
        .unwrap_or(now);
    if now >= deadline {
        return Ok(Drain::Done);
    }
    let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    if started.is_none() || !cordoned {
        let mut annotations = serde_json::Map::new();
        if started.is_none() {
            annotations.insert(DRAIN_STARTED_ANNOTATION.into(), json!(now.to_string()));
        }
        Api::<Node>::all(client.clone())
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": { "annotations": annotations },
                    "spec": { "unschedulable": true }
                })),
            )
            .await?;
    }

    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
        .await?;
    let mut waiting = Vec::new();
    for pod in pods.items.iter().filter(|p| must_leave(p)) {
        let namespace = pod.namespace().unwrap_or_default();
        let pod_name = pod.name_any();
        let label = format!("{namespace}/{pod_name}");
        if pod.metadata.deletion_timestamp.is_some() {
            waiting.push(format!("{label} (terminating)"));
            continue;
        }
        match Api::<Pod>::namespaced(client.clone(), &namespace)
            .evict(&pod_name, &EvictParams::default())
            .await
        {
            Ok(_) => waiting.push(format!("{label} (evicted)")),
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            // The apiserver refuses an eviction that would break a PodDisruptionBudget with 429.
            Err(kube::Error::Api(status)) if status.code == 429 => {
                waiting.push(format!(
                    "{label} (a PodDisruptionBudget does not allow its eviction now)"
                ));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(if waiting.is_empty() {
        Drain::Done
    } else {
        Drain::Waiting {
            pods: waiting,
            deadline,
        }
    })
}

/// Takes back a cordon Slipway made for a drain that is no longer wanted (the machine is staying after all).
/// Writes nothing when the Node carries no drain of Slipway's.
pub async fn cancel(client: &Client, node: &Node) -> Result<(), kube::Error> {
    if !node.annotations().contains_key(DRAIN_STARTED_ANNOTATION) {
        return Ok(());
    }
    Api::<Node>::all(client.clone())
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": { "annotations": { DRAIN_STARTED_ANNOTATION: null } },
                "spec": { "unschedulable": null }
            })),
        )
        .await?;
    Ok(())
}

/// Whether a Pod on a drained Node has to leave: not a mirror Pod (the kubelet's own, from a static manifest), not a
/// DaemonSet's (it would be made again on the same Node), not finished.
fn must_leave(pod: &Pod) -> bool {
    let mirror = pod
        .annotations()
        .contains_key("kubernetes.io/config.mirror");
    let daemon = pod
        .owner_references()
        .iter()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    !(mirror || daemon || finished)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ObjectMeta;

    use super::*;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn daemon_set_mirror_and_finished_pods_stay_others_leave() {
        assert!(must_leave(&pod()));
        let mut daemon = pod();
        daemon.metadata.owner_references = Some(vec![OwnerReference {
            kind: "DaemonSet".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        assert!(!must_leave(&daemon));
        let mut mirror = pod();
        mirror.metadata.annotations =
            Some([("kubernetes.io/config.mirror".to_string(), "x".to_string())].into());
        assert!(!must_leave(&mirror));
        let mut done = pod();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!must_leave(&done));
        let mut replica = pod();
        replica.metadata.owner_references = Some(vec![OwnerReference {
            kind: "ReplicaSet".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        assert!(must_leave(&replica));
    }
}
