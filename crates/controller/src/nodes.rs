//! The workload clusters' Nodes: one watch per cluster whose workload API the manager reaches, shared by every pool
//! of that cluster and dropped when the cluster goes.
//!
//! The cluster reconcile starts a cluster's watch once its control plane is ready (and restarts it when the
//! kubeconfig Secret is rewritten); the pools read it through [`NodeWatches::view`] to find each machine's Node by
//! `spec.providerID`. A watch wakes the cluster's pools only when something they act on changes (a Node comes or
//! goes, its readiness, provider ID, labels or taints), never for a kubelet's heartbeat, so a steady cluster costs
//! no reconciles and no writes.
//!
//! Not here: what pools do with the Nodes (machine_pool.rs, node_metadata.rs).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use slipway_api::{Cluster, MachinePool};
use tracing::debug;

use crate::context::Context;

/// The Node watches of every workload cluster, by Cluster UID.
pub struct NodeWatches {
    watches: Mutex<HashMap<String, Watch>>,
    /// Where a watch sends the pools it wakes (the MachinePool controller's `reconcile_on`).
    wake: UnboundedSender<ObjectRef<MachinePool>>,
}

/// One cluster's watch; dropping it stops the watch.
struct Watch {
    /// The kubeconfig Secret's resourceVersion the watch's client was made from.
    client_version: String,
    store: Store<Node>,
    progress: Arc<Mutex<Progress>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How far a watch has come.
#[derive(Debug, Default, Clone)]
struct Progress {
    /// The watch has listed every Node at least once, so a machine without a Node really has none.
    listed: bool,
    /// The last error the watch met, cleared by the next successful list.
    error: Option<String>,
}

/// One cluster's Nodes as its watch last saw them.
#[derive(Clone)]
pub struct NodeView {
    store: Store<Node>,
    listed: bool,
    error: Option<String>,
}

impl NodeView {
    /// True once every Node has been listed: only then does a machine without a Node count as not registered.
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// Why the watch has not listed the Nodes yet, or lost them, if it knows.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The Nodes by `spec.providerID` (Nodes without one are left out).
    pub fn by_provider_id(&self) -> HashMap<String, Arc<Node>> {
        self.store
            .state()
            .into_iter()
            .filter_map(|node| Some((provider_id(&node)?.to_string(), node)))
            .collect()
    }
}

impl NodeWatches {
    pub fn new(wake: UnboundedSender<ObjectRef<MachinePool>>) -> Self {
        Self {
            watches: Mutex::default(),
            wake,
        }
    }

    /// Starts watching the cluster's Nodes, unless a watch made from the current kubeconfig Secret runs already.
    pub async fn ensure(
        &self,
        ctx: &Context,
        cluster: &Cluster,
    ) -> Result<(), crate::workload::Error> {
        let uid = cluster.uid().unwrap_or_default();
        let client = crate::workload::client(ctx, cluster).await?;
        let version = ctx
            .workload_clients
            .get(&uid)
            .map(|(version, _)| version)
            .unwrap_or_default();
        let mut watches = self.watches.lock().expect("node watches lock");
        if watches
            .get(&uid)
            .is_some_and(|w| w.client_version == version && !w.task.is_finished())
        {
            return Ok(());
        }
        let (store, writer) = reflector::store();
        let progress = Arc::new(Mutex::new(Progress::default()));
        let task = tokio::spawn(watch(
            client,
            writer,
            progress.clone(),
            Wake {
                pools: ctx.pools.clone(),
                namespace: cluster.namespace().unwrap_or_default(),
                cluster: cluster.name_any(),
                sender: self.wake.clone(),
            },
        ));
        debug!(cluster = %cluster.name_any(), "watching the workload cluster's Nodes");
        watches.insert(
            uid,
            Watch {
                client_version: version,
                store,
                progress,
                task,
            },
        );
        Ok(())
    }

    /// The cluster's Nodes, if they are watched.
    pub fn view(&self, cluster_uid: &str) -> Option<NodeView> {
        let watches = self.watches.lock().expect("node watches lock");
        let watch = watches.get(cluster_uid)?;
        let progress = watch
            .progress
            .lock()
            .expect("node watch progress lock")
            .clone();
        Some(NodeView {
            store: watch.store.clone(),
            listed: progress.listed,
            error: progress.error,
        })
    }

    /// Stops watching a deleted cluster's Nodes.
    pub fn forget(&self, cluster_uid: &str) {
        self.watches
            .lock()
            .expect("node watches lock")
            .remove(cluster_uid);
    }
}

/// Which pools a watch wakes, and how.
struct Wake {
    pools: Store<MachinePool>,
    namespace: String,
    cluster: String,
    sender: UnboundedSender<ObjectRef<MachinePool>>,
}

impl Wake {
    fn pools(&self) {
        for pool in self.pools.state() {
            if pool.spec.cluster_name == self.cluster
                && pool.metadata.namespace.as_deref() == Some(self.namespace.as_str())
            {
                // The receiver goes only when the manager stops.
                let _ = self
                    .sender
                    .unbounded_send(ObjectRef::from_obj(pool.as_ref()));
            }
        }
    }
}

async fn watch(
    client: Client,
    writer: reflector::store::Writer<Node>,
    progress: Arc<Mutex<Progress>>,
    wake: Wake,
) {
    let api: Api<Node> = Api::all(client);
    // What pools act on, per Node: a change of anything else (heartbeats, images, addresses) wakes nobody.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        // Kept small: a Node's managed fields and image list are most of it, and nothing here reads them.
        .modify(|node| {
            node.metadata.managed_fields = None;
            if let Some(status) = node.status.as_mut() {
                status.images = None;
            }
        });
    let mut events = std::pin::pin!(reflector::reflector(writer, events));
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => {}
            Ok(watcher::Event::InitApply(node)) => {
                seen.insert(node.name_any(), digest(&node));
            }
            Ok(watcher::Event::InitDone) => {
                *progress.lock().expect("node watch progress lock") = Progress {
                    listed: true,
                    error: None,
                };
                // A new list may miss Nodes deleted while the watch was away: the pools look again.
                wake.pools();
            }
            Ok(watcher::Event::Apply(node)) => {
                let now = digest(&node);
                if seen.insert(node.name_any(), now) != Some(now) {
                    wake.pools();
                }
            }
            Ok(watcher::Event::Delete(node)) => {
                seen.remove(&node.name_any());
                wake.pools();
            }
            Err(error) => {
                debug!(cluster = %wake.cluster, %error, "watching the workload cluster's Nodes");
                progress.lock().expect("node watch progress lock").error = Some(error.to_string());
            }
        }
    }
}

/// A digest of what pools act on in a Node.
fn digest(node: &Node) -> u64 {
    let spec = node.spec.as_ref();
    let mut hasher = DefaultHasher::new();
    provider_id(node).hash(&mut hasher);
    is_ready(node).hash(&mut hasher);
    node.metadata.labels.hash(&mut hasher);
    for key in [
        crate::node_metadata::APPLIED_LABELS_ANNOTATION,
        crate::node_metadata::APPLIED_TAINTS_ANNOTATION,
    ] {
        node.annotations().get(key).hash(&mut hasher);
    }
    node.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    spec.and_then(|s| s.unschedulable).hash(&mut hasher);
    for taint in spec.and_then(|s| s.taints.as_ref()).into_iter().flatten() {
        (&taint.key, &taint.value, &taint.effect).hash(&mut hasher);
    }
    hasher.finish()
}

fn provider_id(node: &Node) -> Option<&str> {
    node.spec
        .as_ref()?
        .provider_id
        .as_deref()
        .filter(|id| !id.is_empty())
}

/// Whether the Node's `Ready` condition is `True`.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, Taint};
    use kube::api::ObjectMeta;

    use super::*;

    fn node(ready: &str, heartbeat: i64) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some("local://ns/c/n1".into()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    last_heartbeat_time: Some(
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                            k8s_openapi::jiff::Timestamp::from_second(heartbeat).unwrap(),
                        ),
                    ),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_heartbeat_changes_nothing_pools_act_on_but_readiness_labels_and_taints_do() {
        let base = digest(&node("True", 1));
        assert_eq!(base, digest(&node("True", 2)), "a heartbeat");
        assert_ne!(base, digest(&node("False", 2)), "readiness");
        let mut labelled = node("True", 1);
        labelled.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        assert_ne!(base, digest(&labelled), "a label");
        let mut tainted = node("True", 1);
        tainted.spec.as_mut().unwrap().taints = Some(vec![Taint {
            key: "k".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }]);
        assert_ne!(base, digest(&tainted), "a taint");
        assert!(is_ready(&node("True", 1)));
        assert!(!is_ready(&node("Unknown", 1)));
    }
}
