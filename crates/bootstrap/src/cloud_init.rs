//! Cloud-init user data that makes a machine a kubeadm or k3s node. One renderer per role:
//!
//! | role                              | kubeadm                        | k3s                 |
//! |-----------------------------------|--------------------------------|---------------------|
//! | the first control-plane member    | [`kubeadm_init`]               | [`k3s_server`]      |
//! | every later control-plane member  | [`kubeadm_join_control_plane`] | [`k3s_server_join`] |
//! | a worker                          | [`kubeadm_join`]               | [`k3s_agent`]       |
//!
//! Every kubeadm control-plane member gets the cluster's CAs and service-account key as files under
//! `/etc/kubernetes/pki`, as Cluster API's kubeadm bootstrap hands them over: the first so `kubeadm init` serves
//! with certificates from the authorities Slipway keeps in Secrets, later ones so `kubeadm join --control-plane`
//! signs their own leaf certificates with the same authorities. The first k3s server gets the CA files too; a later
//! k3s server gets none, because k3s keeps the CAs in its datastore (encrypted with the server token) and hands them
//! to a server that presents that token. Workers get no private key and no server token: a bootstrap token and the
//! cluster CA's hash, which lets them check the API server they join before they send the token.
//!
//! Which renderer a machine gets (and so which one initialises the cluster) is the controller's decision, not
//! this module's.

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::node_packages::{self, PackageRepository};
use crate::pki::ClusterPki;
use crate::token::{BootstrapToken, K3sServerToken, TOKEN_TTL};

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
    /// The provider's id for the machine, which the kubelet registers as the Node's `spec.providerID` (how the
    /// manager finds a machine's Node); `None` leaves it to whatever else sets it.
    pub provider_id: Option<ProviderId>,
    /// Where a kubeadm machine installs kubelet, kubeadm and kubectl from when its image lacks them (see
    /// [`crate::node_packages`]).
    pub packages: PackageRepository,
}

/// How a machine's kubelet learns the provider's id for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderId {
    /// Known when the user data is rendered.
    Known(String),
    /// Known only on the machine: cloud-init renders this Jinja template from the machine's instance data
    /// (`cloud-init query --format`) before the node software starts, e.g.
    /// `aws:///{{ v1.availability_zone }}/{{ v1.instance_id }}`. A machine whose instance data gives nothing
    /// starts without a provider ID.
    FromInstanceData(String),
}

/// kubeadm's kubelet unit reads `KUBELET_EXTRA_ARGS` from this file (its drop-in's `EnvironmentFile`).
const KUBELET_DEFAULTS: &str = "/etc/default/kubelet";
/// k3s reads every file in `/etc/rancher/k3s/config.yaml.d/` after its `config.yaml`.
const K3S_PROVIDER_ID_CONFIG: &str = "/etc/rancher/k3s/config.yaml.d/50-provider-id.yaml";

/// The runcmd step, first of all, that writes the provider ID from the instance data where the kubelet will read
/// it; `None` when it is known already (it is then in the kubelet's arguments) or not given.
fn provider_id_step(node: &NodeSettings, distribution: Distribution) -> Option<Value> {
    let Some(ProviderId::FromInstanceData(template)) = &node.provider_id else {
        return None;
    };
    // The template is the script's first argument, never part of the script's text.
    let write = match distribution {
        Distribution::Kubeadm => {
            format!("printf 'KUBELET_EXTRA_ARGS=--provider-id=%s\\n' \"$id\" > {KUBELET_DEFAULTS}")
        }
        Distribution::K3s => format!(
            "mkdir -p /etc/rancher/k3s/config.yaml.d && printf 'kubelet-arg:\\n  - provider-id=%s\\n' \"$id\" > \
             {K3S_PROVIDER_ID_CONFIG}"
        ),
    };
    Some(json!([
        "sh",
        "-c",
        format!("id=\"$(cloud-init query --format \"$1\")\" && [ -n \"$id\" ] && {write}"),
        "provider-id",
        template
    ]))
}

/// Which node software a step is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Distribution {
    Kubeadm,
    K3s,
}

/// `runcmd`: for kubeadm the node software's install step, then the provider-ID step when there is one, then
/// `command`. The install comes first so the packages find no file of the provider-ID step in their way.
fn runcmd(
    node: &NodeSettings,
    cluster: &ClusterNetwork,
    distribution: Distribution,
    command: Value,
) -> Value {
    let install = (distribution == Distribution::Kubeadm)
        .then(|| node_packages::install_step(&node.packages, &cluster.kubernetes_version));
    Value::Array(
        install
            .into_iter()
            .chain(provider_id_step(node, distribution))
            .chain([command])
            .collect(),
    )
}

fn file(path: &str, content: &str, permissions: &str) -> Value {
    json!({ "path": path, "content": content, "permissions": permissions, "owner": "root:root" })
}

fn yaml(what: &'static str, document: &Value) -> Result<String> {
    serde_saphyr::to_string(document).map_err(|e| Error::Render {
        what,
        message: e.to_string(),
    })
}

fn render(document: Value) -> Result<String> {
    Ok(format!("#cloud-config\n{}", yaml("cloud-init", &document)?))
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
    if let Some(ProviderId::Known(id)) = &node.provider_id {
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

/// Where `kubeadm init`'s configuration is written.
const KUBEADM_INIT_CONFIG: &str = "/run/kubeadm/kubeadm.yaml";
/// Where `kubeadm join`'s configuration is written, a worker's or a control-plane member's.
const KUBEADM_JOIN_CONFIG: &str = "/run/kubeadm/kubeadm-join.yaml";

/// `kubeadm init` on the first control-plane machine: the cluster's CAs and service-account key, and an
/// InitConfiguration that creates `token` as the cluster's first bootstrap token.
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
    // `controlPlaneEndpoint` is what makes later `kubeadm join --control-plane` possible at all: kubeadm refuses
    // to add a member to a cluster initialised without a stable endpoint.
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
        .map(|doc| yaml("kubeadm config", doc))
        .collect::<Result<Vec<_>>>()?
        .join("---\n");
    let mut files = pki_files(pki, "/etc/kubernetes/pki");
    files.push(file(KUBEADM_INIT_CONFIG, &kubeadm_yaml, "0600"));
    // No `--upload-certs`: a later member gets the CA files in its own user data (above, and in
    // `kubeadm_join_control_plane`), so nothing needs kubeadm's `kubeadm-certs` Secret, which would put every CA key
    // into the workload cluster's kube-system (encrypted with a key printed to this machine's cloud-init log).
    render(json!({
        "write_files": files,
        "runcmd": runcmd(node, cluster, Distribution::Kubeadm, json!(["kubeadm", "init", "--config", KUBEADM_INIT_CONFIG])),
    }))
}

/// A JoinConfiguration that finds the cluster at its endpoint with `token` and trusts it only if its CA's public
/// key hashes to `ca_key_hash`; a control-plane member's also has `controlPlane`.
fn join_configuration(
    cluster: &ClusterNetwork,
    ca_key_hash: &str,
    token: &BootstrapToken,
    node: &NodeSettings,
    control_plane: bool,
) -> Value {
    let mut join = json!({
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "JoinConfiguration",
        "discovery": { "bootstrapToken": { "apiServerEndpoint": cluster.endpoint, "token": token.token(), "caCertHashes": [ca_key_hash] } },
        "nodeRegistration": { "kubeletExtraArgs": kubelet_args(node) },
    });
    if control_plane {
        // Empty: kubeadm advertises the machine's default address and binds its default port, 6443, as
        // `kubeadm init` did on the first member, so the endpoint reaches every member on the same port. No
        // `certificateKey`: the CA files are already on the machine, nothing is downloaded.
        join["controlPlane"] = json!({});
    }
    join
}

/// `kubeadm join` on a worker, verifying the API server by the CA's public-key hash. It carries no key material.
pub fn kubeadm_join(
    cluster: &ClusterNetwork,
    ca_key_hash: &str,
    token: &BootstrapToken,
    node: &NodeSettings,
) -> Result<String> {
    let join = join_configuration(cluster, ca_key_hash, token, node, false);
    render(json!({
        "write_files": [file(KUBEADM_JOIN_CONFIG, &yaml("kubeadm config", &join)?, "0600")],
        "runcmd": runcmd(node, cluster, Distribution::Kubeadm, json!(["kubeadm", "join", "--config", KUBEADM_JOIN_CONFIG])),
    }))
}

/// `kubeadm join --control-plane` on every control-plane machine after the first: the same CA and
/// service-account files `kubeadm_init` writes, from which kubeadm makes this member's own apiserver, etcd and
/// front-proxy certificates, and a JoinConfiguration with `controlPlane` that discovers the cluster with `token`
/// and the CA's public-key hash, as a worker does. kubeadm then adds the member's etcd to the cluster's etcd.
pub fn kubeadm_join_control_plane(
    cluster: &ClusterNetwork,
    pki: &ClusterPki,
    token: &BootstrapToken,
    node: &NodeSettings,
) -> Result<String> {
    let join = join_configuration(cluster, &pki.ca.public_key_hash()?, token, node, true);
    let mut files = pki_files(pki, "/etc/kubernetes/pki");
    files.push(file(
        KUBEADM_JOIN_CONFIG,
        &yaml("kubeadm config", &join)?,
        "0600",
    ));
    // `controlPlane` in the configuration is what `--control-plane` on the command line would say.
    render(json!({
        "write_files": files,
        "runcmd": runcmd(node, cluster, Distribution::Kubeadm, json!(["kubeadm", "join", "--config", KUBEADM_JOIN_CONFIG])),
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

const K3S_CONFIG: &str = "/etc/rancher/k3s/config.yaml";
const K3S_TLS: &str = "/var/lib/rancher/k3s/server/tls";
/// k3s applies every manifest in this directory once its API answers.
const K3S_MANIFESTS: &str = "/var/lib/rancher/k3s/server/manifests";

fn labels_and_provider_id(config: &mut Value, node: &NodeSettings) {
    config["node-label"] = json!(
        node.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
    );
    if let Some(ProviderId::Known(id)) = &node.provider_id {
        config["kubelet-arg"] = json!([format!("provider-id={id}")]);
    }
}

/// What every k3s server of a cluster is started with. k3s refuses a server whose networks differ from the
/// cluster's ("critical configuration value mismatch"), and each server serves the API behind the endpoint, so
/// each needs the endpoint's host among its certificate's names.
fn k3s_server_config(cluster: &ClusterNetwork, token: String, node: &NodeSettings) -> Value {
    let host = cluster
        .endpoint
        .rsplit_once(':')
        .map_or(cluster.endpoint.as_str(), |(h, _)| h);
    let mut config = json!({
        "token": token,
        "tls-san": [host],
        "cluster-cidr": cluster.pod_cidr,
        "service-cidr": cluster.service_cidr,
        "cluster-domain": cluster.dns_domain,
    });
    labels_and_provider_id(&mut config, node);
    config
}

/// `k3s server --cluster-init` on the first control-plane machine: embedded etcd, so that later servers can join
/// it, with the cluster's own CAs (k3s uses CA files placed in its TLS directory before its first start, and keeps
/// them in its datastore for the servers that join). It starts with `server_token`, which later servers must
/// present. `join_token` is created as the cluster's first bootstrap token from a manifest k3s applies, as kubeadm's
/// `bootstrapTokens` does, so workers can join with it as soon as the API answers.
pub fn k3s_server(
    cluster: &ClusterNetwork,
    pki: &ClusterPki,
    server_token: &K3sServerToken,
    join_token: &BootstrapToken,
    node: &NodeSettings,
) -> Result<String> {
    // The short form: the first server cannot check a CA hash against itself.
    let mut config = k3s_server_config(cluster, server_token.password().to_string(), node);
    config["cluster-init"] = json!(true);
    let mut join_token_secret =
        serde_json::to_value(join_token.secret()).map_err(|e| Error::Render {
            what: "k3s join token manifest",
            message: e.to_string(),
        })?;
    join_token_secret["apiVersion"] = "v1".into();
    join_token_secret["kind"] = "Secret".into();
    let tls = K3S_TLS;
    let files = vec![
        file(K3S_CONFIG, &yaml("k3s config", &config)?, "0600"),
        file(
            &format!("{K3S_MANIFESTS}/slipway-join-token.yaml"),
            &yaml("k3s join token manifest", &join_token_secret)?,
            "0600",
        ),
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
        "runcmd": runcmd(node, cluster, Distribution::K3s, k3s_install("server", &k3s_version(&cluster.kubernetes_version))),
    }))
}

/// `k3s server --server https://<endpoint>` on every control-plane machine after the first: it joins the
/// cluster's embedded etcd. No CA files: k3s keeps the cluster's CAs and service-account key in its datastore,
/// encrypted with the server token, and a joining server fetches them from a running one with that token (a CA
/// file of its own would only have to match them). The token is given in k3s's secure form, pinned to the cluster
/// CA (`ca_cert_pem`, the certificate the first server got as `server-ca.crt`), so the server token is sent only
/// to a server that serves that CA. It must be the first server's server token: a bootstrap token cannot join a
/// server, and another token cannot decrypt the datastore.
pub fn k3s_server_join(
    cluster: &ClusterNetwork,
    ca_cert_pem: &str,
    server_token: &K3sServerToken,
    node: &NodeSettings,
) -> Result<String> {
    let mut config = k3s_server_config(cluster, server_token.pinned_to(ca_cert_pem), node);
    config["server"] = json!(format!("https://{}", cluster.endpoint));
    render(json!({
        "write_files": [file(K3S_CONFIG, &yaml("k3s config", &config)?, "0600")],
        "runcmd": runcmd(node, cluster, Distribution::K3s, k3s_install("server", &k3s_version(&cluster.kubernetes_version))),
    }))
}

/// `k3s agent` on a worker: a bootstrap token pinned to the cluster CA (`ca_cert_pem`), never the server token.
pub fn k3s_agent(
    cluster: &ClusterNetwork,
    ca_cert_pem: &str,
    token: &BootstrapToken,
    node: &NodeSettings,
) -> Result<String> {
    let mut config = json!({
        "server": format!("https://{}", cluster.endpoint),
        "token": token.k3s_pinned_to(ca_cert_pem),
    });
    labels_and_provider_id(&mut config, node);
    render(json!({
        "write_files": [file(K3S_CONFIG, &yaml("k3s config", &config)?, "0600")],
        "runcmd": runcmd(node, cluster, Distribution::K3s, k3s_install("agent", &k3s_version(&cluster.kubernetes_version))),
    }))
}
