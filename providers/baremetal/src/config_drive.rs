//! The config drive: how a bare-metal host gets its user data.
//!
//! Redfish has no user-data channel, so the host reads it from a second virtual medium, as cloud-init's NoCloud
//! datasource expects: an ISO 9660 image labelled `cidata` holding `user-data` (the machine's cloud-init, from its
//! user data Secret) and `meta-data` (`instance-id`: the machine's provider ID, which the user data hands to the
//! kubelet; `local-hostname`: the machine's name).
//!
//! The manager builds that image when the BMC asks for it and serves it over HTTPS ([`serve`]) at
//! `<base>/config-drive/<namespace>/<host>/<token>/cidata.iso`. The token is 32 random bytes written into the user
//! data Secret with the user data ([`TOKEN_KEY`]), fresh for every claim, so a URL names one claim of one host.
//! It answers only while the host is claimed and `Provisioning` with that Secret: once the host is `Provisioned`
//! (booted from its image and on), released, or claimed again, the URL answers 404 like any unknown one. The
//! token is a credential: it is never logged; the BMC's virtual media resource shows the URL while the medium
//! is inserted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use slipway_api::{BareMetalHost, HostState};
use url::Url;

use crate::user_data::USER_DATA_KEY;

/// The key of the user data Secret that holds the config drive's token.
pub const TOKEN_KEY: &str = "config-drive-token";
/// The file name at the end of every config drive URL.
pub const ISO_NAME: &str = "cidata.iso";
/// The volume label cloud-init's NoCloud datasource looks for.
pub const VOLUME_LABEL: &str = "cidata";
/// Requests the config drive server handles at once; more wait. BMCs fetch one image per boot.
const CONCURRENT_REQUESTS: usize = 16;
/// How long one request may take, reading the host and its Secret and building the image.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where BMCs reach the manager's config drive server.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigDriveSettings {
    base: Url,
}

impl std::fmt::Debug for ConfigDriveSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigDriveSettings")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl ConfigDriveSettings {
    /// `base` is the HTTPS address at which the BMCs reach the manager's config drive server, e.g.
    /// `https://slipway.example.com:8443` (a path is kept as a prefix).
    pub fn new(base: &str) -> Result<Self, String> {
        let url = Url::parse(base).map_err(|e| {
            format!("config drive URL {base:?} is not a URL ({e}); give one like https://slipway.example.com:8443")
        })?;
        if url.scheme() != "https" {
            return Err(format!(
                "config drive URL {base:?} must use https: the image holds the machine's private keys or join token"
            ));
        }
        if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "config drive URL {base:?} needs a host and no query or fragment, e.g. https://slipway.example.com:8443"
            ));
        }
        Ok(Self { base: url })
    }

    /// The host name or address in the base URL, for a self-signed certificate.
    pub fn host(&self) -> String {
        self.base.host_str().unwrap_or_default().to_string()
    }

    /// The URL of one claim's config drive.
    pub fn url(&self, namespace: &str, host: &str, token: &str) -> String {
        format!(
            "{}/config-drive/{namespace}/{host}/{token}/{ISO_NAME}",
            self.base.as_str().trim_end_matches('/')
        )
    }
}

/// A fresh token: 32 random bytes, hex.
pub(crate) fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The token a user data Secret holds, when it holds one.
pub(crate) fn token_of(secret: &Secret) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(TOKEN_KEY))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|t| !t.is_empty())
}

/// The config drive of a claim whose user data is `secret`: `None` without a config drive server or without user
/// data.
pub(crate) fn for_claim(
    settings: Option<&ConfigDriveSettings>,
    host: &BareMetalHost,
    secret: Option<&Secret>,
) -> crate::error::Result<Option<crate::bmc::ConfigDrive>> {
    let (Some(settings), Some(secret)) = (settings, secret) else {
        return Ok(None);
    };
    let namespace = host.namespace().unwrap_or_default();
    let token = token_of(secret).ok_or_else(|| crate::error::Error::ConfigDriveToken {
        host: crate::bmc::host_key(host),
        secret: format!("{namespace}/{}", secret.name_any()),
    })?;
    Ok(Some(crate::bmc::ConfigDrive {
        url: settings.url(&namespace, &host.name_any(), &token),
        token,
    }))
}

/// NoCloud meta-data for the machine on `host`: its provider ID as instance id (the user data gives it to the
/// kubelet through `cloud-init query`) and its name as host name. JSON strings are YAML scalars.
pub fn meta_data(host: &BareMetalHost, machine: &str) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        quote(&crate::provider_id(host)),
        quote(machine)
    )
}

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the config drive image: {0}")]
pub struct IsoError(String);

/// An ISO 9660 image labelled `cidata` with `user-data` and `meta-data`, the names readable through Rock Ridge
/// and Joliet as cloud-init's own `cloud-localds` writes them.
pub fn build_iso(user_data: &[u8], meta_data: &str) -> Result<Vec<u8>, IsoError> {
    use hadris_iso::read::PathSeparator;
    use hadris_iso::write::options::{CreationFeatures, IsoFormatOptions};
    use hadris_iso::write::{File, InputFiles, IsoImageWriter};

    let file = |name: &str, contents: Vec<u8>| File::File {
        name: Arc::new(name.to_string()),
        contents,
    };
    let files = InputFiles {
        path_separator: PathSeparator::ForwardSlash,
        files: vec![
            file("user-data", user_data.to_vec()),
            file("meta-data", meta_data.as_bytes().to_vec()),
        ],
    };
    let options = IsoFormatOptions {
        volume_name: VOLUME_LABEL.to_string(),
        system_id: None,
        volume_set_id: None,
        publisher_id: None,
        preparer_id: None,
        application_id: Some("SLIPWAY".to_string()),
        sector_size: 2048,
        path_separator: PathSeparator::ForwardSlash,
        features: CreationFeatures::extensions(),
        strict_charset: false,
    };
    let mut image = std::io::Cursor::new(Vec::new());
    IsoImageWriter::create(&mut image, files, options).map_err(|e| IsoError(e.to_string()))?;
    Ok(image.into_inner())
}

/// The certificate and key the config drive server presents.
pub struct ServerTls {
    certificate_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls { .. }")
    }
}

impl ServerTls {
    /// A certificate and key in PEM, e.g. from a Secret mounted into the manager's Pod.
    pub fn from_pem(certificate_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        Self {
            certificate_pem,
            key_pem,
        }
    }

    /// A self-signed certificate for `names`, made at start. BMCs do not verify virtual media certificates by
    /// default (the Redfish norm); the token in the URL is what keeps the image to the host it was made for.
    pub fn self_signed(names: Vec<String>) -> Result<Self, String> {
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| format!("making a self-signed certificate: {e}"))?;
        Ok(Self {
            certificate_pem: certified.cert.pem().into_bytes(),
            key_pem: certified.signing_key.serialize_pem().into_bytes(),
        })
    }
}

/// The config drive server: a listener and its TLS configuration, checked before it runs.
pub struct Server {
    listener: std::net::TcpListener,
    config: axum_server::tls_rustls::RustlsConfig,
}

impl Server {
    /// Fails when the certificate or key cannot be used.
    pub async fn new(listener: std::net::TcpListener, tls: ServerTls) -> std::io::Result<Self> {
        let config =
            axum_server::tls_rustls::RustlsConfig::from_pem(tls.certificate_pem, tls.key_pem)
                .await?;
        Ok(Self { listener, config })
    }

    /// Serves config drives over HTTPS until `shutdown` completes. `client` reads BareMetalHosts and Secrets in
    /// the management cluster.
    pub async fn run(
        self,
        client: kube::Client,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let handle = axum_server::Handle::<SocketAddr>::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopper.graceful_shutdown(Some(Duration::from_secs(5)));
        });
        axum_server::from_tcp_rustls(self.listener, self.config)?
            .handle(handle)
            .serve(router(client).into_make_service())
            .await
    }
}

/// The config drive routes: `GET /config-drive/{namespace}/{host}/{token}/cidata.iso`.
pub fn router(client: kube::Client) -> axum::Router {
    axum::Router::new()
        .route(
            &format!("/config-drive/{{namespace}}/{{host}}/{{token}}/{ISO_NAME}"),
            axum::routing::get(config_drive),
        )
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            CONCURRENT_REQUESTS,
        ))
        .with_state(client)
}

async fn config_drive(
    State(client): State<kube::Client>,
    Path((namespace, host, token)): Path<(String, String, String)>,
) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "not found\n").into_response();
    if !is_name(&namespace) || !is_name(&host) || !is_token(&token) {
        return not_found();
    }
    match tokio::time::timeout(
        REQUEST_TIMEOUT,
        image_for(&client, &namespace, &host, &token),
    )
    .await
    {
        Ok(Ok(Some(image))) => {
            tracing::info!(host = %format!("{namespace}/{host}"), bytes = image.len(), "served a config drive");
            (
                [(header::CONTENT_TYPE, "application/x-iso9660-image")],
                image,
            )
                .into_response()
        }
        Ok(Ok(None)) => {
            tracing::info!(host = %format!("{namespace}/{host}"), "refused a config drive request: no such claim, a wrong token, or a host no longer provisioning");
            not_found()
        }
        Ok(Err(error)) => {
            tracing::warn!(host = %format!("{namespace}/{host}"), %error, "config drive request failed");
            (StatusCode::SERVICE_UNAVAILABLE, "try again later\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "try again later\n").into_response(),
    }
}

/// What a request with a well-formed token may get: the image, when `host` is claimed, still provisioning, and
/// its claim's Secret (same UID) holds `token`.
async fn image_for(
    client: &kube::Client,
    namespace: &str,
    host: &str,
    token: &str,
) -> Result<Option<Vec<u8>>, String> {
    let hosts: Api<BareMetalHost> = Api::namespaced(client.clone(), namespace);
    let Some(found) = hosts
        .get_opt(host)
        .await
        .map_err(|e| format!("reading the BareMetalHost: {e}"))?
    else {
        return Ok(None);
    };
    let status = found.status.clone().unwrap_or_default();
    let (Some(consumer), Some(reference)) = (
        status.consumer_ref.as_ref(),
        status
            .provisioning
            .as_ref()
            .and_then(|p| p.user_data_secret_ref.as_ref()),
    ) else {
        return Ok(None);
    };
    if status.state != Some(HostState::Provisioning) {
        return Ok(None);
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = secrets
        .get_opt(&reference.name)
        .await
        .map_err(|e| format!("reading the user data Secret: {e}"))?
    else {
        return Ok(None);
    };
    if secret.uid().as_deref() != Some(reference.uid.as_str()) {
        return Ok(None);
    }
    let Some(expected) = token_of(&secret) else {
        return Ok(None);
    };
    if !same(expected.as_bytes(), token.as_bytes()) {
        return Ok(None);
    }
    let Some(user_data) = secret.data.as_ref().and_then(|d| d.get(USER_DATA_KEY)) else {
        return Ok(None);
    };
    build_iso(&user_data.0, &meta_data(&found, &consumer.machine))
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Compares two tokens in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A Kubernetes object name (DNS subdomain): anything else is no host of ours.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
}

fn is_token(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_https_and_a_host() {
        let settings = ConfigDriveSettings::new("https://slipway.example:8443/").unwrap();
        assert_eq!(
            settings.url("ns", "h-0", "ab"),
            "https://slipway.example:8443/config-drive/ns/h-0/ab/cidata.iso"
        );
        let prefixed = ConfigDriveSettings::new("https://lb.example/slipway").unwrap();
        assert_eq!(
            prefixed.url("ns", "h", "t"),
            "https://lb.example/slipway/config-drive/ns/h/t/cidata.iso"
        );
        for bad in [
            "http://slipway:8443",
            "slipway:8443",
            "https://x?y=1",
            "file:///etc",
        ] {
            let error = ConfigDriveSettings::new(bad).unwrap_err();
            assert!(error.contains(bad), "{error}");
        }
    }

    #[test]
    fn tokens_are_fresh_64_hex_digits() {
        let (a, b) = (new_token(), new_token());
        assert!(is_token(&a) && is_token(&b), "{a} {b}");
        assert_ne!(a, b);
        assert!(!is_token("../../etc"));
        assert!(!is_token(&a.to_uppercase()));
        assert!(same(a.as_bytes(), a.as_bytes()));
        assert!(!same(a.as_bytes(), b.as_bytes()));
        assert!(!same(a.as_bytes(), &a.as_bytes()[1..]));
    }

    #[test]
    fn only_object_names_are_looked_up() {
        assert!(is_name("host-0") && is_name("team.a"));
        for bad in ["", "..", "-x", "Host", "a/b", "a%2fb"] {
            assert!(!is_name(bad), "{bad}");
        }
    }

    #[test]
    fn meta_data_names_the_provider_id_and_the_machine() {
        let mut host = BareMetalHost::new(
            "host-3",
            slipway_api::BareMetalHostSpec {
                bmc: slipway_api::BmcDetails {
                    address: "redfish+https://bmc/redfish/v1/Systems/1".into(),
                    credentials_secret_ref: None,
                    disable_certificate_verification: false,
                },
                boot_mac_address: None,
            },
        );
        host.metadata.namespace = Some("team-a".into());
        assert_eq!(
            meta_data(&host, "c-md-0-x"),
            "instance-id: \"baremetal://team-a/host-3\"\nlocal-hostname: \"c-md-0-x\"\n"
        );
    }
}
