//! A cluster's PKI and kubeconfig Secrets: made once, never regenerated, user-provided ones used as they are; the
//! kubeconfig's client certificate renewed at half-life.
//!
//! Which Secrets exist is read from a metadata-only cache (names, labels, annotations), so a reconcile that finds
//! everything in place reads no Secret data and writes nothing.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use slipway_api::Cluster;
use slipway_bootstrap::pki::CertificateAuthority;
use slipway_bootstrap::secrets::{self, CLUSTER_NAME_LABEL, Purpose};
use slipway_bootstrap::{ClusterPki, kubeconfig};
use tracing::info;

use crate::context::Context;
use crate::error::Result;

fn cached(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Option<std::sync::Arc<kube::core::PartialObjectMeta<Secret>>> {
    ctx.secrets.get(&ObjectRef::new(name).within(namespace))
}

/// Creates whichever of `<cluster>-ca`, `-etcd`, `-proxy`, `-sa` is missing. Existing ones are never touched.
/// Returns the cluster CA when this call created `<cluster>-ca`, so that a kubeconfig made in the same pass needs
/// no read of it.
pub async fn ensure_pki(ctx: &Context, cluster: &Cluster) -> Result<Option<CertificateAuthority>> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    if Purpose::PKI
        .iter()
        .all(|p| cached(ctx, &namespace, &p.secret_name(&name)).is_some())
    {
        return Ok(None);
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let owner = cluster.controller_owner_ref(&());
    let generated = ClusterPki::generate(&name)?;
    let ca_name = Purpose::Ca.secret_name(&name);
    let mut created_ca = false;
    for secret in secrets::pki_secrets(&name, &generated, owner) {
        let secret_name = secret.metadata.name.clone().unwrap_or_default();
        // The cache may lag: only the apiserver can say a Secret is missing, and `create` never overwrites one.
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                info!(secret = %secret_name, "created cluster PKI Secret");
                created_ca |= secret_name == ca_name;
            }
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(created_ca.then_some(generated.ca))
}

/// The cluster's PKI, read from its Secrets.
pub async fn load_pki(ctx: &Context, cluster: &Cluster) -> Result<ClusterPki> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let name = cluster.name_any();
    let mut found = Vec::new();
    for purpose in Purpose::PKI {
        found.push(api.get(&purpose.secret_name(&name)).await?);
    }
    let found: [Secret; 4] = found.try_into().expect("four PKI Secrets");
    Ok(secrets::pki_from_secrets(&found)?)
}

/// Writes `<cluster>-kubeconfig` for `server` when it is missing or its certificate is past half-life. Says
/// whether it wrote. `new_ca` is the CA [`ensure_pki`] created in this pass, if it did: then any kubeconfig there
/// is was not signed by it, and a new one is written without looking.
pub async fn ensure_kubeconfig(
    ctx: &Context,
    cluster: &Cluster,
    server: &str,
    new_ca: Option<&CertificateAuthority>,
) -> Result<bool> {
    if let Some(ca) = new_ca {
        write_kubeconfig_signed_by(ctx, cluster, server, ca).await?;
        return Ok(true);
    }
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let secret_name = Purpose::Kubeconfig.secret_name(&name);
    let now = Timestamp::now();
    let annotations = match cached(ctx, &namespace, &secret_name) {
        Some(meta) => meta.metadata.annotations.clone(),
        // Not in the cache: it may lag (a relist after the apiserver was away). One metadata GET is cheaper than a
        // new client certificate, and without it every poll of every cluster would mint one until the cache
        // catches up.
        None => Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
            .get_metadata_opt(&secret_name)
            .await?
            .and_then(|meta| meta.metadata.annotations),
    };
    let current = secrets::kubeconfig_validity(annotations.as_ref());
    if current.is_some_and(|(issued, expires)| !kubeconfig::needs_renewal(issued, expires, now)) {
        return Ok(false);
    }
    write_kubeconfig(ctx, cluster, server).await?;
    Ok(true)
}

/// Writes `<cluster>-kubeconfig` for `server` with a new client certificate, whatever the Secret holds now.
pub async fn write_kubeconfig(ctx: &Context, cluster: &Cluster, server: &str) -> Result<()> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let ca = api
        .get(&Purpose::Ca.secret_name(&cluster.name_any()))
        .await?;
    write_kubeconfig_signed_by(ctx, cluster, server, &secrets::ca_from_secret(&ca)?).await
}

async fn write_kubeconfig_signed_by(
    ctx: &Context,
    cluster: &Cluster,
    server: &str,
    ca: &CertificateAuthority,
) -> Result<()> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let secret_name = Purpose::Kubeconfig.secret_name(&name);
    let now = Timestamp::now();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let kubeconfig = kubeconfig::admin_kubeconfig(&name, server, ca, now)?;
    let secret = secrets::kubeconfig_secret(&name, &kubeconfig, cluster.controller_owner_ref(&()));
    let mut object = serde_json::to_value(&secret).expect("a Secret serializes");
    object["apiVersion"] = "v1".into();
    object["kind"] = "Secret".into();
    api.patch(
        &secret_name,
        &PatchParams::apply(slipway_api::FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await?;
    info!(secret = %secret_name, "wrote the admin kubeconfig");
    Ok(())
}

/// Deletes the Secrets this cluster owns; user-provided ones carry no owner reference and stay.
pub async fn delete_owned(ctx: &Context, cluster: &Cluster) -> Result<()> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let selector = format!("{CLUSTER_NAME_LABEL}={}", cluster.name_any());
    let uid = cluster.uid();
    let owned: Vec<Secret> = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|s| {
            s.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .collect();
    for secret in &owned {
        match api
            .delete(&secret.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
