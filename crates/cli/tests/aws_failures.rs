//! What a person sees when an AWS cluster cannot be made, and that the manager does not hammer EC2 meanwhile: a
//! bad image, revoked credentials and an unknown instance type each end in `Ready=False` with a reason naming the
//! problem, and the failing call is retried with backoff. moto sits behind a counting proxy that tells the
//! clusters' requests apart by their access key (one per test) and refuses the revoked one as AWS would.

mod support;

#[path = "../../../providers/aws/tests/support/mod.rs"]
mod aws_support;

#[path = "support/aws.rs"]
mod aws;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws::AwsCluster;
use kube::api::Api;
use slipway_api::{Cluster, MachinePool};
use slipway_testenv::TestEnv;
use support::{apply, env, eventually};

/// How long each test watches the calls of its failing cluster after the failure first showed.
const WATCH: Duration = Duration::from_secs(20);
/// Tries of the failing step within `WATCH` that still count as backing off. The controller's per-object
/// backoff (1 s, 2 s, 4 s, 8 s, … with ±20% jitter) makes 5–6, plus a retry or two that a status write of the
/// object itself wakes; polling at the controller's 2 s pace would make 10, a hot loop hundreds.
const MAX_TRIES: usize = 8;

struct Aws {
    proxy: aws_support::CountingProxy,
}

/// One moto, one counting proxy in front of it, and one manager with the aws provider talking to the proxy, per
/// test binary. The proxy runs on a runtime of its own: each `#[tokio::test]` has its own, which ends with it.
fn moto_behind_proxy(env: &'static TestEnv) -> &'static Aws {
    static AWS: OnceLock<Aws> = OnceLock::new();
    AWS.get_or_init(|| {
        let moto_url = aws::moto().url.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                tx.send(aws_support::CountingProxy::start(&moto_url).await)
                    .unwrap();
                std::future::pending::<()>().await;
            });
        });
        let proxy = rx.recv().unwrap();
        aws::run_manager(env, proxy.url.clone());
        Aws { proxy }
    })
}

/// A credentials Secret `aws-credentials` in `ns` with the access key `key`.
async fn credentials(client: &kube::Client, ns: &str, key: &str) {
    aws::create_credentials(
        client,
        ns,
        "aws-credentials",
        key,
        "failure-test-secret-value",
    )
    .await;
}

/// The cluster of these tests: one zone, a pool of 2.
fn cluster_yaml(name: &str, control_plane_image: &str, pool_instance_type: &str) -> String {
    AwsCluster {
        zones: &["us-east-1a"],
        control_plane_image,
        control_plane_type: Some("t3.medium"),
        workers: 2,
        worker_type: Some(pool_instance_type),
        ..AwsCluster::new(name)
    }
    .yaml()
}

/// Waits until condition `type_` of the Cluster has `reason`; returns its message.
async fn cluster_condition(
    client: &kube::Client,
    ns: &str,
    name: &str,
    type_: &str,
    reason: &str,
) -> String {
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("Cluster {name} {type_} reason {reason}"),
        Duration::from_secs(60),
        || async {
            let cluster = clusters.get(name).await.map_err(|e| e.to_string())?;
            let conditions = cluster.status.map(|s| s.conditions).unwrap_or_default();
            match slipway_api::conditions::find(&conditions, type_) {
                Some(c) if c.reason == reason && c.status == "False" => Ok(c.message.clone()),
                _ => Err(support::condition_summary(&conditions)),
            }
        },
    )
    .await
}

/// Counts, over `WATCH` from the first one, the requests signed with `key` for which `is_try` holds (each marks
/// one try of the failing step), and asserts they stay within `MAX_TRIES`.
async fn assert_backs_off(
    aws: &Aws,
    key: &str,
    what: &str,
    is_try: impl Fn(&aws_support::Call) -> bool,
) {
    let tries = || -> Vec<Instant> {
        aws.proxy
            .calls_by(key)
            .into_iter()
            .filter(|c| is_try(c))
            .map(|c| c.at)
            .collect()
    };
    let first = eventually(
        &format!("a first try of {what}"),
        Duration::from_secs(30),
        || async {
            tries()
                .first()
                .copied()
                .ok_or_else(|| "none yet".to_string())
        },
    )
    .await;
    // Not an assertion on time: the count is taken over a window of fixed length, which needs the window to pass.
    tokio::time::sleep((first + WATCH).saturating_duration_since(Instant::now())).await;
    let within: Vec<Duration> = tries()
        .into_iter()
        .filter(|at| *at <= first + WATCH)
        .map(|at| at - first)
        .collect();
    eprintln!("{what}: {} tries in {WATCH:?}, at {within:?}", within.len());
    assert!(
        within.len() >= 2,
        "{what}: the failing step was tried only once in {WATCH:?}; it must be retried: {within:?}"
    );
    assert!(
        within.len() <= MAX_TRIES,
        "{what}: {} tries in {WATCH:?} (at most {MAX_TRIES} with backoff), at {within:?}",
        within.len()
    );
}

/// Nothing in the Cluster's status (conditions, messages) shows the Secret's value.
async fn assert_no_secret_in_status(client: &kube::Client, ns: &str, name: &str) {
    let cluster = Api::<Cluster>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let text = serde_json::to_string(&cluster).unwrap();
    assert!(!text.contains("failure-test-secret-value"), "{text}");
}

#[tokio::test]
async fn a_bad_image_is_a_condition_naming_it_and_is_retried_with_backoff() {
    let env = env().await;
    let aws = moto_behind_proxy(env);
    let ns = env.create_namespace("aws-bad-ami").await;
    let client = env.client().await;
    let key = "AKIDBADIMAGE";
    credentials(&client, &ns, key).await;
    let bad_ami = "ami-0badbadbadbad0000";
    apply(&client, &ns, &cluster_yaml("badami", bad_ami, "t3.medium")).await;

    let message =
        cluster_condition(&client, &ns, "badami", "ControlPlaneReady", "ImageNotFound").await;
    assert!(message.contains(bad_ami), "{message}");
    let ready = cluster_condition(&client, &ns, "badami", "Ready", "ImageNotFound").await;
    assert!(ready.contains(bad_ami), "{ready}");
    // Each try of the control-plane machine looks the image up first, and goes no further.
    assert_backs_off(aws, key, "the control-plane machine", |call| {
        call.action == "DescribeImages"
    })
    .await;
    assert!(
        aws.proxy
            .calls_by(key)
            .iter()
            .all(|c| c.action != "RunInstances"),
        "no instance is launched from an image that does not exist"
    );
    assert_no_secret_in_status(&client, &ns, "badami").await;
}

#[tokio::test]
async fn revoked_credentials_are_a_condition_and_are_retried_with_backoff() {
    let env = env().await;
    let aws = moto_behind_proxy(env);
    let ns = env.create_namespace("aws-revoked").await;
    let client = env.client().await;
    let key = "AKIDREVOKED";
    aws.proxy.refuse(key);
    credentials(&client, &ns, key).await;
    apply(
        &client,
        &ns,
        &cluster_yaml("revoked", aws_support::MOTO_UBUNTU_AMI, "t3.medium"),
    )
    .await;

    let message = cluster_condition(
        &client,
        &ns,
        "revoked",
        "InfrastructureReady",
        "InvalidCredentials",
    )
    .await;
    assert!(
        message.contains("AuthFailure") && message.contains("credentialsSecretRef"),
        "{message}"
    );
    cluster_condition(&client, &ns, "revoked", "Ready", "InvalidCredentials").await;
    // Every try of the cluster's infrastructure fails at its first call, so every request is one try.
    assert_backs_off(aws, key, "the cluster's infrastructure", |_| true).await;
    assert_no_secret_in_status(&client, &ns, "revoked").await;
}

#[tokio::test]
async fn an_unknown_instance_type_fails_the_pool_names_the_type_and_has_no_price() {
    let env = env().await;
    let aws = moto_behind_proxy(env);
    let ns = env.create_namespace("aws-bad-type").await;
    let client = env.client().await;
    let key = "AKIDBADTYPE";
    credentials(&client, &ns, key).await;
    let bad_type = "x9.huge";
    apply(
        &client,
        &ns,
        &cluster_yaml("badtype", aws_support::MOTO_UBUNTU_AMI, bad_type),
    )
    .await;

    let pools: Api<MachinePool> = Api::namespaced(client.clone(), &ns);
    let message = eventually(
        "pool Ready=False reason InvalidInstanceType",
        Duration::from_secs(90),
        || async {
            let pool = pools
                .get("badtype-workers")
                .await
                .map_err(|e| e.to_string())?;
            let conditions = pool.status.map(|s| s.conditions).unwrap_or_default();
            match slipway_api::conditions::find(&conditions, "Ready") {
                Some(c) if c.reason == "InvalidInstanceType" && c.status == "False" => {
                    Ok(c.message.clone())
                }
                _ => Err(support::condition_summary(&conditions)),
            }
        },
    )
    .await;
    assert!(message.contains(bad_type), "{message}");
    let nodes = cluster_condition(&client, &ns, "badtype", "NodesReady", "WaitingForNodes").await;
    assert!(nodes.contains("badtype-workers"), "{nodes}");
    cluster_condition(&client, &ns, "badtype", "Ready", "Provisioning").await;

    // The estimate does not guess a price for a type it does not know: it says which one it lacks.
    let cost = Api::<Cluster>::namespaced(client.clone(), &ns)
        .get("badtype")
        .await
        .unwrap()
        .status
        .and_then(|s| s.cost)
        .expect("status.cost");
    assert_eq!(cost.per_hour, "unknown", "{cost:?}");
    assert_eq!(cost.unpriced_instance_types, [bad_type], "{cost:?}");
    assert!(
        cost.note.as_deref().is_some_and(|n| n.contains(bad_type)),
        "{cost:?}"
    );

    // Each try of the pool ends at its first RunInstances, the one with the unknown type.
    assert_backs_off(aws, key, "the pool's machines", |call| {
        call.action == "RunInstances" && call.body.contains(&format!("InstanceType={bad_type}"))
    })
    .await;
}
