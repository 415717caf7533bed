//! Where a cluster's AWS credentials come from.
//!
//! The provider does not read Secrets itself (it never sees a `kube::Client`): the manager implements
//! [`CredentialSource`] by reading the Secret named in `spec.infrastructure.aws.credentialsSecretRef`. Returning
//! `None` means "use aws-config's default chain" (environment, profile, web identity, instance metadata).
//! Secret values never appear in `Debug` output, logs or errors.

use std::fmt;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use slipway_provider::{ClusterInfo, ProviderError, Result};

/// Static credentials of one account, e.g. from a Secret with the keys `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl AwsCredentials {
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token,
        }
    }

    /// The access key id: not a secret (it shows in CloudTrail and IAM), used to key clients and rate limits.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// A digest of the whole credential set, so a rotated secret gets a fresh client without the value itself
    /// ever being kept as a map key or printed.
    pub(crate) fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(&self.access_key_id);
        hash.update([0]);
        hash.update(&self.secret_access_key);
        hash.update([0]);
        hash.update(self.session_token.as_deref().unwrap_or_default());
        hex::encode(&hash.finalize()[..8])
    }

    pub(crate) fn to_sdk(&self) -> aws_sdk_ec2::config::Credentials {
        aws_sdk_ec2::config::Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            self.session_token.clone(),
            None,
            "slipway",
        )
    }
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Gives the provider the credentials for one cluster.
#[async_trait]
pub trait CredentialSource: Send + Sync + 'static {
    /// The cluster's credentials, or `None` for aws-config's default chain. An error (a missing Secret or key)
    /// should be `Permanent` with a reason such as `CredentialsNotFound` and name the Secret, never its values.
    async fn credentials(&self, cluster: &ClusterInfo) -> Result<Option<AwsCredentials>>;
}

/// The same credentials for every cluster: for tests and single-account setups.
#[derive(Debug, Clone)]
pub struct StaticCredentials(pub AwsCredentials);

#[async_trait]
impl CredentialSource for StaticCredentials {
    async fn credentials(&self, _cluster: &ClusterInfo) -> Result<Option<AwsCredentials>> {
        Ok(Some(self.0.clone()))
    }
}

/// aws-config's default chain for every cluster: the manager's own identity (IRSA, instance profile, env).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultChain;

#[async_trait]
impl CredentialSource for DefaultChain {
    async fn credentials(&self, _cluster: &ClusterInfo) -> Result<Option<AwsCredentials>> {
        Ok(None)
    }
}

/// Each cluster's credentials from the Secret its `spec.infrastructure.aws.credentialsSecretRef` names, in the
/// Cluster's namespace (keys `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`). The
/// manager hands the provider this source, with the management cluster's client, on purpose: it is the one thing
/// the provider reads from Kubernetes.
#[derive(Clone)]
pub struct SecretCredentials {
    client: kube::Client,
}

impl SecretCredentials {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl CredentialSource for SecretCredentials {
    async fn credentials(&self, cluster: &ClusterInfo) -> Result<Option<AwsCredentials>> {
        let Some(settings) = cluster.infrastructure.aws.as_ref() else {
            return Ok(None);
        };
        let name = &settings.credentials_secret_ref.name;
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(self.client.clone(), &cluster.namespace);
        let secret = match secrets.get_opt(name).await {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                return Err(ProviderError::permanent(
                    "CredentialsNotFound",
                    format!(
                        "Secret {}/{name} (spec.infrastructure.aws.credentialsSecretRef) does not exist: create it \
                         with the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                        cluster.namespace
                    ),
                ));
            }
            Err(e) => {
                return Err(ProviderError::transient(
                    "CredentialsUnreadable",
                    format!("reading Secret {}/{name}: {e}", cluster.namespace),
                ));
            }
        };
        let data = secret.data.unwrap_or_default();
        let key = |k: &str| {
            data.get(k)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
        };
        let missing = |k: &str| {
            ProviderError::permanent(
                "CredentialsIncomplete",
                format!("Secret {}/{name} has no key {k}", cluster.namespace),
            )
        };
        let access_key_id = key("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?;
        let secret_access_key =
            key("AWS_SECRET_ACCESS_KEY").ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?;
        Ok(Some(AwsCredentials::new(
            access_key_id,
            secret_access_key,
            key("AWS_SESSION_TOKEN"),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secret_values() {
        let creds = AwsCredentials::new("AKIDEXAMPLE", "very-secret", Some("token-value".into()));
        let printed = format!("{creds:?} {:?}", StaticCredentials(creds.clone()));
        assert!(printed.contains("AKIDEXAMPLE"));
        assert!(
            !printed.contains("very-secret") && !printed.contains("token-value"),
            "{printed}"
        );
        assert!(!format!("{:?}", creds.to_sdk()).contains("very-secret"));
    }
}
