//! Which kinds the workload apiserver serves, and at which scope.

use kube::Client;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery};

use crate::error::{Error, Result};
use crate::object_ref::ObjectRef;

/// Every served kind. Aggregated discovery costs two requests instead of one per group (Kubernetes ≥ 1.30); the
/// per-group walk is the fallback for older or proxied apiservers.
pub(crate) async fn discover(client: &Client) -> Result<Discovery> {
    match Discovery::new(client.clone()).run_aggregated().await {
        Ok(discovery) => Ok(discovery),
        Err(e) => {
            tracing::debug!(error = %e, "aggregated discovery failed; walking groups");
            Discovery::new(client.clone())
                .run()
                .await
                .map_err(|e| Error::kube("API discovery", e))
        }
    }
}

/// The resource serving exactly this group, version and kind.
pub(crate) fn resolve(
    discovery: &Discovery,
    object: &ObjectRef,
) -> Option<(ApiResource, ApiCapabilities)> {
    discovery.resolve_gvk(&object.gvk())
}

/// The resource serving this group and kind at the server's preferred version: for deleting an object recorded
/// at a version the server may no longer serve.
pub(crate) fn resolve_any_version(
    discovery: &Discovery,
    object: &ObjectRef,
) -> Option<(ApiResource, ApiCapabilities)> {
    resolve(discovery, object)
        .or_else(|| discovery.get(&object.group)?.recommended_kind(&object.kind))
}
