//! The control plane's endpoint: an internet-facing network load balancer in the cluster's public subnets, with a
//! TCP listener on 6443 that forwards to a target group holding exactly the cluster's running control-plane
//! instances. Its DNS name is the cluster's API endpoint, so the address outlives every single member.
//!
//! Elastic Load Balancing's Describe calls take no tag filter: a piece is found by listing (only those in the
//! cluster's VPC, when that is known) and reading the tags of what is listed with DescribeTags, 20 ARNs a call.
//! Every piece gets its tags in its Create call, so a crash never leaves one that would not be found. Names are
//! unique per account and region and at most 32 characters, so they are made from the cluster's name and a hash
//! of its key and UID ([`resource_name`]); they are never used to find anything.
//!
//! Security: the load balancer is in the control-plane security group, which admits 6443 from
//! `controlPlaneIngressCidrs` and from its own members; with client IP preservation off, the load balancer's
//! connections to the instances come from its own addresses, so that second rule is what lets them (and the health
//! checks) through, and a control-plane machine reaching the API through the endpoint can land on itself.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{Instance, InstanceStateName};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, IpAddressType, LoadBalancer, LoadBalancerAttribute,
    LoadBalancerSchemeEnum, LoadBalancerStateEnum, LoadBalancerTypeEnum, ProtocolEnum,
    TargetDescription, TargetGroup, TargetGroupAttribute, TargetHealthStateEnum, TargetTypeEnum,
};
use sha2::{Digest, Sha256};
use slipway_provider::{ClusterInfo, ProviderError, Result};

use crate::client::{AwsError, Elb};
use crate::network::{API_PORT, Network};
use crate::tags;
use crate::throttle::ApiClass::{Describe, Mutate};

/// Role tag of the load balancer, its listener and its target group.
pub const API: &str = "api";

/// Attributes the provider holds the load balancer and target group to, checked on every reconcile.
/// Cross-zone: a zone's load balancer node would otherwise send only to the members in its own zone, and with
/// fewer members than zones some nodes would have none.
const LOAD_BALANCER_ATTRIBUTES: &[(&str, &str)] = &[("load_balancing.cross_zone.enabled", "true")];
/// Client IP preservation off: a member connecting to the endpoint can be sent to itself, which fails with the
/// client's own address as source (NLB hairpinning); off, the source is the load balancer's address.
const TARGET_GROUP_ATTRIBUTES: &[(&str, &str)] = &[("preserve_client_ip.enabled", "false")];

/// DescribeTags takes at most 20 ARNs.
const TAGS_PER_CALL: usize = 20;
/// The largest page DescribeLoadBalancers and DescribeTargetGroups give.
const PAGE_SIZE: i32 = 400;

/// The API endpoint as the load balancer gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub dns_name: String,
    pub name: String,
    /// `provisioning`, `active`, `active_impaired` or `failed`.
    pub state: String,
}

fn fail(cluster: &ClusterInfo, what: &str) -> impl FnOnce(AwsError) -> ProviderError {
    let what = format!("{what} of cluster {}", cluster.key());
    move |e| e.into_provider(&what)
}

/// The name of the cluster's load balancer and of its target group (the two have separate namespaces):
/// `<cluster name>-<8 hex digits>`, at most 32 characters of lowercase letters, digits and single hyphens, never
/// starting with `internal-` (a prefix AWS keeps for internal load balancers). The hash is of the cluster's key and
/// UID, so a cluster created again under the same name does not collide with its predecessor's load balancer
/// while that one is still being deleted.
pub fn resource_name(cluster: &ClusterInfo) -> String {
    let digest = Sha256::digest(format!("{}/{}", cluster.key(), cluster.uid));
    let hash = hex::encode(&digest[..4]);
    let mut prefix = String::new();
    for c in cluster.name.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if c == '-' && (prefix.is_empty() || prefix.ends_with('-')) {
            continue;
        }
        prefix.push(c);
    }
    let mut prefix = prefix.as_str();
    while prefix == "internal" || prefix.starts_with("internal-") {
        prefix = prefix["internal".len()..].trim_start_matches('-');
    }
    // 32 - "-" - 8 hex digits; the prefix is ASCII, so bytes are characters.
    prefix = &prefix[..prefix.len().min(23)];
    let prefix = prefix.trim_end_matches('-');
    if prefix.is_empty() {
        format!("slipway-{hash}")
    } else {
        format!("{prefix}-{hash}")
    }
}

/// Of `arns`, those whose tags say they are `cluster`'s.
async fn owned_arns(
    elb: &Elb,
    cluster: &ClusterInfo,
    what: &str,
    arns: Vec<String>,
) -> Result<BTreeSet<String>> {
    let mut owned = BTreeSet::new();
    for chunk in arns.chunks(TAGS_PER_CALL) {
        let described = elb
            .call(Describe, "DescribeTags", |c| {
                c.describe_tags()
                    .set_resource_arns(Some(chunk.to_vec()))
                    .send()
            })
            .await;
        let descriptions = match described {
            Ok(out) => out.tag_descriptions().to_vec(),
            // One of them was deleted since it was listed, which fails the whole call: ask one by one and skip
            // what is gone.
            Err(e) if e.code.as_deref().is_some_and(|c| c.ends_with("NotFound")) => {
                let mut descriptions = Vec::new();
                for arn in chunk {
                    match elb
                        .call(Describe, "DescribeTags", |c| {
                            c.describe_tags().resource_arns(arn).send()
                        })
                        .await
                    {
                        Ok(out) => descriptions.extend(out.tag_descriptions().iter().cloned()),
                        Err(e) if e.code.as_deref().is_some_and(|c| c.ends_with("NotFound")) => {}
                        Err(e) => return Err(fail(cluster, what)(e)),
                    }
                }
                descriptions
            }
            Err(e) => return Err(fail(cluster, what)(e)),
        };
        owned.extend(
            descriptions
                .iter()
                .filter(|d| tags::elb_owned(d.tags(), cluster))
                .filter_map(|d| d.resource_arn().map(str::to_string)),
        );
    }
    Ok(owned)
}

/// The cluster's load balancers, oldest first; only those in `vpc` when it is given.
pub async fn owned_load_balancers(
    elb: &Elb,
    cluster: &ClusterInfo,
    vpc: Option<&str>,
) -> Result<Vec<LoadBalancer>> {
    let mut found = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = elb
            .call(Describe, "DescribeLoadBalancers", |c| {
                c.describe_load_balancers()
                    .set_marker(marker.clone())
                    .page_size(PAGE_SIZE)
                    .send()
            })
            .await
            .map_err(fail(cluster, "load balancer"))?;
        found.extend(
            page.load_balancers()
                .iter()
                .filter(|lb| vpc.is_none_or(|vpc| lb.vpc_id() == Some(vpc)))
                .cloned(),
        );
        marker = page
            .next_marker()
            .filter(|m| !m.is_empty())
            .map(str::to_string);
        if marker.is_none() {
            break;
        }
    }
    let arns = found
        .iter()
        .filter_map(|lb| lb.load_balancer_arn().map(str::to_string))
        .collect();
    let owned = owned_arns(elb, cluster, "load balancer", arns).await?;
    found.retain(|lb| lb.load_balancer_arn().is_some_and(|a| owned.contains(a)));
    found.sort_by_key(|lb| {
        (
            lb.created_time().map(|t| (t.secs(), t.subsec_nanos())),
            lb.load_balancer_arn().map(str::to_string),
        )
    });
    Ok(found)
}

/// The cluster's target groups, sorted by ARN; only those in `vpc` when it is given.
pub async fn owned_target_groups(
    elb: &Elb,
    cluster: &ClusterInfo,
    vpc: Option<&str>,
) -> Result<Vec<TargetGroup>> {
    let mut found = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = elb
            .call(Describe, "DescribeTargetGroups", |c| {
                c.describe_target_groups()
                    .set_marker(marker.clone())
                    .page_size(PAGE_SIZE)
                    .send()
            })
            .await
            .map_err(fail(cluster, "target group"))?;
        found.extend(
            page.target_groups()
                .iter()
                .filter(|tg| vpc.is_none_or(|vpc| tg.vpc_id() == Some(vpc)))
                .cloned(),
        );
        marker = page
            .next_marker()
            .filter(|m| !m.is_empty())
            .map(str::to_string);
        if marker.is_none() {
            break;
        }
    }
    let arns = found
        .iter()
        .filter_map(|tg| tg.target_group_arn().map(str::to_string))
        .collect();
    let owned = owned_arns(elb, cluster, "target group", arns).await?;
    found.retain(|tg| tg.target_group_arn().is_some_and(|a| owned.contains(a)));
    found.sort_by_key(|tg| tg.target_group_arn().map(str::to_string));
    Ok(found)
}

/// The ARNs of the listeners of load balancer `arn`; none when it is gone.
pub async fn listeners(elb: &Elb, cluster: &ClusterInfo, arn: &str) -> Result<Vec<String>> {
    Ok(listeners_of(elb, cluster, arn)
        .await?
        .into_iter()
        .filter_map(|l| l.listener_arn().map(str::to_string))
        .collect())
}

async fn listeners_of(
    elb: &Elb,
    cluster: &ClusterInfo,
    arn: &str,
) -> Result<Vec<aws_sdk_elasticloadbalancingv2::types::Listener>> {
    let mut found = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = elb
            .call(Describe, "DescribeListeners", |c| {
                c.describe_listeners()
                    .load_balancer_arn(arn)
                    .set_marker(marker.clone())
                    .send()
            })
            .await;
        let page = match page {
            Ok(page) => page,
            Err(e) if e.code_is("LoadBalancerNotFound") => return Ok(Vec::new()),
            Err(e) => return Err(fail(cluster, "load balancer listener")(e)),
        };
        found.extend(page.listeners().iter().cloned());
        marker = page
            .next_marker()
            .filter(|m| !m.is_empty())
            .map(str::to_string);
        if marker.is_none() {
            return Ok(found);
        }
    }
}

/// Creates or repairs the load balancer, its target group and its listener; returns the endpoint once all three
/// exist.
pub async fn reconcile(elb: &Elb, cluster: &ClusterInfo, network: &Network) -> Result<Endpoint> {
    let load_balancer = ensure_load_balancer(elb, cluster, network).await?;
    let lb_arn = load_balancer
        .load_balancer_arn()
        .ok_or_else(|| ProviderError::transient("AwsError", "a load balancer without an ARN"))?;
    let target_group = ensure_target_group(elb, cluster, &network.vpc_id).await?;
    ensure_listener(elb, cluster, lb_arn, &target_group).await?;
    Ok(Endpoint {
        dns_name: load_balancer.dns_name().unwrap_or_default().to_string(),
        name: load_balancer
            .load_balancer_name()
            .unwrap_or_default()
            .to_string(),
        state: load_balancer
            .state()
            .and_then(|s| s.code())
            .map_or("unknown", LoadBalancerStateEnum::as_str)
            .to_string(),
    })
}

async fn ensure_load_balancer(
    elb: &Elb,
    cluster: &ClusterInfo,
    network: &Network,
) -> Result<LoadBalancer> {
    let what = "load balancer";
    let public: Vec<String> = network
        .public_subnets
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    let found = owned_load_balancers(elb, cluster, Some(&network.vpc_id)).await?;
    let load_balancer = match found.into_iter().next() {
        Some(found) => found,
        None => {
            let name = resource_name(cluster);
            let created = elb
                .call(Mutate, "CreateLoadBalancer", |c| {
                    c.create_load_balancer()
                        .name(&name)
                        .r#type(LoadBalancerTypeEnum::Network)
                        .scheme(LoadBalancerSchemeEnum::InternetFacing)
                        .ip_address_type(IpAddressType::Ipv4)
                        .set_subnets(Some(public.clone()))
                        // A network load balancer takes security groups only when it is created.
                        .security_groups(&network.control_plane_group)
                        .set_tags(Some(tags::elb(cluster, API, API)))
                        .send()
                })
                .await
                .map_err(fail(cluster, what))?;
            let load_balancer = created.load_balancers().first().cloned().ok_or_else(|| {
                ProviderError::transient(
                    "AwsError",
                    "CreateLoadBalancer answered without a load balancer",
                )
            })?;
            tracing::info!(cluster = %cluster.key(), load_balancer = %name,
                dns_name = load_balancer.dns_name().unwrap_or_default(), "created network load balancer");
            load_balancer
        }
    };
    let arn = load_balancer
        .load_balancer_arn()
        .unwrap_or_default()
        .to_string();
    // A zone added to the cluster: the load balancer gets its public subnet too (subnets are only ever added; a
    // network load balancer may refuse to lose one).
    let mut subnets: Vec<String> = load_balancer
        .availability_zones()
        .iter()
        .filter_map(|z| z.subnet_id().map(str::to_string))
        .collect();
    let missing: Vec<&String> = public.iter().filter(|s| !subnets.contains(s)).collect();
    if !missing.is_empty() {
        subnets.extend(missing.into_iter().cloned());
        elb.call(Mutate, "SetSubnets", |c| {
            c.set_subnets()
                .load_balancer_arn(&arn)
                .set_subnets(Some(subnets.clone()))
                .send()
        })
        .await
        .map_err(fail(cluster, what))?;
    }
    let attributes = elb
        .call(Describe, "DescribeLoadBalancerAttributes", |c| {
            c.describe_load_balancer_attributes()
                .load_balancer_arn(&arn)
                .send()
        })
        .await
        .map_err(fail(cluster, what))?;
    let wrong: Vec<LoadBalancerAttribute> = LOAD_BALANCER_ATTRIBUTES
        .iter()
        .filter(|(key, value)| {
            !attributes
                .attributes()
                .iter()
                .any(|a| a.key() == Some(key) && a.value() == Some(value))
        })
        .map(|(key, value)| {
            LoadBalancerAttribute::builder()
                .key(*key)
                .value(*value)
                .build()
        })
        .collect();
    if !wrong.is_empty() {
        elb.call(Mutate, "ModifyLoadBalancerAttributes", |c| {
            c.modify_load_balancer_attributes()
                .load_balancer_arn(&arn)
                .set_attributes(Some(wrong.clone()))
                .send()
        })
        .await
        .map_err(fail(cluster, what))?;
    }
    Ok(load_balancer)
}

async fn ensure_target_group(elb: &Elb, cluster: &ClusterInfo, vpc_id: &str) -> Result<String> {
    let what = "target group";
    let found = owned_target_groups(elb, cluster, Some(vpc_id)).await?;
    let arn = match found.first().and_then(|tg| tg.target_group_arn()) {
        Some(arn) => arn.to_string(),
        None => {
            let name = resource_name(cluster);
            let created = elb
                .call(Mutate, "CreateTargetGroup", |c| {
                    c.create_target_group()
                        .name(&name)
                        .protocol(ProtocolEnum::Tcp)
                        .port(API_PORT)
                        .vpc_id(vpc_id)
                        .target_type(TargetTypeEnum::Instance)
                        // A member counts once its apiserver accepts connections; 10 s checks and 3 in a row
                        // bring a new member in (or take a dead one out) within half a minute.
                        .health_check_protocol(ProtocolEnum::Tcp)
                        .health_check_port("traffic-port")
                        .health_check_interval_seconds(10)
                        .healthy_threshold_count(3)
                        .unhealthy_threshold_count(3)
                        .set_tags(Some(tags::elb(cluster, API, API)))
                        .send()
                })
                .await
                .map_err(fail(cluster, what))?;
            let arn = created
                .target_groups()
                .first()
                .and_then(|tg| tg.target_group_arn())
                .ok_or_else(|| {
                    ProviderError::transient(
                        "AwsError",
                        "CreateTargetGroup answered without a target group",
                    )
                })?
                .to_string();
            tracing::info!(cluster = %cluster.key(), target_group = %name, "created target group");
            arn
        }
    };
    let attributes = elb
        .call(Describe, "DescribeTargetGroupAttributes", |c| {
            c.describe_target_group_attributes()
                .target_group_arn(&arn)
                .send()
        })
        .await
        .map_err(fail(cluster, what))?;
    let wrong: Vec<TargetGroupAttribute> = TARGET_GROUP_ATTRIBUTES
        .iter()
        .filter(|(key, value)| {
            !attributes
                .attributes()
                .iter()
                .any(|a| a.key() == Some(key) && a.value() == Some(value))
        })
        .map(|(key, value)| {
            TargetGroupAttribute::builder()
                .key(*key)
                .value(*value)
                .build()
        })
        .collect();
    if !wrong.is_empty() {
        elb.call(Mutate, "ModifyTargetGroupAttributes", |c| {
            c.modify_target_group_attributes()
                .target_group_arn(&arn)
                .set_attributes(Some(wrong.clone()))
                .send()
        })
        .await
        .map_err(fail(cluster, what))?;
    }
    Ok(arn)
}

fn forward_to(target_group: &str) -> Action {
    Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .target_group_arn(target_group)
        .build()
}

/// Whether `action` sends everything to `target_group`.
fn forwards_to(action: &Action, target_group: &str) -> bool {
    if action.r#type() != Some(&ActionTypeEnum::Forward) {
        return false;
    }
    match action.forward_config().map(|f| f.target_groups()) {
        Some(groups) if !groups.is_empty() => {
            groups.len() == 1 && groups[0].target_group_arn() == Some(target_group)
        }
        _ => action.target_group_arn() == Some(target_group),
    }
}

async fn ensure_listener(
    elb: &Elb,
    cluster: &ClusterInfo,
    load_balancer: &str,
    target_group: &str,
) -> Result<()> {
    let what = "load balancer listener";
    let existing = listeners_of(elb, cluster, load_balancer).await?;
    let Some(listener) = existing.iter().find(|l| l.port() == Some(API_PORT)) else {
        elb.call(Mutate, "CreateListener", |c| {
            c.create_listener()
                .load_balancer_arn(load_balancer)
                .protocol(ProtocolEnum::Tcp)
                .port(API_PORT)
                .default_actions(forward_to(target_group))
                .set_tags(Some(tags::elb(cluster, API, API)))
                .send()
        })
        .await
        .map_err(fail(cluster, what))?;
        tracing::info!(cluster = %cluster.key(), "created load balancer listener on {API_PORT}");
        return Ok(());
    };
    let right = listener.protocol() == Some(&ProtocolEnum::Tcp)
        && listener.default_actions().len() == 1
        && forwards_to(&listener.default_actions()[0], target_group);
    if !right {
        let arn = listener.listener_arn().unwrap_or_default();
        elb.call(Mutate, "ModifyListener", |c| {
            c.modify_listener()
                .listener_arn(arn)
                .protocol(ProtocolEnum::Tcp)
                .port(API_PORT)
                .default_actions(forward_to(target_group))
                .send()
        })
        .await
        .map_err(fail(cluster, what))?;
        tracing::info!(cluster = %cluster.key(), listener = arn, "listener on {API_PORT} forwards to the target group again");
    }
    Ok(())
}

/// Makes the cluster's target group hold exactly the running instances among `control_plane`: registers those
/// missing, deregisters every other target (a terminated, stopping or stopped instance, or one that is no member
/// at all). `vpc` is the cluster's VPC; `None` when its network is gone, and with it any target group to update.
pub async fn sync_targets(
    elb: &Elb,
    cluster: &ClusterInfo,
    vpc: Option<&str>,
    control_plane: &[Instance],
) -> Result<()> {
    let Some(vpc) = vpc else {
        return Ok(());
    };
    let what = "target group";
    let running: BTreeSet<String> = control_plane
        .iter()
        .filter(|i| i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Running))
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    for group in owned_target_groups(elb, cluster, Some(vpc)).await? {
        let Some(arn) = group.target_group_arn() else {
            continue;
        };
        let health = elb
            .call(Describe, "DescribeTargetHealth", |c| {
                c.describe_target_health().target_group_arn(arn).send()
            })
            .await
            .map_err(fail(cluster, what))?;
        // A target being deregistered drains for a while and is listed meanwhile; it is on its way out already.
        let registered: BTreeSet<String> = health
            .target_health_descriptions()
            .iter()
            .filter(|d| {
                d.target_health().and_then(|h| h.state()) != Some(&TargetHealthStateEnum::Draining)
            })
            .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_string))
            .collect();
        let targets = |ids: Vec<&String>| -> Vec<TargetDescription> {
            ids.into_iter()
                .map(|id| TargetDescription::builder().id(id).build())
                .collect()
        };
        let add = targets(running.difference(&registered).collect());
        let remove = targets(registered.difference(&running).collect());
        if !add.is_empty() {
            let registered = elb
                .call(Mutate, "RegisterTargets", |c| {
                    c.register_targets()
                        .target_group_arn(arn)
                        .set_targets(Some(add.clone()))
                        .send()
                })
                .await;
            match registered {
                Ok(_) => {
                    tracing::info!(cluster = %cluster.key(), target_group = arn, instances = ?ids(&add),
                        "registered control-plane instances with the load balancer")
                }
                // One of them stopped running since it was listed; the next listing has it right.
                Err(e) if e.code_is("InvalidTarget") => {
                    tracing::info!(cluster = %cluster.key(), target_group = arn, error = %e.message,
                        "registering control-plane instances; trying again at the next listing")
                }
                Err(e) => return Err(fail(cluster, what)(e)),
            }
        }
        if !remove.is_empty() {
            let deregistered = elb
                .call(Mutate, "DeregisterTargets", |c| {
                    c.deregister_targets()
                        .target_group_arn(arn)
                        .set_targets(Some(remove.clone()))
                        .send()
                })
                .await;
            match deregistered {
                Ok(_) => {
                    tracing::info!(cluster = %cluster.key(), target_group = arn, instances = ?ids(&remove),
                        "deregistered instances from the load balancer")
                }
                Err(e) if e.code_is("InvalidTarget") => {
                    tracing::info!(cluster = %cluster.key(), target_group = arn, error = %e.message,
                        "deregistering instances; trying again at the next listing")
                }
                Err(e) => return Err(fail(cluster, what)(e)),
            }
        }
    }
    Ok(())
}

fn ids(targets: &[TargetDescription]) -> Vec<&str> {
    targets.iter().filter_map(|t| t.id()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(namespace: &str, name: &str, uid: &str) -> ClusterInfo {
        ClusterInfo {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            kubernetes_version: "v1.37.2".into(),
            infrastructure: Default::default(),
        }
    }

    fn valid(name: &str) -> bool {
        name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-')
            && !name.contains("--")
            && !name.starts_with("internal-")
    }

    #[test]
    fn names_fit_elastic_load_balancing_rules_and_differ_per_cluster_incarnation() {
        let demo = resource_name(&cluster("default", "demo", "u1"));
        assert!(
            demo.starts_with("demo-") && demo.len() == "demo-".len() + 8,
            "{demo}"
        );
        assert_ne!(demo, resource_name(&cluster("default", "demo", "u2")));
        assert_ne!(demo, resource_name(&cluster("other", "demo", "u1")));
        for name in [
            "demo",
            "a-very-long-cluster-name-that-goes-on-and-on",
            "internal-api",
            "internal",
            "internal-internal",
            "x--y",
            "-",
            "twenty-three-characters-",
        ] {
            let made = resource_name(&cluster("default", name, "u"));
            assert!(valid(&made), "{name:?} → {made:?}");
        }
        assert!(resource_name(&cluster("d", "internal-api", "u")).starts_with("api-"));
    }

    #[test]
    fn a_listener_forwarding_elsewhere_is_noticed() {
        assert!(forwards_to(&forward_to("tg-a"), "tg-a"));
        assert!(!forwards_to(&forward_to("tg-b"), "tg-a"));
        let fixed = Action::builder()
            .r#type(ActionTypeEnum::FixedResponse)
            .build();
        assert!(!forwards_to(&fixed, "tg-a"));
    }
}
