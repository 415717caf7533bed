//! Clients for workload clusters, made from their `<cluster>-kubeconfig` Secrets and cached per Cluster UID.
//!
//! The Secret lives in the tenant's namespace, so its content is not trusted: the client is built from certificate
//! data alone (server, CA data, client certificate and key data, or a bearer token string), never through kube's
//! kubeconfig loader, which would run `exec` plugins, read files and honour proxies. Anything else in the
//! kubeconfig is refused with an error naming the field, and the server must be the Cluster's
//! `status.controlPlaneEndpoint`. A Secret that is missing or whose value is not what Slipway wrote (its digest
//! annotation differs) is rewritten before it is used. The cache follows the Secret's resourceVersion, so a
//! rewritten Secret gives a new client.
//!
//! Not here: what the clients are used for (add-ons, join tokens).

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::config::{AuthInfo, Kubeconfig};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use slipway_api::{ApiEndpoint, Cluster};
use slipway_bootstrap::secrets::{self, KUBECONFIG_DIGEST_ANNOTATION, Purpose};
use tracing::warn;

use crate::context::Context;

/// Kubeconfig Secrets larger than this are refused before parsing (Slipway's own are about 6 KiB).
const MAX_KUBECONFIG_BYTES: usize = 64 * 1024;

/// Why no client could be made for a workload cluster. Messages name the Secret and, for a refused kubeconfig,
/// the field and the fix; they never contain the Secret's data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the cluster has no status.controlPlaneEndpoint yet")]
    NoEndpoint,

    #[error("reading Secret {secret}: {source}")]
    Read {
        secret: String,
        #[source]
        source: kube::Error,
    },

    #[error("rewriting Secret {secret}, which someone else changed: {message}")]
    Rewrite { secret: String, message: String },

    #[error("Secret {secret} has no kubeconfig under key value")]
    Missing { secret: String },

    #[error(
        "Secret {secret}: {field} is not accepted: the manager builds workload clients from certificate data only \
         ({fix})"
    )]
    Refused {
        secret: String,
        field: String,
        fix: String,
    },

    #[error("client for {secret}: {message}")]
    Client { secret: String, message: String },
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NoEndpoint => "workload_no_endpoint",
            Self::Read { .. } | Self::Rewrite { .. } => "kube",
            Self::Missing { .. } | Self::Refused { .. } => "workload_kubeconfig_refused",
            Self::Client { .. } => "workload_client",
        }
    }
}

/// The `https://` URL of an API endpoint (IPv6 addresses in brackets).
pub fn server_url(host: &str, port: impl std::fmt::Display) -> String {
    if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// A client for the cluster's API from its `<cluster>-kubeconfig` Secret, cached per cluster and Secret version.
pub(crate) async fn client(ctx: &Context, cluster: &Cluster) -> Result<Client, Error> {
    let key = cluster.uid().unwrap_or_default();
    let namespace = cluster.namespace().unwrap_or_default();
    let name = Purpose::Kubeconfig.secret_name(&cluster.name_any());
    let endpoint = cluster
        .status
        .as_ref()
        .and_then(|s| s.control_plane_endpoint.as_ref())
        .ok_or(Error::NoEndpoint)?;
    let server = server_url(&endpoint.host, endpoint.port);

    // The metadata cache says which version of the Secret is current without reading its data.
    let cached_version = ctx
        .secrets
        .get(&ObjectRef::new(&name).within(&namespace))
        .and_then(|meta| meta.resource_version());
    if let Some(version) = &cached_version
        && let Some((seen, client)) = ctx.workload_clients.get(&key)
        && &seen == version
    {
        return Ok(client);
    }

    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let read = |source| Error::Read {
        secret: format!("{namespace}/{name}"),
        source,
    };
    let secret = api.get_opt(&name).await.map_err(read)?;
    if secret.as_ref().is_none_or(|s| !written_by_slipway(s)) {
        warn!(cluster = %cluster.name_any(), secret = %name, "the kubeconfig Secret is missing or not what Slipway wrote; rewriting it");
        crate::cluster_secrets::write_kubeconfig(ctx, cluster, &server)
            .await
            .map_err(|e| Error::Rewrite {
                secret: format!("{namespace}/{name}"),
                message: e.to_string(),
            })?;
    }
    let secret = match secret {
        Some(secret) if written_by_slipway(&secret) => secret,
        _ => api.get(&name).await.map_err(read)?,
    };
    let version = secret.resource_version().unwrap_or_default();
    let value = secret
        .data
        .and_then(|mut d| d.remove("value"))
        .ok_or_else(|| Error::Missing {
            secret: format!("{namespace}/{name}"),
        })?;
    let config = trusted_config(&format!("{namespace}/{name}"), &value.0, endpoint)?;
    let client = Client::try_from(config).map_err(|e| Error::Client {
        secret: format!("{namespace}/{name}"),
        message: e.to_string(),
    })?;
    ctx.workload_clients.insert(key, (version, client.clone()));
    Ok(client)
}

/// Whether the Secret's value still has the digest Slipway recorded when it wrote it.
fn written_by_slipway(secret: &Secret) -> bool {
    let recorded = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(KUBECONFIG_DIGEST_ANNOTATION));
    let value = secret.data.as_ref().and_then(|d| d.get("value"));
    match (recorded, value) {
        (Some(recorded), Some(value)) => *recorded == secrets::kubeconfig_digest(&value.0),
        _ => false,
    }
}

/// A client configuration from a kubeconfig's certificate data, or an error naming the first field that is not
/// accepted. `secret` names the Secret in messages.
pub fn trusted_config(
    secret: &str,
    value: &[u8],
    endpoint: &ApiEndpoint,
) -> Result<kube::Config, Error> {
    let refused = |field: &str, fix: &str| Error::Refused {
        secret: secret.to_string(),
        field: field.to_string(),
        fix: fix.to_string(),
    };
    const REWRITE: &str = "delete the Secret and Slipway writes a new one";
    if value.len() > MAX_KUBECONFIG_BYTES {
        return Err(refused(
            "value",
            &format!("larger than {MAX_KUBECONFIG_BYTES} bytes; {REWRITE}"),
        ));
    }
    let text = std::str::from_utf8(value).map_err(|_| refused("value", "not UTF-8 text"))?;
    let kubeconfig = Kubeconfig::from_yaml(text)
        .map_err(|_| refused("value", &format!("not a kubeconfig; {REWRITE}")))?;

    // The one context in use: the current one, or the only one.
    let context = match &kubeconfig.current_context {
        Some(current) => kubeconfig.contexts.iter().find(|c| &c.name == current),
        None if kubeconfig.contexts.len() == 1 => kubeconfig.contexts.first(),
        None => None,
    }
    .and_then(|c| c.context.as_ref())
    .ok_or_else(|| {
        refused(
            "current-context",
            &format!("it names no context; {REWRITE}"),
        )
    })?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| {
            refused(
                "clusters",
                &format!("no cluster {:?}; {REWRITE}", context.cluster),
            )
        })?;
    let user_name = context.user.clone().unwrap_or_default();
    let user = kubeconfig
        .auth_infos
        .iter()
        .find(|u| u.name == user_name)
        .and_then(|u| u.auth_info.as_ref())
        .ok_or_else(|| refused("users", &format!("no user {user_name:?}; {REWRITE}")))?;

    // Every field that would make the client run a command, read a file, skip verification or talk elsewhere.
    let cluster_fields = [
        (
            "clusters[].cluster.insecure-skip-tls-verify",
            cluster.insecure_skip_tls_verify == Some(true),
        ),
        (
            "clusters[].cluster.certificate-authority",
            cluster.certificate_authority.is_some(),
        ),
        ("clusters[].cluster.proxy-url", cluster.proxy_url.is_some()),
        (
            "clusters[].cluster.tls-server-name",
            cluster.tls_server_name.is_some(),
        ),
    ];
    let user_fields = [
        ("users[].user.exec", user.exec.is_some()),
        ("users[].user.auth-provider", user.auth_provider.is_some()),
        ("users[].user.tokenFile", user.token_file.is_some()),
        (
            "users[].user.client-certificate",
            user.client_certificate.is_some(),
        ),
        ("users[].user.client-key", user.client_key.is_some()),
        ("users[].user.username", user.username.is_some()),
        ("users[].user.password", user.password.is_some()),
        ("users[].user.as", user.impersonate.is_some()),
        ("users[].user.as-uid", user.impersonate_uid.is_some()),
        ("users[].user.as-groups", user.impersonate_groups.is_some()),
        (
            "users[].user.as-user-extra",
            user.impersonate_user_extra.is_some(),
        ),
    ];
    if let Some((field, _)) = cluster_fields
        .iter()
        .chain(&user_fields)
        .find(|(_, set)| *set)
    {
        return Err(refused(field, REWRITE));
    }

    let expected = server_url(&endpoint.host, endpoint.port);
    let server = cluster.server.clone().unwrap_or_default();
    if server.trim_end_matches('/') != expected {
        return Err(refused(
            "clusters[].cluster.server",
            &format!("it must be the cluster's status.controlPlaneEndpoint, {expected}; {REWRITE}"),
        ));
    }
    let ca = cluster
        .certificate_authority_data
        .as_deref()
        .ok_or_else(|| {
            refused(
                "clusters[].cluster.certificate-authority-data",
                &format!("missing; {REWRITE}"),
            )
        })?;
    let roots = ca_certificates(ca).ok_or_else(|| {
        refused(
            "clusters[].cluster.certificate-authority-data",
            &format!("not base64 PEM certificates; {REWRITE}"),
        )
    })?;

    let mut auth_info = AuthInfo::default();
    match (
        &user.client_certificate_data,
        &user.client_key_data,
        &user.token,
    ) {
        (Some(cert), Some(key), None) => {
            auth_info.client_certificate_data = Some(cert.clone());
            auth_info.client_key_data = Some(key.clone());
        }
        (None, None, Some(token)) => auth_info.token = Some(token.clone()),
        _ => {
            return Err(refused(
                "users[].user",
                &format!(
                    "give either client-certificate-data with client-key-data, or token; {REWRITE}"
                ),
            ));
        }
    }

    let uri = expected.parse().map_err(|_| {
        refused(
            "clusters[].cluster.server",
            "not a URL; fix status.controlPlaneEndpoint",
        )
    })?;
    let mut config = kube::Config::new(uri);
    config.root_cert = Some(roots);
    config.auth_info = auth_info;
    config.read_timeout = Some(std::time::Duration::from_secs(60));
    // A 429 or 503 from a workload cluster is retried by the next pass, not inside this one: an eviction that a
    // PodDisruptionBudget refuses is a 429, and kube's own retry would hold the reconcile for minutes on it.
    config.default_retry = false;
    Ok(config)
}

/// The DER certificates of base64-encoded PEM, if it holds at least one and nothing else is wrong with it.
fn ca_certificates(data: &str) -> Option<Vec<Vec<u8>>> {
    use base64::Engine as _;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()?;
    let blocks = pem::parse_many(pem).ok()?;
    let certificates: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    (!certificates.is_empty()).then_some(certificates)
}

/// Forgets a deleted cluster's client and stops watching its Nodes.
pub fn forget_cluster(ctx: &Context, uid: &str) {
    ctx.nodes.forget(uid);
    ctx.workload_clients.remove(uid);
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use serde_json::{Value, json};
    use slipway_bootstrap::ClusterPki;

    use super::*;

    fn endpoint() -> ApiEndpoint {
        ApiEndpoint {
            host: "127.0.0.1".into(),
            port: 6443,
        }
    }

    /// Slipway's own kubeconfig for `endpoint()`, as JSON to change.
    fn slipway_kubeconfig() -> Value {
        let pki = ClusterPki::generate("demo").unwrap();
        let written = slipway_bootstrap::kubeconfig::admin_kubeconfig(
            "demo",
            "https://127.0.0.1:6443",
            &pki.ca,
            Timestamp::now(),
        )
        .unwrap();
        serde_saphyr::from_str(&written.yaml).unwrap()
    }

    fn check(config: &Value) -> Result<kube::Config, Error> {
        trusted_config(
            "ns/demo-kubeconfig",
            &serde_json::to_vec(config).unwrap(),
            &endpoint(),
        )
    }

    fn refused_field(config: &Value) -> String {
        match check(config) {
            Err(Error::Refused { field, .. }) => field,
            other => panic!("not refused: {:?}", other.map(|c| c.cluster_url)),
        }
    }

    #[test]
    fn slipway_kubeconfig_gives_a_client_with_its_certificate_data_only() {
        let config = check(&slipway_kubeconfig()).unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(config.root_cert.as_ref().map(Vec::len), Some(1));
        assert!(config.auth_info.client_certificate_data.is_some());
        assert!(config.auth_info.client_key_data.is_some());
        assert!(config.auth_info.exec.is_none() && config.auth_info.token_file.is_none());
        assert!(!config.accept_invalid_certs && config.proxy_url.is_none());
    }

    #[test]
    fn a_bearer_token_string_is_accepted() {
        let mut config = slipway_kubeconfig();
        config["users"][0]["user"] = json!({ "token": "abcdef.0123456789abcdef" });
        let config = check(&config).unwrap();
        assert!(config.auth_info.token.is_some());
    }

    #[test]
    fn every_field_that_runs_reads_or_redirects_is_refused_by_name() {
        let cases: [(&str, &str, Value, &str); 10] = [
            (
                "users",
                "exec",
                json!({ "command": "/bin/sh", "apiVersion": "client.authentication.k8s.io/v1" }),
                "users[].user.exec",
            ),
            (
                "users",
                "auth-provider",
                json!({ "name": "gcp" }),
                "users[].user.auth-provider",
            ),
            (
                "users",
                "tokenFile",
                json!("/var/run/secrets/token"),
                "users[].user.tokenFile",
            ),
            (
                "users",
                "client-certificate",
                json!("/etc/cert.pem"),
                "users[].user.client-certificate",
            ),
            (
                "users",
                "client-key",
                json!("/etc/key.pem"),
                "users[].user.client-key",
            ),
            ("users", "as", json!("system:admin"), "users[].user.as"),
            ("users", "username", json!("admin"), "users[].user.username"),
            (
                "clusters",
                "insecure-skip-tls-verify",
                json!(true),
                "clusters[].cluster.insecure-skip-tls-verify",
            ),
            (
                "clusters",
                "certificate-authority",
                json!("/etc/ca.pem"),
                "clusters[].cluster.certificate-authority",
            ),
            (
                "clusters",
                "proxy-url",
                json!("http://127.0.0.1:3128"),
                "clusters[].cluster.proxy-url",
            ),
        ];
        for (list, key, value, field) in cases {
            let mut config = slipway_kubeconfig();
            let inner = if list == "users" { "user" } else { "cluster" };
            config[list][0][inner][key] = value;
            assert_eq!(refused_field(&config), field, "{list}.{key}");
        }
    }

    #[test]
    fn a_server_other_than_the_clusters_endpoint_is_refused() {
        for server in [
            "https://10.0.0.1:6443",
            "https://127.0.0.1:6444",
            "http://127.0.0.1:6443",
        ] {
            let mut config = slipway_kubeconfig();
            config["clusters"][0]["cluster"]["server"] = json!(server);
            assert_eq!(
                refused_field(&config),
                "clusters[].cluster.server",
                "{server}"
            );
        }
    }

    #[test]
    fn missing_or_broken_certificate_data_is_refused() {
        let mut config = slipway_kubeconfig();
        config["clusters"][0]["cluster"]["certificate-authority-data"] = json!("bm90IGEgY2VydA==");
        assert_eq!(
            refused_field(&config),
            "clusters[].cluster.certificate-authority-data"
        );
        let mut config = slipway_kubeconfig();
        config["users"][0]["user"]
            .as_object_mut()
            .unwrap()
            .remove("client-key-data");
        assert_eq!(refused_field(&config), "users[].user");
    }

    #[test]
    fn messages_never_repeat_the_secrets_data() {
        let mut config = slipway_kubeconfig();
        let key = config["users"][0]["user"]["client-key-data"]
            .as_str()
            .unwrap()
            .to_string();
        config["users"][0]["user"]["exec"] =
            json!({ "command": "/bin/true", "apiVersion": "client.authentication.k8s.io/v1" });
        let message = check(&config).unwrap_err().to_string();
        assert!(
            message.contains("users[].user.exec is not accepted"),
            "{message}"
        );
        assert!(
            !message.contains(&key) && !message.contains("/bin/true"),
            "{message}"
        );
    }

    #[test]
    fn ipv6_endpoints_get_brackets() {
        assert_eq!(server_url("fd00::1", 6443), "https://[fd00::1]:6443");
        assert_eq!(
            server_url("api.example.com", 443),
            "https://api.example.com:443"
        );
    }
}
