//! slipway-testenv: a real etcd + kube-apiserver for tests, and a *workload* flavour that adds
//! kube-controller-manager, kube-scheduler and kwok with fake nodes, so Deployments really become Available.
//!
//! It is not a fake: every request goes to the real binaries built by `hack/build-k8s.sh`. It is not a production
//! launcher either: certificates are throw-away and etcd runs without fsync.
//!
//! Each environment lives in its own temporary directory on its own free loopback ports, so parallel test binaries
//! never collide. Processes never outlive the test binary; see [`process`] for how.

pub mod addons;
mod binaries;
mod cloud_init;
mod control_plane;
mod error;
mod kubeconfig;
mod pki;
mod ports;
pub mod process;
mod wait;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::OnceCell;

pub use addons::addon_manifest;
pub use binaries::{
    bin_dir, bin_dir_for, binary, cache_dir, kubernetes_version, previous_kubernetes_version,
    previous_minor_bin_dir,
};
pub use cloud_init::cloud_init_query;
pub use error::{Error, Result};
pub use ports::free_port;
use process::Process;
pub use wait::eventually;

/// Installs rustls' aws-lc-rs provider as the process default. kube panics when it cannot pick a provider, so every
/// binary and test calls this before making a client; calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A running control plane. Dropping it stops every process and removes its directory.
pub struct TestEnv {
    server: String,
    kubeconfig: PathBuf,
    // Stopped last-started-first by Drop.
    processes: Vec<Process>,
    // To start the apiserver again after `stop_apiserver`.
    apiserver: Option<(control_plane::Apiserver, pki::Pki)>,
    dir: Option<tempfile::TempDir>,
}

/// How to start a [`TestEnv`].
#[derive(Debug, Clone, Default)]
pub struct Builder {
    workload_nodes: Option<usize>,
    dir: Option<PathBuf>,
}

impl Builder {
    /// The workload flavour: also run kube-controller-manager, kube-scheduler and kwok, with `nodes` fake Nodes.
    pub fn workload(mut self, nodes: usize) -> Self {
        self.workload_nodes = Some(nodes);
        self
    }

    /// Keep state in `dir` instead of a temporary directory that is removed on drop (for long-lived environments
    /// such as the quickstart's management cluster).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    pub async fn start(self) -> Result<TestEnv> {
        install_crypto_provider();
        // A free port can be taken by another process between our probe and the server's bind; start over then.
        let mut last_error = None;
        for _attempt in 0..3 {
            match self.try_start().await {
                Ok(env) => return Ok(env),
                Err(e @ Error::ExitedEarly { .. }) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("three attempts failed"))
    }

    async fn try_start(&self) -> Result<TestEnv> {
        let (dir, temp) = match &self.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                (dir.clone(), None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("slipway-testenv-")
                    .tempdir()?;
                process::remove_dir_at_exit(temp.path());
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let mut env = TestEnv {
            server: String::new(),
            kubeconfig: dir.join("kubeconfig"),
            processes: Vec::new(),
            apiserver: None,
            dir: temp,
        };
        let pki = pki::generate(&dir.join("pki"))?;
        let (server, apiserver) = control_plane::start(&dir, &pki, &mut env.processes).await?;
        env.server = server;
        std::fs::write(
            &env.kubeconfig,
            kubeconfig::admin_kubeconfig(&env.server, &pki)?,
        )?;
        control_plane::wait_ready(&env.kubeconfig, &mut env.processes).await?;
        if let Some(nodes) = self.workload_nodes {
            workload::start(&dir, &pki, &env.kubeconfig, &mut env.processes).await?;
            workload::create_nodes(&env.kubeconfig, nodes, &mut env.processes).await?;
        }
        env.apiserver = Some((apiserver, pki));
        Ok(env)
    }
}

static SHARED: OnceCell<TestEnv> = OnceCell::const_new();
static SHARED_WORKLOAD: OnceCell<TestEnv> = OnceCell::const_new();
static NAMESPACE_COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestEnv {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// etcd + kube-apiserver in a temporary directory.
    pub async fn start() -> Result<TestEnv> {
        Builder::default().start().await
    }

    /// One etcd + kube-apiserver per test binary, started by the first test that asks. Give each test its own
    /// namespace ([`TestEnv::create_namespace`]) and its own client ([`TestEnv::client`]). Panics with the reason
    /// (for example the command that builds missing binaries) when it cannot start.
    pub async fn shared() -> &'static TestEnv {
        SHARED
            .get_or_init(|| async {
                TestEnv::start()
                    .await
                    .unwrap_or_else(|e| panic!("slipway-testenv: {e}"))
            })
            .await
    }

    /// Like [`TestEnv::shared`], in the workload flavour with 3 fake nodes.
    pub async fn shared_workload() -> &'static TestEnv {
        SHARED_WORKLOAD
            .get_or_init(|| async {
                TestEnv::builder()
                    .workload(3)
                    .start()
                    .await
                    .unwrap_or_else(|e| panic!("slipway-testenv: {e}"))
            })
            .await
    }

    /// A new admin client. Each `#[tokio::test]` has its own runtime and a client is bound to the runtime it was
    /// made on, so make one per test rather than sharing one.
    pub async fn client(&self) -> kube::Client {
        kubeconfig::client_from_file(&self.kubeconfig, None)
            .await
            .expect("a client from the testenv's own kubeconfig")
    }

    /// A client that impersonates `user` in `groups` (the admin may impersonate anyone).
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> kube::Client {
        kubeconfig::client_from_file(&self.kubeconfig, Some((user, groups)))
            .await
            .expect("an impersonating client from the testenv's own kubeconfig")
    }

    /// Creates a namespace with a unique name that starts with `prefix`, and returns its name.
    pub async fn create_namespace(&self, prefix: &str) -> String {
        let n = NAMESPACE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix: String = prefix.chars().take(40).collect();
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client().await)
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        name
    }

    /// The apiserver's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The cluster CA's certificate (PEM): what a pod finds in its ServiceAccount's `ca.crt`.
    pub fn ca_pem(&self) -> &str {
        &self
            .apiserver
            .as_ref()
            .expect("the apiserver's PKI lives as long as the TestEnv")
            .1
            .ca
            .cert_pem
    }

    /// The admin kubeconfig file (certificates embedded).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL after 2 s); etcd and everything else keep running.
    pub fn stop_apiserver(&mut self) {
        if let Some(at) = self
            .processes
            .iter()
            .position(|p| p.name() == "kube-apiserver")
        {
            self.processes
                .remove(at)
                .stop(std::time::Duration::from_secs(2));
        }
    }

    /// Starts kube-apiserver again, on the same port and etcd as before, and waits until it is ready.
    pub async fn start_apiserver(&mut self) -> Result<()> {
        let (apiserver, pki) = self
            .apiserver
            .as_ref()
            .expect("a started environment knows how its apiserver was started");
        control_plane::start_apiserver(apiserver, pki, &mut self.processes)?;
        control_plane::wait_ready(&self.kubeconfig, &mut self.processes).await
    }

    /// Moves etcd's revision past everything the apiserver has served and compacts its history up to there, as
    /// etcd's periodic compaction does on a busy cluster. Called while the apiserver is stopped, every watch that
    /// resumes from a resourceVersion it saw before is answered 410 Gone when the apiserver is back, and must list
    /// again. Returns the compacted revision.
    pub async fn compact_etcd(&self) -> Result<i64> {
        let (apiserver, _) = self
            .apiserver
            .as_ref()
            .expect("a started environment knows its etcd");
        let etcd = &apiserver.etcd_url;
        // etcd's JSON gateway takes keys and values base64-encoded.
        let put = serde_json::json!({ "key": "c2xpcHdheS1jb21wYWN0", "value": "MQ==" });
        let answer = etcd_call(etcd, "kv/put", put, "put").await?;
        let revision: i64 = answer["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| Error::Etcd {
                operation: "put",
                message: format!("no header.revision in {answer}"),
            })?;
        let compact = serde_json::json!({ "revision": revision.to_string(), "physical": true });
        etcd_call(etcd, "kv/compaction", compact, "compaction").await?;
        Ok(revision)
    }

    /// The PIDs of every process of this environment, in start order.
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(Process::pid).collect()
    }
}

/// One call to etcd's v3 JSON gateway (`POST <etcd>/v3/<path>`).
async fn etcd_call(
    etcd: &str,
    path: &str,
    body: serde_json::Value,
    operation: &'static str,
) -> Result<serde_json::Value> {
    let failed = |message: String| Error::Etcd { operation, message };
    let response = reqwest::Client::new()
        .post(format!("{etcd}/v3/{path}"))
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| failed(e.to_string()))?;
    if !status.is_success() {
        return Err(failed(format!("{status}: {text}")));
    }
    serde_json::from_str(&text).map_err(|e| failed(format!("{e}: {text}")))
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        while let Some(mut process) = self.processes.pop() {
            process.stop(std::time::Duration::from_secs(2));
        }
        if let Some(dir) = self.dir.take() {
            process::forget_dir(dir.path());
        }
    }
}
