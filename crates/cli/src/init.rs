//! `slipway init`: makes a Kubernetes cluster a Slipway management cluster. Installs the CRDs, the manager's
//! least-privilege RBAC, its Deployment and metrics Service (`config/rbac/`, `config/manager/`, compiled in), by
//! server-side apply with field manager `slipway`, and says per object whether it was created, configured or
//! already as wanted. Running it again is harmless: it is also how Slipway is upgraded.
//! `slipway init --check` only looks: are the CRDs Established, the manager's Deployment (when installed) Available,
//! and does a manager hold the leader Lease?

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::exit::NotSatisfied;
use crate::kube_context::ContextArgs;
use crate::output::Table;

/// Namespace of the manager.
pub const NAMESPACE: &str = "slipway-system";
/// Name of the manager's Deployment.
pub const DEPLOYMENT: &str = "slipway-manager";
/// The leader-election Lease the manager holds (`slipway manager --lease-name`'s default).
pub const LEASE: &str = "slipway-manager";

/// The manifests, in the order they are applied: the namespace first, RBAC before the Deployment that uses it.
const MANIFESTS: [(&str, &str); 6] = [
    (
        "config/manager/namespace.yaml",
        include_str!("../../../config/manager/namespace.yaml"),
    ),
    (
        "config/rbac/service_account.yaml",
        include_str!("../../../config/rbac/service_account.yaml"),
    ),
    (
        "config/rbac/role.yaml",
        include_str!("../../../config/rbac/role.yaml"),
    ),
    (
        "config/rbac/role_binding.yaml",
        include_str!("../../../config/rbac/role_binding.yaml"),
    ),
    (
        "config/rbac/leader_election.yaml",
        include_str!("../../../config/rbac/leader_election.yaml"),
    ),
    (
        "config/manager/manager.yaml",
        include_str!("../../../config/manager/manager.yaml"),
    ),
];
const METRICS_SERVICE: &str = include_str!("../../../config/manager/metrics_service.yaml");

#[derive(clap::Args)]
#[command(after_help = "Examples:
  slipway init                      install or upgrade Slipway in the current context's cluster
  slipway init --dry-run | less     see what would be applied
  slipway init --check              exit 0 when the CRDs are Established and a manager leads, else 1")]
pub struct Args {
    #[command(flatten)]
    context: ContextArgs,
    /// Print the YAML that would be applied instead of applying it.
    #[arg(long, conflicts_with = "check")]
    dry_run: bool,
    /// Only check that the management cluster is ready: CRDs Established, the manager's Deployment Available (when
    /// installed) and a manager holding the leader Lease, renewed within the Lease's duration.
    #[arg(long)]
    check: bool,
    /// Manager image (default: ghcr.io/slipway/slipway at this binary's version).
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// Install the CRDs, namespace and RBAC but no manager Deployment: the manager runs elsewhere, as the
    /// quickstart's runs on your machine (`slipway manager`).
    #[arg(long, conflicts_with = "check")]
    without_manager: bool,
}

/// What applying one object did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Created,
    Configured,
    Unchanged,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut objects = objects(args.image.as_deref())?;
    if args.without_manager {
        objects.retain(|o| !matches!(o["kind"].as_str(), Some("Deployment" | "Service")));
    }
    if args.dry_run {
        let documents: anyhow::Result<Vec<String>> = objects
            .iter()
            .map(|o| serde_saphyr::to_string(o).map_err(Into::into))
            .collect();
        print!("{}", documents?.join("---\n"));
        return Ok(());
    }
    let session = args.context.connect_without_slipway().await?;
    if args.check {
        return check(&session.client, &session.server).await;
    }
    let mut resources = HashMap::new();
    for object in objects {
        let object: DynamicObject =
            serde_json::from_value(object).context("an embedded manifest is not an object")?;
        let label = label(&object);
        let outcome = apply(&session.client, &mut resources, &object)
            .await
            .with_context(|| format!("applying {label}"))?;
        println!("{label} {}", format!("{outcome:?}").to_lowercase());
        if object
            .types
            .as_ref()
            .is_some_and(|t| t.kind == "CustomResourceDefinition")
        {
            wait_established(&session.client, &object.name_any()).await?;
        }
    }
    Ok(())
}

/// Every object `init` applies, in order: namespace, CRDs, RBAC, Deployment, Service.
fn objects(image: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let image = image
        .map(String::from)
        .unwrap_or_else(|| format!("ghcr.io/slipway/slipway:v{}", env!("CARGO_PKG_VERSION")));
    let mut objects = Vec::new();
    let push_file = |objects: &mut Vec<Value>, path: &str, text: &str| -> anyhow::Result<()> {
        let text = text.replace("ghcr.io/slipway/slipway:${SLIPWAY_VERSION}", &image);
        let documents: Vec<Value> =
            serde_saphyr::from_multiple(&text).with_context(|| format!("parsing {path}"))?;
        objects.extend(documents.into_iter().filter(|d| !d.is_null()));
        Ok(())
    };
    let (namespace_path, namespace) = MANIFESTS[0];
    push_file(&mut objects, namespace_path, namespace)?;
    for crd in slipway_api::crds() {
        objects.push(serde_json::to_value(crd)?);
    }
    for (path, text) in &MANIFESTS[1..] {
        push_file(&mut objects, path, text)?;
    }
    push_file(
        &mut objects,
        "config/manager/metrics_service.yaml",
        METRICS_SERVICE,
    )?;
    Ok(objects)
}

/// `kind.group/name`, as kubectl prints it.
fn label(object: &DynamicObject) -> String {
    let types = object.types.clone().unwrap_or_default();
    let kind = types.kind.to_lowercase();
    let resource = match types.api_version.split_once('/') {
        Some((group, _)) => format!("{kind}.{group}"),
        None => kind,
    };
    format!("{resource}/{}", object.name_any())
}

/// Server-side applies `object` and compares resourceVersions before and after: an apply that changes nothing
/// writes nothing, so the version stays the same.
async fn apply(
    client: &Client,
    resources: &mut HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>,
    object: &DynamicObject,
) -> anyhow::Result<Outcome> {
    let types = object
        .types
        .as_ref()
        .context("the manifest has no apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(types)?;
    if !resources.contains_key(&gvk) {
        let found = kube::discovery::pinned_kind(client, &gvk)
            .await
            .with_context(|| format!("looking up {} {}", types.api_version, types.kind))?;
        resources.insert(gvk.clone(), found);
    }
    let (resource, capabilities) = &resources[&gvk];
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            object.metadata.namespace.as_deref().unwrap_or("default"),
            resource,
        ),
        Scope::Cluster => Api::all_with(client.clone(), resource),
    };
    let name = object.name_any();
    let before = api.get_opt(&name).await?.map(|o| o.resource_version());
    let after = api
        .patch(
            &name,
            &PatchParams::apply(slipway_api::FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await?
        .resource_version();
    Ok(match before {
        None => Outcome::Created,
        Some(before) if before == after => Outcome::Unchanged,
        Some(_) => Outcome::Configured,
    })
}

/// Custom resources can only be created once their CRD is Established; later steps (and the user's first
/// `kubectl apply`) depend on it.
async fn wait_established(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for _ in 0..300 {
        if crd_established(&api.get(name).await?) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("CRD {name} was not Established within 30s; see `kubectl describe crd {name}`")
}

fn crd_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// `--check`: one line per requirement; exit 1 (with what is missing) unless all hold.
async fn check(client: &Client, server: &str) -> anyhow::Result<()> {
    let mut table = Table::new(&["CHECK", "READY", "DETAIL"]);
    let mut problems = Vec::new();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in slipway_api::crds() {
        let name = crd.name_any();
        let (ready, detail) = match crds.get_opt(&name).await? {
            None => (false, "missing".to_string()),
            Some(found) if crd_established(&found) => (true, "Established".to_string()),
            Some(_) => (false, "not Established yet".to_string()),
        };
        if !ready {
            problems.push(format!("CRD {name} {detail}"));
        }
        table.row(vec![format!("crd/{name}"), ready_word(ready), detail]);
    }
    // A Deployment that `init` installed must be Available; with `--without-manager` there is none, and the manager
    // runs elsewhere (the quickstart's, a test's).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let (ready, detail) = match deployments.get_opt(DEPLOYMENT).await? {
        None => (
            true,
            "not installed (init --without-manager): the manager runs elsewhere".to_string(),
        ),
        Some(deployment) => {
            let status = deployment.status.unwrap_or_default();
            let available = status.conditions.unwrap_or_default().iter().any(|c| {
                c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
            });
            let counts = format!(
                "{} of {} replicas available",
                status.available_replicas.unwrap_or(0),
                deployment.spec.replicas.unwrap_or(1)
            );
            (available, counts)
        }
    };
    if !ready {
        problems.push(format!("Deployment {NAMESPACE}/{DEPLOYMENT} {detail}"));
    }
    table.row(vec![
        format!("deployment/{NAMESPACE}/{DEPLOYMENT}"),
        ready_word(ready),
        detail,
    ]);
    // Pods can be Available and still not reconcile (e.g. none has won the election): a running manager is one
    // that holds the leader Lease and renewed it within the Lease's duration.
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let (ready, detail) = lease_state(leases.get_opt(LEASE).await?.as_ref(), Timestamp::now());
    if !ready {
        problems.push(format!("Lease {NAMESPACE}/{LEASE}: {detail}"));
    }
    table.row(vec![
        format!("lease/{NAMESPACE}/{LEASE}"),
        ready_word(ready),
        detail,
    ]);
    print!("{}", table.render());
    if problems.is_empty() {
        println!("Slipway is ready in the management cluster at {server}");
        Ok(())
    } else {
        Err(NotSatisfied(format!(
            "Slipway is not ready in the management cluster at {server}: {}; run `slipway init` to install \
             or repair it, and see `kubectl -n {NAMESPACE} get pods` for the manager",
            problems.join(", ")
        ))
        .into())
    }
}

/// Whether a manager leads: the Lease has a holder that renewed it less than its duration ago, at `now`.
fn lease_state(lease: Option<&Lease>, now: Timestamp) -> (bool, String) {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return (false, "no manager has taken the leader Lease".to_string());
    };
    let Some(holder) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
        return (
            false,
            "no manager holds the leader Lease (released)".to_string(),
        );
    };
    let Some(renewed) = spec.renew_time.as_ref() else {
        return (false, format!("held by {holder}, never renewed"));
    };
    // Seconds since the renewal; below 0 when this machine's clock is behind the manager's, which is fresh too.
    let age = now.duration_since(renewed.0).as_secs();
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15).max(1));
    if age > duration {
        (
            false,
            format!(
                "held by {holder}, but not renewed for {age}s (the lease lasts {duration}s): is it running?"
            ),
        )
    } else {
        (true, format!("held by {holder}, renewed {age}s ago"))
    }
}

fn ready_word(ready: bool) -> String {
    if ready { "True" } else { "False" }.to_string()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};

    use super::lease_state;

    fn lease(holder: Option<&str>, renewed: Option<Timestamp>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                renew_time: renewed.map(MicroTime),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn a_manager_leads_only_while_it_renews_the_lease_within_its_duration() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let ago = |seconds: i64| Some(now - SignedDuration::from_secs(seconds));

        let (ready, detail) = lease_state(Some(&lease(Some("pod-a"), ago(3))), now);
        assert!(ready, "{detail}");
        assert_eq!(detail, "held by pod-a, renewed 3s ago");
        // A renewal a little in this machine's future (clocks differ) is fresh.
        assert!(lease_state(Some(&lease(Some("pod-a"), ago(-2))), now).0);

        let (ready, detail) = lease_state(Some(&lease(Some("pod-a"), ago(16))), now);
        assert!(!ready);
        assert!(
            detail.contains("not renewed for 16s (the lease lasts 15s)"),
            "{detail}"
        );

        let (ready, detail) = lease_state(Some(&lease(None, ago(1))), now);
        assert!(!ready);
        assert!(detail.contains("released"), "{detail}");
        assert!(!lease_state(Some(&lease(Some(""), ago(1))), now).0);
        assert!(!lease_state(Some(&lease(Some("pod-a"), None)), now).0);
        let (ready, detail) = lease_state(None, now);
        assert!(!ready);
        assert_eq!(detail, "no manager has taken the leader Lease");
    }
}
