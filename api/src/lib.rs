//! Slipway's Kubernetes API, group `slipway.dev`, version `v1alpha1`: the `Cluster`, `MachinePool` and
//! `AddonBundle` custom resources, their defaults, the validation rules the apiserver enforces at admission
//! (OpenAPI schema plus CEL `x-kubernetes-validations`), the condition types and phases the controllers report,
//! and the CRD manifests generated from all of that ([`crds`], [`crd_files`]).
//!
//! What it is not: a client or a controller. Nothing here talks to an apiserver or decides what to do about
//! a spec; it only says what a valid object looks like. Every rule lives in the CRD so that `kubectl apply`
//! refuses a bad object with a message naming the field and the fix, before any controller sees it.
//!
//! Kubernetes version: like every library in the workspace this crate does not choose a `k8s-openapi` version
//! feature. The binary or test crate that links it does (`k8s-openapi/v1_37` for ours); this crate's own tests
//! enable it through `[dev-dependencies]`, so build and test it with `cargo test -p slipway-api`.

pub mod addon_bundle;
pub mod baremetal_host;
pub mod cluster;
pub mod conditions;
pub mod crd;
pub mod limits;
pub mod machine;
pub mod machine_pool;
mod version_rules;

pub use addon_bundle::{
    AddonBundle, AddonBundleSpec, AddonBundleStatus, AddonClusterStatus, AddonMode, AddonSource,
    ConfigMapKeyRef, UrlSource,
};
pub use baremetal_host::{
    BareMetalHost, BareMetalHostSpec, BareMetalHostStatus, BmcDetails, ConsumerRef, HostState,
    ProvisioningStatus, UserDataSecretRef, VendorDetails,
};
pub use cluster::{
    ApiEndpoint, AwsSettings, BareMetalSettings, Cluster, ClusterPhase, ClusterSpec, ClusterStatus,
    ControlPlaneSpec, CostEstimate, Distribution, InfrastructureSpec, KubernetesSpec,
    LocalSettings, NatGateways, NetworkSpec, SecretRef, SimSettings, TemplateRef,
};
pub use conditions::Condition;
pub use crd::{crd_files, crds};
pub use machine::MachineSettings;
pub use machine_pool::{
    MachineHealth, MachinePhase, MachinePool, MachinePoolSpec, MachinePoolStatus, MachineStatus,
    MachineTemplate, NodeRef, NodeTaint, RolloutStrategy, TaintEffect,
};

/// The API group of every Slipway resource.
pub const GROUP: &str = "slipway.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// The field manager Slipway uses for server-side apply, so `managedFields` say which fields are ours.
pub const FIELD_MANAGER: &str = "slipway";
