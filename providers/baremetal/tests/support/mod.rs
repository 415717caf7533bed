//! Real parts for the baremetal provider's tests: sushy-tools' Redfish emulator (one per test, made by
//! hack/sushy.sh), a loopback HTTP server with the installer image it downloads, and BareMetalHosts in a
//! namespace of the shared testenv apiserver.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions::is_crd_established};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use slipway_api::{
    BareMetalHost, BareMetalHostSpec, BareMetalSettings, BmcDetails, HostState, InfrastructureSpec,
    SecretRef,
};
use slipway_provider::ClusterInfo;
use slipway_provider_baremetal::redfish::{
    BmcAddress, ClientOptions, Credentials, RedfishClient, RetryPolicy,
};
use slipway_provider_baremetal::{HostControllerSettings, reconcile_host_with};
use slipway_testenv::TestEnv;

pub const USERNAME: &str = "admin";
pub const PASSWORD: &str = "sushy-test-Pa55";
pub const ISO_PATH: &str = "/images/installer.iso";

pub fn init() {
    slipway_testenv::install_crypto_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "slipway_provider_baremetal=info".into()),
        )
        .with_test_writer()
        .try_init();
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Quick retries and short timeouts: the emulator is local, and tests wait for outcomes themselves.
pub fn fast_redfish() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
            max_retries: 3,
        },
        task_poll_interval: Duration::from_millis(200),
        egress: loopback_egress(),
        ..ClientOptions::default()
    }
}

/// sushy-tools and the test servers listen on loopback, which the default egress policy refuses: allowed here
/// as `slipway manager --allow-egress 127.0.0.0/8` allows it.
pub fn loopback_egress() -> slipway_egress::EgressPolicy {
    slipway_egress::EgressPolicy::allowing([slipway_egress::parse_cidr("127.0.0.0/8").unwrap()])
}

pub fn controller_settings(namespace: &str) -> HostControllerSettings {
    HostControllerSettings {
        namespace: Some(namespace.to_string()),
        error_requeue: Duration::from_secs(1),
        provisioning_poll: Duration::from_secs(1),
        resync: Duration::from_secs(3),
        concurrency: 8,
        redfish: fast_redfish(),
        ..HostControllerSettings::default()
    }
}

/// A sushy-emulator with `systems` fake systems on a free loopback port, killed on drop.
pub struct Sushy {
    child: Child,
    pub port: u16,
    pub tls: bool,
    dir: tempfile::TempDir,
}

impl Sushy {
    pub async fn start(systems: usize, tls: bool) -> Self {
        init();
        let dir = tempfile::tempdir().unwrap();
        let port = slipway_testenv::free_port().unwrap();
        let script = repo_root().join("hack/sushy.sh");
        let mut prepare = Command::new("bash");
        prepare
            .arg(&script)
            .arg("--prepare")
            .arg(dir.path().join("sushy"))
            .args([
                "--port",
                &port.to_string(),
                "--systems",
                &systems.to_string(),
            ])
            .env("SUSHY_USERNAME", USERNAME)
            .env("SUSHY_PASSWORD", PASSWORD);
        if !tls {
            prepare.arg("--no-tls");
        }
        let out = prepare
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "hack/sushy.sh --prepare failed; run it by hand to see why:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let cache = std::env::var_os("SLIPWAY_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/slipway")
            });
        let emulator = cache.join("sushy-venv/bin/sushy-emulator");
        let log = std::fs::File::create(dir.path().join("sushy.log")).unwrap();
        let child = Command::new(&emulator)
            .arg("--config")
            .arg(&config)
            // The emulator downloads virtual media from our loopback server: never through a proxy.
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", emulator.display()));
        let mut sushy = Self {
            child,
            port,
            tls,
            dir,
        };
        let probe = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if probe
                .get(format!("{}/redfish/v1/", sushy.origin()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return sushy;
            }
            if let Ok(Some(status)) = sushy.child.try_wait() {
                panic!(
                    "sushy-emulator exited with {status} before answering:\n{}",
                    sushy.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sushy-emulator did not answer on {} within 60 s:\n{}",
                sushy.origin(),
                sushy.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sushy.log")).unwrap_or_default()
    }

    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The UUID hack/sushy.sh gives system `index`.
    pub fn system_id(index: usize) -> String {
        format!("00000000-0000-4000-8000-{index:012x}")
    }

    /// `spec.bmc.address` of system `index`.
    pub fn address(&self, index: usize) -> String {
        format!(
            "redfish+{}/redfish/v1/Systems/{}",
            self.origin(),
            Self::system_id(index)
        )
    }

    /// A client of system `index` that trusts the emulator's certificate, to look at what the provider did.
    pub fn redfish(&self, index: usize) -> RedfishClient {
        RedfishClient::new(
            BmcAddress::parse(&self.address(index)).unwrap(),
            Credentials::new(USERNAME, PASSWORD),
            ClientOptions {
                disable_certificate_verification: true,
                ..fast_redfish()
            },
        )
        .unwrap()
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback HTTP server with a small installer image, counting downloads.
pub struct ImageServer {
    pub url: String,
    pub downloads: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ImageServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let downloads = Arc::new(AtomicU64::new(0));
        let counter = downloads.clone();
        let app = axum::Router::new().route(
            ISO_PATH,
            axum::routing::get(move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    // Not a bootable ISO: the fake driver only stores what it downloaded.
                    vec![0x42u8; 64 * 1024]
                }
            }),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://{addr}{ISO_PATH}"),
            downloads,
            task,
        }
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The manager's config drive server on a loopback port with a self-signed certificate, stopped on drop.
pub struct DriveServer {
    pub settings: slipway_provider_baremetal::ConfigDriveSettings,
    task: tokio::task::JoinHandle<()>,
}

impl DriveServer {
    pub async fn start(client: &Client) -> Self {
        use slipway_provider_baremetal::config_drive::{Server, ServerTls};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tls = ServerTls::self_signed(vec!["127.0.0.1".into()]).unwrap();
        let server = Server::new(listener, tls).await.unwrap();
        let client = client.clone();
        let task = tokio::spawn(async move {
            server.run(client, std::future::pending()).await.unwrap();
        });
        Self {
            settings: slipway_provider_baremetal::ConfigDriveSettings::new(&format!(
                "https://127.0.0.1:{port}"
            ))
            .unwrap(),
            task,
        }
    }
}

impl Drop for DriveServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a host finds on a config drive image.
#[derive(Debug)]
pub struct Seed {
    /// The filesystem label, as `blkid` reads it.
    pub label: String,
    /// The filesystem type, as `blkid` reads it.
    pub filesystem: String,
    pub user_data: String,
    /// meta-data as cloud-init parses it.
    pub meta_data: serde_json::Value,
}

/// Reads a config drive image with other people's tools: util-linux's `blkid` for the label, xorriso to unpack it,
/// and cloud-init's own NoCloud seed reader (`cloudinit.util.read_seeded`) for user-data and meta-data.
pub fn read_config_drive(image: &[u8]) -> Seed {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("cidata.iso");
    std::fs::write(&iso, image).unwrap();
    let run = |program: &str, args: &[&std::ffi::OsStr]| -> String {
        let out = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program} (hack/test.sh installs it): {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let probe = |tag: &str| {
        run(
            "blkid",
            &[
                "-p".as_ref(),
                "-o".as_ref(),
                "value".as_ref(),
                "-s".as_ref(),
                tag.as_ref(),
                iso.as_os_str(),
            ],
        )
        .trim()
        .to_string()
    };
    let (label, filesystem) = (probe("LABEL"), probe("TYPE"));
    let seed = dir.path().join("seed");
    run(
        "xorriso",
        &[
            "-osirrox".as_ref(),
            "on".as_ref(),
            "-indev".as_ref(),
            iso.as_os_str(),
            "-extract".as_ref(),
            "/".as_ref(),
            seed.as_os_str(),
        ],
    );
    // Debian's python3, where the cloud-init package installs its modules.
    let script = "import json, sys\nfrom cloudinit import util\nseeded = util.read_seeded('file://' + sys.argv[1] + '/')\nud = seeded[1]\nprint(json.dumps({'meta': seeded[0], 'user': ud.decode() if isinstance(ud, bytes) else ud}))";
    let read = run(
        "/usr/bin/python3",
        &["-c".as_ref(), script.as_ref(), seed.as_os_str()],
    );
    let read: serde_json::Value = serde_json::from_str(&read).unwrap();
    Seed {
        label,
        filesystem,
        user_data: read["user"].as_str().unwrap_or_default().to_string(),
        meta_data: read["meta"].clone(),
    }
}

/// What `cloud-init query --format FORMAT` prints on a host whose instance id is `instance_id`.
pub fn cloud_init_query(instance_id: &serde_json::Value, format: &str) -> String {
    let instance =
        serde_json::json!({ "v1": { "instance_id": instance_id, "cloud_name": "nocloud" } });
    slipway_testenv::cloud_init_query(&instance, format)
}

/// A namespace on the shared apiserver with the BareMetalHost CRD installed.
pub async fn namespace(prefix: &str) -> (Client, String) {
    init();
    let env = TestEnv::shared().await;
    let client = env.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = BareMetalHost::crd();
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply("slipway").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(crds, &name, is_crd_established()),
    )
    .await
    .expect("BareMetalHost CRD established within 60 s")
    .unwrap();
    let namespace = env.create_namespace(prefix).await;
    (client, namespace)
}

/// Creates or replaces the credentials Secret `name`.
pub async fn put_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    username: &str,
    password: &str,
) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (
                "username".to_string(),
                ByteString(username.as_bytes().to_vec()),
            ),
            (
                "password".to_string(),
                ByteString(password.as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply("slipway-test").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
}

/// Creates host `name` for system `index` of `sushy`, labelled `rack=r1`.
pub async fn create_host(
    client: &Client,
    namespace: &str,
    name: &str,
    address: String,
    secret: &str,
    disable_certificate_verification: bool,
) -> BareMetalHost {
    let mut host = BareMetalHost::new(
        name,
        BareMetalHostSpec {
            bmc: BmcDetails {
                address,
                credentials_secret_ref: Some(SecretRef {
                    name: secret.into(),
                }),
                disable_certificate_verification,
            },
            boot_mac_address: None,
        },
    );
    host.metadata.labels = Some(BTreeMap::from([("rack".to_string(), "r1".to_string())]));
    Api::<BareMetalHost>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &host)
        .await
        .unwrap()
}

/// `count` hosts `host-0` … for the emulator's systems, sharing one credentials Secret `bmc`.
pub async fn create_hosts(client: &Client, namespace: &str, sushy: &Sushy, count: usize) {
    put_secret(client, namespace, "bmc", USERNAME, PASSWORD).await;
    for i in 0..count {
        create_host(
            client,
            namespace,
            &format!("host-{i}"),
            sushy.address(i),
            "bmc",
            // The emulator's certificate is self-signed; the TLS test checks verification separately.
            true,
        )
        .await;
    }
}

/// Reconciles every host of the namespace once, as the host controller would, and checks they are Available.
pub async fn register_all(client: &Client, namespace: &str) {
    let api: Api<BareMetalHost> = Api::namespaced(client.clone(), namespace);
    let settings = controller_settings(namespace);
    for host in api.list(&Default::default()).await.unwrap() {
        reconcile_host_with(client, &host, &settings).await.unwrap();
    }
    for host in api.list(&Default::default()).await.unwrap() {
        assert_eq!(
            state(&host),
            Some(HostState::Available),
            "{} after registration: {:?}",
            host.name_any(),
            host.status
        );
    }
}

pub fn state(host: &BareMetalHost) -> Option<HostState> {
    host.status.as_ref().and_then(|s| s.state)
}

pub fn cluster(namespace: &str, name: &str, image_url: &str) -> ClusterInfo {
    ClusterInfo {
        namespace: namespace.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        kubernetes_version: "v1.37.2".into(),
        infrastructure: InfrastructureSpec {
            baremetal: Some(BareMetalSettings {
                host_selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("rack".to_string(), "r1".to_string())])),
                    ..Default::default()
                },
                image_url: image_url.into(),
                control_plane_endpoint: None,
            }),
            ..Default::default()
        },
    }
}
