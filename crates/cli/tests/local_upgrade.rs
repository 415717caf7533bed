//! An upgrade across two real Kubernetes releases on the local provider: a cluster of three control-plane members
//! and a pool of three at v1.36.3 moves to v1.37.2. Members are replaced one at a time (a new one joins before an
//! old one leaves), workers only once every member runs the new version, and the workload cluster's data stays.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use slipway_api::Cluster;
use support::{apply, env, eventually, local_manager, wait_ready};

const FROM: &str = "v1.36.3";
const TO: &str = "v1.37.2";

fn cluster_yaml() -> String {
    format!(
        r#"apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata:
  name: up
spec:
  kubernetes:
    version: {FROM}
  controlPlane:
    replicas: 3
  infrastructure:
    local: {{}}
---
apiVersion: slipway.dev/v1alpha1
kind: MachinePool
metadata:
  name: up-workers
spec:
  clusterName: up
  replicas: 3
"#
    )
}

/// Each member's apiserver port, from the member records the provider keeps.
fn member_ports(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir.join("members")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let record: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path().join("member.json")).ok()?).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                record["ports"]["apiserver"].as_u64()?,
            ))
        })
        .collect()
}

/// What each member's own apiserver says: (ready, gitVersion), unauthenticated as `/readyz` and `/version` allow.
async fn member_state(http: &reqwest::Client, port: u64) -> (bool, Option<String>) {
    let get = |path: &'static str| {
        http.get(format!("https://127.0.0.1:{port}{path}"))
            .timeout(Duration::from_secs(2))
            .send()
    };
    let ready = match get("/readyz").await {
        Ok(response) => response.text().await.is_ok_and(|body| body.trim() == "ok"),
        Err(_) => false,
    };
    let version = match get("/version").await {
        Ok(response) => response
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["gitVersion"].as_str().map(str::to_string)),
        Err(_) => None,
    };
    (ready, version)
}

/// What the poller saw while the upgrade ran.
#[derive(Default)]
struct Seen {
    fewest_ready_members: Option<usize>,
    /// When every member (three of them) first reported the new version.
    all_members_upgraded: Option<Instant>,
    /// When the worker Nodes first differed from those before the upgrade.
    first_worker_change: Option<Instant>,
}

async fn node_names(nodes: &Api<Node>) -> Option<BTreeSet<String>> {
    let list = nodes.list(&ListParams::default()).await.ok()?;
    Some(
        list.items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect(),
    )
}

#[tokio::test]
async fn three_members_and_a_pool_upgrade_one_minor_keeping_data_and_quorum() {
    let env = env().await;
    let state: &PathBuf = local_manager(env, Duration::from_secs(60));
    let ns = env.create_namespace("upgrade").await;
    let client = env.client().await;
    apply(&client, &ns, &cluster_yaml()).await;
    wait_ready(&client, &ns, "up", Duration::from_secs(300)).await;
    let dir = state.join(&ns).join("up");
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
    let status = clusters.get("up").await.unwrap().status.unwrap();
    assert_eq!(status.version.as_deref(), Some(FROM));

    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    for (member, port) in member_ports(&dir) {
        assert_eq!(
            member_state(&http, port).await.1.as_deref(),
            Some(FROM),
            "{member} before the upgrade"
        );
    }

    // Data written before the upgrade.
    let workload = support::workload_client(&client, &ns, "up").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(workload.clone(), "default");
    config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("before-upgrade".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(workload.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] }
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(workload.clone());
    let workers_before = node_names(&nodes).await.unwrap();
    assert_eq!(workers_before.len(), 3, "{workers_before:?}");

    // The poller: ready members, their versions, and the worker Nodes, every 200 ms.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let polling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poller = {
        let (seen, polling, dir, http, nodes, workers_before) = (
            seen.clone(),
            polling.clone(),
            dir.clone(),
            http.clone(),
            nodes.clone(),
            workers_before.clone(),
        );
        tokio::spawn(async move {
            while polling.load(std::sync::atomic::Ordering::SeqCst) {
                let mut ready = 0;
                let mut versions = Vec::new();
                for (_, port) in member_ports(&dir) {
                    let (is_ready, version) = member_state(&http, port).await;
                    ready += usize::from(is_ready);
                    versions.push(version);
                }
                let workers = node_names(&nodes).await;
                {
                    let now = Instant::now();
                    let mut seen = seen.lock().unwrap();
                    seen.fewest_ready_members =
                        Some(seen.fewest_ready_members.map_or(ready, |f| f.min(ready)));
                    if seen.all_members_upgraded.is_none()
                        && versions.len() == 3
                        && versions.iter().all(|v| v.as_deref() == Some(TO))
                    {
                        seen.all_members_upgraded = Some(now);
                    }
                    if seen.first_worker_change.is_none()
                        && workers.is_some_and(|w| w != workers_before)
                    {
                        seen.first_worker_change = Some(now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let started = Instant::now();
    clusters
        .patch(
            "up",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "kubernetes": { "version": TO } } })),
        )
        .await
        .unwrap();
    eventually(
        "every member and every worker replaced",
        Duration::from_secs(600),
        || async {
            let status = clusters
                .get("up")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            let workers = node_names(&nodes).await.unwrap_or_default();
            let replaced = workers.len() == 3 && workers.is_disjoint(&workers_before);
            (status.version.as_deref() == Some(TO) && replaced)
                .then_some(())
                .ok_or(format!(
                    "status.version {:?}, workers {workers:?}",
                    status.version
                ))
        },
    )
    .await;
    wait_ready(&client, &ns, "up", Duration::from_secs(120)).await;
    println!(
        "upgrade {FROM} → {TO} (3 members, 3 workers): {:.1}s",
        started.elapsed().as_secs_f64()
    );
    polling.store(false, std::sync::atomic::Ordering::SeqCst);
    poller.await.unwrap();

    let members = member_ports(&dir);
    assert_eq!(members.len(), 3, "{members:?}");
    for (member, port) in &members {
        assert_eq!(
            member_state(&http, *port).await.1.as_deref(),
            Some(TO),
            "{member} after the upgrade"
        );
    }
    assert!(
        config_maps
            .get_opt("before-upgrade")
            .await
            .unwrap()
            .is_some()
    );
    assert!(deployments.get_opt("web").await.unwrap().is_some());

    let seen = seen.lock().unwrap();
    let fewest = seen.fewest_ready_members.unwrap();
    assert!(
        fewest >= 2,
        "only {fewest} members answered /readyz at one point"
    );
    let (Some(upgraded), Some(changed)) = (seen.all_members_upgraded, seen.first_worker_change)
    else {
        panic!("the poller saw no upgraded control plane or no worker change");
    };
    assert!(
        changed >= upgraded,
        "a worker changed {:.1}s before the last member ran {TO}",
        (upgraded - changed).as_secs_f64()
    );
}
