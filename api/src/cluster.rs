//! `Cluster`: one workload Kubernetes cluster, its control plane and the infrastructure it runs on.
//!
//! Worker nodes are not here: they are `MachinePool`s that name the cluster. Every rule the apiserver
//! checks is written next to the field it guards, as a CEL rule whose message names the field and the fix.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::machine::MachineSettings;

/// Desired state of the cluster: Kubernetes version and network, control plane, provider, lifetime.
// The derive generates the `Cluster` resource type around it, with `metadata` and `status`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "slipway.dev",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    status = "ClusterStatus",
    derive = "PartialEq",
    shortname = "swc",
    category = "slipway",
    doc = "A workload Kubernetes cluster that Slipway provisions, bootstraps and keeps converged.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.kubernetes.version"),
    printcolumn(name = "Provider", type_ = "string", json_path = ".status.provider"),
    // A string, not a date: kubectl renders a `date` column as time elapsed since, and a time in the
    // future as `<invalid>`.
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // The name ends up in DNS names, Secret names and cloud tags, so it must be a DNS-1123 label; the
    // apiserver itself only refuses '/' and '%' in custom resource names.
    validation = Rule::new(
        "self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')"
    )
    .message(
        "metadata.name: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
    ),
    // The local provider runs kube-apiserver and friends itself, as kubeadm lays them out; k3s would be one binary
    // it does not build.
    validation = Rule::new(
        "!has(self.spec.infrastructure.local) || !has(self.spec.kubernetes.distribution) || self.spec.kubernetes.distribution != 'k3s'"
    )
    .message(
        "spec.kubernetes.distribution: the local provider runs kubeadm-style control planes only; set distribution: kubeadm, or use another provider for k3s"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Which Kubernetes to run and how its network is laid out.
    pub kubernetes: KubernetesSpec,

    /// The control plane machines.
    #[serde(default)]
    pub control_plane: ControlPlaneSpec,

    /// Where the machines come from: exactly one of `local`, `sim`, `aws`, `baremetal`.
    pub infrastructure: InfrastructureSpec,

    /// Time to live, a duration such as `30m`, `2h` or `1h30m` counted from creation. When it has passed the
    /// cluster is deleted; `status.expiresAt` says when that is. Absent: the cluster lives until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')"
    ).message("spec.ttl: must be a positive duration such as 30m, 2h or 1h30m"))]
    pub ttl: Option<String>,

    /// While true the controller leaves the cluster alone: nothing is created, changed or deleted.
    #[serde(default)]
    pub paused: bool,

    /// The blueprint this cluster was rendered from, kept for `slipway describe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateRef>,
}

/// Which Kubernetes to run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesSpec {
    /// Kubernetes version of the control plane and, unless a pool says otherwise, the nodes, e.g. `v1.37.2`.
    /// Checked at admission on every update: the major version stays, the minor goes up by one at most and never
    /// down (v1.36.x → v1.37.y, not → v1.38 or → v1.35); patch releases of the same minor may go either way.
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = crate::version_rules::format("spec.kubernetes.version", ""),
        validation = crate::version_rules::same_major("spec.kubernetes.version"),
        validation = crate::version_rules::no_minor_downgrade("spec.kubernetes.version"),
        validation = crate::version_rules::one_minor_at_a_time("spec.kubernetes.version")
    )]
    pub version: String,

    /// How the cluster is bootstrapped.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message(
        "spec.kubernetes.distribution: cannot change after creation; create a new Cluster to switch distributions"
    ))]
    pub distribution: Distribution,

    /// Pod and Service address ranges and the cluster's DNS domain.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message(
        "spec.kubernetes.network: cannot change after creation (nodes and Services already use these ranges); create a new Cluster instead"
    ))]
    pub network: NetworkSpec,
}

/// How a cluster is bootstrapped.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// `kubeadm init` / `kubeadm join`.
    #[default]
    Kubeadm,
    /// `k3s server` / `k3s agent`.
    K3s,
}

/// Address ranges and DNS domain of a workload cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!isCIDR(self.podCidr) || !isCIDR(self.serviceCidr) || !(cidr(self.podCidr).containsCIDR(cidr(self.serviceCidr)) || cidr(self.serviceCidr).containsCIDR(cidr(self.podCidr)))"
).message("spec.kubernetes.network: podCidr and serviceCidr overlap; choose disjoint ranges such as 10.244.0.0/16 and 10.96.0.0/12"))]
pub struct NetworkSpec {
    /// Range Pod IPs are taken from.
    #[serde(default = "default_pod_cidr")]
    #[schemars(length(max = 64))]
    #[x_kube(
        validation = Rule::new("isCIDR(self)")
            .message("spec.kubernetes.network.podCidr: must be a CIDR such as 10.244.0.0/16"),
        validation = Rule::new("!isCIDR(self) || cidr(self) == cidr(self).masked()")
            .message("spec.kubernetes.network.podCidr: set the host bits to zero, e.g. 10.244.0.0/16 rather than 10.244.1.0/16")
    )]
    pub pod_cidr: String,

    /// Range ClusterIP Services are taken from.
    #[serde(default = "default_service_cidr")]
    #[schemars(length(max = 64))]
    #[x_kube(
        validation = Rule::new("isCIDR(self)")
            .message("spec.kubernetes.network.serviceCidr: must be a CIDR such as 10.96.0.0/12"),
        validation = Rule::new("!isCIDR(self) || cidr(self) == cidr(self).masked()")
            .message("spec.kubernetes.network.serviceCidr: set the host bits to zero, e.g. 10.96.0.0/12 rather than 10.96.0.1/12")
    )]
    pub service_cidr: String,

    /// DNS domain of Services, e.g. `cluster.local`.
    #[serde(default = "default_dns_domain")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(
        "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')"
    ).message("spec.kubernetes.network.dnsDomain: must be a DNS name such as cluster.local"))]
    pub dns_domain: String,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            pod_cidr: default_pod_cidr(),
            service_cidr: default_service_cidr(),
            dns_domain: default_dns_domain(),
        }
    }
}

fn default_pod_cidr() -> String {
    "10.244.0.0/16".into()
}

fn default_service_cidr() -> String {
    "10.96.0.0/12".into()
}

fn default_dns_domain() -> String {
    "cluster.local".into()
}

/// The control plane machines.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneSpec {
    /// Number of control-plane members: 1, 3 or 5, one etcd cluster among them (3 keep quorum through the loss of
    /// one member, 5 of two). Members are added, removed and replaced one at a time, a new one only while every
    /// other is ready.
    #[serde(default = "default_control_plane_replicas")]
    #[x_kube(validation = Rule::new("self in [1, 3, 5]")
        .message("spec.controlPlane.replicas: must be 1, 3 or 5 (an odd number keeps etcd quorum)"))]
    pub replicas: i32,

    /// What kind of machine each control plane member runs on.
    #[serde(default)]
    pub machine: MachineSettings,
}

impl Default for ControlPlaneSpec {
    fn default() -> Self {
        Self {
            replicas: default_control_plane_replicas(),
            machine: MachineSettings::default(),
        }
    }
}

fn default_control_plane_replicas() -> i32 {
    1
}

/// The provider that makes the machines, with its own settings. A union: exactly one member is set.
///
/// A struct of optional members rather than a Rust enum, following the Kubernetes convention for unions:
/// the schema stays structural and a user writes `sim: {}` rather than a tagged value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(
        "(has(self.local) ? 1 : 0) + (has(self.sim) ? 1 : 0) + (has(self.aws) ? 1 : 0) + (has(self.baremetal) ? 1 : 0) == 1"
    ).message("spec.infrastructure: set exactly one of local, sim, aws, baremetal"),
    validation = Rule::new(
        "has(self.local) == has(oldSelf.local) && has(self.sim) == has(oldSelf.sim) && has(self.aws) == has(oldSelf.aws) && has(self.baremetal) == has(oldSelf.baremetal)"
    ).message("spec.infrastructure: the provider cannot change after creation; create a new Cluster on the other provider")
)]
pub struct InfrastructureSpec {
    /// Control plane as local processes, machines as kwok nodes, on the manager's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalSettings>,
    /// In-memory machines with configurable delays and faults; no workload API. For tests and scale runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim: Option<SimSettings>,
    /// EC2 instances in a VPC that Slipway creates or adopts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSettings>,
    /// BareMetalHosts booted over Redfish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baremetal: Option<BareMetalSettings>,
}

impl InfrastructureSpec {
    /// The name of the provider that is set (`local`, `sim`, `aws`, `baremetal`), as the controller
    /// reports it in `status.provider`. `None` only for an object the apiserver would have refused.
    pub fn provider_name(&self) -> Option<&'static str> {
        [
            (self.local.is_some(), "local"),
            (self.sim.is_some(), "sim"),
            (self.aws.is_some(), "aws"),
            (self.baremetal.is_some(), "baremetal"),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
    }
}

/// Settings of the `local` provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LocalSettings {
    /// Directory for the cluster's data (etcd, certificates, logs). Absent: a directory per cluster
    /// under the manager's own state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    #[x_kube(validation = Rule::new("self.startsWith('/')")
        .message("spec.infrastructure.local.stateDir: must be an absolute path such as /var/lib/slipway"))]
    pub state_dir: Option<String>,
}

/// Settings of the `sim` provider: how slow and how unreliable its pretend infrastructure is.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SimSettings {
    /// How long creating a machine takes, a duration such as `2s` or `1m`. Absent: no delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')")
        .message("spec.infrastructure.sim.createDelay: must be a duration such as 500ms, 2s or 1m"))]
    pub create_delay: Option<String>,

    /// How long deleting a machine takes, a duration such as `2s` or `1m`. Absent: no delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')")
        .message("spec.infrastructure.sim.deleteDelay: must be a duration such as 500ms, 2s or 1m"))]
    pub delete_delay: Option<String>,

    /// Percentage (0 to 100) of provider calls that fail with a retryable error. An integer percent
    /// because Kubernetes APIs avoid floating-point fields. Absent: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub failure_percent: Option<i32>,
}

/// Settings of the `aws` provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.availabilityZones) || self.availabilityZones.all(z, z.startsWith(self.region))"
).message(
    "spec.infrastructure.aws.availabilityZones: every zone must be in the region, e.g. us-east-1a for us-east-1"
))]
pub struct AwsSettings {
    /// AWS region, e.g. `us-east-1`.
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new("self.matches('^[a-z]{2}(-[a-z]+)+-[0-9]+$')")
            .message("spec.infrastructure.aws.region: must be an AWS region name such as us-east-1 or eu-central-1"),
        validation = Rule::new("self == oldSelf")
            .message("spec.infrastructure.aws.region: cannot change after creation; create a new Cluster in the other region")
    )]
    pub region: String,

    /// Secret in the Cluster's namespace with the keys `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and,
    /// optionally, `AWS_SESSION_TOKEN`.
    #[x_kube(validation = Rule::new(
        "self.name.size() <= 253 && self.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')"
    ).message("spec.infrastructure.aws.credentialsSecretRef.name: must be the name of a Secret in this namespace (lowercase letters, digits, '-' and '.')"))]
    pub credentials_secret_ref: SecretRef,

    /// Existing VPC to adopt, e.g. `vpc-0123456789abcdef0`. Absent: Slipway creates one and deletes it
    /// with the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^vpc-([0-9a-f]{8}|[0-9a-f]{17})$')")
        .message("spec.infrastructure.aws.vpcId: must be a VPC id such as vpc-0123456789abcdef0; leave it unset to create a VPC"))]
    pub vpc_id: Option<String>,

    /// Zones to spread machines over, e.g. `[us-east-1a, us-east-1b]`. Empty: the provider picks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 32)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub availability_zones: Vec<String>,

    /// Source ranges allowed to reach the control plane's API port, e.g. `203.0.113.0/24`. Empty: any
    /// address (0.0.0.0/0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 64)))]
    #[x_kube(
        merge_strategy = ListMerge::Set,
        validation = Rule::new("self.all(c, isCIDR(c))")
            .message("spec.infrastructure.aws.controlPlaneIngressCidrs: every entry must be a CIDR such as 203.0.113.0/24")
    )]
    pub control_plane_ingress_cidrs: Vec<String>,

    /// How the private subnets (the workers') reach the internet: `PerZone` (the default) puts a NAT gateway with
    /// an Elastic IP in each zone's public subnet and routes each zone's private subnet through its own, so a zone
    /// outage cuts only that zone; `Single` puts one in the first zone for every private subnet (cheaper, one zone
    /// carries all egress); `Disabled` gives the private subnets no way out. Each NAT gateway is counted in
    /// `status.cost`. Cannot change after creation.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message(
        "spec.infrastructure.aws.natGateways: cannot change after creation; create a new Cluster with the other setting"
    ))]
    pub nat_gateways: NatGateways,
}

/// Where an AWS cluster's NAT gateways go.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NatGateways {
    /// One per zone, each zone's private subnet routed through its own.
    #[default]
    PerZone,
    /// One, in the first zone, for every private subnet.
    Single,
    /// None: the private subnets have no route to the internet.
    Disabled,
}

/// Settings of the `baremetal` provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BareMetalSettings {
    /// Which BareMetalHosts in the Cluster's namespace may be claimed. Empty: any available host.
    #[serde(default)]
    #[schemars(schema_with = "crate::limits::label_selector")]
    pub host_selector: LabelSelector,

    /// OS image written to each host, an http:// or https:// URL the BMC can download.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']")
        .message("spec.infrastructure.baremetal.imageUrl: must be an http:// or https:// URL of the OS image"))]
    pub image_url: String,

    /// Where the cluster's API will answer: a virtual IP or load balancer in front of the control-plane hosts
    /// (Slipway does not run one), or the address of a single control-plane host. Without it Slipway cannot reach
    /// the workload cluster: it writes no kubeconfig, gives workers no join data and installs no add-ons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ApiEndpoint>,
}

/// The blueprint a cluster was rendered from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRef {
    /// Name of the blueprint.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Revision of the blueprint, e.g. a number or a commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub revision: Option<String>,
    /// Values the blueprint was rendered with: at most 64, names of at most 128 and values of at most 1024
    /// characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::limits::template_variables")]
    pub variables: BTreeMap<String, String>,
}

/// A Secret in the same namespace as the object that names it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(max = 253))]
    pub name: String,
}

/// Where a cluster is on its way from spec to running cluster; the conditions say why.
///
/// `Pending` (accepted, nothing made yet) -> `Provisioning` (infrastructure and control plane being made)
/// -> `Provisioned` (control plane answers and the kubeconfig Secret exists; nodes and add-ons may still
/// be coming: see the `Ready` condition) -> `Deleting` (deletion requested, resources being released).
/// `Failed` means the controller stopped trying until the spec changes; the conditions say what failed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClusterPhase {
    /// Accepted; nothing has been created yet.
    Pending,
    /// Infrastructure and control plane are being created.
    Provisioning,
    /// The control plane answers and the kubeconfig Secret exists.
    Provisioned,
    /// Deletion was requested; machines and infrastructure are being released.
    Deleting,
    /// Provisioning failed in a way retrying will not fix; the conditions say what to change.
    Failed,
}

/// What the controller observed about a cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Coarse progress; see the conditions for detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,

    /// The provider in use (`local`, `sim`, `aws`, `baremetal`), copied from `spec.infrastructure` for
    /// `kubectl get`, whose columns cannot print which member of a union is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,

    /// `InfrastructureReady`, `ControlPlaneReady`, `NodesReady`, `AddonsReady` and their summary `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Where the workload cluster's API answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ApiEndpoint>,

    /// Secret holding the admin kubeconfig (key `value`), named `<cluster>-kubeconfig` as in Cluster API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretRef>,

    /// The Kubernetes version every control-plane member runs: as each member's apiserver reports it where the
    /// provider can ask (local), else as the members were made (sim, aws, baremetal). Absent while the members
    /// differ, during an upgrade; pools that follow the cluster roll to a new version only once it shows here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When `spec.ttl` runs out and the cluster will be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// Estimated running cost of the machines the spec asks for, from the provider's price list. Absent when
    /// the provider has no prices (sim, local, bare metal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostEstimate>,
}

/// Host and port of a Kubernetes API server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ApiEndpoint {
    /// DNS name or IP address.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// TCP port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// Estimated cost of running a cluster: the desired machines (control-plane replicas and every MachinePool's
/// replicas, each at its instance type's hourly price), not the machines that exist at the moment, so the estimate
/// is what the cluster costs once converged and does not change with every step of a rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostEstimate {
    /// Cost per hour as a decimal string, e.g. `0.42`: a string because Kubernetes APIs avoid floats. `unknown`
    /// when a machine's instance type has no price (`unpricedInstanceTypes` says which): no guess is made.
    pub per_hour: String,
    /// ISO 4217 currency code, e.g. `USD`.
    pub currency: String,
    /// Instance types the cluster asks for that the provider's price list does not have; while any is listed,
    /// `perHour` is `unknown`. Add them to the price list (for AWS, the manager's `--aws-price-configmap`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unpriced_instance_types: Vec<String>,
    /// What the estimate covers or leaves out, e.g. "on-demand prices, excludes traffic".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_name_names_the_member_that_is_set() {
        let infra = InfrastructureSpec {
            sim: Some(SimSettings::default()),
            ..Default::default()
        };
        assert_eq!(infra.provider_name(), Some("sim"));
        assert_eq!(InfrastructureSpec::default().provider_name(), None);
    }

    #[test]
    fn a_minimal_spec_gets_the_documented_defaults() {
        let spec: ClusterSpec = serde_json::from_value(serde_json::json!({
            "kubernetes": { "version": "v1.37.2" },
            "infrastructure": { "sim": {} }
        }))
        .unwrap();
        assert_eq!(spec.kubernetes.distribution, Distribution::Kubeadm);
        assert_eq!(spec.kubernetes.network, NetworkSpec::default());
        assert_eq!(spec.kubernetes.network.pod_cidr, "10.244.0.0/16");
        assert_eq!(spec.kubernetes.network.service_cidr, "10.96.0.0/12");
        assert_eq!(spec.kubernetes.network.dns_domain, "cluster.local");
        assert_eq!(spec.control_plane.replicas, 1);
        assert!(!spec.paused);
    }
}
