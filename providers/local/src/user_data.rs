//! Reading a machine's cloud-init the way the machine would: for the control plane, the PKI files it writes, the
//! network of its kubeadm ClusterConfiguration and the bootstrap tokens `kubeadm init` creates; for a worker, the
//! discovery settings of its kubeadm JoinConfiguration.

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use slipway_bootstrap::{CertificateAuthority, ClusterPki, ServiceAccountKey};
use slipway_provider::{ProviderError, Result};

/// What a control-plane machine boots with.
pub struct Boot {
    pub pki: ClusterPki,
    pub service_cidr: String,
    /// The InitConfiguration's `bootstrapTokens`, which the control plane creates once its API answers.
    pub init_tokens: Vec<InitToken>,
}

/// One of `kubeadm init`'s bootstrap tokens: `<id>.<secret>` and how long it lives from its creation.
#[derive(Clone, Serialize, Deserialize)]
pub struct InitToken {
    pub token: String,
    pub ttl_seconds: i64,
}

/// How a joining machine finds and trusts its cluster: kubeadm's token discovery.
pub struct Join {
    pub api_server_endpoint: String,
    pub token: String,
    pub ca_cert_hashes: Vec<String>,
    /// `kubeadm join --control-plane`: the JoinConfiguration has a `controlPlane` section.
    pub control_plane: bool,
}

fn invalid(message: impl Into<String>) -> ProviderError {
    ProviderError::permanent("InvalidUserData", message)
}

fn cloud_config(user_data: &str) -> Result<Value> {
    let body = user_data
        .strip_prefix("#cloud-config\n")
        .ok_or_else(|| invalid("user data is not #cloud-config"))?;
    serde_saphyr::from_str(body).map_err(|e| invalid(format!("user data is not YAML: {e}")))
}

fn written_file(config: &Value, path: &str) -> Result<String> {
    config["write_files"]
        .as_array()
        .and_then(|files| files.iter().find(|f| f["path"] == path))
        .and_then(|f| f["content"].as_str())
        .map(str::to_string)
        .ok_or_else(|| invalid(format!("user data writes no {path}")))
}

/// A joining machine's kubeadm-join user data (a worker's, or a later control-plane member's).
pub fn read_join(user_data: Option<&str>) -> Result<Join> {
    let user_data =
        user_data.ok_or_else(|| invalid("a joining local machine needs kubeadm-join user data"))?;
    let config = cloud_config(user_data)?;
    let join: Value =
        serde_saphyr::from_str(&written_file(&config, "/run/kubeadm/kubeadm-join.yaml")?)
            .map_err(|e| invalid(format!("kubeadm join config is not YAML: {e}")))?;
    let discovery = &join["discovery"]["bootstrapToken"];
    let text = |key: &str| {
        discovery[key].as_str().map(str::to_string).ok_or_else(|| {
            invalid(format!(
                "kubeadm join config has no discovery.bootstrapToken.{key}"
            ))
        })
    };
    Ok(Join {
        api_server_endpoint: text("apiServerEndpoint")?,
        token: text("token")?,
        ca_cert_hashes: discovery["caCertHashes"]
            .as_array()
            .map(|hashes| {
                hashes
                    .iter()
                    .filter_map(|h| h.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        control_plane: join.get("controlPlane").is_some_and(|c| !c.is_null()),
    })
}

/// Whether the user data is a kubeadm init (the first control-plane member) rather than a join.
pub fn is_init(user_data: Option<&str>) -> Result<bool> {
    let user_data = user_data.ok_or_else(|| {
        invalid("a local control-plane machine needs kubeadm init or join user data")
    })?;
    let config = cloud_config(user_data)?;
    Ok(written_file(&config, "/run/kubeadm/kubeadm.yaml").is_ok())
}

pub fn read(user_data: Option<&str>) -> Result<Boot> {
    let user_data = user_data
        .ok_or_else(|| invalid("a local control-plane machine needs kubeadm-init user data"))?;
    let config = cloud_config(user_data)?;
    let file = |path: &str| written_file(&config, path);
    let pki_dir = "/etc/kubernetes/pki";
    let pair = |name: &str| -> Result<CertificateAuthority> {
        Ok(CertificateAuthority {
            cert_pem: file(&format!("{pki_dir}/{name}.crt"))?,
            key_pem: file(&format!("{pki_dir}/{name}.key"))?,
        })
    };
    let kubeadm = file("/run/kubeadm/kubeadm.yaml")?;
    let documents: Vec<Value> = serde_saphyr::from_multiple(&kubeadm)
        .map_err(|e| invalid(format!("kubeadm config is not YAML: {e}")))?;
    let service_cidr = documents
        .iter()
        .find(|d| d["kind"] == "ClusterConfiguration")
        .and_then(|d| d["networking"]["serviceSubnet"].as_str())
        .ok_or_else(|| invalid("kubeadm ClusterConfiguration has no networking.serviceSubnet"))?
        .to_string();
    let init_tokens = documents
        .iter()
        .filter(|d| d["kind"] == "InitConfiguration")
        .flat_map(|d| d["bootstrapTokens"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            let token = t["token"]
                .as_str()
                .ok_or_else(|| invalid("a bootstrapTokens entry has no token"))?;
            let ttl: SignedDuration = t["ttl"]
                .as_str()
                .unwrap_or("24h")
                .parse()
                .map_err(|e| invalid(format!("bootstrapTokens ttl: {e}")))?;
            Ok(InitToken {
                token: token.to_string(),
                ttl_seconds: ttl.as_secs(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Boot {
        pki: ClusterPki {
            ca: pair("ca")?,
            etcd: pair("etcd/ca")?,
            front_proxy: pair("front-proxy-ca")?,
            service_account: ServiceAccountKey {
                public_pem: file(&format!("{pki_dir}/sa.pub"))?,
                private_pem: file(&format!("{pki_dir}/sa.key"))?,
            },
        },
        service_cidr,
        init_tokens,
    })
}
