//! What a tenant's add-on URL may make the manager fetch: with the `slipway manager` binary and a real apiserver,
//! a bundle pointing at the cloud metadata address or at a loopback port is refused without `--allow-egress`,
//! its status names the refused address and the flag, and the loopback listener never sees a request; with
//! `--allow-egress 127.0.0.0/8` the loopback bundle is fetched, the metadata one stays refused, and a redirect
//! from the allowed server to another origin is refused without reaching it.
//!
//! The target Cluster is paused with a hand-written `ControlPlaneReady=True`, so that the bundle controller
//! fetches its source while no provider runs.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sha2::{Digest, Sha256};
use slipway_api::{AddonBundle, Cluster};
use support::{ManagerProcess, apply, env, eventually};

const MANIFEST: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-url\ndata:\n  a: \"1\"\n";

/// A loopback HTTP server that counts every request it receives; `/redirect` sends the client to `redirect_to`.
async fn counting_server(redirect_to: Option<String>) -> (String, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        counter.fetch_add(1, Ordering::SeqCst);
        let redirect_to = redirect_to.clone();
        async move {
            match (uri.path(), redirect_to) {
                ("/redirect", Some(target)) => axum::response::Response::builder()
                    .status(307)
                    .header("location", target)
                    .body(axum::body::Body::empty())
                    .unwrap(),
                _ => axum::response::Response::new(axum::body::Body::from(MANIFEST)),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), requests)
}

fn bundle(name: &str, url: &str) -> String {
    format!(
        r#"apiVersion: slipway.dev/v1alpha1
kind: AddonBundle
metadata:
  name: {name}
spec:
  clusterSelector:
    matchLabels:
      egress-test: "yes"
  source:
    url:
      url: {url}
      sha256: {sha256}
"#,
        sha256 = hex::encode(Sha256::digest(MANIFEST.as_bytes())),
    )
}

/// A paused Cluster whose control plane is said to be ready: the bundle controller works on it, nothing else does.
async fn target_cluster(client: &kube::Client, ns: &str) {
    let yaml = support::sim_cluster("target", 1, 0, "{}")
        .replace(
            "  name: target\n",
            "  name: target\n  labels:\n    egress-test: \"yes\"\n",
        )
        .replace("  controlPlane:", "  paused: true\n  controlPlane:");
    apply(client, ns, &yaml).await;
    let now = "2026-01-01T00:00:00Z";
    Api::<Cluster>::namespaced(client.clone(), ns)
        .patch_status(
            "target",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": { "conditions": [{
                "type": "ControlPlaneReady", "status": "True", "reason": "Ready",
                "message": "set by the test", "lastTransitionTime": now,
            }] } })),
        )
        .await
        .unwrap();
}

/// The status message of `bundle` on the target cluster, once it satisfies `accept`.
async fn message_when(
    bundles: &Api<AddonBundle>,
    bundle: &str,
    accept: impl Fn(&str) -> bool,
) -> String {
    eventually(
        &format!("AddonBundle {bundle} status"),
        Duration::from_secs(60),
        || async {
            let found = bundles.get(bundle).await.map_err(|e| e.to_string())?;
            let message = found
                .status
                .as_ref()
                .and_then(|s| s.clusters.iter().find(|c| c.cluster == "target"))
                .and_then(|c| c.message.clone())
                .unwrap_or_default();
            if accept(&message) {
                Ok(message)
            } else {
                Err(format!("{message:?}; status {:?}", found.status))
            }
        },
    )
    .await
}

#[tokio::test]
async fn addon_urls_to_metadata_loopback_and_other_origins_are_refused_unless_allowed() {
    let env = env().await;
    let client = env.client().await;
    let ns = env.create_namespace("addon-egress").await;
    let (elsewhere, elsewhere_requests) = counting_server(None).await;
    let (mirror, mirror_requests) =
        counting_server(Some(format!("{elsewhere}/manifest.yaml"))).await;
    target_cluster(&client, &ns).await;
    let bundles: Api<AddonBundle> = Api::namespaced(client.clone(), &ns);
    let logs = tempfile::tempdir().unwrap();

    // Without --allow-egress.
    let mut manager = ManagerProcess::start(
        env.kubeconfig_path(),
        &logs.path().join("default.log"),
        &["--leader-elect=false"],
    );
    apply(
        &client,
        &ns,
        &bundle("metadata", "http://169.254.169.254/latest/user-data"),
    )
    .await;
    apply(
        &client,
        &ns,
        &bundle("loopback", &format!("{mirror}/manifest.yaml")),
    )
    .await;
    let metadata = message_when(&bundles, "metadata", |m| m.contains("refused")).await;
    assert!(
        metadata.contains("refused to connect to 169.254.169.254 (link-local)")
            && metadata.contains("--allow-egress"),
        "{metadata}"
    );
    let loopback = message_when(&bundles, "loopback", |m| m.contains("refused")).await;
    let address = mirror.trim_start_matches("http://");
    let ip = address.split(':').next().unwrap();
    assert!(
        loopback.contains(&format!("refused to connect to {ip} (loopback)"))
            && loopback.contains("--allow-egress 127.0.0.1/32"),
        "{loopback}"
    );
    for message in [&metadata, &loopback] {
        assert!(
            !message.contains("sha256") && !message.contains("bytes") && !message.contains("HTTP"),
            "a refused fetch shows something of an answer: {message}"
        );
    }
    assert_eq!(
        mirror_requests.load(Ordering::SeqCst),
        0,
        "the loopback server was fetched from without --allow-egress"
    );
    manager.kill();

    // With --allow-egress 127.0.0.0/8: loopback is fetched; the metadata address is not in the range; a
    // redirect from the allowed server to another origin is refused before it is followed.
    let _manager = ManagerProcess::start(
        env.kubeconfig_path(),
        &logs.path().join("allowed.log"),
        &["--leader-elect=false", "--allow-egress=127.0.0.0/8"],
    );
    apply(
        &client,
        &ns,
        &bundle("redirected", &format!("{mirror}/redirect")),
    )
    .await;
    let redirected = message_when(&bundles, "redirected", |m| m.contains("redirect")).await;
    assert!(
        redirected.contains(&format!("refused a redirect from {mirror} to {elsewhere}")),
        "{redirected}"
    );
    let loopback = message_when(&bundles, "loopback", |m| !m.contains("refused to connect")).await;
    assert!(
        mirror_requests.load(Ordering::SeqCst) >= 1,
        "the allowed loopback bundle was not fetched; its message: {loopback}"
    );
    let metadata = message_when(&bundles, "metadata", |m| m.contains("refused")).await;
    assert!(metadata.contains("169.254.169.254"), "{metadata}");
    assert_eq!(
        elsewhere_requests.load(Ordering::SeqCst),
        0,
        "a redirect reached another origin"
    );
}
