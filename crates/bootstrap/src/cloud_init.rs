//! Cloud-init user data that makes a machine a kubeadm or k3s node.
//!
//! Control-plane machines get the cluster's CAs and service-account key as files, so every member serves with
//! certificates from the same authorities that Slipway keeps in Secrets; workers get only a bootstrap token and
//! the CA's public-key hash, which lets them verify the API server they join.

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::pki::ClusterPki;
use crate::token::{BootstrapToken, TOKEN_TTL};

/// What every machine needs to know about its cluster.
#[derive(Debug, Clone)]
pub struct ClusterNetwork {
    pub cluster_name: String,
    pub kubernetes_version: String,
    /// `host:port` of the cluster's API endpoint.
    pub endpoint: String,
    pub pod_cidr: String,
    pub service_cidr: String,
    pub dns_domain: String,
}

/// One node's own settings.
#[derive(Debug, Clone, Default)]
pub struct NodeSettings {
    /// `key=value` labels the kubelet registers the node with.
    pub labels: Vec<(String, String)>,
    /// The provider's id for the machine, so the Node's `spec.providerID` matches it.
    pub provider_id: Option<String>,
}

fn file(path: &str, content: &str, permissions: &str) -> Value {
    json!({ "path": path, "content": content, "permissions": permissions, "owner": "root:root" })
}

fn render(document: Value) -> Result<String> {
    let body = serde_saphyr::to_string(&document).map_err(|e| Error::Render {
        what: "cloud-init",
        message: e.to_string(),
    })?;
    Ok(format!("#cloud-config\n{body}"))
}

fn kubelet_args(node: &NodeSettings) -> Vec<Value> {
    let mut args = Vec::new();
    if !node.labels.is_empty() {
        let labels: Vec<String> = node
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        args.push(json!({ "name": "node-labels", "value": labels.join(",") }));
    }
    if let Some(id) = &node.provider_id {
        args.push(json!({ "name": "provider-id", "value": id }));
    }
    args
}

fn pki_files(pki: &ClusterPki, dir: &str) -> Vec<Value> {
    vec![
        file(&format!("{dir}/ca.crt"), &pki.ca.cert_pem, "0644"),
        file(&format!("{dir}/ca.key"), &pki.ca.key_pem, "0600"),
        file(&format!("{dir}/etcd/ca.crt"), &pki.etcd.cert_pem, "0644"),
        file(&format!("{dir}/etcd/ca.key"), &pki.etcd.key_pem, "0600"),
        file(
            &format!("{dir}/front-proxy-ca.crt"),
            &pki.front_proxy.cert_pem,
            "0644",
        ),
        file(
            &format!("{dir}/front-proxy-ca.key"),
            &pki.front_proxy.key_pem,
            "0600",
        ),
        file(
            &format!("{dir}/sa.pub"),
            &pki.service_account.public_pem,
            "0644",
        ),
        file(
            &format!("{dir}/sa.key"),
            &pki.service_account.private_pem,
            "0600",
        ),
    ]
}

/// `kubeadm init` on the first control-plane machine.
pub fn kubeadm_init(
    cluster: &ClusterNetwork,
    pki: &ClusterPki,
    token: &BootstrapToken,
    node: &NodeSettings,
) -> Result<String> {
    let init = json!({
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "InitConfiguration",
        "bootstrapTokens": [{ "token": token.token(), "ttl": format!("{}s", TOKEN_TTL.as_secs()), "groups": ["system:bootstrappers:kubeadm:default-node-token"] }],
        "nodeRegistration": { "kubeletExtraArgs": kubelet_args(node) },
    });
    let config = json!({
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "ClusterConfiguration",
        "clusterName": cluster.cluster_name,
        "kubernetesVersion": cluster.kubernetes_version,
        "controlPlaneEndpoint": cluster.endpoint,
        "networking": { "podSubnet": cluster.pod_cidr, "serviceSubnet": cluster.service_cidr, "dnsDomain": cluster.dns_domain },
    });
    let kubeadm_yaml = [init, config]
        .iter()
        .map(|doc| {
            serde_saphyr::to_string(doc).map_err(|e| Error::Render {
                what: "kubeadm config",
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?
        .join("---\n");
    let mut files = pki_files(pki, "/etc/kubernetes/pki");
    files.push(file("/run/kubeadm/kubeadm.yaml", &kubeadm_yaml, "0600"));
    render(json!({
        "write_files": files,
        "runcmd": [["kubeadm", "init", "--config", "/run/kubeadm/kubeadm.yaml", "--upload-certs"]],
    }))
}

/// `kubeadm join` on a worker, verifying the API server by the CA's public-key hash.
pub fn kubeadm_join(
    cluster: &ClusterNetwork,
    ca_key_hash: &str,
    token: &BootstrapToken,
    node: &NodeSettings,
) -> Result<String> {
    let join = json!({
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "JoinConfiguration",
        "discovery": { "bootstrapToken": { "apiServerEndpoint": cluster.endpoint, "token": token.token(), "caCertHashes": [ca_key_hash] } },
        "nodeRegistration": { "kubeletExtraArgs": kubelet_args(node) },
    });
    let join_yaml = serde_saphyr::to_string(&join).map_err(|e| Error::Render {
        what: "kubeadm config",
        message: e.to_string(),
    })?;
    render(json!({
        "write_files": [file("/run/kubeadm/kubeadm-join.yaml", &join_yaml, "0600")],
        "runcmd": [["kubeadm", "join", "--config", "/run/kubeadm/kubeadm-join.yaml"]],
    }))
}

/// The k3s release that carries `kubernetes_version` (`v1.37.2` → `v1.37.2+k3s1`).
pub fn k3s_version(kubernetes_version: &str) -> String {
    format!("{kubernetes_version}+k3s1")
}

fn k3s_install(role: &str, version: &str) -> Value {
    json!([
        "sh",
        "-c",
        format!(
            "curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION='{version}' INSTALL_K3S_EXEC='{role}' sh -"
        )
    ])
}

/// `k3s server` on the first control-plane machine, using the cluster's own CAs (k3s picks up CA files placed in
/// its TLS directory before its first start).
pub fn k3s_server(
    cluster: &ClusterNetwork,
    pki: &ClusterPki,
    token: &BootstrapToken,
    node: &NodeSettings,
) -> Result<String> {
    let host = cluster
        .endpoint
        .rsplit_once(':')
        .map_or(cluster.endpoint.as_str(), |(h, _)| h);
    let mut config = json!({
        "token": token.token(),
        "tls-san": [host],
        "cluster-cidr": cluster.pod_cidr,
        "service-cidr": cluster.service_cidr,
        "cluster-domain": cluster.dns_domain,
        "node-label": node.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
    });
    if let Some(id) = &node.provider_id {
        config["kubelet-arg"] = json!([format!("provider-id={id}")]);
    }
    let config_yaml = serde_saphyr::to_string(&config).map_err(|e| Error::Render {
        what: "k3s config",
        message: e.to_string(),
    })?;
    let tls = "/var/lib/rancher/k3s/server/tls";
    let files = vec![
        file("/etc/rancher/k3s/config.yaml", &config_yaml, "0600"),
        file(&format!("{tls}/server-ca.crt"), &pki.ca.cert_pem, "0644"),
        file(&format!("{tls}/server-ca.key"), &pki.ca.key_pem, "0600"),
        file(&format!("{tls}/client-ca.crt"), &pki.ca.cert_pem, "0644"),
        file(&format!("{tls}/client-ca.key"), &pki.ca.key_pem, "0600"),
        file(
            &format!("{tls}/request-header-ca.crt"),
            &pki.front_proxy.cert_pem,
            "0644",
        ),
        file(
            &format!("{tls}/request-header-ca.key"),
            &pki.front_proxy.key_pem,
            "0600",
        ),
        file(
            &format!("{tls}/etcd/server-ca.crt"),
            &pki.etcd.cert_pem,
            "0644",
        ),
        file(
            &format!("{tls}/etcd/server-ca.key"),
            &pki.etcd.key_pem,
            "0600",
        ),
        file(
            &format!("{tls}/etcd/peer-ca.crt"),
            &pki.etcd.cert_pem,
            "0644",
        ),
        file(
            &format!("{tls}/etcd/peer-ca.key"),
            &pki.etcd.key_pem,
            "0600",
        ),
        file(
            &format!("{tls}/service.key"),
            &pki.service_account.private_pem,
            "0600",
        ),
    ];
    render(json!({
        "write_files": files,
        "runcmd": [k3s_install("server", &k3s_version(&cluster.kubernetes_version))],
    }))
}

/// `k3s agent` on a worker.
pub fn k3s_agent(
    cluster: &ClusterNetwork,
    token: &BootstrapToken,
    node: &NodeSettings,
) -> Result<String> {
    let mut config = json!({
        "server": format!("https://{}", cluster.endpoint),
        "token": token.token(),
        "node-label": node.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
    });
    if let Some(id) = &node.provider_id {
        config["kubelet-arg"] = json!([format!("provider-id={id}")]);
    }
    let config_yaml = serde_saphyr::to_string(&config).map_err(|e| Error::Render {
        what: "k3s config",
        message: e.to_string(),
    })?;
    render(json!({
        "write_files": [file("/etc/rancher/k3s/config.yaml", &config_yaml, "0600")],
        "runcmd": [k3s_install("agent", &k3s_version(&cluster.kubernetes_version))],
    }))
}
