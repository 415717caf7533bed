//! The `slipway manager` binary with the aws provider against moto: SIGKILLed at random moments while clusters are
//! being created, restarted, then made to delete them, it leaves nothing behind in EC2 or Elastic Load Balancing
//! and never runs more instances than a group may have; and its `--aws-price-configmap` prices the cost estimate.
//!
//! The tests here start manager processes that reconcile every namespace, so they take turns (`TURN`).

mod support;

#[path = "../../../providers/aws/tests/support/mod.rs"]
mod aws_support;

#[path = "support/aws.rs"]
mod aws;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws::AwsCluster;
use aws_sdk_ec2::types::Filter;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rand::Rng;
use slipway_api::Cluster;
use support::{ManagerProcess, apply, env, eventually};

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test binary's moto.
fn moto() -> &'static str {
    &aws::moto().url
}

async fn credentials(client: &kube::Client, ns: &str) {
    aws::create_credentials(
        client,
        ns,
        "aws-credentials",
        "AKIDCRASH",
        "crash-test-secret",
    )
    .await;
}

const CONTROL_PLANE: usize = 1;
const WORKERS: usize = 3;
const MAX_SURGE: usize = 1;

fn cluster_yaml(name: &str, worker_type: &str) -> String {
    AwsCluster {
        control_plane_type: Some("t3.medium"),
        workers: WORKERS as u32,
        worker_type: Some(worker_type),
        strategy: Some((MAX_SURGE as u32, 0)),
        ..AwsCluster::new(name)
    }
    .yaml()
}

fn tagged() -> Filter {
    Filter::builder()
        .name("tag-key")
        .values("slipway.dev/cluster")
        .build()
}

/// What exists in moto, by kind: Slipway-tagged resources, and every resource of the kinds Slipway makes (an
/// untagged leftover would show only there).
async fn inventory(
    ec2: &aws_sdk_ec2::Client,
    elb: &aws_sdk_elasticloadbalancingv2::Client,
) -> BTreeMap<String, usize> {
    let mut found = BTreeMap::new();
    let balancing = aws_support::ElbInventory::read(elb).await;
    for (prefix, which) in [("tagged", Some("*")), ("all", None)] {
        let (load_balancers, target_groups, listeners) = balancing.counts(which);
        found.insert(format!("{prefix} load balancers"), load_balancers);
        found.insert(format!("{prefix} target groups"), target_groups);
        found.insert(format!("{prefix} listeners"), listeners);
    }
    for filtered in [true, false] {
        let filters = if filtered { vec![tagged()] } else { vec![] };
        let prefix = if filtered { "tagged" } else { "all" };
        let live = ec2
            .describe_instances()
            .set_filters(Some(filters.clone()))
            .send()
            .await
            .unwrap()
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| {
                i.state().and_then(|s| s.name())
                    != Some(&aws_sdk_ec2::types::InstanceStateName::Terminated)
            })
            .count();
        let counts = [
            ("instances not terminated", live),
            (
                "VPCs",
                ec2.describe_vpcs()
                    .set_filters(Some(filters.clone()))
                    .send()
                    .await
                    .unwrap()
                    .vpcs()
                    .len(),
            ),
            (
                "subnets",
                ec2.describe_subnets()
                    .set_filters(Some(filters.clone()))
                    .send()
                    .await
                    .unwrap()
                    .subnets()
                    .len(),
            ),
            (
                "security groups",
                ec2.describe_security_groups()
                    .set_filters(Some(filters.clone()))
                    .send()
                    .await
                    .unwrap()
                    .security_groups()
                    .len(),
            ),
            (
                "internet gateways",
                ec2.describe_internet_gateways()
                    .set_filters(Some(filters.clone()))
                    .send()
                    .await
                    .unwrap()
                    .internet_gateways()
                    .len(),
            ),
            (
                "route tables",
                ec2.describe_route_tables()
                    .set_filters(Some(filters.clone()))
                    .send()
                    .await
                    .unwrap()
                    .route_tables()
                    .len(),
            ),
            (
                "Elastic IPs",
                ec2.describe_addresses()
                    .set_filters(Some(filters.clone()))
                    .send()
                    .await
                    .unwrap()
                    .addresses()
                    .len(),
            ),
        ];
        for (kind, count) in counts {
            found.insert(format!("{prefix} {kind}"), count);
        }
    }
    found
}

/// The most live (pending or running) instances seen at once per (cluster, group), and every machine name seen
/// on two live instances at once.
#[derive(Debug, Default)]
struct Observed {
    most: BTreeMap<(String, String), usize>,
    duplicates: Vec<String>,
    polls: usize,
}

/// Polls moto until `done`, recording what [`Observed`] holds.
fn watch_instances(
    ec2: aws_sdk_ec2::Client,
    observed: Arc<Mutex<Observed>>,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let Ok(instances) = aws::live_instances(&ec2, vec![tagged()]).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut groups: BTreeMap<(String, String), usize> = BTreeMap::new();
            let mut machines: BTreeMap<(String, String), usize> = BTreeMap::new();
            for instance in &instances {
                let tag = |key: &str| aws::tag(instance, key).to_string();
                let cluster = tag("slipway.dev/cluster");
                *groups
                    .entry((cluster.clone(), tag("slipway.dev/pool")))
                    .or_default() += 1;
                *machines
                    .entry((cluster, tag("slipway.dev/machine")))
                    .or_default() += 1;
            }
            {
                let mut seen = observed.lock().unwrap();
                seen.polls += 1;
                for (group, count) in groups {
                    let most = seen.most.entry(group).or_default();
                    *most = (*most).max(count);
                }
                for ((cluster, machine), count) in machines {
                    if count > 1 {
                        seen.duplicates
                            .push(format!("{cluster} {machine}: {count} instances"));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

const ROUNDS: usize = 6;
const CLUSTERS_PER_ROUND: usize = 4;

#[tokio::test]
async fn a_manager_killed_during_create_then_deleting_leaves_nothing_in_ec2() {
    let _turn = TURN.lock().await;
    let env = env().await;
    let client = env.client().await;
    let moto = moto();
    let ec2 = aws_support::ec2(moto).await;
    let elb = aws_support::elb(moto).await;
    let baseline = inventory(&ec2, &elb).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("--aws-endpoint-url={moto}");
    let args = ["--leader-elect=false", endpoint.as_str()];

    let observed = Arc::new(Mutex::new(Observed::default()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = watch_instances(ec2.clone(), observed.clone(), done.clone());
    let started = Instant::now();
    let mut trials = Vec::new();
    let mut waited_ready = Vec::new();

    for round in 0..ROUNDS {
        let ns = env.create_namespace(&format!("aws-crash-{round}")).await;
        credentials(&client, &ns).await;
        let log = dir.path().join(format!("manager-{round}-killed.log"));
        let mut manager = ManagerProcess::start(env.kubeconfig_path(), &log, &args);
        let round_started = Instant::now();
        // Each cluster is applied at its own random moment, so the one kill lands in a different step of each; the
        // kill itself comes at a random time, or a random time after the round's first VPC or first instance.
        let (kill_delay, offsets): (Duration, Vec<Duration>) = {
            let mut rng = rand::rng();
            (
                Duration::from_millis(if round % 3 == 0 {
                    rng.random_range(300..4000)
                } else {
                    rng.random_range(0..1000)
                }),
                (0..CLUSTERS_PER_ROUND)
                    .map(|_| Duration::from_millis(rng.random_range(0..2500)))
                    .collect(),
            )
        };
        let names: Vec<String> = (0..CLUSTERS_PER_ROUND).map(|i| format!("c{i}")).collect();
        let applies: Vec<_> = names
            .iter()
            .zip(&offsets)
            .map(|(name, offset)| {
                let (client, ns, yaml, offset) = (
                    client.clone(),
                    ns.clone(),
                    cluster_yaml(name, "t3.large"),
                    *offset,
                );
                tokio::spawn(async move {
                    tokio::time::sleep(offset).await;
                    apply(&client, &ns, &yaml).await;
                })
            })
            .collect();
        let kill_point = match round % 3 {
            0 => "a random moment after the manager started",
            1 => {
                let keys: Vec<String> = names.iter().map(|n| format!("{ns}/{n}")).collect();
                eventually("the round's first VPC", Duration::from_secs(30), || async {
                    let vpcs = ec2
                        .describe_vpcs()
                        .filters(
                            Filter::builder()
                                .name("tag:slipway.dev/cluster")
                                .set_values(Some(keys.clone()))
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                    if vpcs.vpcs().is_empty() {
                        Err("none yet".to_string())
                    } else {
                        Ok(())
                    }
                })
                .await;
                "the round's first VPC appeared"
            }
            _ => {
                let prefix = format!("{ns}/");
                eventually(
                    "the round's first instance",
                    Duration::from_secs(30),
                    || async {
                        let seen = observed.lock().unwrap();
                        if seen.most.keys().any(|(c, _)| c.starts_with(&prefix)) {
                            Ok(())
                        } else {
                            Err("none yet".to_string())
                        }
                    },
                )
                .await;
                "the round's first instance appeared"
            }
        };
        let kill_after = round_started.elapsed();
        tokio::time::sleep(kill_delay).await;
        manager.kill();
        for apply in applies {
            apply.await.unwrap();
        }
        for (name, offset) in names.iter().zip(&offsets) {
            trials.push(format!(
                "{ns}/{name}: applied at {offset:?}, manager SIGKILLed {kill_delay:?} after {kill_point} \
                 ({kill_after:?})"
            ));
        }

        let log = dir.path().join(format!("manager-{round}-restarted.log"));
        let mut manager = ManagerProcess::start(env.kubeconfig_path(), &log, &args);
        // Most rounds delete while creation is still under way; two wait until every cluster is Ready, which also
        // shows the restarted manager finishing what the killed one began.
        if round == 2 || round == 3 {
            for name in &names {
                support::wait_ready(&client, &ns, name, Duration::from_secs(90)).await;
                waited_ready.push(format!("{ns}/{name}"));
            }
        }
        let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
        for name in &names {
            clusters
                .delete(name, &DeleteParams::default())
                .await
                .unwrap();
        }
        for name in &names {
            support::wait_deleted(&client, &ns, name, Duration::from_secs(90)).await;
        }
        manager.terminate();
        eprintln!(
            "round {round}: killed {kill_delay:?} after {kill_point} ({kill_after:?}), done in {:?}",
            round_started.elapsed()
        );
        let after = inventory(&ec2, &elb).await;
        assert_eq!(
            after,
            baseline,
            "round {round}: what moto holds after every cluster was deleted differs from before the test \
             ({:?} into the test); trials: {trials:#?}",
            started.elapsed()
        );
    }

    done.store(true, std::sync::atomic::Ordering::SeqCst);
    poller.await.unwrap();
    let observed = observed.lock().unwrap();
    assert!(
        observed.polls > 50,
        "the poller looked only {} times",
        observed.polls
    );
    assert!(
        observed.duplicates.is_empty(),
        "one machine ran as two instances: {:?}",
        observed.duplicates
    );
    for ((cluster, group), most) in &observed.most {
        let (desired, surge) = if group == "control-plane" {
            (CONTROL_PLANE, 1)
        } else {
            (WORKERS, MAX_SURGE)
        };
        assert!(
            *most <= desired + surge,
            "{cluster} {group}: {most} instances at once, more than {desired} + maxSurge {surge}"
        );
    }
    // The clusters that were Ready before their deletion had both groups running: the poller did watch them.
    for cluster in &waited_ready {
        let pool = format!("{}-workers", cluster.rsplit('/').next().unwrap());
        for group in ["control-plane".to_string(), pool] {
            assert!(
                observed
                    .most
                    .contains_key(&(cluster.clone(), group.clone())),
                "{cluster} {group} never seen running: {:?}",
                observed.most
            );
        }
    }
    assert!(trials.len() >= 20);
    eprintln!(
        "{} trials in {:?}; most instances at once per group: {:?}",
        trials.len(),
        started.elapsed(),
        observed.most
    );
}

#[tokio::test]
async fn the_price_configmap_overrides_prices_in_the_cost_estimate() {
    let _turn = TURN.lock().await;
    let env = env().await;
    let client = env.client().await;
    let moto = moto();
    let ns = env.create_namespace("aws-prices").await;
    let dir = tempfile::tempdir().unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let prices = |data: serde_json::Value| -> ConfigMap {
        serde_json::from_value(
            serde_json::json!({ "metadata": { "name": "aws-prices" }, "data": data }),
        )
        .unwrap()
    };

    // A price that is not a number stops the manager at start, naming the entry.
    configmaps
        .create(
            &PostParams::default(),
            &prices(serde_json::json!({ "t3.medium": "cheap" })),
        )
        .await
        .unwrap();
    let endpoint = format!("--aws-endpoint-url={moto}");
    let price_flag = format!("--aws-price-configmap={ns}/aws-prices");
    let args = [
        "--leader-elect=false",
        endpoint.as_str(),
        price_flag.as_str(),
    ];
    let log = dir.path().join("manager-bad-prices.log");
    let mut manager = ManagerProcess::start(env.kubeconfig_path(), &log, &args);
    let exit = manager.child.wait().unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!exit.success(), "{said}");
    assert!(
        said.contains("t3.medium") && said.contains("cheap"),
        "{said}"
    );

    configmaps
        .patch(
            "aws-prices",
            &PatchParams::default(),
            &Patch::Merge(prices(
                serde_json::json!({ "t3.medium": "0.05", "m5.large": "0.1" }),
            )),
        )
        .await
        .unwrap();
    let log = dir.path().join("manager-prices.log");
    let _manager = ManagerProcess::start(env.kubeconfig_path(), &log, &args);
    // No credentials Secret: the cluster makes nothing in EC2, yet its estimate is written with the conditions.
    apply(&client, &ns, &cluster_yaml("priced", "m5.large")).await;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
    // The first estimate can come from a reconcile that has not seen the new pool yet (the cache lags): wait
    // for one that counts it, then check it exactly.
    let cost = eventually(
        "status.cost with the pool",
        Duration::from_secs(60),
        || async {
            let cost = clusters
                .get("priced")
                .await
                .map_err(|e| e.to_string())?
                .status
                .and_then(|s| s.cost)
                .ok_or_else(|| "no status.cost yet".to_string())?;
            match &cost.note {
                Some(note) if note.contains("4 desired machines") => Ok(cost),
                _ => Err(format!("{cost:?}")),
            }
        },
    )
    .await;
    // One t3.medium at $0.05 and three m5.large at $0.10 (the embedded table says 0.0416 and 0.096), and two
    // NAT gateways at the embedded $0.045.
    assert_eq!(
        (cost.per_hour.as_str(), cost.currency.as_str()),
        ("0.44", "USD"),
        "{cost:?}"
    );
    // The cluster stays: without credentials its pool could not list its machines to delete them.
}
