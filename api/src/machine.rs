//! Machine settings shared by a Cluster's control plane and a MachinePool's template.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What kind of machine to ask the provider for. Every field is optional: a provider fills in its own
/// default for what is left out (the sim and local providers ignore sizes altogether).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineSettings {
    /// Provider machine type or size, e.g. `t3.medium` on AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub instance_type: Option<String>,

    /// Machine image, on AWS: an AMI id (`ami-…`), or a name pattern matched among Canonical's images (newest
    /// wins). Absent: the newest Canonical Ubuntu 24.04 image, onto which a kubeadm machine's user data installs
    /// its node software (see the README's "Node images and first boot"). The other providers do not use it (bare
    /// metal boots `spec.infrastructure.baremetal.imageUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub image: Option<String>,

    /// Size of the root volume in GiB.
    #[serde(
        rename = "rootVolumeGiB",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 65536))]
    pub root_volume_gib: Option<i32>,

    /// Labels (tags, on AWS) the provider puts on each machine it creates, next to Slipway's own
    /// ownership tags: at most 40, keys of at most 128 and values of at most 256 characters (AWS's tag limits,
    /// with room for Slipway's own tags).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::limits::machine_labels")]
    pub labels: BTreeMap<String, String>,
}
