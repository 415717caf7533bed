//! What the manager's integration tests share: a real apiserver with Slipway's CRDs, a manager, and waiting.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use slipway_api::{Cluster, MachinePool};
use slipway_controller::{Metrics, ProviderRegistry, Settings};
use slipway_provider_sim::SimProvider;
use slipway_testenv::TestEnv;
pub use slipway_testenv::eventually;
use tokio::sync::OnceCell;

static CRDS: OnceCell<()> = OnceCell::const_new();

/// The test binary's apiserver, with Slipway's CRDs installed and Established.
pub async fn env() -> &'static TestEnv {
    let env = TestEnv::shared().await;
    CRDS.get_or_init(|| async { install_crds(env.client().await).await })
        .await;
    env
}

pub async fn install_crds(client: Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for crd in slipway_api::crds() {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("slipway-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established in 30s"))
        .unwrap();
    }
}

/// One in-process manager per test binary, with the sim provider, on a runtime of its own: each `#[tokio::test]`
/// has its own runtime, which ends with the test, and the manager must outlive every test.
pub fn manager(env: &'static TestEnv) -> &'static Arc<SimProvider> {
    static MANAGER: OnceLock<Arc<SimProvider>> = OnceLock::new();
    MANAGER.get_or_init(|| {
        let sim = Arc::new(SimProvider::new());
        let provider = sim.clone();
        let settings = Settings {
            // Ready pools list their machines again often, so a machine a test makes fail is noticed soon (and
            // the test that a ready cluster sees no writes covers these listings).
            machine_resync: Duration::from_secs(5),
            ..Settings::default()
        };
        run_manager(
            env,
            |_| ProviderRegistry::new().register(provider),
            settings,
        );
        sim
    })
}

/// Runs the controllers on a runtime and thread of their own until the test binary exits: each `#[tokio::test]`
/// has its own runtime, which ends with the test, and the manager must outlive every test. `providers` gets the
/// manager's client, for providers that read the management cluster.
pub fn run_manager(
    env: &'static TestEnv,
    providers: impl FnOnce(&Client) -> ProviderRegistry + Send + 'static,
    settings: Settings,
) {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let client = env.client().await;
            let providers = providers(&client);
            let metrics = Arc::new(Metrics::new());
            slipway_controller::run(client, providers, metrics, settings, std::future::pending())
                .await;
        });
    });
}

/// Waits until the Cluster is gone from the apiserver (its finalizer done); on timeout, shows its conditions.
pub async fn wait_deleted(client: &Client, namespace: &str, name: &str, timeout: Duration) {
    let api: Api<Cluster> = Api::namespaced(client.clone(), namespace);
    eventually(&format!("Cluster {name} deleted"), timeout, || async {
        match api.get_opt(name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(c) => Err(condition_summary(
                &c.status.map(|s| s.conditions).unwrap_or_default(),
            )),
        }
    })
    .await;
}

/// Server-side applies every document of `yaml` into `namespace`.
pub async fn apply(client: &Client, namespace: &str, yaml: &str) {
    for document in serde_saphyr::from_multiple::<serde_json::Value>(yaml).unwrap() {
        let kind = document["kind"].as_str().unwrap().to_string();
        let name = document["metadata"]["name"].as_str().unwrap().to_string();
        let params = PatchParams::apply("slipway-test").force();
        match kind.as_str() {
            "Cluster" => {
                Api::<Cluster>::namespaced(client.clone(), namespace)
                    .patch(&name, &params, &Patch::Apply(&document))
                    .await
                    .unwrap();
            }
            "MachinePool" => {
                Api::<MachinePool>::namespaced(client.clone(), namespace)
                    .patch(&name, &params, &Patch::Apply(&document))
                    .await
                    .unwrap();
            }
            "AddonBundle" => {
                Api::<slipway_api::AddonBundle>::namespaced(client.clone(), namespace)
                    .patch(&name, &params, &Patch::Apply(&document))
                    .await
                    .unwrap();
            }
            other => panic!("support::apply does not know kind {other}"),
        }
    }
}

/// A sim Cluster with a control plane of `control_plane` and a pool `<name>-workers` of `workers`.
pub fn sim_cluster(name: &str, control_plane: u32, workers: u32, sim_settings: &str) -> String {
    format!(
        r#"apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata:
  name: {name}
spec:
  kubernetes:
    version: v1.37.2
  controlPlane:
    replicas: {control_plane}
  infrastructure:
    sim: {sim_settings}
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

pub fn condition_summary(conditions: &[slipway_api::Condition]) -> String {
    conditions
        .iter()
        .map(|c| format!("{}={} ({}: {})", c.type_, c.status, c.reason, c.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Waits until the Cluster has `Ready=True`.
pub async fn wait_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Cluster {
    let api: Api<Cluster> = Api::namespaced(client.clone(), namespace);
    eventually(&format!("Cluster {name} Ready"), timeout, || async {
        let cluster = api.get(name).await.map_err(|e| e.to_string())?;
        let conditions = cluster
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        if slipway_api::conditions::is_true(&conditions, "Ready") {
            Ok(cluster)
        } else {
            Err(condition_summary(&conditions))
        }
    })
    .await
}

/// A `slipway manager` process against `kubeconfig`, killed on drop.
pub struct ManagerProcess {
    pub child: Child,
    log: std::path::PathBuf,
}

impl ManagerProcess {
    /// A manager with the development providers (sim, local) on, unless `extra` says which to enable.
    pub fn start(kubeconfig: &Path, log: &Path, extra: &[&str]) -> Self {
        if extra.iter().any(|a| a.starts_with("--enable-provider")) {
            Self::start_as_deployed(kubeconfig, log, extra)
        } else {
            let mut args = vec!["--enable-provider=sim,local"];
            args.extend_from_slice(extra);
            Self::start_as_deployed(kubeconfig, log, &args)
        }
    }

    /// A manager with only the flags given (and a free metrics port): the development providers are off. It logs
    /// at `info`, or at the `RUST_LOG` filter in `SLIPWAY_TEST_MANAGER_LOG` when debugging a test.
    pub fn start_as_deployed(kubeconfig: &Path, log: &Path, extra: &[&str]) -> Self {
        let level = std::env::var("SLIPWAY_TEST_MANAGER_LOG").unwrap_or_else(|_| "info".into());
        Self::start_logging(kubeconfig, log, extra, &level)
    }

    /// As [`Self::start_as_deployed`], logging at `level` (a `RUST_LOG` filter).
    pub fn start_logging(kubeconfig: &Path, log: &Path, extra: &[&str], level: &str) -> Self {
        Self::start_binary(
            Path::new(env!("CARGO_BIN_EXE_slipway")),
            kubeconfig,
            log,
            extra,
            level,
        )
    }

    /// As [`Self::start_logging`], running `binary` instead of the one cargo built for this test.
    pub fn start_binary(
        binary: &Path,
        kubeconfig: &Path,
        log: &Path,
        extra: &[&str],
        level: &str,
    ) -> Self {
        let log_file = std::fs::File::create(log).unwrap();
        let mut command = Command::new(binary);
        command.arg("manager");
        if !extra.iter().any(|a| a.starts_with("--metrics-addr")) {
            command.arg("--metrics-addr=127.0.0.1:0");
        }
        let child = command
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", level)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start slipway manager");
        Self {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what the manager said: its log is gone with the temporary directory afterwards.
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of {} ---", self.log.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Runs the `slipway` binary with `args`, talking to the apiserver of `kubeconfig`; with `None` there is no
/// kubeconfig at all (KUBECONFIG unset, HOME empty). Colour is off, as on any pipe.
pub fn slipway_cli(kubeconfig: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_slipway"));
    command.args(args).env("NO_COLOR", "1").stdin(Stdio::null());
    match kubeconfig {
        Some(path) => {
            command.env("KUBECONFIG", path);
        }
        None => {
            let home = std::env::temp_dir().join(format!("slipway-no-home-{}", std::process::id()));
            command
                .env_remove("KUBECONFIG")
                .env_remove("KUBERNETES_SERVICE_HOST")
                .env("HOME", home);
        }
    }
    command.output().expect("run the slipway binary")
}

/// stdout of a `slipway` run that must have succeeded; panics with its stderr otherwise.
pub fn stdout_of(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "slipway failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// A path inside the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// Server-side applies the Cluster and MachinePool documents of a YAML file into `namespace`.
pub async fn apply_file(client: &Client, namespace: &str, path: &Path) {
    let yaml = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    apply(client, namespace, &yaml).await;
}

/// The egress policy of `slipway manager --allow-egress 127.0.0.0/8`: what tests whose add-on servers and BMC
/// emulators listen on loopback give their managers.
pub fn loopback_egress() -> slipway_egress::EgressPolicy {
    slipway_egress::EgressPolicy::allowing([slipway_egress::parse_cidr("127.0.0.0/8").unwrap()])
}

/// One manager with the local provider per test binary, its clusters under a temporary directory removed at exit;
/// `addon_resync` is how often `Reconcile` bundles repair drift.
pub fn local_manager(env: &'static TestEnv, addon_resync: Duration) -> &'static PathBuf {
    static STATE: OnceLock<PathBuf> = OnceLock::new();
    STATE.get_or_init(|| {
        let state = tempfile::tempdir().unwrap().keep();
        // Workload clusters outlive their manager on purpose; they must not outlive the test binary.
        slipway_testenv::process::kill_pid_files_at_exit(&state);
        slipway_testenv::process::remove_dir_at_exit(&state);
        let provider = Arc::new(slipway_provider_local::LocalProvider::new(
            &state,
            slipway_testenv::bin_dir(),
        ));
        let settings = Settings {
            addon_resync,
            // The tests serve add-on manifests on loopback, as `--allow-egress 127.0.0.0/8` lets a manager fetch.
            egress: loopback_egress(),
            ..Settings::default()
        };
        run_manager(
            env,
            |_| ProviderRegistry::new().register(provider),
            settings,
        );
        state
    })
}

/// A client for the workload cluster of Cluster `name`, from its `<name>-kubeconfig` Secret.
pub async fn workload_client(client: &Client, namespace: &str, name: &str) -> Client {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get(&format!("{name}-kubeconfig"))
        .await
        .unwrap_or_else(|e| panic!("Secret {name}-kubeconfig: {e}"));
    let yaml = String::from_utf8(secret.data.unwrap()["value"].0.clone()).unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Whether process `pid` runs (a zombie does not count).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// The pid files of a local cluster's processes, by their path under the cluster's directory (`run/kwok.pid`,
/// `members/<machine>/run/etcd.pid`, …), with the pid each holds.
pub fn local_pid_files(dir: &Path) -> std::collections::BTreeMap<String, u32> {
    fn walk(base: &Path, at: &Path, found: &mut std::collections::BTreeMap<String, u32>) {
        let Ok(entries) = std::fs::read_dir(at) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(base, &path, found);
            } else if path.extension().is_some_and(|e| e == "pid") {
                let pid = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|p| p.trim().parse().ok());
                if let Some(pid) = pid {
                    let name = path
                        .strip_prefix(base)
                        .unwrap_or(&path)
                        .display()
                        .to_string();
                    found.insert(name, pid);
                }
            }
        }
    }
    let mut found = std::collections::BTreeMap::new();
    walk(dir, dir, &mut found);
    found
}

/// A client from the kubeconfig file at `path` (the test's own files only: this loader honours everything in it).
pub async fn client_from_kubeconfig(path: &Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// A token for `namespace/account` from the TokenRequest API, valid for an hour: what a pod of that
/// ServiceAccount finds in its projected token file.
pub async fn service_account_token(client: &Client, namespace: &str, account: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    accounts
        .create_token_request(account, &kube::api::PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{account}: {e}"))
        .status
        .and_then(|s| s.token)
        .expect("a token in the TokenRequest's status")
}
