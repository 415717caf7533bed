//! A Cluster on the aws provider, reconciled by the manager's controllers against moto's EC2: credentials from the
//! Cluster's Secret, instances tagged and running, and nothing left after deletion.

mod support;

// The aws provider's own test support (moto and an EC2 client); it allows its unused parts itself.
#[path = "../../../providers/aws/tests/support/mod.rs"]
mod aws_support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use slipway_api::{Cluster, MachinePool};
use slipway_controller::{ProviderRegistry, Settings};
use slipway_provider_aws::{AwsConfig, AwsProvider, SecretCredentials};
use slipway_testenv::TestEnv;
use support::{apply, env, eventually, wait_ready};

/// One moto and one manager with the aws provider (credentials from Secrets) per test binary; returns moto's URL.
fn aws_manager(env: &'static TestEnv) -> &'static str {
    static MOTO: OnceLock<aws_support::Moto> = OnceLock::new();
    let moto = MOTO.get_or_init(|| {
        // Started on a runtime of its own: moto is a process, it outlives that runtime. A `static` is never dropped,
        // so it is killed when the test binary exits.
        let moto = std::thread::spawn(|| {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(aws_support::Moto::start())
        })
        .join()
        .unwrap();
        slipway_testenv::process::kill_at_exit(moto.pid());
        let url = moto.url.clone();
        support::run_manager(
            env,
            move |client| {
                let provider = AwsProvider::new(
                    AwsConfig {
                        endpoint_url: Some(url),
                        retry: aws_support::fast_retries(),
                        ..AwsConfig::default()
                    },
                    Arc::new(SecretCredentials::new(client.clone())),
                );
                ProviderRegistry::new().register(Arc::new(provider))
            },
            Settings::default(),
        );
        moto
    });
    &moto.url
}

fn aws_cluster(name: &str, secret: &str, workers: u32) -> String {
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
      image: {ami}
  infrastructure:
    aws:
      region: us-east-1
      credentialsSecretRef:
        name: {secret}
      availabilityZones: [us-east-1a, us-east-1b]
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
      image: {ami}
"#,
        ami = aws_support::MOTO_UBUNTU_AMI
    )
}

async fn live_instances(ec2: &aws_sdk_ec2::Client, cluster: &str) -> Vec<String> {
    let out = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:slipway.dev/cluster")
                .values(cluster)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn aws_cluster_becomes_ready_on_moto_and_leaves_no_instance_behind() {
    let env = env().await;
    let moto = aws_manager(env);
    let ns = env.create_namespace("aws").await;
    let client = env.client().await;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "aws-credentials" },
        "stringData": { "AWS_ACCESS_KEY_ID": "AKIDSLIPWAYE2E", "AWS_SECRET_ACCESS_KEY": "not-a-real-secret" }
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    apply(&client, &ns, &aws_cluster("east", "aws-credentials", 2)).await;
    let cluster = wait_ready(&client, &ns, "east", Duration::from_secs(120)).await;
    let endpoint = cluster
        .status
        .unwrap()
        .control_plane_endpoint
        .expect("the Elastic IP as endpoint");
    assert_eq!(endpoint.port, 6443);

    let ec2 = aws_support::ec2(moto).await;
    let key = format!("{ns}/east");
    assert_eq!(
        live_instances(&ec2, &key).await.len(),
        3,
        "1 control plane + 2 workers"
    );
    let pool = Api::<MachinePool>::namespaced(client.clone(), &ns)
        .get("east-workers")
        .await
        .unwrap();
    for machine in pool.status.unwrap().machines {
        assert!(
            machine.provider_id.unwrap().starts_with("aws:///us-east-1"),
            "{}",
            machine.name
        );
    }
    let manager_log_has_no_secret = !format!(
        "{:?}",
        Api::<Cluster>::namespaced(client.clone(), &ns)
            .get("east")
            .await
            .unwrap()
    )
    .contains("not-a-real-secret");
    assert!(
        manager_log_has_no_secret,
        "the secret key appears in the Cluster object"
    );

    Api::<Cluster>::namespaced(client.clone(), &ns)
        .delete("east", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_deleted(&client, &ns, "east", Duration::from_secs(120)).await;
    assert!(
        live_instances(&ec2, &key).await.is_empty(),
        "instances left behind"
    );
}

#[tokio::test]
async fn a_missing_credentials_secret_is_a_condition_naming_it() {
    let env = env().await;
    aws_manager(env);
    let ns = env.create_namespace("aws-nocreds").await;
    let client = env.client().await;
    apply(&client, &ns, &aws_cluster("west", "no-such-secret", 1)).await;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
    let message = eventually("CredentialsNotFound", Duration::from_secs(60), || async {
        let cluster = clusters.get("west").await.map_err(|e| e.to_string())?;
        let conditions = cluster.status.map(|s| s.conditions).unwrap_or_default();
        match slipway_api::conditions::find(&conditions, "InfrastructureReady") {
            Some(c) if c.reason == "CredentialsNotFound" => Ok(c.message.clone()),
            _ => Err(support::condition_summary(&conditions)),
        }
    })
    .await;
    assert!(
        message.contains("no-such-secret") && message.contains("AWS_ACCESS_KEY_ID"),
        "{message}"
    );
}
