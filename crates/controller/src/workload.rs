//! Clients for workload clusters, made from their `<cluster>-kubeconfig` Secrets and cached per Cluster UID.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use slipway_api::Cluster;
use slipway_bootstrap::secrets::Purpose;

use crate::context::Context;

/// A client for the cluster's API from its `<cluster>-kubeconfig` Secret, cached per cluster.
pub(crate) async fn client(ctx: &Context, cluster: &Cluster) -> Result<Client, String> {
    let key = cluster.uid().unwrap_or_default();
    if let Some(client) = ctx
        .workload_clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
    {
        return Ok(client.clone());
    }
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let name = Purpose::Kubeconfig.secret_name(&cluster.name_any());
    let secret = secrets
        .get(&name)
        .await
        .map_err(|e| format!("reading Secret {name}: {e}"))?;
    let yaml = secret
        .data
        .and_then(|mut d| d.remove("value"))
        .and_then(|v| String::from_utf8(v.0).ok())
        .ok_or_else(|| format!("Secret {name} has no kubeconfig under key value"))?;
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&yaml).map_err(|e| format!("Secret {name}: {e}"))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| format!("Secret {name}: {e}"))?;
    let client = Client::try_from(config).map_err(|e| format!("client for {name}: {e}"))?;
    ctx.workload_clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, client.clone());
    Ok(client)
}

/// Forgets a deleted cluster's client.
pub fn forget_cluster(ctx: &Context, uid: &str) {
    ctx.workload_clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(uid);
}
