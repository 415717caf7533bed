//! Machines as EC2 instances: find by tag, create with RunInstances, list, terminate.
//!
//! An instance is found by its `slipway.dev/machine` tag before one is ever created. RunInstances also gets a
//! `ClientToken` derived from the cluster's UID and the machine's name, which makes AWS itself return the first
//! instance for a retried request; emulators such as moto ignore it, so the tag lookup is what idempotence
//! rests on.

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, HttpTokensState, Image, Instance,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceStateName, InstanceType,
    ResourceType, Tag, TagSpecification, VolumeType,
};
use base64::Engine;
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use slipway_api::MachinePhase;
use slipway_provider::{ClusterInfo, Machine, MachineRequest, MachineRole, ProviderError, Result};

use crate::client::Ec2;
use crate::network::Network;
use crate::tags;
use crate::throttle::ApiClass::{Describe, Mutate, RunInstances};

/// States of an instance that still exists (terminated ones linger in listings for about an hour).
const LIVE_STATES: &[&str] = &["pending", "running", "shutting-down", "stopping", "stopped"];

/// Which images to look for when a machine names none or names a pattern instead of an AMI id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDefaults {
    /// Name pattern (`*` wildcards) of the image used when `settings.image` is unset.
    pub name_pattern: String,
    /// Owners (account ids or `amazon`, `self`) an image found by name must belong to: without an owner, anyone
    /// could publish a newer image with a matching name.
    pub owners: Vec<String>,
}

impl Default for ImageDefaults {
    fn default() -> Self {
        Self {
            name_pattern: "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*".into(),
            // Canonical.
            owners: vec!["099720109477".into()],
        }
    }
}

fn instance_filters(
    cluster: &ClusterInfo,
    group: Option<&str>,
    machine: Option<&str>,
) -> Vec<aws_sdk_ec2::types::Filter> {
    let mut filters = tags::owned(cluster, None);
    if let Some(group) = group {
        filters.push(tags::filter(tags::POOL, group));
    }
    if let Some(machine) = machine {
        filters.push(tags::filter(tags::MACHINE, machine));
    }
    filters.push(tags::attribute("instance-state-name", LIVE_STATES));
    filters
}

/// Every live instance matching the filters: one DescribeInstances, paged by hand so that each page takes its own
/// token from the rate limiter and is retried on its own.
pub async fn describe(
    ec2: &Ec2,
    cluster: &ClusterInfo,
    group: Option<&str>,
    machine: Option<&str>,
) -> Result<Vec<Instance>> {
    let filters = instance_filters(cluster, group, machine);
    let mut instances = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = ec2
            .call(Describe, "DescribeInstances", |c| {
                c.describe_instances()
                    .set_filters(Some(filters.clone()))
                    .set_next_token(next.clone())
                    .max_results(500)
                    .send()
            })
            .await
            .map_err(|e| e.into_provider(&format!("instances of cluster {}", cluster.key())))?;
        instances.extend(
            page.reservations()
                .iter()
                .flat_map(|r| r.instances().iter().cloned()),
        );
        next = page
            .next_token()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if next.is_none() {
            return Ok(instances);
        }
    }
}

pub fn to_machine(instance: &Instance) -> Option<Machine> {
    let name = tags::value(instance.tags(), tags::MACHINE)?.to_string();
    let phase = match instance.state().and_then(|s| s.name())? {
        InstanceStateName::Pending => MachinePhase::Provisioning,
        InstanceStateName::Running => MachinePhase::Running,
        InstanceStateName::ShuttingDown | InstanceStateName::Stopping => MachinePhase::Deleting,
        // Stopped by someone else: it serves no Node and is replaced.
        InstanceStateName::Stopped => MachinePhase::Failed,
        _ => return None,
    };
    let zone = instance
        .placement()
        .and_then(|p| p.availability_zone())
        .unwrap_or_default();
    let created_at = instance
        .launch_time()
        .and_then(|t| Timestamp::new(t.secs(), t.subsec_nanos() as i32).ok())
        .unwrap_or_else(Timestamp::now);
    Some(Machine {
        name,
        provider_id: provider_id(zone, instance.instance_id().unwrap_or_default()),
        phase,
        ready: phase == MachinePhase::Running,
        template_hash: tags::value(instance.tags(), tags::TEMPLATE_HASH)
            .unwrap_or_default()
            .to_string(),
        created_at,
        version: None,
    })
}

/// The provider ID of an instance, as the AWS cloud provider writes it into `spec.providerID`.
pub fn provider_id(zone: &str, instance_id: &str) -> String {
    format!("aws:///{zone}/{instance_id}")
}

/// The same provider ID, rendered on the instance by cloud-init from its instance data.
pub const PROVIDER_ID_FROM_INSTANCE_DATA: &str =
    "aws:///{{ v1.availability_zone }}/{{ v1.instance_id }}";

/// Machines of one group, one per name (the oldest instance if a race ever made two).
pub fn machines(mut instances: Vec<Instance>) -> Vec<Machine> {
    instances.sort_by_key(|i| i.launch_time().map(|t| (t.secs(), t.subsec_nanos())));
    let mut machines: Vec<Machine> = Vec::new();
    for instance in &instances {
        let Some(machine) = to_machine(instance) else {
            continue;
        };
        if machines.iter().any(|m| m.name == machine.name) {
            tracing::warn!(machine = %machine.name, instance = instance.instance_id().unwrap_or_default(),
                "two instances carry the same machine tag; listing the older one");
            continue;
        }
        machines.push(machine);
    }
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    machines
}

/// The AMI for a machine: `ami-…` is looked up by id, anything else is a name pattern (newest match wins).
pub async fn resolve_image(
    ec2: &Ec2,
    cluster: &ClusterInfo,
    image: Option<&str>,
    defaults: &ImageDefaults,
) -> Result<Image> {
    let image = image.unwrap_or(&defaults.name_pattern);
    let what = format!("machine image {image:?} of cluster {}", cluster.key());
    let not_found = || {
        ProviderError::permanent(
            "ImageNotFound",
            format!(
                "{what}: no such image in region {}; set the machine's image (spec.controlPlane.machine.image, or \
                 spec.template.machine.image of a MachinePool) to an AMI id (ami-…) or a name pattern of images \
                 owned by {}",
                region(cluster),
                defaults.owners.join(", ")
            ),
        )
    };
    let found = if image.starts_with("ami-") {
        ec2.call(Describe, "DescribeImages", |c| {
            c.describe_images().image_ids(image).send()
        })
        .await
    } else {
        ec2.call(Describe, "DescribeImages", |c| {
            c.describe_images()
                .set_owners(Some(defaults.owners.clone()))
                .filters(tags::attribute("name", &[image]))
                .filters(tags::attribute("state", &["available"]))
                .send()
        })
        .await
    };
    let mut images = match found {
        Ok(out) => out.images().to_vec(),
        Err(e) if e.code_starts_with("InvalidAMIID") => return Err(not_found()),
        Err(e) => return Err(e.into_provider(&what)),
    };
    // ISO 8601 dates sort as text; the name breaks ties (dated names sort by date too).
    images.sort_by(|a, b| (a.creation_date(), a.name()).cmp(&(b.creation_date(), b.name())));
    images.pop().ok_or_else(not_found)
}

fn region(cluster: &ClusterInfo) -> &str {
    cluster
        .infrastructure
        .aws
        .as_ref()
        .map_or("?", |a| a.region.as_str())
}

/// A ClientToken (at most 64 ASCII characters) that is the same for every retry of one machine of one cluster,
/// and differs for a later cluster of the same name.
pub fn client_token(cluster: &ClusterInfo, machine: &str) -> String {
    let digest = Sha256::digest(format!("{}/{machine}", cluster.uid));
    hex::encode(&digest[..24])
}

/// The machine's ordinal: the number its name ends in (`demo-md-0-3` → 3), or a stable hash of the name.
fn ordinal(name: &str) -> usize {
    let digits: String = name
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().unwrap_or_else(|_| {
        let digest = Sha256::digest(name);
        u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) as usize
    })
}

/// Control-plane machines go to public subnets (with the API's load balancer), workers to private ones;
/// either way round-robin over the zones by ordinal.
fn subnet_for<'a>(network: &'a Network, request: &MachineRequest) -> Option<&'a (String, String)> {
    let subnets = match request.role {
        MachineRole::ControlPlane => &network.public_subnets,
        MachineRole::Worker { .. } => &network.private_subnets,
    };
    if subnets.is_empty() {
        return None;
    }
    subnets.get(ordinal(&request.name) % subnets.len())
}

/// The instance metadata service as every Slipway instance gets it: IMDSv2 only (a session token is required, so
/// a plain GET from a confused process or an SSRF gets nothing) with a hop limit of 1 (a pod behind the node's
/// network namespace cannot reach it through the node). The user data, which holds the cluster's keys or a join
/// token, is served by this endpoint.
pub fn metadata_options() -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .http_tokens(HttpTokensState::Required)
        .http_put_response_hop_limit(1)
        .build()
}

/// Launches the instance of `request`. The caller has already looked for it by tag.
pub async fn run(
    ec2: &Ec2,
    cluster: &ClusterInfo,
    network: &Network,
    request: &MachineRequest,
    image: &Image,
    instance_type: &str,
) -> Result<Instance> {
    let what = format!("machine {}/{}", cluster.namespace, request.name);
    let (zone, subnet) = subnet_for(network, request).ok_or_else(|| {
        ProviderError::transient(
            "InfrastructureNotReady",
            format!("{what}: the cluster's subnets do not exist yet"),
        )
    })?;
    let groups = match request.role {
        MachineRole::ControlPlane => vec![
            network.control_plane_group.clone(),
            network.node_group.clone(),
        ],
        MachineRole::Worker { .. } => vec![network.node_group.clone()],
    };
    let image_id = image.image_id().unwrap_or_default();
    let mut instance_tags: Vec<Tag> = request
        .settings
        .labels
        .iter()
        // User labels first, so none can overwrite an ownership tag.
        .filter(|(k, _)| !k.starts_with("slipway.dev/") && k.as_str() != tags::NAME)
        .map(|(k, v)| tags::tag(k, v))
        .collect();
    instance_tags.extend([
        tags::tag(tags::CLUSTER, &cluster.key()),
        tags::tag(tags::POOL, request.role.group()),
        tags::tag(tags::MACHINE, &request.name),
        tags::tag(tags::TEMPLATE_HASH, &request.template_hash),
        tags::tag(
            tags::NAME,
            &format!("{}-{}", cluster.namespace, request.name),
        ),
    ]);
    let spec = |resource| {
        TagSpecification::builder()
            .resource_type(resource)
            .set_tags(Some(instance_tags.clone()))
            .build()
    };
    let user_data = request
        .user_data
        .as_deref()
        .map(|data| base64::engine::general_purpose::STANDARD.encode(data));
    let root_volume = request.settings.root_volume_gib.map(|size| {
        BlockDeviceMapping::builder()
            .device_name(image.root_device_name().unwrap_or("/dev/sda1"))
            .ebs(
                EbsBlockDevice::builder()
                    .volume_size(size)
                    .volume_type(VolumeType::Gp3)
                    .delete_on_termination(true)
                    .encrypted(true)
                    .build(),
            )
            .build()
    });
    let token = client_token(cluster, &request.name);
    let out = ec2
        .call(RunInstances, "RunInstances", |c| {
            c.run_instances()
                .image_id(image_id)
                .instance_type(InstanceType::from(instance_type))
                .min_count(1)
                .max_count(1)
                .subnet_id(subnet)
                .set_security_group_ids(Some(groups.clone()))
                .set_user_data(user_data.clone())
                .metadata_options(metadata_options())
                .set_block_device_mappings(root_volume.clone().map(|m| vec![m]))
                .client_token(&token)
                .tag_specifications(spec(ResourceType::Instance))
                .tag_specifications(spec(ResourceType::Volume))
                .send()
        })
        .await
        .map_err(|e| e.into_provider(&format!("{what} ({instance_type}, {image_id} in {zone})")))?;
    let instance = out.instances().first().cloned().ok_or_else(|| {
        ProviderError::transient(
            "AwsError",
            format!("{what}: RunInstances answered without an instance"),
        )
    })?;
    tracing::info!(cluster = %cluster.key(), machine = %request.name,
        instance = instance.instance_id().unwrap_or_default(), %zone, instance_type, "launched instance");
    Ok(instance)
}

/// Terminates the live instances among `instances`; returns the ids still on their way out.
pub async fn terminate(
    ec2: &Ec2,
    cluster: &ClusterInfo,
    instances: &[Instance],
) -> Result<Vec<String>> {
    let pending: Vec<String> = instances
        .iter()
        .filter(|i| {
            !matches!(
                i.state().and_then(|s| s.name()),
                Some(InstanceStateName::ShuttingDown | InstanceStateName::Terminated)
            )
        })
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    if !pending.is_empty() {
        ec2.call(Mutate, "TerminateInstances", |c| {
            c.terminate_instances()
                .set_instance_ids(Some(pending.clone()))
                .send()
        })
        .await
        .map_err(|e| {
            e.into_provider(&format!(
                "instances {} of cluster {}",
                pending.join(", "),
                cluster.key()
            ))
        })?;
        tracing::info!(cluster = %cluster.key(), instances = %pending.join(","), "terminating instances");
    }
    Ok(instances
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect())
}

#[cfg(test)]
mod tests {
    /// What cloud-init renders on an instance from the template is what the provider lists for that instance: run
    /// with real cloud-init (Debian's `cloud-init`, which `hack/test.sh` installs) on instance data shaped as EC2's.
    #[test]
    fn cloud_init_renders_the_provider_id_the_provider_lists() {
        let instance = serde_json::json!({ "v1": { "availability_zone": "eu-west-1b",
            "instance_id": "i-0123456789abcdef0", "cloud_name": "aws", "platform": "ec2",
            "region": "eu-west-1" } });
        assert_eq!(
            slipway_testenv::cloud_init_query(&instance, PROVIDER_ID_FROM_INSTANCE_DATA),
            provider_id("eu-west-1b", "i-0123456789abcdef0")
        );
    }

    use super::*;

    #[test]
    fn instances_require_imdsv2_with_one_hop() {
        let options = metadata_options();
        assert_eq!(options.http_tokens(), Some(&HttpTokensState::Required));
        assert_eq!(options.http_put_response_hop_limit(), Some(1));
        assert_eq!(
            options.http_endpoint(),
            Some(&InstanceMetadataEndpointState::Enabled)
        );
    }

    #[test]
    fn ordinals_come_from_the_trailing_number_or_a_stable_hash() {
        assert_eq!(ordinal("demo-md-0-3"), 3);
        assert_eq!(ordinal("demo-control-plane-12"), 12);
        assert_eq!(ordinal("demo-abcde"), ordinal("demo-abcde"));
    }
}
