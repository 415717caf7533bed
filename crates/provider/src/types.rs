use jiff::Timestamp;
use slipway_api::{InfrastructureSpec, MachinePhase, MachineSettings};

/// The cluster a call is about: its identity and the settings a provider needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterInfo {
    pub namespace: String,
    pub name: String,
    /// The Cluster's UID: tells a cluster from an earlier one that had the same name.
    pub uid: String,
    pub kubernetes_version: String,
    pub infrastructure: InfrastructureSpec,
}

impl ClusterInfo {
    /// `<namespace>/<name>`, the value of ownership tags.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Which group of a cluster's machines: the control plane or one MachinePool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MachineRole {
    ControlPlane,
    Worker { pool: String },
}

impl MachineRole {
    /// The group's name in tags and machine names: `control-plane`, or the pool's name.
    pub fn group(&self) -> &str {
        match self {
            Self::ControlPlane => "control-plane",
            Self::Worker { pool } => pool,
        }
    }
}

/// Shared infrastructure of a cluster, as far as it has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfrastructureStatus {
    pub ready: bool,
    /// What is still going on, for the `InfrastructureReady` condition's message.
    pub message: String,
    /// Where the cluster's API will answer, once known: (host, port).
    pub endpoint: Option<(String, u16)>,
    /// Whether a real Kubernetes API answers at the endpoint. The sim provider has none: its endpoint is a name
    /// in kubeconfigs, and no add-ons are installed on its clusters.
    pub workload_api: bool,
}

/// Whether a deletion has finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    Done,
    /// Still going; the message says on what.
    InProgress(String),
}

/// A machine to create.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineRequest {
    /// Deterministic name; used as client token and ownership tag.
    pub name: String,
    pub role: MachineRole,
    pub settings: MachineSettings,
    pub kubernetes_version: String,
    /// Hash of everything that makes machines of a group differ; a machine with another hash is outdated.
    pub template_hash: String,
    /// Cloud-init or whatever the provider boots the machine with; `None` for providers that need none.
    pub user_data: Option<String>,
}

/// A machine as the provider sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub name: String,
    pub provider_id: String,
    pub phase: MachinePhase,
    /// Whether the machine serves as a Ready node. Providers without a workload API report a Running machine as
    /// ready; others leave it to the controller to look at the Node.
    pub ready: bool,
    pub template_hash: String,
    pub created_at: Timestamp,
}

/// An hourly price.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub per_hour: f64,
    pub currency: String,
}
