//! What differs between the two sides: the objects a user creates for one cluster, and when a cluster counts as
//! Ready. Everything else (clock, scrapes, process sampling, report) is shared, so both sides are measured alike.

use anyhow::Context as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use slipway_api::{Cluster, MachinePool};

pub const CONTROL_PLANE_REPLICAS: usize = 1;
pub const WORKERS: usize = 3;
pub const MACHINES_PER_CLUSTER: usize = CONTROL_PLANE_REPLICAS + WORKERS;

/// Slipway's side asks for the Kubernetes version bench-scale uses; Cluster API's for the one its own in-memory
/// scale test uses (`KUBERNETES_VERSION_UPGRADE_FROM` in test/e2e/config/docker.yaml). Nothing runs it either way.
const SLIPWAY_KUBERNETES_VERSION: &str = "v1.37.2";
const CAPI_KUBERNETES_VERSION: &str = "v1.36.1";
/// The ClusterClass `hack/bench-vs-capi.sh` applies: CAPD's shipped `templates/clusterclass-in-memory.yaml` with
/// every in-memory startup duration and jitter set to 0.
pub const CAPI_CLUSTER_CLASS: &str = "in-memory";

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum Side {
    Slipway,
    Capi,
}

/// Where one cluster stands, from its object.
pub enum ClusterState {
    /// Ready since `transition - created` seconds after creation (apiserver clock, 1 s resolution).
    Ready { latency_seconds: f64 },
    /// Not Ready yet; a short description of why, for the report on a timeout.
    Waiting(String),
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::Slipway => "Slipway",
            Side::Capi => "Cluster API",
        }
    }

    /// The condition whose `True` makes a cluster count as Ready.
    pub fn ready_condition(self) -> &'static str {
        match self {
            Side::Slipway => "Ready",
            Side::Capi => "Available",
        }
    }

    pub fn clusters(self) -> ApiResource {
        match self {
            Side::Slipway => ApiResource::erase::<Cluster>(&()),
            Side::Capi => capi("cluster.x-k8s.io", "Cluster", "clusters"),
        }
    }

    /// The machines whose `status.phase` must be `Running` as well, where the side has such objects. Slipway's
    /// machines are entries of a MachinePool's status, and its `Ready` already requires the pool's nodes ready.
    pub fn machines(self) -> Option<ApiResource> {
        match self {
            Side::Slipway => None,
            Side::Capi => Some(capi("cluster.x-k8s.io", "Machine", "machines")),
        }
    }

    /// The objects a user creates for cluster `name`, in the order they are created.
    pub fn objects(self, name: &str) -> anyhow::Result<Vec<(ApiResource, DynamicObject)>> {
        let objects = match self {
            // As bench-scale creates them: `infrastructure.sim: {}` is the sim provider at zero delay.
            Side::Slipway => vec![
                (
                    ApiResource::erase::<Cluster>(&()),
                    json!({
                        "apiVersion": "slipway.dev/v1alpha1",
                        "kind": "Cluster",
                        "metadata": { "name": name },
                        "spec": {
                            "kubernetes": { "version": SLIPWAY_KUBERNETES_VERSION },
                            "controlPlane": { "replicas": CONTROL_PLANE_REPLICAS },
                            "infrastructure": { "sim": {} },
                        },
                    }),
                ),
                (
                    ApiResource::erase::<MachinePool>(&()),
                    json!({
                        "apiVersion": "slipway.dev/v1alpha1",
                        "kind": "MachinePool",
                        "metadata": { "name": format!("{name}-workers") },
                        "spec": { "clusterName": name, "replicas": WORKERS },
                    }),
                ),
            ],
            // Recipe 9A of CAPI-BENCH.md: one topology Cluster; the topology controller makes the DevCluster,
            // KubeadmControlPlane, MachineDeployment, templates and MachineHealthChecks from the ClusterClass.
            Side::Capi => vec![(
                capi("cluster.x-k8s.io", "Cluster", "clusters"),
                json!({
                    "apiVersion": "cluster.x-k8s.io/v1beta2",
                    "kind": "Cluster",
                    "metadata": { "name": name },
                    "spec": {
                        "clusterNetwork": {
                            "services": { "cidrBlocks": ["10.128.0.0/12"] },
                            "pods": { "cidrBlocks": ["192.168.0.0/16"] },
                            "serviceDomain": "cluster.local",
                        },
                        "topology": {
                            "classRef": { "name": CAPI_CLUSTER_CLASS },
                            "version": CAPI_KUBERNETES_VERSION,
                            "controlPlane": { "replicas": CONTROL_PLANE_REPLICAS },
                            "workers": {
                                "machineDeployments": [
                                    { "class": "default-worker", "name": "md-0", "replicas": WORKERS },
                                ],
                            },
                        },
                    },
                }),
            )],
        };
        objects
            .into_iter()
            .map(|(resource, object)| {
                let object = serde_json::from_value(object).context("building an object")?;
                Ok((resource, object))
            })
            .collect()
    }

    /// Where the cluster `object` stands.
    pub fn cluster_state(self, object: &DynamicObject) -> ClusterState {
        let wanted = self.ready_condition();
        let condition = object.data["status"]["conditions"]
            .as_array()
            .and_then(|list| list.iter().find(|c| c["type"] == wanted));
        let Some(condition) = condition else {
            return ClusterState::Waiting(format!("no {wanted} condition yet"));
        };
        // Every Slipway cluster here has a pool: a Ready that does not count it (a reconcile that ran before the
        // pool existed) is not the Ready being measured.
        let uncounted_pool = self == Side::Slipway
            && object.data["status"]["conditions"]
                .as_array()
                .and_then(|list| list.iter().find(|c| c["type"] == "NodesReady"))
                .is_none_or(|c| c["reason"] == slipway_api::conditions::reason::NO_MACHINE_POOLS);
        if condition["status"] == "True" && !uncounted_pool {
            let latency_seconds = transition_after_creation(object, condition).unwrap_or(f64::NAN);
            return ClusterState::Ready { latency_seconds };
        }
        // Object names that carry the cluster's name (its MachineDeployment, say) would make every state unique;
        // without them, clusters in the same state group together.
        let name = object.metadata.name.as_deref().unwrap_or("\u{0}");
        let mut message = condition["message"]
            .as_str()
            .unwrap_or_default()
            .split(' ')
            .map(|word| if word.contains(name) { "<name>" } else { word })
            .collect::<Vec<_>>()
            .join(" ");
        if message.len() > 160 {
            let mut cut = 160;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" ...");
        }
        ClusterState::Waiting(format!(
            "{wanted}={} {}: {}",
            condition["status"].as_str().unwrap_or("?"),
            condition["reason"].as_str().unwrap_or("?"),
            message.replace('\n', " ")
        ))
    }
}

/// A machine counts when its phase is `Running`.
pub fn machine_running(object: &DynamicObject) -> bool {
    object.data["status"]["phase"] == "Running"
}

fn capi(group: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1beta2", kind), plural)
}

/// The condition's `lastTransitionTime` minus the object's `creationTimestamp`, in seconds.
fn transition_after_creation(object: &DynamicObject, condition: &Value) -> Option<f64> {
    let created = object.metadata.creation_timestamp.as_ref()?;
    let transition: Time = serde_json::from_value(condition["lastTransitionTime"].clone()).ok()?;
    Some(transition.0.duration_since(created.0).as_secs_f64())
}
