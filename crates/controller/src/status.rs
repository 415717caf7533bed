//! Writing status only when it changed, and building conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use slipway_api::conditions::{self, Condition, STATUS_FALSE, STATUS_TRUE};

use crate::error::Result;

/// Server-side applies `status` when it differs from `old`; says whether it wrote. Applying (rather than merging)
/// also removes fields Slipway set before and no longer sets, such as `expiresAt` after the TTL is dropped.
pub async fn apply_if_changed<K, S>(
    api: &Api<K>,
    name: &str,
    old: Option<&S>,
    new: &S,
) -> Result<bool>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if old == Some(new) {
        return Ok(false);
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": new,
    });
    api.patch_status(
        name,
        &PatchParams::apply(slipway_api::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
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
}
