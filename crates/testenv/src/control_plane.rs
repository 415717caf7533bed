//! etcd and kube-apiserver, started the way envtest starts them.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::binaries::binary;
use crate::error::{Error, Result};
use crate::kubeconfig::client_from_file;
use crate::pki::Pki;
use crate::ports::free_port;
use crate::process::{Process, log_tail};

const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Where a running apiserver was started, to start it again on the same port and etcd.
#[derive(Debug, Clone)]
pub struct Apiserver {
    pub dir: std::path::PathBuf,
    pub etcd_url: String,
    pub port: u16,
}

/// Starts etcd and kube-apiserver under `dir`; returns the apiserver's URL and how to start it again.
pub async fn start(
    dir: &Path,
    pki: &Pki,
    processes: &mut Vec<Process>,
) -> Result<(String, Apiserver)> {
    let etcd_bin = binary("etcd")?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;

    let (client_port, peer_port) = (free_port()?, free_port()?);
    let etcd_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut etcd = Command::new(etcd_bin);
    etcd.args([
        "--name=default".to_string(),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls={etcd_url}"),
        format!("--advertise-client-urls={etcd_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=default={peer_url}"),
        // Test data is thrown away: durability costs seconds per test for nothing.
        "--unsafe-no-fsync=true".to_string(),
        "--quota-backend-bytes=8589934592".to_string(),
        "--log-level=warn".to_string(),
    ]);
    processes.push(Process::spawn("etcd", etcd, &logs.join("etcd.log"))?);

    let apiserver = Apiserver {
        dir: dir.to_path_buf(),
        etcd_url,
        port: free_port()?,
    };
    start_apiserver(&apiserver, pki, processes)?;
    Ok((format!("https://127.0.0.1:{}", apiserver.port), apiserver))
}

/// Starts kube-apiserver as `apiserver` says (its log is appended to).
pub fn start_apiserver(
    apiserver: &Apiserver,
    pki: &Pki,
    processes: &mut Vec<Process>,
) -> Result<()> {
    let Apiserver {
        dir,
        etcd_url,
        port,
    } = apiserver;
    let server = format!("https://127.0.0.1:{port}");
    let mut apiserver = Command::new(binary("kube-apiserver")?);
    apiserver.args([
        format!("--etcd-servers={etcd_url}"),
        format!("--cert-dir={}", dir.join("apiserver-certs").display()),
        format!("--tls-cert-file={}", pki.serving_cert_file().display()),
        format!(
            "--tls-private-key-file={}",
            pki.serving_key_file().display()
        ),
        format!("--client-ca-file={}", pki.ca_cert_file().display()),
        format!("--secure-port={port}"),
        "--bind-address=127.0.0.1".to_string(),
        // Loopback may only be advertised without an endpoint reconciler; nothing in tests needs the kubernetes
        // Service to have endpoints.
        "--advertise-address=127.0.0.1".to_string(),
        "--endpoint-reconciler-type=none".to_string(),
        "--service-cluster-ip-range=10.0.0.0/24".to_string(),
        "--allow-privileged=true".to_string(),
        "--authorization-mode=Node,RBAC".to_string(),
        format!("--service-account-issuer={server}"),
        format!("--service-account-key-file={}", pki.sa_pub_file().display()),
        format!(
            "--service-account-signing-key-file={}",
            pki.sa_key_file().display()
        ),
        "--v=1".to_string(),
    ]);
    processes.push(Process::spawn(
        "kube-apiserver",
        apiserver,
        &dir.join("logs").join("kube-apiserver.log"),
    )?);
    Ok(())
}

/// Polls `/readyz` with the admin kubeconfig until it answers `ok`, failing early when a process exits.
pub async fn wait_ready(kubeconfig: &Path, processes: &mut [Process]) -> Result<()> {
    let started = Instant::now();
    let client = client_from_file(kubeconfig, None).await?;
    loop {
        for process in processes.iter_mut() {
            process.ensure_running()?;
        }
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .expect("a valid request");
        if let Ok(body) = client.request_text(request).await
            && body.trim() == "ok"
        {
            return Ok(());
        }
        if started.elapsed() > READY_TIMEOUT {
            let log = processes
                .iter()
                .find(|p| p.log().ends_with("kube-apiserver.log"))
                .map(|p| p.log().to_path_buf())
                .unwrap_or_default();
            return Err(Error::NotReady {
                what: "kube-apiserver /readyz".into(),
                seconds: READY_TIMEOUT.as_secs(),
                tail: log_tail(&log),
                log,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
