//! Join credentials. Bootstrap tokens are short-lived credentials a new node uses to join (kubeadm and k3s
//! agents both accept them); the k3s server token is the one long-lived secret every k3s server of a cluster
//! starts with.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand::Rng;
use sha2::{Digest, Sha256};

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
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

fn random(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Expirations are written in RFC 3339 without fractions, as kubeadm writes them.
fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

impl BootstrapToken {
    pub fn generate(now: Timestamp) -> Self {
        Self {
            id: random(6),
            secret: random(16),
            expires_at: whole_seconds(now) + TOKEN_TTL,
        }
    }

    /// The token as nodes present it.
    pub fn token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The token in k3s's secure form, `K10<CA hash>::<id>.<secret>`, so a k3s agent checks that the server it
    /// reached serves the cluster's CA before it sends the token, as kubeadm's `caCertHashes` does.
    pub fn k3s_pinned_to(&self, ca_cert_pem: &str) -> String {
        format!("K10{}::{}", k3s_ca_hash(ca_cert_pem), self.token())
    }

    /// A token is replaced once two thirds of its life are gone, so a node that is still joining never holds one
    /// that expires under it.
    pub fn needs_refresh(&self, now: Timestamp) -> bool {
        now + TOKEN_TTL / 3 >= self.expires_at
    }

    /// What to do with the token a cluster hands to joining machines: a missing or expired token is replaced, one
    /// in the last third of its life is extended (a machine that already boots with it must still be let in), and
    /// any other is kept as it is.
    pub fn renewal(current: Option<&Self>, now: Timestamp) -> Renewal {
        match current {
            None => Renewal::Replace,
            Some(token) if token.expires_at <= now => Renewal::Replace,
            Some(token) if token.needs_refresh(now) => Renewal::Extend,
            Some(_) => Renewal::Keep,
        }
    }

    /// The same token, valid for a full [`TOKEN_TTL`] from `now`.
    pub fn extended(&self, now: Timestamp) -> Self {
        Self {
            expires_at: whole_seconds(now) + TOKEN_TTL,
            ..self.clone()
        }
    }

    /// The token in a Secret's data, as [`BootstrapToken::data`] writes it; `None` when a key is missing or
    /// malformed.
    pub fn from_data(data: &BTreeMap<String, ByteString>) -> Option<Self> {
        let text = |key: &str| {
            data.get(key)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
        };
        let token = Self {
            id: text("token-id")?,
            secret: text("token-secret")?,
            expires_at: text("expiration")?.parse().ok()?,
        };
        let well_formed =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b));
        (well_formed(&token.id, 6) && well_formed(&token.secret, 16)).then_some(token)
    }

    /// The Secret data of a bootstrap token: id, secret, expiration and what the token may be used for.
    pub fn data(&self) -> BTreeMap<String, ByteString> {
        [
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
        .collect()
    }

    /// The `kube-system/bootstrap-token-<id>` Secret that makes the workload cluster accept the token.
    pub fn secret(&self) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(format!("bootstrap-token-{}", self.id)),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            type_: Some("bootstrap.kubernetes.io/token".into()),
            data: Some(self.data()),
            ..Default::default()
        }
    }
}

/// See [`BootstrapToken::renewal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Keep,
    Extend,
    Replace,
}

/// How many characters a generated k3s server token has: 32 of `[a-z0-9]`, about 165 bits.
const SERVER_TOKEN_LEN: usize = 32;

/// The k3s server token: the password every k3s server of a cluster starts with, and the key k3s encrypts its
/// bootstrap data (the cluster CAs' private keys among them) with in the datastore. It must stay the same for the
/// cluster's whole life, so unlike a [`BootstrapToken`] it never expires, and it is never handed to an agent: it
/// lets whoever holds it fetch the CA keys from any server.
///
/// It is a plain password, never `<id>.<secret>`: k3s refuses a server token in the bootstrap-token format ("failed
/// to normalize server token"), and a bootstrap token cannot join a server.
#[derive(Clone, PartialEq, Eq)]
pub struct K3sServerToken {
    password: String,
}

impl std::fmt::Debug for K3sServerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("K3sServerToken(<redacted>)")
    }
}

impl K3sServerToken {
    pub fn generate() -> Self {
        Self {
            password: random(SERVER_TOKEN_LEN),
        }
    }

    /// A token read back from where it is kept; `None` unless it is a password of the shape [`Self::generate`]
    /// makes (at least 16 characters of `[a-z0-9]`, so never the bootstrap-token form k3s refuses).
    pub fn from_password(password: &str) -> Option<Self> {
        (password.len() >= 16 && password.bytes().all(|b| ALPHABET.contains(&b))).then(|| Self {
            password: password.to_string(),
        })
    }

    /// The password, as the first server is started with it (k3s's short token form).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The token a joining k3s node presents in k3s's secure form, `K10<CA hash>::server:<password>`: before it
    /// sends the password it checks that the server it reached serves the cluster's CA (see [`k3s_ca_hash`]).
    pub fn pinned_to(&self, ca_cert_pem: &str) -> String {
        format!("K10{}::server:{}", k3s_ca_hash(ca_cert_pem), self.password)
    }
}

/// The CA hash of a k3s secure token for a cluster CA served as `ca_cert_pem`: the hex SHA-256 of the bytes k3s
/// serves at `/cacerts`, which are those of its `server-ca.crt` file. (k3s hashes the file's bytes when it holds one
/// certificate, as here; only a bundle of several is hashed by its root's DER.)
pub fn k3s_ca_hash(ca_cert_pem: &str) -> String {
    hex::encode(Sha256::digest(ca_cert_pem.as_bytes()))
}
