//! A cluster's shared network: VPC, subnets, internet gateway, NAT gateways, route tables and security groups.
//! (The load balancer in front of the control plane is made in `load_balancer`, and deleted here with the rest.)
//!
//! Each step lists what carries the cluster's tag before it creates anything, so a reconcile that crashed half
//! way picks up where it stopped, and a second reconcile creates nothing. Deletion works from the same tags and
//! so removes only what Slipway made: an adopted VPC (and whatever else was in it before) is left alone.

use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, IpPermission, IpRange, NatGateway, NatGatewayState,
    ResourceType, RouteTable, SecurityGroup, Subnet, UserIdGroupPair,
};
use slipway_api::{AwsSettings, NatGateways};
use slipway_provider::{ClusterInfo, Deletion, ProviderError, Result};

use crate::cidr::Cidr;
use crate::client::{Aws, AwsError, Ec2};
use crate::throttle::ApiClass::{Describe, Mutate};
use crate::{load_balancer, tags};

pub const API_PORT: i32 = 6443;

/// Role tags of the pieces of a cluster network.
pub const PUBLIC: &str = "public";
pub const PRIVATE: &str = "private";
pub const CONTROL_PLANE: &str = "control-plane";
pub const NODES: &str = "nodes";
const VPC: &str = "vpc";
const GATEWAY: &str = "gateway";
/// NAT gateways and their Elastic IPs.
pub const NAT: &str = "nat";

/// How many zones the provider picks when `availabilityZones` is empty.
const DEFAULT_ZONE_COUNT: usize = 3;

/// What machines need to know about the network, found by tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub vpc_id: String,
    /// (zone, subnet id), sorted by zone.
    pub public_subnets: Vec<(String, String)>,
    pub private_subnets: Vec<(String, String)>,
    pub control_plane_group: String,
    pub node_group: String,
}

fn fail(cluster: &ClusterInfo, what: &str) -> impl FnOnce(AwsError) -> ProviderError {
    let what = format!("{what} of cluster {}", cluster.key());
    move |e| e.into_provider(&what)
}

/// Creates or repairs the whole network; returns it once every piece exists.
pub async fn reconcile(
    ec2: &Ec2,
    cluster: &ClusterInfo,
    settings: &AwsSettings,
    vpc_cidr: &str,
) -> Result<Network> {
    let (vpc_id, cidr) = ensure_vpc(ec2, cluster, settings, vpc_cidr).await?;
    let zones = zones(ec2, cluster, settings).await?;
    let gateway = ensure_internet_gateway(ec2, cluster, &vpc_id).await?;
    let (public_subnets, private_subnets) =
        ensure_subnets(ec2, cluster, &vpc_id, &cidr, &zones).await?;
    ensure_route_table(
        ec2,
        cluster,
        &vpc_id,
        PUBLIC,
        Some(&gateway),
        &public_subnets,
    )
    .await?;
    let nat_gateways = ensure_nat_gateways(ec2, cluster, settings, &public_subnets).await?;
    ensure_private_route_tables(
        ec2,
        cluster,
        settings,
        &vpc_id,
        &private_subnets,
        &nat_gateways,
    )
    .await?;
    let (control_plane_group, node_group) =
        ensure_security_groups(ec2, cluster, settings, &vpc_id).await?;
    Ok(Network {
        vpc_id,
        public_subnets,
        private_subnets,
        control_plane_group,
        node_group,
    })
}

/// The VPC the cluster's subnets are in, without creating anything; `None` once they are gone.
pub async fn vpc_id(ec2: &Ec2, cluster: &ClusterInfo) -> Result<Option<String>> {
    Ok(owned_subnets(ec2, cluster)
        .await?
        .iter()
        .find_map(|s| s.vpc_id().map(str::to_string)))
}

/// The network as it is, without creating anything; `None` while a piece is missing.
pub async fn find(ec2: &Ec2, cluster: &ClusterInfo) -> Result<Option<Network>> {
    let subnets = owned_subnets(ec2, cluster).await?;
    let by_role = |role: &str| -> Vec<(String, String)> {
        let mut found: Vec<_> = subnets
            .iter()
            .filter(|s| tags::value(s.tags(), tags::ROLE) == Some(role))
            .filter_map(|s| {
                Some((
                    s.availability_zone()?.to_string(),
                    s.subnet_id()?.to_string(),
                ))
            })
            .collect();
        found.sort();
        found
    };
    let (public_subnets, private_subnets) = (by_role(PUBLIC), by_role(PRIVATE));
    let groups = owned_groups(ec2, cluster).await?;
    let group = |role: &str| {
        groups
            .iter()
            .find(|g| tags::value(g.tags(), tags::ROLE) == Some(role))
            .and_then(|g| g.group_id().map(str::to_string))
    };
    let vpc_id = subnets.first().and_then(|s| s.vpc_id()).map(str::to_string);
    Ok(match (vpc_id, group(CONTROL_PLANE), group(NODES)) {
        (Some(vpc_id), Some(control_plane_group), Some(node_group))
            if !public_subnets.is_empty() && !private_subnets.is_empty() =>
        {
            Some(Network {
                vpc_id,
                public_subnets,
                private_subnets,
                control_plane_group,
                node_group,
            })
        }
        _ => None,
    })
}

/// The adopted VPC, or the one Slipway made for the cluster (made now if missing). Returns (id, CIDR).
async fn ensure_vpc(
    ec2: &Ec2,
    cluster: &ClusterInfo,
    settings: &AwsSettings,
    vpc_cidr: &str,
) -> Result<(String, String)> {
    if let Some(id) = &settings.vpc_id {
        let found = ec2
            .call(Describe, "DescribeVpcs", |c| {
                c.describe_vpcs().vpc_ids(id).send()
            })
            .await;
        let vpc = match found {
            Ok(out) => out.vpcs().first().cloned(),
            Err(e) if e.code_starts_with("InvalidVpcID") => None,
            Err(e) => return Err(fail(cluster, "VPC")(e)),
        };
        return match vpc.and_then(|v| Some((v.vpc_id()?.to_string(), v.cidr_block()?.to_string())))
        {
            Some(found) => Ok(found),
            None => Err(ProviderError::permanent(
                "VpcNotFound",
                format!(
                    "spec.infrastructure.aws.vpcId: VPC {id} does not exist in {}; \
                     set an existing VPC or leave vpcId unset to let Slipway create one",
                    settings.region
                ),
            )),
        };
    }
    let found = ec2
        .call(Describe, "DescribeVpcs", |c| {
            c.describe_vpcs()
                .set_filters(Some(tags::owned(cluster, Some(VPC))))
                .send()
        })
        .await
        .map_err(fail(cluster, "VPC"))?;
    if let Some(vpc) = found.vpcs().first()
        && let (Some(id), Some(cidr)) = (vpc.vpc_id(), vpc.cidr_block())
    {
        return Ok((id.to_string(), cidr.to_string()));
    }
    let created = ec2
        .call(Mutate, "CreateVpc", |c| {
            c.create_vpc()
                .cidr_block(vpc_cidr)
                .tag_specifications(tags::spec(ResourceType::Vpc, cluster, VPC, VPC, &[]))
                .send()
        })
        .await
        .map_err(fail(cluster, "VPC"))?;
    let id = created
        .vpc()
        .and_then(|v| v.vpc_id())
        .ok_or_else(|| ProviderError::transient("AwsError", "CreateVpc answered without a VPC id"))?
        .to_string();
    tracing::info!(cluster = %cluster.key(), vpc = %id, "created VPC");
    // Instances get DNS names, which kubeadm uses as node names.
    ec2.call(Mutate, "ModifyVpcAttribute", |c| {
        c.modify_vpc_attribute()
            .vpc_id(&id)
            .enable_dns_hostnames(AttributeBooleanValue::builder().value(true).build())
            .send()
    })
    .await
    .map_err(fail(cluster, "VPC"))?;
    Ok((id, vpc_cidr.to_string()))
}

async fn zones(ec2: &Ec2, cluster: &ClusterInfo, settings: &AwsSettings) -> Result<Vec<String>> {
    let mut zones = settings.availability_zones.clone();
    if zones.is_empty() {
        let out = ec2
            .call(Describe, "DescribeAvailabilityZones", |c| {
                c.describe_availability_zones()
                    .filters(tags::attribute("state", &["available"]))
                    .send()
            })
            .await
            .map_err(fail(cluster, "availability zones"))?;
        zones = out
            .availability_zones()
            .iter()
            .filter_map(|z| z.zone_name().map(str::to_string))
            .collect();
        zones.sort();
        zones.truncate(DEFAULT_ZONE_COUNT);
    }
    zones.sort();
    zones.dedup();
    Ok(zones)
}

async fn ensure_internet_gateway(ec2: &Ec2, cluster: &ClusterInfo, vpc_id: &str) -> Result<String> {
    // A VPC holds one gateway at most: an adopted VPC's own gateway is used as it is.
    let attached = ec2
        .call(Describe, "DescribeInternetGateways", |c| {
            c.describe_internet_gateways()
                .filters(tags::attribute("attachment.vpc-id", &[vpc_id]))
                .send()
        })
        .await
        .map_err(fail(cluster, "internet gateway"))?;
    if let Some(id) = attached
        .internet_gateways()
        .first()
        .and_then(|g| g.internet_gateway_id())
    {
        return Ok(id.to_string());
    }
    let owned = ec2
        .call(Describe, "DescribeInternetGateways", |c| {
            c.describe_internet_gateways()
                .set_filters(Some(tags::owned(cluster, Some(GATEWAY))))
                .send()
        })
        .await
        .map_err(fail(cluster, "internet gateway"))?;
    let id = match owned
        .internet_gateways()
        .first()
        .and_then(|g| g.internet_gateway_id())
    {
        // Created by an earlier reconcile that stopped before attaching it.
        Some(id) => id.to_string(),
        None => {
            let created = ec2
                .call(Mutate, "CreateInternetGateway", |c| {
                    c.create_internet_gateway()
                        .tag_specifications(tags::spec(
                            ResourceType::InternetGateway,
                            cluster,
                            GATEWAY,
                            GATEWAY,
                            &[],
                        ))
                        .send()
                })
                .await
                .map_err(fail(cluster, "internet gateway"))?;
            created
                .internet_gateway()
                .and_then(|g| g.internet_gateway_id())
                .ok_or_else(|| {
                    ProviderError::transient(
                        "AwsError",
                        "CreateInternetGateway answered without an id",
                    )
                })?
                .to_string()
        }
    };
    ec2.call(Mutate, "AttachInternetGateway", |c| {
        c.attach_internet_gateway()
            .internet_gateway_id(&id)
            .vpc_id(vpc_id)
            .send()
    })
    .await
    .map_err(fail(cluster, "internet gateway"))?;
    Ok(id)
}

async fn owned_subnets(ec2: &Ec2, cluster: &ClusterInfo) -> Result<Vec<Subnet>> {
    let out = ec2
        .call(Describe, "DescribeSubnets", |c| {
            c.describe_subnets()
                .set_filters(Some(tags::owned(cluster, None)))
                .send()
        })
        .await
        .map_err(fail(cluster, "subnets"))?;
    Ok(out.subnets().to_vec())
}

/// A public and a private subnet per zone, carved from free space in the VPC's CIDR.
async fn ensure_subnets(
    ec2: &Ec2,
    cluster: &ClusterInfo,
    vpc_id: &str,
    vpc_cidr: &str,
    zones: &[String],
) -> Result<(Vec<(String, String)>, Vec<(String, String)>)> {
    let owned = owned_subnets(ec2, cluster).await?;
    let all = ec2
        .call(Describe, "DescribeSubnets", |c| {
            c.describe_subnets()
                .filters(tags::attribute("vpc-id", &[vpc_id]))
                .send()
        })
        .await
        .map_err(fail(cluster, "subnets"))?;
    let mut taken: Vec<Cidr> = all
        .subnets()
        .iter()
        .filter_map(|s| s.cidr_block().and_then(Cidr::parse))
        .collect();
    let vpc = Cidr::parse(vpc_cidr).ok_or_else(|| {
        ProviderError::permanent(
            "InvalidSettings",
            format!("VPC {vpc_id} has CIDR {vpc_cidr:?}, which is not an IPv4 CIDR"),
        )
    })?;
    let mut public = Vec::new();
    let mut private = Vec::new();
    for zone in zones {
        for (role, out) in [(PUBLIC, &mut public), (PRIVATE, &mut private)] {
            let existing = owned.iter().find(|s| {
                tags::value(s.tags(), tags::ROLE) == Some(role)
                    && s.availability_zone() == Some(zone)
            });
            if let Some(id) = existing.and_then(|s| s.subnet_id()) {
                out.push((zone.clone(), id.to_string()));
                continue;
            }
            let block = vpc.free_block(&taken).ok_or_else(|| {
                ProviderError::permanent(
                    "VpcFull",
                    format!(
                        "VPC {vpc_id} ({vpc_cidr}) has no free /{} block left for the {role} subnet in {zone}; \
                         use a larger VPC or fewer availability zones",
                        vpc.subnet_prefix()
                    ),
                )
            })?;
            taken.push(block);
            let suffix = format!("{role}-{zone}");
            let created = ec2
                .call(Mutate, "CreateSubnet", |c| {
                    c.create_subnet()
                        .vpc_id(vpc_id)
                        .availability_zone(zone)
                        .cidr_block(block.to_string())
                        .tag_specifications(tags::spec(
                            ResourceType::Subnet,
                            cluster,
                            role,
                            &suffix,
                            &[],
                        ))
                        .send()
                })
                .await
                .map_err(fail(cluster, "subnets"))?;
            let id = created
                .subnet()
                .and_then(|s| s.subnet_id())
                .ok_or_else(|| {
                    ProviderError::transient("AwsError", "CreateSubnet answered without an id")
                })?
                .to_string();
            tracing::info!(cluster = %cluster.key(), subnet = %id, %zone, role, "created subnet");
            if role == PUBLIC {
                // Control-plane machines reach the internet through their own public address; workers, in the
                // private subnets, through the NAT gateways.
                ec2.call(Mutate, "ModifySubnetAttribute", |c| {
                    c.modify_subnet_attribute()
                        .subnet_id(&id)
                        .map_public_ip_on_launch(
                            AttributeBooleanValue::builder().value(true).build(),
                        )
                        .send()
                })
                .await
                .map_err(fail(cluster, "subnets"))?;
            }
            out.push((zone.clone(), id));
        }
    }
    Ok((public, private))
}

/// A new route table of the cluster in `vpc_id`, tagged with `role` (and `extra`), named after `suffix`.
async fn create_route_table(
    ec2: &Ec2,
    cluster: &ClusterInfo,
    vpc_id: &str,
    role: &str,
    suffix: &str,
    extra: &[(&str, &str)],
    what: &str,
) -> Result<RouteTable> {
    ec2.call(Mutate, "CreateRouteTable", |c| {
        c.create_route_table()
            .vpc_id(vpc_id)
            .tag_specifications(tags::spec(
                ResourceType::RouteTable,
                cluster,
                role,
                suffix,
                extra,
            ))
            .send()
    })
    .await
    .map_err(fail(cluster, what))?
    .route_table()
    .cloned()
    .ok_or_else(|| {
        ProviderError::transient("AwsError", "CreateRouteTable answered without a table")
    })
}

/// One route table per role; the public one routes 0.0.0.0/0 to the internet gateway.
async fn ensure_route_table(
    ec2: &Ec2,
    cluster: &ClusterInfo,
    vpc_id: &str,
    role: &str,
    gateway: Option<&str>,
    subnets: &[(String, String)],
) -> Result<()> {
    let what = format!("{role} route table");
    let found = ec2
        .call(Describe, "DescribeRouteTables", |c| {
            c.describe_route_tables()
                .set_filters(Some(tags::owned(cluster, Some(role))))
                .send()
        })
        .await
        .map_err(fail(cluster, &what))?;
    let table = match found.route_tables().first() {
        Some(table) => table.clone(),
        None => create_route_table(ec2, cluster, vpc_id, role, role, &[], &what).await?,
    };
    let table_id = table.route_table_id().unwrap_or_default().to_string();
    if let Some(gateway) = gateway {
        let has_default = table.routes().iter().any(|r| {
            r.destination_cidr_block() == Some("0.0.0.0/0") && r.gateway_id() == Some(gateway)
        });
        if !has_default {
            let added = ec2
                .call(Mutate, "CreateRoute", |c| {
                    c.create_route()
                        .route_table_id(&table_id)
                        .destination_cidr_block("0.0.0.0/0")
                        .gateway_id(gateway)
                        .send()
                })
                .await;
            match added {
                Ok(_) => {}
                Err(e) if e.code_is("RouteAlreadyExists") => {}
                Err(e) => return Err(fail(cluster, &what)(e)),
            }
        }
    }
    for (_, subnet) in subnets {
        let associated = table
            .associations()
            .iter()
            .any(|a| a.subnet_id() == Some(subnet.as_str()));
        if !associated {
            ec2.call(Mutate, "AssociateRouteTable", |c| {
                c.associate_route_table()
                    .route_table_id(&table_id)
                    .subnet_id(subnet)
                    .send()
            })
            .await
            .map_err(fail(cluster, &what))?;
        }
    }
    Ok(())
}

/// The zones that get a NAT gateway under `settings.natGateways`: every zone, the first, or none.
pub fn nat_zones(settings: &AwsSettings, zones: &[String]) -> Vec<String> {
    match settings.nat_gateways {
        NatGateways::PerZone => zones.to_vec(),
        NatGateways::Single => zones.iter().take(1).cloned().collect(),
        NatGateways::Disabled => Vec::new(),
    }
}

/// How many NAT gateways a cluster with `settings` has once its network is made: per zone, the zones it names or
/// the provider's default count (a region with fewer zones has fewer).
pub fn nat_gateway_count(settings: &AwsSettings) -> usize {
    let zones = if settings.availability_zones.is_empty() {
        DEFAULT_ZONE_COUNT
    } else {
        settings.availability_zones.len()
    };
    match settings.nat_gateways {
        NatGateways::PerZone => zones,
        NatGateways::Single => 1,
        NatGateways::Disabled => 0,
    }
}

/// The cluster's NAT gateways that exist or are on their way (not deleted, not failed).
async fn owned_nat_gateways(ec2: &Ec2, cluster: &ClusterInfo) -> Result<Vec<NatGateway>> {
    let out = ec2
        .call(Describe, "DescribeNatGateways", |c| {
            c.describe_nat_gateways()
                .set_filter(Some(tags::owned(cluster, Some(NAT))))
                .filter(tags::attribute(
                    "state",
                    &["pending", "available", "deleting"],
                ))
                .send()
        })
        .await
        .map_err(fail(cluster, "NAT gateways"))?;
    // The tags are checked here too: not every EC2-compatible endpoint applies tag filters to NAT gateways (moto
    // does not), and another cluster's NAT gateway must never be taken for this one's.
    let key = cluster.key();
    Ok(out
        .nat_gateways()
        .iter()
        .filter(|n| {
            tags::value(n.tags(), tags::CLUSTER) == Some(key.as_str())
                && tags::value(n.tags(), tags::ROLE) == Some(NAT)
        })
        .cloned()
        .collect())
}

/// A NAT gateway with an Elastic IP in the public subnet of each zone [`nat_zones`] names; returns (zone, NAT
/// gateway id). The address is allocated first and found by tag, so a crash between the two calls reuses it.
async fn ensure_nat_gateways(
    ec2: &Ec2,
    cluster: &ClusterInfo,
    settings: &AwsSettings,
    public_subnets: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let zones: Vec<String> = public_subnets.iter().map(|(z, _)| z.clone()).collect();
    let wanted = nat_zones(settings, &zones);
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let existing = owned_nat_gateways(ec2, cluster).await?;
    let mut found = Vec::new();
    for zone in wanted {
        let live = existing.iter().find(|n| {
            tags::value(n.tags(), tags::ZONE) == Some(zone.as_str())
                && matches!(
                    n.state(),
                    Some(NatGatewayState::Pending | NatGatewayState::Available)
                )
        });
        if let Some(id) = live.and_then(|n| n.nat_gateway_id()) {
            found.push((zone, id.to_string()));
            continue;
        }
        let Some((_, subnet)) = public_subnets.iter().find(|(z, _)| *z == zone) else {
            continue;
        };
        let allocation = ensure_nat_address(ec2, cluster, &zone).await?;
        let suffix = format!("{NAT}-{zone}");
        let created = ec2
            .call(Mutate, "CreateNatGateway", |c| {
                c.create_nat_gateway()
                    .subnet_id(subnet)
                    .allocation_id(&allocation)
                    .tag_specifications(tags::spec(
                        ResourceType::Natgateway,
                        cluster,
                        NAT,
                        &suffix,
                        &[(tags::ZONE, zone.as_str())],
                    ))
                    .send()
            })
            .await
            .map_err(fail(cluster, "NAT gateway"))?;
        let id = created
            .nat_gateway()
            .and_then(|n| n.nat_gateway_id())
            .ok_or_else(|| {
                ProviderError::transient("AwsError", "CreateNatGateway answered without an id")
            })?
            .to_string();
        tracing::info!(cluster = %cluster.key(), nat_gateway = %id, %zone, "created NAT gateway");
        found.push((zone, id));
    }
    Ok(found)
}

/// The Elastic IP of `zone`'s NAT gateway: the one tagged for it, or a new one.
async fn ensure_nat_address(ec2: &Ec2, cluster: &ClusterInfo, zone: &str) -> Result<String> {
    let mut filters = tags::owned(cluster, Some(NAT));
    filters.push(tags::filter(tags::ZONE, zone));
    let out = ec2
        .call(Describe, "DescribeAddresses", |c| {
            c.describe_addresses()
                .set_filters(Some(filters.clone()))
                .send()
        })
        .await
        .map_err(fail(cluster, "NAT gateway address"))?;
    if let Some(id) = out.addresses().iter().find_map(|a| a.allocation_id()) {
        return Ok(id.to_string());
    }
    let suffix = format!("{NAT}-{zone}");
    let allocated = ec2
        .call(Mutate, "AllocateAddress", |c| {
            c.allocate_address()
                .domain(DomainType::Vpc)
                .tag_specifications(tags::spec(
                    ResourceType::ElasticIp,
                    cluster,
                    NAT,
                    &suffix,
                    &[(tags::ZONE, zone)],
                ))
                .send()
        })
        .await
        .map_err(fail(cluster, "NAT gateway address"))?;
    allocated
        .allocation_id()
        .map(str::to_string)
        .ok_or_else(|| {
            ProviderError::transient("AwsError", "AllocateAddress answered without an id")
        })
}

/// The private subnets' route tables: with NAT gateways per zone, one per zone routing 0.0.0.0/0 to that zone's
/// NAT gateway; otherwise one for all, routing it to the single NAT gateway, or nowhere. A subnet associated with
/// another of the cluster's tables (a cluster made before per-zone tables) is moved, not left behind.
async fn ensure_private_route_tables(
    ec2: &Ec2,
    cluster: &ClusterInfo,
    settings: &AwsSettings,
    vpc_id: &str,
    private_subnets: &[(String, String)],
    nat_gateways: &[(String, String)],
) -> Result<()> {
    let what = "private route tables";
    let list = || async {
        ec2.call(Describe, "DescribeRouteTables", |c| {
            c.describe_route_tables()
                .set_filters(Some(tags::owned(cluster, Some(PRIVATE))))
                .send()
        })
        .await
        .map(|out| out.route_tables().to_vec())
        .map_err(fail(cluster, what))
    };
    let mut tables: Vec<RouteTable> = list().await?;
    let per_zone = settings.nat_gateways == NatGateways::PerZone;
    for (zone, subnet) in private_subnets {
        let table_zone = per_zone.then_some(zone.as_str());
        let nat = if per_zone {
            nat_gateways.iter().find(|(z, _)| z == zone)
        } else {
            nat_gateways.first()
        }
        .map(|(_, id)| id.as_str());
        let existing = tables
            .iter()
            .find(|t| tags::value(t.tags(), tags::ZONE) == table_zone)
            .cloned();
        let table = match existing {
            Some(table) => table,
            None => {
                let suffix = match table_zone {
                    Some(zone) => format!("{PRIVATE}-{zone}"),
                    None => PRIVATE.to_string(),
                };
                let extra: Vec<(&str, &str)> =
                    table_zone.map(|z| (tags::ZONE, z)).into_iter().collect();
                let created =
                    create_route_table(ec2, cluster, vpc_id, PRIVATE, &suffix, &extra, what)
                        .await?;
                tables.push(created.clone());
                created
            }
        };
        let table_id = table.route_table_id().unwrap_or_default().to_string();
        if let Some(nat) = nat {
            let default = table
                .routes()
                .iter()
                .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"));
            match default {
                Some(route) if route.nat_gateway_id() == Some(nat) => {}
                Some(_) => {
                    ec2.call(Mutate, "ReplaceRoute", |c| {
                        c.replace_route()
                            .route_table_id(&table_id)
                            .destination_cidr_block("0.0.0.0/0")
                            .nat_gateway_id(nat)
                            .send()
                    })
                    .await
                    .map_err(fail(cluster, what))?;
                }
                None => {
                    let added = ec2
                        .call(Mutate, "CreateRoute", |c| {
                            c.create_route()
                                .route_table_id(&table_id)
                                .destination_cidr_block("0.0.0.0/0")
                                .nat_gateway_id(nat)
                                .send()
                        })
                        .await;
                    match added {
                        Ok(_) => {}
                        Err(e) if e.code_is("RouteAlreadyExists") => {}
                        Err(e) => return Err(fail(cluster, what)(e)),
                    }
                }
            }
        }
        // Where the subnet is associated now, among the cluster's private tables.
        let current = tables.iter().find_map(|t| {
            t.associations()
                .iter()
                .find(|a| a.subnet_id() == Some(subnet.as_str()))
                .map(|a| {
                    (
                        t.route_table_id().unwrap_or_default().to_string(),
                        a.route_table_association_id()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
        });
        match current {
            Some((id, _)) if id == table_id => {}
            Some((_, association)) => {
                ec2.call(Mutate, "ReplaceRouteTableAssociation", |c| {
                    c.replace_route_table_association()
                        .association_id(&association)
                        .route_table_id(&table_id)
                        .send()
                })
                .await
                .map_err(fail(cluster, what))?;
            }
            None => {
                ec2.call(Mutate, "AssociateRouteTable", |c| {
                    c.associate_route_table()
                        .route_table_id(&table_id)
                        .subnet_id(subnet)
                        .send()
                })
                .await
                .map_err(fail(cluster, what))?;
            }
        }
    }
    Ok(())
}

async fn owned_groups(ec2: &Ec2, cluster: &ClusterInfo) -> Result<Vec<SecurityGroup>> {
    let out = ec2
        .call(Describe, "DescribeSecurityGroups", |c| {
            c.describe_security_groups()
                .set_filters(Some(tags::owned(cluster, None)))
                .send()
        })
        .await
        .map_err(fail(cluster, "security groups"))?;
    Ok(out.security_groups().to_vec())
}

/// The control-plane group admits the API port from `controlPlaneIngressCidrs` and from its own members; the node
/// group admits all traffic from its own members and nothing else. Control-plane machines are in both, so they
/// reach the nodes and the nodes reach them; the API's load balancer is in the control-plane group, so clients
/// reach it from the allowed ranges and it reaches the members (and health-checks them) as a member of the group.
/// No group refers to the other, so either can be deleted first.
async fn ensure_security_groups(
    ec2: &Ec2,
    cluster: &ClusterInfo,
    settings: &AwsSettings,
    vpc_id: &str,
) -> Result<(String, String)> {
    let groups = owned_groups(ec2, cluster).await?;
    let mut ids = Vec::new();
    for (role, description) in [
        (
            CONTROL_PLANE,
            "Slipway: Kubernetes API of the control plane",
        ),
        (NODES, "Slipway: traffic between the cluster's machines"),
    ] {
        let existing = groups
            .iter()
            .find(|g| tags::value(g.tags(), tags::ROLE) == Some(role));
        let (id, permissions) = match existing
            .and_then(|g| Some((g.group_id()?, g.ip_permissions())))
        {
            Some((id, permissions)) => (id.to_string(), permissions.to_vec()),
            None => {
                let created = ec2
                    .call(Mutate, "CreateSecurityGroup", |c| {
                        c.create_security_group()
                            .group_name(tags::name(cluster, role))
                            .description(description)
                            .vpc_id(vpc_id)
                            .tag_specifications(tags::spec(
                                ResourceType::SecurityGroup,
                                cluster,
                                role,
                                role,
                                &[],
                            ))
                            .send()
                    })
                    .await
                    .map_err(fail(cluster, "security groups"))?;
                let id = created.group_id().unwrap_or_default().to_string();
                tracing::info!(cluster = %cluster.key(), group = %id, role, "created security group");
                (id, Vec::new())
            }
        };
        let wanted = if role == CONTROL_PLANE {
            let cidrs = if settings.control_plane_ingress_cidrs.is_empty() {
                vec!["0.0.0.0/0".to_string()]
            } else {
                settings.control_plane_ingress_cidrs.clone()
            };
            let mut wanted = cidrs
                .into_iter()
                .filter(|cidr| {
                    !permissions.iter().any(|p| {
                        p.ip_protocol() == Some("tcp")
                            && p.from_port() == Some(API_PORT)
                            && p.to_port() == Some(API_PORT)
                            && p.ip_ranges()
                                .iter()
                                .any(|r| r.cidr_ip() == Some(cidr.as_str()))
                    })
                })
                .map(|cidr| {
                    IpPermission::builder()
                        .ip_protocol("tcp")
                        .from_port(API_PORT)
                        .to_port(API_PORT)
                        .ip_ranges(
                            IpRange::builder()
                                .cidr_ip(cidr)
                                .description("Kubernetes API")
                                .build(),
                        )
                        .build()
                })
                .collect::<Vec<_>>();
            let from_members = permissions.iter().any(|p| {
                p.ip_protocol() == Some("tcp")
                    && p.from_port() == Some(API_PORT)
                    && p.to_port() == Some(API_PORT)
                    && p.user_id_group_pairs()
                        .iter()
                        .any(|g| g.group_id() == Some(id.as_str()))
            });
            if !from_members {
                wanted.push(
                    IpPermission::builder()
                        .ip_protocol("tcp")
                        .from_port(API_PORT)
                        .to_port(API_PORT)
                        .user_id_group_pairs(
                            UserIdGroupPair::builder()
                                .group_id(&id)
                                .description("Kubernetes API through the load balancer")
                                .build(),
                        )
                        .build(),
                );
            }
            wanted
        } else {
            let present = permissions.iter().any(|p| {
                p.ip_protocol() == Some("-1")
                    && p.user_id_group_pairs()
                        .iter()
                        .any(|g| g.group_id() == Some(id.as_str()))
            });
            if present {
                Vec::new()
            } else {
                vec![
                    IpPermission::builder()
                        .ip_protocol("-1")
                        .user_id_group_pairs(UserIdGroupPair::builder().group_id(&id).build())
                        .build(),
                ]
            }
        };
        if !wanted.is_empty() {
            let added = ec2
                .call(Mutate, "AuthorizeSecurityGroupIngress", |c| {
                    c.authorize_security_group_ingress()
                        .group_id(&id)
                        .set_ip_permissions(Some(wanted.clone()))
                        .send()
                })
                .await;
            match added {
                Ok(_) => {}
                Err(e) if e.code_is("InvalidPermission.Duplicate") => {}
                Err(e) => return Err(fail(cluster, "security groups")(e)),
            }
        }
        ids.push(id);
    }
    Ok((ids.remove(0), ids.remove(0)))
}

/// Removes everything of the network that carries the cluster's tag. Instances must be gone already.
pub async fn delete(aws: &Aws, cluster: &ClusterInfo) -> Result<Deletion> {
    let mut sweep = Sweep::default();
    for resource in owned(aws, cluster).await? {
        for result in remove(aws, &resource).await {
            sweep.note(resource.kind(), resource.id(), result);
        }
    }
    sweep.finish(cluster)
}

/// A piece of the cluster's network, found by its tag, with what must be detached before it can go.
enum Owned {
    /// The load balancer's listener: it holds the target group.
    Listener {
        arn: String,
    },
    /// Deleting it deletes any listener left too; its network interfaces go a little later, and until then the
    /// subnets and the security group are in use.
    LoadBalancer {
        arn: String,
    },
    TargetGroup {
        arn: String,
    },
    /// Deleting takes a minute or so (`deleting`); until it is gone its subnet and Elastic IP are in use.
    NatGateway {
        id: String,
    },
    /// Clusters made before the API endpoint was a load balancer have an Elastic IP; it goes with the cluster.
    Address {
        id: String,
        association: Option<String>,
    },
    SecurityGroup {
        id: String,
    },
    Subnet {
        id: String,
    },
    RouteTable {
        id: String,
        /// Its associations with subnets (the VPC's main association goes with the VPC).
        associations: Vec<String>,
    },
    Gateway {
        id: String,
        /// The VPCs it is attached to.
        vpcs: Vec<String>,
    },
    Vpc {
        id: String,
    },
}

impl Owned {
    fn kind(&self) -> &'static str {
        match self {
            Self::Listener { .. } => "load balancer listener",
            Self::LoadBalancer { .. } => "load balancer",
            Self::TargetGroup { .. } => "target group",
            Self::NatGateway { .. } => "NAT gateway",
            Self::Address { .. } => "Elastic IP",
            Self::SecurityGroup { .. } => "security group",
            Self::Subnet { .. } => "subnet",
            Self::RouteTable { .. } => "route table",
            Self::Gateway { .. } => "internet gateway",
            Self::Vpc { .. } => "VPC",
        }
    }

    fn id(&self) -> &str {
        match self {
            Self::Listener { arn } | Self::LoadBalancer { arn } | Self::TargetGroup { arn } => arn,
            Self::Address { id, .. }
            | Self::NatGateway { id }
            | Self::SecurityGroup { id }
            | Self::Subnet { id }
            | Self::RouteTable { id, .. }
            | Self::Gateway { id, .. }
            | Self::Vpc { id } => id,
        }
    }
}

/// Everything of the network that carries the cluster's tag, in the order it can be deleted: the load balancer's
/// listener, the load balancer and the target group it used, the NAT gateways, then addresses, security groups and
/// subnets before the route tables, gateway and VPC that hold them. Only a VPC Slipway created carries the tag; an
/// adopted one is never listed. Load balancers and target groups are looked for in every VPC, not only the cluster's: one whose
/// subnets went first must still be found.
async fn owned(aws: &Aws, cluster: &ClusterInfo) -> Result<Vec<Owned>> {
    let (ec2, elb) = (&aws.ec2, &aws.elb);
    let mut owned = Vec::new();
    let load_balancers = load_balancer::owned_load_balancers(elb, cluster, None).await?;
    for lb in &load_balancers {
        let arn = lb.load_balancer_arn().unwrap_or_default();
        owned.extend(
            load_balancer::listeners(elb, cluster, arn)
                .await?
                .into_iter()
                .map(|arn| Owned::Listener { arn }),
        );
    }
    owned.extend(load_balancers.iter().map(|lb| Owned::LoadBalancer {
        arn: lb.load_balancer_arn().unwrap_or_default().to_string(),
    }));
    owned.extend(
        load_balancer::owned_target_groups(elb, cluster, None)
            .await?
            .iter()
            .map(|tg| Owned::TargetGroup {
                arn: tg.target_group_arn().unwrap_or_default().to_string(),
            }),
    );
    owned.extend(
        owned_nat_gateways(ec2, cluster)
            .await?
            .iter()
            .map(|n| Owned::NatGateway {
                id: n.nat_gateway_id().unwrap_or_default().to_string(),
            }),
    );
    let addresses = ec2
        .call(Describe, "DescribeAddresses", |c| {
            c.describe_addresses()
                .set_filters(Some(tags::owned(cluster, None)))
                .send()
        })
        .await
        .map_err(fail(cluster, "addresses"))?;
    owned.extend(addresses.addresses().iter().map(|a| {
        Owned::Address {
            id: a.allocation_id().unwrap_or_default().to_string(),
            // A NAT gateway's address cannot be disassociated: it is free once the NAT gateway is gone.
            association: (tags::value(a.tags(), tags::ROLE) != Some(NAT))
                .then(|| a.association_id().map(str::to_string))
                .flatten(),
        }
    }));
    owned.extend(
        owned_groups(ec2, cluster)
            .await?
            .iter()
            .map(|g| Owned::SecurityGroup {
                id: g.group_id().unwrap_or_default().to_string(),
            }),
    );
    owned.extend(
        owned_subnets(ec2, cluster)
            .await?
            .iter()
            .map(|s| Owned::Subnet {
                id: s.subnet_id().unwrap_or_default().to_string(),
            }),
    );
    let tables = ec2
        .call(Describe, "DescribeRouteTables", |c| {
            c.describe_route_tables()
                .set_filters(Some(tags::owned(cluster, None)))
                .send()
        })
        .await
        .map_err(fail(cluster, "route tables"))?;
    owned.extend(tables.route_tables().iter().map(|t| {
        Owned::RouteTable {
            id: t.route_table_id().unwrap_or_default().to_string(),
            associations: t
                .associations()
                .iter()
                .filter(|a| a.main() != Some(true))
                .filter_map(|a| a.route_table_association_id().map(str::to_string))
                .collect(),
        }
    }));
    let gateways = ec2
        .call(Describe, "DescribeInternetGateways", |c| {
            c.describe_internet_gateways()
                .set_filters(Some(tags::owned(cluster, None)))
                .send()
        })
        .await
        .map_err(fail(cluster, "internet gateway"))?;
    owned.extend(gateways.internet_gateways().iter().map(|g| {
        Owned::Gateway {
            id: g.internet_gateway_id().unwrap_or_default().to_string(),
            vpcs: g
                .attachments()
                .iter()
                .filter_map(|a| a.vpc_id().map(str::to_string))
                .collect(),
        }
    }));
    let vpcs = ec2
        .call(Describe, "DescribeVpcs", |c| {
            c.describe_vpcs()
                .set_filters(Some(tags::owned(cluster, None)))
                .send()
        })
        .await
        .map_err(fail(cluster, "VPC"))?;
    owned.extend(vpcs.vpcs().iter().map(|v| Owned::Vpc {
        id: v.vpc_id().unwrap_or_default().to_string(),
    }));
    Ok(owned)
}

/// The calls that remove one piece, detachments first, and how each went. Every call is made, whatever the one
/// before it answered: a detachment that failed shows up as the deletion's reason.
async fn remove(aws: &Aws, resource: &Owned) -> Vec<std::result::Result<(), AwsError>> {
    let (ec2, elb) = (&aws.ec2, &aws.elb);
    let mut results = Vec::new();
    match resource {
        Owned::Listener { arn } => {
            let r = elb
                .call(Mutate, "DeleteListener", |c| {
                    c.delete_listener().listener_arn(arn).send()
                })
                .await;
            results.push(r.map(drop));
        }
        Owned::LoadBalancer { arn } => {
            let r = elb
                .call(Mutate, "DeleteLoadBalancer", |c| {
                    c.delete_load_balancer().load_balancer_arn(arn).send()
                })
                .await;
            results.push(r.map(drop));
        }
        Owned::TargetGroup { arn } => {
            let r = elb
                .call(Mutate, "DeleteTargetGroup", |c| {
                    c.delete_target_group().target_group_arn(arn).send()
                })
                .await;
            results.push(r.map(drop));
        }
        Owned::NatGateway { id } => {
            let r = ec2
                .call(Mutate, "DeleteNatGateway", |c| {
                    c.delete_nat_gateway().nat_gateway_id(id).send()
                })
                .await;
            results.push(r.map(drop));
        }
        Owned::Address { id, association } => {
            if let Some(association) = association {
                let r = ec2
                    .call(Mutate, "DisassociateAddress", |c| {
                        c.disassociate_address().association_id(association).send()
                    })
                    .await;
                results.push(r.map(drop));
            }
            let r = ec2
                .call(Mutate, "ReleaseAddress", |c| {
                    c.release_address().allocation_id(id).send()
                })
                .await;
            results.push(r.map(drop));
        }
        Owned::SecurityGroup { id } => {
            let r = ec2
                .call(Mutate, "DeleteSecurityGroup", |c| {
                    c.delete_security_group().group_id(id).send()
                })
                .await;
            results.push(r.map(drop));
        }
        Owned::Subnet { id } => {
            let r = ec2
                .call(Mutate, "DeleteSubnet", |c| {
                    c.delete_subnet().subnet_id(id).send()
                })
                .await;
            results.push(r.map(drop));
        }
        Owned::RouteTable { id, associations } => {
            for association in associations {
                let r = ec2
                    .call(Mutate, "DisassociateRouteTable", |c| {
                        c.disassociate_route_table()
                            .association_id(association)
                            .send()
                    })
                    .await;
                results.push(r.map(drop));
            }
            let r = ec2
                .call(Mutate, "DeleteRouteTable", |c| {
                    c.delete_route_table().route_table_id(id).send()
                })
                .await;
            results.push(r.map(drop));
        }
        Owned::Gateway { id, vpcs } => {
            for vpc in vpcs {
                let r = ec2
                    .call(Mutate, "DetachInternetGateway", |c| {
                        c.detach_internet_gateway()
                            .internet_gateway_id(id)
                            .vpc_id(vpc)
                            .send()
                    })
                    .await;
                results.push(r.map(drop));
            }
            let r = ec2
                .call(Mutate, "DeleteInternetGateway", |c| {
                    c.delete_internet_gateway().internet_gateway_id(id).send()
                })
                .await;
            results.push(r.map(drop));
        }
        Owned::Vpc { id } => {
            let r = ec2
                .call(Mutate, "DeleteVpc", |c| c.delete_vpc().vpc_id(id).send())
                .await;
            results.push(r.map(drop));
        }
    }
    results
}

/// Outcomes of a deletion pass: every resource is tried, whatever failed before it.
#[derive(Default)]
struct Sweep {
    blocked: Vec<String>,
    failed: Vec<String>,
}

impl Sweep {
    fn note(&mut self, kind: &str, id: &str, result: std::result::Result<(), AwsError>) {
        match result {
            Ok(()) => tracing::info!(kind, id, "deleted"),
            // Gone already: a concurrent or earlier pass got to it first.
            Err(e)
                if e.code_starts_with("Invalid")
                    && e.code.as_deref().is_some_and(|c| c.ends_with(".NotFound")) => {}
            Err(e)
                if [
                    "ListenerNotFound",
                    "LoadBalancerNotFound",
                    "TargetGroupNotFound",
                ]
                .iter()
                .any(|code| e.code_is(code)) => {}
            // In use: a security group or subnet still holding a deleted load balancer's network interfaces, a
            // target group still held by a listener. Its holder is on its way out; the next pass tries again.
            Err(e)
                if e.code_is("DependencyViolation")
                    || e.code_is("InvalidIPAddress.InUse")
                    || e.code_is("ResourceInUse") =>
            {
                self.blocked
                    .push(format!("{kind} {id} is still in use ({})", e.message));
            }
            Err(e) => self.failed.push(format!(
                "{kind} {id}: {} {} failed: {}: {}",
                e.service,
                e.operation,
                e.code.as_deref().unwrap_or("unknown"),
                e.message
            )),
        }
    }

    fn finish(self, cluster: &ClusterInfo) -> Result<Deletion> {
        if !self.failed.is_empty() {
            let mut all = self.failed;
            all.extend(self.blocked);
            return Err(ProviderError::transient(
                "DeleteFailed",
                format!(
                    "deleting the network of cluster {}: {}",
                    cluster.key(),
                    all.join("; ")
                ),
            ));
        }
        if !self.blocked.is_empty() {
            return Ok(Deletion::InProgress(format!(
                "waiting for dependencies to go: {}",
                self.blocked.join("; ")
            )));
        }
        Ok(Deletion::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws_error(operation: &'static str, code: &str, message: &str) -> AwsError {
        AwsError {
            service: "EC2",
            operation,
            code: Some(code.into()),
            message: message.into(),
            status: Some(400),
            unanswered: false,
        }
    }

    fn cluster() -> ClusterInfo {
        ClusterInfo {
            namespace: "default".into(),
            name: "demo".into(),
            uid: "u".into(),
            kubernetes_version: "v1.37.2".into(),
            infrastructure: Default::default(),
        }
    }

    #[test]
    fn a_dependency_violation_is_waited_for_and_names_the_blocking_resource() {
        let mut sweep = Sweep::default();
        sweep.note("subnet", "subnet-1", Ok(()));
        sweep.note(
            "security group",
            "sg-1",
            Err(aws_error(
                "DeleteSecurityGroup",
                "DependencyViolation",
                "resource sg-1 has a dependent object",
            )),
        );
        sweep.note(
            "VPC",
            "vpc-1",
            Err(aws_error("DeleteVpc", "InvalidVpcID.NotFound", "gone")),
        );
        let Deletion::InProgress(message) = sweep.finish(&cluster()).unwrap() else {
            panic!("a blocked deletion is not done");
        };
        assert!(
            message.contains("security group sg-1 is still in use"),
            "{message}"
        );
    }

    #[test]
    fn a_load_balancer_piece_still_in_use_is_waited_for_and_one_already_gone_is_done() {
        let elb_error = |operation, code: &str| AwsError {
            service: "ELB",
            ..aws_error(operation, code, "m")
        };
        let mut sweep = Sweep::default();
        sweep.note(
            "load balancer listener",
            "arn:listener",
            Err(elb_error("DeleteListener", "ListenerNotFound")),
        );
        sweep.note(
            "load balancer",
            "arn:lb",
            Err(elb_error("DeleteLoadBalancer", "LoadBalancerNotFound")),
        );
        assert_eq!(sweep.finish(&cluster()).unwrap(), Deletion::Done);

        let mut sweep = Sweep::default();
        sweep.note(
            "target group",
            "arn:tg",
            Err(elb_error("DeleteTargetGroup", "ResourceInUse")),
        );
        let Deletion::InProgress(message) = sweep.finish(&cluster()).unwrap() else {
            panic!("a target group still in use is not deleted yet");
        };
        assert!(
            message.contains("target group arn:tg is still in use"),
            "{message}"
        );

        let mut sweep = Sweep::default();
        sweep.note(
            "load balancer",
            "arn:lb",
            Err(elb_error("DeleteLoadBalancer", "OperationNotPermitted")),
        );
        let text = sweep.finish(&cluster()).unwrap_err().to_string();
        assert!(
            text.contains(
                "load balancer arn:lb: ELB DeleteLoadBalancer failed: OperationNotPermitted"
            ),
            "{text}"
        );
    }

    #[test]
    fn other_failures_are_aggregated_into_one_transient_error() {
        let mut sweep = Sweep::default();
        sweep.note(
            "subnet",
            "subnet-1",
            Err(aws_error("DeleteSubnet", "InternalError", "boom")),
        );
        sweep.note(
            "VPC",
            "vpc-1",
            Err(aws_error("DeleteVpc", "DependencyViolation", "has subnets")),
        );
        let error = sweep.finish(&cluster()).unwrap_err();
        assert_eq!(error.reason(), "DeleteFailed");
        let text = error.to_string();
        assert!(
            text.contains("subnet subnet-1: EC2 DeleteSubnet failed: InternalError")
                && text.contains("vpc-1"),
            "{text}"
        );
    }
}
