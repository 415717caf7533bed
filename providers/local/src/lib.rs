//! slipway-provider-local: each workload cluster is a set of local processes on free loopback ports under
//! `<state>/<namespace>/<name>/`, and each worker machine is a kwok Node. No cloud account, no Docker.
//!
//! Every control-plane machine is a member with its own etcd (added to the cluster's etcd before it first starts,
//! removed before it stops), kube-apiserver, kube-controller-manager and kube-scheduler (the last two
//! leader-elected among the members). An HAProxy per cluster is the endpoint: TCP to every member's apiserver that
//! answers `/readyz`. One kwok per cluster plays the workers' kubelets.
//!
//! A machine boots from its user data like a real one: the first member reads the cluster's CAs and
//! service-account key from the kubeadm-init cloud-init the controller renders, serves with certificates signed by
//! the cluster's own CA and creates the init configuration's bootstrap tokens; a later member, and a worker, joins
//! only when its kubeadm-join data pins the cluster's CA and carries a token the cluster's API accepts. The
//! processes are not children that die with the manager: they run in their own process groups with pid files, so a
//! restarted manager adopts the live ones and restarts dead ones on the same data directories.
//!
//! Not a production runtime: etcd listens on plain HTTP on loopback.

mod control_plane;
mod etcd_members;
mod join;
mod layout;
mod load_balancer;
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

use crate::layout::{ClusterDir, MemberDir, MemberRecord};

/// The local provider.
pub struct LocalProvider {
    state_dir: PathBuf,
    bin_dir: PathBuf,
    haproxy: Option<PathBuf>,
    /// Workload clients by kubeconfig (the cluster's through its load balancer, and each member's own), made once.
    clients: KeyedCache<PathBuf, kube::Client>,
    children: processes::Children,
}

/// `haproxy` on `PATH`, or in the sbin directories Debian installs it to (not on every user's `PATH`).
pub fn find_haproxy() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|candidate| candidate.is_file())
}

impl LocalProvider {
    /// `state_dir` holds one directory per cluster; `bin_dir` the binaries `hack/build-k8s.sh` builds (with the
    /// kwok stages in `<bin_dir>/../kwok/stages.yaml`). HAProxy is found on `PATH` (see [`find_haproxy`]).
    pub fn new(state_dir: impl Into<PathBuf>, bin_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            bin_dir: bin_dir.into(),
            haproxy: find_haproxy(),
            clients: KeyedCache::new(),
            children: processes::Children::default(),
        }
    }

    /// Uses the HAProxy binary at `path`.
    pub fn with_haproxy(mut self, path: impl Into<PathBuf>) -> Self {
        self.haproxy = Some(path.into());
        self
    }

    /// The binaries of Kubernetes `version`. In the layout `hack/build-k8s.sh` makes (`<cache>/k8s/<version>/bin`)
    /// another version's are beside the provider's own, and must be there; a `--local-bin-dir` outside that layout
    /// serves every version with what it holds.
    fn bin_dir_for(&self, version: Option<&str>) -> Result<PathBuf> {
        let versioned = self.bin_dir.parent().and_then(|dir| {
            let name = dir.file_name()?.to_str()?;
            (name.starts_with('v') && name.contains('.')).then_some((name, dir.parent()?))
        });
        match (version, versioned) {
            (Some(version), Some((own, root))) if version != own => {
                let dir = root.join(version).join("bin");
                control_plane::check_binaries(&dir)?;
                Ok(dir)
            }
            _ => Ok(self.bin_dir.clone()),
        }
    }

    fn haproxy(&self) -> Result<&Path> {
        self.haproxy.as_deref().ok_or_else(|| {
            ProviderError::permanent(
                "BinariesMissing",
                "the local provider needs HAProxy as each cluster's API endpoint: install it (apt-get install \
                 haproxy, or hack/haproxy.sh --ensure) or start the manager with --local-haproxy",
            )
        })
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

    async fn client(&self, kubeconfig: PathBuf) -> Result<kube::Client> {
        if let Some(client) = self.clients.get(&kubeconfig) {
            return Ok(client);
        }
        let client = nodes::client(&kubeconfig).await?;
        self.clients.insert(kubeconfig, client.clone());
        Ok(client)
    }

    /// The cluster's API through its load balancer.
    async fn workload_client(&self, dir: &ClusterDir) -> Result<kube::Client> {
        self.client(dir.admin_kubeconfig()).await
    }

    /// Runs the load balancer in front of the cluster's members as they are now.
    fn ensure_load_balancer(&self, dir: &ClusterDir) -> Result<()> {
        let ports = dir
            .ports_or_allocate()
            .map_err(|e| io("allocating ports", e))?;
        let members = members(dir)?;
        load_balancer::ensure(
            dir,
            self.haproxy()?,
            ports.endpoint,
            &members,
            &self.children,
        )
    }

    /// Whether the member serves: its etcd is healthy and its apiserver answers `/readyz`.
    async fn member_ready(&self, member: &MemberDir, record: &MemberRecord) -> Result<bool> {
        if !etcd_members::healthy(&record.etcd_client_url()).await {
            return Ok(false);
        }
        let client = self.client(member.kubeconfig()).await?;
        Ok(control_plane::api_ready(&client).await)
    }

    /// The etcd client URL of a member other than `except` whose etcd is healthy: membership changes go through it.
    async fn healthy_member(&self, dir: &ClusterDir, except: &str) -> Result<Option<String>> {
        for record in members(dir)? {
            if record.name != except
                && record.initial_cluster.is_some()
                && etcd_members::healthy(&record.etcd_client_url()).await
            {
                return Ok(Some(record.etcd_client_url()));
            }
        }
        Ok(None)
    }

    /// Makes the member `request.name`: its record (ports kept from an interrupted earlier try), its place in the
    /// cluster's etcd, then its processes.
    async fn create_member(
        &self,
        dir: &ClusterDir,
        request: &MachineRequest,
    ) -> Result<MemberRecord> {
        let member = dir.member(&request.name);
        let record = match member
            .record()
            .map_err(|e| io("reading the member record", e))?
        {
            Some(record) => record,
            None => {
                let others = members(dir)?;
                let first = user_data::is_init(request.user_data.as_deref())?;
                if first && !others.is_empty() {
                    return Err(ProviderError::permanent(
                        "AlreadyInitialized",
                        format!(
                            "control-plane machine {} boots with kubeadm init, but the cluster has members ({}): a \
                             later member joins with kubeadm join --control-plane",
                            request.name,
                            others
                                .iter()
                                .map(|m| m.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                if first {
                    let boot = user_data::read(request.user_data.as_deref())?;
                    control_plane::write_pki(dir, &boot)?;
                    dir.save_init_tokens(&boot.init_tokens)
                        .map_err(|e| io("writing the init tokens", e))?;
                } else {
                    let join = user_data::read_join(request.user_data.as_deref())?;
                    if !join.control_plane {
                        return Err(ProviderError::permanent(
                            "InvalidUserData",
                            format!(
                                "control-plane machine {}'s kubeadm join configuration has no controlPlane section: \
                                 it would join as a worker",
                                request.name
                            ),
                        ));
                    }
                    if others.is_empty() {
                        return Err(ProviderError::transient(
                            "NoMemberToJoin",
                            format!(
                                "control-plane machine {} joins the cluster, but it has no member yet: the first \
                                 member initialises it",
                                request.name
                            ),
                        ));
                    }
                    join::verify(dir, &join).await?;
                }
                let record = MemberRecord {
                    name: request.name.clone(),
                    template_hash: request.template_hash.clone(),
                    created_at: Timestamp::now(),
                    ports: dir
                        .allocate_member_ports()
                        .map_err(|e| io("allocating ports", e))?,
                    initial_cluster: None,
                    first,
                    version: Some(request.kubernetes_version.clone()),
                };
                // Saved before etcd hears of the member: a pass interrupted after the add finds the same peer URL.
                member
                    .save_record(&record)
                    .map_err(|e| io("writing the member record", e))?;
                record
            }
        };
        self.complete_member(dir, &member, record).await
    }

    /// Adds the member to the cluster's etcd unless it is (etcd refuses an add while the member added last has not
    /// been connected for a few seconds: that is a transient error, and the next pass, or list, tries again), then
    /// starts its processes and puts it behind the load balancer.
    async fn complete_member(
        &self,
        dir: &ClusterDir,
        member: &MemberDir,
        mut record: MemberRecord,
    ) -> Result<MemberRecord> {
        if record.initial_cluster.is_none() {
            let peer = record.etcd_peer_url();
            let initial_cluster = if record.first {
                format!("{}={peer}", record.name)
            } else {
                let Some(through) = self.healthy_member(dir, &record.name).await? else {
                    return Err(ProviderError::transient(
                        "EtcdUnavailable",
                        format!(
                            "no member's etcd is healthy to add {} through; waiting for one",
                            record.name
                        ),
                    ));
                };
                let etcd = etcd_members::add(&through, &peer).await?;
                info!(member = %record.name, "added to the cluster's etcd");
                etcd_members::initial_cluster(&etcd, &record.name, &peer)
            };
            record.initial_cluster = Some(initial_cluster);
            member
                .save_record(&record)
                .map_err(|e| io("writing the member record", e))?;
        }
        control_plane::write_member_kubeconfig(dir, member, &record)?;
        let bin_dir = self.bin_dir_for(record.version.as_deref())?;
        control_plane::ensure_member_running(dir, member, &bin_dir, &record, &self.children)?;
        self.ensure_load_balancer(dir)?;
        Ok(record)
    }

    /// Removes the member `name`: out of the cluster's etcd first (through another member), then its processes and
    /// directory, then out of the load balancer.
    async fn delete_member(&self, dir: &ClusterDir, name: &str) -> Result<()> {
        let member = dir.member(name);
        if let Some(record) = member
            .record()
            .map_err(|e| io("reading the member record", e))?
        {
            let others = members(dir)?.into_iter().any(|m| m.name != name);
            if others && record.initial_cluster.is_some() {
                let Some(through) = self.healthy_member(dir, name).await? else {
                    return Err(ProviderError::transient(
                        "EtcdUnavailable",
                        format!(
                            "no other member's etcd is healthy to remove {name} through; waiting for one"
                        ),
                    ));
                };
                etcd_members::remove(&through, &record.etcd_peer_url()).await?;
                info!(member = %name, "removed from the cluster's etcd");
            }
        }
        processes::stop_all(
            member.root(),
            &control_plane::MEMBER_COMPONENTS,
            &self.children,
        );
        self.clients.remove(&member.kubeconfig());
        member
            .remove()
            .map_err(|e| io("removing the member directory", e))?;
        self.ensure_load_balancer(dir)
    }
}

fn io(what: &str, e: std::io::Error) -> ProviderError {
    ProviderError::transient("LocalStateError", format!("{what}: {e}"))
}

fn members(dir: &ClusterDir) -> Result<Vec<MemberRecord>> {
    dir.members()
        .map_err(|e| io("reading the control-plane members", e))
}

#[async_trait]
impl InfrastructureProvider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn reconcile_cluster(&self, cluster: &ClusterInfo) -> Result<InfrastructureStatus> {
        control_plane::check_binaries(&self.bin_dir)?;
        self.haproxy()?;
        let dir = self.dir(cluster)?;
        let ports = dir
            .ports_or_allocate()
            .map_err(|e| io("allocating ports", e))?;
        // Members that were running before a manager restart (or a crash of one of their processes) come back
        // here, on the same data directories.
        for record in members(&dir)? {
            let member = dir.member(&record.name);
            control_plane::ensure_member_running(
                &dir,
                &member,
                &self.bin_dir_for(record.version.as_deref())?,
                &record,
                &self.children,
            )?;
        }
        self.ensure_load_balancer(&dir)?;
        if dir
            .record()
            .map_err(|e| io("reading the cluster record", e))?
            .is_some()
        {
            control_plane::ensure_kwok(&dir, &self.bin_dir, &self.children)?;
        }
        Ok(InfrastructureStatus {
            ready: true,
            message: format!(
                "control plane directory {}, endpoint HAProxy on 127.0.0.1:{}",
                dir.root().display(),
                ports.endpoint
            ),
            endpoint: Some(("127.0.0.1".into(), ports.endpoint)),
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
        // Found under the cluster's directory: the members' processes and the cluster's own.
        let all: Vec<&str> = control_plane::MEMBER_COMPONENTS
            .iter()
            .chain(control_plane::CLUSTER_COMPONENTS.iter())
            .copied()
            .collect();
        processes::stop_all(dir.root(), &all, &self.children);
        for record in members(&dir).unwrap_or_default() {
            self.clients.remove(&dir.member(&record.name).kubeconfig());
        }
        self.clients.remove(&dir.admin_kubeconfig());
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
        let records = members(&dir)?;
        match role {
            MachineRole::ControlPlane => {
                let mut machines = Vec::new();
                let mut any_ready = None;
                for mut record in records {
                    let member = dir.member(&record.name);
                    if record.initial_cluster.is_none() {
                        // A create that saved the member but could not add it to etcd yet.
                        match self.complete_member(&dir, &member, record.clone()).await {
                            Ok(completed) => record = completed,
                            Err(error) => {
                                info!(member = %record.name, %error, "the member is not in the cluster's etcd yet")
                            }
                        }
                    }
                    let running = control_plane::ensure_member_running(
                        &dir,
                        &member,
                        &self.bin_dir_for(record.version.as_deref())?,
                        &record,
                        &self.children,
                    )?;
                    let ready = running && self.member_ready(&member, &record).await?;
                    if ready && any_ready.is_none() {
                        any_ready = Some(member.kubeconfig());
                    }
                    // What the member's own apiserver says it runs, not what it was asked to.
                    let version = if ready {
                        control_plane::api_version(&self.client(member.kubeconfig()).await?).await
                    } else {
                        None
                    };
                    machines.push((record, running, ready, version));
                }
                // Like `kubeadm init`, the control plane is ready once its API answers (here: through the load
                // balancer too, which checks a new member every second) and it has created the bootstrap tokens
                // workers join with.
                let serving = match any_ready {
                    Some(kubeconfig) => {
                        let client = self.client(kubeconfig).await?;
                        join::create_init_tokens(&dir, &client).await?;
                        control_plane::api_ready(&self.workload_client(&dir).await?).await
                    }
                    None => false,
                };
                Ok(machines
                    .into_iter()
                    .map(|(record, running, ready, version)| Machine {
                        provider_id: provider_id(cluster, &record.name),
                        name: record.name,
                        phase: if running {
                            MachinePhase::Running
                        } else {
                            MachinePhase::Provisioning
                        },
                        ready: ready && serving,
                        template_hash: record.template_hash,
                        created_at: record.created_at,
                        version,
                    })
                    .collect())
            }
            MachineRole::Worker { pool } => {
                if records.is_empty() {
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
                let record = self.create_member(&dir, request).await?;
                control_plane::ensure_kwok(&dir, &self.bin_dir, &self.children)?;
                Ok(Machine {
                    provider_id: provider_id(cluster, &record.name),
                    name: record.name,
                    phase: MachinePhase::Provisioning,
                    ready: false,
                    template_hash: record.template_hash,
                    created_at: record.created_at,
                    version: None,
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
                if join.control_plane {
                    return Err(ProviderError::permanent(
                        "InvalidUserData",
                        format!(
                            "worker machine {}'s kubeadm join configuration has a controlPlane section",
                            request.name
                        ),
                    ));
                }
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
                self.delete_member(&dir, name).await?;
                Ok(Deletion::Done)
            }
            MachineRole::Worker { .. } => {
                if members(&dir)?.is_empty() {
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
