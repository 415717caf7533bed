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

/// A machine to create. `Debug` leaves out the user data, which holds private keys or a join token.
#[derive(Clone, PartialEq)]
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

impl std::fmt::Debug for MachineRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineRequest")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("settings", &self.settings)
            .field("kubernetes_version", &self.kubernetes_version)
            .field("template_hash", &self.template_hash)
            .field("user_data", &self.user_data.as_ref().map(|_| "<redacted>"))
            .finish()
    }
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
    /// The Kubernetes version the machine itself reports (a control-plane member's apiserver `/version`), for
    /// providers that can ask it; `None` for those that cannot, and for workers.
    pub version: Option<String>,
}

/// An hourly price.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub per_hour: f64,
    pub currency: String,
}

/// A piece of a cluster's shared infrastructure the cost estimate counts: `count` of `what` (singular, e.g. "NAT
/// gateway"), each at `price`.
#[derive(Debug, Clone, PartialEq)]
pub struct InfrastructurePrice {
    pub what: String,
    pub count: u32,
    pub price: Price,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_machine_request_hides_the_user_data() {
        let request = MachineRequest {
            name: "demo-md-0-abc1234-0".into(),
            role: MachineRole::Worker {
                pool: "md-0".into(),
            },
            settings: MachineSettings::default(),
            kubernetes_version: "v1.37.2".into(),
            template_hash: "abc1234".into(),
            user_data: Some(
                "#cloud-config\n-----BEGIN PRIVATE KEY-----\nabcdef.0123456789abcdef".into(),
            ),
        };
        let printed = format!("{request:?} {request:#?}");
        assert!(printed.contains("demo-md-0-abc1234-0"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
        assert!(
            !printed.contains("PRIVATE KEY") && !printed.contains("0123456789abcdef"),
            "{printed}"
        );
    }
}
