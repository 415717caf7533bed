//! The join token a cluster's new machines boot with. One `<cluster>-bootstrap-token` Secret in the management
//! cluster holds it, and the same token lives in the workload cluster's `kube-system`. It is replaced once it has
//! expired and extended while machines are still joining, so a machine never holds a token that lapses under it;
//! when every machine has joined it is left to expire.
//!
//! The first token travels in the first control-plane member's user data (kubeadm's `bootstrapTokens`; for k3s, a
//! bootstrap-token Secret in its auto-applied manifests): the control plane creates it itself, before any API
//! answers. It is never a k3s server token, which is another, lasting secret (`<cluster>-token`). A replaced or extended token is written into the
//! workload cluster through its API before any machine is handed it.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use slipway_api::Cluster;
use slipway_bootstrap::BootstrapToken;
use slipway_bootstrap::secrets::{self, Purpose};
use slipway_bootstrap::token::Renewal;
use tracing::info;

use crate::context::Context;
use crate::error::{Error, Result};

/// Who puts a new or extended token into the workload cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// The control plane about to boot with it creates it (there is no API to write to yet).
    ByControlPlane,
    /// The controller, through the workload cluster's API.
    ThroughApi,
}

/// The token to hand to a machine that is about to join (or still joining): kept, extended or replaced as
/// [`BootstrapToken::renewal`] decides, and known to the workload cluster before it is returned.
pub async fn ensure(ctx: &Context, cluster: &Cluster, publish: Publish) -> Result<BootstrapToken> {
    let name = cluster.name_any();
    let secret_name = Purpose::JoinToken.secret_name(&name);
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    // A Secret someone broke by hand is replaced rather than trusted.
    let current = api
        .get_opt(&secret_name)
        .await?
        .and_then(|secret| secrets::join_token_from_secret(&secret).ok());
    let now = Timestamp::now();
    let (token, what) = match (BootstrapToken::renewal(current.as_ref(), now), current) {
        (Renewal::Keep, Some(token)) => return Ok(token),
        (Renewal::Extend, Some(token)) => (token.extended(now), "extended"),
        _ => (BootstrapToken::generate(now), "created"),
    };
    if publish == Publish::ThroughApi {
        let workload = crate::workload::client(ctx, cluster)
            .await
            .map_err(|source| Error::Workload {
                cluster: name.clone(),
                source,
            })?;
        let object = secret_object(token.secret());
        Api::<Secret>::namespaced(workload, "kube-system")
            .patch(
                &format!("bootstrap-token-{}", token.id),
                &PatchParams::apply(slipway_api::FIELD_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
            .map_err(|e| Error::WorkloadApi {
                cluster: name.clone(),
                message: format!("writing the join token {}: {e}", token.id),
            })?;
    }
    let record = secrets::join_token_secret(&name, &token, cluster.controller_owner_ref(&()));
    api.patch(
        &secret_name,
        &PatchParams::apply(slipway_api::FIELD_MANAGER).force(),
        &Patch::Apply(&secret_object(record)),
    )
    .await?;
    info!(cluster = %name, token = %token.id, expires_at = %token.expires_at, "join token {what}");
    Ok(token)
}

fn secret_object(secret: Secret) -> serde_json::Value {
    let mut object = serde_json::to_value(&secret).expect("a Secret serializes");
    object["apiVersion"] = "v1".into();
    object["kind"] = "Secret".into();
    object
}
