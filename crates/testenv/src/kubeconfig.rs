//! The admin kubeconfig of a test control plane, and clients made from it.

use std::path::Path;

use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use crate::error::{Error, Result};
use crate::pki::Pki;

/// A kubeconfig for `server` that authenticates with the admin client certificate, certificates embedded.
pub fn admin_kubeconfig(server: &str, pki: &Pki) -> Result<String> {
    let document = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "slipway-testenv",
            "cluster": {
                "server": server,
                "certificate-authority-data": b64(&pki.ca.cert_pem),
            }
        }],
        "users": [{
            "name": "admin",
            "user": {
                "client-certificate-data": b64(&pki.admin.cert_pem),
                "client-key-data": b64(&pki.admin.key_pem),
            }
        }],
        "contexts": [{
            "name": "slipway-testenv",
            "context": { "cluster": "slipway-testenv", "user": "admin" }
        }],
        "current-context": "slipway-testenv",
    });
    serde_saphyr::to_string(&document).map_err(|e| Error::Kubeconfig(e.to_string()))
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A client for the kubeconfig at `path`, optionally impersonating `user` in `groups`.
pub async fn client_from_file(
    path: &Path,
    impersonate: Option<(&str, &[&str])>,
) -> Result<kube::Client> {
    crate::install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    if let Some((user, groups)) = impersonate {
        config.auth_info.impersonate = Some(user.to_string());
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    }
    Ok(kube::Client::try_from(config)?)
}
