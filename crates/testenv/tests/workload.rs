//! The workload flavour schedules pods onto kwok nodes, and kwok runs them: a Deployment becomes Available.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use slipway_testenv::TestEnv;

#[tokio::test]
async fn two_replica_deployment_becomes_available_on_kwok_nodes() {
    let env = TestEnv::shared_workload().await;
    let ns = env.create_namespace("deploy").await;
    let client = env.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);

    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "nginx:1.27" }] }
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    let available = await_condition(
        deployments.clone(),
        "web",
        conditions::is_deployment_completed(),
    );
    tokio::time::timeout(Duration::from_secs(90), available)
        .await
        .expect("Deployment complete within 90s")
        .unwrap();
    let web = deployments.get("web").await.unwrap();
    let status = web.status.unwrap();
    assert_eq!(status.available_replicas, Some(2));
    let available_condition = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Available"))
        .expect("an Available condition");
    assert_eq!(available_condition.status.as_deref(), Some("True"));

    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let pods = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 2);
    for pod in pods {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        assert!(node.starts_with("kwok-node-"), "pod scheduled to {node:?}");
        assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    }
}
