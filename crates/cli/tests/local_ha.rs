//! The HA sample on the local provider: `config/samples/local-ha-cluster.yaml` (three control-plane members) comes
//! up one member at a time as one etcd cluster of three behind HAProxy, shrinks to one member keeping its data, and
//! leaves nothing behind when deleted.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use slipway_api::Cluster;
use support::{apply_file, env, eventually, local_manager, wait_ready};

/// The members' directories, by machine name.
fn members(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("members"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The member names the cluster's etcd lists, asked through `member`'s etcd (v3 JSON gateway).
async fn etcd_members(dir: &Path, member: &str) -> Result<BTreeSet<String>, String> {
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("members").join(member).join("member.json"))
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let port = record["ports"]["etcd_client"].as_u64().unwrap_or(0);
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v3/cluster/member/list"))
        .body("{}")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    Ok(body["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| m["name"].as_str().unwrap_or_default().to_string())
        .collect())
}

#[tokio::test]
async fn ha_sample_joins_three_members_into_one_etcd_and_shrinks_to_one_keeping_data() {
    let env = env().await;
    let state = local_manager(env, Duration::from_secs(60));
    let ns = env.create_namespace("local-ha").await;
    let client = env.client().await;

    let started = Instant::now();
    apply_file(
        &client,
        &ns,
        &support::repo_path("config/samples/local-ha-cluster.yaml"),
    )
    .await;
    wait_ready(&client, &ns, "local-ha", Duration::from_secs(300)).await;
    println!(
        "local-ha (3 control-plane members, 3 workers): apply to Ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let dir = state.join(&ns).join("local-ha");
    let three = members(&dir);
    assert_eq!(three.len(), 3, "{three:?}");
    for member in &three {
        let listed = etcd_members(&dir, member).await.unwrap();
        assert_eq!(listed, three, "etcd as {member} sees it");
    }

    // The kubeconfig Secret's server is the load balancer; the cluster's data goes in through it.
    let workload = support::workload_client(&client, &ns, "local-ha").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(workload, "default");
    let keep = ConfigMap {
        metadata: ObjectMeta {
            name: Some("kept".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    config_maps
        .create(&PostParams::default(), &keep)
        .await
        .unwrap();

    // Down to one member: removed one at a time, each out of etcd before it stops.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
    clusters
        .patch(
            "local-ha",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "controlPlane": { "replicas": 1 } } })),
        )
        .await
        .unwrap();
    eventually("one member left", Duration::from_secs(180), || async {
        let left = members(&dir);
        if left.len() != 1 {
            return Err(format!("members {left:?}"));
        }
        let member = left.first().unwrap();
        let listed = etcd_members(&dir, member).await?;
        (listed == left)
            .then_some(())
            .ok_or(format!("etcd lists {listed:?}"))
    })
    .await;
    wait_ready(&client, &ns, "local-ha", Duration::from_secs(120)).await;
    eventually("the ConfigMap kept", Duration::from_secs(60), || async {
        match config_maps.get_opt("kept").await {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let pids: Vec<u32> = support::local_pid_files(&dir).into_values().collect();
    clusters
        .delete("local-ha", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_deleted(&client, &ns, "local-ha", Duration::from_secs(120)).await;
    for pid in pids {
        assert!(!support::alive(pid), "process {pid} outlived its cluster");
    }
    assert!(!dir.exists(), "{} not removed", dir.display());
}
