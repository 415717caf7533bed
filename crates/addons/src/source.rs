//! Where a bundle's manifest text comes from: written inline, a ConfigMap key in the management cluster, or a
//! URL pinned by its SHA-256.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use slipway_api::AddonSource;

use crate::error::{Error, Result};

/// Manifests bigger than this are refused: cert-manager, among the largest, is about 1 MB.
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;

/// The manifest text of a bundle's source. `client` and `namespace` are the management cluster's and the bundle's
/// (a `configMapRef` is looked up there); `http` downloads `url` sources.
pub async fn resolve(
    source: &AddonSource,
    client: &Client,
    namespace: &str,
    http: &reqwest::Client,
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

/// Downloads `url` (http or https only) and returns its text if its SHA-256 is `sha256` (hex, either case).
///
/// The whole body is hashed before anything is parsed, so a tampered or moved file is refused outright. The body
/// is read in chunks and cut off at [`MAX_MANIFEST_BYTES`]. reqwest sets no timeout by default: give `http` one
/// (`reqwest::Client::builder().timeout(…)`) so a stalled server cannot hold a reconcile forever.
pub async fn fetch_url(http: &reqwest::Client, url: &str, sha256: &str) -> Result<String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| Error::Source(format!("invalid URL: {e}")))?;
    let shown = redacted(&parsed);
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::Source(format!(
            "{shown}: only http:// and https:// URLs are fetched"
        )));
    }
    let download_error = |e: reqwest::Error| Error::Download {
        url: shown.clone(),
        // reqwest's message repeats the URL, query and all; ours shows the redacted one.
        message: e.without_url().to_string(),
    };
    let mut response = http
        .get(parsed.clone())
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(download_error)?;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(download_error)? {
        if body.len() + chunk.len() > MAX_MANIFEST_BYTES {
            return Err(Error::Download {
                url: shown,
                message: format!("larger than {MAX_MANIFEST_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }

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
        let http = reqwest::Client::new();
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
