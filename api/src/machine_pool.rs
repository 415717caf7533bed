//! `MachinePool`: a group of identical worker machines of one cluster, scaled like a Deployment.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::machine::MachineSettings;

/// Desired state of the pool: the cluster it joins, how many machines, what they look like, how they are
/// replaced.
// The derive generates the `MachinePool` resource type around it, with `metadata` and `status`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "slipway.dev",
    version = "v1alpha1",
    kind = "MachinePool",
    namespaced,
    status = "MachinePoolStatus",
    derive = "PartialEq",
    shortname = "swmp",
    category = "slipway",
    doc = "A group of identical worker machines of one Slipway Cluster, scaled like a Deployment.",
    // `kubectl scale machinepool/NAME --replicas=N`, and autoscalers that speak the scale subresource.
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    // Lets the controller (and `kubectl get --field-selector spec.clusterName=NAME`) list one cluster's
    // pools without a label convention.
    selectable = ".spec.clusterName",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterName"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Updated", type_ = "integer", json_path = ".status.updatedReplicas", priority = 1),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // Machine names are derived from the pool's name and end up as node names and cloud tags.
    validation = Rule::new(
        "self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')"
    )
    .message(
        "metadata.name: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MachinePoolSpec {
    /// Name of the Cluster in this namespace that the machines join.
    #[schemars(length(max = 63))]
    #[x_kube(
        validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
            .message("spec.clusterName: must be the name of a Cluster in this namespace (lowercase letters, digits and '-')"),
        validation = Rule::new("self == oldSelf")
            .message("spec.clusterName: cannot change after creation; create a new MachinePool for the other cluster")
    )]
    pub cluster_name: String,

    /// Number of machines wanted, at most 1000. Also settable through the scale subresource.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = crate::limits::MAX_POOL_REPLICAS))]
    pub replicas: i32,

    /// Kubernetes version of the nodes, e.g. `v1.37.2`. Absent: the cluster's `spec.kubernetes.version`.
    /// Checked at admission: the format, and on an update from one version to another the step (major version
    /// kept, minor up by one at most and never down, any patch of the same minor). Adding or removing the field
    /// is not a step admission checks: the apiserver cannot read the Cluster to know which version the pool ran.
    /// Checked by the controller against the Cluster's `spec.kubernetes.version`: the same major, not a newer minor,
    /// at most 3 minors older (the kubelet skew Kubernetes supports); a pool outside that range is held with a
    /// condition that says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = crate::version_rules::format("spec.version", ", or be left out to follow the cluster"),
        validation = crate::version_rules::same_major("spec.version"),
        validation = crate::version_rules::no_minor_downgrade("spec.version"),
        validation = crate::version_rules::one_minor_at_a_time("spec.version")
    )]
    pub version: Option<String>,

    /// What each machine looks like. Changing `template.machine` (or the Kubernetes version the machines run)
    /// replaces the machines, within `strategy`; changing `template.nodeLabels` or `template.taints` updates the
    /// existing Nodes in place and replaces nothing.
    #[serde(default)]
    pub template: MachineTemplate,

    /// How fast outdated machines are replaced.
    #[serde(default)]
    pub strategy: RolloutStrategy,

    /// When a machine counts as unhealthy and is replaced, and when the pool holds back.
    #[serde(default)]
    pub health: MachineHealth,
}

/// When a machine counts as unhealthy, and how much of the pool may be replaced for it. A machine is unhealthy when
/// the provider reports it failed, or (on clusters whose Nodes the manager watches) its Node has not been Ready for
/// `unhealthyAfter`, or it has had no Node for `nodeStartupTimeout` since it was created. Unhealthy machines are
/// deleted and made again, at most `max(1, strategy.maxSurge)` at a time; when more than `maxUnhealthy` of the
/// pool is unhealthy at once, nothing is replaced (condition `RemediationBlocked`), since that many failing
/// together points at the network or the control plane rather than at the machines.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MachineHealth {
    /// How long a Node may be not Ready (its `Ready` condition `False` or `Unknown`) before its machine is replaced,
    /// a duration such as `5m`. Default `5m`.
    #[serde(default = "default_unhealthy_after")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s')"
    ).message("spec.health.unhealthyAfter: must be a duration of at least 1s such as 5m or 1h30m"))]
    pub unhealthy_after: String,

    /// How long a machine may be without a Node after it was created before it is replaced, a duration such as
    /// `10m`. Default `10m`.
    #[serde(default = "default_node_startup_timeout")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s')"
    ).message("spec.health.nodeStartupTimeout: must be a duration of at least 1s such as 10m or 1h"))]
    pub node_startup_timeout: String,

    /// The most machines that may be unhealthy at once for any to be replaced: a percentage of `replicas` such as
    /// `40%`, or a number of machines such as `2`. Default `40%`.
    #[serde(default = "default_max_unhealthy")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{1,4}%?$') && (!self.endsWith('%') || int(self.replace('%', '')) <= 100)")
        .message("spec.health.maxUnhealthy: must be a percentage from 0% to 100% such as 40%, or a number of machines such as 2"))]
    pub max_unhealthy: String,
}

impl Default for MachineHealth {
    fn default() -> Self {
        Self {
            unhealthy_after: default_unhealthy_after(),
            node_startup_timeout: default_node_startup_timeout(),
            max_unhealthy: default_max_unhealthy(),
        }
    }
}

fn default_unhealthy_after() -> String {
    "5m".into()
}

fn default_node_startup_timeout() -> String {
    "10m".into()
}

fn default_max_unhealthy() -> String {
    "40%".into()
}

fn default_replicas() -> i32 {
    1
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// What each machine of a pool looks like.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineTemplate {
    /// Provider machine settings.
    #[serde(default)]
    pub machine: MachineSettings,

    /// Labels Slipway puts on the Node of each machine and keeps there (a label removed by hand is put back; one
    /// removed from this list is removed from the Nodes): at most 64, with Kubernetes label keys and values.
    /// Applied through the workload cluster's API once the Node has registered, so not for `sim` clusters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::limits::node_labels")]
    pub node_labels: BTreeMap<String, String>,

    /// Taints Slipway puts on the Node of each machine and keeps there, as it does `nodeLabels`; taints others set
    /// (the kubelet, the node controller) are left alone. Applied once the Node has registered, so Pods that do
    /// not tolerate them may land on a new Node in the moment before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["key".into(), "effect".into()]))]
    pub taints: Vec<NodeTaint>,
}

/// A taint a Node registers with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct NodeTaint {
    /// Taint key, e.g. `dedicated` or `example.com/gpu`.
    #[schemars(length(min = 1, max = 316))]
    pub key: String,
    /// Taint value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub value: Option<String>,
    /// What the taint does to Pods that do not tolerate it.
    pub effect: TaintEffect,
}

/// Effect of a Node taint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TaintEffect {
    /// New Pods are not scheduled onto the Node.
    NoSchedule,
    /// The scheduler avoids the Node when it can.
    PreferNoSchedule,
    /// Running Pods are evicted too.
    NoExecute,
}

/// How outdated machines are replaced. Whole machines only: percentages are not supported.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.maxSurge > 0 || self.maxUnavailable > 0").message(
    "spec.strategy: maxSurge and maxUnavailable cannot both be 0, or a rollout could never start; set maxSurge to 1"
))]
pub struct RolloutStrategy {
    /// How many machines may exist above `replicas` during a rollout, at most 100.
    #[serde(default = "default_max_surge")]
    #[schemars(range(min = 0, max = crate::limits::MAX_SURGE))]
    pub max_surge: i32,
    /// How many machines may be missing or not ready below `replicas` during a rollout, at most 1000 (the most
    /// `replicas` can be).
    #[serde(default)]
    #[schemars(range(min = 0, max = crate::limits::MAX_POOL_REPLICAS))]
    pub max_unavailable: i32,
    /// How long a machine's Node is drained before the machine is deleted anyway, a duration such as `10m`
    /// (default); `0s` deletes without draining. Draining cordons the Node, then evicts its Pods through the
    /// Eviction API, so PodDisruptionBudgets are honoured; DaemonSet Pods and mirror Pods are left alone. It comes
    /// before a pool machine is deleted for scaling down, rolling out, replacing an unhealthy machine or deleting
    /// the pool (with its cluster too, unless `drainOnClusterDeletion` is false), on clusters whose Nodes the
    /// manager watches; not for a Node that is not Ready (its kubelet could not stop the Pods). While a drain
    /// waits, the pool makes no more machines than `replicas + maxSurge` counting the one being drained. The `Draining` condition names the Pods still on the Node.
    #[serde(default = "default_drain_timeout")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('0s')"
    ).message("spec.strategy.drainTimeout: must be a duration such as 10m, 90s or 0s (no drain)"))]
    pub drain_timeout: String,
    /// Whether the Nodes are drained when the whole cluster is being deleted (default true). False deletes the
    /// machines at once: nothing is left to move the Pods to anyway.
    #[serde(default = "default_true")]
    pub drain_on_cluster_deletion: bool,
}

impl Default for RolloutStrategy {
    fn default() -> Self {
        Self {
            max_surge: default_max_surge(),
            max_unavailable: 0,
            drain_timeout: default_drain_timeout(),
            drain_on_cluster_deletion: true,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_drain_timeout() -> String {
    "10m".into()
}

fn default_max_surge() -> i32 {
    1
}

/// What the controller observed about a pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachinePoolStatus {
    /// Machines that exist, in any phase. Read by the scale subresource.
    #[serde(default)]
    pub replicas: i32,
    /// Machines that are ready: their Node is Ready, where the manager watches the workload cluster's Nodes;
    /// otherwise (sim clusters, or a workload API that has not answered yet) as the provider reports them.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Machines made from the current template.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Label selector of the pool's Nodes in the workload cluster, as a string, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// One entry per machine the provider reports for this pool, by name, the first 100;
    /// `unlistedMachines` counts the others (`replicas` counts them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::limits::MAX_LISTED_MACHINES))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub machines: Vec<MachineStatus>,
    /// Machines that exist but that `machines` leaves out, because it lists at most 100.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unlisted_machines: i32,
    /// `Ready`, `ScalingUp`, `ScalingDown`, `RollingOut`, `RemediationBlocked`, `Draining`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One machine of a pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    /// Machine name, deterministic so that creating it again finds the same machine.
    pub name: String,
    /// Provider's id of the machine, matching the Node's `spec.providerID`.
    #[serde(
        rename = "providerID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    /// Lifecycle phase of the machine.
    pub phase: MachinePhase,
    /// The Node this machine registered as, once it has; only for clusters whose workload API the manager reaches
    /// (not `sim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ref: Option<NodeRef>,
}

/// Lifecycle phase of one machine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MachinePhase {
    /// Asked for; the provider has not started it yet.
    Pending,
    /// The provider is creating it.
    Provisioning,
    /// Running; its Node may or may not be Ready yet.
    Running,
    /// Being deleted.
    Deleting,
    /// The provider reports it failed (on AWS, a stopped instance); it is replaced as an unhealthy machine, within
    /// the pool's `spec.health`.
    Failed,
}

/// The Node a machine registered as in the workload cluster (the one whose `spec.providerID` is the machine's), and
/// how that Node was when the status was last written. Written only when one of these fields changes, never for a
/// kubelet's heartbeat.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeRef {
    /// Node name.
    pub name: String,
    /// Whether the Node's `Ready` condition is `True`.
    #[serde(default)]
    pub ready: bool,
    /// When the Node registered (its `metadata.creationTimestamp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Time>,
}
