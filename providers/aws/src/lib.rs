//! slipway-provider-aws: Slipway's machines as EC2 instances, in a network Slipway makes (or adopts) per cluster,
//! behind a network load balancer that is the control plane's endpoint.
//!
//! `reconcile_cluster` creates, or repairs, a VPC (or adopts `spec.infrastructure.aws.vpcId`), a public and a
//! private subnet per availability zone, an internet gateway, NAT gateways with their Elastic IPs for the private
//! subnets (`natGateways`: per zone, one, or none), route tables, a security group for the control
//! plane's API (port 6443 from `controlPlaneIngressCidrs` and from its own members) and one for traffic between the
//! cluster's machines; then an internet-facing network load balancer (aws-sdk-elasticloadbalancingv2) in the public
//! subnets and the control-plane security group, with cross-zone load balancing on, a TCP target group on 6443
//! (instance targets, TCP health checks, client IP preservation off) and a TCP listener on 6443 that forwards to
//! it. The load balancer's DNS name is the endpoint (`InfrastructureStatus.endpoint`, so the Cluster's
//! `status.controlPlaneEndpoint`), and the infrastructure is ready once all three exist (and the load balancer
//! is not in state `failed`). Machines are instances launched with the bootstrap cloud-init as user data;
//! control-plane machines sit in the public subnets. Every listing, creation and deletion of control-plane
//! machines leaves the target group holding exactly the group's running instances: new ones are registered, and
//! terminated, stopping, stopped or foreign ones deregistered (a machine being deleted is deregistered before it
//! is terminated), so the endpoint outlives any one member.
//!
//! Everything carries `slipway.dev/cluster=<namespace>/<name>` and is found by that tag before anything is
//! created (load balancer pieces by listing them and reading their tags, as Elastic Load Balancing has no tag
//! filter), so every call is idempotent and safe to repeat after a crash; deletion removes exactly what carries the
//! tag, in dependency order (listener, load balancer, target group, NAT gateways, then the network), and says
//! what it still waits for.
//!
//! Every AWS call goes through a token bucket per (access key, region), shared by EC2 and Elastic Load Balancing,
//! with separate budgets for RunInstances, Describe* and the rest, and is retried with capped, jittered
//! exponential backoff on throttling and 5xx (see `client`). Credentials come from a [`CredentialSource`] the
//! manager implements (it reads the cluster's Secret), or from aws-config's default chain. Prices for the cost
//! estimate come from an embedded table that can be overridden.
//!
//! Not here: Kubernetes Nodes (the controller matches them by provider ID `aws:///<zone>/<instance-id>`), reading
//! Secrets (the manager does, through [`CredentialSource`]).

mod cidr;
mod client;
mod credentials;
mod instances;
mod load_balancer;
mod network;
mod pricing;
mod tags;
mod throttle;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use slipway_api::AwsSettings;
use slipway_provider::{
    ClusterInfo, Deletion, InfrastructurePrice, InfrastructureProvider, InfrastructureStatus,
    Machine, MachineRequest, MachineRole, Price, ProviderError, Result,
};

pub use client::RetryPolicy;
pub use credentials::{
    AwsCredentials, CredentialSource, DefaultChain, SecretCredentials, StaticCredentials,
};
pub use instances::ImageDefaults;
pub use pricing::PriceTable;
pub use tags::{
    CLUSTER as CLUSTER_TAG, MACHINE as MACHINE_TAG, POOL as POOL_TAG,
    TEMPLATE_HASH as TEMPLATE_HASH_TAG,
};
pub use throttle::{Budget, Budgets};

use client::{Aws, ClientSettings, Clients};
use throttle::Limiters;

/// How the provider talks to AWS (EC2, Elastic Load Balancing) and what it picks when a machine leaves something out.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsConfig {
    /// Another endpoint for EC2 and Elastic Load Balancing, e.g. `http://127.0.0.1:5000` for moto (which serves
    /// both on one port) or a compatible cloud. Absent: AWS's own.
    pub endpoint_url: Option<String>,
    /// Instance type of machines that name none.
    pub default_instance_type: String,
    pub images: ImageDefaults,
    /// Range of VPCs Slipway creates; subnets are /4 longer (10.0.0.0/16 → /20s).
    pub vpc_cidr: String,
    pub budgets: Budgets,
    pub retry: RetryPolicy,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            endpoint_url: None,
            default_instance_type: "t3.medium".into(),
            images: ImageDefaults::default(),
            vpc_cidr: "10.0.0.0/16".into(),
            budgets: Budgets::default(),
            retry: RetryPolicy::default(),
        }
    }
}

/// The aws provider. Cheap to share: wrap it in an `Arc`.
pub struct AwsProvider {
    config: AwsConfig,
    credentials: Arc<dyn CredentialSource>,
    clients: Clients,
    prices: PriceTable,
}

impl AwsProvider {
    pub fn new(config: AwsConfig, credentials: Arc<dyn CredentialSource>) -> Self {
        let clients = Clients::new(
            ClientSettings {
                endpoint_url: config.endpoint_url.clone(),
                retry: config.retry,
            },
            Limiters::new(config.budgets),
        );
        Self {
            config,
            credentials,
            clients,
            prices: PriceTable::default(),
        }
    }

    /// Replaces or adds hourly prices (USD by instance type), e.g. from a ConfigMap.
    pub fn with_prices(mut self, overrides: BTreeMap<String, f64>) -> Self {
        self.prices = PriceTable::with_overrides(overrides);
        self
    }

    async fn aws<'a>(&self, cluster: &'a ClusterInfo) -> Result<(Arc<Aws>, &'a AwsSettings)> {
        let settings = cluster.infrastructure.aws.as_ref().ok_or_else(|| {
            ProviderError::permanent(
                "WrongProvider",
                format!("cluster {} has no spec.infrastructure.aws", cluster.key()),
            )
        })?;
        let credentials = self.credentials.credentials(cluster).await?;
        Ok((
            self.clients
                .get(&settings.region, credentials.as_ref())
                .await,
            settings,
        ))
    }

    /// Makes the load balancer's target group hold exactly the running instances among `control_plane`, the
    /// group's live instances (see `load_balancer::sync_targets`).
    async fn sync_targets(
        &self,
        aws: &Aws,
        cluster: &ClusterInfo,
        control_plane: &[aws_sdk_ec2::types::Instance],
    ) -> Result<()> {
        let vpc = match control_plane.iter().find_map(|i| i.vpc_id()) {
            Some(vpc) => Some(vpc.to_string()),
            // No live member to take it from: the subnets know.
            None => network::vpc_id(&aws.ec2, cluster).await?,
        };
        load_balancer::sync_targets(&aws.elb, cluster, vpc.as_deref(), control_plane).await
    }
}

#[async_trait]
impl InfrastructureProvider for AwsProvider {
    fn name(&self) -> &'static str {
        "aws"
    }

    async fn reconcile_cluster(&self, cluster: &ClusterInfo) -> Result<InfrastructureStatus> {
        let (aws, settings) = self.aws(cluster).await?;
        let network =
            network::reconcile(&aws.ec2, cluster, settings, &self.config.vpc_cidr).await?;
        let endpoint = load_balancer::reconcile(&aws.elb, cluster, &network).await?;
        let zones: Vec<&str> = network
            .public_subnets
            .iter()
            .map(|(z, _)| z.as_str())
            .collect();
        let place = format!(
            "VPC {} with subnets in {}; API endpoint {}:{} (network load balancer {}, {})",
            network.vpc_id,
            zones.join(", "),
            endpoint.dns_name,
            network::API_PORT,
            endpoint.name,
            endpoint.state
        );
        // A load balancer that failed to come up will not serve; AWS says why in its state, and it has to be
        // deleted by hand (or with the cluster) before another is made.
        if endpoint.state == "failed" {
            return Ok(InfrastructureStatus {
                ready: false,
                message: place,
                endpoint: None,
                workload_api: true,
            });
        }
        Ok(InfrastructureStatus {
            ready: true,
            message: place,
            endpoint: Some((endpoint.dns_name, network::API_PORT as u16)),
            workload_api: true,
        })
    }

    async fn delete_cluster(&self, cluster: &ClusterInfo) -> Result<Deletion> {
        let (aws, _) = self.aws(cluster).await?;
        let live = instances::describe(&aws.ec2, cluster, None, None).await?;
        if !live.is_empty() {
            let ids = instances::terminate(&aws.ec2, cluster, &live).await?;
            return Ok(Deletion::InProgress(format!(
                "waiting for {} instance(s) to terminate: {}",
                ids.len(),
                ids.join(", ")
            )));
        }
        network::delete(&aws, cluster).await
    }

    async fn list_machines(
        &self,
        cluster: &ClusterInfo,
        role: &MachineRole,
    ) -> Result<Vec<Machine>> {
        let (aws, _) = self.aws(cluster).await?;
        let found = instances::describe(&aws.ec2, cluster, Some(role.group()), None).await?;
        if *role == MachineRole::ControlPlane {
            self.sync_targets(&aws, cluster, &found).await?;
        }
        Ok(instances::machines(found))
    }

    async fn create_machine(
        &self,
        cluster: &ClusterInfo,
        request: &MachineRequest,
    ) -> Result<Machine> {
        let (aws, _) = self.aws(cluster).await?;
        let ec2 = &aws.ec2;
        let group = request.role.group();
        let existing = instances::describe(ec2, cluster, Some(group), Some(&request.name)).await?;
        let machine = match instances::machines(existing).into_iter().next() {
            Some(machine) => machine,
            None => {
                let network = network::find(ec2, cluster).await?.ok_or_else(|| {
                    ProviderError::transient(
                        "InfrastructureNotReady",
                        format!(
                            "machine {}/{}: the network of cluster {} is not complete yet",
                            cluster.namespace,
                            request.name,
                            cluster.key()
                        ),
                    )
                })?;
                let image = instances::resolve_image(
                    ec2,
                    cluster,
                    request.settings.image.as_deref(),
                    &self.config.images,
                )
                .await?;
                let instance_type = request
                    .settings
                    .instance_type
                    .as_deref()
                    .unwrap_or(&self.config.default_instance_type);
                let instance =
                    instances::run(ec2, cluster, &network, request, &image, instance_type).await?;
                instances::to_machine(&instance).ok_or_else(|| {
                    ProviderError::transient(
                        "AwsError",
                        format!(
                            "machine {}: RunInstances answered with an instance in no known state",
                            request.name
                        ),
                    )
                })?
            }
        };
        if request.role == MachineRole::ControlPlane {
            let control_plane = instances::describe(ec2, cluster, Some(group), None).await?;
            self.sync_targets(&aws, cluster, &control_plane).await?;
        }
        Ok(machine)
    }

    async fn delete_machine(
        &self,
        cluster: &ClusterInfo,
        role: &MachineRole,
        name: &str,
    ) -> Result<Deletion> {
        let (aws, _) = self.aws(cluster).await?;
        let ec2 = &aws.ec2;
        let live = instances::describe(ec2, cluster, Some(role.group()), Some(name)).await?;
        if live.is_empty() {
            return Ok(Deletion::Done);
        }
        if *role == MachineRole::ControlPlane {
            // Out of the load balancer before it goes, so that new connections stop going to it first.
            let leaving: Vec<&str> = live.iter().filter_map(|i| i.instance_id()).collect();
            let staying: Vec<_> = instances::describe(ec2, cluster, Some(role.group()), None)
                .await?
                .into_iter()
                .filter(|i| !i.instance_id().is_some_and(|id| leaving.contains(&id)))
                .collect();
            self.sync_targets(&aws, cluster, &staying).await?;
        }
        let ids = instances::terminate(ec2, cluster, &live).await?;
        Ok(Deletion::InProgress(format!(
            "instance {} of machine {name} is terminating",
            ids.join(", ")
        )))
    }

    fn provider_id_from_instance_data(&self) -> Option<&'static str> {
        Some(instances::PROVIDER_ID_FROM_INSTANCE_DATA)
    }

    fn price_per_hour(&self, instance_type: Option<&str>) -> Option<Price> {
        self.prices
            .price(instance_type.unwrap_or(&self.config.default_instance_type))
    }

    /// The cluster's NAT gateways: one per zone (the zones it names, or the three the provider picks), one, or
    /// none.
    fn infrastructure_prices(&self, cluster: &ClusterInfo) -> Vec<InfrastructurePrice> {
        let Some(settings) = cluster.infrastructure.aws.as_ref() else {
            return Vec::new();
        };
        let count = network::nat_gateway_count(settings);
        vec![InfrastructurePrice {
            what: "NAT gateway".into(),
            count: u32::try_from(count).unwrap_or(u32::MAX),
            price: self.prices.nat_gateway(),
        }]
    }
}
