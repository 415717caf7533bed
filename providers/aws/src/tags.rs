//! Ownership tags: how the provider finds what it made, after a crash, a restart or on another replica.
//!
//! Every resource carries `slipway.dev/cluster=<namespace>/<name>` and a `Name` a person can read in the console;
//! a `slipway.dev/role` tells the pieces of one kind apart (public from private subnets, control-plane from node
//! security groups). Instances also carry their pool, machine name and template hash. Nothing is looked up by
//! remembered ids: tags are the truth, so every step finds before it creates. The load balancer, its listener and
//! target group carry the same tags in Elastic Load Balancing's own tag type ([`elb`]).

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use slipway_provider::ClusterInfo;

pub const CLUSTER: &str = "slipway.dev/cluster";
pub const ROLE: &str = "slipway.dev/role";
pub const POOL: &str = "slipway.dev/pool";
pub const MACHINE: &str = "slipway.dev/machine";
pub const TEMPLATE_HASH: &str = "slipway.dev/template-hash";
/// The availability zone of a per-zone piece (a NAT gateway, its Elastic IP, a zone's private route table).
pub const ZONE: &str = "slipway.dev/zone";
pub const NAME: &str = "Name";

/// A filter on one tag's value, `tag:<key>=<value>`.
pub fn filter(key: &str, value: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build()
}

/// A filter on a plain attribute, e.g. `vpc-id` or `instance-state-name`.
pub fn attribute(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

/// Filters that select what Slipway made for `cluster` in the given role.
pub fn owned(cluster: &ClusterInfo, role: Option<&str>) -> Vec<Filter> {
    let mut filters = vec![filter(CLUSTER, &cluster.key())];
    if let Some(role) = role {
        filters.push(filter(ROLE, role));
    }
    filters
}

/// A readable `Name`: `<namespace>-<name>-<suffix>`.
pub fn name(cluster: &ClusterInfo, suffix: &str) -> String {
    format!("{}-{}-{suffix}", cluster.namespace, cluster.name)
}

/// The tags of a cluster resource, `Name` being `<namespace>-<name>-<suffix>`; applied at creation
/// (tag-on-create), so a resource never exists untagged and a crash cannot leave an orphan we would not find.
pub fn spec(
    resource: ResourceType,
    cluster: &ClusterInfo,
    role: &str,
    suffix: &str,
    extra: &[(&str, &str)],
) -> TagSpecification {
    let mut tags = vec![
        tag(CLUSTER, &cluster.key()),
        tag(ROLE, role),
        tag(NAME, &name(cluster, suffix)),
    ];
    tags.extend(extra.iter().map(|(k, v)| tag(k, v)));
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(tags))
        .build()
}

pub fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

/// The value of tag `key` in `tags`.
pub fn value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// The cluster's tags for an Elastic Load Balancing resource, given in its Create call so that it never exists
/// untagged.
pub fn elb(
    cluster: &ClusterInfo,
    role: &str,
    suffix: &str,
) -> Vec<aws_sdk_elasticloadbalancingv2::types::Tag> {
    [
        (CLUSTER, cluster.key()),
        (ROLE, role.to_string()),
        (NAME, name(cluster, suffix)),
    ]
    .into_iter()
    .map(|(key, value)| {
        aws_sdk_elasticloadbalancingv2::types::Tag::builder()
            .key(key)
            .value(value)
            .build()
    })
    .collect()
}

/// Whether Elastic Load Balancing tags mark a resource as `cluster`'s.
pub fn elb_owned(
    tags: &[aws_sdk_elasticloadbalancingv2::types::Tag],
    cluster: &ClusterInfo,
) -> bool {
    tags.iter()
        .any(|t| t.key() == Some(CLUSTER) && t.value() == Some(cluster.key().as_str()))
}
