//! slipway-provider-local: each workload cluster is a set of local processes (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok) on free loopback ports under `<state>/<namespace>/<name>/`, and
//! each worker machine is a kwok Node. No cloud account, no Docker.
//!
//! A machine boots from its user data like a real one: the provider reads the cluster's CAs and service-account key
//! from the kubeadm-init cloud-init the controller renders, serves with certificates signed by the cluster's own
//! CA and creates the init configuration's bootstrap tokens; a worker joins only when its kubeadm-join data pins
//! the cluster's CA and carries a token the cluster's API accepts. The processes are not children that die with the manager: they run in their own process
//! groups with pid files, so a restarted manager adopts the live ones and restarts dead ones on the same data
//! directory.
//!
//! Not a production runtime: etcd listens on plain HTTP on loopback, and one control-plane member per cluster.

mod control_plane;
mod join;
mod layout;
mod nodes;
mod processes;
mod state_root;
mod user_data;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use jiff::Timestamp;
use slipway_api::MachinePhase;
use slipway_provider::{
    ClusterInfo, Deletion, InfrastructureProvider, InfrastructureStatus, KeyedCache, Machine,
    MachineRequest, MachineRole, ProviderError, Result,
};
use tracing::info;

use crate::layout::{ClusterDir, ControlPlaneRecord};

/// The local provider.
pub struct LocalProvider {
    state_dir: PathBuf,
    bin_dir: PathBuf,
    /// Workload clients by cluster directory, made once from the cluster's admin kubeconfig.
    clients: KeyedCache<PathBuf, kube::Client>,
    children: processes::Children,
}

impl LocalProvider {
    /// `state_dir` holds one directory per cluster; `bin_dir` the binaries `hack/build-k8s.sh` builds (with the
    /// kwok stages in `<bin_dir>/../kwok/stages.yaml`).
    pub fn new(state_dir: impl Into<PathBuf>, bin_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            bin_dir: bin_dir.into(),
            clients: KeyedCache::new(),
            children: processes::Children::default(),
        }
    }

    /// The cluster's directory, `<stateDir or the provider's state directory>/<namespace>/<name>`. A `stateDir`
    /// outside the provider's state directory is refused: the directory is deleted with the cluster, and a tenant
    /// must not choose what the manager deletes.
    fn dir(&self, cluster: &ClusterInfo) -> Result<ClusterDir> {
        let base = match cluster
            .infrastructure
            .local
            .as_ref()
            .and_then(|l| l.state_dir.as_ref())
        {
            Some(dir) => state_root::confine(&self.state_dir, Path::new(dir)).map_err(|why| {
                ProviderError::permanent(
                    "StateDirOutsideRoot",
                    format!(
                        "spec.infrastructure.local.stateDir {dir:?} {why}; use a directory under {} (the manager's \
                         --local-state-dir) or leave stateDir out",
                        self.state_dir.display()
                    ),
                )
            })?,
            None => self.state_dir.clone(),
        };
        Ok(ClusterDir::new(
            base.join(&cluster.namespace).join(&cluster.name),
        ))
    }

    async fn workload_client(&self, dir: &ClusterDir) -> Result<kube::Client> {
        if let Some(client) = self.clients.get(dir.root()) {
            return Ok(client);
        }
        let client = nodes::client(&dir.admin_kubeconfig()).await?;
        self.clients
            .insert(dir.root().to_path_buf(), client.clone());
        Ok(client)
    }
}

fn io(what: &str, e: std::io::Error) -> ProviderError {
    ProviderError::transient("LocalStateError", format!("{what}: {e}"))
}

#[async_trait]
impl InfrastructureProvider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn reconcile_cluster(&self, cluster: &ClusterInfo) -> Result<InfrastructureStatus> {
        control_plane::check_binaries(&self.bin_dir)?;
        let dir = self.dir(cluster)?;
        let ports = dir
            .ports_or_allocate()
            .map_err(|e| io("allocating ports", e))?;
        // A control plane that was running before a manager restart (or a crash of one of its processes) comes back
        // here, on the same data directory.
        if let Some(record) = dir
            .control_plane()
            .map_err(|e| io("reading the control-plane record", e))?
        {
            control_plane::ensure_running(&dir, &self.bin_dir, &record, &self.children)?;
        }
        Ok(InfrastructureStatus {
            ready: true,
            message: format!("control plane directory {}", dir.root().display()),
            endpoint: Some(("127.0.0.1".into(), ports.apiserver)),
            workload_api: true,
        })
    }

    async fn delete_cluster(&self, cluster: &ClusterInfo) -> Result<Deletion> {
        let dir = match self.dir(cluster) {
            Ok(dir) => dir,
            // Nothing was ever made for a stateDir outside the root (reconcile refuses it), so nothing is deleted.
            Err(error) => {
                info!(%error, "not deleting a cluster directory outside the state directory");
                return Ok(Deletion::Done);
            }
        };
        processes::stop_all(&dir, &control_plane::BINARIES, &self.children);
        self.clients.remove(dir.root());
        match std::fs::remove_dir_all(dir.root()) {
            Ok(()) => info!(dir = %dir.root().display(), "removed the cluster directory"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing the cluster directory", e)),
        }
        Ok(Deletion::Done)
    }

    async fn list_machines(
        &self,
        cluster: &ClusterInfo,
        role: &MachineRole,
    ) -> Result<Vec<Machine>> {
        // No machine was ever made for a stateDir outside the root: reconcile and create refuse it.
        let Ok(dir) = self.dir(cluster) else {
            return Ok(Vec::new());
        };
        match role {
            MachineRole::ControlPlane => {
                let Some(record) = dir
                    .control_plane()
                    .map_err(|e| io("reading the control-plane record", e))?
                else {
                    return Ok(Vec::new());
                };
                let running =
                    control_plane::ensure_running(&dir, &self.bin_dir, &record, &self.children)?;
                let client = self.workload_client(&dir).await?;
                // Like `kubeadm init`, the control plane is ready once its API answers and it has created the
                // bootstrap tokens workers join with.
                let ready = running && control_plane::api_ready(&client).await;
                if ready {
                    join::create_init_tokens(&dir, &client).await?;
                }
                Ok(vec![Machine {
                    provider_id: provider_id(cluster, &record.name),
                    name: record.name,
                    phase: if running {
                        MachinePhase::Running
                    } else {
                        MachinePhase::Provisioning
                    },
                    ready,
                    template_hash: record.template_hash,
                    created_at: record.created_at,
                }])
            }
            MachineRole::Worker { pool } => {
                if dir
                    .control_plane()
                    .map_err(|e| io("reading the control-plane record", e))?
                    .is_none()
                {
                    return Ok(Vec::new());
                }
                let client = self.workload_client(&dir).await?;
                nodes::list(&client, pool, |name| provider_id(cluster, name)).await
            }
        }
    }

    async fn create_machine(
        &self,
        cluster: &ClusterInfo,
        request: &MachineRequest,
    ) -> Result<Machine> {
        let dir = self.dir(cluster)?;
        match &request.role {
            MachineRole::ControlPlane => {
                if let Some(existing) = dir
                    .control_plane()
                    .map_err(|e| io("reading the control-plane record", e))?
                {
                    if existing.name != request.name {
                        return Err(ProviderError::permanent(
                            "SingleControlPlaneOnly",
                            "the local provider runs one control-plane member per cluster: set spec.controlPlane.replicas to 1",
                        ));
                    }
                } else {
                    let boot = user_data::read(request.user_data.as_deref())?;
                    control_plane::write_pki(&dir, &boot)?;
                    dir.save_init_tokens(&boot.init_tokens)
                        .map_err(|e| io("writing the init tokens", e))?;
                    dir.save_control_plane(&ControlPlaneRecord {
                        name: request.name.clone(),
                        template_hash: request.template_hash.clone(),
                        created_at: Timestamp::now(),
                        service_cidr: boot.service_cidr.clone(),
                    })
                    .map_err(|e| io("writing the control-plane record", e))?;
                }
                let record = dir
                    .control_plane()
                    .map_err(|e| io("reading the control-plane record", e))?
                    .expect("just saved");
                control_plane::ensure_running(&dir, &self.bin_dir, &record, &self.children)?;
                Ok(Machine {
                    provider_id: provider_id(cluster, &record.name),
                    name: record.name,
                    phase: MachinePhase::Provisioning,
                    ready: false,
                    template_hash: record.template_hash,
                    created_at: record.created_at,
                })
            }
            MachineRole::Worker { pool } => {
                let client = self.workload_client(&dir).await?;
                let id = provider_id(cluster, &request.name);
                let exists = nodes::get(&client, &request.name).await?;
                if let Some(machine) = exists {
                    return Ok(machine);
                }
                let join = user_data::read_join(request.user_data.as_deref())?;
                join::verify(&dir, &join).await?;
                nodes::create(&client, &request.name, pool, &request.template_hash, &id).await
            }
        }
    }

    async fn delete_machine(
        &self,
        cluster: &ClusterInfo,
        role: &MachineRole,
        name: &str,
    ) -> Result<Deletion> {
        let Ok(dir) = self.dir(cluster) else {
            return Ok(Deletion::Done);
        };
        match role {
            MachineRole::ControlPlane => {
                processes::stop_all(&dir, &control_plane::BINARIES, &self.children);
                dir.remove_control_plane()
                    .map_err(|e| io("removing the control-plane record", e))?;
                Ok(Deletion::Done)
            }
            MachineRole::Worker { .. } => {
                if dir
                    .control_plane()
                    .map_err(|e| io("reading the control-plane record", e))?
                    .is_none()
                {
                    return Ok(Deletion::Done);
                }
                let client = self.workload_client(&dir).await?;
                nodes::delete(&client, name).await
            }
        }
    }
}

/// `local://<namespace>/<cluster>/<machine>`, also the Node's `spec.providerID`.
pub fn provider_id(cluster: &ClusterInfo, machine: &str) -> String {
    format!("local://{}/{}/{}", cluster.namespace, cluster.name, machine)
}
