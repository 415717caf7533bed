//! Worker machines as kwok Nodes in the workload cluster.

use std::collections::BTreeMap;
use std::path::Path;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use slipway_api::MachinePhase;
use slipway_provider::{Deletion, Machine, ProviderError, Result};

const POOL_LABEL: &str = "slipway.dev/pool";
const TEMPLATE_HASH_LABEL: &str = "slipway.dev/template-hash";

pub(crate) fn unreachable(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::transient(
        "WorkloadApiUnavailable",
        format!("workload cluster API: {e}"),
    )
}

pub async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).map_err(unreachable)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(unreachable)?;
    kube::Client::try_from(config).map_err(unreachable)
}

fn to_machine(node: &Node) -> Machine {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let deleting = node.metadata.deletion_timestamp.is_some();
    Machine {
        name: node.metadata.name.clone().unwrap_or_default(),
        provider_id: node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .unwrap_or_default(),
        phase: if deleting {
            MachinePhase::Deleting
        } else if ready {
            MachinePhase::Running
        } else {
            MachinePhase::Provisioning
        },
        ready: ready && !deleting,
        template_hash: labels.get(TEMPLATE_HASH_LABEL).cloned().unwrap_or_default(),
        created_at: node
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or_else(Timestamp::now, |t| t.0),
        version: None,
    }
}

pub async fn list(
    client: &kube::Client,
    pool: &str,
    _provider_id: impl Fn(&str) -> String,
) -> Result<Vec<Machine>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let listed = nodes
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={pool}")))
        .await
        .map_err(unreachable)?;
    Ok(listed.items.iter().map(to_machine).collect())
}

/// The machine `name`, if its Node exists.
pub async fn get(client: &kube::Client, name: &str) -> Result<Option<Machine>> {
    let nodes: Api<Node> = Api::all(client.clone());
    Ok(nodes
        .get_opt(name)
        .await
        .map_err(unreachable)?
        .as_ref()
        .map(to_machine))
}

/// Registers the Node kwok will run; an existing Node of that name is the machine already made.
pub async fn create(
    client: &kube::Client,
    name: &str,
    pool: &str,
    template_hash: &str,
    provider_id: &str,
) -> Result<Machine> {
    let nodes: Api<Node> = Api::all(client.clone());
    let capacity: BTreeMap<String, Quantity> = [("cpu", "8"), ("memory", "32Gi"), ("pods", "110")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect();
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(BTreeMap::from([(
                "kwok.x-k8s.io/node".to_string(),
                "fake".to_string(),
            )])),
            labels: Some(BTreeMap::from([
                (POOL_LABEL.to_string(), pool.to_string()),
                (TEMPLATE_HASH_LABEL.to_string(), template_hash.to_string()),
                ("kubernetes.io/hostname".to_string(), name.to_string()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
                ("type".to_string(), "kwok".to_string()),
            ])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(provider_id.to_string()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            allocatable: Some(capacity.clone()),
            capacity: Some(capacity),
            ..Default::default()
        }),
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(created) => Ok(to_machine(&created)),
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            Ok(to_machine(&nodes.get(name).await.map_err(unreachable)?))
        }
        Err(e) => Err(unreachable(e)),
    }
}

pub async fn delete(client: &kube::Client, name: &str) -> Result<Deletion> {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(Deletion::Done),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(Deletion::Done),
        Err(e) => Err(unreachable(e)),
    }
}
