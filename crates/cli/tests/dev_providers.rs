//! A manager started as it is deployed runs no development provider: a tenant's `sim` or `local` Cluster is
//! refused with a condition, not run on the manager's host. (Its own test binary: this manager must be the only one
//! on its apiserver.)

mod support;

use std::time::Duration;

use kube::api::Api;
use slipway_api::Cluster;
use support::{ManagerProcess, apply, env, eventually};

#[tokio::test]
async fn development_providers_are_off_unless_the_manager_enables_them() {
    let env = env().await;
    let ns = env.create_namespace("devproviders").await;
    let client = env.client().await;
    let logs = tempfile::tempdir().unwrap();
    let _manager = ManagerProcess::start_as_deployed(
        env.kubeconfig_path(),
        &logs.path().join("manager.log"),
        &["--leader-elect=false"],
    );
    apply(&client, &ns, &support::sim_cluster("dev", 1, 0, "{}")).await;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
    let message = eventually(
        "Ready=False ProviderNotRegistered",
        Duration::from_secs(30),
        || async {
            let cluster = clusters.get("dev").await.map_err(|e| e.to_string())?;
            let conditions = cluster.status.map(|s| s.conditions).unwrap_or_default();
            conditions
                .iter()
                .find(|c| c.type_ == "Ready" && c.reason == "ProviderNotRegistered")
                .map(|c| c.message.clone())
                .ok_or_else(|| support::condition_summary(&conditions))
        },
    )
    .await;
    assert!(message.contains("\"sim\""), "{message}");
    assert!(message.contains("[\"aws\", \"baremetal\"]"), "{message}");
    // The Cluster stays: deleting it needs its provider as much as creating it does (without it the manager cannot
    // know what machines exist), and this manager goes with the test.
}
