//! slipway-provider-aws: Slipway's machines as EC2 instances, in a network Slipway makes (or adopts) per cluster.
//!
//! `reconcile_cluster` creates, or repairs, a VPC (or adopts `spec.infrastructure.aws.vpcId`), a public and a
//! private subnet per availability zone, an internet gateway, route tables, a security group for the control
//! plane's API (port 6443 from `controlPlaneIngressCidrs`) and one for traffic between the cluster's machines, and
//! an Elastic IP that is the control plane's endpoint. Machines are instances launched with the bootstrap
//! cloud-init as user data; control-plane machines sit in the public subnets and the first running one carries
//! the Elastic IP. Everything carries `slipway.dev/cluster=<namespace>/<name>` and is found by that tag before
//! anything is created, so every call is idempotent and safe to repeat after a crash; deletion removes exactly
//! what carries the tag, in dependency order, and says what it still waits for.
//!
//! Every EC2 call goes through a token bucket per (access key, region) with separate budgets for RunInstances,
//! Describe* and the rest, and is retried with capped, jittered exponential backoff on throttling and 5xx (see
//! `client`). Credentials come from a [`CredentialSource`] the manager implements (it reads the cluster's
//! Secret), or from aws-config's default chain. Prices for the cost estimate come from an embedded table that
//! can be overridden.
//!
//! One endpoint address is the non-HA design: the API is reachable through whichever control-plane machine holds
//! the Elastic IP, and when that machine goes, the address moves to the next running one on the next listing.
//! HA endpoints would come as a network load balancer (aws-sdk-elasticloadbalancingv2) with a target group on
//! 6443 holding every control-plane instance, its DNS name as the endpoint; the NLB would then own the Elastic IP
//! (one per zone), so `InfrastructureStatus.endpoint` keeps its shape.
//!
//! Not here: NAT gateways (machines in private subnets have no way out to the internet yet, so worker images
//! must not need to pull from it, or the subnets need a NAT gateway added), Kubernetes Nodes (the controller
//! matches them by provider ID `aws:///<zone>/<instance-id>`), reading Secrets (the manager does, through
//! [`CredentialSource`]).

mod cidr;
mod client;
mod credentials;
mod instances;
mod network;
mod pricing;
mod tags;
mod throttle;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use slipway_api::AwsSettings;
use slipway_provider::{
    ClusterInfo, Deletion, InfrastructureProvider, InfrastructureStatus, Machine, MachineRequest,
    MachineRole, Price, ProviderError, Result,
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

use client::{ClientSettings, Clients, Ec2};
use throttle::Limiters;

/// How the provider talks to EC2 and what it picks when a machine leaves something out.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsConfig {
    /// Another EC2 endpoint, e.g. `http://127.0.0.1:5000` for moto or a compatible cloud. Absent: AWS's own.
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

    async fn ec2<'a>(&self, cluster: &'a ClusterInfo) -> Result<(Arc<Ec2>, &'a AwsSettings)> {
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

    /// Gives the endpoint address to the oldest running control-plane instance when no live one holds it: after
    /// the first control-plane machine starts, and again when the holder is gone. `control_plane` is the group's
    /// live instances.
    async fn place_endpoint(
        &self,
        ec2: &Ec2,
        cluster: &ClusterInfo,
        control_plane: &[aws_sdk_ec2::types::Instance],
    ) -> Result<()> {
        let running = |i: &&aws_sdk_ec2::types::Instance| {
            i.state().and_then(|s| s.name())
                == Some(&aws_sdk_ec2::types::InstanceStateName::Running)
        };
        let Some(oldest) = control_plane
            .iter()
            .filter(running)
            .min_by_key(|i| i.launch_time().map(|t| (t.secs(), t.subsec_nanos())))
        else {
            // Nothing can hold it yet; an instance that is still pending cannot take an Elastic IP.
            return Ok(());
        };
        let Some(endpoint) = network::find_endpoint(ec2, cluster).await? else {
            return Ok(());
        };
        if let Some(holder) = &endpoint.instance_id
            && control_plane
                .iter()
                .filter(running)
                .any(|i| i.instance_id() == Some(holder.as_str()))
        {
            return Ok(());
        }
        if let Some(id) = oldest.instance_id() {
            network::associate_endpoint(ec2, cluster, &endpoint, id).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl InfrastructureProvider for AwsProvider {
    fn name(&self) -> &'static str {
        "aws"
    }

    async fn reconcile_cluster(&self, cluster: &ClusterInfo) -> Result<InfrastructureStatus> {
        let (ec2, settings) = self.ec2(cluster).await?;
        let network = network::reconcile(&ec2, cluster, settings, &self.config.vpc_cidr).await?;
        let zones: Vec<&str> = network
            .public_subnets
            .iter()
            .map(|(z, _)| z.as_str())
            .collect();
        Ok(InfrastructureStatus {
            ready: true,
            message: format!(
                "VPC {} with subnets in {}; API endpoint {}:{}",
                network.vpc_id,
                zones.join(", "),
                network.endpoint.public_ip,
                network::API_PORT
            ),
            endpoint: Some((network.endpoint.public_ip, network::API_PORT as u16)),
            workload_api: true,
        })
    }

    async fn delete_cluster(&self, cluster: &ClusterInfo) -> Result<Deletion> {
        let (ec2, _) = self.ec2(cluster).await?;
        let live = instances::describe(&ec2, cluster, None, None).await?;
        if !live.is_empty() {
            let ids = instances::terminate(&ec2, cluster, &live).await?;
            return Ok(Deletion::InProgress(format!(
                "waiting for {} instance(s) to terminate: {}",
                ids.len(),
                ids.join(", ")
            )));
        }
        network::delete(&ec2, cluster).await
    }

    async fn list_machines(
        &self,
        cluster: &ClusterInfo,
        role: &MachineRole,
    ) -> Result<Vec<Machine>> {
        let (ec2, _) = self.ec2(cluster).await?;
        let found = instances::describe(&ec2, cluster, Some(role.group()), None).await?;
        if *role == MachineRole::ControlPlane {
            self.place_endpoint(&ec2, cluster, &found).await?;
        }
        Ok(instances::machines(found))
    }

    async fn create_machine(
        &self,
        cluster: &ClusterInfo,
        request: &MachineRequest,
    ) -> Result<Machine> {
        let (ec2, _) = self.ec2(cluster).await?;
        let group = request.role.group();
        let existing = instances::describe(&ec2, cluster, Some(group), Some(&request.name)).await?;
        let machine = match instances::machines(existing).into_iter().next() {
            Some(machine) => machine,
            None => {
                let network = network::find(&ec2, cluster).await?.ok_or_else(|| {
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
                    &ec2,
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
                    instances::run(&ec2, cluster, &network, request, &image, instance_type).await?;
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
            let control_plane = instances::describe(&ec2, cluster, Some(group), None).await?;
            self.place_endpoint(&ec2, cluster, &control_plane).await?;
        }
        Ok(machine)
    }

    async fn delete_machine(
        &self,
        cluster: &ClusterInfo,
        role: &MachineRole,
        name: &str,
    ) -> Result<Deletion> {
        let (ec2, _) = self.ec2(cluster).await?;
        let live = instances::describe(&ec2, cluster, Some(role.group()), Some(name)).await?;
        if live.is_empty() {
            return Ok(Deletion::Done);
        }
        let ids = instances::terminate(&ec2, cluster, &live).await?;
        Ok(Deletion::InProgress(format!(
            "instance {} of machine {name} is terminating",
            ids.join(", ")
        )))
    }

    fn price_per_hour(&self, instance_type: Option<&str>) -> Option<Price> {
        self.prices
            .price(instance_type.unwrap_or(&self.config.default_instance_type))
    }
}
