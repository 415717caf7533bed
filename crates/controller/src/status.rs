//! Writing status only when it changed, and building conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use slipway_api::conditions::{self, Condition, READY, STATUS_FALSE, STATUS_TRUE, reason};
use slipway_provider::{KeyedCache, ProviderError};

use crate::error::Result;

/// Server-side applies `status` when it differs from `old`; returns the object's resourceVersion after the write,
/// or `None` when nothing was written. Applying (rather than merging) also removes fields Slipway set before and no longer sets, such as `expiresAt` after the TTL is dropped.
pub async fn apply_if_changed<K, S>(
    api: &Api<K>,
    name: &str,
    old: Option<&S>,
    new: &S,
) -> Result<Option<String>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if old == Some(new) {
        return Ok(None);
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": new,
    });
    let written = api
        .patch_status(
            name,
            &PatchParams::apply(slipway_api::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(Some(
        written.meta().resource_version.clone().unwrap_or_default(),
    ))
}

/// The statuses this manager wrote that the shared cache does not show yet: per object, the resourceVersion the
/// write produced and what was written.
///
/// A pass woken before the watch delivers the manager's own status write (by its own finalizer patch, say) reads
/// the object as it was before. Started from that older status, it would find its conditions new (with new
/// transition times) and write the same status a second time. While the cached object is older than the write, the
/// pass starts from the status written instead; once the cache reaches the write (or anything after it), the cached
/// status is the start again and the entry is dropped.
///
/// "Older" compares resourceVersions as numbers, which they are on every etcd-backed apiserver; Kubernetes calls
/// them opaque, so a version that is not a number turns this off and every pass starts from the cache.
#[derive(Default)]
pub struct InFlight(KeyedCache<String, (u64, serde_json::Value)>);

impl InFlight {
    /// The status written after `cached_version`, the version the object is cached at, if any.
    pub fn newer<S: DeserializeOwned>(&self, key: &str, cached_version: Option<&str>) -> Option<S> {
        let (written_at, status) = self.0.get(key)?;
        match cached_version.and_then(|v| v.parse::<u64>().ok()) {
            Some(cached) if cached < written_at => serde_json::from_value(status).ok(),
            _ => {
                self.0.remove(key);
                None
            }
        }
    }

    /// Records that `status` was written, producing `written_version`.
    pub fn record(&self, key: String, written_version: &str, status: &impl Serialize) {
        if let (Ok(version), Ok(status)) =
            (written_version.parse::<u64>(), serde_json::to_value(status))
        {
            self.0.insert(key, (version, status));
        }
    }
}

/// A condition as of now, its message cut to [`conditions::MAX_MESSAGE_CHARS`]; [`conditions::set`] keeps the old
/// transition time when the status did not change.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { STATUS_TRUE } else { STATUS_FALSE }.to_string(),
        reason: reason.to_string(),
        // Messages carry provider and apiserver errors: bounded, so none can grow the object without limit.
        message: conditions::truncate_message(message),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// Sets each condition into `list`, in order.
pub fn set_all(list: &mut Vec<Condition>, new: impl IntoIterator<Item = Condition>) {
    for c in new {
        conditions::set(list, c);
    }
}

/// Records a provider's failure on the step condition `type_` and on `Ready`, with the provider's reason and message.
pub fn fail(
    list: &mut Vec<Condition>,
    type_: &str,
    error: &ProviderError,
    generation: Option<i64>,
) {
    let message = error.to_string();
    set_all(
        list,
        [
            condition(type_, false, error.reason(), &message, generation),
            condition(READY, false, error.reason(), &message, generation),
        ],
    );
}

/// A deletion held up by its provider (it failed, or this manager does not run it): nothing is dropped while it may
/// still exist, and `Ready` says what is stuck and why. Other errors leave the list as it is.
pub fn deletion_blocked(
    list: &mut Vec<Condition>,
    what: &str,
    error: &crate::error::Error,
    generation: Option<i64>,
) {
    use crate::error::Error;
    let (why, message) = match error {
        Error::Provider { source, .. } => {
            (source.reason(), format!("cannot delete {what}: {source}"))
        }
        Error::UnknownProvider { .. } => (
            reason::PROVIDER_NOT_REGISTERED,
            format!("cannot delete {what}: {error}"),
        ),
        _ => return,
    };
    conditions::set(list, condition(READY, false, why, message, generation));
}

/// Sets a Cluster's `Ready` from its step conditions `steps`: True when every one of them is True, otherwise False
/// naming those that are not, in order. Returns whether it is True.
pub fn summarize(list: &mut Vec<Condition>, steps: &[&str], generation: Option<i64>) -> bool {
    let waiting: Vec<&str> = steps
        .iter()
        .copied()
        .filter(|step| !conditions::is_true(list, step))
        .collect();
    let ready = waiting.is_empty();
    let (why, message) = if ready {
        (reason::READY, "the cluster is ready".to_string())
    } else {
        (
            reason::PROVISIONING,
            format!("waiting for {}", waiting.join(", ")),
        )
    };
    conditions::set(list, condition(READY, ready, why, message, generation));
    ready
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_messages_are_cut_to_the_limit_with_a_count_of_the_rest() {
        let error = format!("provider said: {}", "x".repeat(10_000));
        let built = condition("Ready", false, "ProviderError", error, Some(1));
        assert!(
            built.message.chars().count() <= conditions::MAX_MESSAGE_CHARS,
            "{}",
            built.message.len()
        );
        assert!(built.message.starts_with("provider said: xxx"));
        assert!(
            built.message.ends_with("more characters)"),
            "{}",
            built.message
        );
        let short = condition("Ready", true, "Ready", "3 of 3 machines ready", Some(1));
        assert_eq!(short.message, "3 of 3 machines ready");
    }

    #[test]
    fn ready_is_true_only_when_every_step_is_and_names_the_steps_it_waits_for() {
        use slipway_api::conditions::{ADDONS_READY, CONTROL_PLANE_READY, NODES_READY};
        let steps = [CONTROL_PLANE_READY, NODES_READY, ADDONS_READY];
        let mut list = vec![
            condition(CONTROL_PLANE_READY, true, "Ready", "", Some(2)),
            condition(NODES_READY, false, "WaitingForNodes", "", Some(2)),
        ];
        assert!(!summarize(&mut list, &steps, Some(2)));
        let ready = conditions::find(&list, READY).unwrap();
        assert_eq!(ready.status, STATUS_FALSE);
        assert_eq!(ready.message, "waiting for NodesReady, AddonsReady");

        list.push(condition(ADDONS_READY, true, "Ready", "", Some(2)));
        conditions::set(
            &mut list,
            condition(NODES_READY, true, "Ready", "", Some(2)),
        );
        assert!(summarize(&mut list, &steps, Some(2)));
        assert!(conditions::is_true(&list, READY));
    }

    #[test]
    fn a_pass_starts_from_the_status_written_until_the_cache_reaches_it() {
        let in_flight = InFlight::default();
        // As stored: transition times in whole seconds.
        let ready: Vec<Condition> =
            serde_json::from_value(json!([condition(READY, true, "Ready", "", Some(1))])).unwrap();
        assert_eq!(
            in_flight.newer::<Vec<Condition>>("c/ns/a", Some("10")),
            None
        );
        in_flight.record("c/ns/a".into(), "12", &ready);
        // Woken again before the watch brought the write (at 10, or at 11 after a finalizer patch).
        assert_eq!(in_flight.newer("c/ns/a", Some("10")), Some(ready.clone()));
        assert_eq!(in_flight.newer("c/ns/a", Some("11")), Some(ready.clone()));
        assert_eq!(
            in_flight.newer::<Vec<Condition>>("c/ns/b", Some("10")),
            None
        );
        // The cache reached the write: it is the start from now on.
        assert_eq!(
            in_flight.newer::<Vec<Condition>>("c/ns/a", Some("12")),
            None
        );
        assert_eq!(
            in_flight.newer::<Vec<Condition>>("c/ns/a", Some("10")),
            None
        );
        // Versions that are not numbers: the cache is always the start.
        in_flight.record("c/ns/c".into(), "opaque", &ready);
        assert_eq!(
            in_flight.newer::<Vec<Condition>>("c/ns/c", Some("10")),
            None
        );
    }

    #[test]
    fn a_provider_failure_is_recorded_on_its_step_and_on_ready() {
        let mut list = Vec::new();
        let error = ProviderError::permanent("InvalidCredentials", "the key was revoked");
        fail(&mut list, "InfrastructureReady", &error, Some(3));
        for type_ in ["InfrastructureReady", READY] {
            let c = conditions::find(&list, type_).unwrap();
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                (STATUS_FALSE, "InvalidCredentials")
            );
            assert_eq!(c.message, "the key was revoked");
        }
    }
}
