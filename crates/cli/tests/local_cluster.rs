//! The quickstart journey on the local provider: apply the sample, get a real workload cluster with kwok nodes,
//! scale it, delete it and find nothing left.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use slipway_api::Cluster;
use support::{apply_file, env, eventually, local_manager, wait_ready};

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

/// The cluster's join token as the management cluster keeps it: (id, secret, expiration).
async fn join_token(secrets: &Api<Secret>) -> (String, String, Timestamp) {
    let data = secrets
        .get("local-demo-bootstrap-token")
        .await
        .unwrap()
        .data
        .unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    (
        text("token-id"),
        text("token-secret"),
        text("expiration").parse().unwrap(),
    )
}

async fn set_join_token(secrets: &Api<Secret>, id: &str, secret: &str, expires: Timestamp) {
    let expires = Timestamp::from_second(expires.as_second()).unwrap();
    secrets
        .patch(
            "local-demo-bootstrap-token",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "stringData": {
                "token-id": id, "token-secret": secret, "expiration": expires.to_string()
            } })),
        )
        .await
        .unwrap();
}

async fn expiration_in_workload(secrets: &Api<Secret>, id: &str) -> Option<Timestamp> {
    let secret = secrets
        .get_opt(&format!("bootstrap-token-{id}"))
        .await
        .unwrap()?;
    let expiration = String::from_utf8(secret.data?["expiration"].0.clone()).ok()?;
    expiration.parse().ok()
}

async fn scale(client: &kube::Client, ns: &str, replicas: u32) {
    Api::<slipway_api::MachinePool>::namespaced(client.clone(), ns)
        .patch(
            "local-demo-workers",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "replicas": replicas } })),
        )
        .await
        .unwrap();
}

async fn wait_ready_nodes(nodes: &Api<Node>, count: usize) {
    eventually(
        &format!("{count} ready nodes"),
        Duration::from_secs(60),
        || async {
            let ready = ready_nodes(nodes).await?;
            if ready.len() == count {
                Ok(())
            } else {
                Err(format!("{} ready", ready.len()))
            }
        },
    )
    .await;
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
    let members: Vec<_> = std::fs::read_dir(dir.join("members"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(members.len(), 1, "{members:?}");
    assert!(
        members[0].join("etcd").is_dir(),
        "no etcd data in {}",
        members[0].display()
    );

    // The kubeconfig Secret reaches the workload cluster; its 3 machines are Ready kwok nodes.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let workload = support::workload_client(&client, &ns, "local-demo").await;
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

    // The join token is late in its life when the pool grows: it is extended (same token, new expiration) in
    // both clusters before the new workers get it.
    let workload_secrets: Api<Secret> = Api::namespaced(nodes.clone().into_client(), "kube-system");
    let token = join_token(&secrets).await;
    let soon = Timestamp::now() + SignedDuration::from_mins(2);
    set_join_token(&secrets, &token.0, &token.1, soon).await;
    scale(&client, &ns, 5).await;
    wait_ready_nodes(&nodes, 5).await;
    let extended = join_token(&secrets).await;
    assert_eq!(
        (&extended.0, &extended.1),
        (&token.0, &token.1),
        "extended, not replaced"
    );
    let floor = Timestamp::now() + SignedDuration::from_mins(12);
    assert!(extended.2 > floor, "expiration {} not extended", extended.2);
    let published = expiration_in_workload(&workload_secrets, &token.0).await;
    assert_eq!(
        published,
        Some(extended.2),
        "the workload cluster's token was not extended"
    );

    // An expired token is replaced by a new one, which the workload cluster learns before a worker joins with it
    // (the local provider lets a worker in only with a token the cluster's API accepts).
    let expired = Timestamp::now() - SignedDuration::from_mins(1);
    set_join_token(&secrets, "expird", "0123456789abcdef", expired).await;
    scale(&client, &ns, 6).await;
    wait_ready_nodes(&nodes, 6).await;
    let replaced = join_token(&secrets).await;
    assert_ne!(replaced.0, "expird");
    assert!(
        expiration_in_workload(&workload_secrets, &replaced.0)
            .await
            .is_some(),
        "the new token is not in the workload cluster"
    );
    scale(&client, &ns, 5).await;
    wait_ready_nodes(&nodes, 5).await;

    let pid_files = support::local_pid_files(&dir);
    assert_eq!(
        pid_files.len(),
        6,
        "one member's etcd, kube-apiserver, kube-controller-manager, kube-scheduler; kwok; HAProxy: {pid_files:?}"
    );
    let pids: Vec<u32> = pid_files.into_values().collect();
    Api::<Cluster>::namespaced(client.clone(), &ns)
        .delete("local-demo", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_deleted(&client, &ns, "local-demo", Duration::from_secs(60)).await;
    for pid in pids {
        let alive = support::alive(pid);
        assert!(!alive, "process {pid} outlived its cluster");
    }
    assert!(!dir.exists(), "{} not removed", dir.display());
    let left = secrets
        .list(&ListParams::default().labels("cluster.x-k8s.io/cluster-name=local-demo"))
        .await
        .unwrap();
    assert!(left.items.is_empty(), "Secrets left behind");
}
