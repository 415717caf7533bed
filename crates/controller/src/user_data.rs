//! What a new machine boots with: rendered only when a machine is about to be made.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use slipway_api::{Cluster, Distribution};
use slipway_bootstrap::BootstrapToken;
use slipway_bootstrap::cloud_init::{self, ClusterNetwork, NodeSettings};

use crate::cluster_secrets;
use crate::context::Context;
use crate::error::Result;

/// The bootstrap a group's new machines need.
pub enum Boot<'a> {
    /// Workers of providers without real machines, and (for now) workers joining by other means.
    Nothing,
    /// The control plane: `kubeadm init` or `k3s server` with the cluster's own PKI.
    ControlPlane {
        cluster: &'a Cluster,
        endpoint: Option<(String, u16)>,
    },
}

impl Boot<'_> {
    pub async fn render(&self, ctx: &Context) -> Result<Option<String>> {
        let Boot::ControlPlane { cluster, endpoint } = self else {
            return Ok(None);
        };
        let Some((host, port)) = endpoint else {
            return Ok(None);
        };
        let pki = cluster_secrets::load_pki(ctx, cluster).await?;
        let kubernetes = &cluster.spec.kubernetes;
        let network = ClusterNetwork {
            cluster_name: cluster.name_any(),
            kubernetes_version: kubernetes.version.clone(),
            endpoint: format!("{host}:{port}"),
            pod_cidr: kubernetes.network.pod_cidr.clone(),
            service_cidr: kubernetes.network.service_cidr.clone(),
            dns_domain: kubernetes.network.dns_domain.clone(),
        };
        let token = BootstrapToken::generate(Timestamp::now());
        let node = NodeSettings {
            labels: vec![(crate::POOL_LABEL.to_string(), "control-plane".to_string())],
            provider_id: None,
        };
        let user_data = match kubernetes.distribution {
            Distribution::Kubeadm => cloud_init::kubeadm_init(&network, &pki, &token, &node)?,
            Distribution::K3s => cloud_init::k3s_server(&network, &pki, &token, &node)?,
        };
        Ok(Some(user_data))
    }
}
