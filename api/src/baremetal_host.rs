//! `BareMetalHost`: one physical machine behind a Redfish BMC, the inventory the `baremetal` provider claims
//! machines from.
//!
//! The spec says how to reach the BMC; the status is written by Slipway only: the host controller records what
//! the BMC reports (power, vendor) and whether it answers, the provider records who holds the host. Labels on the
//! object itself are what a Cluster's `spec.infrastructure.baremetal.hostSelector` selects.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cluster::SecretRef;

/// How to reach a host's baseboard management controller, and which NIC it boots from.
// The derive generates the `BareMetalHost` resource type around it, with `metadata` and `status`.
// Several printer columns are strings, and clippy takes each repeated `type_ = "string"` for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "slipway.dev",
    version = "v1alpha1",
    kind = "BareMetalHost",
    namespaced,
    status = "BareMetalHostStatus",
    derive = "PartialEq",
    shortname = "bmh",
    category = "slipway",
    doc = "A physical machine behind a Redfish BMC that the baremetal provider can claim for a cluster.",
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Power", type_ = "string", json_path = ".status.powerState"),
    printcolumn(
        name = "Consumer",
        type_ = "string",
        json_path = ".status.consumerRef.machine"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BareMetalHostSpec {
    /// The host's BMC: where it answers Redfish and with which credentials.
    pub bmc: BmcDetails,

    /// MAC address of the NIC the host boots from, e.g. `52:54:00:12:34:56`. Informational for now: hosts boot
    /// from virtual media, not the network.
    #[serde(
        rename = "bootMACAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = 17))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$')")
        .message("spec.bootMACAddress: must be a MAC address such as 52:54:00:12:34:56"))]
    pub boot_mac_address: Option<String>,
}

/// Where a BMC answers Redfish and how to log in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
// A struct-level rule rather than a required field, so that a missing Secret is refused with a message that
// says what to put there instead of the schema's bare "Required value".
#[x_kube(validation = Rule::new("has(self.credentialsSecretRef)").message(
    "spec.bmc.credentialsSecretRef: required; name a Secret in this namespace with the keys username and password"
))]
pub struct BmcDetails {
    /// The Redfish System of the host, e.g. `redfish+https://10.0.0.5/redfish/v1/Systems/1`. The scheme is
    /// `redfish+https` (or `redfish+http` for a BMC without TLS); everything else is found by following links
    /// from the BMC's service root.
    #[schemars(length(max = 2048))]
    #[x_kube(
        validation = Rule::new("self.startsWith('redfish+https://') || self.startsWith('redfish+http://')")
            .message("spec.bmc.address: must start with redfish+https:// (or redfish+http://), e.g. redfish+https://10.0.0.5/redfish/v1/Systems/1"),
        validation = Rule::new("!(self.startsWith('redfish+https://') || self.startsWith('redfish+http://')) || self.matches('^redfish[+]https?://[^/]+/redfish/v1/Systems/[^/]+/?$')")
            .message("spec.bmc.address: must name one Redfish System, e.g. redfish+https://10.0.0.5:443/redfish/v1/Systems/1")
    )]
    pub address: String,

    /// Secret in this namespace with the keys `username` and `password` of a BMC account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "self.name.size() <= 253 && self.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')"
    ).message("spec.bmc.credentialsSecretRef.name: must be the name of a Secret in this namespace (lowercase letters, digits, '-' and '.')"))]
    pub credentials_secret_ref: Option<SecretRef>,

    /// Accept any certificate from the BMC. Many BMCs ship a self-signed one; prefer giving them a trusted
    /// certificate, since without verification anyone on the path can read the BMC password.
    #[serde(default)]
    pub disable_certificate_verification: bool,
}

/// Where a host is in its life: found, free, being booted for a cluster, in use, being released, or broken.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum HostState {
    /// Just created; the BMC has not been read yet.
    Registering,
    /// The BMC answers and no cluster holds the host: it can be claimed.
    Available,
    /// Claimed by a cluster; the installer image is being attached and the host powered on.
    Provisioning,
    /// Claimed, booted from the image and powered on.
    Provisioned,
    /// Being released: powering off and ejecting the image before it is Available again.
    Deprovisioning,
    /// The BMC does not answer or refuses the credentials; `lastError` says what to fix. Retried periodically.
    Error,
}

/// What Slipway observed about a host and who holds it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BareMetalHostStatus {
    /// Where the host is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<HostState>,

    /// The power state the BMC reported last: `On`, `Off`, `PoweringOn`, `PoweringOff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_state: Option<String>,

    /// The cluster machine that holds the host; absent while the host is free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_ref: Option<ConsumerRef>,

    /// What is being booted on the host for its consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<ProvisioningStatus>,

    /// Why the host is in `Error`, or what last went wrong with it; never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Who made the machine, as the BMC says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<VendorDetails>,
}

/// The machine of a cluster that holds a host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerRef {
    /// Namespace of the Cluster (the host's own namespace).
    pub namespace: String,
    /// Name of the Cluster.
    pub cluster: String,
    /// UID of the Cluster: tells it from an earlier Cluster of the same name.
    #[serde(
        rename = "clusterUID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_uid: Option<String>,
    /// The machine group: `control-plane` or the MachinePool's name.
    pub group: String,
    /// Name of the machine.
    pub machine: String,
}

/// What is being booted on a claimed host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningStatus {
    /// The installer image attached as virtual CD.
    pub image_url: String,
    /// Hash of the machine template the host was claimed for; a host with another hash is outdated.
    #[serde(default)]
    pub template_hash: String,
    /// When the host was claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<Time>,
    /// When the image was attached, the one-time boot from CD set and power-on asked for. Absent: still to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booted_at: Option<Time>,
    /// When power-off and eject were last asked for while the host is released. The host stays
    /// `Deprovisioning` until the BMC reports it off; the ask is repeated only when it is old, because some BMCs
    /// restart a pending power change when asked again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_requested_at: Option<Time>,
    /// The Secret in this namespace holding the machine's user data (key `value`), written before the claim and
    /// deleted after the release. Absent: the machine boots without user data. The host is powered on only once
    /// this Secret exists with this UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_secret_ref: Option<UserDataSecretRef>,
}

/// One incarnation of a Secret: its name and UID. The UID makes sure a release deletes the Secret its claim was
/// made with, never a newer one of the same name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserDataSecretRef {
    /// Name of the Secret.
    pub name: String,
    /// UID of the Secret.
    pub uid: String,
}

/// Manufacturer and model, as the BMC reports them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VendorDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_reads_the_documented_field_names() {
        let spec: BareMetalHostSpec = serde_json::from_value(serde_json::json!({
            "bmc": {
                "address": "redfish+https://10.0.0.5/redfish/v1/Systems/1",
                "credentialsSecretRef": { "name": "bmc-1" }
            },
            "bootMACAddress": "52:54:00:12:34:56"
        }))
        .unwrap();
        assert!(!spec.bmc.disable_certificate_verification);
        assert_eq!(spec.boot_mac_address.as_deref(), Some("52:54:00:12:34:56"));
        assert_eq!(spec.bmc.credentials_secret_ref.unwrap().name, "bmc-1");
    }
}
