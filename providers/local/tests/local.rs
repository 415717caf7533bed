//! A local workload cluster: real processes, certificates from the cluster's own CA, kwok nodes as machines, and
//! state that survives the provider (the manager) going away.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use slipway_api::{InfrastructureSpec, LocalSettings, MachinePhase, MachineSettings};
use slipway_bootstrap::cloud_init::{ClusterNetwork, NodeSettings, kubeadm_init, kubeadm_join};
use slipway_bootstrap::{BootstrapToken, ClusterPki};
use slipway_provider::{
    ClusterInfo, Deletion, InfrastructureProvider, MachineRequest, MachineRole,
};
use slipway_provider_local::LocalProvider;
use slipway_testenv::eventually;

fn cluster(state: &std::path::Path) -> ClusterInfo {
    ClusterInfo {
        namespace: "team-a".into(),
        name: "dev".into(),
        uid: "uid-1".into(),
        kubernetes_version: "v1.37.2".into(),
        infrastructure: InfrastructureSpec {
            local: Some(LocalSettings {
                state_dir: Some(state.display().to_string()),
            }),
            ..Default::default()
        },
    }
}

fn request(name: &str, role: MachineRole, user_data: Option<String>) -> MachineRequest {
    MachineRequest {
        name: name.into(),
        role,
        settings: MachineSettings::default(),
        kubernetes_version: "v1.37.2".into(),
        template_hash: "abc1234".into(),
        user_data,
    }
}

/// A member's processes, with pid files in `<cluster>/members/<machine>/run/`.
const MEMBER_COMPONENTS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// How long a local machine or process may take to get where a test waits for it.
const WAIT: Duration = Duration::from_secs(60);

fn pid_of(dir: &std::path::Path, component: &str) -> u32 {
    std::fs::read_to_string(dir.join("run").join(format!("{component}.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test]
async fn local_cluster_runs_survives_a_new_provider_and_is_removed_on_delete() {
    slipway_testenv::install_crypto_provider();
    // Kept until the test binary exits (not removed while a failing test unwinds), so that the cluster's processes,
    // which outlive a provider on purpose, can still be found by their pid files and killed at exit.
    let state = tempfile::tempdir().unwrap().keep();
    slipway_testenv::process::kill_pid_files_at_exit(&state);
    slipway_testenv::process::remove_dir_at_exit(&state);
    let bin = slipway_testenv::bin_dir();
    let cluster = cluster(state.as_path());
    let dir = state.as_path().join("team-a").join("dev");
    let member = dir.join("members").join("dev-cp-0");

    let provider = LocalProvider::new(state.as_path(), &bin);
    let infrastructure = provider.reconcile_cluster(&cluster).await.unwrap();
    let (host, port) = infrastructure.endpoint.clone().unwrap();
    assert_eq!(host, "127.0.0.1");
    assert!(infrastructure.workload_api);

    let pki = ClusterPki::generate("dev").unwrap();
    let network = ClusterNetwork {
        cluster_name: "dev".into(),
        kubernetes_version: "v1.37.2".into(),
        endpoint: format!("{host}:{port}"),
        pod_cidr: "10.244.0.0/16".into(),
        service_cidr: "10.96.0.0/12".into(),
        dns_domain: "cluster.local".into(),
    };
    let token = BootstrapToken::generate(Timestamp::now());
    let user_data = kubeadm_init(&network, &pki, &token, &NodeSettings::default()).unwrap();
    provider
        .create_machine(
            &cluster,
            &request(
                "dev-cp-0",
                MachineRole::ControlPlane,
                Some(user_data.clone()),
            ),
        )
        .await
        .unwrap();
    eventually("control plane ready", WAIT, || async {
        let machines = provider
            .list_machines(&cluster, &MachineRole::ControlPlane)
            .await
            .unwrap();
        (machines.len() == 1 && machines[0].ready)
            .then_some(())
            .ok_or(format!("{machines:?}"))
    })
    .await;

    // The cluster's own CA: a kubeconfig made from it (as the controller makes `<cluster>-kubeconfig`) works.
    let kubeconfig = slipway_bootstrap::kubeconfig::admin_kubeconfig(
        "dev",
        &format!("https://{host}:{port}"),
        &pki.ca,
        Timestamp::now(),
    )
    .unwrap();
    let kubeconfig_path = state.as_path().join("user.kubeconfig");
    std::fs::write(&kubeconfig_path, &kubeconfig.yaml).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig_path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();

    // Like `kubeadm init`, the control plane created the bootstrap token of its init configuration.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    let created = secrets
        .get(&format!("bootstrap-token-{}", token.id))
        .await
        .expect("the init token exists in the workload cluster");
    assert_eq!(
        created.type_.as_deref(),
        Some("bootstrap.kubernetes.io/token")
    );
    assert!(
        !dir.join("init-tokens.json").exists(),
        "the init tokens are not kept once created"
    );

    let pool = MachineRole::Worker {
        pool: "dev-workers".into(),
    };
    let ca_hash = pki.ca.public_key_hash().unwrap();
    let join = |token: &BootstrapToken, ca_hash: &str| {
        Some(kubeadm_join(&network, ca_hash, token, &NodeSettings::default()).unwrap())
    };

    // A worker whose token the cluster does not know is not let in (and no Node appears for it)...
    let stranger = BootstrapToken::generate(Timestamp::now());
    let refused = provider
        .create_machine(
            &cluster,
            &request("dev-workers-9", pool.clone(), join(&stranger, &ca_hash)),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.reason(), "JoinTokenRejected", "{refused}");
    assert!(refused.is_retryable(), "a fresh token may be published yet");
    // ...nor one that pins another cluster's CA.
    let other_ca = ClusterPki::generate("other")
        .unwrap()
        .ca
        .public_key_hash()
        .unwrap();
    let mismatch = provider
        .create_machine(
            &cluster,
            &request("dev-workers-9", pool.clone(), join(&token, &other_ca)),
        )
        .await
        .unwrap_err();
    assert_eq!(mismatch.reason(), "CaHashMismatch", "{mismatch}");
    let nodes: Api<Node> = Api::all(client.clone());
    assert!(nodes.get_opt("dev-workers-9").await.unwrap().is_none());
    // A worker without join data cannot boot at all.
    let bare = provider
        .create_machine(&cluster, &request("dev-workers-9", pool.clone(), None))
        .await
        .unwrap_err();
    assert_eq!(bare.reason(), "InvalidUserData", "{bare}");

    for i in 0..3 {
        provider
            .create_machine(
                &cluster,
                &request(
                    &format!("dev-workers-{i}"),
                    pool.clone(),
                    join(&token, &ca_hash),
                ),
            )
            .await
            .unwrap();
    }
    eventually("3 ready worker machines", WAIT, || async {
        let machines = provider.list_machines(&cluster, &pool).await.unwrap();
        let ready = machines.len() == 3
            && machines
                .iter()
                .all(|m| m.ready && m.phase == MachinePhase::Running);
        ready.then_some(()).ok_or(format!("{machines:?}"))
    })
    .await;
    let node = nodes.get("dev-workers-1").await.unwrap();
    assert_eq!(
        node.spec.unwrap().provider_id.as_deref(),
        Some("local://team-a/dev/dev-workers-1")
    );

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let keep = ConfigMap {
        metadata: ObjectMeta {
            name: Some("survivor".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    config_maps
        .create(&PostParams::default(), &keep)
        .await
        .unwrap();

    // The manager goes away: its processes stay, and a new provider adopts them.
    let apiserver = pid_of(&member, "kube-apiserver");
    let haproxy = pid_of(&dir, "haproxy");
    drop(provider);
    assert!(alive(apiserver), "the apiserver died with the provider");
    let provider = LocalProvider::new(state.as_path(), &bin);
    provider.reconcile_cluster(&cluster).await.unwrap();
    assert_eq!(
        pid_of(&member, "kube-apiserver"),
        apiserver,
        "a live apiserver was restarted instead of adopted"
    );
    assert_eq!(
        pid_of(&dir, "haproxy"),
        haproxy,
        "a live load balancer on an unchanged configuration was restarted"
    );

    // A dead etcd is restarted on the same data directory: nothing is lost.
    let etcd = pid_of(&member, "etcd");
    std::process::Command::new("kill")
        .args(["-KILL", &etcd.to_string()])
        .status()
        .unwrap();
    eventually("etcd gone", WAIT, || async {
        (!alive(etcd))
            .then_some(())
            .ok_or(format!("pid {etcd} alive"))
    })
    .await;
    provider.reconcile_cluster(&cluster).await.unwrap();
    assert_ne!(pid_of(&member, "etcd"), etcd);
    eventually("the ConfigMap readable again", WAIT, || async {
        match config_maps.get_opt("survivor").await {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        provider.list_machines(&cluster, &pool).await.unwrap().len(),
        3
    );

    // Scale down one worker; then delete the cluster.
    assert_eq!(
        provider
            .delete_machine(&cluster, &pool, "dev-workers-2")
            .await
            .unwrap(),
        Deletion::Done
    );
    eventually("2 workers", WAIT, || async {
        let machines = provider.list_machines(&cluster, &pool).await.unwrap();
        (machines.len() == 2)
            .then_some(())
            .ok_or(format!("{machines:?}"))
    })
    .await;
    let pids: Vec<u32> = MEMBER_COMPONENTS
        .iter()
        .map(|c| pid_of(&member, c))
        .collect();
    let cluster_pids = [pid_of(&dir, "kwok"), pid_of(&dir, "haproxy")];
    // While the control plane stops, a process that is still alive keeps its pid file: a manager killed at any
    // moment of the stop leaves nothing running that the next one cannot find (and would start a second set
    // beside). Watched from a thread of its own, since the stop blocks this one.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        let member = member.clone();
        let components: Vec<(&str, u32)> = MEMBER_COMPONENTS
            .iter()
            .copied()
            .zip(pids.clone())
            .collect();
        std::thread::spawn(move || {
            let mut untracked = std::collections::BTreeSet::new();
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                for (component, pid) in &components {
                    let file = member.join("run").join(format!("{component}.pid"));
                    if !file.exists() && alive(*pid) {
                        untracked.insert(format!("{component} ({pid})"));
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            untracked
        })
    };
    provider
        .delete_machine(&cluster, &MachineRole::ControlPlane, "dev-cp-0")
        .await
        .unwrap();
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    let untracked = watcher.join().unwrap();
    assert!(
        untracked.is_empty(),
        "alive without a pid file while stopping: {untracked:?}"
    );
    assert_eq!(
        provider.delete_cluster(&cluster).await.unwrap(),
        Deletion::Done
    );
    for pid in pids.into_iter().chain(cluster_pids) {
        assert!(!alive(pid), "process {pid} outlived its cluster");
    }
    assert!(!dir.exists(), "{} not removed", dir.display());
}

#[tokio::test]
async fn missing_binaries_are_a_permanent_error_naming_the_command() {
    let state = tempfile::tempdir().unwrap();
    let provider = LocalProvider::new(state.path(), state.path().join("no-such-bin"));
    let error = provider
        .reconcile_cluster(&cluster(state.path()))
        .await
        .unwrap_err();
    assert!(!error.is_retryable());
    assert_eq!(error.reason(), "BinariesMissing");
    assert!(error.to_string().contains("hack/build-k8s.sh"), "{error}");
}
