//! What Slipway applied for one (cluster, bundle), kept in the management cluster, and pruning against it.
//!
//! The inventory is the only thing prune deletes from: an object the bundle never listed is never touched, however
//! it is labelled.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::GroupVersionKind;
use kube::api::{
    DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, Preconditions,
};
use kube::discovery::{ApiResource, Scope};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use slipway_api::FIELD_MANAGER;

use crate::apply::{Phase, apiserver_message, phase};
use crate::discovery::{discover, resolve_any_version};
use crate::error::{Error, ObjectFailure, Result};
use crate::object_ref::ObjectRef;

/// The ConfigMap key holding the inventory, as JSON.
pub const INVENTORY_KEY: &str = "inventory.json";

/// The objects one bundle put on one cluster, sorted, each once.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub objects: Vec<ObjectRef>,
}

impl Inventory {
    pub fn new(objects: impl IntoIterator<Item = ObjectRef>) -> Self {
        let mut objects: Vec<ObjectRef> = objects.into_iter().collect();
        objects.sort();
        objects.dedup();
        Self { objects }
    }

    /// Whether the inventory holds this object, at any version.
    pub fn contains(&self, object: &ObjectRef) -> bool {
        self.objects.iter().any(|o| o.same_object(object))
    }

    /// The objects of this inventory that `new_objects` no longer has.
    pub fn dropped(&self, new_objects: &[ObjectRef]) -> Vec<ObjectRef> {
        self.objects
            .iter()
            .filter(|old| !new_objects.iter().any(|new| new.same_object(old)))
            .cloned()
            .collect()
    }
}

/// Saves `inventory` in ConfigMap `namespace/name` (server-side apply, field manager `slipway`).
pub async fn store(
    client: &Client,
    namespace: &str,
    name: &str,
    inventory: &Inventory,
) -> Result<()> {
    let json = serde_json::to_string(inventory).map_err(|e| Error::Inventory {
        namespace: namespace.to_string(),
        name: name.to_string(),
        problem: e.to_string(),
    })?;
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "slipway".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(INVENTORY_KEY.to_string(), json)])),
        ..Default::default()
    };
    // SSA needs apiVersion and kind in the body; typed structs leave them out of Serialize.
    let mut body = serde_json::to_value(&config_map).expect("a ConfigMap serializes");
    body["apiVersion"] = "v1".into();
    body["kind"] = "ConfigMap".into();
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| Error::kube(format!("store inventory ConfigMap {namespace}/{name}"), e))?;
    Ok(())
}

/// The inventory in ConfigMap `namespace/name`, or `None` when there is no such ConfigMap (nothing applied yet).
pub async fn load(client: &Client, namespace: &str, name: &str) -> Result<Option<Inventory>> {
    let Some(config_map) = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("load inventory ConfigMap {namespace}/{name}"), e))?
    else {
        return Ok(None);
    };
    let problem = |problem: String| Error::Inventory {
        namespace: namespace.to_string(),
        name: name.to_string(),
        problem,
    };
    let json = config_map
        .data
        .and_then(|mut data| data.remove(INVENTORY_KEY))
        .ok_or_else(|| problem(format!("no key {INVENTORY_KEY}")))?;
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|e| problem(format!("{INVENTORY_KEY} is not an inventory: {e}")))
}

/// What [`prune`] did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Deleted (deletion requested; owned objects follow in the background).
    pub deleted: Vec<ObjectRef>,
    /// Left in place on purpose, with the reason.
    pub kept: Vec<(ObjectRef, String)>,
    /// Deletions the apiserver refused.
    pub failures: Vec<ObjectFailure>,
}

/// Deletes the objects of `old` that `new_objects` dropped, and nothing else.
///
/// Deletion runs in reverse apply order (webhooks first, Namespaces and CRDs last). An object is kept when:
/// - it no longer carries `slipway`'s field manager (someone else re-created it since);
/// - it is a CRD that still has custom resources, since deleting the CRD would delete those too.
///
/// Deleting a Namespace deletes what is in it: a Namespace is in the inventory only if the bundle created it.
/// Already-gone objects, and objects of kinds no longer served, count as pruned without a request.
pub async fn prune(
    client: &Client,
    old: &Inventory,
    new_objects: &[ObjectRef],
) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    let mut dropped = old.dropped(new_objects);
    if dropped.is_empty() {
        return Ok(report);
    }
    dropped.sort_by_key(|object| std::cmp::Reverse(phase(object)));
    let discovery = discover(client).await?;
    for object in dropped {
        let Some((resource, capabilities)) = resolve_any_version(&discovery, &object) else {
            tracing::debug!(%object, "kind no longer served; nothing to prune");
            continue;
        };
        let api: Api<DynamicObject> = match (&capabilities.scope, &object.namespace) {
            (Scope::Namespaced, Some(namespace)) => {
                Api::namespaced_with(client.clone(), namespace, &resource)
            }
            _ => Api::all_with(client.clone(), &resource),
        };
        match prune_one(client, &api, &resource, &object, old).await {
            Ok(Pruned::Deleted) => {
                tracing::info!(%object, "pruned");
                report.deleted.push(object);
            }
            Ok(Pruned::Gone) => {}
            Ok(Pruned::Kept(reason)) => {
                tracing::info!(%object, %reason, "not pruned");
                report.kept.push((object, reason));
            }
            Err(message) => report.failures.push(ObjectFailure { object, message }),
        }
    }
    Ok(report)
}

enum Pruned {
    Deleted,
    Gone,
    Kept(String),
}

async fn prune_one(
    client: &Client,
    api: &Api<DynamicObject>,
    resource: &ApiResource,
    object: &ObjectRef,
    inventory: &Inventory,
) -> std::result::Result<Pruned, String> {
    let Some(live) = api.get_opt(&object.name).await.map_err(apiserver_message)? else {
        return Ok(Pruned::Gone);
    };
    let ours = live
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|entry| entry.manager.as_deref() == Some(FIELD_MANAGER));
    if !ours {
        return Ok(Pruned::Kept(format!(
            "not managed by {FIELD_MANAGER} any more (re-created by someone else)"
        )));
    }
    if phase(object) == Phase::Foundation && resource.kind == "CustomResourceDefinition" {
        let remaining = custom_resources_of(client, &object.name).await?;
        if remaining > 0 {
            return Ok(Pruned::Kept(format!(
                "{remaining} custom resource(s) of this CRD remain; deleting it would delete them"
            )));
        }
    }
    if phase(object) == Phase::Foundation
        && resource.group.is_empty()
        && resource.kind == "Namespace"
    {
        let foreign = foreign_objects_in(client, &object.name, inventory).await?;
        if !foreign.is_empty() {
            return Ok(Pruned::Kept(format!(
                "{} object(s) Slipway did not create remain in it ({}); deleting the Namespace would delete them",
                foreign.len(),
                foreign
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    // The uid precondition makes sure we delete the very object we looked at, not a successor of the same name.
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: live.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&object.name, &params).await {
        Ok(_) => Ok(Pruned::Deleted),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(Pruned::Gone),
        Err(kube::Error::Api(status)) if status.is_conflict() => Ok(Pruned::Kept(
            "re-created while pruning; left alone".to_string(),
        )),
        Err(e) => Err(apiserver_message(e)),
    }
}

/// The kinds in which people keep what a Namespace must not take with it when a bundle drops it.
const USER_DATA_KINDS: [(&str, &str, &str, &str); 11] = [
    ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "Secret", "secrets"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("", "v1", "Service", "services"),
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    ("", "v1", "Pod", "pods"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
];

/// Objects in Namespace `namespace` that the inventory does not list, that no other object owns and that Kubernetes
/// did not make by itself (`kube-root-ca.crt`, the `default` ServiceAccount): things someone else put there.
async fn foreign_objects_in(
    client: &Client,
    namespace: &str,
    inventory: &Inventory,
) -> std::result::Result<Vec<String>, String> {
    let mut foreign = Vec::new();
    for (group, version, kind, plural) in USER_DATA_KINDS {
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let listed = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
            .list_metadata(&ListParams::default())
            .await
            .map_err(apiserver_message)?;
        for item in listed.items {
            let name = item.metadata.name.clone().unwrap_or_default();
            let made_by_kubernetes = matches!(
                (kind, name.as_str()),
                ("ConfigMap", "kube-root-ca.crt") | ("ServiceAccount", "default")
            );
            let owned = item
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| !o.is_empty());
            let going = item.metadata.deletion_timestamp.is_some();
            let ours = inventory.contains(&ObjectRef {
                group: group.into(),
                version: version.into(),
                kind: kind.into(),
                namespace: Some(namespace.into()),
                name: name.clone(),
            });
            if !(made_by_kubernetes || owned || going || ours) {
                foreign.push(format!("{kind} {name}"));
            }
        }
    }
    Ok(foreign)
}

/// How many custom resources of CRD `name` exist (at most one page: any is enough to keep it).
async fn custom_resources_of(client: &Client, name: &str) -> std::result::Result<usize, String> {
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get(name)
        .await
        .map_err(apiserver_message)?;
    let Some(version) = crd.spec.versions.iter().find(|v| v.served) else {
        return Ok(0);
    };
    let resource = ApiResource {
        group: crd.spec.group.clone(),
        version: version.name.clone(),
        api_version: format!("{}/{}", crd.spec.group, version.name),
        kind: crd.spec.names.kind.clone(),
        plural: crd.spec.names.plural.clone(),
    };
    let list = Api::<DynamicObject>::all_with(client.clone(), &resource)
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map_err(apiserver_message)?;
    Ok(list.items.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: &str, version: &str, name: &str) -> ObjectRef {
        ObjectRef {
            group: "example.com".into(),
            version: version.into(),
            kind: kind.into(),
            namespace: Some("a".into()),
            name: name.into(),
        }
    }

    #[test]
    fn dropped_lists_only_objects_the_new_set_lacks_at_any_version() {
        let old = Inventory::new([
            object("Widget", "v1beta1", "kept"),
            object("Widget", "v1", "gone"),
            object("Gadget", "v1", "kept"),
        ]);
        let new = [
            object("Widget", "v1", "kept"),
            object("Gadget", "v1", "kept"),
            object("Widget", "v1", "added"),
        ];
        assert_eq!(old.dropped(&new), [object("Widget", "v1", "gone")]);
        assert!(old.contains(&object("Widget", "v2", "kept")));
    }

    #[test]
    fn an_inventory_round_trips_through_json_sorted_and_deduplicated() {
        let inventory = Inventory::new([
            object("Widget", "v1", "b"),
            object("Widget", "v1", "a"),
            object("Widget", "v1", "b"),
        ]);
        assert_eq!(inventory.objects.len(), 2);
        assert_eq!(inventory.objects[0].name, "a");
        let json = serde_json::to_string(&inventory).unwrap();
        assert!(json.contains(r#""group":"example.com""#), "{json}");
        assert_eq!(serde_json::from_str::<Inventory>(&json).unwrap(), inventory);
    }
}
