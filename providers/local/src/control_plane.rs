//! The control plane of one local cluster: its certificates and its five processes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use slipway_bootstrap::kubeconfig::admin_kubeconfig;
use slipway_bootstrap::pki::{Leaf, Usage};
use slipway_provider::{ProviderError, Result};
use tracing::info;

use crate::layout::{ClusterDir, ControlPlaneRecord};
use crate::processes::{self, Children, log_tail};
use crate::user_data::Boot;

pub(crate) const BINARIES: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

/// How long the serving and component certificates are valid; they are made again with the directory.
const LEAF_VALIDITY: SignedDuration = SignedDuration::from_hours(365 * 24);

fn stages(bin_dir: &Path) -> std::path::PathBuf {
    bin_dir.join("..").join("kwok").join("stages.yaml")
}

/// A condition-ready error when a binary is missing, with the command that builds it.
pub fn check_binaries(bin_dir: &Path) -> Result<()> {
    let missing: Vec<&str> = BINARIES
        .iter()
        .copied()
        .filter(|b| !bin_dir.join(b).is_file())
        .collect();
    if !missing.is_empty() || !stages(bin_dir).is_file() {
        return Err(ProviderError::permanent(
            "BinariesMissing",
            format!(
                "the local provider needs {} in {}: run hack/build-k8s.sh (or start the manager with --local-bin-dir)",
                if missing.is_empty() {
                    "kwok's stages".to_string()
                } else {
                    missing.join(", ")
                },
                bin_dir.display()
            ),
        ));
    }
    Ok(())
}

fn io(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::transient("LocalStateError", format!("{what}: {e}"))
}

/// Writes the cluster's CAs and the certificates its processes serve and authenticate with, and the admin
/// kubeconfig the provider and kwok use. Written once; a restart reuses them.
pub fn write_pki(dir: &ClusterDir, boot: &Boot) -> Result<()> {
    let pki = dir.pki();
    std::fs::create_dir_all(&pki).map_err(|e| io("creating the pki directory", e))?;
    let ports = dir
        .ports_or_allocate()
        .map_err(|e| io("allocating ports", e))?;
    let now = Timestamp::now();
    let leaf = |common_name, organization, hosts, usages| Leaf {
        common_name,
        organization,
        hosts,
        usages,
        not_before: now - SignedDuration::from_mins(5),
        not_after: now + LEAF_VALIDITY,
    };
    let (serving_cert, serving_key) = boot
        .pki
        .ca
        .sign(leaf(
            "kube-apiserver",
            None,
            &[
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ],
            &[Usage::ServerAuth],
        ))
        .map_err(|e| io("signing the serving certificate", e))?;
    let (proxy_cert, proxy_key) = boot
        .pki
        .front_proxy
        .sign(leaf("front-proxy-client", None, &[], &[Usage::ClientAuth]))
        .map_err(|e| io("signing the front-proxy client certificate", e))?;
    let server = format!("https://127.0.0.1:{}", ports.apiserver);
    let kubeconfig = admin_kubeconfig("local", &server, &boot.pki.ca, now)
        .map_err(|e| io("admin kubeconfig", e))?;
    let files = [
        ("ca.crt", boot.pki.ca.cert_pem.as_str()),
        ("ca.key", boot.pki.ca.key_pem.as_str()),
        ("front-proxy-ca.crt", boot.pki.front_proxy.cert_pem.as_str()),
        ("front-proxy-client.crt", proxy_cert.as_str()),
        ("front-proxy-client.key", proxy_key.as_str()),
        ("sa.pub", boot.pki.service_account.public_pem.as_str()),
        ("sa.key", boot.pki.service_account.private_pem.as_str()),
        ("apiserver.crt", serving_cert.as_str()),
        ("apiserver.key", serving_key.as_str()),
    ];
    for (name, content) in files {
        std::fs::write(pki.join(name), content).map_err(|e| io("writing certificates", e))?;
    }
    std::fs::write(dir.admin_kubeconfig(), kubeconfig.yaml)
        .map_err(|e| io("writing the admin kubeconfig", e))?;
    Ok(())
}

/// Starts whichever of the five processes is not running. Returns whether all of them run now.
pub fn ensure_running(
    dir: &ClusterDir,
    bin_dir: &Path,
    record: &ControlPlaneRecord,
    children: &Children,
) -> Result<bool> {
    let ports = dir
        .ports_or_allocate()
        .map_err(|e| io("allocating ports", e))?;
    let pki = dir.pki();
    let p = |name: &str| pki.join(name).display().to_string();
    let kubeconfig = dir.admin_kubeconfig().display().to_string();
    let etcd_url = format!("http://127.0.0.1:{}", ports.etcd_client);
    let peer_url = format!("http://127.0.0.1:{}", ports.etcd_peer);

    let mut etcd = Command::new(bin_dir.join("etcd"));
    etcd.args([
        "--name=default".to_string(),
        format!("--data-dir={}", dir.etcd_data().display()),
        format!("--listen-client-urls={etcd_url}"),
        format!("--advertise-client-urls={etcd_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=default={peer_url}"),
        "--log-level=warn".to_string(),
    ]);

    let mut apiserver = Command::new(bin_dir.join("kube-apiserver"));
    apiserver.args([
        format!("--etcd-servers={etcd_url}"),
        format!(
            "--cert-dir={}",
            dir.root().join("apiserver-certs").display()
        ),
        format!("--tls-cert-file={}", p("apiserver.crt")),
        format!("--tls-private-key-file={}", p("apiserver.key")),
        format!("--client-ca-file={}", p("ca.crt")),
        format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
        format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
        format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
        "--requestheader-allowed-names=front-proxy-client".to_string(),
        "--requestheader-username-headers=X-Remote-User".to_string(),
        "--requestheader-group-headers=X-Remote-Group".to_string(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_string(),
        format!("--secure-port={}", ports.apiserver),
        "--bind-address=127.0.0.1".to_string(),
        "--advertise-address=127.0.0.1".to_string(),
        "--endpoint-reconciler-type=none".to_string(),
        format!("--service-cluster-ip-range={}", record.service_cidr),
        "--allow-privileged=true".to_string(),
        "--authorization-mode=Node,RBAC".to_string(),
        // Workers join with bootstrap tokens, as with kubeadm.
        "--enable-bootstrap-token-auth=true".to_string(),
        format!(
            "--service-account-issuer=https://127.0.0.1:{}",
            ports.apiserver
        ),
        format!("--service-account-key-file={}", p("sa.pub")),
        format!("--service-account-signing-key-file={}", p("sa.key")),
    ]);

    let mut controller_manager = Command::new(bin_dir.join("kube-controller-manager"));
    controller_manager.args([
        format!("--kubeconfig={kubeconfig}"),
        "--leader-elect=false".to_string(),
        "--secure-port=0".to_string(),
        // The token cleaner removes expired bootstrap tokens; it is off unless named.
        "--controllers=*,bootstrapsigner,tokencleaner".to_string(),
        format!("--service-account-private-key-file={}", p("sa.key")),
        format!("--root-ca-file={}", p("ca.crt")),
        format!("--cluster-signing-cert-file={}", p("ca.crt")),
        format!("--cluster-signing-key-file={}", p("ca.key")),
    ]);

    let mut scheduler = Command::new(bin_dir.join("kube-scheduler"));
    scheduler.args([
        format!("--kubeconfig={kubeconfig}"),
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        "--leader-elect=false".to_string(),
        format!("--secure-port={}", ports.scheduler),
        "--bind-address=127.0.0.1".to_string(),
    ]);

    let mut kwok = Command::new(bin_dir.join("kwok"));
    kwok.args([
        format!("--kubeconfig={kubeconfig}"),
        format!("--config={}", stages(bin_dir).display()),
        "--node-lease-duration-seconds=40".to_string(),
        "--manage-all-nodes=false".to_string(),
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".to_string(),
        "--cidr=10.244.0.0/16".to_string(),
        "--node-ip=10.0.0.1".to_string(),
        format!("--server-address=127.0.0.1:{}", ports.kwok),
    ]);

    let mut all_running = true;
    for (component, command) in [
        ("etcd", etcd),
        ("kube-apiserver", apiserver),
        ("kube-controller-manager", controller_manager),
        ("kube-scheduler", scheduler),
        ("kwok", kwok),
    ] {
        let started = processes::ensure(dir, component, command, children)
            .map_err(|e| io(&format!("starting {component}"), e))?;
        if started {
            info!(dir = %dir.root().display(), component, "started");
            all_running = false;
        }
    }
    if !all_running {
        // Give a process that fails at once (a port taken, a bad flag) the chance to show it now, with its log.
        std::thread::sleep(Duration::from_millis(300));
        for component in ["etcd", "kube-apiserver"] {
            if processes::running(dir, component, children).is_none() {
                return Err(ProviderError::transient(
                    "ControlPlaneProcessExited",
                    format!(
                        "{component} exited at start; last lines of its log:\n{}",
                        log_tail(&dir.logs().join(format!("{component}.log")))
                    ),
                ));
            }
        }
    }
    Ok(true)
}

/// Whether the workload apiserver answers `/readyz`.
pub async fn api_ready(client: &kube::Client) -> bool {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .expect("a valid request");
    matches!(
        tokio::time::timeout(Duration::from_secs(2), client.request_text(request)).await,
        Ok(Ok(body)) if body.trim() == "ok"
    )
}
