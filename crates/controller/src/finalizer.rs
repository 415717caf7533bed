//! Adding and removing finalizers (and owner references) with JSON patches that test the current list first, so a
//! concurrent change by someone else makes our patch fail instead of being overwritten.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::Result;

fn list_ops(path: &str, current: Option<&Vec<impl serde::Serialize>>, new: Value) -> Vec<Value> {
    match current {
        None => vec![json!({ "op": "add", "path": path, "value": new })],
        Some(current) => vec![
            json!({ "op": "test", "path": path, "value": current }),
            json!({ "op": "replace", "path": path, "value": new }),
        ],
    }
}

async fn json_patch<K>(api: &Api<K>, name: &str, ops: Vec<Value>) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(ops)).expect("valid JSON patch");
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await?;
    Ok(())
}

/// Ensures `finalizer` and, when given, `owner` on `obj`, in one patch; writes nothing when both are there.
pub async fn ensure<K>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
    owner: Option<OwnerReference>,
) -> Result<bool>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let meta = obj.meta();
    let mut ops = Vec::new();
    if !obj.finalizers().iter().any(|f| f == finalizer) {
        let mut new = obj.finalizers().to_vec();
        new.push(finalizer.to_string());
        ops.extend(list_ops(
            "/metadata/finalizers",
            meta.finalizers.as_ref(),
            json!(new),
        ));
    }
    if let Some(owner) = owner {
        let owners = meta.owner_references.as_ref();
        if !owners.is_some_and(|o| o.iter().any(|r| r.uid == owner.uid)) {
            let mut new = owners.cloned().unwrap_or_default();
            new.push(owner);
            ops.extend(list_ops("/metadata/ownerReferences", owners, json!(new)));
        }
    }
    if ops.is_empty() {
        return Ok(false);
    }
    json_patch(api, &obj.name_any(), ops).await?;
    Ok(true)
}

/// Removes `finalizer` from `obj`; writes nothing when it is not there.
pub async fn remove<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
{
    if !obj.finalizers().iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let new: Vec<&String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .collect();
    let ops = list_ops(
        "/metadata/finalizers",
        obj.meta().finalizers.as_ref(),
        json!(new),
    );
    match json_patch(api, &obj.name_any(), ops).await {
        // Already gone: the finalizer's work is done either way.
        Err(crate::Error::Kube(kube::Error::Api(status))) if status.is_not_found() => Ok(()),
        other => other,
    }
}
