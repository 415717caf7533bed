//! The manager's container image run the way its Deployment runs it (issue: run Slipway where operators run it).
//!
//! `hack/image.sh` builds the image and `hack/test-image.sh` runs this test with `SLIPWAY_IMAGE_ARCHIVE` naming the
//! OCI archive, so the test is ignored by a plain `cargo test` (it needs the release build and the image tools).
//! The image is unpacked with `skopeo` and `umoci`; its configuration (user, entrypoint) is read from the image,
//! not assumed. `podman run` cannot start containers on machines like this one's (no cgroup controllers, no
//! CAP_SYS_RESOURCE for its rlimits), so the root filesystem runs the way a container runtime would run it: in
//! new mount and PID namespaces, chrooted, read-only, as the image's non-root user, with the ServiceAccount's
//! token, CA and namespace at `/var/run/secrets/kubernetes.io/serviceaccount/`, `KUBERNETES_SERVICE_HOST/PORT`
//! pointing at the test's apiserver, and exactly the environment and arguments of `config/manager/manager.yaml`.
//! It shares the host's network (the apiserver listens on loopback), so its metrics port is a free one instead of
//! 8080, and `--enable-provider=sim` is added to have a cluster it can make Ready with no cloud.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::Value;
use slipway_testenv::free_port;
use support::{apply, env, eventually, service_account_token, slipway_cli, wait_ready};

const NAMESPACE: &str = "slipway-system";
const POD_NAME: &str = "slipway-manager-7d9f8c6b5-image";
const SERVICE_ACCOUNT_DIR: &str = "var/run/secrets/kubernetes.io/serviceaccount";

/// Prepares the mounts a container runtime would, then runs the entrypoint chrooted as the image's user. Runs as
/// PID 1 of a new PID namespace, in a new mount namespace (private propagation: nothing leaks to the host).
const RUN_ROOTFS: &str = r#"set -eu
rootfs="$1"; secrets="$2"; user="$3"; group="$4"; shift 4
mount --bind "$rootfs" "$rootfs"
mount -t proc proc "$rootfs/proc"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$rootfs/dev"
for device in null zero random urandom; do
  touch "$rootfs/dev/$device"
  mount --bind "/dev/$device" "$rootfs/dev/$device"
done
mount --bind "$secrets" "$rootfs/var/run/secrets/kubernetes.io/serviceaccount"
mount -o remount,bind,ro "$rootfs/var/run/secrets/kubernetes.io/serviceaccount"
mount -o remount,bind,ro "$rootfs"
exec unshare --root="$rootfs" --wd=/ --setgid="$group" --setuid="$user" -- "$@"
"#;

fn tool(name: &str) -> Command {
    let mut command = Command::new(name);
    command.stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The image's root filesystem and its runtime configuration (`config.json`), unpacked from the OCI archive.
fn unpack(archive: &Path, work: &Path) -> (PathBuf, Value) {
    let layout = work.join("layout");
    run(tool("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci-archive:{}", archive.display()),
        &format!("oci:{}:slipway", layout.display()),
    ]));
    let bundle = work.join("bundle");
    run(tool("umoci").args([
        "unpack",
        "--image",
        &format!("{}:slipway", layout.display()),
        &bundle.display().to_string(),
    ]));
    let config = std::fs::read_to_string(bundle.join("config.json")).unwrap();
    (
        bundle.join("rootfs"),
        serde_json::from_str(&config).unwrap(),
    )
}

/// The manager container of `config/manager/manager.yaml`: its arguments and the names of its environment.
fn deployment_container() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(support::repo_path("config/manager/manager.yaml")).unwrap();
    let deployment: Value = serde_saphyr::from_str(&text).unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let strings = |v: &Value, key: Option<&str>| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| match key {
                Some(key) => e[key].as_str().unwrap().to_string(),
                None => e.as_str().unwrap().to_string(),
            })
            .collect()
    };
    (
        strings(&container["args"], None),
        strings(&container["env"], Some("name")),
    )
}

/// The host PID of the process the namespaced runner started (PID 1 inside).
fn child_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

struct Running {
    runner: Child,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.runner.kill();
        let _ = self.runner.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- the image's manager log ---\n{log}");
        }
    }
}

async fn get_text(url: &str) -> Result<(u16, String), String> {
    let response = reqwest::get(url).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.map_err(|e| e.to_string())?))
}

#[tokio::test]
#[ignore = "needs the image from hack/image.sh; hack/test-image.sh runs it with SLIPWAY_IMAGE_ARCHIVE set"]
async fn the_image_runs_as_its_deployment_would_and_the_manager_does_its_job() {
    let archive = PathBuf::from(
        std::env::var_os("SLIPWAY_IMAGE_ARCHIVE")
            .expect("SLIPWAY_IMAGE_ARCHIVE names the OCI archive hack/image.sh wrote"),
    );
    let env = env().await;
    let admin = env.client().await;
    let work = tempfile::tempdir().unwrap();

    // What the image says about itself: a non-root numeric user and slipway as the entrypoint.
    let (rootfs, config) = unpack(&archive, work.path());
    let process = &config["process"];
    let uid = process["user"]["uid"].as_u64().unwrap();
    let gid = process["user"]["gid"].as_u64().unwrap();
    assert_ne!(uid, 0, "the image runs as root: {process}");
    assert_eq!(
        process["args"][0], "/usr/local/bin/slipway",
        "entrypoint: {process}"
    );
    assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file());
    // A read-only root needs its mount points in the image.
    for dir in ["proc", "dev", SERVICE_ACCOUNT_DIR] {
        assert!(rootfs.join(dir).is_dir(), "the image has no /{dir}");
    }

    // Its labels carry this version and the commit the binary says it was built from.
    let inspect: Value = serde_json::from_str(&run(
        tool("skopeo").args(["inspect", &format!("oci-archive:{}", archive.display())])
    ))
    .unwrap();
    let labels = &inspect["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION"),
        "{inspect}"
    );
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap();
    let version = run(tool(rootfs.join("usr/local/bin/slipway").to_str().unwrap()).arg("version"));
    assert!(
        version.starts_with(&format!(
            "slipway {}\ncommit: {revision}\n",
            env!("CARGO_PKG_VERSION")
        )),
        "the image's `slipway version` says {version:?}, its label revision {revision}"
    );

    // As the operator would: `slipway init --without-manager`, then the ServiceAccount's token as a pod gets it.
    let init = slipway_cli(Some(env.kubeconfig_path()), &["init", "--without-manager"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let secrets = work.path().join("serviceaccount");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(
        secrets.join("token"),
        service_account_token(&admin, NAMESPACE, "slipway-manager").await,
    )
    .unwrap();
    std::fs::write(secrets.join("ca.crt"), env.ca_pem()).unwrap();
    std::fs::write(secrets.join("namespace"), NAMESPACE).unwrap();
    let (apiserver_host, apiserver_port) = env
        .server()
        .strip_prefix("https://")
        .and_then(|a| a.rsplit_once(':'))
        .expect("the testenv apiserver is https://HOST:PORT");

    let (mut args, env_names) = deployment_container();
    let metrics_port = free_port().unwrap();
    for arg in &mut args {
        if arg.starts_with("--metrics-addr=") {
            *arg = format!("--metrics-addr=127.0.0.1:{metrics_port}");
        }
    }
    assert!(
        args.iter().any(|a| a.starts_with("--metrics-addr=")),
        "the Deployment sets --metrics-addr: {args:?}"
    );
    args.push("--enable-provider=sim".into());
    assert_eq!(
        env_names,
        ["POD_NAMESPACE", "POD_NAME"],
        "the Deployment's environment changed: update this test"
    );

    let log = work.path().join("manager.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let entrypoint: Vec<String> = process["args"]
        .as_array()
        .unwrap()
        .iter()
        .take(1) // the image's CMD is replaced by the Deployment's args, as Kubernetes does
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let runner = Command::new("unshare")
        .args([
            "--mount",
            "--propagation=private",
            "--pid",
            "--fork",
            "--kill-child",
            "--",
            "sh",
            "-c",
            RUN_ROOTFS,
            "run-rootfs",
        ])
        .arg(&rootfs)
        .arg(&secrets)
        .args([uid.to_string(), gid.to_string()])
        .args(&entrypoint)
        .args(&args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("KUBERNETES_SERVICE_HOST", apiserver_host)
        .env("KUBERNETES_SERVICE_PORT", apiserver_port)
        .env("POD_NAMESPACE", NAMESPACE)
        .env("POD_NAME", POD_NAME)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start unshare");
    let runner_pid = runner.id();
    let mut running = Running { runner, log };

    // The process is the image's user, on a read-only root.
    let manager_pid = eventually(
        "the manager started in its namespaces",
        Duration::from_secs(10),
        || async {
            let pid = child_of(runner_pid).ok_or("no child yet")?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map_err(|e| e.to_string())?;
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| e.to_string())?;
            if exe.ends_with("slipway") {
                Ok((pid, status))
            } else {
                Err(format!("{} runs", exe.display()))
            }
        },
    )
    .await;
    let (pid, status) = manager_pid;
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == uid.to_string()),
        "{uid_line}"
    );
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap();
    assert!(
        root.split_whitespace()
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "root mount: {root}"
    );

    // It elects itself (its identity is the pod name), serves its probes and metrics, and makes a cluster Ready.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NAMESPACE);
    eventually(
        "the manager holds the leader Lease",
        Duration::from_secs(60),
        || async {
            let lease = leases
                .get("slipway-manager")
                .await
                .map_err(|e| e.to_string())?;
            let holder = lease
                .spec
                .and_then(|s| s.holder_identity)
                .unwrap_or_default();
            if holder == POD_NAME {
                Ok(())
            } else {
                Err(format!("holder {holder:?}"))
            }
        },
    )
    .await;
    let base = format!("http://127.0.0.1:{metrics_port}");
    for path in ["/healthz", "/readyz"] {
        eventually(
            &format!("{path} answers 200"),
            Duration::from_secs(30),
            || async {
                match get_text(&format!("{base}{path}")).await? {
                    (200, _) => Ok(()),
                    (code, body) => Err(format!("{code}: {body}")),
                }
            },
        )
        .await;
    }
    let namespace = env.create_namespace("image").await;
    apply(
        &admin,
        &namespace,
        &support::sim_cluster("from-image", 1, 2, "{}"),
    )
    .await;
    wait_ready(&admin, &namespace, "from-image", Duration::from_secs(90)).await;
    let (code, metrics) = get_text(&format!("{base}/metrics")).await.unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("slipway_reconciles_total"), "{metrics}");

    // `slipway init --check` sees the manager ready because it leads, not because anything wrote a status.
    let check = slipway_cli(Some(env.kubeconfig_path()), &["init", "--check"]);
    let table = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{table}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(table.contains(&format!("held by {POD_NAME}")), "{table}");

    // SIGTERM, as the kubelet sends it: a clean exit that releases the Lease.
    #[allow(unsafe_code)]
    // SAFETY: kill(2) on a pid this test started; no memory is involved.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let exit = eventually(
        "the manager exits after SIGTERM",
        Duration::from_secs(30),
        || {
            let exit = running.runner.try_wait();
            async move {
                exit.map_err(|e| e.to_string())?
                    .ok_or_else(|| "still running".to_string())
            }
        },
    )
    .await;
    assert!(exit.success(), "the manager exited with {exit}");
    let lease = leases.get("slipway-manager").await.unwrap();
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(
        holder.is_empty(),
        "the Lease is still held by {holder:?} after a clean stop"
    );
    let log_text = std::fs::read_to_string(&running.log).unwrap();
    assert!(!log_text.contains("panicked"), "{log_text}");
}
