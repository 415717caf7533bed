//! The control plane of one local cluster: its certificates, each member's four processes (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler) and the cluster's kwok.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use slipway_bootstrap::kubeconfig::admin_kubeconfig;
use slipway_bootstrap::pki::{Leaf, Usage};
use slipway_provider::{ProviderError, Result};
use tracing::info;

use crate::layout::{ClusterDir, ClusterRecord, MemberDir, MemberRecord};
use crate::processes::{self, Children, log_tail};
use crate::user_data::Boot;

/// The processes of one control-plane member.
pub const MEMBER_COMPONENTS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The processes of the cluster as a whole.
pub const CLUSTER_COMPONENTS: [&str; 2] = ["kwok", crate::load_balancer::COMPONENT];

const BINARIES: [&str; 5] = [
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
/// kubeconfig the provider and kwok use (through the load balancer). Written by the first member; every member
/// serves with the same certificates, as all of them listen on 127.0.0.1.
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
    let server = format!("https://127.0.0.1:{}", ports.endpoint);
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
    dir.save_record(&ClusterRecord {
        service_cidr: boot.service_cidr.clone(),
    })
    .map_err(|e| io("writing the cluster record", e))
}

/// The member's own kubeconfig: the cluster's admin credentials, its own apiserver as the server.
pub fn write_member_kubeconfig(
    dir: &ClusterDir,
    member: &MemberDir,
    record: &MemberRecord,
) -> Result<()> {
    let admin = std::fs::read_to_string(dir.admin_kubeconfig())
        .map_err(|e| io("reading the admin kubeconfig", e))?;
    let ports = dir
        .ports_or_allocate()
        .map_err(|e| io("allocating ports", e))?;
    let own = admin.replace(
        &format!("https://127.0.0.1:{}", ports.endpoint),
        &format!("https://127.0.0.1:{}", record.ports.apiserver),
    );
    std::fs::create_dir_all(member.root()).map_err(|e| io("creating the member directory", e))?;
    std::fs::write(member.kubeconfig(), own).map_err(|e| io("writing the member kubeconfig", e))
}

/// Starts whichever of the member's four processes is not running. Returns whether all of them ran already.
pub fn ensure_member_running(
    dir: &ClusterDir,
    member: &MemberDir,
    bin_dir: &Path,
    record: &MemberRecord,
    children: &Children,
) -> Result<bool> {
    let Some(initial_cluster) = &record.initial_cluster else {
        // Not added to the cluster's etcd yet: the create that made the record does that first.
        return Ok(false);
    };
    let cluster = dir
        .record()
        .map_err(|e| io("reading the cluster record", e))?
        .ok_or_else(|| io("reading the cluster record", "cluster.json is missing"))?;
    let ports = dir
        .ports_or_allocate()
        .map_err(|e| io("allocating ports", e))?;
    let pki = dir.pki();
    let p = |name: &str| pki.join(name).display().to_string();
    let kubeconfig = member.kubeconfig().display().to_string();
    let etcd_url = record.etcd_client_url();
    let peer_url = record.etcd_peer_url();
    let own = record.ports;

    let mut etcd = Command::new(bin_dir.join("etcd"));
    etcd.args([
        format!("--name={}", record.name),
        format!("--data-dir={}", member.etcd_data().display()),
        format!("--listen-client-urls={etcd_url}"),
        format!("--advertise-client-urls={etcd_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster={initial_cluster}"),
        format!(
            "--initial-cluster-state={}",
            if record.first { "new" } else { "existing" }
        ),
        "--log-level=warn".to_string(),
    ]);

    let mut apiserver = Command::new(bin_dir.join("kube-apiserver"));
    apiserver.args([
        // Its own member's etcd, as kubeadm's stacked etcd.
        format!("--etcd-servers={etcd_url}"),
        format!(
            "--cert-dir={}",
            member.root().join("apiserver-certs").display()
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
        format!("--secure-port={}", own.apiserver),
        "--bind-address=127.0.0.1".to_string(),
        "--advertise-address=127.0.0.1".to_string(),
        "--endpoint-reconciler-type=none".to_string(),
        format!("--service-cluster-ip-range={}", cluster.service_cidr),
        "--allow-privileged=true".to_string(),
        "--authorization-mode=Node,RBAC".to_string(),
        // Workers join with bootstrap tokens, as with kubeadm.
        "--enable-bootstrap-token-auth=true".to_string(),
        // One issuer for every member: the endpoint, so a token one member issued is valid at the others.
        format!(
            "--service-account-issuer=https://127.0.0.1:{}",
            ports.endpoint
        ),
        format!("--service-account-key-file={}", p("sa.pub")),
        format!("--service-account-signing-key-file={}", p("sa.key")),
    ]);

    let mut controller_manager = Command::new(bin_dir.join("kube-controller-manager"));
    controller_manager.args([
        format!("--kubeconfig={kubeconfig}"),
        // One active controller-manager among the members.
        "--leader-elect=true".to_string(),
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
        "--leader-elect=true".to_string(),
        format!("--secure-port={}", own.scheduler),
        "--bind-address=127.0.0.1".to_string(),
    ]);

    let mut all_running = true;
    for (component, command) in [
        ("etcd", etcd),
        ("kube-apiserver", apiserver),
        ("kube-controller-manager", controller_manager),
        ("kube-scheduler", scheduler),
    ] {
        let started = processes::ensure(member.root(), component, command, children)
            .map_err(|e| io(&format!("starting {component}"), e))?;
        if started {
            info!(member = %member.root().display(), component, "started");
            all_running = false;
        }
    }
    if !all_running {
        // Give a process that fails at once (a port taken, a bad flag) the chance to show it now, with its log.
        std::thread::sleep(Duration::from_millis(300));
        for component in ["etcd", "kube-apiserver"] {
            if processes::running(member.root(), component, children).is_none() {
                return Err(ProviderError::transient(
                    "ControlPlaneProcessExited",
                    format!(
                        "{component} of {} exited at start; last lines of its log:\n{}",
                        record.name,
                        log_tail(&member.logs().join(format!("{component}.log")))
                    ),
                ));
            }
        }
    }
    Ok(all_running)
}

/// Starts the cluster's kwok, which plays the kubelet of every worker Node, unless it runs.
pub fn ensure_kwok(dir: &ClusterDir, bin_dir: &Path, children: &Children) -> Result<()> {
    let ports = dir
        .ports_or_allocate()
        .map_err(|e| io("allocating ports", e))?;
    let mut kwok = Command::new(bin_dir.join("kwok"));
    kwok.args([
        format!("--kubeconfig={}", dir.admin_kubeconfig().display()),
        format!("--config={}", stages(bin_dir).display()),
        "--node-lease-duration-seconds=40".to_string(),
        "--manage-all-nodes=false".to_string(),
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".to_string(),
        "--cidr=10.244.0.0/16".to_string(),
        "--node-ip=10.0.0.1".to_string(),
        format!("--server-address=127.0.0.1:{}", ports.kwok),
    ]);
    if processes::ensure(dir.root(), "kwok", kwok, children).map_err(|e| io("starting kwok", e))? {
        info!(dir = %dir.root().display(), "started kwok");
    }
    Ok(())
}

/// The `gitVersion` the apiserver reports at `/version` (e.g. `v1.37.2`), or `None` when it does not answer.
pub async fn api_version(client: &kube::Client) -> Option<String> {
    let version = tokio::time::timeout(Duration::from_secs(2), client.apiserver_version())
        .await
        .ok()?
        .ok()?;
    Some(version.git_version)
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
