//! slipway-provider-sim: pretend infrastructure that lives in the manager's memory.
//!
//! Machines take `createDelay` to start and `deleteDelay` to go, and a share of calls fail when the Cluster asks
//! for it (`failurePercent`) or a test injects a number of failures. There is no workload API: a Running machine
//! counts as a Ready node. State is shared by every controller of one manager process; optionally it is also kept
//! in a JSON file, so a test can kill the manager, start another, and count what the provider was asked to create.
//!
//! Not a model of any real cloud: no networks, quotas or prices.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use rand::Rng;
use serde::{Deserialize, Serialize};
use slipway_api::{MachinePhase, SimSettings};
use slipway_provider::{
    ClusterInfo, Deletion, InfrastructureProvider, InfrastructureStatus, Machine, MachineRequest,
    MachineRole, ProviderError, Result,
};

/// The sim provider. Cheap to share: wrap it in an `Arc`.
#[derive(Default)]
pub struct SimProvider {
    state: Mutex<State>,
    state_file: Option<PathBuf>,
    failures_to_inject: AtomicU32,
}

/// Everything the provider holds, keyed by cluster (`<namespace>/<name>/<uid>`).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct State {
    pub clusters: BTreeMap<String, SimCluster>,
    /// How often each machine was created, by `<cluster key>/<machine>`; more than 1 means a duplicate.
    pub creations: BTreeMap<String, u32>,
    pub create_calls: u64,
    pub delete_calls: u64,
    pub list_calls: u64,
    /// Calls that failed on purpose, by cluster key: lets a test see how often a failing cluster is retried.
    pub injected_failures: BTreeMap<String, u32>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SimCluster {
    pub machines: BTreeMap<String, SimMachine>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimMachine {
    pub group: String,
    pub template_hash: String,
    pub created_at: Timestamp,
    pub running_at: Timestamp,
    /// Set once deletion was asked for; the machine is gone after this moment.
    pub gone_at: Option<Timestamp>,
    /// Reported as `Failed` from now on, as a cloud reports a machine that stopped.
    #[serde(default)]
    pub failed: bool,
}

impl SimProvider {
    pub fn new() -> Self {
        Self::default()
    }

    /// A provider whose state is also written to `path` after every change, and read from it now if it exists.
    pub fn with_state_file(path: impl Into<PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            state: Mutex::new(state),
            state_file: Some(path),
            failures_to_inject: AtomicU32::new(0),
        })
    }

    /// Makes the next `count` create or delete calls fail with a transient error.
    pub fn inject_failures(&self, count: u32) {
        self.failures_to_inject.store(count, Ordering::SeqCst);
    }

    /// Makes machine `name` of the Cluster `namespace/name` fail: it is reported `Failed` until it is deleted.
    /// Returns whether there was such a machine.
    pub fn fail_machine(&self, namespace: &str, cluster: &str, machine: &str) -> bool {
        let prefix = format!("{namespace}/{cluster}/");
        let mut state = self.lock();
        let found = state
            .clusters
            .iter_mut()
            .filter(|(key, _)| key.starts_with(&prefix))
            .filter_map(|(_, c)| c.machines.get_mut(machine))
            .map(|m| m.failed = true)
            .count();
        // Only tests call this; a state file that cannot be written shows up in their next call.
        let _ = self.persist(&state);
        found > 0
    }

    /// A copy of the provider's state, for tests and benchmarks.
    pub fn snapshot(&self) -> State {
        self.lock().clone()
    }

    /// Reads the state a provider with a state file left behind.
    pub fn read_state_file(path: &std::path::Path) -> std::io::Result<State> {
        serde_json::from_slice(&std::fs::read(path)?).map_err(std::io::Error::other)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self, state: &State) -> Result<()> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        // Write-then-rename, so a manager killed mid-write leaves the previous state, not half a file.
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(state).expect("sim state serializes");
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| {
                ProviderError::transient(
                    "StateFileUnwritable",
                    format!("sim state file {}: {e}", path.display()),
                )
            })
    }

    /// Fails a mutating call when a fault is injected or drawn, and counts it against `cluster`.
    fn maybe_fail(
        &self,
        state: &mut State,
        cluster: &ClusterInfo,
        settings: &SimSettings,
        operation: &str,
    ) -> Result<()> {
        let injected = self
            .failures_to_inject
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let percent = settings.failure_percent.unwrap_or(0).clamp(0, 100) as u32;
        if injected || (percent > 0 && rand::rng().random_range(0..100) < percent) {
            *state
                .injected_failures
                .entry(cluster_key(cluster))
                .or_default() += 1;
            return Err(ProviderError::transient(
                "InjectedFault",
                format!("sim: injected failure of {operation}"),
            ));
        }
        Ok(())
    }
}

fn settings(cluster: &ClusterInfo) -> Result<&SimSettings> {
    cluster.infrastructure.sim.as_ref().ok_or_else(|| {
        ProviderError::permanent(
            "WrongProvider",
            format!("cluster {} has no spec.infrastructure.sim", cluster.key()),
        )
    })
}

fn delay(value: &Option<String>, field: &str) -> Result<SignedDuration> {
    match value {
        None => Ok(SignedDuration::ZERO),
        Some(text) => text.parse().map_err(|_| {
            ProviderError::permanent(
                "InvalidSettings",
                format!("spec.infrastructure.sim.{field}: {text:?} is not a duration such as 500ms or 2s"),
            )
        }),
    }
}

fn cluster_key(cluster: &ClusterInfo) -> String {
    format!("{}/{}", cluster.key(), cluster.uid)
}

fn provider_id(cluster: &ClusterInfo, name: &str) -> String {
    format!("sim://{}/{}/{}", cluster.namespace, cluster.name, name)
}

fn to_machine(cluster: &ClusterInfo, name: &str, machine: &SimMachine, now: Timestamp) -> Machine {
    let phase = if machine.gone_at.is_some() {
        MachinePhase::Deleting
    } else if machine.failed {
        MachinePhase::Failed
    } else if now >= machine.running_at {
        MachinePhase::Running
    } else {
        MachinePhase::Provisioning
    };
    Machine {
        name: name.to_string(),
        provider_id: provider_id(cluster, name),
        phase,
        ready: phase == MachinePhase::Running,
        template_hash: machine.template_hash.clone(),
        created_at: machine.created_at,
        version: None,
    }
}

/// Drops machines whose deletion delay has passed.
fn sweep(cluster: &mut SimCluster, now: Timestamp) -> bool {
    let before = cluster.machines.len();
    cluster
        .machines
        .retain(|_, m| m.gone_at.is_none_or(|gone| now < gone));
    before != cluster.machines.len()
}

#[async_trait]
impl InfrastructureProvider for SimProvider {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn needs_user_data(&self) -> bool {
        false
    }

    async fn reconcile_cluster(&self, cluster: &ClusterInfo) -> Result<InfrastructureStatus> {
        settings(cluster)?;
        Ok(InfrastructureStatus {
            ready: true,
            message: "sim infrastructure needs no setup".into(),
            // A name for kubeconfigs that resolves nowhere (.invalid is reserved for that): there is no workload API.
            endpoint: Some((
                format!("{}.{}.sim.invalid", cluster.name, cluster.namespace),
                6443,
            )),
            workload_api: false,
        })
    }

    async fn delete_cluster(&self, cluster: &ClusterInfo) -> Result<Deletion> {
        let mut state = self.lock();
        let key = cluster_key(cluster);
        let Some(sim) = state.clusters.get_mut(&key) else {
            return Ok(Deletion::Done);
        };
        sweep(sim, Timestamp::now());
        if !sim.machines.is_empty() {
            return Ok(Deletion::InProgress(format!(
                "{} machines still exist",
                sim.machines.len()
            )));
        }
        state.clusters.remove(&key);
        self.persist(&state)?;
        Ok(Deletion::Done)
    }

    async fn list_machines(
        &self,
        cluster: &ClusterInfo,
        role: &MachineRole,
    ) -> Result<Vec<Machine>> {
        let now = Timestamp::now();
        let mut state = self.lock();
        state.list_calls += 1;
        let Some(sim) = state.clusters.get_mut(&cluster_key(cluster)) else {
            return Ok(Vec::new());
        };
        let swept = sweep(sim, now);
        let machines = sim
            .machines
            .iter()
            .filter(|(_, m)| m.group == role.group())
            .map(|(name, m)| to_machine(cluster, name, m, now))
            .collect();
        if swept {
            self.persist(&state)?;
        }
        Ok(machines)
    }

    async fn create_machine(
        &self,
        cluster: &ClusterInfo,
        request: &MachineRequest,
    ) -> Result<Machine> {
        let settings = settings(cluster)?;
        let create_delay = delay(&settings.create_delay, "createDelay")?;
        let now = Timestamp::now();
        let key = cluster_key(cluster);
        let mut state = self.lock();
        if let Some(existing) = state
            .clusters
            .get(&key)
            .and_then(|c| c.machines.get(&request.name))
        {
            return Ok(to_machine(cluster, &request.name, existing, now));
        }
        self.maybe_fail(&mut state, cluster, settings, "create_machine")?;
        state.create_calls += 1;
        let machine = SimMachine {
            group: request.role.group().to_string(),
            template_hash: request.template_hash.clone(),
            created_at: now,
            running_at: now + create_delay,
            gone_at: None,
            failed: false,
        };
        let result = to_machine(cluster, &request.name, &machine, now);
        state
            .clusters
            .entry(key.clone())
            .or_default()
            .machines
            .insert(request.name.clone(), machine);
        *state
            .creations
            .entry(format!("{key}/{}", request.name))
            .or_default() += 1;
        self.persist(&state)?;
        Ok(result)
    }

    async fn delete_machine(
        &self,
        cluster: &ClusterInfo,
        _role: &MachineRole,
        name: &str,
    ) -> Result<Deletion> {
        let settings = settings(cluster)?;
        let delete_delay = delay(&settings.delete_delay, "deleteDelay")?;
        let now = Timestamp::now();
        let mut state = self.lock();
        let Some(sim) = state.clusters.get_mut(&cluster_key(cluster)) else {
            return Ok(Deletion::Done);
        };
        sweep(sim, now);
        let Some(machine) = sim.machines.get(name) else {
            return Ok(Deletion::Done);
        };
        if machine.gone_at.is_some() {
            return Ok(Deletion::InProgress(format!(
                "machine {name} is shutting down"
            )));
        }
        self.maybe_fail(&mut state, cluster, settings, "delete_machine")?;
        state.delete_calls += 1;
        let sim = state
            .clusters
            .get_mut(&cluster_key(cluster))
            .expect("looked up above");
        let outcome = if delete_delay.is_zero() {
            sim.machines.remove(name);
            Deletion::Done
        } else {
            sim.machines.get_mut(name).expect("looked up above").gone_at = Some(now + delete_delay);
            Deletion::InProgress(format!("machine {name} is shutting down"))
        };
        self.persist(&state)?;
        Ok(outcome)
    }
}
