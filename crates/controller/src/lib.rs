//! slipway-controller: the reconcilers that turn `Cluster` and `MachinePool` objects into machines, and the
//! runtime that runs them.
//!
//! Each reconcile reads top to bottom as the steps of the design (infrastructure, control plane, nodes, add-ons,
//! Ready), every step idempotent, and writes only what changed: a reconcile that finds nothing new writes nothing.
//! The provider's own listing of machines is the truth; the controller never remembers machines by itself.
//!
//! Not here: concrete providers (the CLI registers them), flags, leader election and HTTP servers (the CLI's
//! manager command), bootstrap data and add-ons (their own crates).

pub mod addon_bundle;
mod backoff;
pub mod cluster;
mod cluster_secrets;
mod context;
mod cost;
mod drain;
mod error;
mod events;
mod finalizer;
mod health;
mod join_token;
pub mod machine_pool;
pub mod machines;
pub mod metrics;
mod node_metadata;
mod nodes;
mod outcome;
mod run;
mod status;
mod user_data;
pub mod version_skew;
mod workload;

pub use context::{Context, ProviderRegistry};
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use run::{Settings, run};

/// Finalizer on Clusters: the cluster's machines and infrastructure are gone before the object is.
pub const CLUSTER_FINALIZER: &str = "slipway.dev/cluster";
/// Finalizer on MachinePools: the pool's machines are gone before the object is.
pub const MACHINE_POOL_FINALIZER: &str = "slipway.dev/machinepool";
/// Finalizer on AddonBundles: what the bundle created on its clusters is pruned, and its inventories deleted,
/// before the object is gone.
pub const ADDON_BUNDLE_FINALIZER: &str = "slipway.dev/addonbundle";
/// Annotation that pauses reconciliation of a Cluster (and its pools), like `spec.paused`.
pub const PAUSED_ANNOTATION: &str = "slipway.dev/paused";
/// Label on a pool's machines (and Nodes) naming the pool; the scale subresource's selector uses it.
pub const POOL_LABEL: &str = "slipway.dev/pool";
