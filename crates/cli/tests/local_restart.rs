//! The quickstart journey across a manager restart: a `slipway manager` process with the local provider brings
//! the sample cluster to Ready, is killed with SIGKILL and started again, and the new one recreates nothing and
//! loses nothing: the same control-plane processes, the same Nodes, the same Secrets, the workload cluster's
//! objects still there; it scales the pool and finally deletes the cluster leaving nothing behind.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use slipway_api::Cluster;
use support::{ManagerProcess, alive, apply_file, env, eventually, wait_ready};

/// The cluster's processes by pid file: one member's four and the cluster's kwok and HAProxy.
fn pids(dir: &Path) -> BTreeMap<String, u32> {
    let pids = support::local_pid_files(dir);
    assert_eq!(pids.len(), 6, "{pids:?}");
    pids
}

/// Ready Nodes by name, with their UIDs: a recreated Node has a new UID.
async fn ready_nodes(nodes: &Api<Node>) -> Result<BTreeMap<String, String>, String> {
    let all = nodes
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(all
        .items
        .into_iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|n| {
            (
                n.metadata.name.unwrap_or_default(),
                n.metadata.uid.unwrap_or_default(),
            )
        })
        .collect())
}

/// The cluster's Secrets in the management cluster: name → (uid, data).
async fn cluster_secrets(
    secrets: &Api<Secret>,
) -> BTreeMap<String, (String, BTreeMap<String, ByteString>)> {
    secrets
        .list(&ListParams::default().labels("cluster.x-k8s.io/cluster-name=local-demo"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| {
            (
                s.metadata.name.unwrap_or_default(),
                (
                    s.metadata.uid.unwrap_or_default(),
                    s.data.unwrap_or_default(),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_restarted_manager_adopts_the_local_cluster_recreates_nothing_and_loses_nothing() {
    let env = env().await;
    let client = env.client().await;
    let ns = env.create_namespace("restart").await;
    let logs = tempfile::tempdir().unwrap();
    // Workload clusters outlive their manager on purpose; they must not outlive the test binary.
    let state = tempfile::tempdir().unwrap().keep();
    slipway_testenv::process::kill_pid_files_at_exit(&state);
    slipway_testenv::process::remove_dir_at_exit(&state);
    let state_arg = format!("--local-state-dir={}", state.display());
    let bin_arg = format!("--local-bin-dir={}", slipway_testenv::bin_dir().display());
    let args = ["--leader-elect=false", state_arg.as_str(), bin_arg.as_str()];

    let mut manager =
        ManagerProcess::start(env.kubeconfig_path(), &logs.path().join("first.log"), &args);
    apply_file(
        &client,
        &ns,
        &support::repo_path("config/samples/local-cluster.yaml"),
    )
    .await;
    wait_ready(&client, &ns, "local-demo", Duration::from_secs(120)).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let workload = support::workload_client(&client, &ns, "local-demo").await;
    let nodes: Api<Node> = Api::all(workload.clone());
    let before = eventually("3 ready nodes", Duration::from_secs(30), || async {
        let ready = ready_nodes(&nodes).await?;
        if ready.len() == 3 {
            Ok(ready)
        } else {
            Err(format!("{ready:?}"))
        }
    })
    .await;

    // The workers joined with the cluster's join token: the management cluster keeps it, the workload cluster
    // knows it.
    let token = secrets.get("local-demo-bootstrap-token").await.unwrap();
    let token_id = String::from_utf8(token.data.unwrap()["token-id"].0.clone()).unwrap();
    Api::<Secret>::namespaced(workload.clone(), "kube-system")
        .get(&format!("bootstrap-token-{token_id}"))
        .await
        .expect("the join token exists in the workload cluster");

    let dir = state.join(&ns).join("local-demo");
    let processes = pids(&dir);
    let kept_secrets = cluster_secrets(&secrets).await;
    assert!(
        kept_secrets.contains_key("local-demo-ca")
            && kept_secrets.contains_key("local-demo-kubeconfig"),
        "{:?}",
        kept_secrets.keys()
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(workload.clone(), "default");
    config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("survivor".into()),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(
                    "made".into(),
                    "before the restart".into(),
                )])),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // The manager dies without a chance to clean up, and a new one starts.
    manager.kill();
    let mut manager = ManagerProcess::start(
        env.kubeconfig_path(),
        &logs.path().join("second.log"),
        &args,
    );

    // The new manager works (it scales the pool)...
    Api::<slipway_api::MachinePool>::namespaced(client.clone(), &ns)
        .patch(
            "local-demo-workers",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "replicas": 5 } })),
        )
        .await
        .unwrap();
    let after = eventually("5 ready nodes", Duration::from_secs(60), || async {
        let ready = ready_nodes(&nodes).await?;
        if ready.len() == 5 {
            Ok(ready)
        } else {
            Err(format!("{ready:?}"))
        }
    })
    .await;
    wait_ready(&client, &ns, "local-demo", Duration::from_secs(60)).await;

    // ...and recreated nothing: the same processes, the same three Nodes (same UIDs), the same Secrets.
    assert_eq!(
        pids(&dir),
        processes,
        "control-plane processes were restarted"
    );
    for (name, uid) in &before {
        assert_eq!(after.get(name), Some(uid), "Node {name} was recreated");
    }
    let now = cluster_secrets(&secrets).await;
    for (name, kept) in &kept_secrets {
        assert_eq!(now.get(name), Some(kept), "Secret {name} was replaced");
    }
    // Nothing lost in the workload cluster.
    let survivor = config_maps.get("survivor").await.unwrap();
    assert_eq!(survivor.data.unwrap()["made"], "before the restart");

    // Deleting the cluster through the second manager leaves nothing behind.
    Api::<Cluster>::namespaced(client.clone(), &ns)
        .delete("local-demo", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_deleted(&client, &ns, "local-demo", Duration::from_secs(60)).await;
    for (component, pid) in processes {
        assert!(!alive(pid), "{component} ({pid}) outlived its cluster");
    }
    assert!(!dir.exists(), "{} not removed", dir.display());
    assert!(
        cluster_secrets(&secrets).await.is_empty(),
        "Secrets left behind"
    );
    manager.terminate();
}
