//! Where a bundle's manifest text comes from: written inline, a ConfigMap key in the management cluster, or a
//! URL pinned by its SHA-256.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use slipway_api::AddonSource;
use slipway_egress::{BodyError, ClientSettings, EgressError, EgressPolicy, HttpClient};

use crate::error::{Error, Result};

/// Manifests bigger than this are refused: cert-manager, among the largest, is about 1 MB.
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;

/// The manifest text of a bundle's source. `client` and `namespace` are the management cluster's and the bundle's
/// (a `configMapRef` is looked up there); `http` downloads `url` sources (see [`download_client`]).
pub async fn resolve(
    source: &AddonSource,
    client: &Client,
    namespace: &str,
    http: &HttpClient,
) -> Result<String> {
    match (&source.inline, &source.config_map_ref, &source.url) {
        (Some(text), None, None) => Ok(text.clone()),
        (None, Some(key_ref), None) => {
            from_config_map(client, namespace, &key_ref.name, &key_ref.key).await
        }
        (None, None, Some(url)) => fetch_url(http, &url.url, &url.sha256).await,
        _ => Err(Error::Source(
            "set exactly one of inline, configMapRef, url".to_string(),
        )),
    }
}

/// The text under `key` in the `data` of ConfigMap `namespace/name`.
pub async fn from_config_map(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<String> {
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("get ConfigMap {namespace}/{name}"), e))?
        .ok_or_else(|| Error::ConfigMapNotFound {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })?;
    config_map
        .data
        .and_then(|mut data| data.remove(key))
        .ok_or_else(|| Error::ConfigMapKeyMissing {
            namespace: namespace.to_string(),
            name: name.to_string(),
            key: key.to_string(),
        })
}

/// How long an add-on download may take: connecting, and the whole request including the body. A stalled or
/// slow server fails the fetch instead of holding a reconcile.
pub const DOWNLOAD_SETTINGS: ClientSettings = ClientSettings {
    connect_timeout: Duration::from_secs(10),
    timeout: Duration::from_secs(60),
    accept_invalid_certificates: false,
};

/// The client `url` sources are fetched with: bound to `policy`, timing out after [`DOWNLOAD_SETTINGS`]. Fails
/// only when the TLS backend cannot start.
pub fn download_client(policy: EgressPolicy) -> Result<HttpClient> {
    HttpClient::new(policy, &DOWNLOAD_SETTINGS).map_err(|e| {
        Error::Source(format!(
            "cannot build the HTTP client for add-on downloads: {}",
            slipway_egress::error_chain(&e)
        ))
    })
}

/// Downloads `url` (http or https only) and returns its text if its SHA-256 is `sha256` (hex, either case).
///
/// `http`'s egress policy decides which addresses may be connected to (see `slipway-egress`); a refused fetch
/// fails with [`Error::EgressRefused`], which names the host or address and the manager flag that allows it,
/// and nothing else: nothing was read. The whole body is hashed before anything is parsed, so a tampered or
/// moved file is refused outright. The body is cut off at [`MAX_MANIFEST_BYTES`].
pub async fn fetch_url(http: &HttpClient, url: &str, sha256: &str) -> Result<String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| Error::Source(format!("invalid URL: {e}")))?;
    let shown = redacted(&parsed);
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::Source(format!(
            "{shown}: only http:// and https:// URLs are fetched"
        )));
    }
    let refused = |source: EgressError| Error::EgressRefused {
        url: shown.clone(),
        source,
    };
    let download_error = |e: reqwest::Error| match slipway_egress::refusal(&e) {
        Some(refusal) => refused(refusal.clone()),
        None => Error::Download {
            url: shown.clone(),
            // reqwest's message repeats the URL, query and all; ours shows the redacted one.
            message: slipway_egress::error_chain(&e.without_url()),
        },
    };
    let response = http
        .get(parsed.clone())
        .map_err(refused)?
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(download_error)?;
    let body = slipway_egress::read_body(response, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(_) => Error::Download {
                url: shown.clone(),
                message: format!("larger than {MAX_MANIFEST_BYTES} bytes"),
            },
            BodyError::Read(e) => download_error(e),
        })?;

    let got = hex::encode(Sha256::digest(&body));
    if !got.eq_ignore_ascii_case(sha256.trim()) {
        return Err(Error::DigestMismatch {
            url: shown,
            expected: sha256.trim().to_ascii_lowercase(),
            got,
        });
    }
    String::from_utf8(body).map_err(|_| Error::Download {
        url: shown,
        message: "not UTF-8 text".to_string(),
    })
}

/// The URL without user info and query, which may hold credentials that must not reach an error or a log.
fn redacted(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if shown.query().is_some() {
        shown.set_query(Some("…"));
    }
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_query_are_not_shown() {
        let url = reqwest::Url::parse("https://user:secret@example.com/a.yaml?token=abc").unwrap();
        let shown = redacted(&url);
        assert!(
            !shown.contains("secret") && !shown.contains("abc") && !shown.contains("user"),
            "{shown}"
        );
        assert!(shown.starts_with("https://example.com/a.yaml"), "{shown}");
    }

    #[tokio::test]
    async fn only_http_and_https_urls_are_fetched() {
        let http = download_client(EgressPolicy::default()).unwrap();
        for url in ["file:///etc/passwd", "ftp://example.com/a.yaml"] {
            let err = fetch_url(&http, url, &"0".repeat(64)).await.unwrap_err();
            assert!(
                err.to_string().contains("only http:// and https://"),
                "{err}"
            );
        }
        let err = fetch_url(&http, "not a url", "").await.unwrap_err();
        assert_eq!(err.metric_label(), "source");
    }
}
