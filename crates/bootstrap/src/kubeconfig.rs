//! The admin kubeconfig of a workload cluster: a client certificate in `system:masters`, signed by the cluster CA.

use base64::Engine as _;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::error::{Error, Result};
use crate::pki::{CertificateAuthority, Leaf, Usage};

/// How long the admin client certificate is valid.
pub const CLIENT_CERT_VALIDITY: SignedDuration = SignedDuration::from_hours(365 * 24);

/// A rendered kubeconfig and the validity of the certificate inside it.
pub struct AdminKubeconfig {
    pub yaml: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for AdminKubeconfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminKubeconfig")
            .field("yaml", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A kubeconfig for `server` (`https://host:port`) that authenticates as `kubernetes-admin` in `system:masters`.
pub fn admin_kubeconfig(
    cluster_name: &str,
    server: &str,
    ca: &CertificateAuthority,
    now: Timestamp,
) -> Result<AdminKubeconfig> {
    let issued_at = now - SignedDuration::from_mins(5);
    let expires_at = now + CLIENT_CERT_VALIDITY;
    let (cert, key) = ca.sign(Leaf {
        common_name: "kubernetes-admin",
        organization: Some("system:masters"),
        hosts: &[],
        usages: &[Usage::ClientAuth],
        not_before: issued_at,
        not_after: expires_at,
    })?;
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let user = format!("{cluster_name}-admin");
    let document = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": cluster_name, "cluster": { "server": server, "certificate-authority-data": b64(&ca.cert_pem) } }],
        "users": [{ "name": user, "user": { "client-certificate-data": b64(&cert), "client-key-data": b64(&key) } }],
        "contexts": [{ "name": format!("{user}@{cluster_name}"), "context": { "cluster": cluster_name, "user": user } }],
        "current-context": format!("{user}@{cluster_name}"),
    });
    let yaml = serde_saphyr::to_string(&document).map_err(|e| Error::Render {
        what: "kubeconfig",
        message: e.to_string(),
    })?;
    Ok(AdminKubeconfig {
        yaml,
        issued_at,
        expires_at,
    })
}

/// A client certificate is renewed once half its life has passed, so there is always time to fix a failed renewal.
pub fn needs_renewal(issued_at: Timestamp, expires_at: Timestamp, now: Timestamp) -> bool {
    let half_life = expires_at.duration_since(issued_at) / 2;
    now >= issued_at + half_life
}
