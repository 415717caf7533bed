//! What a new machine boots with: rendered only when a machine is about to be made.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use slipway_api::{Cluster, Distribution};
use slipway_bootstrap::cloud_init::{self, ClusterNetwork, NodeSettings};
use slipway_bootstrap::secrets::{self, Purpose};

use crate::cluster_secrets;
use crate::context::Context;
use crate::error::Result;
use crate::join_token::{self, Publish};

/// The bootstrap a group's new machines need.
pub enum Boot<'a> {
    /// Machines of providers that boot nothing.
    Nothing,
    /// The control plane: `kubeadm init` or `k3s server` with the cluster's own PKI.
    ControlPlane {
        cluster: &'a Cluster,
        endpoint: Option<(String, u16)>,
    },
    /// Workers of pool `pool`: `kubeadm join` or `k3s agent` with the cluster's join token.
    Worker { cluster: &'a Cluster, pool: &'a str },
}

impl Boot<'_> {
    pub async fn render(&self, ctx: &Context) -> Result<Option<String>> {
        match self {
            Boot::Nothing => Ok(None),
            Boot::ControlPlane { cluster, endpoint } => {
                let Some(endpoint) = endpoint else {
                    return Ok(None);
                };
                let pki = cluster_secrets::load_pki(ctx, cluster).await?;
                let network = network(cluster, endpoint);
                // The control plane creates this token itself on its first boot; workers made while it is valid
                // join with it.
                let token = join_token::ensure(ctx, cluster, Publish::ByControlPlane).await?;
                let node = node_settings("control-plane");
                Ok(Some(match cluster.spec.kubernetes.distribution {
                    Distribution::Kubeadm => {
                        cloud_init::kubeadm_init(&network, &pki, &token, &node)?
                    }
                    Distribution::K3s => cloud_init::k3s_server(&network, &pki, &token, &node)?,
                }))
            }
            Boot::Worker { cluster, pool } => {
                let Some(endpoint) = cluster
                    .status
                    .as_ref()
                    .and_then(|s| s.control_plane_endpoint.as_ref())
                else {
                    return Ok(None);
                };
                let endpoint = (endpoint.host.clone(), endpoint.port as u16);
                let network = network(cluster, &endpoint);
                let token = join_token::ensure(ctx, cluster, Publish::ThroughApi).await?;
                let node = node_settings(pool);
                Ok(Some(match cluster.spec.kubernetes.distribution {
                    Distribution::Kubeadm => {
                        let ca_hash = ca_key_hash(ctx, cluster).await?;
                        cloud_init::kubeadm_join(&network, &ca_hash, &token, &node)?
                    }
                    Distribution::K3s => cloud_init::k3s_agent(&network, &token, &node)?,
                }))
            }
        }
    }
}

fn network(cluster: &Cluster, (host, port): &(String, u16)) -> ClusterNetwork {
    let kubernetes = &cluster.spec.kubernetes;
    ClusterNetwork {
        cluster_name: cluster.name_any(),
        kubernetes_version: kubernetes.version.clone(),
        endpoint: format!("{host}:{port}"),
        pod_cidr: kubernetes.network.pod_cidr.clone(),
        service_cidr: kubernetes.network.service_cidr.clone(),
        dns_domain: kubernetes.network.dns_domain.clone(),
    }
}

fn node_settings(group: &str) -> NodeSettings {
    NodeSettings {
        labels: vec![(crate::POOL_LABEL.to_string(), group.to_string())],
        provider_id: None,
    }
}

/// `sha256:<hex>` of the cluster CA's public key: how a joining node knows it talks to its own cluster.
async fn ca_key_hash(ctx: &Context, cluster: &Cluster) -> Result<String> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let secret = api
        .get(&Purpose::Ca.secret_name(&cluster.name_any()))
        .await?;
    Ok(secrets::ca_from_secret(&secret)?.public_key_hash()?)
}
