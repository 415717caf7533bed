//! slipway-provider: the contract between Slipway's controllers and the infrastructure that makes machines.
//!
//! A provider is small on purpose: set up a cluster's shared infrastructure, tear it down, and create, list and
//! delete machines. It speaks in the plain types of this crate, never sees a `kube::Client` it did not ask for, and
//! never imports the controller. Every call is idempotent: machines carry deterministic names, and the provider's
//! own listing (found by its ownership tags) is the truth the controller converges on.
//!
//! Not here: bootstrap data (crates/bootstrap), Kubernetes objects, retries across reconciles (the controller
//! requeues; a provider only retries within one call when that is cheap).

mod error;
mod keyed_cache;
mod types;

pub use error::{ProviderError, Result};
pub use keyed_cache::KeyedCache;
pub use types::{
    ClusterInfo, Deletion, InfrastructurePrice, InfrastructureStatus, Machine, MachineRequest,
    MachineRole, Price,
};

use async_trait::async_trait;

/// What every infrastructure provider implements. See the crate docs for the rules every method follows.
#[async_trait]
pub trait InfrastructureProvider: Send + Sync + 'static {
    /// The provider's name, the member of `spec.infrastructure` it serves (`sim`, `local`, `aws`, `baremetal`).
    fn name(&self) -> &'static str;

    /// Creates or repairs the cluster's shared infrastructure (network, endpoint). Returns how far it is.
    async fn reconcile_cluster(&self, cluster: &ClusterInfo) -> Result<InfrastructureStatus>;

    /// Removes the cluster's shared infrastructure. Called once every machine is gone.
    async fn delete_cluster(&self, cluster: &ClusterInfo) -> Result<Deletion>;

    /// The machines this provider holds for one group of the cluster (its control plane, or one pool), found by
    /// ownership, not by what Slipway remembers.
    async fn list_machines(
        &self,
        cluster: &ClusterInfo,
        role: &MachineRole,
    ) -> Result<Vec<Machine>>;

    /// Creates the machine `request.name`, or returns it when it already exists.
    async fn create_machine(
        &self,
        cluster: &ClusterInfo,
        request: &MachineRequest,
    ) -> Result<Machine>;

    /// Deletes the machine `name`; `Done` also when it never existed.
    async fn delete_machine(
        &self,
        cluster: &ClusterInfo,
        role: &MachineRole,
        name: &str,
    ) -> Result<Deletion>;

    /// Whether machines boot from user data (cloud-init). Providers that make no real machines say no, and the
    /// controller renders none for them.
    fn needs_user_data(&self) -> bool {
        true
    }

    /// How a machine of this provider learns its provider ID on first boot, when only the machine knows it: a Jinja
    /// template cloud-init renders from the machine's instance data (`cloud-init query --format`), giving the same
    /// string as [`Machine::provider_id`]. The kubelet registers it as the Node's `spec.providerID`, which is how the
    /// controller finds a machine's Node. `None`: the user data sets none.
    fn provider_id_from_instance_data(&self) -> Option<&'static str> {
        None
    }

    /// The hourly price of one machine of `instance_type`, or `None` when the provider does not know it.
    fn price_per_hour(&self, _instance_type: Option<&str>) -> Option<Price> {
        None
    }

    /// What `cluster`'s shared infrastructure costs per hour besides its machines, as the cost estimate counts it:
    /// each entry is what it is, how many, and the price of one (e.g. the aws provider's NAT gateways).
    fn infrastructure_prices(&self, _cluster: &ClusterInfo) -> Vec<InfrastructurePrice> {
        Vec::new()
    }
}
