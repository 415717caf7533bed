//! The baremetal provider and host controller against sushy-tools' Redfish emulator (fake driver) and a real
//! kube-apiserver: registration, claiming and booting, capacity, release, credentials and TLS failures, and
//! claims racing for the same hosts.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use kube::{Api, ResourceExt};
use slipway_api::{BareMetalHost, HostState, MachineSettings};
use slipway_provider::{
    ClusterInfo, Deletion, InfrastructureProvider, MachineRequest, MachineRole, ProviderError,
};
use slipway_provider_baremetal::host_controller;
use slipway_provider_baremetal::{BareMetalProvider, USER_DATA_ANNOTATION};
use support::{ImageServer, PASSWORD, Sushy, eventually, state};

const POWER_WAIT: Duration = Duration::from_secs(40);

fn request(cluster: &ClusterInfo, role: MachineRole, index: usize) -> MachineRequest {
    MachineRequest {
        name: format!("{}-{}-{index}", cluster.name, role.group()),
        role,
        settings: MachineSettings::default(),
        kubernetes_version: "v1.37.2".into(),
        template_hash: "hash-1".into(),
        user_data: Some(format!("#cloud-config\n# machine {index}\n")),
    }
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

    let hosts = eventually(Duration::from_secs(60), "6 hosts Available", || async {
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
        eventually(POWER_WAIT, &format!("{name} powered on"), || async {
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
        assert!(host.annotations()[USER_DATA_ANNOTATION].starts_with("#cloud-config"));
    }
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
    eventually(POWER_WAIT, "deleting the machine finishes", || async {
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
    assert!(!released.annotations().contains_key(USER_DATA_ANNOTATION));
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

    let error = eventually(Duration::from_secs(30), "host in Error", || async {
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
    eventually(Duration::from_secs(30), "host recovers", || async {
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
                Duration::from_secs(30),
                &format!("{name} {want:?}"),
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

    // A provider that stopped right after its claim: consumer written, nothing done on the BMC.
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
    });
    api.replace_status("host-0", &Default::default(), &claimed)
        .await
        .unwrap();

    let redfish = sushy.redfish(0);
    eventually(POWER_WAIT, "host booted and Provisioned", || async {
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
    eventually(POWER_WAIT, "host released and Available", || async {
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
}
