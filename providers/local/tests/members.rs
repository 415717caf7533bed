//! A local control plane of several members: each its own etcd (joined to the cluster's), apiserver,
//! controller-manager and scheduler, an HAProxy in front. Members join with `kubeadm join --control-plane` data, the
//! API keeps answering through the load balancer while a member is down, and scaling 1→3→5→3→1 keeps the data and
//! the etcd membership right at every step.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use slipway_api::{InfrastructureSpec, LocalSettings, MachineSettings};
use slipway_bootstrap::cloud_init::{
    ClusterNetwork, NodeSettings, kubeadm_init, kubeadm_join_control_plane,
};
use slipway_bootstrap::{BootstrapToken, ClusterPki};
use slipway_provider::{
    ClusterInfo, Deletion, InfrastructureProvider, MachineRequest, MachineRole,
};
use slipway_provider_local::LocalProvider;
use slipway_testenv::eventually;

/// How long a member may take to serve on a busy 2-core machine.
const WAIT: Duration = Duration::from_secs(120);

fn cluster(state: &Path) -> ClusterInfo {
    ClusterInfo {
        namespace: "team-a".into(),
        name: "ha".into(),
        uid: "uid-ha".into(),
        kubernetes_version: "v1.37.2".into(),
        infrastructure: InfrastructureSpec {
            local: Some(LocalSettings {
                state_dir: Some(state.display().to_string()),
            }),
            ..Default::default()
        },
    }
}

fn request(name: &str, user_data: String) -> MachineRequest {
    MachineRequest {
        name: name.into(),
        role: MachineRole::ControlPlane,
        settings: MachineSettings::default(),
        kubernetes_version: "v1.37.2".into(),
        template_hash: "abc1234".into(),
        user_data: Some(user_data),
    }
}

/// The etcd client URL of member `name`, from the member record the provider keeps.
fn etcd_url(dir: &Path, name: &str) -> String {
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("members").join(name).join("member.json")).unwrap(),
    )
    .unwrap();
    format!(
        "http://127.0.0.1:{}",
        record["ports"]["etcd_client"].as_u64().unwrap()
    )
}

/// The member names etcd lists, asked through member `through`'s etcd (v3 JSON gateway).
async fn etcd_members(dir: &Path, through: &str) -> Result<BTreeSet<String>, String> {
    let response = reqwest::Client::new()
        .post(format!("{}/v3/cluster/member/list", etcd_url(dir, through)))
        .body("{}")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    Ok(body["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| m["name"].as_str().unwrap_or("<not started>").to_string())
        .collect())
}

fn names(members: &[&str]) -> BTreeSet<String> {
    members.iter().map(|m| m.to_string()).collect()
}

fn pid_of(dir: &Path, member: &str, component: &str) -> u32 {
    std::fs::read_to_string(
        dir.join("members")
            .join(member)
            .join("run")
            .join(format!("{component}.pid")),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

async fn ready_members(provider: &LocalProvider, cluster: &ClusterInfo) -> Vec<String> {
    provider
        .list_machines(cluster, &MachineRole::ControlPlane)
        .await
        .map(|machines| {
            machines
                .into_iter()
                .filter(|m| m.ready)
                .map(|m| m.name)
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_members_ready(provider: &LocalProvider, cluster: &ClusterInfo, expected: &[&str]) {
    let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    eventually(&format!("members {expected:?} ready"), WAIT, || async {
        let ready = ready_members(provider, cluster).await;
        (ready == expected)
            .then_some(())
            .ok_or(format!("{ready:?}"))
    })
    .await;
}

async fn wait_etcd_members(dir: &Path, through: &str, expected: &[&str]) {
    let expected = names(expected);
    eventually(
        &format!("etcd lists {expected:?} (asked through {through})"),
        WAIT,
        || async {
            let listed = etcd_members(dir, through).await?;
            (listed == expected)
                .then_some(())
                .ok_or(format!("{listed:?}"))
        },
    )
    .await;
}

async fn put(config_maps: &Api<ConfigMap>, name: &str) {
    let object = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    eventually(&format!("ConfigMap {name} written"), WAIT, || async {
        match config_maps.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}

async fn present(config_maps: &Api<ConfigMap>, expected: &[&str]) {
    for name in expected {
        assert!(
            config_maps.get_opt(name).await.unwrap().is_some(),
            "ConfigMap {name} is gone"
        );
    }
}

struct Fixture {
    provider: LocalProvider,
    cluster: ClusterInfo,
    dir: PathBuf,
    network: ClusterNetwork,
    pki: ClusterPki,
    token: BootstrapToken,
}

impl Fixture {
    async fn new() -> Self {
        slipway_testenv::install_crypto_provider();
        // Kept until the test binary exits, so processes outliving a failed test are found by their pid files.
        let state = tempfile::tempdir().unwrap().keep();
        slipway_testenv::process::kill_pid_files_at_exit(&state);
        slipway_testenv::process::remove_dir_at_exit(&state);
        let provider = LocalProvider::new(state.as_path(), slipway_testenv::bin_dir());
        let cluster = cluster(&state);
        let (host, port) = provider
            .reconcile_cluster(&cluster)
            .await
            .unwrap()
            .endpoint
            .unwrap();
        Self {
            provider,
            dir: state.join("team-a").join("ha"),
            network: ClusterNetwork {
                cluster_name: "ha".into(),
                kubernetes_version: "v1.37.2".into(),
                endpoint: format!("{host}:{port}"),
                pod_cidr: "10.244.0.0/16".into(),
                service_cidr: "10.96.0.0/12".into(),
                dns_domain: "cluster.local".into(),
            },
            cluster,
            pki: ClusterPki::generate("ha").unwrap(),
            token: BootstrapToken::generate(Timestamp::now()),
        }
    }

    async fn init(&self, name: &str) {
        let data = kubeadm_init(
            &self.network,
            &self.pki,
            &self.token,
            &NodeSettings::default(),
        )
        .unwrap();
        self.provider
            .create_machine(&self.cluster, &request(name, data))
            .await
            .unwrap();
    }

    async fn join(&self, name: &str) {
        let data = kubeadm_join_control_plane(
            &self.network,
            &self.pki,
            &self.token,
            &NodeSettings::default(),
        )
        .unwrap();
        // As the controller does: a transient refusal (etcd takes an add only once the member added last has been
        // connected a few seconds) is tried again.
        eventually(&format!("{name} created"), WAIT, || async {
            match self
                .provider
                .create_machine(&self.cluster, &request(name, data.clone()))
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.is_retryable() => Err(e.to_string()),
                Err(e) => panic!("{name}: {e}"),
            }
        })
        .await;
    }

    async fn remove(&self, name: &str) {
        assert_eq!(
            self.provider
                .delete_machine(&self.cluster, &MachineRole::ControlPlane, name)
                .await
                .unwrap(),
            Deletion::Done
        );
    }

    /// A client of the cluster's endpoint (the load balancer), with a kubeconfig from the cluster's own CA.
    async fn config_maps(&self) -> Api<ConfigMap> {
        let kubeconfig = slipway_bootstrap::kubeconfig::admin_kubeconfig(
            "ha",
            &format!("https://{}", self.network.endpoint),
            &self.pki.ca,
            Timestamp::now(),
        )
        .unwrap();
        let path = self.dir.join("test.kubeconfig");
        std::fs::write(&path, &kubeconfig.yaml).unwrap();
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        Api::namespaced(kube::Client::try_from(config).unwrap(), "default")
    }
}

#[tokio::test]
async fn three_members_share_one_etcd_and_the_endpoint_survives_a_member_going_down() {
    let f = Fixture::new().await;
    f.init("ha-cp-0").await;
    wait_members_ready(&f.provider, &f.cluster, &["ha-cp-0"]).await;

    // A second kubeadm init is refused: a later member joins.
    let second_init = f
        .provider
        .create_machine(
            &f.cluster,
            &request(
                "ha-cp-9",
                kubeadm_init(&f.network, &f.pki, &f.token, &NodeSettings::default()).unwrap(),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(second_init.reason(), "AlreadyInitialized", "{second_init}");

    f.join("ha-cp-1").await;
    wait_members_ready(&f.provider, &f.cluster, &["ha-cp-0", "ha-cp-1"]).await;
    f.join("ha-cp-2").await;
    wait_members_ready(&f.provider, &f.cluster, &["ha-cp-0", "ha-cp-1", "ha-cp-2"]).await;
    for member in ["ha-cp-0", "ha-cp-1", "ha-cp-2"] {
        wait_etcd_members(&f.dir, member, &["ha-cp-0", "ha-cp-1", "ha-cp-2"]).await;
    }

    let config_maps = f.config_maps().await;
    put(&config_maps, "before").await;

    // ha-cp-1 goes down entirely: the others keep quorum and the endpoint routes around it.
    for component in [
        "kube-apiserver",
        "etcd",
        "kube-scheduler",
        "kube-controller-manager",
    ] {
        let pid = pid_of(&f.dir, "ha-cp-1", component);
        std::process::Command::new("kill")
            .args(["-KILL", &format!("-{pid}")])
            .status()
            .unwrap();
    }
    put(&config_maps, "while-down").await;
    present(&config_maps, &["before", "while-down"]).await;

    // The provider brings the member back on its data directory, and it serves again.
    wait_members_ready(&f.provider, &f.cluster, &["ha-cp-0", "ha-cp-1", "ha-cp-2"]).await;
    wait_etcd_members(&f.dir, "ha-cp-1", &["ha-cp-0", "ha-cp-1", "ha-cp-2"]).await;
    put(&config_maps, "after").await;
    present(&config_maps, &["before", "while-down", "after"]).await;

    assert_eq!(
        f.provider.delete_cluster(&f.cluster).await.unwrap(),
        Deletion::Done
    );
    assert!(!f.dir.exists());
}

#[tokio::test]
async fn one_to_three_to_five_to_three_to_one_keeps_the_data_and_the_etcd_membership_right() {
    let f = Fixture::new().await;
    let mut members: Vec<&str> = vec!["ha-cp-0"];
    f.init("ha-cp-0").await;
    wait_members_ready(&f.provider, &f.cluster, &members).await;
    wait_etcd_members(&f.dir, "ha-cp-0", &members).await;
    let config_maps = f.config_maps().await;
    put(&config_maps, "at-1").await;

    // Up, one member at a time, each once the others are ready, as the controller does.
    for (name, size) in [
        ("ha-cp-1", 2),
        ("ha-cp-2", 3),
        ("ha-cp-3", 4),
        ("ha-cp-4", 5),
    ] {
        f.join(name).await;
        members.push(name);
        wait_members_ready(&f.provider, &f.cluster, &members).await;
        wait_etcd_members(&f.dir, name, &members).await;
        put(&config_maps, &format!("at-{size}")).await;
    }

    // Down to one, the first member (the one that initialised the cluster) among those that go; every member
    // left lists exactly the members left, and the data is there at every step.
    for name in ["ha-cp-0", "ha-cp-3", "ha-cp-4", "ha-cp-2"] {
        f.remove(name).await;
        members.retain(|m| *m != name);
        wait_etcd_members(&f.dir, members[0], &members).await;
        wait_members_ready(&f.provider, &f.cluster, &members).await;
        assert!(!f.dir.join("members").join(name).exists());
        present(&config_maps, &["at-1", "at-2", "at-3", "at-4", "at-5"]).await;
    }
    assert_eq!(members, ["ha-cp-1"]);
    put(&config_maps, "one-again").await;

    assert_eq!(
        f.provider.delete_cluster(&f.cluster).await.unwrap(),
        Deletion::Done
    );
    assert!(!f.dir.exists());
}
