//! The whole quickstart journey: a local cluster with the three base add-ons, served from a loopback URL with their
//! sha256, applied in order, kept in shape when someone deletes part of them.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams};
use sha2::{Digest, Sha256};
use slipway_api::AddonBundle;
use support::{apply_file, env, eventually, local_manager, wait_ready};

fn fixture(path: &str) -> String {
    let full = format!(
        "{}/../../../shared/fixtures/addons/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// Serves the upstream manifests on a loopback port, as a release server would.
async fn serve_fixtures() -> String {
    let app = axum::Router::new()
        .route(
            "/flannel/kube-flannel.yml",
            axum::routing::get(|| async { fixture("flannel/v0.28.9/kube-flannel.yml") }),
        )
        .route(
            "/cert-manager/cert-manager.yaml",
            axum::routing::get(|| async { fixture("cert-manager/v1.19.4/cert-manager.yaml") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn bundles(base: &str) -> String {
    let external_dns = [
        "external-dns/v0.22.0/external-dns-serviceaccount.yaml",
        "external-dns/v0.22.0/external-dns-clusterrole.yaml",
        "external-dns/v0.22.0/external-dns-clusterrolebinding.yaml",
        "external-dns/v0.22.0/external-dns-deployment.yaml",
    ]
    .map(fixture)
    .join("\n---\n");
    let indented: String = external_dns
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    format!(
        r#"apiVersion: slipway.dev/v1alpha1
kind: AddonBundle
metadata:
  name: cni
spec:
  order: 10
  source:
    url:
      url: {base}/flannel/kube-flannel.yml
      sha256: {flannel}
---
apiVersion: slipway.dev/v1alpha1
kind: AddonBundle
metadata:
  name: cert-manager
spec:
  order: 20
  source:
    url:
      url: {base}/cert-manager/cert-manager.yaml
      sha256: {cert_manager}
---
apiVersion: slipway.dev/v1alpha1
kind: AddonBundle
metadata:
  name: external-dns
spec:
  order: 30
  source:
    inline: |
{indented}"#,
        flannel = sha256(&fixture("flannel/v0.28.9/kube-flannel.yml")),
        cert_manager = sha256(&fixture("cert-manager/v1.19.4/cert-manager.yaml")),
    )
}

async fn available(deployments: &Api<Deployment>, name: &str) -> Result<(), String> {
    let d = deployments
        .get(name)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let ok = d
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True"));
    if ok {
        Ok(())
    } else {
        Err(format!("{name} not Available"))
    }
}

#[tokio::test]
async fn local_cluster_with_base_addons_becomes_ready_and_repairs_drift() {
    let env = env().await;
    local_manager(env, Duration::from_secs(3));
    let ns = env.create_namespace("journey").await;
    let client = env.client().await;
    let base = serve_fixtures().await;

    let started = Instant::now();
    support::apply(&client, &ns, &bundles(&base)).await;
    apply_file(
        &client,
        &ns,
        &support::repo_path("config/samples/local-cluster.yaml"),
    )
    .await;
    let cluster = wait_ready(&client, &ns, "local-demo", Duration::from_secs(180)).await;
    println!(
        "local-demo with flannel, cert-manager and external-dns: apply to Ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let addons = slipway_api::conditions::find(&cluster.status.unwrap().conditions, "AddonsReady")
        .cloned()
        .unwrap();
    assert_eq!(
        (addons.status.as_str(), addons.reason.as_str()),
        ("True", "Ready"),
        "{addons:?}"
    );

    let bundles: Api<AddonBundle> = Api::namespaced(client.clone(), &ns);
    for name in ["cni", "cert-manager", "external-dns"] {
        let status = bundles.get(name).await.unwrap().status.unwrap();
        let entry = &status.clusters[0];
        assert_eq!(entry.cluster, "local-demo");
        assert!(entry.ready && entry.revision.is_some(), "{name}: {entry:?}");
    }

    let workload = support::workload_client(&client, &ns, "local-demo").await;

    let flannel = Api::<DaemonSet>::namespaced(workload.clone(), "kube-flannel")
        .get("kube-flannel-ds")
        .await
        .unwrap();
    let flannel = flannel.status.unwrap();
    assert_eq!(
        (flannel.desired_number_scheduled, flannel.number_ready),
        (3, 3)
    );
    let cert_manager: Api<Deployment> = Api::namespaced(workload.clone(), "cert-manager");
    for name in [
        "cert-manager",
        "cert-manager-cainjector",
        "cert-manager-webhook",
    ] {
        available(&cert_manager, name).await.unwrap();
    }
    let crds = Api::<CustomResourceDefinition>::all(workload.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let cert_manager_crds = crds
        .items
        .iter()
        .filter(|c| c.spec.group == "cert-manager.io" || c.spec.group == "acme.cert-manager.io")
        .count();
    assert_eq!(cert_manager_crds, 6);
    available(
        &Api::namespaced(workload.clone(), "default"),
        "external-dns",
    )
    .await
    .unwrap();

    // Someone deletes cert-manager's webhook in the workload cluster: the next resync brings it back.
    cert_manager
        .delete("cert-manager-webhook", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the webhook Deployment restored",
        Duration::from_secs(60),
        || async {
            let restored = cert_manager
                .get_opt("cert-manager-webhook")
                .await
                .map_err(|e| e.to_string())?;
            match restored {
                Some(d) if d.metadata.deletion_timestamp.is_none() => Ok(()),
                _ => Err("not yet".to_string()),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn default_bundles_are_accepted_and_pinned_to_the_upstream_manifests() {
    let env = env().await;
    let ns = env.create_namespace("defaults").await;
    let client = env.client().await;
    let fixtures = [
        ("kube-flannel.yml", "flannel/v0.28.9/kube-flannel.yml"),
        (
            "cert-manager.yaml",
            "cert-manager/v1.19.4/cert-manager.yaml",
        ),
        (
            "external-dns-serviceaccount.yaml",
            "external-dns/v0.22.0/external-dns-serviceaccount.yaml",
        ),
        (
            "external-dns-clusterrole.yaml",
            "external-dns/v0.22.0/external-dns-clusterrole.yaml",
        ),
        (
            "external-dns-clusterrolebinding.yaml",
            "external-dns/v0.22.0/external-dns-clusterrolebinding.yaml",
        ),
        (
            "external-dns-deployment.yaml",
            "external-dns/v0.22.0/external-dns-deployment.yaml",
        ),
    ];
    let mut pinned = 0;
    for file in ["flannel.yaml", "cert-manager.yaml", "external-dns.yaml"] {
        apply_file(
            &client,
            &ns,
            &support::repo_path(&format!("config/addons/{file}")),
        )
        .await;
    }
    for bundle in Api::<AddonBundle>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        let url = bundle
            .spec
            .source
            .url
            .clone()
            .expect("default bundles come from a release URL");
        let (_, fixture_path) = fixtures
            .iter()
            .find(|(name, _)| url.url.ends_with(name))
            .unwrap_or_else(|| panic!("no fixture for {}", url.url));
        assert_eq!(
            url.sha256,
            sha256(&fixture(fixture_path)),
            "{} is not pinned to the upstream file",
            url.url
        );
        pinned += 1;
    }
    assert_eq!(pinned, 6);
}

fn config_map_bundle(name: &str, mode: &str, made: &str) -> String {
    format!(
        r#"apiVersion: slipway.dev/v1alpha1
kind: AddonBundle
metadata:
  name: {name}
spec:
  mode: {mode}
  source:
    inline: |
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: {name}
        namespace: default
      data:
        made: {made}
"#
    )
}

#[tokio::test]
async fn apply_once_bundles_are_left_alone_after_applying_until_their_revision_changes() {
    let env = env().await;
    local_manager(env, Duration::from_secs(3));
    let ns = env.create_namespace("once").await;
    let client = env.client().await;
    let cluster = r#"apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata:
  name: once
spec:
  kubernetes:
    version: v1.37.2
  controlPlane:
    replicas: 1
  infrastructure:
    local: {}
"#;
    support::apply(&client, &ns, cluster).await;
    support::apply(
        &client,
        &ns,
        &config_map_bundle("kept", "Reconcile", "first"),
    )
    .await;
    support::apply(
        &client,
        &ns,
        &config_map_bundle("left", "ApplyOnce", "first"),
    )
    .await;
    wait_ready(&client, &ns, "once", Duration::from_secs(120)).await;

    let workload = support::workload_client(&client, &ns, "once").await;
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(workload, "default");
    for name in ["kept", "left"] {
        config_maps
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("{name} was applied: {e}"));
    }

    // A resync runs (the Reconcile bundle comes back)...
    eventually(
        "the Reconcile bundle's ConfigMap restored",
        Duration::from_secs(60),
        || async {
            match config_maps
                .get_opt("kept")
                .await
                .map_err(|e| e.to_string())?
            {
                Some(_) => Ok(()),
                None => Err("not yet".to_string()),
            }
        },
    )
    .await;
    // ...and another one after it, yet the ApplyOnce bundle's object stays deleted: its new owner decided.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        config_maps.get_opt("left").await.unwrap().is_none(),
        "an ApplyOnce bundle repaired drift"
    );

    // A new revision of the ApplyOnce bundle is applied once more.
    support::apply(
        &client,
        &ns,
        &config_map_bundle("left", "ApplyOnce", "second"),
    )
    .await;
    let applied = eventually(
        "the new revision applied",
        Duration::from_secs(60),
        || async {
            config_maps
                .get_opt("left")
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await;
    assert_eq!(applied.data.unwrap()["made"], "second");
}
