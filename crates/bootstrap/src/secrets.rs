//! The Secrets a cluster's bootstrap material lives in, named and shaped as Cluster API does.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::error::{Error, Result};
use crate::kubeconfig::AdminKubeconfig;
use crate::pki::{CertificateAuthority, ClusterPki, ServiceAccountKey};
use crate::token::{BootstrapToken, K3sServerToken};

/// The type Cluster API gives its cluster Secrets.
pub const SECRET_TYPE: &str = "cluster.x-k8s.io/secret";
/// The label Cluster API puts on a cluster's Secrets.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// When the kubeconfig's client certificate was issued and expires (RFC 3339), so renewal needs no parsing.
pub const ISSUED_AT_ANNOTATION: &str = "slipway.dev/client-certificate-issued-at";
pub const EXPIRES_AT_ANNOTATION: &str = "slipway.dev/client-certificate-expires-at";
/// The SHA-256 (hex) of the kubeconfig Slipway wrote, so a value changed by someone else is noticed. Not a
/// defence by itself (whoever can write the Secret can write the annotation too): the manager also accepts only
/// certificate data in a kubeconfig, for the endpoint it knows.
pub const KUBECONFIG_DIGEST_ANNOTATION: &str = "slipway.dev/kubeconfig-sha256";

/// Which Secret of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Ca,
    Etcd,
    FrontProxy,
    ServiceAccount,
    Kubeconfig,
    /// The token joining machines get (a copy of the one in the workload cluster's `kube-system`).
    JoinToken,
    /// The k3s server token of a k3s cluster (named as Cluster API's k3s providers name it).
    K3sServerToken,
}

impl Purpose {
    pub const PKI: [Purpose; 4] = [
        Purpose::Ca,
        Purpose::Etcd,
        Purpose::FrontProxy,
        Purpose::ServiceAccount,
    ];

    fn suffix(self) -> &'static str {
        match self {
            Self::Ca => "ca",
            Self::Etcd => "etcd",
            Self::FrontProxy => "proxy",
            Self::ServiceAccount => "sa",
            Self::Kubeconfig => "kubeconfig",
            Self::JoinToken => "bootstrap-token",
            Self::K3sServerToken => "token",
        }
    }

    /// `<cluster>-ca`, `<cluster>-etcd`, `<cluster>-proxy`, `<cluster>-sa`, `<cluster>-kubeconfig`,
    /// `<cluster>-bootstrap-token`, `<cluster>-token`.
    pub fn secret_name(self, cluster: &str) -> String {
        format!("{cluster}-{}", self.suffix())
    }
}

fn secret(
    cluster: &str,
    purpose: Purpose,
    data: BTreeMap<String, ByteString>,
    owner: Option<OwnerReference>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(purpose.secret_name(cluster)),
            labels: Some(BTreeMap::from([(
                CLUSTER_NAME_LABEL.to_string(),
                cluster.to_string(),
            )])),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.into()),
        data: Some(data),
        ..Default::default()
    }
}

fn pair(cert: &str, key: &str) -> BTreeMap<String, ByteString> {
    BTreeMap::from([
        ("tls.crt".to_string(), ByteString(cert.as_bytes().to_vec())),
        ("tls.key".to_string(), ByteString(key.as_bytes().to_vec())),
    ])
}

/// The four PKI Secrets of a cluster.
pub fn pki_secrets(cluster: &str, pki: &ClusterPki, owner: Option<OwnerReference>) -> Vec<Secret> {
    let sa = &pki.service_account;
    vec![
        secret(
            cluster,
            Purpose::Ca,
            pair(&pki.ca.cert_pem, &pki.ca.key_pem),
            owner.clone(),
        ),
        secret(
            cluster,
            Purpose::Etcd,
            pair(&pki.etcd.cert_pem, &pki.etcd.key_pem),
            owner.clone(),
        ),
        secret(
            cluster,
            Purpose::FrontProxy,
            pair(&pki.front_proxy.cert_pem, &pki.front_proxy.key_pem),
            owner.clone(),
        ),
        // Cluster API keeps the service-account key pair in tls.crt (public) and tls.key (private) too.
        secret(
            cluster,
            Purpose::ServiceAccount,
            pair(&sa.public_pem, &sa.private_pem),
            owner,
        ),
    ]
}

fn field(secret: &Secret, key: &str) -> Result<String> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| Error::InvalidSecret {
            secret: name.clone(),
            what: format!("has no key {key:?}"),
        })?;
    String::from_utf8(bytes.0.clone()).map_err(|_| Error::InvalidSecret {
        secret: name,
        what: format!("key {key:?} is not PEM text"),
    })
}

/// The key pair in a CA Secret, whether Slipway or the user made it.
pub fn ca_from_secret(secret: &Secret) -> Result<CertificateAuthority> {
    Ok(CertificateAuthority {
        cert_pem: field(secret, "tls.crt")?,
        key_pem: field(secret, "tls.key")?,
    })
}

/// The cluster's PKI from its four Secrets, in the order of [`Purpose::PKI`].
pub fn pki_from_secrets(secrets: &[Secret; 4]) -> Result<ClusterPki> {
    Ok(ClusterPki {
        ca: ca_from_secret(&secrets[0])?,
        etcd: ca_from_secret(&secrets[1])?,
        front_proxy: ca_from_secret(&secrets[2])?,
        service_account: ServiceAccountKey {
            public_pem: field(&secrets[3], "tls.crt")?,
            private_pem: field(&secrets[3], "tls.key")?,
        },
    })
}

/// `<cluster>-kubeconfig` with the kubeconfig under `value`, as Cluster API stores it.
pub fn kubeconfig_secret(
    cluster: &str,
    kubeconfig: &AdminKubeconfig,
    owner: Option<OwnerReference>,
) -> Secret {
    let data = BTreeMap::from([(
        "value".to_string(),
        ByteString(kubeconfig.yaml.as_bytes().to_vec()),
    )]);
    let mut secret = secret(cluster, Purpose::Kubeconfig, data, owner);
    secret.metadata.annotations = Some(BTreeMap::from([
        (
            ISSUED_AT_ANNOTATION.to_string(),
            kubeconfig.issued_at.to_string(),
        ),
        (
            EXPIRES_AT_ANNOTATION.to_string(),
            kubeconfig.expires_at.to_string(),
        ),
        (
            KUBECONFIG_DIGEST_ANNOTATION.to_string(),
            kubeconfig_digest(kubeconfig.yaml.as_bytes()),
        ),
    ]));
    secret
}

/// `<cluster>-bootstrap-token`: the join token of the cluster's machines, kept in the management cluster so every
/// machine created while it is valid gets the same one.
pub fn join_token_secret(
    cluster: &str,
    token: &BootstrapToken,
    owner: Option<OwnerReference>,
) -> Secret {
    secret(cluster, Purpose::JoinToken, token.data(), owner)
}

/// The join token in a `<cluster>-bootstrap-token` Secret.
pub fn join_token_from_secret(secret: &Secret) -> Result<BootstrapToken> {
    secret
        .data
        .as_ref()
        .and_then(BootstrapToken::from_data)
        .ok_or_else(|| Error::InvalidSecret {
            secret: secret.metadata.name.clone().unwrap_or_default(),
            what: "no well-formed token-id, token-secret and expiration".into(),
        })
}

/// `<cluster>-token`: the k3s server token under `value`, as Cluster API's k3s providers keep it.
pub fn k3s_server_token_secret(
    cluster: &str,
    token: &K3sServerToken,
    owner: Option<OwnerReference>,
) -> Secret {
    let data = BTreeMap::from([(
        "value".to_string(),
        ByteString(token.password().as_bytes().to_vec()),
    )]);
    secret(cluster, Purpose::K3sServerToken, data, owner)
}

/// The k3s server token in a `<cluster>-token` Secret. An error (naming the Secret, never showing its value) when
/// `value` is missing or not a password of the shape Slipway generates.
pub fn k3s_server_token_from_secret(secret: &Secret) -> Result<K3sServerToken> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    secret
        .data
        .as_ref()
        .and_then(|d| d.get("value"))
        .and_then(|v| std::str::from_utf8(&v.0).ok())
        .and_then(K3sServerToken::from_password)
        .ok_or_else(|| Error::InvalidSecret {
            secret: name,
            what: "key \"value\" is not a k3s server token (at least 16 characters of [a-z0-9])"
                .into(),
        })
}

/// The digest [`KUBECONFIG_DIGEST_ANNOTATION`] records for a kubeconfig's bytes.
pub fn kubeconfig_digest(value: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(value))
}

/// The validity recorded on a kubeconfig Secret, if it carries Slipway's annotations.
pub fn kubeconfig_validity(
    annotations: Option<&BTreeMap<String, String>>,
) -> Option<(Timestamp, Timestamp)> {
    let annotations = annotations?;
    let issued = annotations.get(ISSUED_AT_ANNOTATION)?.parse().ok()?;
    let expires = annotations.get(EXPIRES_AT_ANNOTATION)?.parse().ok()?;
    Some((issued, expires))
}
