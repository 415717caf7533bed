//! Server-side apply of a bundle's objects, in the order their dependencies need.
//!
//! 1. Namespaces and CustomResourceDefinitions, then wait until the CRDs are `Established` and discovery serves
//!    their kinds. A failure here stops the apply: everything after may depend on it.
//! 2. Other cluster-scoped objects (ClusterRoles before the RoleBindings that name them, and so on).
//! 3. Namespaced objects.
//! 4. Validating and mutating webhook configurations, last: once registered, a webhook whose backend is not running
//!    yet would refuse the very objects that start it.
//!
//! From phase 2 on, a refused object is recorded and the apply goes on with the rest.
//!
//! Each apply says, per object, whether it created the object (the apiserver answers `201 Created` to an apply
//! that made it, `200 OK` to one that changed an existing object) and the object's UID: the inventory keeps that,
//! so prune deletes only what Slipway created.

use std::collections::BTreeSet;
use std::time::Duration;

use http::StatusCode;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::client::Body;
use kube::core::{Request, Status};
use kube::discovery::{ApiResource, Discovery, Scope};
use kube::{Api, Client};
use slipway_api::FIELD_MANAGER;
use tokio::time::Instant;

use crate::discovery::{discover, resolve};
use crate::error::{Error, ObjectFailure, Result};
use crate::object_ref::ObjectRef;
use crate::readiness::is_established;

const CRD_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Where namespaced objects that name no namespace go.
    pub default_namespace: String,
    /// How long CRDs may take to become `Established` and served.
    pub crd_timeout: Duration,
    /// The server-side apply field manager: one per bundle (see [`field_manager`]), so two bundles never share
    /// ownership of a field without the apiserver saying so.
    pub field_manager: String,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            default_namespace: "default".to_string(),
            crd_timeout: Duration::from_secs(60),
            field_manager: FIELD_MANAGER.to_string(),
        }
    }
}

/// The longest field manager name the apiserver accepts.
const MAX_FIELD_MANAGER: usize = 128;

/// The field manager of bundle `bundle`: `slipway-addon-<bundle>`, shortened with a hash of the name when it would
/// be longer than the apiserver's 128 characters.
pub fn field_manager(bundle: &str) -> String {
    let manager = format!("slipway-addon-{bundle}");
    if manager.len() <= MAX_FIELD_MANAGER {
        return manager;
    }
    let hash = crate::inventory::short_hash(bundle);
    let keep = MAX_FIELD_MANAGER - hash.len() - 1;
    // Bundle names are ASCII (DNS subdomains), so any byte offset is a character boundary.
    format!("{}-{hash}", &manager[..keep])
}

/// What one apply did.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Every object of the bundle, namespaces resolved, whether or not it was accepted: the inventory of the new
    /// set (see [`crate::Inventory`]). An object refused this time is still the bundle's and must not be pruned.
    pub objects: Vec<ObjectRef>,
    /// The objects the apiserver accepted, with their UID and whether this apply created them.
    pub applied: Vec<Applied>,
    /// The objects the apiserver refused, with its message.
    pub failures: Vec<ObjectFailure>,
}

/// One object the apiserver accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub object: ObjectRef,
    /// Its UID after the apply.
    pub uid: String,
    /// Whether this apply created it (`201 Created`) rather than changed an object that was there already.
    pub created: bool,
}

impl ApplyReport {
    /// The objects, or [`Error::ApplyFailed`] listing every refused one.
    pub fn into_result(self) -> Result<Vec<ObjectRef>> {
        if self.failures.is_empty() {
            Ok(self.objects)
        } else {
            Err(Error::ApplyFailed(self.failures))
        }
    }
}

/// Server-side applies `objects` with `options.field_manager`, forcing ownership of conflicting fields: the
/// bundle is the source of truth, and forcing is what repairs drift. An object that existed before is changed
/// to the bundle's fields too, but [`Applied::created`] says it was not created here.
///
/// Returns `Err` when the apply could not go on at all (discovery failed, a Namespace or CRD was refused, CRDs did
/// not become Established); otherwise a report of every object and every refusal.
pub async fn apply(
    client: &Client,
    objects: &[DynamicObject],
    options: &ApplyOptions,
) -> Result<ApplyReport> {
    let mut report = ApplyReport::default();
    let (foundation, rest): (Vec<&DynamicObject>, Vec<&DynamicObject>) = objects
        .iter()
        .partition(|o| is_foundation(&ObjectRef::from_object(o)));

    let mut discovery = discover(client).await?;
    let mut crds = Vec::new();
    for object in foundation {
        let prepared = match prepare(&discovery, object, options) {
            Ok(prepared) => prepared,
            Err(message) => {
                report.failures.push(ObjectFailure {
                    object: ObjectRef::from_object(object),
                    message,
                });
                continue;
            }
        };
        report.objects.push(prepared.reference.clone());
        match apply_one(client, &prepared, &options.field_manager).await {
            Ok(applied) => {
                report.applied.push(applied);
                if prepared.reference.kind == "CustomResourceDefinition" {
                    crds.push(prepared.object);
                }
            }
            Err(message) => report.failures.push(ObjectFailure {
                object: prepared.reference,
                message,
            }),
        }
    }
    if !report.failures.is_empty() {
        return Err(Error::ApplyFailed(report.failures));
    }
    if !crds.is_empty() {
        let deadline = Instant::now() + options.crd_timeout;
        wait_established(client, &crds, deadline, options.crd_timeout).await?;
        discovery = discover_served(client, &crds, deadline).await?;
    }

    let mut prepared = Vec::with_capacity(rest.len());
    for object in rest {
        match prepare(&discovery, object, options) {
            Ok(p) => prepared.push(p),
            Err(message) => {
                let object = ObjectRef::from_object(object);
                report.objects.push(object.clone());
                report.failures.push(ObjectFailure { object, message });
            }
        }
    }
    // Stable: within a phase, the bundle's own order.
    prepared.sort_by_key(|p| p.phase);
    for object in prepared {
        report.objects.push(object.reference.clone());
        match apply_one(client, &object, &options.field_manager).await {
            Ok(applied) => report.applied.push(applied),
            Err(message) => report.failures.push(ObjectFailure {
                object: object.reference,
                message,
            }),
        }
    }
    tracing::info!(
        objects = report.objects.len(),
        failed = report.failures.len(),
        "applied add-on objects"
    );
    Ok(report)
}

/// When an object is applied; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Foundation,
    ClusterScoped,
    Namespaced,
    Webhooks,
}

pub(crate) fn phase(object: &ObjectRef) -> Phase {
    if is_foundation(object) {
        Phase::Foundation
    } else if object.is(
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ) || object.is(
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ) {
        Phase::Webhooks
    } else if object.namespace.is_none() {
        Phase::ClusterScoped
    } else {
        Phase::Namespaced
    }
}

/// `app.kubernetes.io/managed-by`, set to `slipway` on every object Slipway applies that does not set it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

fn is_foundation(object: &ObjectRef) -> bool {
    object.is("", "Namespace") || object.is("apiextensions.k8s.io", "CustomResourceDefinition")
}

/// An object ready to send: its resource, its namespace settled by the kind's scope, server-owned fields removed.
struct Prepared {
    object: DynamicObject,
    resource: ApiResource,
    reference: ObjectRef,
    phase: Phase,
}

/// Fails with the reason when the kind is not served.
fn prepare(
    discovery: &Discovery,
    object: &DynamicObject,
    options: &ApplyOptions,
) -> std::result::Result<Prepared, String> {
    let mut reference = ObjectRef::from_object(object);
    let Some((resource, capabilities)) = resolve(discovery, &reference) else {
        let api_version = object.types.as_ref().map(|t| t.api_version.as_str());
        return Err(format!(
            "the API server does not serve kind {} in {} (is its CRD installed?)",
            reference.kind,
            api_version.unwrap_or_default()
        ));
    };
    let mut object = object.clone();
    match capabilities.scope {
        Scope::Namespaced => {
            let namespace = object
                .metadata
                .namespace
                .get_or_insert_with(|| options.default_namespace.clone());
            reference.namespace = Some(namespace.clone());
        }
        // A namespace on a cluster-scoped object means nothing; kubectl drops it too.
        Scope::Cluster => {
            object.metadata.namespace = None;
            reference.namespace = None;
        }
    }
    // Manifests exported with `kubectl get -o yaml` carry fields the server owns; apply would refuse or conflict.
    object.metadata.resource_version = None;
    object.metadata.uid = None;
    object.metadata.managed_fields = None;
    object.metadata.creation_timestamp = None;
    // At least one field for Slipway to own: the apiserver drops a field manager that owns no fields, so a bare
    // Namespace would look as if someone else had made it and prune would never remove it. A manifest that sets
    // the label already keeps its own value.
    object
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .entry(MANAGED_BY_LABEL.to_string())
        .or_insert_with(|| FIELD_MANAGER.to_string());
    Ok(Prepared {
        phase: phase(&reference),
        object,
        resource,
        reference,
    })
}

/// Applies one object. Sent as a raw request rather than through `Api::patch` because only the response's status
/// code tells a create (`201`) from a change (`200`), and that is what decides whether Slipway may ever delete it.
async fn apply_one(
    client: &Client,
    prepared: &Prepared,
    field_manager: &str,
) -> std::result::Result<Applied, String> {
    let api = api_for(client, prepared);
    let params = PatchParams::apply(field_manager).force();
    let request = Request::new(api.resource_url())
        .patch(
            &prepared.reference.name,
            &params,
            &Patch::Apply(&prepared.object),
        )
        .map_err(|e| e.to_string())?;
    let response = client
        .send(request.map(Body::from))
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        let message = serde_json::from_slice::<Status>(&body)
            .ok()
            .map(|s| s.message)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("HTTP {status}"));
        tracing::debug!(object = %prepared.reference, %message, "apply refused");
        return Err(message);
    }
    let live: DynamicObject = serde_json::from_slice(&body)
        .map_err(|e| format!("the apiserver's answer is not an object: {e}"))?;
    let created = status == StatusCode::CREATED;
    tracing::debug!(object = %prepared.reference, created, "applied");
    if field_manager != FIELD_MANAGER {
        drop_shared_manager(&api, &prepared.reference, &live).await;
    }
    Ok(Applied {
        object: prepared.reference.clone(),
        uid: live.metadata.uid.clone().unwrap_or_default(),
        created,
    })
}

fn api_for(client: &Client, prepared: &Prepared) -> Api<DynamicObject> {
    match &prepared.reference.namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &prepared.resource),
        None => Api::all_with(client.clone(), &prepared.resource),
    }
}

/// Removes the apply entry of the field manager every bundle used to share (`slipway`) from an object its bundle's
/// own manager now applies. Both own the same fields after the first apply under the new name, and a field the bundle
/// drops would stay as long as the old entry still owned it. A JSON patch that tests the resourceVersion, as
/// client-go's `csaupgrade` does; if the object changed meanwhile, the next apply tries again.
async fn drop_shared_manager(api: &Api<DynamicObject>, object: &ObjectRef, live: &DynamicObject) {
    let Some(entries) = &live.metadata.managed_fields else {
        return;
    };
    let is_shared =
        |entry: &&k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry| {
            entry.manager.as_deref() == Some(FIELD_MANAGER)
                && entry.operation.as_deref() == Some("Apply")
        };
    if !entries.iter().any(|e| is_shared(&e)) {
        return;
    }
    let kept: Vec<_> = entries.iter().filter(|e| !is_shared(e)).collect();
    let patch = serde_json::json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": live.metadata.resource_version},
        {"op": "replace", "path": "/metadata/managedFields", "value": kept},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(patch).expect("a valid JSON patch");
    match api
        .patch(
            &object.name,
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(_) => tracing::debug!(%object, "dropped the shared field manager {FIELD_MANAGER}"),
        Err(error) => {
            tracing::debug!(%object, %error, "could not drop the shared field manager yet")
        }
    }
}

/// The apiserver's own words when it answered, the client error otherwise.
pub(crate) fn apiserver_message(error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message,
        other => other.to_string(),
    }
}

async fn wait_established(
    client: &Client,
    crds: &[DynamicObject],
    deadline: Instant,
    timeout: Duration,
) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut waiting: Vec<String> = crds
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    loop {
        let mut still = Vec::new();
        for name in waiting {
            let crd = api
                .get_opt(&name)
                .await
                .map_err(|e| Error::kube(format!("get CustomResourceDefinition {name}"), e))?;
            if !crd.as_ref().is_some_and(is_established) {
                still.push(name);
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::CrdsNotEstablished {
                crds: still,
                seconds: timeout.as_secs(),
            });
        }
        waiting = still;
        tokio::time::sleep(CRD_POLL_INTERVAL).await;
    }
}

/// Discovery again, until it serves every kind the CRDs define: `Established` can come a moment before discovery
/// (aggregated discovery especially) lists the new kinds.
async fn discover_served(
    client: &Client,
    crds: &[DynamicObject],
    deadline: Instant,
) -> Result<Discovery> {
    let defined: BTreeSet<ObjectRef> = crds.iter().flat_map(defined_kinds).collect();
    loop {
        let discovery = discover(client).await?;
        let missing: Vec<&ObjectRef> = defined
            .iter()
            .filter(|kind| resolve(&discovery, kind).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(discovery);
        }
        if Instant::now() >= deadline {
            // Objects of these kinds will each be reported as not served; no need to fail the whole apply here.
            tracing::warn!(missing = ?missing, "CRD kinds still not in discovery");
            return Ok(discovery);
        }
        tokio::time::sleep(CRD_POLL_INTERVAL).await;
    }
}

/// The group/version/kind of every served version of a CRD (name left empty).
fn defined_kinds(crd: &DynamicObject) -> Vec<ObjectRef> {
    let spec = &crd.data["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let kind = spec["names"]["kind"].as_str().unwrap_or_default();
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| v["name"].as_str())
        .map(|version| ObjectRef {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            namespace: None,
            name: String::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(api_version: &str, kind: &str, namespace: Option<&str>) -> ObjectRef {
        let (group, version) = crate::object_ref::split_api_version(api_version);
        ObjectRef {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            namespace: namespace.map(Into::into),
            name: "x".into(),
        }
    }

    #[test]
    fn phases_put_namespaces_and_crds_first_and_webhooks_last() {
        let ns = reference("v1", "Namespace", None);
        let crd = reference("apiextensions.k8s.io/v1", "CustomResourceDefinition", None);
        let role = reference("rbac.authorization.k8s.io/v1", "ClusterRole", None);
        let deployment = reference("apps/v1", "Deployment", Some("a"));
        let webhook = reference(
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            None,
        );
        assert_eq!(phase(&ns), Phase::Foundation);
        assert_eq!(phase(&crd), Phase::Foundation);
        assert_eq!(phase(&role), Phase::ClusterScoped);
        assert_eq!(phase(&deployment), Phase::Namespaced);
        assert_eq!(phase(&webhook), Phase::Webhooks);
        assert!(Phase::Foundation < Phase::ClusterScoped);
        assert!(Phase::Namespaced < Phase::Webhooks);
    }

    #[test]
    fn a_crd_defines_each_served_version_of_its_kind() {
        let crd: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "names": {"kind": "Widget", "plural": "widgets"},
                "scope": "Namespaced",
                "versions": [
                    {"name": "v1", "served": true, "storage": true},
                    {"name": "v1alpha1", "served": false, "storage": false}
                ]
            }
        }))
        .unwrap();
        let kinds = defined_kinds(&crd);
        assert_eq!(kinds.len(), 1);
        assert_eq!(
            kinds[0].gvk(),
            kube::api::GroupVersionKind::gvk("example.com", "v1", "Widget")
        );
    }
}
