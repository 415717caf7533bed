//! What must hold after every kill and at every point where the fleet has converged, read from the providers'
//! own records rather than from what the manager reports: the sim provider's state file (which counts every
//! creation of every machine), the local provider's processes in `/proc` and its directories, and the
//! BareMetalHosts' claims (every change of which a watch records).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use slipway_api::{BareMetalHost, HostState};
use slipway_provider_sim::State as SimState;

use crate::fleet::{Life, Provider, Tracked, group_of};

/// Something that must never happen, with what showed it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub what: String,
    pub evidence: String,
}

impl Violation {
    pub fn new(what: impl Into<String>, evidence: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            evidence: evidence.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.evidence)
    }
}

/// The sim provider counts creations by `<namespace>/<name>/<uid>/<machine>`: no control-plane machine is created
/// twice or beyond the control plane's size, no pool creates more than its sizes allow, and no pool machine name
/// is created twice unless the pool shrank (names are reused after a scale-down).
pub fn sim_creations(state: &SimState, clusters: &[Tracked]) -> Vec<Violation> {
    let mut violations = Vec::new();
    for cluster in clusters.iter().filter(|c| c.provider == Provider::Sim) {
        let prefix = format!("{}/{}/{}/", cluster.namespace, cluster.name, cluster.uid);
        let control_plane = format!("{}-control-plane", cluster.name);
        let pool = cluster.pool();
        let mut by_group: BTreeMap<&str, Vec<(&str, u32)>> = BTreeMap::new();
        for (key, count) in state.creations.range(prefix.clone()..) {
            let Some(machine) = key.strip_prefix(&prefix) else {
                break;
            };
            by_group
                .entry(group_of(machine).unwrap_or(machine))
                .or_default()
                .push((machine, *count));
        }
        for (group, machines) in by_group {
            let total: u32 = machines.iter().map(|(_, n)| n).sum();
            let twice: Vec<String> = machines
                .iter()
                .filter(|(_, n)| *n > 1)
                .map(|(m, n)| format!("{m} x{n}"))
                .collect();
            let evidence = || {
                format!(
                    "creations {machines:?}; control plane {}, pool sizes asked {:?}",
                    cluster.control_plane, cluster.workers_asked
                )
            };
            if group == control_plane {
                if !twice.is_empty() || total > cluster.control_plane {
                    violations.push(Violation::new(
                        format!("{}: control-plane machine created twice", cluster.label()),
                        evidence(),
                    ));
                }
            } else if group == pool {
                if total > cluster.worker_creation_bound() {
                    violations.push(Violation::new(
                        format!(
                            "{}: pool created {total} machines, more than the {} its sizes allow",
                            cluster.label(),
                            cluster.worker_creation_bound()
                        ),
                        evidence(),
                    ));
                } else if !twice.is_empty() && !cluster.pool_shrank() {
                    violations.push(Violation::new(
                        format!(
                            "{}: pool machine created twice ({})",
                            cluster.label(),
                            twice.join(", ")
                        ),
                        evidence(),
                    ));
                }
            } else {
                violations.push(Violation::new(
                    format!("{}: machines of unknown group {group}", cluster.label()),
                    evidence(),
                ));
            }
        }
    }
    violations
}

/// Machines the sim provider holds for a cluster, by group, not counting those being deleted.
pub fn sim_live_machines(state: &SimState, cluster: &Tracked) -> BTreeMap<String, usize> {
    let key = format!("{}/{}/{}", cluster.namespace, cluster.name, cluster.uid);
    let mut groups = BTreeMap::new();
    if let Some(sim) = state.clusters.get(&key) {
        for machine in sim.machines.values().filter(|m| m.gone_at.is_none()) {
            *groups.entry(machine.group.clone()).or_default() += 1;
        }
    }
    groups
}

/// Sim clusters of deleted Clusters still in the provider's state.
pub fn sim_orphans(state: &SimState, gone: &[&Tracked]) -> Vec<Violation> {
    gone.iter()
        .filter(|c| c.provider == Provider::Sim)
        .filter_map(|c| {
            let prefix = format!("{}/{}/", c.namespace, c.name);
            let left: Vec<(&String, usize)> = state
                .clusters
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(k, sim)| (k, sim.machines.len()))
                .collect();
            (!left.is_empty()).then(|| {
                Violation::new(
                    format!(
                        "{}: deleted, but the sim provider still holds it",
                        c.label()
                    ),
                    format!("sim state clusters (key, machines): {left:?}"),
                )
            })
        })
        .collect()
}

/// The processes of a local control-plane member, as the local provider starts them (in
/// `<cluster>/members/<machine>/`).
pub const MEMBER_COMPONENTS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The processes of a local cluster as a whole (in the cluster's directory).
pub const CLUSTER_COMPONENTS: [&str; 2] = ["kwok", HAPROXY];

/// A replaced HAProxy drains its connections beside the new one for a while: two of them are not a second set.
const HAPROXY: &str = "haproxy";

/// How many processes a local cluster with one control-plane member runs.
pub const ONE_MEMBER_PROCESSES: usize = MEMBER_COMPONENTS.len() + CLUSTER_COMPONENTS.len();

/// A live process of a local workload cluster, found in `/proc` by the cluster directory in its command line.
#[derive(Debug, Clone)]
pub struct LocalProcess {
    pub pid: u32,
    pub component: String,
    /// `<state root>/<namespace>/<name>`.
    pub dir: PathBuf,
    /// Where its `run/<component>.pid` is: the member's directory, or the cluster's.
    pub home: PathBuf,
}

impl LocalProcess {
    /// The process's place in its cluster: `<member>/<component>`, or `<component>` for the cluster's own.
    pub fn slot(&self) -> String {
        match self.home.strip_prefix(self.dir.join("members")) {
            Ok(member) => format!("{}/{}", member.display(), self.component),
            Err(_) => self.component.clone(),
        }
    }
}

/// Every live (not zombie) process whose command line names a cluster directory under `root`.
pub fn local_processes(root: &Path) -> Vec<LocalProcess> {
    let root = format!("{}/", root.display());
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(component) = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .and_then(|n| n.to_str())
            .filter(|n| MEMBER_COMPONENTS.contains(n) || CLUSTER_COMPONENTS.contains(n))
        else {
            continue;
        };
        // `<root><namespace>/<name>/[members/<member>/]...` somewhere in the arguments.
        let Some((dir, home)) = args.iter().find_map(|a| {
            let rest = &a[a.find(&root)? + root.len()..];
            let mut parts = rest.split('/');
            let (namespace, name) = (parts.next()?, parts.next()?);
            if namespace.is_empty() || name.is_empty() {
                return None;
            }
            let dir = PathBuf::from(format!("{root}{namespace}/{name}"));
            let home = match (parts.next(), parts.next()) {
                (Some("members"), Some(member)) if MEMBER_COMPONENTS.contains(&component) => {
                    dir.join("members").join(member)
                }
                _ => dir.clone(),
            };
            Some((dir, home))
        }) else {
            continue;
        };
        if is_zombie(pid) {
            continue;
        }
        found.push(LocalProcess {
            pid,
            component: component.to_string(),
            dir,
            home,
        });
    }
    found
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')')
            .is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

pub fn local_dir(root: &Path, cluster: &Tracked) -> PathBuf {
    root.join(&cluster.namespace).join(&cluster.name)
}

/// The process ids of a cluster's processes by [`LocalProcess::slot`]: exactly one per slot (HAProxy: the one its
/// pid file names, if it runs), or a violation.
pub fn local_process_set(
    processes: &[LocalProcess],
    dir: &Path,
    label: &str,
) -> Result<BTreeMap<String, u32>, Violation> {
    let mut set: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for p in processes.iter().filter(|p| p.dir == dir) {
        set.entry(p.slot()).or_default().push(p.pid);
    }
    if let Some(haproxies) = set.get_mut(HAPROXY) {
        let named = std::fs::read_to_string(dir.join("run").join(format!("{HAPROXY}.pid")))
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok());
        match named.filter(|pid| haproxies.contains(pid)) {
            Some(pid) => *haproxies = vec![pid],
            None => haproxies.truncate(1),
        }
    }
    let doubled: Vec<String> = set
        .iter()
        .filter(|(_, pids)| pids.len() > 1)
        .map(|(c, pids)| format!("{c} {pids:?}"))
        .collect();
    if !doubled.is_empty() {
        return Err(Violation::new(
            format!("{label}: a second process set"),
            format!(
                "live processes with {} in their command line: {}",
                dir.display(),
                doubled.join("; ")
            ),
        ));
    }
    Ok(set.into_iter().map(|(c, pids)| (c, pids[0])).collect())
}

/// After a kill, with no manager running: no cluster runs two processes of one component, every process is the
/// one its pid file names (else no manager can ever stop it), and a control plane seen converged still runs some of
/// the processes it ran then (a restarted manager adopts them rather than starting the cluster again).
pub fn local_after_kill(root: &Path, clusters: &[Tracked]) -> Vec<Violation> {
    let processes = local_processes(root);
    let mut violations = Vec::new();
    let dirs: BTreeSet<&PathBuf> = processes.iter().map(|p| &p.dir).collect();
    let home_of = |dir: &Path, slot: &str| -> (PathBuf, String) {
        match slot.rsplit_once('/') {
            Some((member, component)) => (dir.join("members").join(member), component.to_string()),
            None => (dir.to_path_buf(), slot.to_string()),
        }
    };
    for dir in dirs {
        let label = clusters
            .iter()
            .find(|c| c.provider == Provider::Local && local_dir(root, c) == *dir)
            .map_or_else(|| format!("local {}", dir.display()), Tracked::label);
        match local_process_set(&processes, dir, &label) {
            Err(v) => violations.push(v),
            Ok(set) => {
                for (slot, pid) in &set {
                    let (home, component) = home_of(dir, slot);
                    let file = home.join("run").join(format!("{component}.pid"));
                    let recorded = std::fs::read_to_string(&file).ok();
                    if recorded.as_deref().map(str::trim) != Some(pid.to_string().as_str()) {
                        violations.push(Violation::new(
                            format!("{label}: {slot} runs untracked"),
                            format!(
                                "pid {pid} is alive, but {} holds {recorded:?}",
                                file.display()
                            ),
                        ));
                    }
                }
            }
        }
    }
    for cluster in clusters
        .iter()
        .filter(|c| c.provider == Provider::Local && c.life == Life::Live)
    {
        let Some(adopted) = &cluster.adopted_pids else {
            continue;
        };
        let now: BTreeMap<String, u32> = processes
            .iter()
            .filter(|p| p.dir == local_dir(root, cluster))
            .map(|p| (p.slot(), p.pid))
            .collect();
        // A component that died by itself (a controller-manager giving up on a slow apiserver, say) is restarted,
        // and that is the provider's job; a control plane none of whose processes is the one it ran is one the
        // manager made again instead of adopting it.
        let kept = adopted
            .iter()
            .filter(|(component, pid)| now.get(*component) == Some(pid))
            .count();
        if kept == 0 {
            violations.push(Violation::new(
                format!("{}: control-plane processes replaced", cluster.label()),
                format!("converged with {adopted:?}, now {now:?}"),
            ));
        }
    }
    violations
}

/// Once deletions converged: no process and no directory of a local cluster that is not live.
pub fn local_orphans(root: &Path, clusters: &[Tracked]) -> Vec<Violation> {
    let live: BTreeSet<PathBuf> = clusters
        .iter()
        .filter(|c| c.provider == Provider::Local && c.life == Life::Live)
        .map(|c| local_dir(root, c))
        .collect();
    let mut violations = Vec::new();
    let mut orphaned: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for p in local_processes(root) {
        if !live.contains(&p.dir) {
            orphaned
                .entry(p.dir.clone())
                .or_default()
                .push(format!("{} {}", p.component, p.pid));
        }
    }
    for (dir, processes) in orphaned {
        violations.push(Violation::new(
            format!("local {}: processes outlived their cluster", dir.display()),
            processes.join(", "),
        ));
    }
    for cluster in clusters
        .iter()
        .filter(|c| c.provider == Provider::Local && c.life == Life::Deleted)
    {
        let dir = local_dir(root, cluster);
        if dir.exists() {
            let entries: Vec<String> = std::fs::read_dir(&dir)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            violations.push(Violation::new(
                format!("{}: deleted, but its directory is left", cluster.label()),
                format!("{} holds {entries:?}", dir.display()),
            ));
        }
    }
    violations
}

/// Who holds a host: the Cluster (by UID) and the machine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Claim {
    pub cluster: String,
    pub uid: String,
    pub group: String,
    pub machine: String,
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({})", self.cluster, self.machine, self.uid)
    }
}

pub fn claim_of(host: &BareMetalHost) -> Option<Claim> {
    let consumer = host.status.as_ref()?.consumer_ref.as_ref()?;
    Some(Claim {
        cluster: consumer.cluster.clone(),
        uid: consumer.cluster_uid.clone().unwrap_or_default(),
        group: consumer.group.clone(),
        machine: consumer.machine.clone(),
    })
}

pub fn host_state(host: &BareMetalHost) -> Option<HostState> {
    host.status.as_ref().and_then(|s| s.state)
}

/// Every change of every host's claim, as a watch delivered it. A host that goes from one machine to another
/// without being released in between was claimed twice; claims are counted per machine group.
#[derive(Debug, Default)]
pub struct HostLedger {
    last: BTreeMap<String, Option<Claim>>,
    /// New claims by (cluster UID, group).
    pub claims: BTreeMap<(String, String), u32>,
    /// New claims by (cluster UID, machine).
    pub machine_claims: BTreeMap<(String, String), u32>,
    pub switches: Vec<Violation>,
    /// Changes seen, for the summary.
    pub changes: u64,
    /// Whether the watch had to list again; across a relist an intermediate release may be unseen.
    relisting: bool,
}

impl HostLedger {
    pub fn relist_started(&mut self) {
        self.relisting = true;
    }

    pub fn relist_done(&mut self) {
        self.relisting = false;
    }

    pub fn observe(&mut self, host: &BareMetalHost) {
        let name = host.metadata.name.clone().unwrap_or_default();
        let now = claim_of(host);
        let before = self.last.insert(name.clone(), now.clone()).flatten();
        if before == now {
            return;
        }
        self.changes += 1;
        let Some(claim) = now else {
            return;
        };
        if let Some(previous) = before
            && !self.relisting
        {
            self.switches.push(Violation::new(
                format!("BareMetalHost {name} went from one machine to another without a release"),
                format!("held by {previous}, then by {claim}"),
            ));
        }
        *self
            .claims
            .entry((claim.uid.clone(), claim.group.clone()))
            .or_default() += 1;
        *self
            .machine_claims
            .entry((claim.uid, claim.machine))
            .or_default() += 1;
    }

    pub fn forget(&mut self, host: &str) {
        self.last.remove(host);
    }
}

/// From a fresh list of hosts and the ledger: no machine holds two hosts, no host changed hands without a
/// release, and no group claimed more hosts than its sizes allow.
pub fn metal_claims(
    hosts: &[BareMetalHost],
    ledger: &HostLedger,
    clusters: &[Tracked],
) -> Vec<Violation> {
    let mut violations = ledger.switches.clone();
    let mut held: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for host in hosts {
        if let Some(claim) = claim_of(host) {
            held.entry((claim.uid, claim.machine))
                .or_default()
                .push(host.metadata.name.clone().unwrap_or_default());
        }
    }
    for ((uid, machine), hosts) in held.iter().filter(|(_, h)| h.len() > 1) {
        violations.push(Violation::new(
            format!("machine {machine} holds {} hosts", hosts.len()),
            format!("cluster UID {uid}: hosts {hosts:?}"),
        ));
    }
    for cluster in clusters.iter().filter(|c| c.provider == Provider::Metal) {
        let claims = |group: &str| {
            ledger
                .claims
                .get(&(cluster.uid.clone(), group.to_string()))
                .copied()
                .unwrap_or(0)
        };
        let control_plane = claims("control-plane");
        let workers = claims(&cluster.pool());
        let twice: Vec<String> = ledger
            .machine_claims
            .iter()
            .filter(|((uid, machine), n)| {
                *uid == cluster.uid
                    && **n > 1
                    && (group_of(machine) != Some(cluster.pool().as_str())
                        || !cluster.pool_shrank())
            })
            .map(|((_, m), n)| format!("{m} x{n}"))
            .collect();
        if control_plane > cluster.control_plane
            || workers > cluster.worker_creation_bound()
            || !twice.is_empty()
        {
            violations.push(Violation::new(
                format!("{}: hosts claimed twice", cluster.label()),
                format!(
                    "control-plane claims {control_plane} (size {}), pool claims {workers} (sizes asked {:?}, at most {}), claimed more than once: {twice:?}",
                    cluster.control_plane,
                    cluster.workers_asked,
                    cluster.worker_creation_bound()
                ),
            ));
        }
    }
    violations
}

/// Hosts still held by a Cluster that is gone.
pub fn metal_orphans(hosts: &[BareMetalHost], gone: &[&Tracked]) -> Vec<Violation> {
    hosts
        .iter()
        .filter_map(|host| {
            let claim = claim_of(host)?;
            let cluster = gone
                .iter()
                .find(|c| c.provider == Provider::Metal && c.name == claim.cluster)?;
            Some(Violation::new(
                format!("{}: deleted, but a host stays claimed", cluster.label()),
                format!(
                    "BareMetalHost {} held by {claim}, state {:?}",
                    host.metadata.name.clone().unwrap_or_default(),
                    host_state(host)
                ),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_api::{BareMetalHostSpec, BareMetalHostStatus, BmcDetails, ConsumerRef};

    fn host(name: &str, machine: Option<&str>) -> BareMetalHost {
        let mut host = BareMetalHost::new(
            name,
            BareMetalHostSpec {
                bmc: BmcDetails {
                    address: "redfish+https://127.0.0.1/redfish/v1/Systems/1".into(),
                    credentials_secret_ref: None,
                    disable_certificate_verification: true,
                },
                boot_mac_address: None,
            },
        );
        host.status = Some(BareMetalHostStatus {
            consumer_ref: machine.map(|m| ConsumerRef {
                namespace: "ns".into(),
                cluster: "m1".into(),
                cluster_uid: Some("uid-1".into()),
                group: "m1-workers".into(),
                machine: m.into(),
            }),
            ..Default::default()
        });
        host
    }

    #[test]
    fn a_host_that_changes_hands_without_a_release_is_a_violation() {
        let mut ledger = HostLedger::default();
        ledger.observe(&host("h0", None));
        ledger.observe(&host("h0", Some("m1-workers-abc1234-0")));
        ledger.observe(&host("h0", None));
        ledger.observe(&host("h0", Some("m1-workers-abc1234-1")));
        assert!(ledger.switches.is_empty());
        assert_eq!(ledger.claims[&("uid-1".into(), "m1-workers".into())], 2);
        ledger.observe(&host("h0", Some("m1-workers-abc1234-2")));
        assert_eq!(ledger.switches.len(), 1, "{:?}", ledger.switches);
    }

    fn sim_cluster(asked: &[u32]) -> Tracked {
        Tracked {
            provider: Provider::Sim,
            namespace: "ns".into(),
            name: "s1".into(),
            uid: "uid-1".into(),
            control_plane: 1,
            workers_asked: asked.to_vec(),
            life: Life::Live,
            adopted_pids: None,
            node_uids: BTreeMap::new(),
        }
    }

    fn creations(counts: &[(&str, u32)]) -> SimState {
        SimState {
            creations: counts
                .iter()
                .map(|(m, n)| (format!("ns/s1/uid-1/{m}"), *n))
                .chain([("ns/s10/uid-2/s10-workers-abc1234-0".to_string(), 5)])
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn sim_creations_beyond_what_was_asked_are_violations() {
        let fine = creations(&[
            ("s1-control-plane-abc1234-0", 1),
            ("s1-workers-abc1234-0", 1),
            ("s1-workers-abc1234-1", 2),
        ]);
        // 2, then 1, then 2 again: the second machine may be made twice.
        assert!(sim_creations(&fine, &[sim_cluster(&[2, 1, 2])]).is_empty());
        // Without the scale-down, the same counts are a machine created twice.
        assert_eq!(sim_creations(&fine, &[sim_cluster(&[2])]).len(), 1);
        // More creations than the sizes allow (2, then 1 more after the scale-down: 3).
        let many = creations(&[
            ("s1-control-plane-abc1234-0", 1),
            ("s1-workers-abc1234-0", 1),
            ("s1-workers-abc1234-1", 1),
            ("s1-workers-abc1234-2", 1),
            ("s1-workers-abc1234-3", 1),
        ]);
        assert_eq!(sim_creations(&many, &[sim_cluster(&[2, 1, 2])]).len(), 1);
        // A control-plane machine made twice.
        let twice = creations(&[("s1-control-plane-abc1234-0", 2)]);
        assert_eq!(sim_creations(&twice, &[sim_cluster(&[0])]).len(), 1);
    }

    #[test]
    fn a_machine_on_two_hosts_is_a_violation() {
        let hosts = [
            host("h0", Some("m1-workers-abc1234-0")),
            host("h1", Some("m1-workers-abc1234-0")),
        ];
        let violations = metal_claims(&hosts, &HostLedger::default(), &[]);
        assert_eq!(violations.len(), 1, "{violations:?}");
    }
}
