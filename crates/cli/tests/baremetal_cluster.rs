//! A Cluster on the baremetal provider, driven by the manager's controllers (Cluster, MachinePool and the host
//! controller, wired as `slipway manager` wires them) against sushy-tools' Redfish emulator and a real apiserver:
//! hosts are claimed and booted from the image with their config drive; a pool that outgrows the inventory reports `NoHostAvailable`
//! while its other machines keep running, asks again slowly, and takes a host added later; a scale-down releases
//! hosts; deleting the cluster frees them all.

mod support;

// The baremetal provider's own test support (sushy-tools, an image server, hosts); it allows its unused parts.
#[path = "../../../providers/baremetal/tests/support/mod.rs"]
mod metal;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use slipway_api::{BareMetalHost, Cluster, HostState, MachinePool};
use slipway_controller::{Metrics, ProviderRegistry, Settings};
use slipway_provider_baremetal::BareMetalProvider;
use slipway_provider_baremetal::ClientOptions;
use slipway_provider_baremetal::host_controller::{self, HostControllerSettings};
use slipway_provider_baremetal::user_data::{self, USER_DATA_KEY};
use slipway_testenv::TestEnv;
use support::{apply, env, eventually, wait_ready};

/// sushy's fake driver lands a power change 1–11 s after it is asked for; the host controller looks every 5 s.
const POWER_WAIT: Duration = Duration::from_secs(90);

/// One manager per test binary with the baremetal provider and the host controller, as `slipway manager` runs
/// them (default settings, loopback allowed); returns its metrics.
fn baremetal_manager(env: &'static TestEnv) -> &'static Arc<Metrics> {
    static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();
    METRICS.get_or_init(|| {
        let metrics = Arc::new(Metrics::new());
        let for_manager = metrics.clone();
        // A runtime and thread of its own: each `#[tokio::test]` has its own runtime, which ends with the test.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = env.client().await;
                // sushy-tools listens on loopback: allowed as `--allow-egress 127.0.0.0/8` allows it.
                let redfish = ClientOptions {
                    egress: support::loopback_egress(),
                    ..ClientOptions::default()
                };
                // Config drives served as `--config-drive-url https://127.0.0.1:<port>` serves them.
                let drives = metal::DriveServer::start(&client).await;
                let providers = ProviderRegistry::new().register(Arc::new(
                    BareMetalProvider::with_options(client.clone(), redfish.clone())
                        .with_config_drive(drives.settings.clone()),
                ));
                let hosts = host_controller::run(
                    client.clone(),
                    HostControllerSettings {
                        redfish,
                        config_drive: Some(drives.settings.clone()),
                        ..HostControllerSettings::default()
                    },
                    std::future::pending(),
                );
                let clusters = slipway_controller::run(
                    client,
                    providers,
                    for_manager,
                    Settings {
                        egress: support::loopback_egress(),
                        ..Settings::default()
                    },
                    std::future::pending(),
                );
                tokio::join!(clusters, hosts);
                drop(drives);
            });
        });
        metrics
    })
}

/// A Cluster like `config/samples/baremetal-cluster.yaml`, booting `image_url`, with a pool of `workers`.
fn metal_cluster(name: &str, image_url: &str, workers: u32) -> String {
    format!(
        r#"apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata:
  name: {name}
spec:
  kubernetes:
    version: v1.37.2
    distribution: k3s
  controlPlane:
    replicas: 1
  infrastructure:
    baremetal:
      hostSelector:
        matchLabels:
          rack: r1
      imageUrl: {image_url}
      # A VIP in front of the control plane; nothing in this test connects to it.
      controlPlaneEndpoint:
        host: 127.0.0.1
        port: 1
---
apiVersion: slipway.dev/v1alpha1
kind: MachinePool
metadata:
  name: {name}-workers
spec:
  clusterName: {name}
  replicas: {workers}
"#
    )
}

async fn hosts(api: &Api<BareMetalHost>) -> Result<Vec<BareMetalHost>, String> {
    Ok(api
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?
        .items)
}

fn consumer(host: &BareMetalHost) -> Option<String> {
    host.status
        .as_ref()
        .and_then(|s| s.consumer_ref.as_ref())
        .map(|c| c.machine.clone())
}

fn index_of(host: &str) -> usize {
    host.trim_start_matches("host-").parse().unwrap()
}

fn summary(hosts: &[BareMetalHost]) -> String {
    hosts
        .iter()
        .map(|h| {
            let s = h.status.clone().unwrap_or_default();
            format!(
                "{}: {:?} power {:?} consumer {:?} error {:?}",
                h.name_any(),
                s.state,
                s.power_state,
                consumer(h),
                s.last_error
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The emulator's own view of system `index`: powered on, with `image` in its virtual CD and the host's config
/// drive (downloaded: sushy marks a medium inserted only after fetching it) on its removable disk.
async fn booted_from(sushy: &metal::Sushy, index: usize, image: &str) -> Result<(), String> {
    let redfish = sushy.redfish(index);
    let power = redfish
        .system()
        .await
        .map_err(|e| e.to_string())?
        .power_state;
    let cd = redfish.virtual_cd().await.map_err(|e| e.to_string())?;
    let drive = redfish
        .config_drive_media()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no second virtual media device")?;
    let drive_ok = drive.inserted
        && drive.image.as_deref().is_some_and(|url| {
            url.contains(&format!("/host-{index}/")) && url.ends_with("/cidata.iso")
        });
    if power.as_deref() == Some("On")
        && cd.inserted
        && cd.image.as_deref() == Some(image)
        && drive_ok
    {
        Ok(())
    } else {
        Err(format!(
            "host-{index}: power {power:?}, CD inserted {} with {:?}, config drive inserted {}",
            cd.inserted, cd.image, drive.inserted
        ))
    }
}

/// The emulator's own view of system `index`: powered off, virtual CD empty.
async fn released(sushy: &metal::Sushy, index: usize) -> Result<(), String> {
    let redfish = sushy.redfish(index);
    let power = redfish
        .system()
        .await
        .map_err(|e| e.to_string())?
        .power_state;
    let media = redfish.virtual_media().await.map_err(|e| e.to_string())?;
    let empty = media.iter().all(|m| !m.inserted && m.image.is_none());
    if power.as_deref() == Some("Off") && empty {
        Ok(())
    } else {
        Err(format!(
            "host-{index}: power {power:?}, virtual media {:?}",
            media
                .iter()
                .map(|m| (&m.odata_id, m.inserted))
                .collect::<Vec<_>>()
        ))
    }
}

/// Fails when any annotation, label or status field of the host shows one of `secrets`.
fn assert_no_secret_on(host: &BareMetalHost, secrets: &[String]) {
    let visible = serde_json::to_string(&(
        &host.metadata.annotations,
        &host.metadata.labels,
        &host.status,
    ))
    .unwrap();
    assert!(
        !visible.contains("PRIVATE KEY"),
        "{}: {visible}",
        host.name_any()
    );
    for secret in secrets {
        assert!(
            !visible.contains(secret.as_str()),
            "{}: a secret value shows outside its Secret",
            host.name_any()
        );
    }
}

/// Names of the user data Secrets in the namespace.
async fn user_data_secrets(client: &Client, namespace: &str) -> BTreeSet<String> {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .list(
            &kube::api::ListParams::default()
                .labels(&format!("{}=true", user_data::USER_DATA_LABEL)),
        )
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.name_any())
        .collect()
}

/// How many times the manager asked the baremetal provider for a machine and heard "no capacity".
fn capacity_refusals(metrics: &Metrics) -> u64 {
    metrics
        .encode()
        .lines()
        .filter(|l| {
            l.starts_with("slipway_provider_calls")
                && l.contains(r#"provider="baremetal""#)
                && l.contains(r#"operation="create_machine""#)
                && l.contains(r#"outcome="capacity""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn scale(client: &Client, namespace: &str, pool: &str, replicas: i32) {
    Api::<MachinePool>::namespaced(client.clone(), namespace)
        .patch(
            pool,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } })),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_baremetal_cluster_claims_boots_outgrows_recovers_scales_down_and_frees_its_hosts() {
    let env = env().await;
    let metrics = baremetal_manager(env);
    let sushy = metal::Sushy::start(7, true).await;
    let image = metal::ImageServer::start().await;
    let ns = env.create_namespace("metal").await;
    let client = env.client().await;
    let host_api: Api<BareMetalHost> = Api::namespaced(client.clone(), &ns);
    let pools: Api<MachinePool> = Api::namespaced(client.clone(), &ns);

    // Six hosts, registered by the host controller (the emulator has a seventh system, added later).
    metal::create_hosts(&client, &ns, &sushy, 6).await;
    eventually("6 hosts Available", Duration::from_secs(60), || async {
        let hosts = hosts(&host_api).await?;
        let available = hosts
            .iter()
            .filter(|h| metal::state(h) == Some(HostState::Available))
            .count();
        (available == 6)
            .then_some(())
            .ok_or_else(|| summary(&hosts))
    })
    .await;

    // A control plane of 1 and a pool of 3 claim four hosts and boot each from the image.
    apply(&client, &ns, &metal_cluster("metal", &image.url, 3)).await;
    wait_ready(&client, &ns, "metal", 3 * POWER_WAIT).await;
    let claimed = eventually("4 hosts claimed and Provisioned", POWER_WAIT, || async {
        let hosts = hosts(&host_api).await?;
        let claimed: Vec<String> = hosts
            .iter()
            .filter(|h| consumer(h).is_some())
            .map(|h| h.name_any())
            .collect();
        let provisioned = hosts
            .iter()
            .filter(|h| metal::state(h) == Some(HostState::Provisioned))
            .count();
        (claimed.len() == 4 && provisioned == 4)
            .then_some(claimed)
            .ok_or_else(|| summary(&hosts))
    })
    .await;
    for host in &claimed {
        eventually(&format!("{host} on with the image"), POWER_WAIT, || {
            booted_from(&sushy, index_of(host), &image.url)
        })
        .await;
    }
    // With a control-plane endpoint the cluster has a kubeconfig for it, and every host boots what its role needs:
    // the control plane `k3s server`, the workers `k3s agent` with the cluster's join token.
    let kubeconfig = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("metal-kubeconfig")
        .await
        .expect("a kubeconfig Secret");
    let kubeconfig = String::from_utf8(kubeconfig.data.unwrap()["value"].0.clone()).unwrap();
    assert!(
        kubeconfig.contains("server: https://127.0.0.1:1"),
        "{kubeconfig}"
    );
    let token = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("metal-bootstrap-token")
        .await
        .expect("a join token");
    let token_data = token.data.unwrap();
    let token_id = String::from_utf8(token_data["token-id"].0.clone()).unwrap();
    let token_secret = String::from_utf8(token_data["token-secret"].0.clone()).unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    // Every secret value the hosts boot with: the private keys of the cluster's CAs and SA key, and the join token.
    let mut secret_values = vec![token_secret.clone()];
    for name in ["metal-ca", "metal-etcd", "metal-proxy", "metal-sa"] {
        let key = secrets.get(name).await.unwrap().data.unwrap()["tls.key"]
            .0
            .clone();
        let key = String::from_utf8(key).unwrap();
        // The base64 body of the PEM, as it would show in any text.
        secret_values.push(key.lines().nth(1).unwrap().to_string());
    }
    let mut roles = Vec::new();
    for host in hosts(&host_api).await.unwrap() {
        assert_no_secret_on(&host, &secret_values);
        let Some(reference) = host
            .status
            .as_ref()
            .and_then(|s| s.provisioning.as_ref())
            .and_then(|p| p.user_data_secret_ref.clone())
        else {
            assert!(
                consumer(&host).is_none(),
                "{}: claimed without user data",
                host.name_any()
            );
            continue;
        };
        // The claim names the Secret its user data is in, and that very Secret (same UID) exists.
        let secret = secrets.get(&reference.name).await.unwrap();
        assert_eq!(secret.uid().as_deref(), Some(reference.uid.as_str()));
        assert_eq!(
            reference.name,
            user_data::secret_name(&consumer(&host).unwrap())
        );
        let user_data = String::from_utf8(secret.data.unwrap()[USER_DATA_KEY].0.clone()).unwrap();
        let role = if user_data.contains("INSTALL_K3S_EXEC='server'") {
            "server"
        } else if user_data.contains("INSTALL_K3S_EXEC='agent'") {
            "agent"
        } else {
            "neither"
        };
        // The first server creates the join token as a bootstrap-token Secret manifest (as kubeadm init's
        // bootstrapTokens); an agent joins with it.
        let carries_token = match role {
            "server" => user_data.contains(&format!("bootstrap-token-{token_id}")),
            _ => user_data.contains(&format!("{token_id}.")),
        };
        assert!(
            carries_token,
            "{} ({role}): no join token in its user data",
            host.name_any()
        );
        roles.push(role);
    }
    roles.sort();
    assert_eq!(roles, ["agent", "agent", "agent", "server"]);

    let pool = pools.get("metal-workers").await.unwrap();
    let status = pool.status.clone().unwrap();
    assert_eq!((status.replicas, status.ready_replicas), (3, 3));
    let provider_ids: BTreeSet<String> = status
        .machines
        .iter()
        .filter_map(|m| m.provider_id.clone())
        .collect();
    assert_eq!(provider_ids.len(), 3, "{:?}", status.machines);
    assert!(
        provider_ids
            .iter()
            .all(|id| id.starts_with(&format!("baremetal://{ns}/host-"))),
        "{provider_ids:?}"
    );

    // Six workers need seven hosts; six exist. The five that fit run, the pool says why the sixth does not.
    scale(&client, &ns, "metal-workers", 6).await;
    let short = eventually(
        "pool of 6 at 5 machines, ScalingUp NoHostAvailable",
        3 * POWER_WAIT,
        || async {
            let pool = pools
                .get("metal-workers")
                .await
                .map_err(|e| e.to_string())?;
            let status = pool.status.clone().unwrap_or_default();
            let scaling_up =
                slipway_api::conditions::find(&status.conditions, "ScalingUp").cloned();
            let seen = format!(
                "generation {:?}/{:?}, replicas {}, ready {}, machines {}, {}",
                status.observed_generation,
                pool.metadata.generation,
                status.replicas,
                status.ready_replicas,
                status.machines.len(),
                support::condition_summary(&status.conditions)
            );
            match scaling_up {
                Some(c)
                    if status.observed_generation == pool.metadata.generation
                        && status.replicas == 5
                        && status.ready_replicas == 5
                        && status.machines.len() == 5
                        && c.status == "True"
                        && c.reason == "NoHostAvailable" =>
                {
                    Ok(c.message)
                }
                _ => Err(seen),
            }
        },
    )
    .await;
    assert!(
        short.contains("5 of 6 machines ready") && short.contains("hostSelector"),
        "the condition says how far the pool got and what to do: {short}"
    );
    let all = hosts(&host_api).await.unwrap();
    assert!(
        all.iter()
            .all(|h| metal::state(h) == Some(HostState::Provisioned)),
        "every host is in use: {}",
        summary(&all)
    );
    for host in &all {
        booted_from(&sushy, index_of(&host.name_any()), &image.url)
            .await
            .unwrap();
    }

    // Short of hosts, the pool asks again at a slow, steady pace: not an error loop. Timed between attempts, from
    // the first one seen on (the status write that reported the shortage wakes the pool once more).
    let mut seen = capacity_refusals(metrics);
    let mut last_attempt: Option<Instant> = None;
    let mut gaps = Vec::new();
    let watch_started = Instant::now();
    while gaps.len() < 2 {
        assert!(
            watch_started.elapsed() < Duration::from_secs(90),
            "the pool stopped looking for a free host: {gaps:?} after {:?}",
            watch_started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = capacity_refusals(metrics);
        if now != seen {
            if let Some(at) = last_attempt {
                gaps.push((now - seen, at.elapsed()));
            }
            last_attempt = Some(Instant::now());
            seen = now;
        }
    }
    assert!(
        gaps.iter()
            .all(|(calls, gap)| *calls == 1 && *gap >= Duration::from_secs(8)),
        "one claim attempt every 15 s or so, got (attempts, after) {gaps:?}"
    );

    // A seventh host comes: the pool takes it by itself, without anyone touching the pool.
    metal::create_host(&client, &ns, "host-6", sushy.address(6), "bmc", true).await;
    eventually(
        "pool of 6 Ready on the new host",
        3 * POWER_WAIT,
        || async {
            let pool = pools
                .get("metal-workers")
                .await
                .map_err(|e| e.to_string())?;
            let status = pool.status.clone().unwrap_or_default();
            let ready = slipway_api::conditions::is_true(&status.conditions, "Ready");
            (ready && status.replicas == 6 && status.ready_replicas == 6)
                .then_some(())
                .ok_or_else(|| support::condition_summary(&status.conditions))
        },
    )
    .await;
    booted_from(&sushy, 6, &image.url).await.unwrap();

    // Back to four workers: two hosts are powered off, emptied and Available again.
    scale(&client, &ns, "metal-workers", 4).await;
    let free = eventually(
        "pool of 4 Ready and two hosts Available",
        3 * POWER_WAIT,
        || async {
            let pool = pools
                .get("metal-workers")
                .await
                .map_err(|e| e.to_string())?;
            let status = pool.status.clone().unwrap_or_default();
            let hosts = hosts(&host_api).await?;
            let free: Vec<String> = hosts
                .iter()
                .filter(|h| metal::state(h) == Some(HostState::Available) && consumer(h).is_none())
                .map(|h| h.name_any())
                .collect();
            let ready = slipway_api::conditions::is_true(&status.conditions, "Ready");
            if ready && status.replicas == 4 && status.ready_replicas == 4 && free.len() == 2 {
                Ok(free)
            } else {
                Err(format!(
                    "replicas {} ready {}; {}; hosts: {}",
                    status.replicas,
                    status.ready_replicas,
                    support::condition_summary(&status.conditions),
                    summary(&hosts)
                ))
            }
        },
    )
    .await;
    for host in &free {
        eventually(&format!("{host} off and empty"), POWER_WAIT, || {
            released(&sushy, index_of(host))
        })
        .await;
    }
    // The released hosts' user data is gone with them; the five held hosts keep theirs.
    let held: BTreeSet<String> = hosts(&host_api)
        .await
        .unwrap()
        .iter()
        .filter_map(consumer)
        .map(|machine| user_data::secret_name(&machine))
        .collect();
    assert_eq!(held.len(), 5);
    assert_eq!(user_data_secrets(&client, &ns).await, held);
    let scaling_up = slipway_api::conditions::find(
        &pools
            .get("metal-workers")
            .await
            .unwrap()
            .status
            .unwrap()
            .conditions,
        "ScalingUp",
    )
    .cloned()
    .unwrap();
    assert_eq!(
        (scaling_up.status.as_str(), scaling_up.reason.as_str()),
        ("False", "AtReplicas")
    );

    // Nothing of the BMC password shows in any object the manager wrote.
    let written = format!(
        "{:?}{:?}{:?}",
        hosts(&host_api).await.unwrap(),
        pools.list(&Default::default()).await.unwrap().items,
        Api::<Cluster>::namespaced(client.clone(), &ns)
            .get("metal")
            .await
            .unwrap()
    );
    assert!(
        !written.contains(metal::PASSWORD),
        "the BMC password leaked"
    );

    // Deleting the cluster frees every host: Available, powered off, CD empty.
    Api::<Cluster>::namespaced(client.clone(), &ns)
        .delete("metal", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_deleted(&client, &ns, "metal", 3 * POWER_WAIT).await;
    let all = hosts(&host_api).await.unwrap();
    assert!(
        all.iter()
            .all(|h| metal::state(h) == Some(HostState::Available)
                && consumer(h).is_none()
                && !h
                    .annotations()
                    .contains_key(slipway_provider_baremetal::LEGACY_USER_DATA_ANNOTATION)),
        "{}",
        summary(&all)
    );
    for host in &all {
        assert_no_secret_on(host, &secret_values);
    }
    // Every user data Secret went with the release of its host.
    assert!(
        user_data_secrets(&client, &ns).await.is_empty(),
        "{:?}",
        user_data_secrets(&client, &ns).await
    );
    for host in &all {
        released(&sushy, index_of(&host.name_any())).await.unwrap();
    }
}

#[tokio::test]
async fn the_baremetal_sample_is_accepted_by_the_apiserver() {
    let env = env().await;
    let ns = env.create_namespace("metal-sample").await;
    let client = env.client().await;
    let path = support::repo_path("config/samples/baremetal-cluster.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    let mut kinds = Vec::new();
    for document in serde_saphyr::from_multiple::<serde_json::Value>(&yaml).unwrap() {
        let kind = document["kind"].as_str().unwrap().to_string();
        let created = match kind.as_str() {
            "Cluster" => Api::<Cluster>::namespaced(client.clone(), &ns)
                .create(&dry_run, &serde_json::from_value(document).unwrap())
                .await
                .map(|_| ()),
            "MachinePool" => Api::<MachinePool>::namespaced(client.clone(), &ns)
                .create(&dry_run, &serde_json::from_value(document).unwrap())
                .await
                .map(|_| ()),
            "BareMetalHost" => Api::<BareMetalHost>::namespaced(client.clone(), &ns)
                .create(&dry_run, &serde_json::from_value(document).unwrap())
                .await
                .map(|_| ()),
            "Secret" => Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
                .create(&dry_run, &serde_json::from_value(document).unwrap())
                .await
                .map(|_| ()),
            other => panic!("{}: unexpected kind {other}", path.display()),
        };
        created
            .unwrap_or_else(|e| panic!("{}: the apiserver refuses a {kind}: {e}", path.display()));
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "BareMetalHost",
            "BareMetalHost",
            "BareMetalHost",
            "Cluster",
            "MachinePool",
            "Secret"
        ]
    );
}

/// `slipway manager --config-drive-url` serves config drives over HTTPS on `--config-drive-listen` (a claim that
/// does not exist gets 404), and a plain-HTTP URL is refused at start with the fix.
#[tokio::test]
async fn the_manager_serves_config_drives_over_https_and_refuses_a_plain_http_url() {
    let env = env().await;
    let dir = tempfile::tempdir().unwrap();
    let port = slipway_testenv::free_port().unwrap();
    let mut manager = support::ManagerProcess::start_as_deployed(
        env.kubeconfig_path(),
        &dir.path().join("manager.log"),
        &[
            "--leader-elect=false",
            &format!("--config-drive-url=https://127.0.0.1:{port}"),
            &format!("--config-drive-listen=127.0.0.1:{port}"),
        ],
    );
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .no_proxy()
        .build()
        .unwrap();
    let url = format!(
        "https://127.0.0.1:{port}/config-drive/default/host-0/{}/cidata.iso",
        "0".repeat(64)
    );
    eventually(
        "the config drive server answers over HTTPS",
        Duration::from_secs(60),
        || async {
            let status = http
                .get(&url)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .status();
            (status == 404)
                .then_some(())
                .ok_or(format!("HTTP {status}"))
        },
    )
    .await;
    manager.terminate();

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["manager", "--config-drive-url=http://127.0.0.1:1"])
        .env("KUBECONFIG", env.kubeconfig_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("--config-drive-url") && stderr.contains("must use https"),
        "{stderr}"
    );
}
