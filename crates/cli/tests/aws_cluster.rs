//! A Cluster on the aws provider, reconciled by the manager's controllers against moto's EC2: credentials from the
//! Cluster's Secret, instances tagged and running, the cost estimate, pools scaling and rolling to a new instance
//! type within their strategy, and nothing left after deletion.

mod support;

// The aws provider's own test support (moto and an EC2 client); it allows its unused parts itself.
#[path = "../../../providers/aws/tests/support/mod.rs"]
mod aws_support;

#[path = "support/aws.rs"]
mod aws;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws::AwsCluster;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use slipway_api::{Cluster, MachinePool};
use slipway_testenv::TestEnv;
use support::{apply, env, eventually, wait_ready};

/// One moto and one manager with the aws provider (credentials from Secrets) per test binary; returns moto's URL.
fn aws_manager(env: &'static TestEnv) -> &'static str {
    static MANAGER: OnceLock<&'static str> = OnceLock::new();
    MANAGER.get_or_init(|| {
        let url = &aws::moto().url;
        aws::run_manager(env, url.clone());
        url
    })
}

/// Creates the credentials Secret `aws-credentials` in `ns`.
async fn credentials_secret(client: &kube::Client, ns: &str) {
    create_credentials_secret(client, ns, "aws-credentials").await;
}

/// Creates a credentials Secret named `name` in `ns`.
async fn create_credentials_secret(client: &kube::Client, ns: &str, name: &str) {
    aws::create_credentials(client, ns, name, "AKIDSLIPWAYE2E", "not-a-real-secret").await;
}

/// A cluster whose pool `<name>-workers` has `workers` machines of `instance_type` and the given strategy.
fn aws_cluster_with_pool(
    name: &str,
    workers: u32,
    instance_type: &str,
    max_surge: u32,
    max_unavailable: u32,
) -> String {
    AwsCluster {
        control_plane_type: Some("t3.medium"),
        workers,
        worker_type: Some(instance_type),
        strategy: Some((max_surge, max_unavailable)),
        ..AwsCluster::new(name)
    }
    .yaml()
}

fn aws_cluster(name: &str, secret: &str, workers: u32) -> String {
    AwsCluster {
        secret,
        workers,
        ..AwsCluster::new(name)
    }
    .yaml()
}

/// Pending and running instances of one pool in moto, as (instance id, instance type).
async fn pool_instances(
    ec2: &aws_sdk_ec2::Client,
    cluster: &str,
    pool: &str,
) -> Result<Vec<(String, String)>, String> {
    let filters = vec![
        aws::tag_is("slipway.dev/cluster", cluster),
        aws::tag_is("slipway.dev/pool", pool),
    ];
    Ok(aws::live_instances(ec2, filters)
        .await?
        .iter()
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                i.instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect())
}

/// Sets the pool's `spec.replicas` (a merge patch, as `kubectl scale` would).
async fn scale(client: &kube::Client, ns: &str, pool: &str, replicas: i32) {
    Api::<MachinePool>::namespaced(client.clone(), ns)
        .patch(
            pool,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } })),
        )
        .await
        .unwrap();
}

/// Waits until moto holds exactly `count` live instances of the pool and the Cluster's cost says `per_hour`.
async fn wait_for_pool_size(
    client: &kube::Client,
    ec2: &aws_sdk_ec2::Client,
    ns: &str,
    cluster: &str,
    count: usize,
    per_hour: &str,
) {
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), ns);
    let key = format!("{ns}/{cluster}");
    let pool = format!("{cluster}-workers");
    eventually(
        &format!("{count} instances in pool {pool}, cost {per_hour}/h"),
        Duration::from_secs(60),
        || async {
            let instances = pool_instances(ec2, &key, &pool).await?;
            let cost = clusters
                .get(cluster)
                .await
                .map_err(|e| e.to_string())?
                .status
                .and_then(|s| s.cost);
            match &cost {
                Some(c) if instances.len() == count && c.per_hour == per_hour => Ok(()),
                _ => Err(format!("{} instances, cost {cost:?}", instances.len())),
            }
        },
    )
    .await;
}

/// Live instances of the cluster with their `slipway.dev/pool` tag (`control-plane` or the pool's name).
async fn instance_groups(ec2: &aws_sdk_ec2::Client, cluster: &str) -> Vec<(String, String)> {
    aws::live_instances(ec2, vec![aws::tag_is("slipway.dev/cluster", cluster)])
        .await
        .unwrap()
        .iter()
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                aws::tag(i, "slipway.dev/pool").to_string(),
            )
        })
        .collect()
}

async fn cluster_instances(ec2: &aws_sdk_ec2::Client, cluster: &str) -> Vec<String> {
    instance_groups(ec2, cluster)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

#[tokio::test]
async fn aws_cluster_becomes_ready_on_moto_and_leaves_no_instance_behind() {
    let env = env().await;
    let moto = aws_manager(env);
    let ns = env.create_namespace("aws").await;
    let client = env.client().await;
    credentials_secret(&client, &ns).await;

    apply(&client, &ns, &aws_cluster("east", "aws-credentials", 2)).await;
    let cluster = wait_ready(&client, &ns, "east", Duration::from_secs(120)).await;
    let status = cluster.status.unwrap();
    let endpoint = status
        .control_plane_endpoint
        .expect("the load balancer's DNS name as endpoint");
    assert_eq!(endpoint.port, 6443);
    // No instance type is named, so all three machines are the provider's default t3.medium, $0.0416 an hour;
    // and a NAT gateway in each of the two zones, $0.045 an hour each.
    let cost = status.cost.expect("status.cost");
    assert_eq!(
        (cost.per_hour.as_str(), cost.currency.as_str()),
        ("0.2148", "USD"),
        "{cost:?}"
    );
    assert!(
        cost.note
            .as_deref()
            .is_some_and(|n| n.contains("3 desired machines and 2 NAT gateways")),
        "{cost:?}"
    );
    assert!(cost.unpriced_instance_types.is_empty(), "{cost:?}");

    let ec2 = aws_support::ec2(moto).await;
    let key = format!("{ns}/east");
    assert_eq!(
        cluster_instances(&ec2, &key).await.len(),
        3,
        "1 control plane + 2 workers"
    );
    // The endpoint is the cluster's network load balancer, whose target group holds the control-plane instance.
    let elb = aws_support::elb(moto).await;
    let inventory = aws_support::ElbInventory::read(&elb).await;
    let ours = |tags: &aws_support::ElbTags| {
        tags.get("slipway.dev/cluster").map(String::as_str) == Some(key.as_str())
    };
    let balancers: Vec<_> = inventory
        .load_balancers
        .iter()
        .filter(|(_, tags)| ours(tags))
        .collect();
    assert_eq!(balancers.len(), 1, "{inventory:?}");
    assert_eq!(balancers[0].0.dns_name(), Some(endpoint.host.as_str()));
    let groups: Vec<_> = inventory
        .target_groups
        .iter()
        .filter(|(_, tags)| ours(tags))
        .collect();
    assert_eq!(groups.len(), 1, "{inventory:?}");
    let control_plane: Vec<String> = instance_groups(&ec2, &key)
        .await
        .into_iter()
        .filter(|(_, group)| group == "control-plane")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        aws_support::targets(&elb, groups[0].0.target_group_arn().unwrap()).await,
        control_plane
    );
    // Each instance boots bootstrap's cloud-init for its role: the control plane `kubeadm init` with the cluster's
    // CAs, the workers `kubeadm join` with the cluster's join token and its CA's hash, and no keys.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let ca =
        slipway_bootstrap::secrets::ca_from_secret(&secrets.get("east-ca").await.unwrap()).unwrap();
    let ca_hash = ca.public_key_hash().unwrap();
    let token = slipway_bootstrap::secrets::join_token_from_secret(
        &secrets.get("east-bootstrap-token").await.unwrap(),
    )
    .unwrap();
    let mut roles = Vec::new();
    for (id, group) in instance_groups(&ec2, &key).await {
        let user_data = ec2
            .describe_instance_attribute()
            .instance_id(&id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .unwrap();
        let decoded = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            user_data.user_data().unwrap().value().unwrap(),
        )
        .unwrap();
        let cloud_init = String::from_utf8(decoded).unwrap();
        assert!(cloud_init.starts_with("#cloud-config\n"), "{id}");
        if group == "control-plane" {
            assert!(cloud_init.contains("InitConfiguration"), "{id}: {group}");
            assert!(cloud_init.contains(&token.token()), "{id}: the init token");
            assert!(cloud_init.contains("BEGIN CERTIFICATE"), "{id}: the CAs");
        } else {
            assert!(cloud_init.contains("JoinConfiguration"), "{id}: {group}");
            assert!(cloud_init.contains(&token.token()), "{id}: the join token");
            assert!(cloud_init.contains(&ca_hash), "{id}: the CA hash");
            assert!(
                !cloud_init.contains("PRIVATE KEY"),
                "{id}: a worker got a key"
            );
        }
        roles.push(group);
    }
    roles.sort();
    assert_eq!(roles, ["control-plane", "east-workers", "east-workers"]);

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
        cluster_instances(&ec2, &key).await.is_empty(),
        "instances left behind"
    );
    assert_eq!(
        aws_support::ElbInventory::read(&elb)
            .await
            .counts(Some(&key)),
        (0, 0, 0),
        "load balancers, target groups, listeners left behind"
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

    // Deleting it waits for the credentials, saying so, rather than dropping what it cannot look for; once the
    // Secret exists the (empty) cleanup goes through.
    clusters
        .delete("west", &DeleteParams::default())
        .await
        .unwrap();
    let stuck = deletion_blocked_by(&client, &ns, "west", "CredentialsNotFound").await;
    assert!(stuck.contains("no-such-secret"), "{stuck}");
    create_credentials_secret(&client, &ns, "no-such-secret").await;
    support::wait_deleted(&client, &ns, "west", Duration::from_secs(120)).await;
}

#[tokio::test]
async fn a_cluster_whose_credentials_are_gone_is_deleted_only_once_they_are_back() {
    let env = env().await;
    let moto = aws_manager(env);
    let ns = env.create_namespace("aws-lost-creds").await;
    let client = env.client().await;
    credentials_secret(&client, &ns).await;
    let ec2 = aws_support::ec2(moto).await;
    let key = format!("{ns}/lost");
    apply(&client, &ns, &aws_cluster("lost", "aws-credentials", 1)).await;
    wait_ready(&client, &ns, "lost", Duration::from_secs(120)).await;
    let before = cluster_instances(&ec2, &key).await;
    assert_eq!(before.len(), 2, "control plane and one worker: {before:?}");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .delete("aws-credentials", &DeleteParams::default())
        .await
        .unwrap();
    Api::<Cluster>::namespaced(client.clone(), &ns)
        .delete("lost", &DeleteParams::default())
        .await
        .unwrap();
    let stuck = deletion_blocked_by(&client, &ns, "lost", "CredentialsNotFound").await;
    assert!(stuck.contains("aws-credentials"), "{stuck}");
    // Held, not dropped: the objects that find the instances are still there, and so are the instances.
    let mut left = cluster_instances(&ec2, &key).await;
    left.sort();
    let mut expected = before.clone();
    expected.sort();
    assert_eq!(left, expected);
    assert!(
        Api::<MachinePool>::namespaced(client.clone(), &ns)
            .get_opt("lost-workers")
            .await
            .unwrap()
            .is_some(),
        "the pool went away while its instance still runs"
    );

    credentials_secret(&client, &ns).await;
    support::wait_deleted(&client, &ns, "lost", Duration::from_secs(120)).await;
    assert!(
        cluster_instances(&ec2, &key).await.is_empty(),
        "instances left behind"
    );
}

/// Waits until the Cluster, being deleted, says its pool's deletion is held up with `reason`; checks the pool
/// says the same, and returns the pool's message.
async fn deletion_blocked_by(client: &kube::Client, ns: &str, name: &str, reason: &str) -> String {
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), ns);
    let pools: Api<MachinePool> = Api::namespaced(client.clone(), ns);
    let pool_name = format!("{name}-workers");
    eventually(
        &format!("deletion of {name} held up by {reason}"),
        Duration::from_secs(60),
        || async {
            let cluster = clusters.get(name).await.map_err(|e| e.to_string())?;
            let conditions = cluster.status.map(|s| s.conditions).unwrap_or_default();
            let ready = slipway_api::conditions::find(&conditions, "Ready");
            if !ready.is_some_and(|c| {
                c.reason == "Deleting" && c.message.contains(&format!("{pool_name} ({reason}: "))
            }) {
                return Err(format!(
                    "cluster: {}",
                    support::condition_summary(&conditions)
                ));
            }
            let pool = pools.get(&pool_name).await.map_err(|e| e.to_string())?;
            let conditions = pool.status.map(|s| s.conditions).unwrap_or_default();
            match slipway_api::conditions::find(&conditions, "Ready") {
                Some(c) if c.status == "False" && c.reason == reason => Ok(c.message.clone()),
                _ => Err(format!("pool: {}", support::condition_summary(&conditions))),
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_pool_scaled_up_and_down_is_followed_by_instances_and_cost() {
    let env = env().await;
    let moto = aws_manager(env);
    let ns = env.create_namespace("aws-scale").await;
    let client = env.client().await;
    credentials_secret(&client, &ns).await;
    let ec2 = aws_support::ec2(moto).await;

    apply(
        &client,
        &ns,
        &aws_cluster_with_pool("scaly", 3, "t3.large", 1, 0),
    )
    .await;
    wait_ready(&client, &ns, "scaly", Duration::from_secs(120)).await;
    // One t3.medium control plane ($0.0416), t3.large workers ($0.0832 each) and two NAT gateways ($0.045 each).
    wait_for_pool_size(&client, &ec2, &ns, "scaly", 3, "0.3812").await;

    scale(&client, &ns, "scaly-workers", 5).await;
    wait_for_pool_size(&client, &ec2, &ns, "scaly", 5, "0.5476").await;
    wait_ready(&client, &ns, "scaly", Duration::from_secs(60)).await;

    scale(&client, &ns, "scaly-workers", 2).await;
    wait_for_pool_size(&client, &ec2, &ns, "scaly", 2, "0.298").await;
    wait_ready(&client, &ns, "scaly", Duration::from_secs(60)).await;

    Api::<Cluster>::namespaced(client.clone(), &ns)
        .delete("scaly", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_deleted(&client, &ns, "scaly", Duration::from_secs(120)).await;
    assert!(
        cluster_instances(&ec2, &format!("{ns}/scaly"))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_new_instance_type_rolls_through_the_pool_within_its_strategy() {
    let env = env().await;
    let moto = aws_manager(env);
    let ns = env.create_namespace("aws-roll").await;
    let client = env.client().await;
    credentials_secret(&client, &ns).await;
    let ec2 = aws_support::ec2(moto).await;
    let (replicas, max_surge, max_unavailable) = (3usize, 1usize, 0usize);
    apply(
        &client,
        &ns,
        &aws_cluster_with_pool("rolly", replicas as u32, "t3.medium", 1, 0),
    )
    .await;
    wait_ready(&client, &ns, "rolly", Duration::from_secs(120)).await;
    let key = format!("{ns}/rolly");
    let before = pool_instances(&ec2, &key, "rolly-workers").await.unwrap();
    assert_eq!(before.len(), replicas, "{before:?}");

    // Watch moto through the whole rollout: the fewest and the most live instances of the pool seen at once.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (ec2, key, done) = (ec2.clone(), key.clone(), done.clone());
        tokio::spawn(async move {
            let (mut fewest, mut most, mut polls) = (usize::MAX, 0, 0);
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(live) = pool_instances(&ec2, &key, "rolly-workers").await {
                    fewest = fewest.min(live.len());
                    most = most.max(live.len());
                    polls += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (fewest, most, polls)
        })
    };

    let pools: Api<MachinePool> = Api::namespaced(client.clone(), &ns);
    pools
        .patch(
            "rolly-workers",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "spec": { "template": { "machine": { "instanceType": "t3.large" } } }
            })),
        )
        .await
        .unwrap();
    let after = eventually(
        "every instance of the pool is a t3.large",
        Duration::from_secs(90),
        || async {
            let live = pool_instances(&ec2, &key, "rolly-workers").await?;
            let pool = pools
                .get("rolly-workers")
                .await
                .map_err(|e| e.to_string())?;
            let ready = pool.status.as_ref().is_some_and(|s| {
                s.observed_generation == pool.metadata.generation
                    && slipway_api::conditions::is_true(&s.conditions, "Ready")
            });
            if ready && live.len() == replicas && live.iter().all(|(_, t)| t == "t3.large") {
                Ok(live)
            } else {
                Err(format!("ready {ready}, instances {live:?}"))
            }
        },
    )
    .await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (fewest, most, polls) = poller.await.unwrap();
    eprintln!(
        "rollout: {polls} polls of moto, {fewest} to {most} live instances of the pool at once"
    );
    assert!(polls > 10, "the poller looked only {polls} times");
    assert!(
        most <= replicas + max_surge,
        "{most} instances at once: more than replicas {replicas} + maxSurge {max_surge}"
    );
    assert!(
        fewest >= replicas - max_unavailable,
        "{fewest} instances at once: fewer than replicas {replicas} - maxUnavailable {max_unavailable}"
    );
    let old: Vec<&String> = before.iter().map(|(id, _)| id).collect();
    assert!(
        after.iter().all(|(id, _)| !old.contains(&id)),
        "every instance was replaced: before {before:?}, after {after:?}"
    );
    // The estimate follows the spec: one t3.medium control plane, three t3.large workers and two NAT gateways. The
    // Cluster's status catches up with its pool's rollout on its next reconcile.
    eventually(
        "the cost of the new instance type",
        Duration::from_secs(30),
        || async {
            let cost = Api::<Cluster>::namespaced(client.clone(), &ns)
                .get("rolly")
                .await
                .map_err(|e| e.to_string())?
                .status
                .and_then(|s| s.cost)
                .map(|c| c.per_hour)
                .unwrap_or_default();
            (cost == "0.3812").then_some(()).ok_or(cost)
        },
    )
    .await;
}

#[tokio::test]
async fn a_stopped_worker_instance_is_replaced_and_terminated() {
    let env = env().await;
    let moto = aws_manager(env);
    let ns = env.create_namespace("aws-heal").await;
    let client = env.client().await;
    credentials_secret(&client, &ns).await;
    apply(&client, &ns, &aws_cluster("healy", "aws-credentials", 2)).await;
    wait_ready(&client, &ns, "healy", Duration::from_secs(120)).await;
    let ec2 = aws_support::ec2(moto).await;
    let key = format!("{ns}/healy");
    let before = pool_instances(&ec2, &key, "healy-workers").await.unwrap();
    assert_eq!(before.len(), 2);
    let (stopped, kept) = (before[0].0.clone(), before[1].0.clone());

    // Stopped behind Slipway's back: the provider reports the machine Failed, and the pool replaces it.
    ec2.stop_instances()
        .instance_ids(&stopped)
        .send()
        .await
        .unwrap();
    eventually(
        "the stopped instance replaced",
        Duration::from_secs(90),
        || async {
            let ids: Vec<String> = pool_instances(&ec2, &key, "healy-workers")
                .await?
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            if ids.len() == 2 && ids.contains(&kept) && !ids.contains(&stopped) {
                Ok(())
            } else {
                Err(format!("{ids:?}"))
            }
        },
    )
    .await;
    let state = ec2
        .describe_instances()
        .instance_ids(&stopped)
        .send()
        .await
        .unwrap()
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| {
            i.state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
        })
        .collect::<Vec<_>>();
    assert!(
        state
            .iter()
            .all(|s| s == "terminated" || s == "shutting-down"),
        "the stopped instance is not left behind: {state:?}"
    );
    wait_ready(&client, &ns, "healy", Duration::from_secs(60)).await;
}
