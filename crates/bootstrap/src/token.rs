//! Bootstrap tokens: short-lived credentials a new node uses to join (kubeadm and k3s both accept them).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand::Rng;

/// How long a token is valid. Short, because it lets anyone who has it join the cluster.
pub const TOKEN_TTL: SignedDuration = SignedDuration::from_mins(15);

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A token `<id>.<secret>`: 6 and 16 characters of `[a-z0-9]`, as Kubernetes defines bootstrap tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

fn random(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl BootstrapToken {
    pub fn generate(now: Timestamp) -> Self {
        Self {
            id: random(6),
            secret: random(16),
            expires_at: now + TOKEN_TTL,
        }
    }

    /// The token as nodes present it.
    pub fn token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// A token is replaced once two thirds of its life are gone, so a node that is still joining never holds one
    /// that expires under it.
    pub fn needs_refresh(&self, now: Timestamp) -> bool {
        now + TOKEN_TTL / 3 >= self.expires_at
    }

    /// The `kube-system/bootstrap-token-<id>` Secret that makes the workload cluster accept the token.
    pub fn secret(&self) -> Secret {
        let data: BTreeMap<String, ByteString> = [
            ("token-id", self.id.clone()),
            ("token-secret", self.secret.clone()),
            ("expiration", self.expires_at.to_string()),
            ("usage-bootstrap-authentication", "true".into()),
            ("usage-bootstrap-signing", "true".into()),
            (
                "auth-extra-groups",
                "system:bootstrappers:kubeadm:default-node-token".into(),
            ),
            (
                "description",
                "created by Slipway for a joining node".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
        .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(format!("bootstrap-token-{}", self.id)),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            type_: Some("bootstrap.kubernetes.io/token".into()),
            data: Some(data),
            ..Default::default()
        }
    }
}
