//! What lives in a cluster's directory: `ports.json`, `control-plane.json`, `pki/`, `etcd/`, `run/` (pid files),
//! `logs/`, `admin.kubeconfig`, and `init-tokens.json` until the control plane has created its bootstrap tokens.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::user_data::InitToken;

/// Loopback ports of one cluster, chosen once and kept, so a restarted process answers where clients expect it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Ports {
    pub apiserver: u16,
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub scheduler: u16,
    pub kwok: u16,
}

/// The control-plane machine of a cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlPlaneRecord {
    pub name: String,
    pub template_hash: String,
    pub created_at: Timestamp,
    pub service_cidr: String,
}

pub struct ClusterDir {
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

    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn etcd_data(&self) -> PathBuf {
        self.root.join("etcd")
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
            apiserver: free_port()?,
            etcd_client: free_port()?,
            etcd_peer: free_port()?,
            scheduler: free_port()?,
            kwok: free_port()?,
        };
        write_json(&path, &ports)?;
        Ok(ports)
    }

    pub fn control_plane(&self) -> std::io::Result<Option<ControlPlaneRecord>> {
        read_json(&self.root.join("control-plane.json"))
    }

    pub fn save_control_plane(&self, record: &ControlPlaneRecord) -> std::io::Result<()> {
        write_json(&self.root.join("control-plane.json"), record)
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

    pub fn remove_control_plane(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.root.join("control-plane.json")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
