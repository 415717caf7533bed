//! The aws provider against moto's EC2 and Elastic Load Balancing: what it makes, that it makes it once, that the
//! load balancer in front of the control plane holds exactly its running members, and that deletion leaves nothing
//! behind.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, InstanceAttributeName};
use base64::Engine;
use slipway_api::{MachineSettings, NatGateways};
use slipway_bootstrap::BootstrapToken;
use slipway_bootstrap::cloud_init::{ClusterNetwork, NodeSettings, kubeadm_join};
use slipway_provider::{
    ClusterInfo, Deletion, InfrastructureProvider, MachineRequest, MachineRole, ProviderError,
};
use slipway_provider_aws::{
    AwsConfig, AwsCredentials, AwsProvider, Budget, Budgets, CredentialSource, ImageDefaults,
};
use support::{ElbInventory, MOTO_UBUNTU_AMI, Moto, ThrottlingProxy};

const CONTROL_PLANE_CLOUD_INIT: &str = "#cloud-config\nruncmd:\n  - [kubeadm, init]\n";

fn tag_filter(cluster: &ClusterInfo) -> Filter {
    Filter::builder()
        .name("tag:slipway.dev/cluster")
        .values(cluster.key())
        .build()
}

fn join_cloud_init(endpoint: &str) -> String {
    kubeadm_join(
        &ClusterNetwork {
            cluster_name: "demo".into(),
            kubernetes_version: "v1.37.2".into(),
            endpoint: endpoint.into(),
            pod_cidr: "10.244.0.0/16".into(),
            service_cidr: "10.96.0.0/12".into(),
            dns_domain: "cluster.local".into(),
        },
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        &BootstrapToken::generate(jiff::Timestamp::now()),
        &NodeSettings::default(),
    )
    .unwrap()
}

fn request(
    cluster: &ClusterInfo,
    role: MachineRole,
    index: usize,
    user_data: &str,
) -> MachineRequest {
    MachineRequest {
        name: format!("{}-{}-{index}", cluster.name, role.group()),
        role,
        settings: MachineSettings {
            instance_type: Some("t3.medium".into()),
            image: Some(MOTO_UBUNTU_AMI.into()),
            root_volume_gib: Some(40),
            labels: [("team".to_string(), "platform".to_string())].into(),
        },
        kubernetes_version: "v1.37.2".into(),
        template_hash: "hash-1".into(),
        user_data: Some(user_data.into()),
    }
}

fn workers() -> MachineRole {
    MachineRole::Worker {
        pool: "md-0".into(),
    }
}

/// Instances of the cluster that are not terminated, as moto sees them.
async fn live_instances(
    ec2: &aws_sdk_ec2::Client,
    cluster: &ClusterInfo,
) -> Vec<aws_sdk_ec2::types::Instance> {
    let out = ec2
        .describe_instances()
        .filters(tag_filter(cluster))
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(vec!["pending".into(), "running".into()]))
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances().to_vec())
        .collect()
}

fn tag<'a>(instance: &'a aws_sdk_ec2::types::Instance, key: &str) -> Option<&'a str> {
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

async fn delete_until_done(provider: &AwsProvider, cluster: &ClusterInfo) -> Vec<String> {
    let mut messages = Vec::new();
    for _ in 0..50 {
        match provider.delete_cluster(cluster).await.unwrap() {
            Deletion::Done => return messages,
            Deletion::InProgress(message) => messages.push(message),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("cluster deletion did not finish: {messages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_network_and_machines_are_created_once_with_ownership_tags() {
    let moto = Moto::start().await;
    let provider = support::provider(&moto.url, AwsConfig::default());
    let ec2 = support::ec2(&moto.url).await;
    let elb = support::elb(&moto.url).await;
    let cluster = support::cluster("demo");

    let status = provider.reconcile_cluster(&cluster).await.unwrap();
    assert!(status.ready && status.workload_api, "{status:?}");
    let (endpoint, port) = status.endpoint.clone().unwrap();
    assert_eq!(port, 6443);
    let first_balancing = ElbInventory::read(&elb).await;
    let first_nats = live_nat_gateways(&ec2, &cluster).await;
    // A second reconcile finds everything by tag and makes nothing new.
    let again = provider.reconcile_cluster(&cluster).await.unwrap();
    assert_eq!(again.endpoint, status.endpoint);
    assert_eq!(live_nat_gateways(&ec2, &cluster).await, first_nats);
    // The estimate counts the two NAT gateways.
    let infrastructure = provider.infrastructure_prices(&cluster);
    assert_eq!(infrastructure.len(), 1);
    assert_eq!(
        (infrastructure[0].what.as_str(), infrastructure[0].count),
        ("NAT gateway", 2)
    );
    assert_eq!(infrastructure[0].price.per_hour, 0.045);

    let vpcs = ec2
        .describe_vpcs()
        .filters(tag_filter(&cluster))
        .send()
        .await
        .unwrap();
    assert_eq!(vpcs.vpcs().len(), 1);
    let vpc_id = vpcs.vpcs()[0].vpc_id().unwrap();
    let subnets = ec2
        .describe_subnets()
        .filters(tag_filter(&cluster))
        .send()
        .await
        .unwrap();
    let mut layout: Vec<_> = subnets
        .subnets()
        .iter()
        .map(|s| {
            let role = s
                .tags()
                .iter()
                .find(|t| t.key() == Some("slipway.dev/role"))
                .unwrap()
                .value()
                .unwrap();
            assert_eq!(s.vpc_id(), Some(vpc_id));
            (role.to_string(), s.availability_zone().unwrap().to_string())
        })
        .collect();
    layout.sort();
    assert_eq!(
        layout,
        [
            ("private", "us-east-1a"),
            ("private", "us-east-1b"),
            ("public", "us-east-1a"),
            ("public", "us-east-1b")
        ]
        .map(|(r, z)| (r.to_string(), z.to_string()))
    );
    let gateways = ec2
        .describe_internet_gateways()
        .filters(tag_filter(&cluster))
        .send()
        .await
        .unwrap();
    assert_eq!(gateways.internet_gateways().len(), 1);
    assert_eq!(
        gateways.internet_gateways()[0].attachments()[0].vpc_id(),
        Some(vpc_id)
    );
    let tables = ec2
        .describe_route_tables()
        .filters(tag_filter(&cluster))
        .send()
        .await
        .unwrap();
    // A public table, and a private one per zone.
    assert_eq!(tables.route_tables().len(), 3);
    let public_table = tables
        .route_tables()
        .iter()
        .find(|t| t.tags().iter().any(|tag| tag.value() == Some("public")))
        .unwrap();
    assert!(
        public_table
            .routes()
            .iter()
            .any(|r| r.destination_cidr_block() == Some("0.0.0.0/0")
                && r.gateway_id() == gateways.internet_gateways()[0].internet_gateway_id())
    );
    assert_eq!(
        public_table
            .associations()
            .iter()
            .filter(|a| a.subnet_id().is_some())
            .count(),
        2
    );
    let groups = ec2
        .describe_security_groups()
        .filters(tag_filter(&cluster))
        .send()
        .await
        .unwrap();
    assert_eq!(groups.security_groups().len(), 2);
    let control_plane_group = groups
        .security_groups()
        .iter()
        .find(|g| g.tags().iter().any(|t| t.value() == Some("control-plane")))
        .unwrap();
    let control_plane_group_id = control_plane_group.group_id().unwrap();
    // 6443 from the allowed range, and from the group's own members: the load balancer is one.
    let api_rules: Vec<_> = control_plane_group
        .ip_permissions()
        .iter()
        .filter(|p| (p.from_port(), p.to_port()) == (Some(6443), Some(6443)))
        .collect();
    assert!(
        api_rules.iter().any(|p| p
            .ip_ranges()
            .iter()
            .any(|r| r.cidr_ip() == Some("203.0.113.0/24"))),
        "{api_rules:?}"
    );
    assert!(
        api_rules.iter().any(|p| p
            .user_id_group_pairs()
            .iter()
            .any(|g| g.group_id() == Some(control_plane_group_id))),
        "{api_rules:?}"
    );
    assert_eq!(
        control_plane_group
            .ip_permissions()
            .iter()
            .flat_map(|p| p.ip_ranges())
            .count(),
        1,
        "only the API port is open to the allowed range"
    );
    // A NAT gateway per zone in that zone's public subnet, each with its own Elastic IP, and each zone's private
    // subnet routed through its zone's NAT gateway. (No other Elastic IP: the endpoint is the load balancer's DNS
    // name.)
    let nats = live_nat_gateways(&ec2, &cluster).await;
    assert_eq!(nats.len(), 2, "{nats:?}");
    let addresses = ec2
        .describe_addresses()
        .filters(tag_filter(&cluster))
        .send()
        .await
        .unwrap();
    assert_eq!(addresses.addresses().len(), 2);
    for address in addresses.addresses() {
        assert_eq!(tag_value(address.tags(), "slipway.dev/role"), Some("nat"));
    }
    for zone in ["us-east-1a", "us-east-1b"] {
        let subnet_of = |role: &str| {
            subnets
                .subnets()
                .iter()
                .find(|s| {
                    s.availability_zone() == Some(zone)
                        && tag_value(s.tags(), "slipway.dev/role") == Some(role)
                })
                .and_then(|s| s.subnet_id())
                .unwrap()
                .to_string()
        };
        let nat = nats
            .iter()
            .find(|n| tag_value(n.tags(), "slipway.dev/zone") == Some(zone))
            .unwrap_or_else(|| panic!("no NAT gateway in {zone}: {nats:?}"));
        assert_eq!(nat.subnet_id(), Some(subnet_of("public").as_str()));
        let allocation = nat.nat_gateway_addresses()[0].allocation_id().unwrap();
        assert!(
            addresses
                .addresses()
                .iter()
                .any(|a| a.allocation_id() == Some(allocation)
                    && tag_value(a.tags(), "slipway.dev/zone") == Some(zone)),
            "{zone}: the NAT gateway's address is the one tagged for it"
        );
        let private = subnet_of("private");
        let table = tables
            .route_tables()
            .iter()
            .find(|t| {
                t.associations()
                    .iter()
                    .any(|a| a.subnet_id() == Some(private.as_str()))
            })
            .unwrap();
        assert_eq!(tag_value(table.tags(), "slipway.dev/zone"), Some(zone));
        assert!(
            table
                .routes()
                .iter()
                .any(|r| r.destination_cidr_block() == Some("0.0.0.0/0")
                    && r.nat_gateway_id() == nat.nat_gateway_id()),
            "{zone}: {:?}",
            table.routes()
        );
    }
    let balancing = ElbInventory::read(&elb).await;
    assert_eq!(
        balancing.counts(Some(&cluster.key())),
        (1, 1, 1),
        "{balancing:?}"
    );
    assert_eq!(balancing.counts(None), (1, 1, 1), "nothing untagged");
    let (lb, lb_tags) = &balancing.load_balancers[0];
    assert_eq!(lb.dns_name(), Some(endpoint.as_str()));
    assert_eq!(
        lb.r#type(),
        Some(&aws_sdk_elasticloadbalancingv2::types::LoadBalancerTypeEnum::Network)
    );
    assert_eq!(
        lb.scheme(),
        Some(&aws_sdk_elasticloadbalancingv2::types::LoadBalancerSchemeEnum::InternetFacing)
    );
    assert_eq!(lb.vpc_id(), Some(vpc_id));
    assert_eq!(lb.security_groups(), [control_plane_group_id.to_string()]);
    let mut lb_subnets: Vec<&str> = lb
        .availability_zones()
        .iter()
        .map(|z| z.subnet_id().unwrap())
        .collect();
    lb_subnets.sort();
    let mut public_subnets: Vec<&str> = subnets
        .subnets()
        .iter()
        .filter(|s| s.tags().iter().any(|t| t.value() == Some("public")))
        .map(|s| s.subnet_id().unwrap())
        .collect();
    public_subnets.sort();
    assert_eq!(
        lb_subnets, public_subnets,
        "the load balancer is in the public subnets"
    );
    assert_eq!(
        lb_tags.get("slipway.dev/role").map(String::as_str),
        Some("api")
    );
    assert_eq!(
        lb_tags.get("Name").map(String::as_str),
        Some("default-demo-api")
    );
    let attributes = elb
        .describe_load_balancer_attributes()
        .load_balancer_arn(lb.load_balancer_arn().unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        attributes
            .attributes()
            .iter()
            .any(|a| a.key() == Some("load_balancing.cross_zone.enabled")
                && a.value() == Some("true")),
        "{attributes:?}"
    );
    let (group, _) = &balancing.target_groups[0];
    let target_group_arn = group.target_group_arn().unwrap();
    assert_eq!(
        (
            group.protocol(),
            group.port(),
            group.target_type(),
            group.health_check_protocol(),
            group.vpc_id()
        ),
        (
            Some(&aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Tcp),
            Some(6443),
            Some(&aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Instance),
            Some(&aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Tcp),
            Some(vpc_id)
        )
    );
    let group_attributes = elb
        .describe_target_group_attributes()
        .target_group_arn(target_group_arn)
        .send()
        .await
        .unwrap();
    assert!(
        group_attributes
            .attributes()
            .iter()
            .any(|a| a.key() == Some("preserve_client_ip.enabled") && a.value() == Some("false")),
        "{group_attributes:?}"
    );
    let (listener, _) = &balancing.listeners[0];
    assert_eq!(
        (listener.protocol(), listener.port()),
        (
            Some(&aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Tcp),
            Some(6443)
        )
    );
    assert_eq!(
        listener.default_actions()[0].target_group_arn(),
        Some(target_group_arn)
    );
    // The second reconcile kept the same three pieces (same ARNs), and a third one does too.
    provider.reconcile_cluster(&cluster).await.unwrap();
    let arns = |inventory: &ElbInventory| {
        (
            inventory
                .load_balancers
                .iter()
                .map(|(lb, _)| lb.load_balancer_arn().unwrap().to_string())
                .collect::<Vec<_>>(),
            inventory
                .target_groups
                .iter()
                .map(|(tg, _)| tg.target_group_arn().unwrap().to_string())
                .collect::<Vec<_>>(),
            inventory
                .listeners
                .iter()
                .map(|(l, _)| l.listener_arn().unwrap().to_string())
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        arns(&ElbInventory::read(&elb).await),
        arns(&first_balancing)
    );

    // One control-plane machine and three workers.
    let join = join_cloud_init(&format!("{endpoint}:6443"));
    let mut requests = vec![request(
        &cluster,
        MachineRole::ControlPlane,
        0,
        CONTROL_PLANE_CLOUD_INIT,
    )];
    requests.extend((0..3).map(|i| request(&cluster, workers(), i, &join)));
    let mut created = Vec::new();
    for request in &requests {
        created.push(provider.create_machine(&cluster, request).await.unwrap());
    }
    let instances = live_instances(&ec2, &cluster).await;
    assert_eq!(instances.len(), 4);
    for request in &requests {
        let instance = instances
            .iter()
            .find(|i| tag(i, "slipway.dev/machine") == Some(&request.name))
            .unwrap();
        assert_eq!(tag(instance, "slipway.dev/cluster"), Some("default/demo"));
        assert_eq!(
            tag(instance, "slipway.dev/pool"),
            Some(request.role.group())
        );
        assert_eq!(tag(instance, "slipway.dev/template-hash"), Some("hash-1"));
        assert_eq!(
            tag(instance, "Name"),
            Some(format!("default-{}", request.name).as_str())
        );
        assert_eq!(tag(instance, "team"), Some("platform"));
        assert_eq!(instance.image_id(), Some(MOTO_UBUNTU_AMI));
        assert_eq!(
            instance.instance_type().map(|t| t.as_str()),
            Some("t3.medium")
        );
        // IMDSv2 only, one hop: the user data (keys, join token) is not for any pod on the node. moto records the
        // options RunInstances sent and answers them in DescribeInstances (its default is HttpTokens=optional).
        let metadata = instance
            .metadata_options()
            .expect("DescribeInstances returns MetadataOptions");
        assert_eq!(
            (
                metadata.http_tokens(),
                metadata.http_put_response_hop_limit(),
                metadata.http_endpoint()
            ),
            (
                Some(&aws_sdk_ec2::types::HttpTokensState::Required),
                Some(1),
                Some(&aws_sdk_ec2::types::InstanceMetadataEndpointState::Enabled)
            ),
            "{}",
            request.name
        );
        let user_data = ec2
            .describe_instance_attribute()
            .instance_id(instance.instance_id().unwrap())
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await
            .unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(user_data.user_data().unwrap().value().unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            request.user_data.clone().unwrap()
        );
    }
    // Workers spread over the private subnets by their ordinal; the control plane is in a public one.
    let zone_of = |name: &str| {
        let i = instances
            .iter()
            .find(|i| tag(i, "slipway.dev/machine") == Some(name))
            .unwrap();
        i.placement()
            .unwrap()
            .availability_zone()
            .unwrap()
            .to_string()
    };
    assert_eq!(zone_of("demo-md-0-0"), "us-east-1a");
    assert_eq!(zone_of("demo-md-0-1"), "us-east-1b");
    assert_eq!(zone_of("demo-md-0-2"), "us-east-1a");

    // Creating again returns the same machines and launches nothing.
    for (request, first) in requests.iter().zip(&created) {
        let again = provider.create_machine(&cluster, request).await.unwrap();
        assert_eq!(again.provider_id, first.provider_id);
    }
    assert_eq!(live_instances(&ec2, &cluster).await.len(), 4);

    let control_plane = provider
        .list_machines(&cluster, &MachineRole::ControlPlane)
        .await
        .unwrap();
    assert_eq!(control_plane.len(), 1);
    assert!(
        control_plane[0]
            .provider_id
            .starts_with("aws:///us-east-1a/i-"),
        "{:?}",
        control_plane[0]
    );
    assert_eq!(control_plane[0].template_hash, "hash-1");
    let pool = provider.list_machines(&cluster, &workers()).await.unwrap();
    let names: Vec<_> = pool.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["demo-md-0-0", "demo-md-0-1", "demo-md-0-2"]);
    assert!(pool.iter().all(|m| m.ready));
    // The load balancer's target group holds the control-plane machine, and no worker.
    let targets = support::targets(&elb, target_group_arn).await;
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert!(
        control_plane[0].provider_id.ends_with(&targets[0]),
        "{targets:?}"
    );

    delete_until_done(&provider, &cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_then_deleting_the_cluster_leaves_no_tagged_resource() {
    let moto = Moto::start().await;
    let provider = support::provider(&moto.url, AwsConfig::default());
    let ec2 = support::ec2(&moto.url).await;
    let cluster = support::cluster("scale");
    provider.reconcile_cluster(&cluster).await.unwrap();
    provider
        .create_machine(
            &cluster,
            &request(
                &cluster,
                MachineRole::ControlPlane,
                0,
                CONTROL_PLANE_CLOUD_INIT,
            ),
        )
        .await
        .unwrap();
    for i in 0..2 {
        provider
            .create_machine(
                &cluster,
                &request(&cluster, workers(), i, "#cloud-config\n"),
            )
            .await
            .unwrap();
    }
    // Scale up to three, then down by deleting the first.
    provider
        .create_machine(
            &cluster,
            &request(&cluster, workers(), 2, "#cloud-config\n"),
        )
        .await
        .unwrap();
    assert_eq!(
        provider
            .list_machines(&cluster, &workers())
            .await
            .unwrap()
            .len(),
        3
    );
    let mut deletion = provider
        .delete_machine(&cluster, &workers(), "scale-md-0-0")
        .await
        .unwrap();
    for _ in 0..20 {
        if deletion == Deletion::Done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        deletion = provider
            .delete_machine(&cluster, &workers(), "scale-md-0-0")
            .await
            .unwrap();
    }
    assert_eq!(deletion, Deletion::Done);
    let names: Vec<_> = provider
        .list_machines(&cluster, &workers())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["scale-md-0-1", "scale-md-0-2"]);
    assert_eq!(
        provider
            .delete_machine(&cluster, &workers(), "never-existed")
            .await
            .unwrap(),
        Deletion::Done
    );

    let messages = delete_until_done(&provider, &cluster).await;
    assert!(messages[0].contains("to terminate"), "{messages:?}");

    let f = || tag_filter(&cluster);
    assert!(live_instances(&ec2, &cluster).await.is_empty());
    assert!(
        ec2.describe_vpcs()
            .filters(f())
            .send()
            .await
            .unwrap()
            .vpcs()
            .is_empty()
    );
    assert!(
        ec2.describe_subnets()
            .filters(f())
            .send()
            .await
            .unwrap()
            .subnets()
            .is_empty()
    );
    assert!(
        ec2.describe_security_groups()
            .filters(f())
            .send()
            .await
            .unwrap()
            .security_groups()
            .is_empty()
    );
    assert!(
        ec2.describe_addresses()
            .filters(f())
            .send()
            .await
            .unwrap()
            .addresses()
            .is_empty()
    );
    assert!(
        ec2.describe_internet_gateways()
            .filters(f())
            .send()
            .await
            .unwrap()
            .internet_gateways()
            .is_empty()
    );
    assert!(live_nat_gateways(&ec2, &cluster).await.is_empty());
    assert!(
        ec2.describe_route_tables()
            .filters(f())
            .send()
            .await
            .unwrap()
            .route_tables()
            .is_empty()
    );
    assert_eq!(
        ElbInventory::read(&support::elb(&moto.url).await)
            .await
            .counts(None),
        (0, 0, 0),
        "load balancers, target groups or listeners left"
    );
    // Deleting what is gone is done at once.
    assert_eq!(
        provider.delete_cluster(&cluster).await.unwrap(),
        Deletion::Done
    );
}

/// The value of tag `key`.
fn tag_value<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// The cluster's NAT gateways that are not deleted, read without the provider.
async fn live_nat_gateways(
    ec2: &aws_sdk_ec2::Client,
    cluster: &ClusterInfo,
) -> Vec<aws_sdk_ec2::types::NatGateway> {
    ec2.describe_nat_gateways()
        .filter(tag_filter(cluster))
        .send()
        .await
        .unwrap()
        .nat_gateways()
        .iter()
        // moto applies no tag filter to NAT gateways: checked here.
        .filter(|n| tag_value(n.tags(), "slipway.dev/cluster") == Some(cluster.key().as_str()))
        .filter(|n| n.state() != Some(&aws_sdk_ec2::types::NatGatewayState::Deleted))
        .cloned()
        .collect()
}

/// One NAT gateway for every private subnet, or none: the cheaper settings, and what each costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_nat_gateway_serves_every_zone_and_disabled_makes_none() {
    let moto = Moto::start().await;
    let provider = support::provider(&moto.url, AwsConfig::default());
    let ec2 = support::ec2(&moto.url).await;

    let mut single = support::cluster("single");
    single.infrastructure.aws.as_mut().unwrap().nat_gateways = NatGateways::Single;
    provider.reconcile_cluster(&single).await.unwrap();
    let nats = live_nat_gateways(&ec2, &single).await;
    assert_eq!(nats.len(), 1, "{nats:?}");
    assert_eq!(
        tag_value(nats[0].tags(), "slipway.dev/zone"),
        Some("us-east-1a")
    );
    let tables = ec2
        .describe_route_tables()
        .filters(tag_filter(&single))
        .send()
        .await
        .unwrap();
    let private: Vec<_> = tables
        .route_tables()
        .iter()
        .filter(|t| tag_value(t.tags(), "slipway.dev/role") == Some("private"))
        .collect();
    assert_eq!(private.len(), 1);
    assert_eq!(
        private[0]
            .associations()
            .iter()
            .filter(|a| a.subnet_id().is_some())
            .count(),
        2,
        "both private subnets"
    );
    assert!(
        private[0]
            .routes()
            .iter()
            .any(|r| r.nat_gateway_id() == nats[0].nat_gateway_id())
    );
    assert_eq!(provider.infrastructure_prices(&single)[0].count, 1);

    let mut disabled = support::cluster("closed");
    disabled.infrastructure.aws.as_mut().unwrap().nat_gateways = NatGateways::Disabled;
    provider.reconcile_cluster(&disabled).await.unwrap();
    assert!(live_nat_gateways(&ec2, &disabled).await.is_empty());
    let tables = ec2
        .describe_route_tables()
        .filters(tag_filter(&disabled))
        .send()
        .await
        .unwrap();
    assert!(
        tables
            .route_tables()
            .iter()
            .filter(|t| tag_value(t.tags(), "slipway.dev/role") == Some("private"))
            .all(|t| t
                .routes()
                .iter()
                .all(|r| r.destination_cidr_block() != Some("0.0.0.0/0"))),
        "no way out"
    );
    assert_eq!(provider.infrastructure_prices(&disabled)[0].count, 0);

    // A cluster made before NAT gateways has this layout (one private table, no way out); the per-zone default
    // it reads now moves each private subnet to its zone's table with a route through its zone's NAT gateway.
    let mut upgraded = disabled.clone();
    upgraded.infrastructure.aws.as_mut().unwrap().nat_gateways = NatGateways::PerZone;
    provider.reconcile_cluster(&upgraded).await.unwrap();
    let nats = live_nat_gateways(&ec2, &upgraded).await;
    assert_eq!(nats.len(), 2, "{nats:?}");
    let tables = ec2
        .describe_route_tables()
        .filters(tag_filter(&upgraded))
        .send()
        .await
        .unwrap();
    let subnets = ec2
        .describe_subnets()
        .filters(tag_filter(&upgraded))
        .send()
        .await
        .unwrap();
    for subnet in subnets
        .subnets()
        .iter()
        .filter(|s| tag_value(s.tags(), "slipway.dev/role") == Some("private"))
    {
        let zone = subnet.availability_zone().unwrap();
        let holding: Vec<_> = tables
            .route_tables()
            .iter()
            .filter(|t| {
                t.associations()
                    .iter()
                    .any(|a| a.subnet_id() == subnet.subnet_id())
            })
            .collect();
        assert_eq!(holding.len(), 1, "{zone}: one table");
        assert_eq!(tag_value(holding[0].tags(), "slipway.dev/zone"), Some(zone));
        let nat = nats
            .iter()
            .find(|n| tag_value(n.tags(), "slipway.dev/zone") == Some(zone))
            .unwrap();
        assert!(
            holding[0]
                .routes()
                .iter()
                .any(|r| r.nat_gateway_id() == nat.nat_gateway_id()),
            "{zone}: {:?}",
            holding[0].routes()
        );
    }
    delete_until_done(&provider, &upgraded).await;
    assert!(live_nat_gateways(&ec2, &upgraded).await.is_empty());

    // Deleted with the cluster: the NAT gateway and its address.
    delete_until_done(&provider, &single).await;
    assert!(live_nat_gateways(&ec2, &single).await.is_empty());
    assert!(
        ec2.describe_addresses()
            .filters(tag_filter(&single))
            .send()
            .await
            .unwrap()
            .addresses()
            .is_empty()
    );
}

/// The cluster's target group, read without the provider.
async fn target_group_of(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    cluster: &ClusterInfo,
) -> String {
    let inventory = ElbInventory::read(elb).await;
    let ours: Vec<_> = inventory
        .target_groups
        .iter()
        .filter(|(_, tags)| tags.get("slipway.dev/cluster") == Some(&cluster.key()))
        .collect();
    assert_eq!(ours.len(), 1, "{inventory:?}");
    ours[0].0.target_group_arn().unwrap().to_string()
}

/// The ids of the cluster's control-plane instances that are running, sorted.
async fn running_control_plane(ec2: &aws_sdk_ec2::Client, cluster: &ClusterInfo) -> Vec<String> {
    let mut ids: Vec<String> = live_instances(ec2, cluster)
        .await
        .iter()
        .filter(|i| tag(i, "slipway.dev/pool") == Some("control-plane"))
        .filter(|i| {
            i.state().and_then(|s| s.name())
                == Some(&aws_sdk_ec2::types::InstanceStateName::Running)
        })
        .map(|i| i.instance_id().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

async fn delete_machine_until_done(
    provider: &AwsProvider,
    cluster: &ClusterInfo,
    role: &MachineRole,
    name: &str,
) {
    for _ in 0..50 {
        if provider.delete_machine(cluster, role, name).await.unwrap() == Deletion::Done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("machine {name} was not deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_balancer_holds_exactly_the_running_control_plane_instances() {
    let moto = Moto::start().await;
    let provider = support::provider(&moto.url, AwsConfig::default());
    let ec2 = support::ec2(&moto.url).await;
    let elb = support::elb(&moto.url).await;
    let cluster = support::cluster("ha");
    let control_plane = MachineRole::ControlPlane;
    let status = provider.reconcile_cluster(&cluster).await.unwrap();
    assert!(status.ready, "{status:?}");
    let target_group = target_group_of(&elb, &cluster).await;
    assert!(support::targets(&elb, &target_group).await.is_empty());

    // Three members, and a worker that must never be a target.
    for i in 0..3 {
        provider
            .create_machine(
                &cluster,
                &request(&cluster, control_plane.clone(), i, CONTROL_PLANE_CLOUD_INIT),
            )
            .await
            .unwrap();
    }
    provider
        .create_machine(
            &cluster,
            &request(&cluster, workers(), 0, "#cloud-config\n"),
        )
        .await
        .unwrap();
    let members = running_control_plane(&ec2, &cluster).await;
    assert_eq!(members.len(), 3);
    assert_eq!(support::targets(&elb, &target_group).await, members);
    let listed = provider
        .list_machines(&cluster, &control_plane)
        .await
        .unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(support::targets(&elb, &target_group).await, members);

    // Replacing a member: the one leaving is out of the target group once its deletion has started (moto ends an
    // instance at once, so this cannot show that it left before its instance did); the new one is in once it runs.
    let leaving = live_instances(&ec2, &cluster)
        .await
        .into_iter()
        .find(|i| tag(i, "slipway.dev/machine") == Some("ha-control-plane-1"))
        .unwrap()
        .instance_id()
        .unwrap()
        .to_string();
    let first = provider
        .delete_machine(&cluster, &control_plane, "ha-control-plane-1")
        .await
        .unwrap();
    assert!(matches!(first, Deletion::InProgress(_)), "{first:?}");
    let staying: Vec<String> = members
        .iter()
        .filter(|id| **id != leaving)
        .cloned()
        .collect();
    assert_eq!(support::targets(&elb, &target_group).await, staying);
    delete_machine_until_done(&provider, &cluster, &control_plane, "ha-control-plane-1").await;
    provider
        .create_machine(
            &cluster,
            &request(&cluster, control_plane.clone(), 3, CONTROL_PLANE_CLOUD_INIT),
        )
        .await
        .unwrap();
    let replaced = running_control_plane(&ec2, &cluster).await;
    assert_eq!(replaced.len(), 3);
    assert!(!replaced.contains(&leaving));
    assert_eq!(support::targets(&elb, &target_group).await, replaced);

    // Drift is undone at the next listing: a member stopped behind Slipway's back leaves the target group, and an
    // instance someone registered by hand (here the worker) is taken out.
    let stopped = replaced[0].clone();
    ec2.stop_instances()
        .instance_ids(&stopped)
        .send()
        .await
        .unwrap();
    let worker = live_instances(&ec2, &cluster)
        .await
        .into_iter()
        .find(|i| tag(i, "slipway.dev/pool") == Some("md-0"))
        .unwrap()
        .instance_id()
        .unwrap()
        .to_string();
    elb.register_targets()
        .target_group_arn(&target_group)
        .targets(
            aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
                .id(&worker)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        support::targets(&elb, &target_group)
            .await
            .contains(&worker)
    );
    provider
        .list_machines(&cluster, &control_plane)
        .await
        .unwrap();
    let expected: Vec<String> = replaced[1..].to_vec();
    assert_eq!(support::targets(&elb, &target_group).await, expected);
    // Started again, it is a target again.
    ec2.start_instances()
        .instance_ids(&stopped)
        .send()
        .await
        .unwrap();
    provider
        .list_machines(&cluster, &control_plane)
        .await
        .unwrap();
    assert_eq!(support::targets(&elb, &target_group).await, replaced);

    // Reconciling again creates nothing a second time and keeps the targets.
    let before = ElbInventory::read(&elb).await;
    for _ in 0..2 {
        let again = provider.reconcile_cluster(&cluster).await.unwrap();
        assert_eq!(again.endpoint, status.endpoint);
    }
    let after = ElbInventory::read(&elb).await;
    assert_eq!(after.counts(None), (1, 1, 1), "{after:?}");
    assert_eq!(
        after.load_balancers[0].0.load_balancer_arn(),
        before.load_balancers[0].0.load_balancer_arn()
    );
    assert_eq!(
        after.listeners[0].0.listener_arn(),
        before.listeners[0].0.listener_arn()
    );
    assert_eq!(target_group_of(&elb, &cluster).await, target_group);
    assert_eq!(support::targets(&elb, &target_group).await, replaced);

    // Deleting the cluster leaves no load balancer, target group or listener.
    let load_balancer = after.load_balancers[0]
        .0
        .load_balancer_arn()
        .unwrap()
        .to_string();
    let listener = after.listeners[0].0.listener_arn().unwrap().to_string();
    delete_until_done(&provider, &cluster).await;
    assert!(
        elb.describe_load_balancers()
            .send()
            .await
            .unwrap()
            .load_balancers()
            .is_empty()
    );
    assert!(
        elb.describe_target_groups()
            .send()
            .await
            .unwrap()
            .target_groups()
            .is_empty()
    );
    let gone = elb
        .describe_listeners()
        .listener_arns(&listener)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_sdk_elasticloadbalancingv2::error::ProvideErrorMetadata::code(&gone),
        Some("ListenerNotFound"),
        "{gone:?}"
    );
    let gone = elb
        .describe_listeners()
        .load_balancer_arn(&load_balancer)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_sdk_elasticloadbalancingv2::error::ProvideErrorMetadata::code(&gone),
        Some("LoadBalancerNotFound"),
        "{gone:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_vpc_is_used_and_left_in_place_on_delete() {
    let moto = Moto::start().await;
    let provider = support::provider(&moto.url, AwsConfig::default());
    let ec2 = support::ec2(&moto.url).await;
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.1.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    // Someone else's subnet at the start of the range: Slipway's subnets go around it.
    ec2.create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.1.0.0/24")
        .availability_zone("us-east-1a")
        .send()
        .await
        .unwrap();
    let mut cluster = support::cluster("adopt");
    cluster.infrastructure.aws.as_mut().unwrap().vpc_id = Some(vpc_id.clone());

    let status = provider.reconcile_cluster(&cluster).await.unwrap();
    assert!(status.message.contains(&vpc_id), "{}", status.message);
    let subnets = ec2
        .describe_subnets()
        .filters(tag_filter(&cluster))
        .send()
        .await
        .unwrap();
    let mut cidrs: Vec<_> = subnets
        .subnets()
        .iter()
        .map(|s| s.cidr_block().unwrap().to_string())
        .collect();
    cidrs.sort();
    assert_eq!(
        cidrs,
        [
            "10.1.16.0/20",
            "10.1.32.0/20",
            "10.1.48.0/20",
            "10.1.64.0/20"
        ]
    );
    assert!(
        subnets
            .subnets()
            .iter()
            .all(|s| s.vpc_id() == Some(vpc_id.as_str()))
    );

    delete_until_done(&provider, &cluster).await;
    let left = ec2.describe_vpcs().vpc_ids(&vpc_id).send().await.unwrap();
    assert_eq!(left.vpcs().len(), 1, "the adopted VPC stays");
    let subnets = ec2
        .describe_subnets()
        .filters(Filter::builder().name("vpc-id").values(&vpc_id).build())
        .send()
        .await
        .unwrap();
    assert_eq!(
        subnets.subnets().len(),
        1,
        "only the foreign subnet is left"
    );

    let missing = support::cluster("missing-vpc");
    let mut missing = missing;
    missing.infrastructure.aws.as_mut().unwrap().vpc_id = Some("vpc-0123456789abcdef0".into());
    let error = provider.reconcile_cluster(&missing).await.unwrap_err();
    assert_eq!(error.reason(), "VpcNotFound");
    assert!(
        error.to_string().contains("vpc-0123456789abcdef0"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_images_and_instance_types_are_permanent_errors_that_name_them() {
    let moto = Moto::start().await;
    let provider = support::provider(
        &moto.url,
        AwsConfig {
            images: ImageDefaults {
                name_pattern: "ubuntu/images/hvm-ssd/ubuntu-*".into(),
                owners: vec!["099720109477".into()],
            },
            ..AwsConfig::default()
        },
    );
    let ec2 = support::ec2(&moto.url).await;
    let cluster = support::cluster("bad");
    provider.reconcile_cluster(&cluster).await.unwrap();

    let mut bad_image = request(&cluster, workers(), 0, "#cloud-config\n");
    bad_image.settings.image = Some("ami-0000000000deadbee".into());
    let error = provider
        .create_machine(&cluster, &bad_image)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::Permanent { .. }),
        "{error:?}"
    );
    assert_eq!(error.reason(), "ImageNotFound");
    assert!(
        error.to_string().contains("ami-0000000000deadbee"),
        "{error}"
    );

    let mut no_match = request(&cluster, workers(), 0, "#cloud-config\n");
    no_match.settings.image = Some("no-such-image-*".into());
    let error = provider
        .create_machine(&cluster, &no_match)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "ImageNotFound");
    assert!(error.to_string().contains("no-such-image-*"), "{error}");

    let mut bad_type = request(&cluster, workers(), 0, "#cloud-config\n");
    bad_type.settings.instance_type = Some("m99.gigantic".into());
    let error = provider
        .create_machine(&cluster, &bad_type)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::Permanent { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("m99.gigantic"), "{error}");
    assert!(live_instances(&ec2, &cluster).await.is_empty());

    // No image named: the default pattern finds the newest matching image of the configured owner.
    let mut by_name = request(&cluster, workers(), 0, "#cloud-config\n");
    by_name.settings.image = None;
    provider.create_machine(&cluster, &by_name).await.unwrap();
    let instances = live_instances(&ec2, &cluster).await;
    assert_eq!(instances.len(), 1);
    assert!(
        ["ami-785db401", "ami-1e749f67"].contains(&instances[0].image_id().unwrap()),
        "{:?}",
        instances[0].image_id()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_come_from_the_table_and_overrides() {
    let provider = support::provider("http://127.0.0.1:1", AwsConfig::default());
    assert_eq!(
        provider.price_per_hour(Some("t3.medium")).unwrap().per_hour,
        0.0416
    );
    assert_eq!(
        provider.price_per_hour(None).unwrap().per_hour,
        0.0416,
        "the default type"
    );
    assert_eq!(provider.price_per_hour(Some("u-24tb1.metal")), None);
    let provider = provider.with_prices([("t3.medium".to_string(), 0.05)].into());
    assert_eq!(
        provider.price_per_hour(Some("t3.medium")).unwrap().currency,
        "USD"
    );
    assert_eq!(
        provider.price_per_hour(Some("t3.medium")).unwrap().per_hour,
        0.05
    );
    assert_eq!(provider.name(), "aws");
}

/// The manager's credential source failing (a missing Secret) is the error the controller reports.
struct MissingSecret;

#[async_trait::async_trait]
impl CredentialSource for MissingSecret {
    async fn credentials(
        &self,
        cluster: &ClusterInfo,
    ) -> slipway_provider::Result<Option<AwsCredentials>> {
        Err(ProviderError::permanent(
            "CredentialsNotFound",
            format!("Secret {}/aws not found", cluster.namespace),
        ))
    }
}

// Moto accepts any credentials, so wrong keys cannot be shown failing here; the mapping of AuthFailure to
// InvalidCredentials is covered by the unit tests of `client`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_source_error_is_reported_as_it_is() {
    support::init();
    let provider = AwsProvider::new(
        AwsConfig {
            endpoint_url: Some("http://127.0.0.1:1".into()),
            ..AwsConfig::default()
        },
        Arc::new(MissingSecret),
    );
    let error = provider
        .reconcile_cluster(&support::cluster("nocreds"))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "CredentialsNotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_calls_are_retried_and_stay_within_the_rate_budget() {
    let moto = Moto::start().await;
    // Every third request is answered with RequestLimitExceeded.
    let proxy = ThrottlingProxy::start(&moto.url, 3).await;
    let budgets = Budgets {
        run_instances: Budget {
            per_second: 4.0,
            burst: 2.0,
        },
        describe: Budget {
            per_second: 15.0,
            burst: 5.0,
        },
        mutate: Budget {
            per_second: 15.0,
            burst: 5.0,
        },
    };
    let provider = support::provider(
        &proxy.url,
        AwsConfig {
            budgets,
            retry: support::fast_retries(),
            ..AwsConfig::default()
        },
    );
    let cluster = support::cluster("throttled");
    provider.reconcile_cluster(&cluster).await.unwrap();
    provider
        .create_machine(
            &cluster,
            &request(
                &cluster,
                MachineRole::ControlPlane,
                0,
                CONTROL_PLANE_CLOUD_INIT,
            ),
        )
        .await
        .unwrap();
    for i in 0..3 {
        provider
            .create_machine(
                &cluster,
                &request(&cluster, workers(), i, "#cloud-config\n"),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        provider
            .list_machines(&cluster, &workers())
            .await
            .unwrap()
            .len(),
        3
    );
    delete_until_done(&provider, &cluster).await;

    let seen = proxy.actions();
    eprintln!(
        "throttling proxy: {} requests, {} answered RequestLimitExceeded",
        seen.len(),
        proxy.throttled.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert!(
        proxy.throttled.load(std::sync::atomic::Ordering::SeqCst) >= 10,
        "throttled too few to prove much"
    );
    let start = seen[0].0;
    for (class, budget, matches) in [
        (
            "RunInstances",
            budgets.run_instances,
            (|a: &str| a == "RunInstances") as fn(&str) -> bool,
        ),
        ("Describe*", budgets.describe, |a: &str| {
            a.starts_with("Describe")
        }),
        ("mutating", budgets.mutate, |a: &str| {
            a != "RunInstances" && !a.starts_with("Describe")
        }),
    ] {
        let times: Vec<Instant> = seen
            .iter()
            .filter(|(_, a)| matches(a))
            .map(|(t, _)| *t)
            .collect();
        assert!(!times.is_empty(), "no {class} call seen");
        // In every window from the first call, the count stays within burst + rate * window (+1 for timing).
        for (i, t) in times.iter().enumerate() {
            let window = t.duration_since(start).as_secs_f64();
            let allowed = budget.burst + budget.per_second * window + 1.0;
            assert!(
                (i + 1) as f64 <= allowed,
                "{class}: {} calls within {window:.2}s, budget allows {allowed:.1}",
                i + 1
            );
        }
    }
}
