//! Machines that know their Nodes, on the local provider (a real workload apiserver, kwok Nodes): every machine's
//! `nodeRef`, the pool's labels and taints on every Node and kept there, and a template change of labels and taints
//! that updates the Nodes in place without replacing a machine.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use slipway_api::MachinePool;
use support::{apply, env, eventually, local_manager, wait_ready};

const CLUSTER: &str = r#"
apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata: { name: labelled }
spec:
  kubernetes: { version: v1.37.2 }
  controlPlane: { replicas: 1 }
  infrastructure: { local: {} }
---
apiVersion: slipway.dev/v1alpha1
kind: MachinePool
metadata: { name: labelled-web }
spec:
  clusterName: labelled
  replicas: 3
  template:
    nodeLabels: { tier: web, node-role.kubernetes.io/web: "" }
    taints:
      - { key: dedicated, value: web, effect: NoSchedule }
"#;

/// The pool's Nodes in the workload cluster, by name.
async fn pool_nodes(nodes: &Api<Node>) -> Result<BTreeMap<String, Node>, String> {
    Ok(nodes
        .list(&ListParams::default().labels("slipway.dev/pool=labelled-web"))
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .map(|n| (n.metadata.name.clone().unwrap_or_default(), n))
        .collect())
}

fn labels(node: &Node) -> BTreeMap<String, String> {
    node.metadata.labels.clone().unwrap_or_default()
}

/// The Node's taints as (key, value, effect).
fn taints(node: &Node) -> BTreeSet<(String, String, String)> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.value.unwrap_or_default(), t.effect))
        .collect()
}

fn taint(key: &str, value: &str, effect: &str) -> (String, String, String) {
    (key.into(), value.into(), effect.into())
}

/// Waits until every Node of the pool (3 of them) satisfies `check`.
async fn every_node(nodes: &Api<Node>, what: &str, check: impl Fn(&Node) -> Result<(), String>) {
    eventually(what, Duration::from_secs(30), || async {
        let all = pool_nodes(nodes).await?;
        if all.len() != 3 {
            return Err(format!("{} Nodes", all.len()));
        }
        all.values().try_for_each(|node| {
            check(node).map_err(|e| format!("{}: {e}", node.metadata.name.clone().unwrap()))
        })
    })
    .await;
}

#[tokio::test]
async fn machines_know_their_nodes_and_keep_their_labels_and_taints_on_them() {
    let env = env().await;
    local_manager(env, Duration::from_secs(60));
    let ns = env.create_namespace("nodes").await;
    let client = env.client().await;
    apply(&client, &ns, CLUSTER).await;
    wait_ready(&client, &ns, "labelled", Duration::from_secs(90)).await;
    let workload = support::workload_client(&client, &ns, "labelled").await;
    let nodes: Api<Node> = Api::all(workload);
    let pools: Api<MachinePool> = Api::namespaced(client.clone(), &ns);

    // Every machine has its Node: found by provider ID, Ready, with the time it registered.
    let machines = eventually(
        "a Ready nodeRef for every machine",
        Duration::from_secs(30),
        || async {
            let pool = pools.get("labelled-web").await.map_err(|e| e.to_string())?;
            let machines = pool.status.unwrap_or_default().machines;
            let with_node = machines
                .iter()
                .filter(|m| {
                    m.node_ref
                        .as_ref()
                        .is_some_and(|n| n.ready && n.created.is_some())
                })
                .count();
            if machines.len() == 3 && with_node == 3 {
                Ok(machines)
            } else {
                Err(format!("{machines:?}"))
            }
        },
    )
    .await;
    let all = pool_nodes(&nodes).await.unwrap();
    for machine in &machines {
        let node_ref = machine.node_ref.as_ref().unwrap();
        let node = &all[&node_ref.name];
        assert_eq!(
            node.spec.as_ref().unwrap().provider_id,
            machine.provider_id,
            "the nodeRef of {} names the Node with its provider ID",
            machine.name
        );
    }
    let machine_names: BTreeSet<String> = machines.iter().map(|m| m.name.clone()).collect();

    // The template's labels and taints are on every Node, next to what the Node had.
    every_node(&nodes, "labels and taints on every Node", |node| {
        let labels = labels(node);
        let wanted = [
            ("tier", "web"),
            ("node-role.kubernetes.io/web", ""),
            ("slipway.dev/pool", "labelled-web"),
        ];
        for (key, value) in wanted {
            if labels.get(key).map(String::as_str) != Some(value) {
                return Err(format!("label {key} is {:?}", labels.get(key)));
            }
        }
        if !taints(node).contains(&taint("dedicated", "web", "NoSchedule")) {
            return Err(format!("taints {:?}", taints(node)));
        }
        Ok(())
    })
    .await;

    // A label and a taint removed by hand come back; a label someone else added stays.
    let first = machines[0].node_ref.as_ref().unwrap().name.clone();
    nodes
        .patch(
            &first,
            &PatchParams::default(),
            &Patch::Merge(&json!({
                "metadata": { "labels": { "tier": null, "team": "blue" } },
                "spec": { "taints": [] }
            })),
        )
        .await
        .unwrap();
    eventually(
        "the removed label and taint back",
        Duration::from_secs(30),
        || async {
            let node = nodes.get(&first).await.map_err(|e| e.to_string())?;
            let labels = labels(&node);
            if labels.get("tier").map(String::as_str) == Some("web")
                && labels.get("team").map(String::as_str) == Some("blue")
                && taints(&node).contains(&taint("dedicated", "web", "NoSchedule"))
            {
                Ok(())
            } else {
                Err(format!("labels {labels:?}, taints {:?}", taints(&node)))
            }
        },
    )
    .await;

    // New labels and taints in the template: the Nodes follow in place, the old ones Slipway put there go, and no
    // machine is replaced.
    let generation_before = pools.get("labelled-web").await.unwrap().metadata.generation;
    pools
        .patch(
            "labelled-web",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "template": {
                // A merge patch: null removes a key from the map.
                "nodeLabels": { "tier": "api", "zone": "a", "node-role.kubernetes.io/web": null },
                "taints": [ { "key": "dedicated", "value": "api", "effect": "NoExecute" } ]
            } } })),
        )
        .await
        .unwrap();
    every_node(&nodes, "the new labels and taints on every Node", |node| {
        let labels = labels(node);
        if labels.get("tier").map(String::as_str) != Some("api")
            || labels.get("zone").map(String::as_str) != Some("a")
        {
            return Err(format!("labels {labels:?}"));
        }
        if labels.contains_key("node-role.kubernetes.io/web") {
            return Err(format!(
                "the label that left the template is still there: {labels:?}, annotations {:?}",
                node.metadata.annotations
            ));
        }
        let taints = taints(node);
        if taints.contains(&taint("dedicated", "web", "NoSchedule"))
            || !taints.contains(&taint("dedicated", "api", "NoExecute"))
        {
            return Err(format!("taints {taints:?}"));
        }
        Ok(())
    })
    .await;
    assert_eq!(
        labels(&nodes.get(&first).await.unwrap())
            .get("team")
            .map(String::as_str),
        Some("blue"),
        "a label Slipway never put there is not Slipway's to remove"
    );
    let pool = pools.get("labelled-web").await.unwrap();
    assert!(pool.metadata.generation > generation_before);
    let status = pool.status.unwrap();
    let now: BTreeSet<String> = status.machines.iter().map(|m| m.name.clone()).collect();
    assert_eq!(now, machine_names, "no machine was replaced");
    assert_eq!(status.updated_replicas, 3);

    // A steady pool costs no writes: 20 s of Node changes the pool does not act on (someone else's annotation, a
    // kubelet's heartbeat) leave the pool, the Cluster and the Nodes' labels as they were.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let clusters: Api<slipway_api::Cluster> = Api::namespaced(client.clone(), &ns);
    let versions = || async {
        (
            pools
                .get("labelled-web")
                .await
                .unwrap()
                .metadata
                .resource_version,
            clusters
                .get("labelled")
                .await
                .unwrap()
                .metadata
                .resource_version,
        )
    };
    let before = versions().await;
    let labels_before: BTreeMap<String, BTreeMap<String, String>> = pool_nodes(&nodes)
        .await
        .unwrap()
        .iter()
        .map(|(name, node)| (name.clone(), labels(node)))
        .collect();
    for round in 0..10 {
        for name in labels_before.keys() {
            nodes
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({ "metadata": { "annotations": { "example.com/poke": round.to_string() } } })),
                )
                .await
                .unwrap();
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            nodes
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Strategic(json!({ "status": { "conditions": [{
                        "type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now
                    }] } })),
                )
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(
        versions().await,
        before,
        "the pool or the Cluster was written while nothing they act on changed"
    );
    let labels_after: BTreeMap<String, BTreeMap<String, String>> = pool_nodes(&nodes)
        .await
        .unwrap()
        .iter()
        .map(|(name, node)| (name.clone(), labels(node)))
        .collect();
    assert_eq!(labels_after, labels_before);

    // `slipway describe cluster` shows each machine's Node under it.
    let kubeconfig = env.kubeconfig_path();
    let out = support::stdout_of(&support::slipway_cli(
        Some(kubeconfig),
        &["describe", "cluster", "labelled", "-n", &ns],
    ));
    for machine in &status.machines {
        let node = &machine.node_ref.as_ref().unwrap().name;
        let row = out
            .lines()
            .find(|line| line.contains(&format!("Node/{node} ")))
            .unwrap_or_else(|| panic!("no row for Node {node} in:\n{out}"));
        assert!(row.contains("True"), "{row}");
    }
}

const HEALING: &str = r#"
apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata: { name: healing }
spec:
  kubernetes: { version: v1.37.2 }
  controlPlane: { replicas: 1 }
  infrastructure: { local: {} }
---
apiVersion: slipway.dev/v1alpha1
kind: MachinePool
metadata: { name: healing-workers }
spec:
  clusterName: healing
  replicas: 5
  health: { unhealthyAfter: 5s, nodeStartupTimeout: 10m, maxUnhealthy: "40%" }
"#;

/// Makes the Node look as a Node whose kubelet stopped does: kwok stops managing it (it manages Nodes with its
/// annotation), and its Ready condition turns False.
async fn stop_kubelet(nodes: &Api<Node>, name: &str) {
    nodes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                &json!({ "metadata": { "annotations": { "kwok.x-k8s.io/node": null } } }),
            ),
        )
        .await
        .unwrap();
    set_ready(nodes, name, "False").await;
}

/// Gives the Node back to kwok, Ready again.
async fn start_kubelet(nodes: &Api<Node>, name: &str) {
    set_ready(nodes, name, "True").await;
    nodes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                &json!({ "metadata": { "annotations": { "kwok.x-k8s.io/node": "fake" } } }),
            ),
        )
        .await
        .unwrap();
}

async fn set_ready(nodes: &Api<Node>, name: &str, status: &str) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Strategic(json!({ "status": { "conditions": [{
                "type": "Ready", "status": status, "reason": "Test", "message": "set by the test",
                "lastHeartbeatTime": now, "lastTransitionTime": now
            }] } })),
        )
        .await
        .unwrap();
}

/// The pool's `RemediationBlocked` condition as (status, reason, message).
async fn remediation_blocked(pools: &Api<MachinePool>) -> Result<(String, String, String), String> {
    let pool = pools
        .get("healing-workers")
        .await
        .map_err(|e| e.to_string())?;
    let conditions = pool.status.unwrap_or_default().conditions;
    let c = slipway_api::conditions::find(&conditions, "RemediationBlocked")
        .ok_or("no RemediationBlocked condition yet")?;
    Ok((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Names and UIDs of the pool's Nodes that are Ready.
async fn ready_node_uids(nodes: &Api<Node>) -> BTreeMap<String, String> {
    nodes
        .list(&ListParams::default().labels("slipway.dev/pool=healing-workers"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|n| (n.metadata.name.unwrap(), n.metadata.uid.unwrap()))
        .collect()
}

#[tokio::test]
async fn a_node_not_ready_too_long_is_replaced_but_too_many_at_once_are_left_alone() {
    let env = env().await;
    local_manager(env, Duration::from_secs(60));
    let ns = env.create_namespace("healing").await;
    let client = env.client().await;
    apply(&client, &ns, HEALING).await;
    wait_ready(&client, &ns, "healing", Duration::from_secs(90)).await;
    let nodes: Api<Node> = Api::all(support::workload_client(&client, &ns, "healing").await);
    let pools: Api<MachinePool> = Api::namespaced(client.clone(), &ns);
    let healthy = eventually("5 Ready Nodes", Duration::from_secs(30), || async {
        let ready = ready_node_uids(&nodes).await;
        if ready.len() == 5 {
            Ok(ready)
        } else {
            Err(format!("{ready:?}"))
        }
    })
    .await;
    let names: Vec<String> = healthy.keys().cloned().collect();

    // Three of five Nodes stop at once: more than 40% (2), so nothing is replaced and the condition says why.
    for name in &names[..3] {
        stop_kubelet(&nodes, name).await;
    }
    let message = eventually("RemediationBlocked", Duration::from_secs(30), || async {
        match remediation_blocked(&pools).await? {
            (status, reason, message) if status == "True" && reason == "TooManyUnhealthy" => {
                Ok(message)
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        message
            .starts_with("3 machines are unhealthy, more than spec.health.maxUnhealthy allows (2)"),
        "{message}"
    );
    for name in &names[..3] {
        assert!(
            message.contains(&format!("its Node {name} has not been Ready")),
            "{message}"
        );
    }
    // Held: well past unhealthyAfter, every Node is still the one it was.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let all: BTreeMap<String, String> = nodes
        .list(&ListParams::default().labels("slipway.dev/pool=healing-workers"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| (n.metadata.name.unwrap(), n.metadata.uid.unwrap()))
        .collect();
    assert_eq!(
        all, healthy,
        "a machine was replaced while remediation was blocked"
    );

    // They come back: the condition clears, and nothing was replaced. They come back one by one, and with two of
    // them still unhealthy the pool would rightly replace one: the cluster is paused while they do.
    let clusters: Api<slipway_api::Cluster> = Api::namespaced(client.clone(), &ns);
    let pause = |paused: bool| {
        let clusters = clusters.clone();
        async move {
            clusters
                .patch(
                    "healing",
                    &PatchParams::default(),
                    &Patch::Merge(&json!({ "spec": { "paused": paused } })),
                )
                .await
                .unwrap();
        }
    };
    pause(true).await;
    // A pass that started before the pause finishes first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in &names[..3] {
        start_kubelet(&nodes, name).await;
    }
    pause(false).await;
    eventually(
        "RemediationBlocked cleared",
        Duration::from_secs(30),
        || async {
            match remediation_blocked(&pools).await? {
                (status, _, _) if status == "False" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(ready_node_uids(&nodes).await, healthy);

    // One Node stops: after unhealthyAfter its machine is replaced, and the pool is back to 5 Ready Nodes.
    let victim = names[4].clone();
    stop_kubelet(&nodes, &victim).await;
    let after = eventually(
        "the NotReady Node's machine replaced",
        Duration::from_secs(60),
        || async {
            let ready = ready_node_uids(&nodes).await;
            let victim_gone = !ready.values().any(|uid| uid == &healthy[&victim])
                && nodes
                    .get_opt(&victim)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none_or(|n| n.metadata.uid.as_ref() != Some(&healthy[&victim]));
            if ready.len() == 5 && victim_gone {
                Ok(ready)
            } else {
                Err(format!("{ready:?}"))
            }
        },
    )
    .await;
    for name in &names[..4] {
        assert_eq!(
            after.get(name),
            Some(&healthy[name]),
            "healthy Node {name} was replaced too"
        );
    }
    wait_ready(&client, &ns, "healing", Duration::from_secs(30)).await;
}

const DRAINING: &str = r#"
apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata: { name: draining }
spec:
  kubernetes: { version: v1.37.2 }
  controlPlane: { replicas: 1 }
  infrastructure: { local: {} }
---
apiVersion: slipway.dev/v1alpha1
kind: MachinePool
metadata: { name: draining-workers }
spec:
  clusterName: draining
  replicas: 2
  strategy: { maxSurge: 1, drainTimeout: 20s }
"#;

/// Two replicas, one per Node, and a budget that allows no disruption while both run.
const GUARDED_APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: { name: web, namespace: default }
spec:
  replicas: 2
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web } }
    spec:
      nodeSelector: { slipway.dev/pool: draining-workers }
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - { labelSelector: { matchLabels: { app: web } }, topologyKey: kubernetes.io/hostname }
      containers: [{ name: web, image: registry.invalid/web:1 }]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: { name: web, namespace: default }
spec:
  minAvailable: 2
  selector: { matchLabels: { app: web } }
"#;

async fn scale_draining(pools: &Api<MachinePool>, replicas: i32) {
    pools
        .patch(
            "draining-workers",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "replicas": replicas } })),
        )
        .await
        .unwrap();
}

/// The pool's `Draining` condition as (status, message).
async fn draining_condition(pools: &Api<MachinePool>) -> Result<(String, String), String> {
    let pool = pools
        .get("draining-workers")
        .await
        .map_err(|e| e.to_string())?;
    let conditions = pool.status.unwrap_or_default().conditions;
    let c = slipway_api::conditions::find(&conditions, "Draining")
        .ok_or("no Draining condition yet")?;
    Ok((c.status.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_node_is_drained_before_its_machine_goes_and_a_budget_holds_the_drain_until_the_timeout()
{
    let env = env().await;
    local_manager(env, Duration::from_secs(60));
    let ns = env.create_namespace("draining").await;
    let client = env.client().await;
    apply(&client, &ns, DRAINING).await;
    wait_ready(&client, &ns, "draining", Duration::from_secs(90)).await;
    let workload = support::workload_client(&client, &ns, "draining").await;
    let nodes: Api<Node> = Api::all(workload.clone());
    let pools: Api<MachinePool> = Api::namespaced(client.clone(), &ns);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(workload.clone(), "default");

    // The app runs on both Nodes, Ready (kwok plays its containers), and its budget allows no eviction.
    for document in serde_saphyr::from_multiple::<serde_json::Value>(GUARDED_APP).unwrap() {
        let api: Api<kube::api::DynamicObject> = match document["kind"].as_str().unwrap() {
            "Deployment" => Api::namespaced_with(
                workload.clone(),
                "default",
                &kube::api::ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
            ),
            _ => Api::namespaced_with(
                workload.clone(),
                "default",
                &kube::api::ApiResource::erase::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(
                    &(),
                ),
            ),
        };
        let name = document["metadata"]["name"].as_str().unwrap().to_string();
        api.patch(
            &name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&document),
        )
        .await
        .unwrap();
    }
    let placed = eventually(
        "one Ready web Pod on each Node",
        Duration::from_secs(60),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .map_err(|e| e.to_string())?;
            let ready: BTreeMap<String, String> = list
                .items
                .iter()
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .filter_map(|p| {
                    Some((
                        p.spec.as_ref()?.node_name.clone()?,
                        p.metadata.name.clone()?,
                    ))
                })
                .collect();
            if ready.len() == 2 {
                Ok(ready)
            } else {
                Err(format!("{ready:?}"))
            }
        },
    )
    .await;

    // Scaling down drains the leaving Node first: cordoned, its Pod refused eviction by the budget, named in the
    // condition.
    scale_draining(&pools, 1).await;
    let message = eventually(
        "Draining names the Pod",
        Duration::from_secs(30),
        || async {
            match draining_condition(&pools).await? {
                (status, message) if status == "True" => Ok(message),
                other => Err(format!(
                    "{other:?}; Nodes {:?}, web Pods on {placed:?}; pool {}",
                    pool_names(&nodes, "draining-workers").await,
                    support::condition_summary(
                        &pools
                            .get("draining-workers")
                            .await
                            .unwrap()
                            .status
                            .unwrap()
                            .conditions
                    )
                )),
            }
        },
    )
    .await;
    let (leaving, pod) = placed
        .iter()
        .find(|(node, _)| message.contains(&format!("Node {node} ")))
        .map(|(node, pod)| (node.clone(), pod.clone()))
        .unwrap_or_else(|| panic!("the message names neither Node: {message}"));
    assert!(
        message.contains(&format!(
            "default/{pod} (a PodDisruptionBudget does not allow its eviction now)"
        )),
        "{message}"
    );
    let cordoned = nodes.get(&leaving).await.unwrap();
    assert_eq!(
        cordoned.spec.as_ref().unwrap().unschedulable,
        Some(true),
        "not cordoned"
    );
    let uid = cordoned.metadata.uid.clone().unwrap();

    // Scaled back up before the timeout: the drain is called off, the Node uncordoned, and it stays.
    scale_draining(&pools, 2).await;
    eventually("the drain called off", Duration::from_secs(30), || async {
        let node = nodes.get(&leaving).await.map_err(|e| e.to_string())?;
        let unschedulable = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        let marked = node
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("slipway.dev/drain-started"));
        match draining_condition(&pools).await? {
            (status, _) if status == "False" && !unschedulable && !marked => Ok(()),
            other => Err(format!(
                "{other:?}, unschedulable {unschedulable}, marked {marked}"
            )),
        }
    })
    .await;
    assert_eq!(
        nodes.get(&leaving).await.unwrap().metadata.uid,
        Some(uid),
        "the Node was replaced"
    );

    // Scaled down again: the budget still holds the drain, and the machine goes once drainTimeout has passed.
    let started = std::time::Instant::now();
    scale_draining(&pools, 1).await;
    eventually(
        "the drained machine gone",
        Duration::from_secs(60),
        || async {
            let left: Vec<String> = pool_names(&nodes, "draining-workers").await?;
            if left.len() == 1 && !left.contains(&leaving) {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(15),
        "the machine went after {waited:?}, before its drain could time out"
    );
    eventually("Draining cleared", Duration::from_secs(30), || async {
        match draining_condition(&pools).await? {
            (status, _) if status == "False" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Deleting the pool drains its last Node too: the budget holds it (one web Pod left, two wanted), the pool says
    // so while it waits, and it goes once drainTimeout has passed.
    let started = std::time::Instant::now();
    pools
        .delete("draining-workers", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let message = eventually(
        "the deleting pool waits for its drain",
        Duration::from_secs(30),
        || async {
            let pool = pools
                .get("draining-workers")
                .await
                .map_err(|e| e.to_string())?;
            let conditions = pool.status.unwrap_or_default().conditions;
            match slipway_api::conditions::find(&conditions, "Ready") {
                Some(c) if c.reason == "Deleting" && c.message.contains("draining Node") => {
                    Ok(c.message.clone())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(
        message.contains("a PodDisruptionBudget does not allow its eviction now"),
        "{message}"
    );
    eventually("the pool gone", Duration::from_secs(60), || async {
        match pools
            .get_opt("draining-workers")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(15),
        "the pool went after {waited:?}, before its drain could time out"
    );
    assert!(
        pool_names(&nodes, "draining-workers")
            .await
            .unwrap()
            .is_empty()
    );
}

/// Names of a pool's Nodes.
async fn pool_names(nodes: &Api<Node>, pool: &str) -> Result<Vec<String>, String> {
    Ok(nodes
        .list(&ListParams::default().labels(&format!("slipway.dev/pool={pool}")))
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect())
}
