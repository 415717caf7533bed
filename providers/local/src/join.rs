//! Joining as kubeadm does, against the workload cluster's real API: the control plane creates the bootstrap
//! tokens of its init configuration once its API answers, and a worker joins only if its CA hash names the
//! cluster's CA and the API accepts its token. A kwok Node stands in for the kubelet that would then register.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use slipway_bootstrap::{BootstrapToken, CertificateAuthority};
use slipway_provider::{ProviderError, Result};
use tracing::info;

use crate::layout::ClusterDir;
use crate::nodes::unreachable;
use crate::user_data::Join;

fn split(token: &str) -> Option<(&str, &str)> {
    token.split_once('.')
}

/// Creates the init configuration's bootstrap tokens in the workload cluster, once.
pub async fn create_init_tokens(dir: &ClusterDir, admin: &kube::Client) -> Result<()> {
    let pending = dir
        .init_tokens()
        .map_err(|e| unreachable(format!("reading init tokens: {e}")))?;
    let Some(tokens) = pending else {
        return Ok(());
    };
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "kube-system");
    for init in &tokens {
        let Some((id, secret)) = split(&init.token) else {
            continue;
        };
        let token = BootstrapToken {
            id: id.to_string(),
            secret: secret.to_string(),
            expires_at: Timestamp::now() + SignedDuration::from_secs(init.ttl_seconds),
        };
        match secrets
            .create(&PostParams::default(), &token.secret())
            .await
        {
            Ok(_) => {
                info!(dir = %dir.root().display(), token = %token.id, "created the init bootstrap token")
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => return Err(unreachable(e)),
        }
    }
    dir.remove_init_tokens()
        .map_err(|e| unreachable(format!("removing init tokens: {e}")))
}

/// Checks a worker's join the way `kubeadm join` would: the CA it pins is the cluster's, and its token
/// authenticates against the cluster's API as `system:bootstrap:<id>`.
pub async fn verify(dir: &ClusterDir, join: &Join) -> Result<()> {
    let ca_pem = std::fs::read_to_string(dir.pki().join("ca.crt"))
        .map_err(|e| unreachable(format!("reading the cluster CA: {e}")))?;
    let hash = CertificateAuthority {
        cert_pem: ca_pem,
        key_pem: String::new(),
    }
    .public_key_hash()
    .map_err(|e| unreachable(format!("the cluster CA: {e}")))?;
    if !join.ca_cert_hashes.contains(&hash) {
        return Err(ProviderError::permanent(
            "CaHashMismatch",
            format!(
                "the worker's user data pins CA hashes {:?}, not the cluster CA ({hash}) of {}",
                join.ca_cert_hashes, join.api_server_endpoint
            ),
        ));
    }
    let id = split(&join.token).map_or("", |(id, _)| id);
    // The admin kubeconfig knows where the API is and which CA it serves with; the token replaces its identity.
    let kubeconfig =
        kube::config::Kubeconfig::read_from(dir.admin_kubeconfig()).map_err(unreachable)?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(unreachable)?;
    config.auth_info = kube::config::AuthInfo {
        token: Some(join.token.clone().into()),
        ..Default::default()
    };
    let as_bootstrapper = kube::Client::try_from(config).map_err(unreachable)?;
    let review = Api::<SelfSubjectReview>::all(as_bootstrapper)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await;
    match review {
        Ok(review) => {
            let user = review
                .status
                .and_then(|s| s.user_info)
                .and_then(|u| u.username)
                .unwrap_or_default();
            if user == format!("system:bootstrap:{id}") {
                Ok(())
            } else {
                Err(ProviderError::permanent(
                    "JoinTokenRejected",
                    format!(
                        "the worker's token {id} authenticates as {user:?}, not as a bootstrap token"
                    ),
                ))
            }
        }
        // Not (or no longer) known to the cluster: the controller publishes a fresh one and retries.
        Err(kube::Error::Api(s)) if s.code == 401 => Err(ProviderError::transient(
            "JoinTokenRejected",
            format!(
                "the cluster's API does not accept the worker's bootstrap token {id}: unknown or expired"
            ),
        )),
        Err(e) => Err(unreachable(e)),
    }
}
