//! Whether applied objects are ready, and whether a workload API answers at all.
//!
//! Only kinds with a notion of readiness are checked: Deployments, DaemonSets, StatefulSets and
//! CustomResourceDefinitions. Anything else is ready once applied, which the apply report already proves.

use std::fmt;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::object_ref::ObjectRef;

/// How often [`wait_ready`] looks again.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// An object that is not ready yet, and what it waits for in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    pub object: ObjectRef,
    pub reason: String,
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.reason)
    }
}

/// The objects among `objects` that are not ready, each with a reason. Empty means all are ready.
///
/// - Deployment: the controller has seen the latest spec, every replica runs it and is available, and the
///   `Available` condition is True (what `kubectl rollout status` waits for).
/// - DaemonSet: seen the latest spec, and every node that should run a pod runs an updated, ready one.
/// - StatefulSet: seen the latest spec, and every replica is updated and ready.
/// - CustomResourceDefinition: `Established` is True.
pub async fn readiness(client: &Client, objects: &[ObjectRef]) -> Result<Vec<NotReady>> {
    let mut not_ready = Vec::new();
    for object in objects {
        let namespace = object.namespace.as_deref().unwrap_or("default");
        let reason = if object.is("apps", "Deployment") {
            check(
                Api::namespaced(client.clone(), namespace),
                object,
                deployment_reason,
            )
            .await?
        } else if object.is("apps", "DaemonSet") {
            check(
                Api::namespaced(client.clone(), namespace),
                object,
                daemon_set_reason,
            )
            .await?
        } else if object.is("apps", "StatefulSet") {
            check(
                Api::namespaced(client.clone(), namespace),
                object,
                stateful_set_reason,
            )
            .await?
        } else if object.is("apiextensions.k8s.io", "CustomResourceDefinition") {
            check(Api::all(client.clone()), object, crd_reason).await?
        } else {
            None
        };
        if let Some(reason) = reason {
            not_ready.push(NotReady {
                object: object.clone(),
                reason,
            });
        }
    }
    Ok(not_ready)
}

/// Polls [`readiness`] until everything is ready, or fails after `timeout` listing what still is not.
pub async fn wait_ready(client: &Client, objects: &[ObjectRef], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let not_ready = readiness(client, objects).await?;
        if not_ready.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::NotReady {
                objects: not_ready,
                seconds: timeout.as_secs(),
            });
        }
        tracing::debug!(waiting = not_ready.len(), first = %not_ready[0], "add-ons not ready yet");
        tokio::time::sleep(POLL_INTERVAL.min(deadline - Instant::now())).await;
    }
}

/// Waits until the workload cluster's apiserver answers `/readyz`, retrying with exponential backoff and jitter:
/// add-ons are applied only once the API is there, and a cluster that is still booting should not be hammered.
pub async fn wait_for_api(client: &Client, timeout: Duration) -> Result<()> {
    // One attempt may hang on a half-open connection; give each a bounded slice of the budget.
    const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
    let attempt = || async {
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request_text(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs())),
        }
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times();
    let last = std::sync::Mutex::new(String::new());
    let retried = attempt.retry(backoff).notify(|e: &String, delay| {
        tracing::debug!(error = %e, ?delay, "workload API not ready; retrying");
        *last.lock().expect("not poisoned") = e.clone();
    });
    match tokio::time::timeout(timeout, retried).await {
        Ok(Ok(())) => Ok(()),
        // Unreachable with `without_max_times`, but an error is an error.
        Ok(Err(e)) => Err(Error::ApiUnreachable {
            seconds: timeout.as_secs(),
            last: e,
        }),
        Err(_) => Err(Error::ApiUnreachable {
            seconds: timeout.as_secs(),
            last: last.into_inner().expect("not poisoned"),
        }),
    }
}

async fn check<K>(
    api: Api<K>,
    object: &ObjectRef,
    reason: fn(&K) -> Option<String>,
) -> Result<Option<String>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug,
{
    let live = api
        .get_opt(&object.name)
        .await
        .map_err(|e| Error::kube(format!("get {object}"), e))?;
    Ok(match live {
        Some(live) => reason(&live),
        None => Some("not found".to_string()),
    })
}

/// `None` when the controller has seen `generation`; else why not.
fn stale(generation: Option<i64>, observed: Option<i64>) -> Option<String> {
    match (generation, observed) {
        (Some(generation), Some(observed)) if observed >= generation => None,
        (None, _) => None,
        _ => Some("its controller has not seen the latest spec yet".to_string()),
    }
}

fn deployment_reason(deployment: &Deployment) -> Option<String> {
    let status = deployment.status.clone().unwrap_or_default();
    if let Some(reason) = stale(deployment.metadata.generation, status.observed_generation) {
        return Some(reason);
    }
    let desired = deployment.spec.replicas.unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        return Some(format!("{updated} of {desired} replicas updated"));
    }
    if total > updated {
        return Some(format!(
            "{} old replicas pending termination",
            total - updated
        ));
    }
    if available < updated {
        return Some(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    let condition = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Available"));
    match condition {
        Some(c) if c.status.as_deref() == Some("True") => None,
        Some(c) => Some(format!(
            "Available is {}: {}",
            c.status.unwrap_or_default(),
            c.message.unwrap_or_default()
        )),
        None => Some("no Available condition yet".to_string()),
    }
}

fn daemon_set_reason(daemon_set: &DaemonSet) -> Option<String> {
    let status = daemon_set.status.clone().unwrap_or_default();
    if let Some(reason) = stale(daemon_set.metadata.generation, status.observed_generation) {
        return Some(reason);
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    if updated < desired {
        return Some(format!("{updated} of {desired} scheduled pods updated"));
    }
    if status.number_ready < desired {
        return Some(format!("{} of {desired} pods ready", status.number_ready));
    }
    None
}

fn stateful_set_reason(stateful_set: &StatefulSet) -> Option<String> {
    let status = stateful_set.status.clone().unwrap_or_default();
    if let Some(reason) = stale(stateful_set.metadata.generation, status.observed_generation) {
        return Some(reason);
    }
    let desired = stateful_set.spec.replicas.unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if updated < desired {
        return Some(format!("{updated} of {desired} replicas updated"));
    }
    if ready < desired {
        return Some(format!("{ready} of {desired} replicas ready"));
    }
    None
}

fn crd_reason(crd: &CustomResourceDefinition) -> Option<String> {
    if is_established(crd) {
        None
    } else {
        Some("not Established yet".to_string())
    }
}

pub(crate) fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DaemonSetStatus, DeploymentCondition, DeploymentSpec, DeploymentStatus,
    };
    use kube::api::ObjectMeta;

    fn deployment(replicas: i32, status: DeploymentStatus) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(2),
                ..Default::default()
            },
            spec: DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            },
            status: Some(status),
        }
    }

    fn available(status: &str) -> Option<Vec<DeploymentCondition>> {
        Some(vec![DeploymentCondition {
            type_: Some("Available".into()),
            status: Some(status.into()),
            ..Default::default()
        }])
    }

    #[test]
    fn a_deployment_is_ready_when_every_replica_is_updated_available_and_the_condition_agrees() {
        let ready = DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(2),
            updated_replicas: Some(2),
            available_replicas: Some(2),
            conditions: available("True"),
            ..Default::default()
        };
        assert_eq!(deployment_reason(&deployment(2, ready.clone())), None);

        let stale = DeploymentStatus {
            observed_generation: Some(1),
            ..ready.clone()
        };
        assert!(
            deployment_reason(&deployment(2, stale))
                .unwrap()
                .contains("latest spec")
        );

        let rolling = DeploymentStatus {
            replicas: Some(3),
            updated_replicas: Some(1),
            ..ready.clone()
        };
        assert_eq!(
            deployment_reason(&deployment(2, rolling)).unwrap(),
            "1 of 2 replicas updated"
        );

        let unavailable = DeploymentStatus {
            conditions: available("False"),
            ..ready
        };
        assert!(
            deployment_reason(&deployment(2, unavailable))
                .unwrap()
                .starts_with("Available is False")
        );
    }

    #[test]
    fn a_daemon_set_is_ready_when_every_scheduled_pod_is_updated_and_ready() {
        let daemon_set = |ready: i32, updated: i32| DaemonSet {
            metadata: ObjectMeta {
                generation: Some(1),
                ..Default::default()
            },
            status: Some(DaemonSetStatus {
                observed_generation: Some(1),
                desired_number_scheduled: 3,
                number_ready: ready,
                updated_number_scheduled: Some(updated),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(daemon_set_reason(&daemon_set(3, 3)), None);
        assert_eq!(
            daemon_set_reason(&daemon_set(2, 3)).unwrap(),
            "2 of 3 pods ready"
        );
        assert_eq!(
            daemon_set_reason(&daemon_set(3, 1)).unwrap(),
            "1 of 3 scheduled pods updated"
        );
        // Just created: the controller has not written a status yet.
        let fresh = DaemonSet {
            status: None,
            ..daemon_set(0, 0)
        };
        assert!(daemon_set_reason(&fresh).is_some());
    }
}
