//! Reading a control-plane machine's cloud-init the way the machine would: the PKI files it writes and the
//! network of its kubeadm ClusterConfiguration.

use serde_json::Value;
use slipway_bootstrap::{CertificateAuthority, ClusterPki, ServiceAccountKey};
use slipway_provider::{ProviderError, Result};

/// What a control-plane machine boots with.
pub struct Boot {
    pub pki: ClusterPki,
    pub service_cidr: String,
}

fn invalid(message: impl Into<String>) -> ProviderError {
    ProviderError::permanent("InvalidUserData", message)
}

pub fn read(user_data: Option<&str>) -> Result<Boot> {
    let user_data = user_data
        .ok_or_else(|| invalid("a local control-plane machine needs kubeadm-init user data"))?;
    let body = user_data
        .strip_prefix("#cloud-config\n")
        .ok_or_else(|| invalid("user data is not #cloud-config"))?;
    let config: Value =
        serde_saphyr::from_str(body).map_err(|e| invalid(format!("user data is not YAML: {e}")))?;
    let file = |path: &str| -> Result<String> {
        config["write_files"]
            .as_array()
            .and_then(|files| files.iter().find(|f| f["path"] == path))
            .and_then(|f| f["content"].as_str())
            .map(str::to_string)
            .ok_or_else(|| invalid(format!("user data writes no {path}")))
    };
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
    })
}
