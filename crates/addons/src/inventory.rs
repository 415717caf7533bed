//! What Slipway applied for one (cluster, bundle), kept in the management cluster, and pruning against it.
//!
//! The inventory is the only thing prune deletes from, and only what Slipway created: each entry records the UID
//! the object had when Slipway's apply created it. An object that already existed when the bundle first applied it
//! is recorded as adopted: the bundle keeps its fields as written, but Slipway never deletes it. Prune deletes an
//! object only while its UID is still the recorded one (a delete precondition), so a successor of the same name is
//! never taken for it.
//!
//! Each inventory is a ConfigMap next to its Cluster, named from a hash of the Cluster's UID and the bundle's name
//! (see [`InventoryKey::name`]), labelled with both names and owned by the Cluster, so it goes with the Cluster.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, Preconditions,
};
use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use kube::{Api, Client, Resource};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use slipway_api::{Cluster, FIELD_MANAGER};

use crate::apply::{ApplyReport, MANAGED_BY_LABEL, Phase, apiserver_message, phase};
use crate::discovery::{discover, resolve_any_version};
use crate::error::{Error, ObjectFailure, Result};
use crate::object_ref::ObjectRef;

/// The ConfigMap key holding the inventory, as JSON.
pub const INVENTORY_KEY: &str = "inventory.json";
/// Label on an inventory naming its Cluster.
pub const CLUSTER_LABEL: &str = "slipway.dev/cluster";
/// Label on an inventory naming its AddonBundle.
pub const BUNDLE_LABEL: &str = "slipway.dev/addon-bundle";

/// How many objects of a Namespace prune looks at before it gives up proving they are all Slipway's (and keeps
/// the Namespace).
const MAX_NAMESPACE_OBJECTS: usize = 10_000;
/// How many objects a reason names before it only counts the rest.
const NAMED_IN_REASON: usize = 5;

/// One object of an inventory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    #[serde(flatten)]
    pub object: ObjectRef,
    /// UID of the object as Slipway's apply created it. Absent when Slipway did not create it: it was adopted, or
    /// refused before it ever existed, or recorded by a Slipway that did not keep UIDs yet. Entries in inventories
    /// written before this field existed have none and so are never pruned: nothing proves the object they name
    /// is one Slipway created (it may have been adopted), and keeping an object is the mistake that can be undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The object existed before the bundle first applied it: its fields follow the bundle, but Slipway never
    /// deletes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
}

impl Entry {
    /// An object Slipway created, with the UID it was created with.
    pub fn created(object: ObjectRef, uid: impl Into<String>) -> Self {
        Self {
            object,
            uid: Some(uid.into()),
            adopted: false,
        }
    }

    /// An object that was there before Slipway applied it.
    pub fn adopted(object: ObjectRef) -> Self {
        Self {
            object,
            uid: None,
            adopted: true,
        }
    }

    /// An object whose origin Slipway does not know (refused so far, or recorded before UIDs were kept).
    pub fn unknown(object: ObjectRef) -> Self {
        Self {
            object,
            uid: None,
            adopted: false,
        }
    }
}

/// The objects one bundle put on one cluster, sorted, each once. Stored as `{"objects": [...]}`, the shape
/// inventories had before they kept UIDs, so those still read (their entries without a UID).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub objects: Vec<Entry>,
}

impl Inventory {
    pub fn new(entries: impl IntoIterator<Item = Entry>) -> Self {
        let mut objects: Vec<Entry> = entries.into_iter().collect();
        objects.sort();
        objects.dedup_by(|a, b| a.object == b.object);
        Self { objects }
    }

    /// The inventory after `report`'s apply, given the one before it (`None` on the first apply):
    /// - an object the apply created is Slipway's, with its new UID;
    /// - an object that was there already stays Slipway's only if `old` recorded Slipway creating it with the UID
    ///   it still has; otherwise it is adopted (it existed before, or someone re-created it since);
    /// - an object the apiserver refused keeps its old entry, or has an unknown origin.
    ///
    /// A crash between an apply that created objects and storing this inventory leaves those objects adopted on
    /// the next run: never pruned, never wrongly deleted.
    pub fn after_apply(old: Option<&Inventory>, report: &ApplyReport) -> Self {
        let previous = |object: &ObjectRef| old.and_then(|old| old.get(object));
        Self::new(report.objects.iter().map(|object| {
            match report.applied.iter().find(|a| &a.object == object) {
                Some(applied) if applied.created => {
                    Entry::created(object.clone(), applied.uid.clone())
                }
                Some(applied) => match previous(object) {
                    Some(entry) if entry.uid.as_deref() == Some(applied.uid.as_str()) => {
                        Entry::created(object.clone(), applied.uid.clone())
                    }
                    Some(entry) if entry.uid.is_none() && !entry.adopted => {
                        Entry::unknown(object.clone())
                    }
                    _ => Entry::adopted(object.clone()),
                },
                None => previous(object).map_or_else(
                    || Entry::unknown(object.clone()),
                    |entry| Entry {
                        object: object.clone(),
                        ..entry.clone()
                    },
                ),
            }
        }))
    }

    /// The entry of this object, at any version.
    pub fn get(&self, object: &ObjectRef) -> Option<&Entry> {
        self.objects.iter().find(|e| e.object.same_object(object))
    }

    /// Whether the inventory holds this object, at any version.
    pub fn contains(&self, object: &ObjectRef) -> bool {
        self.get(object).is_some()
    }

    /// The entries of this inventory that `new` no longer has.
    pub fn dropped(&self, new: &Inventory) -> Vec<Entry> {
        self.objects
            .iter()
            .filter(|old| !new.contains(&old.object))
            .cloned()
            .collect()
    }

    /// This inventory plus `extra` entries for objects it does not hold.
    pub fn with(&self, extra: impl IntoIterator<Item = Entry>) -> Self {
        let extra: Vec<Entry> = extra
            .into_iter()
            .filter(|e| !self.contains(&e.object))
            .collect();
        Self::new(self.objects.iter().cloned().chain(extra))
    }

    /// UIDs of the objects Slipway created.
    fn created_uids(&self) -> impl Iterator<Item = &str> {
        self.objects.iter().filter_map(|e| e.uid.as_deref())
    }
}

/// Sixteen hex digits of the SHA-256 of `text`.
pub(crate) fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// Which (cluster, bundle) an inventory belongs to, and where it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryKey {
    /// The Cluster's (and the bundle's) namespace in the management cluster.
    pub namespace: String,
    pub cluster: String,
    /// The Cluster's UID: the inventory's owner, and part of its name.
    pub cluster_uid: String,
    pub bundle: String,
}

impl InventoryKey {
    /// `<cluster>-<bundle>-addons-<hash>`: readable, and unique because the hash is of the Cluster's UID and the
    /// bundle's name. Names alone are ambiguous: the old `<cluster>-addons-<bundle>` was the same for cluster
    /// `a-addons-b` with bundle `c` as for cluster `a` with bundle `b-addons-c`. The readable part is shortened to
    /// keep the name within the 253 characters of an object name.
    pub fn name(&self) -> String {
        let hash = short_hash(&format!("{}/{}", self.cluster_uid, self.bundle));
        let mut readable = format!("{}-{}", self.cluster, self.bundle);
        readable.truncate(200);
        // Truncation may leave a trailing '-' or '.', which would not start the next part of a valid name.
        let readable = readable.trim_end_matches(['-', '.']);
        format!("{readable}-addons-{hash}")
    }

    /// The name inventories had before they were named by hash (see [`load_legacy`]).
    pub fn legacy_name(&self) -> String {
        format!("{}-addons-{}", self.cluster, self.bundle)
    }
}

fn inventory_error(namespace: &str, name: &str, problem: impl Into<String>) -> Error {
    Error::Inventory {
        namespace: namespace.to_string(),
        name: name.to_string(),
        problem: problem.into(),
    }
}

/// Saves `inventory` in its ConfigMap (server-side apply, field manager `slipway`), labelled with the cluster and
/// bundle and owned by the Cluster.
pub async fn store(client: &Client, key: &InventoryKey, inventory: &Inventory) -> Result<()> {
    let name = key.name();
    let json = serde_json::to_string(inventory)
        .map_err(|e| inventory_error(&key.namespace, &name, e.to_string()))?;
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(key.namespace.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string()),
                (CLUSTER_LABEL.to_string(), key.cluster.clone()),
                (BUNDLE_LABEL.to_string(), key.bundle.clone()),
            ])),
            // Not a controller reference: the Cluster does not manage its inventories; it only takes them along.
            owner_references: Some(vec![OwnerReference {
                api_version: Cluster::api_version(&()).into_owned(),
                kind: Cluster::kind(&()).into_owned(),
                name: key.cluster.clone(),
                uid: key.cluster_uid.clone(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(INVENTORY_KEY.to_string(), json)])),
        ..Default::default()
    };
    // SSA needs apiVersion and kind in the body; typed structs leave them out of Serialize.
    let mut body = serde_json::to_value(&config_map).expect("a ConfigMap serializes");
    body["apiVersion"] = "v1".into();
    body["kind"] = "ConfigMap".into();
    Api::<ConfigMap>::namespaced(client.clone(), &key.namespace)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| {
            Error::kube(
                format!("store inventory ConfigMap {}/{name}", key.namespace),
                e,
            )
        })?;
    Ok(())
}

/// The inventory of `key`, or `None` when there is none (nothing applied yet).
pub async fn load(client: &Client, key: &InventoryKey) -> Result<Option<Inventory>> {
    let name = key.name();
    read(client, &key.namespace, &name)
        .await
        .map(|found| found.map(|(inventory, _)| inventory))
}

/// An inventory under the old name `<cluster>-addons-<bundle>`, if a ConfigMap of that name was written by Slipway.
///
/// Those names could collide, so it may belong to another (cluster, bundle); that is harmless because its entries
/// carry no UIDs and are therefore never pruned. It is read so that what it lists is reported as kept rather than
/// silently forgotten, and deleted ([`delete_legacy`]) once the new inventory is stored.
pub async fn load_legacy(client: &Client, key: &InventoryKey) -> Result<Option<Inventory>> {
    let name = key.legacy_name();
    Ok(read(client, &key.namespace, &name)
        .await?
        .filter(|(_, labels)| {
            labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(FIELD_MANAGER)
        })
        .map(|(inventory, _)| inventory))
}

/// Deletes the old-named inventory of `key`, if Slipway wrote one.
pub async fn delete_legacy(client: &Client, key: &InventoryKey) -> Result<()> {
    if load_legacy(client, key).await?.is_some() {
        delete(client, &key.namespace, &key.legacy_name()).await?;
    }
    Ok(())
}

async fn read(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<(Inventory, BTreeMap<String, String>)>> {
    let Some(config_map) = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("load inventory ConfigMap {namespace}/{name}"), e))?
    else {
        return Ok(None);
    };
    let labels = config_map.metadata.labels.unwrap_or_default();
    let json = config_map
        .data
        .and_then(|mut data| data.remove(INVENTORY_KEY))
        .ok_or_else(|| inventory_error(namespace, name, format!("no key {INVENTORY_KEY}")))?;
    let inventory = serde_json::from_str(&json).map_err(|e| {
        inventory_error(
            namespace,
            name,
            format!("{INVENTORY_KEY} is not an inventory: {e}"),
        )
    })?;
    Ok(Some((inventory, labels)))
}

/// One stored inventory of a bundle, as [`list`] finds it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: InventoryKey,
    pub inventory: Inventory,
}

/// Every inventory of bundle `bundle` in `namespace`, one per cluster it was applied to, found by label.
pub async fn list(client: &Client, namespace: &str, bundle: &str) -> Result<Vec<Stored>> {
    let selector = format!("{BUNDLE_LABEL}={bundle},{MANAGED_BY_LABEL}={FIELD_MANAGER}");
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            Error::kube(
                format!("list inventories of bundle {namespace}/{bundle}"),
                e,
            )
        })?;
    let mut stored = Vec::new();
    for config_map in config_maps {
        let name = config_map.metadata.name.clone().unwrap_or_default();
        let labels = config_map.metadata.labels.clone().unwrap_or_default();
        let cluster_uid = config_map
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == Cluster::kind(&()))
            .map(|o| o.uid.clone())
            .unwrap_or_default();
        let json = config_map
            .data
            .and_then(|mut data| data.remove(INVENTORY_KEY))
            .ok_or_else(|| inventory_error(namespace, &name, format!("no key {INVENTORY_KEY}")))?;
        let inventory = serde_json::from_str(&json).map_err(|e| {
            inventory_error(
                namespace,
                &name,
                format!("{INVENTORY_KEY} is not an inventory: {e}"),
            )
        })?;
        stored.push(Stored {
            key: InventoryKey {
                namespace: namespace.to_string(),
                cluster: labels.get(CLUSTER_LABEL).cloned().unwrap_or_default(),
                cluster_uid,
                bundle: bundle.to_string(),
            },
            inventory,
        });
    }
    Ok(stored)
}

/// Deletes inventory ConfigMap `namespace/name`; one already gone counts as deleted.
pub async fn delete(client: &Client, namespace: &str, name: &str) -> Result<()> {
    match Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(Error::kube(
            format!("delete inventory ConfigMap {namespace}/{name}"),
            e,
        )),
    }
}

/// What [`prune`] did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Deleted (deletion requested; owned objects follow in the background).
    pub deleted: Vec<ObjectRef>,
    /// Left in place for good, with the reason: not Slipway's to delete (adopted, recorded without a UID,
    /// re-created or taken over by someone else). Nothing more to do about them; the inventory forgets them.
    pub kept: Vec<(ObjectRef, String)>,
    /// Left in place for now, with the reason: deleting them would take along what is not Slipway's (a Namespace
    /// holding others' objects, a CRD with custom resources). They stay in the inventory and are tried again.
    pub blocked: Vec<(ObjectRef, String)>,
    /// Deletions the apiserver refused; they stay in the inventory and are tried again.
    pub failures: Vec<ObjectFailure>,
    /// The entries of `blocked` and `failures`, for the next inventory.
    pub unfinished: Vec<Entry>,
}

/// Deletes the objects of `old` that `new` dropped and that Slipway created, and nothing else.
///
/// Deletion runs in reverse apply order (webhooks first, Namespaces and CRDs last). An object is deleted only if
/// its entry has a UID and the live object still has that UID (checked again by the delete's precondition). It is
/// kept when:
/// - it has no UID in the inventory (adopted, or recorded before UIDs were kept), or another UID now;
/// - no field of it is managed by `field_manager` (or the manager all bundles once shared) any more;
/// - it is a CRD that still has custom resources, since deleting the CRD would delete those too (blocked);
/// - it is a Namespace holding any object, of any kind the apiserver serves, that Slipway did not create and that
///   is not owned (through owner references) by something Slipway created (blocked).
///
/// Already-gone objects, and objects of kinds no longer served, count as pruned without a request.
pub async fn prune(
    client: &Client,
    old: &Inventory,
    new: &Inventory,
    field_manager: &str,
) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    let mut dropped = old.dropped(new);
    if dropped.is_empty() {
        return Ok(report);
    }
    dropped.sort_by_key(|entry| std::cmp::Reverse(phase(&entry.object)));
    let discovery = discover(client).await?;
    let ours: BTreeSet<&str> = old.created_uids().chain(new.created_uids()).collect();
    for entry in dropped {
        let object = entry.object.clone();
        let Some(uid) = entry.uid.as_deref() else {
            let reason = if entry.adopted {
                "it existed before the bundle first applied it (adopted); Slipway never deletes it"
            } else {
                "nothing proves Slipway created it (recorded without a UID); left in place"
            };
            tracing::info!(%object, reason, "not pruned");
            report.kept.push((object, reason.to_string()));
            continue;
        };
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
        let target = Target {
            api: &api,
            resource: &resource,
            object: &object,
            uid,
            field_manager,
        };
        match prune_one(client, &discovery, &target, &ours).await {
            Ok(Pruned::Deleted) => {
                tracing::info!(%object, "pruned");
                report.deleted.push(object);
            }
            Ok(Pruned::Gone) => {}
            Ok(Pruned::Kept(reason)) => {
                tracing::info!(%object, %reason, "not pruned");
                report.kept.push((object, reason));
            }
            Ok(Pruned::Blocked(reason)) => {
                tracing::info!(%object, %reason, "not pruned yet");
                report.blocked.push((object, reason));
                report.unfinished.push(entry);
            }
            Err(message) => {
                report.failures.push(ObjectFailure { object, message });
                report.unfinished.push(entry);
            }
        }
    }
    Ok(report)
}

enum Pruned {
    Deleted,
    Gone,
    Kept(String),
    Blocked(String),
}

/// What one [`prune_one`] is about.
struct Target<'a> {
    api: &'a Api<DynamicObject>,
    resource: &'a ApiResource,
    object: &'a ObjectRef,
    /// The UID Slipway created it with.
    uid: &'a str,
    field_manager: &'a str,
}

async fn prune_one(
    client: &Client,
    discovery: &Discovery,
    target: &Target<'_>,
    ours: &BTreeSet<&str>,
) -> std::result::Result<Pruned, String> {
    let object = target.object;
    let Some(live) = target
        .api
        .get_opt(&object.name)
        .await
        .map_err(apiserver_message)?
    else {
        return Ok(Pruned::Gone);
    };
    if live.metadata.uid.as_deref() != Some(target.uid) {
        return Ok(Pruned::Kept(
            "re-created by someone else since Slipway created it (its UID changed)".to_string(),
        ));
    }
    let managed = live.metadata.managed_fields.iter().flatten().any(|entry| {
        entry.manager.as_deref() == Some(target.field_manager)
            || entry.manager.as_deref() == Some(FIELD_MANAGER)
    });
    if !managed {
        return Ok(Pruned::Kept(format!(
            "no field of it is managed by {} any more (someone else took it over)",
            target.field_manager
        )));
    }
    if phase(object) == Phase::Foundation && target.resource.kind == "CustomResourceDefinition" {
        let remaining = custom_resources_of(client, &object.name).await?;
        if remaining > 0 {
            return Ok(Pruned::Blocked(format!(
                "{remaining} custom resource(s) of this CRD remain; deleting it would delete them"
            )));
        }
    }
    if phase(object) == Phase::Foundation
        && target.resource.group.is_empty()
        && target.resource.kind == "Namespace"
        && let Some(reason) = foreign_objects_in(client, discovery, &object.name, ours).await
    {
        return Ok(Pruned::Blocked(reason));
    }
    // The uid precondition makes sure we delete the very object we looked at, not a successor of the same name.
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(target.uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match target.api.delete(&object.name, &params).await {
        Ok(_) => Ok(Pruned::Deleted),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(Pruned::Gone),
        Err(kube::Error::Api(status)) if status.is_conflict() => Ok(Pruned::Kept(
            "re-created while pruning; left alone".to_string(),
        )),
        Err(e) => Err(apiserver_message(e)),
    }
}

/// One object found in a Namespace.
struct Found {
    /// `Kind/name`, for the reason.
    label: String,
    uid: String,
    owners: Vec<String>,
    /// What Kubernetes makes in every Namespace or about other objects, and what is already being deleted:
    /// deleting the Namespace takes nothing from anyone there.
    incidental: bool,
    /// An Endpoints object, which the endpoints controller names after its Service and does not give an owner
    /// reference.
    endpoints: bool,
}

/// Why Namespace `namespace` must not be deleted: the objects in it, of every namespaced kind the apiserver serves
/// and lists, that Slipway did not create and that nothing Slipway created owns (through owner references, so a
/// Deployment's ReplicaSets and Pods are Slipway's too). `None` when there are none.
///
/// Not counted: Events, the `kube-root-ca.crt` ConfigMap and `default` ServiceAccount Kubernetes puts in every
/// Namespace, Endpoints named after one of Slipway's Services, and objects already being deleted. A kind that cannot
/// be listed, or a Namespace with more than [`MAX_NAMESPACE_OBJECTS`] objects, keeps the Namespace: what cannot be
/// checked is not deleted.
async fn foreign_objects_in(
    client: &Client,
    discovery: &Discovery,
    namespace: &str,
    ours: &BTreeSet<&str>,
) -> Option<String> {
    let mut found: Vec<Found> = Vec::new();
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            if capabilities.scope != Scope::Namespaced
                || !capabilities.supports_operation(verbs::LIST)
            {
                continue;
            }
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource);
            let mut params = ListParams::default().limit(500);
            loop {
                let page = match api.list_metadata(&params).await {
                    Ok(page) => page,
                    Err(e) => {
                        return Some(format!(
                            "cannot list the {} in it to check they are Slipway's ({}); deleting the Namespace could delete what is not",
                            resource.plural,
                            apiserver_message(e)
                        ));
                    }
                };
                for item in page.items {
                    let name = item.metadata.name.clone().unwrap_or_default();
                    let core = resource.group.is_empty();
                    let made_by_kubernetes = matches!(
                        (core, resource.kind.as_str(), name.as_str()),
                        (true, "ConfigMap", "kube-root-ca.crt")
                            | (true, "ServiceAccount", "default")
                    ) || (resource.kind == "Event"
                        && (core || resource.group == "events.k8s.io"));
                    found.push(Found {
                        label: format!("{}/{name}", resource.kind),
                        uid: item.metadata.uid.clone().unwrap_or_default(),
                        owners: item
                            .metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .map(|o| o.uid.clone())
                            .collect(),
                        incidental: made_by_kubernetes
                            || item.metadata.deletion_timestamp.is_some(),
                        endpoints: core && resource.kind == "Endpoints",
                    });
                }
                if found.len() > MAX_NAMESPACE_OBJECTS {
                    return Some(format!(
                        "it holds more than {MAX_NAMESPACE_OBJECTS} objects, too many to check that all are Slipway's"
                    ));
                }
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => break,
                }
            }
        }
    }
    let foreign = not_slipways(&found, ours);
    if foreign.is_empty() {
        return None;
    }
    let named: Vec<&str> = foreign.iter().take(NAMED_IN_REASON).copied().collect();
    let more = foreign.len() - named.len();
    Some(format!(
        "{} object(s) Slipway did not create remain in it: {}{}; deleting the Namespace would delete them",
        foreign.len(),
        named.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ))
}

/// The labels of the objects in `found` that are not Slipway's: not created by Slipway (`ours` holds those UIDs),
/// not owned by anything Slipway's (transitively), not incidental, and not the Endpoints of a Slipway Service.
fn not_slipways<'a>(found: &'a [Found], ours: &BTreeSet<&str>) -> Vec<&'a str> {
    let mut slipways: BTreeSet<&str> = ours.clone();
    // Owner references form chains (Deployment → ReplicaSet → Pod): grow the set until it stops growing.
    loop {
        let before = slipways.len();
        for item in found {
            if !slipways.contains(item.uid.as_str())
                && item.owners.iter().any(|o| slipways.contains(o.as_str()))
            {
                slipways.insert(item.uid.as_str());
            }
        }
        if slipways.len() == before {
            break;
        }
    }
    let slipway_services: BTreeSet<&str> = found
        .iter()
        .filter(|item| slipways.contains(item.uid.as_str()))
        .filter_map(|item| item.label.strip_prefix("Service/"))
        .collect();
    found
        .iter()
        .filter(|item| !item.incidental && !slipways.contains(item.uid.as_str()))
        .filter(|item| {
            !(item.endpoints
                && item
                    .label
                    .strip_prefix("Endpoints/")
                    .is_some_and(|name| slipway_services.contains(name)))
        })
        .map(|item| item.label.as_str())
        .collect()
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
    use crate::apply::Applied;

    fn object(kind: &str, version: &str, name: &str) -> ObjectRef {
        ObjectRef {
            group: "example.com".into(),
            version: version.into(),
            kind: kind.into(),
            namespace: Some("a".into()),
            name: name.into(),
        }
    }

    fn report(applied: &[(&ObjectRef, &str, bool)], refused: &[&ObjectRef]) -> ApplyReport {
        ApplyReport {
            objects: applied
                .iter()
                .map(|(o, _, _)| (*o).clone())
                .chain(refused.iter().map(|o| (*o).clone()))
                .collect(),
            applied: applied
                .iter()
                .map(|(o, uid, created)| Applied {
                    object: (*o).clone(),
                    uid: uid.to_string(),
                    created: *created,
                })
                .collect(),
            failures: Vec::new(),
        }
    }

    #[test]
    fn dropped_lists_only_objects_the_new_set_lacks_at_any_version() {
        let old = Inventory::new([
            Entry::created(object("Widget", "v1beta1", "kept"), "1"),
            Entry::created(object("Widget", "v1", "gone"), "2"),
            Entry::created(object("Gadget", "v1", "kept"), "3"),
        ]);
        let new = Inventory::new([
            Entry::created(object("Widget", "v1", "kept"), "1"),
            Entry::created(object("Gadget", "v1", "kept"), "3"),
            Entry::created(object("Widget", "v1", "added"), "4"),
        ]);
        let dropped = old.dropped(&new);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].object, object("Widget", "v1", "gone"));
        assert!(old.contains(&object("Widget", "v2", "kept")));
    }

    #[test]
    fn only_what_the_apply_created_or_slipway_created_before_is_recorded_with_a_uid() {
        let made_now = object("Widget", "v1", "made-now");
        let made_before = object("Widget", "v1", "made-before");
        let there_before = object("Widget", "v1", "there-before");
        let replaced = object("Widget", "v1", "replaced");
        let legacy = object("Widget", "v1", "legacy");
        let refused = object("Widget", "v1", "refused");
        let old = Inventory::new([
            Entry::created(made_before.clone(), "uid-1"),
            Entry::created(replaced.clone(), "uid-old"),
            Entry::unknown(legacy.clone()),
            Entry::created(refused.clone(), "uid-9"),
        ]);
        let report = report(
            &[
                (&made_now, "uid-new", true),
                (&made_before, "uid-1", false),
                (&there_before, "uid-2", false),
                // Someone deleted Slipway's object and made their own of the same name.
                (&replaced, "uid-theirs", false),
                (&legacy, "uid-3", false),
            ],
            &[&refused],
        );
        let new = Inventory::after_apply(Some(&old), &report);
        let entry = |o: &ObjectRef| new.get(o).cloned().unwrap();
        assert_eq!(
            entry(&made_now),
            Entry::created(made_now.clone(), "uid-new")
        );
        assert_eq!(
            entry(&made_before),
            Entry::created(made_before.clone(), "uid-1")
        );
        assert_eq!(entry(&there_before), Entry::adopted(there_before.clone()));
        assert_eq!(entry(&replaced), Entry::adopted(replaced.clone()));
        assert_eq!(entry(&legacy), Entry::unknown(legacy.clone()));
        assert_eq!(entry(&refused), Entry::created(refused.clone(), "uid-9"));

        // On a first apply, whatever was there already is adopted.
        let first = Inventory::after_apply(None, &report);
        assert_eq!(
            first.get(&made_before).unwrap(),
            &Entry::adopted(made_before.clone())
        );
        assert_eq!(
            first.get(&refused).unwrap(),
            &Entry::unknown(refused.clone())
        );
    }

    #[test]
    fn an_inventory_round_trips_through_json_sorted_and_deduplicated() {
        let inventory = Inventory::new([
            Entry::created(object("Widget", "v1", "b"), "1"),
            Entry::adopted(object("Widget", "v1", "a")),
            Entry::created(object("Widget", "v1", "b"), "1"),
        ]);
        assert_eq!(inventory.objects.len(), 2);
        assert_eq!(inventory.objects[0].object.name, "a");
        let json = serde_json::to_string(&inventory).unwrap();
        assert!(json.contains(r#""group":"example.com""#), "{json}");
        assert!(json.contains(r#""uid":"1""#), "{json}");
        assert!(json.contains(r#""adopted":true"#), "{json}");
        assert_eq!(serde_json::from_str::<Inventory>(&json).unwrap(), inventory);
    }

    #[test]
    fn an_inventory_written_before_uids_reads_with_no_entry_prunable() {
        let old = r#"{"objects":[{"group":"apps","version":"v1","kind":"Deployment","namespace":"x","name":"web"},{"version":"v1","kind":"Namespace","name":"x"}]}"#;
        let inventory: Inventory = serde_json::from_str(old).unwrap();
        assert_eq!(inventory.objects.len(), 2);
        assert!(
            inventory
                .objects
                .iter()
                .all(|e| e.uid.is_none() && !e.adopted)
        );
        assert_eq!(inventory.objects[0].object.kind, "Deployment");
    }

    #[test]
    fn inventory_names_do_not_collide_where_the_old_names_did_and_stay_valid() {
        let key = |cluster: &str, uid: &str, bundle: &str| InventoryKey {
            namespace: "team".into(),
            cluster: cluster.into(),
            cluster_uid: uid.into(),
            bundle: bundle.into(),
        };
        let one = key("a-addons-b", "uid-1", "c");
        let two = key("a", "uid-2", "b-addons-c");
        assert_eq!(one.legacy_name(), two.legacy_name());
        assert_ne!(one.name(), two.name());
        // Same names, another Cluster object (re-created): another inventory.
        assert_ne!(key("a", "uid-1", "b").name(), key("a", "uid-3", "b").name());

        let long = key(
            &"c".repeat(63),
            "uid",
            &format!("{}.{}", "b".repeat(150), "x".repeat(100)),
        );
        let name = long.name();
        assert!(name.len() <= 253, "{}", name.len());
        assert!(is_dns_subdomain(&name), "{name}");
        // A cut that would end on '.' or '-' is trimmed.
        let dotted = key(
            &"c".repeat(63),
            "uid",
            &format!("{}.{}", "b".repeat(135), "x".repeat(100)),
        );
        assert!(is_dns_subdomain(&dotted.name()), "{}", dotted.name());
    }

    /// A DNS-1123 subdomain, as the apiserver checks object names (it does not limit the parts between dots).
    fn is_dns_subdomain(name: &str) -> bool {
        name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    }

    fn found(label: &str, uid: &str, owners: &[&str]) -> Found {
        Found {
            label: label.into(),
            uid: uid.into(),
            owners: owners.iter().map(|o| o.to_string()).collect(),
            incidental: false,
            endpoints: label.starts_with("Endpoints/"),
        }
    }

    #[test]
    fn objects_owned_by_slipways_objects_are_slipways_and_the_rest_is_not() {
        let ours = BTreeSet::from(["deployment", "service"]);
        let items = [
            found("Deployment/web", "deployment", &[]),
            found("Pod/web-1", "pod", &["replicaset"]),
            found("ReplicaSet/web", "replicaset", &["deployment"]),
            found("Service/web", "service", &[]),
            found("Endpoints/web", "endpoints", &[]),
            found("Endpoints/theirs", "endpoints-2", &[]),
            found("Widget/theirs", "widget", &[]),
            found("Gadget/owned-by-theirs", "gadget", &["widget"]),
            Found {
                incidental: true,
                ..found("ConfigMap/kube-root-ca.crt", "root-ca", &[])
            },
        ];
        assert_eq!(
            not_slipways(&items, &ours),
            [
                "Endpoints/theirs",
                "Widget/theirs",
                "Gadget/owned-by-theirs"
            ]
        );
    }
}
