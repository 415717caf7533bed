//! What the AWS journeys share: one moto per test binary, an in-test manager whose aws provider talks to an EC2
//! endpoint, credentials Secrets, and one cluster's YAML. Only the AWS test binaries include it, next to
//! `mod support` and `mod aws_support` (the provider's own test support, which starts moto).
#![allow(dead_code)] // each AWS test binary uses its own part of this module

use std::sync::{Arc, OnceLock};

use aws_sdk_ec2::types::{Filter, Instance};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use slipway_controller::{ProviderRegistry, Settings};
use slipway_provider_aws::{AwsConfig, AwsProvider, SecretCredentials};
use slipway_testenv::TestEnv;

use crate::aws_support;

/// The test binary's moto, started on a runtime of its own (it is a process; it outlives that runtime) and killed
/// when the binary exits.
pub fn moto() -> &'static aws_support::Moto {
    static MOTO: OnceLock<aws_support::Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let moto = std::thread::spawn(|| {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(aws_support::Moto::start())
        })
        .join()
        .unwrap();
        slipway_testenv::process::kill_at_exit(moto.pid());
        moto
    })
}

/// Runs the controllers in the test binary, with the aws provider sending every EC2 call to `endpoint_url` and
/// reading each cluster's credentials from its Secret, as `slipway manager` does.
pub fn run_manager(env: &'static TestEnv, endpoint_url: String) {
    crate::support::run_manager(
        env,
        move |client| {
            let provider = AwsProvider::new(
                AwsConfig {
                    endpoint_url: Some(endpoint_url),
                    retry: aws_support::fast_retries(),
                    ..AwsConfig::default()
                },
                Arc::new(SecretCredentials::new(client.clone())),
            );
            ProviderRegistry::new().register(Arc::new(provider))
        },
        Settings::default(),
    );
}

/// Creates the credentials Secret `name` in `ns` with this key pair.
pub async fn create_credentials(
    client: &kube::Client,
    ns: &str,
    name: &str,
    access_key_id: &str,
    secret_access_key: &str,
) {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "stringData": { "AWS_ACCESS_KEY_ID": access_key_id, "AWS_SECRET_ACCESS_KEY": secret_access_key }
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// moto's pending and running instances that match every one of `filters` (say, [`tag_is`] filters).
pub async fn live_instances(
    ec2: &aws_sdk_ec2::Client,
    filters: Vec<Filter>,
) -> Result<Vec<Instance>, String> {
    let out = ec2
        .describe_instances()
        .set_filters(Some(filters))
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .cloned()
        .collect())
}

/// Instances whose tag `key` is `value`.
pub fn tag_is(key: &str, value: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build()
}

/// The value of the instance's tag `key`, or "" when it has none.
pub fn tag<'a>(instance: &'a Instance, key: &str) -> &'a str {
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .unwrap_or_default()
}

/// One Cluster with one control-plane machine and its pool `<name>-workers`, on the aws provider in us-east-1.
/// `AwsCluster::new(name)` gives moto's Ubuntu image, the `aws-credentials` Secret, two zones and one worker;
/// each test changes what it is about.
pub struct AwsCluster<'a> {
    pub name: &'a str,
    pub secret: &'a str,
    pub zones: &'a [&'a str],
    pub control_plane_image: &'a str,
    /// `None` leaves the provider's default.
    pub control_plane_type: Option<&'a str>,
    pub workers: u32,
    pub worker_type: Option<&'a str>,
    /// `(maxSurge, maxUnavailable)`; `None` leaves the defaults.
    pub strategy: Option<(u32, u32)>,
}

impl<'a> AwsCluster<'a> {
    pub fn new(name: &'a str) -> Self {
        Self {
            name,
            secret: "aws-credentials",
            zones: &["us-east-1a", "us-east-1b"],
            control_plane_image: aws_support::MOTO_UBUNTU_AMI,
            control_plane_type: None,
            workers: 1,
            worker_type: None,
            strategy: None,
        }
    }

    pub fn yaml(&self) -> String {
        let Self {
            name,
            secret,
            workers,
            control_plane_image,
            ..
        } = self;
        let instance_type = |t: Option<&str>| {
            t.map(|t| format!("\n      instanceType: {t}"))
                .unwrap_or_default()
        };
        let control_plane_type = instance_type(self.control_plane_type);
        let worker_type = instance_type(self.worker_type);
        let zones = self.zones.join(", ");
        let strategy = self
            .strategy
            .map(|(surge, unavailable)| {
                format!("\n  strategy:\n    maxSurge: {surge}\n    maxUnavailable: {unavailable}")
            })
            .unwrap_or_default();
        format!(
            r#"apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata:
  name: {name}
spec:
  kubernetes:
    version: v1.37.2
  controlPlane:
    replicas: 1
    machine:
      image: {control_plane_image}{control_plane_type}
  infrastructure:
    aws:
      region: us-east-1
      credentialsSecretRef:
        name: {secret}
      availabilityZones: [{zones}]
---
apiVersion: slipway.dev/v1alpha1
kind: MachinePool
metadata:
  name: {name}-workers
spec:
  clusterName: {name}
  replicas: {workers}
  template:
    machine:
      image: {ami}{worker_type}{strategy}
"#,
            ami = aws_support::MOTO_UBUNTU_AMI
        )
    }
}
