//! What a new machine boots with: rendered only when a machine is about to be made.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use slipway_api::{Cluster, Distribution};
use slipway_bootstrap::cloud_init::{self, ClusterNetwork, NodeSettings, ProviderId};
use slipway_bootstrap::secrets::{self, Purpose};
use slipway_bootstrap::{CertificateAuthority, K3sServerToken};
use tracing::info;

use crate::cluster_secrets;
use crate::context::Context;
use crate::error::Result;
use crate::join_token::{self, Publish};

/// The bootstrap a group's new machines need.
pub enum Boot<'a> {
    /// Machines of providers that boot nothing.
    Nothing,
    /// The first control-plane member, which initialises the cluster: `kubeadm init` or `k3s server
    /// --cluster-init`, with the cluster's own PKI.
    ControlPlane {
        cluster: &'a Cluster,
        endpoint: Option<(String, u16)>,
    },
    /// A control-plane member added to a cluster that is already initialised: `kubeadm join --control-plane`
    /// with the cluster's CAs and service-account key handed over, or `k3s server --server https://<endpoint>`
    /// with the cluster's k3s server token.
    ControlPlaneJoin {
        cluster: &'a Cluster,
        endpoint: Option<(String, u16)>,
    },
    /// Workers of pool `pool`: `kubeadm join` or `k3s agent` with the cluster's join token.
    Worker { cluster: &'a Cluster, pool: &'a str },
}

impl<'a> Boot<'a> {
    /// The bootstrap of a new control-plane machine given whether the group has machines already: the first
    /// initialises the cluster, every later one joins it. Other kinds are as they are.
    pub fn for_group(self, has_machines: bool) -> Boot<'a> {
        match self {
            Boot::ControlPlane { cluster, endpoint } if has_machines => {
                Boot::ControlPlaneJoin { cluster, endpoint }
            }
            other => other,
        }
    }

    /// The user data; `provider_id` is the provider's template for the machine's provider ID, rendered on the
    /// machine from its instance data (see `InfrastructureProvider::provider_id_from_instance_data`).
    pub async fn render(&self, ctx: &Context, provider_id: Option<&str>) -> Result<Option<String>> {
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
                let node = node_settings(ctx, "control-plane", provider_id);
                Ok(Some(match cluster.spec.kubernetes.distribution {
                    Distribution::Kubeadm => {
                        cloud_init::kubeadm_init(&network, &pki, &token, &node)?
                    }
                    Distribution::K3s => {
                        let server_token =
                            k3s_server_token(ctx, cluster, ServerToken::Ensure).await?;
                        cloud_init::k3s_server(&network, &pki, &server_token, &token, &node)?
                    }
                }))
            }
            Boot::ControlPlaneJoin { cluster, endpoint } => {
                let Some(endpoint) = endpoint else {
                    return Ok(None);
                };
                let network = network(cluster, endpoint);
                let node = node_settings(ctx, "control-plane", provider_id);
                Ok(Some(match cluster.spec.kubernetes.distribution {
                    Distribution::Kubeadm => {
                        let pki = cluster_secrets::load_pki(ctx, cluster).await?;
                        // The cluster answers already (its first member is ready), but the Cluster is not Ready
                        // until every member is, and the kubeconfig Secret is written then: the token goes in
                        // through the API, so the Secret is made now.
                        let (host, port) = endpoint;
                        cluster_secrets::ensure_kubeconfig(
                            ctx,
                            cluster,
                            &crate::workload::server_url(host, port),
                            None,
                        )
                        .await?;
                        let token = join_token::ensure(ctx, cluster, Publish::ThroughApi).await?;
                        cloud_init::kubeadm_join_control_plane(&network, &pki, &token, &node)?
                    }
                    Distribution::K3s => {
                        let server_token =
                            k3s_server_token(ctx, cluster, ServerToken::Existing).await?;
                        let ca = cluster_ca(ctx, cluster).await?;
                        cloud_init::k3s_server_join(&network, &ca.cert_pem, &server_token, &node)?
                    }
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
                let node = node_settings(ctx, pool, provider_id);
                let ca = cluster_ca(ctx, cluster).await?;
                Ok(Some(match cluster.spec.kubernetes.distribution {
                    Distribution::Kubeadm => {
                        cloud_init::kubeadm_join(&network, &ca.public_key_hash()?, &token, &node)?
                    }
                    Distribution::K3s => {
                        cloud_init::k3s_agent(&network, &ca.cert_pem, &token, &node)?
                    }
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

fn node_settings(ctx: &Context, group: &str, provider_id: Option<&str>) -> NodeSettings {
    NodeSettings {
        labels: vec![(crate::POOL_LABEL.to_string(), group.to_string())],
        provider_id: provider_id.map(|template| ProviderId::FromInstanceData(template.to_string())),
        packages: ctx.node_packages.clone(),
    }
}

/// The cluster CA (`<cluster>-ca`): a joining node checks the API server it reaches against it.
async fn cluster_ca(ctx: &Context, cluster: &Cluster) -> Result<CertificateAuthority> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let secret = api
        .get(&Purpose::Ca.secret_name(&cluster.name_any()))
        .await?;
    Ok(secrets::ca_from_secret(&secret)?)
}

/// Whether a missing k3s server token may be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerToken {
    /// For the first server, which has not started yet: made when missing.
    Ensure,
    /// For a joining server: only the token the first server started with will do, so a missing one is an error.
    Existing,
}

/// The cluster's k3s server token from `<cluster>-token`. It is made once, before the first server boots, and never
/// replaced: k3s encrypts its datastore's bootstrap data with it, so a server with another token can never join.
/// A Secret broken by hand is therefore an error naming it, not something to overwrite.
async fn k3s_server_token(
    ctx: &Context,
    cluster: &Cluster,
    want: ServerToken,
) -> Result<K3sServerToken> {
    let name = cluster.name_any();
    let secret_name = Purpose::K3sServerToken.secret_name(&name);
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    if let Some(secret) = api.get_opt(&secret_name).await? {
        return Ok(secrets::k3s_server_token_from_secret(&secret)?);
    }
    if want == ServerToken::Existing {
        return Err(slipway_bootstrap::Error::InvalidSecret {
            secret: secret_name,
            what: "does not exist, and a k3s server joins only with the token the first server started with: \
                   restore the Secret (key \"value\") from a backup or from /var/lib/rancher/k3s/server/token on a \
                   running server"
                .into(),
        }
        .into());
    }
    let token = K3sServerToken::generate();
    let secret = secrets::k3s_server_token_secret(&name, &token, cluster.controller_owner_ref(&()));
    // `create` never overwrites: when another pass made it first, its token is the one to use.
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            info!(secret = %secret_name, "created the k3s server token");
            Ok(token)
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(
            secrets::k3s_server_token_from_secret(&api.get(&secret_name).await?)?,
        ),
        Err(e) => Err(e.into()),
    }
}
