//! What lives in a cluster's directory: `ports.json` (the load balancer's and kwok's ports), `cluster.json`,
//! `pki/`, `admin.kubeconfig` (through the load balancer), `haproxy-<hash>.cfg`, `run/` and `logs/` (kwok, HAProxy),
//! `init-tokens.json` until the control plane has created its bootstrap tokens, and one directory per
//! control-plane member under `members/<machine>/`: `member.json`, `etcd/`, `kubeconfig` (its own apiserver),
//! `run/` (pid files) and `logs/`.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::user_data::InitToken;

/// Loopback ports of one cluster, chosen once and kept, so a restarted process answers where clients expect it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Ports {
    /// The load balancer in front of the members: the cluster's API endpoint.
    pub endpoint: u16,
    pub kwok: u16,
}

/// What every member of the cluster shares, written by the first member's init configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub service_cidr: String,
}

/// Loopback ports of one control-plane member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberPorts {
    pub apiserver: u16,
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub scheduler: u16,
}

/// One control-plane member: a machine of the cluster's control plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberRecord {
    pub name: String,
    pub template_hash: String,
    pub created_at: Timestamp,
    pub ports: MemberPorts,
    /// etcd's `--initial-cluster` for this member's first start (`name=peerURL,…`), fixed once the member is added
    /// to the cluster's etcd; `None` until then. Ignored by etcd once its data directory exists.
    pub initial_cluster: Option<String>,
    /// Whether the member started a new etcd cluster (the first member) or joined an existing one.
    pub first: bool,
    /// The Kubernetes version whose binaries the member runs; `None` (records written before versions were kept):
    /// the provider's own binaries.
    #[serde(default)]
    pub version: Option<String>,
}

impl MemberRecord {
    pub fn etcd_client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.etcd_client)
    }

    pub fn etcd_peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.etcd_peer)
    }
}

pub struct ClusterDir {
    root: PathBuf,
}

/// The directory of one control-plane member, inside its cluster's.
pub struct MemberDir {
    root: PathBuf,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Write-then-rename: a manager killed mid-write leaves the old file, not half a new one.
fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}

impl ClusterDir {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.root.join("admin.kubeconfig")
    }

    pub fn ports_or_allocate(&self) -> std::io::Result<Ports> {
        let path = self.root.join("ports.json");
        if let Some(ports) = read_json(&path)? {
            return Ok(ports);
        }
        let ports = Ports {
            endpoint: free_port()?,
            kwok: free_port()?,
        };
        write_json(&path, &ports)?;
        Ok(ports)
    }

    pub fn record(&self) -> std::io::Result<Option<ClusterRecord>> {
        read_json(&self.root.join("cluster.json"))
    }

    pub fn save_record(&self, record: &ClusterRecord) -> std::io::Result<()> {
        write_json(&self.root.join("cluster.json"), record)
    }

    fn members_dir(&self) -> PathBuf {
        self.root.join("members")
    }

    pub fn member(&self, name: &str) -> MemberDir {
        MemberDir {
            root: self.members_dir().join(name),
        }
    }

    /// Every member with a record, by name.
    pub fn members(&self) -> std::io::Result<Vec<MemberRecord>> {
        let entries = match std::fs::read_dir(self.members_dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut members = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if let Some(record) = read_json::<MemberRecord>(&path.join("member.json"))? {
                members.push(record);
            }
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(members)
    }

    /// Ports no member of this cluster has taken.
    pub fn allocate_member_ports(&self) -> std::io::Result<MemberPorts> {
        Ok(MemberPorts {
            apiserver: free_port()?,
            etcd_client: free_port()?,
            etcd_peer: free_port()?,
            scheduler: free_port()?,
        })
    }

    /// The bootstrap tokens of the control plane's init configuration, until they exist in its API.
    pub fn init_tokens(&self) -> std::io::Result<Option<Vec<InitToken>>> {
        read_json(&self.root.join("init-tokens.json"))
    }

    pub fn save_init_tokens(&self, tokens: &[InitToken]) -> std::io::Result<()> {
        let path = self.root.join("init-tokens.json");
        write_json(&path, &tokens)?;
        // A join credential: for the owner only, as kubeadm keeps its config.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
    }

    pub fn remove_init_tokens(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.root.join("init-tokens.json")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl MemberDir {
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn etcd_data(&self) -> PathBuf {
        self.root.join("etcd")
    }

    /// An admin kubeconfig for this member's own apiserver: its controller-manager and scheduler talk to it, as
    /// kubeadm's do.
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }

    pub fn record(&self) -> std::io::Result<Option<MemberRecord>> {
        read_json(&self.root.join("member.json"))
    }

    pub fn save_record(&self, record: &MemberRecord) -> std::io::Result<()> {
        write_json(&self.root.join("member.json"), record)
    }

    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
