//! The quickstart journey on the local provider: apply the sample, get a real workload cluster with kwok nodes,
//! scale it, delete it and find nothing left.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use slipway_api::Cluster;
use support::{apply_file, env, eventually, local_manager, wait_ready};

async fn workload_client(secrets: &Api<Secret>, name: &str) -> kube::Client {
    let secret = secrets.get(&format!("{name}-kubeconfig")).await.unwrap();
    let yaml = String::from_utf8(secret.data.unwrap()["value"].0.clone()).unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn ready_nodes(nodes: &Api<Node>) -> Result<Vec<Node>, String> {
    let all = nodes
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items;
    Ok(all
        .into_iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect())
}

#[tokio::test]
async fn sample_local_cluster_becomes_ready_scales_and_leaves_nothing_behind() {
    let env = env().await;
    let state = local_manager(env, Duration::from_secs(60));
    let ns = env.create_namespace("local").await;
    let client = env.client().await;

    let started = Instant::now();
    apply_file(
        &client,
        &ns,
        &support::repo_path("config/samples/local-cluster.yaml"),
    )
    .await;
    wait_ready(&client, &ns, "local-demo", Duration::from_secs(90)).await;
    println!(
        "local-demo: apply to Ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let dir = state.join(&ns).join("local-demo");
    assert!(
        dir.join("etcd").is_dir(),
        "no etcd data in {}",
        dir.display()
    );

    // The kubeconfig Secret reaches the workload cluster; its 3 machines are Ready kwok nodes.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let workload = workload_client(&secrets, "local-demo").await;
    let nodes: Api<Node> = Api::all(workload);
    let ready = eventually("3 ready nodes", Duration::from_secs(30), || async {
        let ready = ready_nodes(&nodes).await?;
        if ready.len() == 3 {
            Ok(ready)
        } else {
            Err(format!("{} ready", ready.len()))
        }
    })
    .await;
    for node in &ready {
        let id = node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .unwrap_or_default();
        assert!(
            id.starts_with(&format!("local://{ns}/local-demo/local-demo-workers-")),
            "{id}"
        );
    }

    let pools: Api<slipway_api::MachinePool> = Api::namespaced(client.clone(), &ns);
    pools
        .patch(
            "local-demo-workers",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "replicas": 5 } })),
        )
        .await
        .unwrap();
    eventually("5 ready nodes", Duration::from_secs(60), || async {
        let ready = ready_nodes(&nodes).await?;
        if ready.len() == 5 {
            Ok(())
        } else {
            Err(format!("{} ready", ready.len()))
        }
    })
    .await;

    let pids: Vec<u32> = std::fs::read_dir(dir.join("run"))
        .unwrap()
        .flatten()
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        pids.len(),
        5,
        "etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok"
    );
    Api::<Cluster>::namespaced(client.clone(), &ns)
        .delete("local-demo", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_deleted(&client, &ns, "local-demo", Duration::from_secs(60)).await;
    for pid in pids {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        });
        assert!(!alive, "process {pid} outlived its cluster");
    }
    assert!(!dir.exists(), "{} not removed", dir.display());
    let left = secrets
        .list(&ListParams::default().labels("cluster.x-k8s.io/cluster-name=local-demo"))
        .await
        .unwrap();
    assert!(left.items.is_empty(), "Secrets left behind");
}
