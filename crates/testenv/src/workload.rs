//! The workload flavour: kube-controller-manager, kube-scheduler and kwok, plus fake Nodes that kwok keeps Ready and
//! whose pods it marks Running.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::binaries::{binary, kwok_stages};
use crate::error::{Error, Result};
use crate::kubeconfig::client_from_file;
use crate::pki::Pki;
use crate::ports::free_port;
use crate::process::{Process, log_tail};

/// The annotation kwok is told to manage nodes by.
pub const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

const NODES_READY_TIMEOUT: Duration = Duration::from_secs(90);

pub async fn start(
    dir: &Path,
    pki: &Pki,
    kubeconfig: &Path,
    processes: &mut Vec<Process>,
) -> Result<()> {
    let logs = dir.join("logs");
    let kubeconfig_flag = format!("--kubeconfig={}", kubeconfig.display());

    let mut controller_manager = Command::new(binary("kube-controller-manager")?);
    controller_manager.args([
        kubeconfig_flag.clone(),
        "--leader-elect=false".to_string(),
        // No serving endpoint: nothing scrapes it, and it would need another port.
        "--secure-port=0".to_string(),
        format!(
            "--service-account-private-key-file={}",
            pki.sa_key_file().display()
        ),
        format!("--root-ca-file={}", pki.ca_cert_file().display()),
        format!(
            "--cluster-signing-cert-file={}",
            pki.ca_cert_file().display()
        ),
        format!("--cluster-signing-key-file={}", pki.ca_key_file().display()),
        "--controllers=*".to_string(),
        "--v=1".to_string(),
    ]);
    processes.push(Process::spawn(
        "kube-controller-manager",
        controller_manager,
        &logs.join("kube-controller-manager.log"),
    )?);

    let mut scheduler = Command::new(binary("kube-scheduler")?);
    scheduler.args([
        kubeconfig_flag.clone(),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        "--leader-elect=false".to_string(),
        format!("--secure-port={}", free_port()?),
        "--bind-address=127.0.0.1".to_string(),
        "--v=1".to_string(),
    ]);
    processes.push(Process::spawn(
        "kube-scheduler",
        scheduler,
        &logs.join("kube-scheduler.log"),
    )?);

    let mut kwok = Command::new(binary("kwok")?);
    kwok.args([
        kubeconfig_flag,
        format!("--config={}", kwok_stages()?.display()),
        "--node-lease-duration-seconds=40".to_string(),
        "--manage-all-nodes=false".to_string(),
        format!(
            "--manage-nodes-with-annotation-selector={}={}",
            KWOK_NODE_ANNOTATION.0, KWOK_NODE_ANNOTATION.1
        ),
        "--cidr=10.0.0.0/24".to_string(),
        "--node-ip=10.0.0.1".to_string(),
        format!("--server-address=127.0.0.1:{}", free_port()?),
    ]);
    processes.push(Process::spawn("kwok", kwok, &logs.join("kwok.log"))?);
    Ok(())
}

/// Registers `count` fake Nodes (`kwok-node-0` …) and waits until kwok reports them all Ready.
pub async fn create_nodes(
    kubeconfig: &Path,
    count: usize,
    processes: &mut [Process],
) -> Result<()> {
    let nodes: Api<Node> = Api::all(client_from_file(kubeconfig, None).await?);
    for i in 0..count {
        let node = fake_node(&format!("kwok-node-{i}"));
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let started = Instant::now();
    loop {
        for process in processes.iter_mut() {
            process.ensure_running()?;
        }
        let ready = nodes
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|node| is_ready(node))
            .count();
        if ready >= count {
            return Ok(());
        }
        if started.elapsed() > NODES_READY_TIMEOUT {
            let log = processes
                .iter()
                .find(|p| p.log().ends_with("kwok.log"))
                .map(|p| p.log().to_path_buf())
                .unwrap_or_default();
            return Err(Error::NotReady {
                what: format!("{count} kwok nodes ({ready} Ready)"),
                seconds: NODES_READY_TIMEOUT.as_secs(),
                tail: log_tail(&log),
                log,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A Node that kwok manages: our annotation, and room for plenty of pods.
pub fn fake_node(name: &str) -> Node {
    let capacity: BTreeMap<String, Quantity> =
        [("cpu", "32"), ("memory", "256Gi"), ("pods", "110")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(BTreeMap::from([(
                KWOK_NODE_ANNOTATION.0.to_string(),
                KWOK_NODE_ANNOTATION.1.to_string(),
            )])),
            labels: Some(BTreeMap::from([
                ("type".to_string(), "kwok".to_string()),
                ("kubernetes.io/hostname".to_string(), name.to_string()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
            ])),
            ..Default::default()
        },
        status: Some(NodeStatus {
            allocatable: Some(capacity.clone()),
            capacity: Some(capacity),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}
