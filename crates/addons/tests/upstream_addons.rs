//! Real upstream add-on manifests (flannel, cert-manager, external-dns) applied to a real apiserver with
//! controller-manager, scheduler and kwok nodes, until their workloads are really ready.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::Api;
use slipway_addons::{
    ApplyOptions, ObjectRef, apply, parse, readiness, render, wait_for_api, wait_ready,
};
use slipway_testenv::TestEnv;

const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// An upstream manifest at its pinned version (downloaded and sha256-checked, or from SLIPWAY_ADDONS_MIRROR).
fn fixture(relative: &str) -> String {
    slipway_testenv::addon_manifest(relative)
}

async fn client() -> kube::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = TestEnv::shared_workload().await.client().await;
    wait_for_api(&client, Duration::from_secs(30))
        .await
        .unwrap();
    client
}

fn count(objects: &[ObjectRef], kind: &str) -> usize {
    objects.iter().filter(|o| o.kind == kind).count()
}

#[tokio::test]
async fn flannel_daemon_set_becomes_ready_on_every_kwok_node() {
    let client = client().await;
    // No `${…}` in the manifest: rendering with no values leaves it as it is.
    let text = fixture("flannel/v0.28.9/kube-flannel.yml");
    let rendered = render(&text, &BTreeMap::new()).unwrap();
    assert_eq!(rendered, text);
    let objects = parse(&rendered).unwrap();
    assert_eq!(objects.len(), 6);

    let started = Instant::now();
    let applied = apply(&client, &objects, &ApplyOptions::default())
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let applied_after = started.elapsed();
    wait_ready(&client, &applied, READY_TIMEOUT).await.unwrap();
    eprintln!(
        "flannel: applied {} objects in {applied_after:?}, ready after {:?}",
        applied.len(),
        started.elapsed()
    );

    let daemon_set = Api::<DaemonSet>::namespaced(client, "kube-flannel")
        .get("kube-flannel-ds")
        .await
        .unwrap();
    let status = daemon_set.status.unwrap();
    assert_eq!(status.desired_number_scheduled, 3, "one pod per kwok node");
    assert_eq!(status.number_ready, 3);
}

#[tokio::test]
async fn cert_manager_crds_become_established_and_its_deployments_available() {
    let client = client().await;
    // The manifest has `$` in regular expressions and `$(POD_NAMESPACE)` in arguments: render must keep them.
    let text = fixture("cert-manager/v1.19.4/cert-manager.yaml");
    let rendered = render(
        &text,
        &BTreeMap::from([("clusterName".to_string(), "unused".to_string())]),
    )
    .unwrap();
    assert_eq!(rendered, text);

    let parse_started = Instant::now();
    let objects = parse(&rendered).unwrap();
    let parse_time = parse_started.elapsed();
    assert_eq!(objects.len(), 49);

    let started = Instant::now();
    let report = apply(&client, &objects, &ApplyOptions::default())
        .await
        .unwrap();
    let applied_after = started.elapsed();
    let applied = report.into_result().unwrap();
    assert_eq!(applied.len(), 49);
    assert_eq!(count(&applied, "CustomResourceDefinition"), 6);
    assert_eq!(count(&applied, "Deployment"), 3);
    // The kube-system leader-election Roles keep their namespace; nothing landed in `default`.
    assert!(
        applied
            .iter()
            .any(|o| o.kind == "Role" && o.namespace.as_deref() == Some("kube-system"))
    );
    assert!(
        applied
            .iter()
            .all(|o| o.namespace.as_deref() != Some("default"))
    );
    // Webhook configurations went last.
    let first_webhook = applied
        .iter()
        .position(|o| o.kind.ends_with("WebhookConfiguration"))
        .unwrap();
    assert_eq!(first_webhook, applied.len() - 2);

    wait_ready(&client, &applied, READY_TIMEOUT).await.unwrap();
    eprintln!(
        "cert-manager: parsed 49 objects in {parse_time:?}, applied in {applied_after:?}, ready after {:?}",
        started.elapsed()
    );
    assert!(readiness(&client, &applied).await.unwrap().is_empty());

    let deployments = Api::<Deployment>::namespaced(client.clone(), "cert-manager");
    for name in [
        "cert-manager",
        "cert-manager-cainjector",
        "cert-manager-webhook",
    ] {
        let deployment = deployments.get(name).await.unwrap();
        let available = deployment
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| {
                c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
            });
        assert!(available, "{name} Available");
    }

    // Applying the same bundle again is a no-op that still succeeds (webhooks are registered by now).
    let again = Instant::now();
    apply(&client, &objects, &ApplyOptions::default())
        .await
        .unwrap()
        .into_result()
        .unwrap();
    eprintln!("cert-manager: re-applied in {:?}", again.elapsed());
}

#[tokio::test]
async fn external_dns_kustomize_files_without_namespace_land_in_the_default_namespace() {
    let client = client().await;
    // The kustomize set names no namespace; its ClusterRoleBinding's subject is in `default`, so that is where the
    // ServiceAccount and Deployment must go for the binding to mean anything.
    let text = [
        "external-dns-serviceaccount.yaml",
        "external-dns-clusterrole.yaml",
        "external-dns-clusterrolebinding.yaml",
        "external-dns-deployment.yaml",
    ]
    .map(|file| fixture(&format!("external-dns/v0.22.0/{file}")))
    .join("\n---\n");
    let objects = parse(&text).unwrap();
    assert_eq!(objects.len(), 4);

    let options = ApplyOptions {
        default_namespace: "default".to_string(),
        ..ApplyOptions::default()
    };
    let applied = apply(&client, &objects, &options)
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let deployment = applied.iter().find(|o| o.kind == "Deployment").unwrap();
    assert_eq!(deployment.namespace.as_deref(), Some("default"));
    let cluster_role = applied.iter().find(|o| o.kind == "ClusterRole").unwrap();
    assert_eq!(cluster_role.namespace, None);

    wait_ready(&client, &applied, READY_TIMEOUT).await.unwrap();
}
