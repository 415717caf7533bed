//! The baremetal provider and host controller against sushy-tools' Redfish emulator (fake driver) and a real
//! kube-apiserver: registration, claiming and booting, capacity, release, credentials and TLS failures, and
//! claims racing for the same hosts, and the config drive that carries each machine's user data.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use slipway_api::{BareMetalHost, HostState, MachineSettings, UserDataSecretRef};
use slipway_provider::{
    ClusterInfo, Deletion, InfrastructureProvider, MachineRequest, MachineRole, ProviderError,
};
use slipway_provider_baremetal::user_data::{self, USER_DATA_KEY};
use slipway_provider_baremetal::{BareMetalProvider, LEGACY_USER_DATA_ANNOTATION};
use slipway_provider_baremetal::{config_drive, host_controller};
use slipway_testenv::eventually;
use support::{ImageServer, PASSWORD, Sushy, state};

const POWER_WAIT: Duration = Duration::from_secs(40);

fn request(cluster: &ClusterInfo, role: MachineRole, index: usize) -> MachineRequest {
    MachineRequest {
        name: format!("{}-{}-{index}", cluster.name, role.group()),
        role,
        settings: MachineSettings::default(),
        kubernetes_version: "v1.37.2".into(),
        template_hash: "hash-1".into(),
        user_data: Some(user_data_of(index)),
    }
}

/// User data standing in for the real cloud-init: what must never show outside its Secret.
const PRIVATE_KEY_MARKER: &str = "-----BEGIN PRIVATE KEY-----";
const JOIN_TOKEN: &str = "abcdef.0123456789abcdef";

fn user_data_of(index: usize) -> String {
    format!("#cloud-config\n# machine {index}\n# {PRIVATE_KEY_MARKER}\n# token {JOIN_TOKEN}\n")
}

/// Fails when any annotation, label or status field of the host carries user data.
fn assert_no_user_data_on(host: &BareMetalHost) {
    let visible = serde_json::to_string(&(
        &host.metadata.annotations,
        &host.metadata.labels,
        &host.status,
    ))
    .unwrap();
    for secret in ["#cloud-config", PRIVATE_KEY_MARKER, JOIN_TOKEN] {
        assert!(
            !visible.contains(secret),
            "{}: {secret:?} outside a Secret: {visible}",
            host.name_any()
        );
    }
}

/// The user data Secret the host's claim names, checked to be that very Secret (same UID); returns its data.
async fn claimed_user_data(client: &kube::Client, host: &BareMetalHost) -> String {
    let reference = host
        .status
        .as_ref()
        .and_then(|s| s.provisioning.as_ref())
        .and_then(|p| p.user_data_secret_ref.clone())
        .unwrap_or_else(|| panic!("{}: the claim names no user data Secret", host.name_any()));
    let secret = Api::<Secret>::namespaced(client.clone(), &host.namespace().unwrap())
        .get(&reference.name)
        .await
        .unwrap_or_else(|e| panic!("{}: Secret {}: {e}", host.name_any(), reference.name));
    assert_eq!(secret.uid().as_deref(), Some(reference.uid.as_str()));
    String::from_utf8(secret.data.unwrap()[USER_DATA_KEY].0.clone()).unwrap()
}

/// Names of the user data Secrets in the namespace.
async fn user_data_secrets(client: &kube::Client, namespace: &str) -> BTreeSet<String> {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{}=true", user_data::USER_DATA_LABEL)))
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.name_any())
        .collect()
}

fn pool(name: &str) -> MachineRole {
    MachineRole::Worker { pool: name.into() }
}

/// Runs the host controller for `namespace` until the returned guard is dropped.
fn start_controller(client: &kube::Client, namespace: &str) -> tokio::task::JoinHandle<()> {
    let (client, settings) = (client.clone(), support::controller_settings(namespace));
    tokio::spawn(async move {
        host_controller::run(client, settings, std::future::pending()).await;
    })
}

async fn host(api: &Api<BareMetalHost>, name: &str) -> BareMetalHost {
    api.get(name).await.unwrap()
}

#[tokio::test]
async fn hosts_register_and_become_available_with_power_and_vendor() {
    let sushy = Sushy::start(6, true).await;
    let (client, namespace) = support::namespace("bmh-register").await;
    support::create_hosts(&client, &namespace, &sushy, 6).await;
    let controller = start_controller(&client, &namespace);
    let api: Api<BareMetalHost> = Api::namespaced(client.clone(), &namespace);

    let hosts = eventually("6 hosts Available", Duration::from_secs(60), || async {
        let hosts = api
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let available = hosts
            .items
            .iter()
            .filter(|h| state(h) == Some(HostState::Available))
            .count();
        if available == 6 {
            Ok(hosts.items)
        } else {
            Err(format!("{available} of {} Available", hosts.items.len()))
        }
    })
    .await;
    for host in &hosts {
        let status = host.status.as_ref().unwrap();
        assert_eq!(
            status.power_state.as_deref(),
            Some("Off"),
            "{}",
            host.name_any()
        );
        assert_eq!(
            status
                .vendor
                .as_ref()
                .and_then(|v| v.manufacturer.as_deref()),
            Some("Sushy Emulator")
        );
        assert_eq!(status.last_error, None);
        assert_eq!(status.observed_generation, host.metadata.generation);
    }
    controller.abort();
}

#[tokio::test]
async fn pools_claim_hosts_boot_them_from_the_image_and_release_them() {
    let sushy = Sushy::start(6, true).await;
    let image = ImageServer::start().await;
    let (client, namespace) = support::namespace("bmh-claim").await;
    support::create_hosts(&client, &namespace, &sushy, 6).await;
    support::register_all(&client, &namespace).await;
    let provider = BareMetalProvider::with_options(client.clone(), support::fast_redfish());
    let cluster = support::cluster(&namespace, "metal", &image.url);
    let api: Api<BareMetalHost> = Api::namespaced(client.clone(), &namespace);

    // Without a control-plane endpoint the workload API is out of reach, and the status says how to fix that.
    let ready = provider.reconcile_cluster(&cluster).await.unwrap();
    assert!(ready.ready && !ready.workload_api && ready.endpoint.is_none());
    assert!(
        ready.message.contains("controlPlaneEndpoint"),
        "{}",
        ready.message
    );
    let mut with_endpoint = cluster.clone();
    with_endpoint
        .infrastructure
        .baremetal
        .as_mut()
        .unwrap()
        .control_plane_endpoint = Some(slipway_api::ApiEndpoint {
        host: "10.0.0.5".into(),
        port: 6443,
    });
    let reachable = provider.reconcile_cluster(&with_endpoint).await.unwrap();
    assert!(reachable.workload_api);
    assert_eq!(reachable.endpoint, Some(("10.0.0.5".to_string(), 6443)));

    // A control plane of 1 and a pool of 3.
    let mut machines = vec![
        provider
            .create_machine(&cluster, &request(&cluster, MachineRole::ControlPlane, 0))
            .await
            .unwrap(),
    ];
    for i in 0..3 {
        machines.push(
            provider
                .create_machine(&cluster, &request(&cluster, pool("md-0"), i))
                .await
                .unwrap(),
        );
    }
    let provider_ids: BTreeSet<_> = machines.iter().map(|m| m.provider_id.clone()).collect();
    assert_eq!(
        provider_ids.len(),
        4,
        "four different hosts: {provider_ids:?}"
    );
    assert!(
        provider_ids
            .iter()
            .all(|id| id.starts_with(&format!("baremetal://{namespace}/host-")))
    );

    // Creating a machine again returns the host it already holds.
    let again = provider
        .create_machine(&cluster, &request(&cluster, pool("md-0"), 0))
        .await
        .unwrap();
    assert_eq!(again.provider_id, machines[1].provider_id);

    assert_eq!(
        provider
            .list_machines(&cluster, &MachineRole::ControlPlane)
            .await
            .unwrap()
            .len(),
        1
    );
    let workers = provider
        .list_machines(&cluster, &pool("md-0"))
        .await
        .unwrap();
    assert_eq!(workers.len(), 3);
    assert!(workers.iter().all(|m| m.template_hash == "hash-1"));

    // Every claimed host ends powered on, with the image in its virtual CD and a boot override to the CD.
    for machine in &machines {
        let name = machine.provider_id.rsplit('/').next().unwrap().to_string();
        let index: usize = name.trim_start_matches("host-").parse().unwrap();
        let redfish = sushy.redfish(index);
        let cd = redfish.virtual_cd().await.unwrap();
        assert!(cd.inserted, "{name}: image inserted");
        assert_eq!(cd.image.as_deref(), Some(image.url.as_str()));
        let system = redfish
            .get(&format!("/redfish/v1/Systems/{}", Sushy::system_id(index)))
            .await
            .unwrap();
        assert_eq!(system["Boot"]["BootSourceOverrideTarget"], "Cd", "{name}");
        eventually(&format!("{name} powered on"), POWER_WAIT, || async {
            let power = redfish
                .system()
                .await
                .map_err(|e| e.to_string())?
                .power_state;
            (power.as_deref() == Some("On"))
                .then_some(())
                .ok_or(format!("{power:?}"))
        })
        .await;
        let host = host(&api, &name).await;
        let status = host.status.clone().unwrap();
        assert_eq!(status.state, Some(HostState::Provisioning));
        assert_eq!(status.consumer_ref.as_ref().unwrap().machine, machine.name);
        assert!(status.provisioning.unwrap().booted_at.is_some());
        // The user data is in the Secret the claim names, and nowhere on the host.
        assert_no_user_data_on(&host);
        let data = claimed_user_data(&client, &host).await;
        let index: usize = machine.name.rsplit('-').next().unwrap().parse().unwrap();
        assert_eq!(data, user_data_of(index), "{}", machine.name);
    }
    assert_eq!(
        user_data_secrets(&client, &namespace).await,
        machines
            .iter()
            .map(|m| user_data::secret_name(&m.name))
            .collect::<BTreeSet<_>>()
    );
    assert!(image.downloads.load(std::sync::atomic::Ordering::SeqCst) >= 4);

    // The host controller sees them on and calls them Provisioned; the machines are Running.
    for machine in &machines {
        let name = machine.provider_id.rsplit('/').next().unwrap();
        let host = host(&api, name).await;
        slipway_provider_baremetal::reconcile_host_with(
            &client,
            &host,
            &support::controller_settings(&namespace),
        )
        .await
        .unwrap();
        assert_eq!(
            state(&api.get(name).await.unwrap()),
            Some(HostState::Provisioned)
        );
    }
    let workers = provider
        .list_machines(&cluster, &pool("md-0"))
        .await
        .unwrap();
    assert!(
        workers
            .iter()
            .all(|m| m.phase == slipway_api::MachinePhase::Running)
    );

    // What `kubectl get bmh` prints: the server renders the CRD's printer columns.
    let first = machines[0].provider_id.rsplit('/').next().unwrap();
    let table: serde_json::Value = client
        .request(
            http::Request::get(format!(
                "/apis/slipway.dev/v1alpha1/namespaces/{namespace}/baremetalhosts/{first}"
            ))
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .body(Vec::new())
            .unwrap(),
        )
        .await
        .unwrap();
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Name", "State", "Power", "Consumer", "Age"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!(
        (&cells[1], &cells[2], &cells[3]),
        (
            &serde_json::json!("Provisioned"),
            &serde_json::json!("On"),
            &serde_json::json!(machines[0].name)
        )
    );

    // Two more fill the six hosts; the seventh finds none.
    for i in 3..5 {
        provider
            .create_machine(&cluster, &request(&cluster, pool("md-0"), i))
            .await
            .unwrap();
    }
    let seventh = provider
        .create_machine(&cluster, &request(&cluster, pool("md-1"), 0))
        .await
        .unwrap_err();
    assert!(
        matches!(&seventh, ProviderError::Capacity { reason, .. } if reason == "NoHostAvailable"),
        "{seventh:?}"
    );
    assert!(seventh.to_string().contains("rack=r1"), "{seventh}");

    // Deleting one powers it off, ejects the image and makes it Available again.
    let victim = &machines[2];
    let victim_host = victim.provider_id.rsplit('/').next().unwrap().to_string();
    let index: usize = victim_host.trim_start_matches("host-").parse().unwrap();
    // Deletion goes on until the BMC reports the host off (sushy takes 1–11 s), as the controller would call it.
    eventually("deleting the machine finishes", POWER_WAIT, || async {
        match provider
            .delete_machine(&cluster, &pool("md-0"), &victim.name)
            .await
        {
            Ok(Deletion::Done) => Ok(()),
            Ok(Deletion::InProgress(message)) => {
                let host = api.get(&victim_host).await.map_err(|e| e.to_string())?;
                assert_eq!(state(&host), Some(HostState::Deprovisioning), "{message}");
                Err(message)
            }
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    let released = host(&api, &victim_host).await;
    let status = released.status.clone().unwrap();
    assert_eq!(status.state, Some(HostState::Available));
    assert_eq!(status.consumer_ref, None);
    assert_eq!(status.provisioning, None);
    assert_no_user_data_on(&released);
    assert!(
        !user_data_secrets(&client, &namespace)
            .await
            .contains(&user_data::secret_name(&victim.name)),
        "the released machine's user data Secret is deleted"
    );
    let redfish = sushy.redfish(index);
    assert!(
        !redfish.virtual_cd().await.unwrap().inserted,
        "image ejected"
    );
    assert_eq!(
        redfish.system().await.unwrap().power_state.as_deref(),
        Some("Off")
    );
    assert_eq!(status.power_state.as_deref(), Some("Off"));
    assert_eq!(
        provider
            .list_machines(&cluster, &pool("md-0"))
            .await
            .unwrap()
            .len(),
        4
    );
    // Deleting it again is done at once.
    assert_eq!(
        provider
            .delete_machine(&cluster, &pool("md-0"), &victim.name)
            .await
            .unwrap(),
        Deletion::Done
    );
    // The freed host can be claimed again, and the cluster is not deletable while it holds hosts.
    provider
        .create_machine(&cluster, &request(&cluster, pool("md-1"), 0))
        .await
        .unwrap();
    assert!(matches!(
        provider.delete_cluster(&cluster).await.unwrap(),
        Deletion::InProgress(_)
    ));
}

#[tokio::test]
async fn wrong_password_puts_the_host_in_error_until_the_secret_is_fixed() {
    let sushy = Sushy::start(1, true).await;
    let (client, namespace) = support::namespace("bmh-password").await;
    support::put_secret(&client, &namespace, "bmc", "admin", "not-the-password").await;
    support::create_host(&client, &namespace, "host-0", sushy.address(0), "bmc", true).await;
    let controller = start_controller(&client, &namespace);
    let api: Api<BareMetalHost> = Api::namespaced(client.clone(), &namespace);

    let error = eventually("host in Error", Duration::from_secs(30), || async {
        let host = api.get("host-0").await.map_err(|e| e.to_string())?;
        match (
            state(&host),
            host.status.as_ref().and_then(|s| s.last_error.clone()),
        ) {
            (Some(HostState::Error), Some(error)) => Ok(error),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(error.contains("refused the credentials"), "{error}");
    assert!(
        error.contains("credentialsSecretRef"),
        "says where to fix it: {error}"
    );
    assert!(
        !error.contains("not-the-password") && !error.contains(PASSWORD),
        "{error}"
    );

    support::put_secret(&client, &namespace, "bmc", support::USERNAME, PASSWORD).await;
    eventually("host recovers", Duration::from_secs(30), || async {
        let host = api.get("host-0").await.map_err(|e| e.to_string())?;
        let status = host.status.clone().unwrap_or_default();
        (status.state == Some(HostState::Available) && status.last_error.is_none())
            .then_some(())
            .ok_or(format!("{status:?}"))
    })
    .await;
    controller.abort();
}

#[tokio::test]
async fn unreachable_bmc_and_untrusted_certificates_are_errors_that_say_what_to_fix() {
    let sushy = Sushy::start(2, true).await;
    let (client, namespace) = support::namespace("bmh-tls").await;
    support::put_secret(&client, &namespace, "bmc", support::USERNAME, PASSWORD).await;
    // Verification on (the default): the emulator's self-signed certificate is refused.
    support::create_host(
        &client,
        &namespace,
        "verified",
        sushy.address(0),
        "bmc",
        false,
    )
    .await;
    // Verification off for this host only.
    support::create_host(
        &client,
        &namespace,
        "unverified",
        sushy.address(1),
        "bmc",
        true,
    )
    .await;
    // Nothing listens there.
    let closed = format!(
        "redfish+http://127.0.0.1:{}/redfish/v1/Systems/1",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    support::create_host(&client, &namespace, "unreachable", closed, "bmc", false).await;
    let controller = start_controller(&client, &namespace);
    let api: Api<BareMetalHost> = Api::namespaced(client.clone(), &namespace);

    let settled = |name: &'static str, want: HostState| {
        let api = api.clone();
        async move {
            eventually(
                &format!("{name} {want:?}"),
                Duration::from_secs(30),
                || async {
                    let host = api.get(name).await.map_err(|e| e.to_string())?;
                    let status = host.status.clone().unwrap_or_default();
                    (status.state == Some(want))
                        .then_some(status)
                        .ok_or(format!("{:?}", host.status))
                },
            )
            .await
        }
    };
    let verified = settled("verified", HostState::Error).await;
    let error = verified.last_error.unwrap();
    assert!(
        error.contains("not trusted") && error.contains("disableCertificateVerification"),
        "{error}"
    );
    settled("unverified", HostState::Available).await;
    let unreachable = settled("unreachable", HostState::Error).await;
    let error = unreachable.last_error.unwrap();
    assert!(
        error.contains("unreachable") && error.contains("spec.bmc.address"),
        "{error}"
    );
    controller.abort();
}

#[tokio::test]
async fn concurrent_claims_never_give_one_host_to_two_machines() {
    let sushy = Sushy::start(6, true).await;
    let image = ImageServer::start().await;
    let (client, namespace) = support::namespace("bmh-race").await;
    support::create_hosts(&client, &namespace, &sushy, 6).await;
    support::register_all(&client, &namespace).await;
    let provider = std::sync::Arc::new(BareMetalProvider::with_options(
        client.clone(),
        support::fast_redfish(),
    ));
    let cluster = support::cluster(&namespace, "race", &image.url);

    // Sixteen machines of four pools ask at once for six hosts.
    let mut tasks = Vec::new();
    for p in 0..4 {
        for i in 0..4 {
            let (provider, cluster) = (provider.clone(), cluster.clone());
            tasks.push(tokio::spawn(async move {
                let request = request(&cluster, pool(&format!("pool-{p}")), i);
                (
                    request.name.clone(),
                    provider.create_machine(&cluster, &request).await,
                )
            }));
        }
    }
    let mut won = Vec::new();
    let mut no_host = 0;
    for task in tasks {
        match task.await.unwrap() {
            (name, Ok(machine)) => won.push((name, machine.provider_id)),
            (_, Err(ProviderError::Capacity { reason, .. })) if reason == "NoHostAvailable" => {
                no_host += 1
            }
            (name, Err(other)) => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!((won.len(), no_host), (6, 10), "{won:?}");
    let hosts: BTreeSet<_> = won.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(hosts.len(), 6, "every winner has its own host: {won:?}");

    // What the apiserver holds agrees: six hosts, six different consumers, each the machine that won it.
    let api: Api<BareMetalHost> = Api::namespaced(client.clone(), &namespace);
    let consumers: BTreeSet<_> = api
        .list(&Default::default())
        .await
        .unwrap()
        .iter()
        .map(|h| {
            let consumer = h
                .status
                .as_ref()
                .unwrap()
                .consumer_ref
                .clone()
                .expect("every host claimed");
            (
                consumer.machine,
                format!("baremetal://{namespace}/{}", h.name_any()),
            )
        })
        .collect();
    let won: BTreeSet<_> = won.into_iter().collect();
    assert_eq!(consumers, won);
    // The losers' user data went with their failed claims: one Secret per winner, each the one its claim names.
    let expected: BTreeSet<String> = consumers
        .iter()
        .map(|(machine, _)| user_data::secret_name(machine))
        .collect();
    assert_eq!(user_data_secrets(&client, &namespace).await, expected);
    for host in api.list(&Default::default()).await.unwrap() {
        claimed_user_data(&client, &host).await;
    }
}

#[tokio::test]
async fn the_host_controller_finishes_a_boot_and_a_release_the_provider_left_halfway() {
    let sushy = Sushy::start(1, true).await;
    let image = ImageServer::start().await;
    let (client, namespace) = support::namespace("bmh-finish").await;
    support::create_hosts(&client, &namespace, &sushy, 1).await;
    support::register_all(&client, &namespace).await;
    let api: Api<BareMetalHost> = Api::namespaced(client.clone(), &namespace);
    let settings = support::controller_settings(&namespace);

    // A claim whose user data Secret is not there (deleted by hand, say): the host is not powered on.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut claimed = host(&api, "host-0").await;
    let status = claimed.status.as_mut().unwrap();
    status.state = Some(HostState::Provisioning);
    status.consumer_ref = Some(slipway_api::ConsumerRef {
        namespace: namespace.clone(),
        cluster: "metal".into(),
        cluster_uid: None,
        group: "control-plane".into(),
        machine: "metal-control-plane-0".into(),
    });
    status.provisioning = Some(slipway_api::ProvisioningStatus {
        image_url: image.url.clone(),
        template_hash: "hash-1".into(),
        claimed_at: None,
        booted_at: None,
        release_requested_at: None,
        user_data_secret_ref: Some(UserDataSecretRef {
            name: "metal-control-plane-0-user-data".into(),
            uid: "0b5e4c1e-0000-4000-8000-000000000000".into(),
        }),
    });
    api.replace_status("host-0", &Default::default(), &claimed)
        .await
        .unwrap();
    let current = host(&api, "host-0").await;
    slipway_provider_baremetal::reconcile_host_with(&client, &current, &settings)
        .await
        .unwrap();
    let refused = host(&api, "host-0").await.status.unwrap();
    assert_eq!(refused.state, Some(HostState::Error));
    let error = refused.last_error.unwrap_or_default();
    assert!(
        error.contains("metal-control-plane-0-user-data")
            && error.contains("userDataSecretRef")
            && error.contains("not powered on"),
        "{error}"
    );
    assert!(refused.provisioning.unwrap().booted_at.is_none());
    let redfish = sushy.redfish(0);
    assert!(!redfish.virtual_cd().await.unwrap().inserted, "not booted");
    assert_eq!(
        redfish.system().await.unwrap().power_state.as_deref(),
        Some("Off")
    );

    // A provider that stopped right after its claim: Secret and claim written, nothing done on the BMC.
    let secret = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": { "name": "metal-control-plane-0-user-data" },
                "stringData": { USER_DATA_KEY: user_data_of(0) },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let secret_ref = UserDataSecretRef {
        name: secret.name_any(),
        uid: secret.uid().unwrap(),
    };
    let mut claimed = host(&api, "host-0").await;
    claimed
        .status
        .as_mut()
        .unwrap()
        .provisioning
        .as_mut()
        .unwrap()
        .user_data_secret_ref = Some(secret_ref.clone());
    api.replace_status("host-0", &Default::default(), &claimed)
        .await
        .unwrap();

    eventually("host booted and Provisioned", POWER_WAIT, || async {
        let current = api.get("host-0").await.map_err(|e| e.to_string())?;
        slipway_provider_baremetal::reconcile_host_with(&client, &current, &settings)
            .await
            .map_err(|e| e.to_string())?;
        let current = api.get("host-0").await.map_err(|e| e.to_string())?;
        (state(&current) == Some(HostState::Provisioned))
            .then_some(())
            .ok_or(format!("{:?}", current.status))
    })
    .await;
    let cd = redfish.virtual_cd().await.unwrap();
    assert_eq!(
        (cd.inserted, cd.image.as_deref()),
        (true, Some(image.url.as_str()))
    );

    // A release that stopped after marking the host: the controller powers it off, ejects, and frees it.
    let mut releasing = host(&api, "host-0").await;
    releasing.status.as_mut().unwrap().state = Some(HostState::Deprovisioning);
    api.replace_status("host-0", &Default::default(), &releasing)
        .await
        .unwrap();
    eventually("host released and Available", POWER_WAIT, || async {
        let current = api.get("host-0").await.map_err(|e| e.to_string())?;
        slipway_provider_baremetal::reconcile_host_with(&client, &current, &settings)
            .await
            .map_err(|e| e.to_string())?;
        let current = api.get("host-0").await.map_err(|e| e.to_string())?;
        (state(&current) == Some(HostState::Available))
            .then_some(current)
            .ok_or("still releasing".to_string())
    })
    .await;
    let freed = host(&api, "host-0").await.status.unwrap();
    assert_eq!((freed.consumer_ref, freed.provisioning), (None, None));
    assert_eq!(freed.power_state.as_deref(), Some("Off"));
    assert!(!redfish.virtual_cd().await.unwrap().inserted);
    // The claim is gone, and the Secret it named after it.
    assert!(
        secrets.get_opt(&secret_ref.name).await.unwrap().is_none(),
        "user data Secret deleted with the release"
    );
}

#[tokio::test]
async fn user_data_no_claim_names_is_swept_and_old_annotations_are_removed() {
    let sushy = Sushy::start(2, true).await;
    let image = ImageServer::start().await;
    let (client, namespace) = support::namespace("bmh-sweep").await;
    support::create_hosts(&client, &namespace, &sushy, 2).await;
    support::register_all(&client, &namespace).await;
    let provider = BareMetalProvider::with_options(client.clone(), support::fast_redfish());
    let cluster = support::cluster(&namespace, "sweep", &image.url);
    let api: Api<BareMetalHost> = Api::namespaced(client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);

    // One machine holds a host; another's Secret was written by a call cut short before its claim, and a third's
    // stayed behind a release cut short after the claim was dropped: written the way the provider writes them.
    let kept = provider
        .create_machine(&cluster, &request(&cluster, pool("md-0"), 0))
        .await
        .unwrap();
    let orphan = |index: usize| {
        let request = request(&cluster, pool("md-0"), index);
        serde_json::json!({
            "metadata": {
                "name": user_data::secret_name(&request.name),
                "labels": {
                    user_data::USER_DATA_LABEL: "true",
                    user_data::MACHINE_GROUP_LABEL: "md-0",
                    "cluster.x-k8s.io/cluster-name": "sweep",
                },
            },
            "stringData": { USER_DATA_KEY: user_data_of(index) },
        })
    };
    for index in [1, 2] {
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(orphan(index)).unwrap(),
            )
            .await
            .unwrap();
    }
    // Another group's orphan is left to that group's own pass.
    let mut other_group = orphan(3);
    other_group["metadata"]["labels"][user_data::MACHINE_GROUP_LABEL] = "md-1".into();
    other_group["metadata"]["name"] = "sweep-md-1-3-user-data".into();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(other_group).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(user_data_secrets(&client, &namespace).await.len(), 4);

    // Listing the group sweeps what no claim names, and keeps the claimed machine's Secret.
    let listed = provider
        .list_machines(&cluster, &pool("md-0"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        user_data_secrets(&client, &namespace).await,
        BTreeSet::from([
            user_data::secret_name(&kept.name),
            "sweep-md-1-3-user-data".to_string()
        ])
    );
    let held = api
        .list(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .find(|h| {
            h.status
                .as_ref()
                .and_then(|s| s.consumer_ref.as_ref())
                .is_some()
        })
        .unwrap();
    assert_eq!(claimed_user_data(&client, &held).await, user_data_of(0));

    // A host written by an earlier version, with user data in an annotation: the host controller removes it.
    let free = api
        .list(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .find(|h| h.name_any() != held.name_any())
        .unwrap();
    api.patch(
        &free.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({
            "metadata": { "annotations": { LEGACY_USER_DATA_ANNOTATION: user_data_of(9) } }
        })),
    )
    .await
    .unwrap();
    let annotated = host(&api, &free.name_any()).await;
    slipway_provider_baremetal::reconcile_host_with(
        &client,
        &annotated,
        &support::controller_settings(&namespace),
    )
    .await
    .unwrap();
    let cleaned = host(&api, &free.name_any()).await;
    assert!(
        !cleaned
            .annotations()
            .contains_key(LEGACY_USER_DATA_ANNOTATION),
        "{:?}",
        cleaned.annotations()
    );
    assert_no_user_data_on(&cleaned);

    // Deleting the cluster once it holds no host sweeps every group's leftovers.
    eventually("the machine is released", POWER_WAIT, || async {
        match provider
            .delete_machine(&cluster, &pool("md-0"), &kept.name)
            .await
        {
            Ok(Deletion::Done) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        user_data_secrets(&client, &namespace).await,
        BTreeSet::from(["sweep-md-1-3-user-data".to_string()])
    );
    assert_eq!(
        provider.delete_cluster(&cluster).await.unwrap(),
        Deletion::Done
    );
    assert!(user_data_secrets(&client, &namespace).await.is_empty());
}

#[tokio::test]
async fn the_config_drive_is_inserted_served_while_provisioning_and_refused_after() {
    let sushy = Sushy::start(2, true).await;
    let image = ImageServer::start().await;
    let (client, namespace) = support::namespace("bmh-drive").await;
    support::create_hosts(&client, &namespace, &sushy, 2).await;
    support::register_all(&client, &namespace).await;
    let drives = support::DriveServer::start(&client).await;
    let provider = BareMetalProvider::with_options(client.clone(), support::fast_redfish())
        .with_config_drive(drives.settings.clone());
    let cluster = support::cluster(&namespace, "metal", &image.url);
    let api: Api<BareMetalHost> = Api::namespaced(client.clone(), &namespace);

    // The provider ID the kubelet registers comes from the config drive's instance id.
    assert_eq!(
        provider.provider_id_from_instance_data(),
        Some("{{ v1.instance_id }}")
    );
    let machine = provider
        .create_machine(&cluster, &request(&cluster, MachineRole::ControlPlane, 0))
        .await
        .unwrap();
    let host_name = machine.provider_id.rsplit('/').next().unwrap().to_string();
    let index: usize = host_name.trim_start_matches("host-").parse().unwrap();
    let claimed = host(&api, &host_name).await;
    let user_data = claimed_user_data(&client, &claimed).await;
    let secret_name = user_data::secret_name(&machine.name);
    let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
        .get(&secret_name)
        .await
        .unwrap();
    let token = String::from_utf8(secret.data.unwrap()[config_drive::TOKEN_KEY].0.clone()).unwrap();
    assert_eq!(token.len(), 64, "{secret_name}: a 32-byte token in hex");
    // The token lives in the user data Secret only.
    assert_no_user_data_on(&claimed);
    let visible = serde_json::to_string(&claimed).unwrap();
    assert!(
        !visible.contains(&token),
        "the token shows on the host: {visible}"
    );

    // The installer image on the CD, the config drive on the removable disk. sushy marks a medium inserted only
    // once it has downloaded it, so both were fetched.
    let redfish = sushy.redfish(index);
    let cd = redfish.virtual_cd().await.unwrap();
    assert!(cd.inserted);
    assert_eq!(cd.image.as_deref(), Some(image.url.as_str()));
    let drive = redfish
        .config_drive_media()
        .await
        .unwrap()
        .expect("sushy has a second virtual media device");
    assert!(
        drive.media_types.iter().any(|t| t == "USBStick"),
        "{drive:?}"
    );
    assert!(
        drive.inserted,
        "the config drive was downloaded and inserted"
    );
    let url = drive.image.clone().unwrap();
    assert_eq!(url, drives.settings.url(&namespace, &host_name, &token));

    // The image, read back as a host reads it: ISO 9660 labelled cidata, where cloud-init's NoCloud reader finds
    // the machine's user data, its provider ID as instance id, and its name as host name.
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .no_proxy()
        .build()
        .unwrap();
    let get = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap() }
    };
    let served = get(url.clone()).await;
    assert_eq!(served.status(), 200);
    let seed = support::read_config_drive(&served.bytes().await.unwrap());
    assert_eq!(
        (seed.label.as_str(), seed.filesystem.as_str()),
        ("cidata", "iso9660")
    );
    assert_eq!(seed.user_data, user_data);
    assert_eq!(seed.meta_data["instance-id"], machine.provider_id.as_str());
    assert_eq!(seed.meta_data["local-hostname"], machine.name.as_str());
    // cloud-init makes the meta-data's instance id its v1.instance_id, from which the user data's first step
    // renders the kubelet's provider ID: the one the provider lists.
    assert_eq!(
        support::cloud_init_query(
            &seed.meta_data["instance-id"],
            provider.provider_id_from_instance_data().unwrap()
        ),
        machine.provider_id
    );

    // Another token, another host, or a token that is not one: nothing, and the same answer for each.
    let other_host = format!("host-{}", 1 - index);
    let other_token = "0".repeat(64);
    for wrong in [
        drives.settings.url(&namespace, &host_name, &other_token),
        drives.settings.url(&namespace, &other_host, &token),
        drives
            .settings
            .url(&namespace, &host_name, &token.to_uppercase()),
        drives.settings.url("default", &host_name, &token),
        url.replace("cidata.iso", "user-data"),
    ] {
        assert_eq!(get(wrong.clone()).await.status(), 404, "{wrong}");
    }

    // Provisioned (booted and on, as the host controller sees it): the URL no longer serves.
    let settings = support::controller_settings(&namespace);
    eventually("the host Provisioned", POWER_WAIT, || async {
        let current = host(&api, &host_name).await;
        slipway_provider_baremetal::reconcile_host_with(&client, &current, &settings)
            .await
            .map_err(|e| e.to_string())?;
        let state = state(&host(&api, &host_name).await);
        (state == Some(HostState::Provisioned))
            .then_some(())
            .ok_or(format!("{state:?}"))
    })
    .await;
    assert_eq!(get(url.clone()).await.status(), 404);

    // Released: both media ejected, and the Secret with its token gone.
    eventually("the machine released", POWER_WAIT, || async {
        match provider
            .delete_machine(&cluster, &MachineRole::ControlPlane, &machine.name)
            .await
            .map_err(|e| e.to_string())?
        {
            Deletion::Done => Ok(()),
            Deletion::InProgress(message) => Err(message),
        }
    })
    .await;
    for device in redfish.virtual_media().await.unwrap() {
        assert!(
            !device.inserted && device.image.is_none(),
            "ejected: {device:?}"
        );
    }
    assert!(user_data_secrets(&client, &namespace).await.is_empty());
    assert_eq!(get(url).await.status(), 404);
}
