//! The kill campaign: one `slipway manager` process (sim, local and bare-metal providers, leader election on
//! with a fixed identity, as a restarted pod keeps its name) is SIGKILLed at random moments while clusters of all
//! three providers are created, scaled and deleted, and started again each time.
//!
//! The campaign goes in rounds. A round applies a few actions (sim in every round; local and bare metal, which
//! are slow, every `slow_every` rounds), then kills the manager two to four times at random delays, restarting it
//! after each kill. Right after each kill, with no manager running, it checks what must never happen (a machine
//! created twice, a host held twice, a second process set). After the round's last restart it waits until the
//! fleet has converged (every live cluster Ready at the size asked, as the provider itself reports it; every
//! deleted one gone) and then checks that nothing of a deleted cluster is left.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use slipway_api::{BareMetalHost, Cluster, HostState, MachinePool};

use crate::fleet::{self, Life, Provider, Tracked};
use crate::invariants::{self, HostLedger, Violation};
use crate::metal;
use crate::support::{self, ManagerProcess};

/// Systems the Redfish emulator serves and BareMetalHosts made for them: two bare-metal clusters of at most
/// three machines each fit, with room to spare.
const HOSTS: usize = 8;
const MAX_SIM: usize = 6;
const MAX_LOCAL: usize = 2;
const MAX_METAL: usize = 2;
/// How long a round may take to converge after its last restart, by the slowest provider acted on. Bare-metal
/// power changes land 1–11 s after they are asked for and the host controller looks every 5 s.
const CONVERGE_SIM: Duration = Duration::from_secs(60);
const CONVERGE_SLOW: Duration = Duration::from_secs(240);
const POLL: Duration = Duration::from_millis(500);

pub struct Options {
    pub kills: usize,
    pub seed: u64,
    /// Local and bare-metal actions every this many rounds (sim acts in every round).
    pub slow_every: usize,
    /// Print per-kill lines as they happen (the short test keeps quiet unless it fails).
    pub verbose: bool,
    /// The `slipway` binary to run as the manager.
    pub manager_binary: PathBuf,
}

/// What a campaign did and found.
pub struct Report {
    pub seed: u64,
    pub kills: usize,
    pub rounds: usize,
    pub actions: BTreeMap<String, usize>,
    pub duration: Duration,
    /// From each round's last restart until the fleet had converged.
    pub convergence: Vec<Duration>,
    pub violations: Vec<Violation>,
    pub providers_touched: BTreeSet<Provider>,
    pub sim_creations: u32,
    pub host_claims: u32,
    pub local_control_planes: usize,
    pub manager_warnings: usize,
    pub log_dir: PathBuf,
    pub lines: Vec<String>,
}

impl Report {
    pub fn summary(&self) -> String {
        let mut convergence = self.convergence.clone();
        convergence.sort();
        let median = convergence
            .get(convergence.len() / 2)
            .copied()
            .unwrap_or_default();
        let max = convergence.last().copied().unwrap_or_default();
        let actions: usize = self.actions.values().sum();
        let mut out = format!(
            "kill campaign (seed {}): {} kills in {} rounds, {actions} actions ({}) on {}\n",
            self.seed,
            self.kills,
            self.rounds,
            self.actions
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.providers_touched
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        );
        out += &format!(
            "duration {:.1} s, {:.1} s per kill; convergence after a round's last restart: median {:.1} s, max {:.1} s\n",
            self.duration.as_secs_f64(),
            self.duration.as_secs_f64() / self.kills.max(1) as f64,
            median.as_secs_f64(),
            max.as_secs_f64()
        );
        out += &format!(
            "provider work: {} sim machine creations, {} bare-metal host claims, {} local control planes; manager logged {} WARN/ERROR lines over all incarnations\n",
            self.sim_creations, self.host_claims, self.local_control_planes, self.manager_warnings
        );
        if self.violations.is_empty() {
            out += "violations: none\n";
        } else {
            out += &format!("violations: {}\n", self.violations.len());
            for v in &self.violations {
                out += &format!("  - {v}\n");
            }
            out += &format!("manager logs: {}\n", self.log_dir.display());
        }
        out
    }
}

/// The manager, one incarnation after another, each with its own log.
struct Manager {
    binary: PathBuf,
    kubeconfig: PathBuf,
    dir: PathBuf,
    args: Vec<String>,
    current: Option<ManagerProcess>,
    started_at: Instant,
    logs: Vec<PathBuf>,
}

impl Manager {
    fn start(&mut self) {
        let log = self.dir.join(format!("manager-{:03}.log", self.logs.len()));
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let level = std::env::var("SLIPWAY_TEST_MANAGER_LOG").unwrap_or_else(|_| "info".into());
        self.current = Some(ManagerProcess::start_binary(
            &self.binary,
            &self.kubeconfig,
            &log,
            &args,
            &level,
        ));
        self.started_at = Instant::now();
        self.logs.push(log);
    }

    /// A manager that exited without being killed crashed: its log says why.
    fn exited_by_itself(&mut self) -> Option<Violation> {
        let process = self.current.as_mut()?;
        let status = process.child.try_wait().ok()??;
        let log = self.logs.last().expect("a started manager has a log");
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        self.current = None;
        Some(Violation::new(
            format!("the manager exited by itself ({status})"),
            format!("{}: {}", log.display(), tail.join(" | ")),
        ))
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.current.take() {
            process.kill();
        }
    }

    fn stop(&mut self) {
        if let Some(mut process) = self.current.take() {
            process.terminate();
        }
    }

    /// Lines of all logs that mention `needle` at WARN or ERROR, the last `limit` of them.
    fn log_lines(&self, needle: &str, limit: usize) -> Vec<String> {
        let mut found = Vec::new();
        for log in &self.logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            for line in text.lines() {
                let line = without_ansi(line);
                if line.contains(needle) && (line.contains("WARN") || line.contains("ERROR")) {
                    let name = log.file_name().unwrap_or_default().to_string_lossy();
                    let line: String = line.chars().take(400).collect();
                    found.push(format!("{name}: {line}"));
                }
            }
        }
        let skip = found.len().saturating_sub(limit);
        found.split_off(skip)
    }

    fn warnings(&self) -> usize {
        self.logs
            .iter()
            .map(|log| {
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                    .count()
            })
            .sum()
    }

    fn panics(&self) -> Vec<String> {
        self.logs
            .iter()
            .flat_map(|log| {
                let name = log
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("panicked"))
                    .map(|l| format!("{name}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

struct Campaign {
    client: Client,
    rng: StdRng,
    options: Options,
    sim_ns: String,
    local_ns: String,
    metal_ns: String,
    sim_state: PathBuf,
    local_root: PathBuf,
    image_url: String,
    ledger: Arc<Mutex<HostLedger>>,
    manager: Manager,
    clusters: Vec<Tracked>,
    next_name: usize,
    report: Report,
    /// Violations already reported, by what they say: a check that runs again finds the same ones again.
    seen: BTreeSet<String>,
    started: Instant,
}

/// Runs a campaign of `options.kills` kills against the test binary's apiserver; `dir` keeps the manager logs
/// and the providers' state.
pub async fn run(options: Options, dir: &Path) -> Report {
    let env = support::env().await;
    let client = env.client().await;
    let sim_ns = env.create_namespace("chaos-sim").await;
    let local_ns = env.create_namespace("chaos-local").await;
    let metal_ns = env.create_namespace("chaos-metal").await;
    let sim_state = dir.join("sim.json");
    let local_root = dir.join("clusters");
    std::fs::create_dir_all(&local_root).unwrap();
    // Workload clusters outlive their manager on purpose; they must not outlive the campaign, even one that fails
    // half-way. Found by their command lines, not by pid files: pids are reused quickly here (pid_max 32768), and
    // a stale pid file would name someone else's process.
    let _cleanup = LocalCleanup(local_root.clone());

    let sushy = metal::Sushy::start(HOSTS, true).await;
    let image = metal::ImageServer::start().await;
    metal::create_hosts(&client, &metal_ns, &sushy, HOSTS).await;
    let ledger = Arc::new(Mutex::new(HostLedger::default()));
    let watch = tokio::spawn(record_hosts(
        Api::namespaced(client.clone(), &metal_ns),
        ledger.clone(),
    ));

    let args = vec![
        "--enable-provider=sim,local".to_string(),
        "--leader-elect=true".to_string(),
        // A restarted pod keeps its name, and with it its identity in the Lease: it leads again at once.
        "--identity=chaos-manager".to_string(),
        format!("--lease-namespace={sim_ns}"),
        format!("--sim-state-file={}", sim_state.display()),
        format!("--local-state-dir={}", local_root.display()),
        format!("--local-bin-dir={}", slipway_testenv::bin_dir().display()),
        // The Redfish emulator and the image server listen on loopback.
        "--allow-egress=127.0.0.0/8".to_string(),
    ];
    let mut campaign = Campaign {
        client: client.clone(),
        rng: StdRng::seed_from_u64(options.seed),
        sim_ns,
        local_ns,
        metal_ns: metal_ns.clone(),
        sim_state,
        local_root,
        image_url: image.url.clone(),
        ledger,
        manager: Manager {
            binary: options.manager_binary.clone(),
            kubeconfig: env.kubeconfig_path().to_path_buf(),
            dir: dir.to_path_buf(),
            args,
            current: None,
            started_at: Instant::now(),
            logs: Vec::new(),
        },
        clusters: Vec::new(),
        next_name: 0,
        report: Report {
            seed: options.seed,
            kills: 0,
            rounds: 0,
            actions: BTreeMap::new(),
            duration: Duration::ZERO,
            convergence: Vec::new(),
            violations: Vec::new(),
            providers_touched: BTreeSet::new(),
            sim_creations: 0,
            host_claims: 0,
            local_control_planes: 0,
            manager_warnings: 0,
            log_dir: dir.to_path_buf(),
            lines: Vec::new(),
        },
        seen: BTreeSet::new(),
        started: Instant::now(),
        options,
    };
    campaign.say(format!(
        "kill campaign: {} kills, seed {}, logs and state in {}",
        campaign.options.kills,
        campaign.options.seed,
        dir.display()
    ));
    campaign.manager.start();
    campaign.wait_for_hosts().await;
    campaign.started = Instant::now();

    campaign.rounds().await;
    campaign.delete_everything().await;

    campaign.manager.stop();
    watch.abort();
    let leftover = campaign.kill_leftover_processes();
    if !leftover.is_empty() {
        campaign.violation(Violation::new(
            "local processes left after the campaign (killed now)",
            leftover.join(", "),
        ));
    }
    for line in campaign.manager.panics() {
        campaign.violation(Violation::new("the manager panicked", line));
    }
    campaign.report.duration = campaign.started.elapsed();
    campaign.report.manager_warnings = campaign.manager.warnings();
    if let Ok(state) = slipway_provider_sim::SimProvider::read_state_file(&campaign.sim_state) {
        campaign.report.sim_creations = state.creations.values().sum();
    }
    campaign.report.host_claims = campaign.ledger.lock().unwrap().claims.values().sum();
    campaign.report.local_control_planes = campaign
        .clusters
        .iter()
        .filter(|c| c.provider == Provider::Local)
        .count();
    drop(sushy);
    campaign.report
}

/// Records every change of every host in the namespace, for as long as the campaign runs.
async fn record_hosts(api: Api<BareMetalHost>, ledger: Arc<Mutex<HostLedger>>) {
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let Ok(event) = event else {
            // The watcher retries by itself; a failed attempt only delays what it delivers.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut ledger = ledger.lock().unwrap();
        match event {
            watcher::Event::Init => ledger.relist_started(),
            watcher::Event::InitApply(host) | watcher::Event::Apply(host) => ledger.observe(&host),
            watcher::Event::InitDone => ledger.relist_done(),
            watcher::Event::Delete(host) => ledger.forget(&host.name_any()),
        }
    }
}

/// What a round does to one cluster.
enum Action {
    Create(Tracked, String),
    Scale(usize, u32),
    Delete(usize),
}

impl Campaign {
    fn say(&mut self, line: String) {
        if self.options.verbose {
            println!("{line}");
        }
        self.report.lines.push(line);
    }

    /// Records a violation unless the same one was recorded before; adds what the manager logged about it.
    fn violation(&mut self, mut v: Violation) {
        if !self.seen.insert(v.what.clone()) {
            return;
        }
        let cluster = self
            .clusters
            .iter()
            .find(|c| v.what.contains(&c.label()))
            .map(|c| c.name.clone());
        if let Some(name) = cluster {
            let lines = self.manager.log_lines(&name, 3);
            if !lines.is_empty() {
                v.evidence += &format!("; manager log: {}", lines.join(" | "));
            }
        }
        // A local cluster's directory goes with its deletion: keep its pid files and component logs as they are.
        if let Some(local) = self
            .clusters
            .iter()
            .find(|c| c.provider == Provider::Local && v.what.contains(&c.label()))
        {
            let from = invariants::local_dir(&self.local_root, local);
            let to = self.manager.dir.join("evidence").join(format!(
                "{}-{}",
                local.name,
                self.seen.len()
            ));
            for sub in ["run", "logs"] {
                copy_dir(&from.join(sub), &to.join(sub));
            }
            let pid_files: Vec<String> = std::fs::read_dir(from.join("run"))
                .map(|d| {
                    d.flatten()
                        .map(|e| {
                            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                            format!("{}={}", e.file_name().to_string_lossy(), text.trim())
                        })
                        .collect()
                })
                .unwrap_or_default();
            v.evidence += &format!("; pid files now {pid_files:?}; copied to {}", to.display());
        }
        self.say(format!("VIOLATION {v}"));
        self.report.violations.push(v);
    }

    async fn wait_for_hosts(&mut self) {
        let api: Api<BareMetalHost> = Api::namespaced(self.client.clone(), &self.metal_ns);
        support::eventually(
            &format!("{HOSTS} BareMetalHosts Available"),
            Duration::from_secs(120),
            || async {
                let hosts = api
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let available = hosts
                    .iter()
                    .filter(|h| invariants::host_state(h) == Some(HostState::Available))
                    .count();
                (available == HOSTS)
                    .then_some(())
                    .ok_or_else(|| format!("{available} Available"))
            },
        )
        .await;
    }

    async fn rounds(&mut self) {
        while self.report.kills < self.options.kills {
            self.report.rounds += 1;
            let round = self.report.rounds;
            let slow = (round - 1).is_multiple_of(self.options.slow_every);
            let mut actions = self.plan_sim();
            if slow {
                actions.extend(self.plan_slow(Provider::Local));
                actions.extend(self.plan_slow(Provider::Metal));
            }
            // Now and then an action lands while no manager runs: the next one finds it on start.
            let while_down = if actions.len() > 1 && self.rng.random_bool(0.3) {
                actions.pop()
            } else {
                None
            };
            let mut done = Vec::new();
            for action in actions {
                done.push(self.act(action).await);
            }
            let kills = self
                .rng
                .random_range(2..=4)
                .min(self.options.kills - self.report.kills);
            let longest = if slow { 8.0 } else { 3.0 };
            let mut while_down = while_down;
            for _ in 0..kills {
                let delay = Duration::from_secs_f64(self.rng.random_range(0.05..longest));
                tokio::time::sleep(delay).await;
                self.kill_and_restart(round, &mut while_down, &mut done)
                    .await;
            }
            let converged = self.converge(round, slow, &done).await;
            if !converged {
                break;
            }
        }
    }

    fn live(&self, provider: Provider) -> Vec<usize> {
        self.clusters
            .iter()
            .enumerate()
            .filter(|(_, c)| c.provider == provider && c.life == Life::Live)
            .map(|(i, _)| i)
            .collect()
    }

    fn new_cluster(&mut self, provider: Provider, control_plane: u32, workers: u32) -> Tracked {
        self.next_name += 1;
        let (prefix, namespace) = match provider {
            Provider::Sim => ("s", self.sim_ns.clone()),
            Provider::Local => ("l", self.local_ns.clone()),
            Provider::Metal => ("m", self.metal_ns.clone()),
        };
        Tracked {
            provider,
            namespace,
            name: format!("{prefix}{}", self.next_name),
            uid: String::new(),
            control_plane,
            workers_asked: vec![workers],
            life: Life::Live,
            adopted_pids: None,
            node_uids: BTreeMap::new(),
        }
    }

    /// One or two sim actions: create while there are few, otherwise scale or delete.
    fn plan_sim(&mut self) -> Vec<Action> {
        let count = self.rng.random_range(1..=2);
        let mut actions = Vec::new();
        let mut touched = BTreeSet::new();
        for _ in 0..count {
            let live: Vec<usize> = self
                .live(Provider::Sim)
                .into_iter()
                .filter(|i| !touched.contains(i))
                .collect();
            let roll: f64 = self.rng.random();
            let action = if live.len() < 2 || (live.len() < MAX_SIM && roll < 0.35) {
                let control_plane = *[1, 3].choose(&mut self.rng).unwrap();
                let workers = self.rng.random_range(0..=5);
                let create_delay = ["200ms", "1s", "2s"].choose(&mut self.rng).unwrap();
                let delete_delay = ["0s", "500ms", "1s"].choose(&mut self.rng).unwrap();
                let settings =
                    format!("{{ createDelay: {create_delay}, deleteDelay: {delete_delay} }}");
                Action::Create(
                    self.new_cluster(Provider::Sim, control_plane, workers),
                    settings,
                )
            } else if roll < 0.75 {
                let i = *live.choose(&mut self.rng).unwrap();
                touched.insert(i);
                Action::Scale(i, self.other_size(i, 0..=6))
            } else {
                let i = *live.choose(&mut self.rng).unwrap();
                touched.insert(i);
                Action::Delete(i)
            };
            actions.push(action);
        }
        actions
    }

    /// One local or bare-metal action: a cluster when there is none, otherwise scale, delete or another one.
    fn plan_slow(&mut self, provider: Provider) -> Option<Action> {
        let live = self.live(provider);
        let most = if provider == Provider::Local {
            MAX_LOCAL
        } else {
            MAX_METAL
        };
        let roll: f64 = self.rng.random();
        let (workers, sizes) = match provider {
            Provider::Local => (self.rng.random_range(1..=2), 1..=3),
            _ => (self.rng.random_range(1..=2), 0..=2),
        };
        Some(if live.is_empty() || (live.len() < most && roll < 0.3) {
            let settings = match provider {
                Provider::Metal => fleet::metal_settings(&self.image_url),
                _ => String::new(),
            };
            Action::Create(self.new_cluster(provider, 1, workers), settings)
        } else if roll < 0.7 {
            let i = *live.choose(&mut self.rng).unwrap();
            Action::Scale(i, self.other_size(i, sizes))
        } else {
            Action::Delete(*live.choose(&mut self.rng).unwrap())
        })
    }

    fn other_size(&mut self, i: usize, sizes: std::ops::RangeInclusive<u32>) -> u32 {
        let now = self.clusters[i].workers();
        let choices: Vec<u32> = sizes.filter(|s| *s != now).collect();
        *choices.choose(&mut self.rng).unwrap()
    }

    /// Carries out an action through the apiserver and says what it was.
    async fn act(&mut self, action: Action) -> String {
        let client = self.client.clone();
        let (kind, provider, text, result) = match action {
            Action::Create(mut cluster, settings) => {
                let result = fleet::create(&client, &mut cluster, &settings).await;
                let text = format!(
                    "create {} {}+{}",
                    cluster.name,
                    cluster.control_plane,
                    cluster.workers()
                );
                let provider = cluster.provider;
                self.clusters.push(cluster);
                ("create", provider, text, result)
            }
            Action::Scale(i, replicas) => {
                let cluster = &mut self.clusters[i];
                let before = cluster.workers();
                let result = fleet::scale(&client, cluster, replicas).await;
                let text = format!("scale {} {before}->{replicas}", cluster.name);
                ("scale", cluster.provider, text, result)
            }
            Action::Delete(i) => {
                let cluster = &mut self.clusters[i];
                let result = fleet::delete(&client, cluster).await;
                (
                    "delete",
                    cluster.provider,
                    format!("delete {}", cluster.name),
                    result,
                )
            }
        };
        if let Err(e) = result {
            panic!("the campaign could not {text}: {e}");
        }
        *self
            .report
            .actions
            .entry(format!("{kind} {provider}"))
            .or_default() += 1;
        self.report.providers_touched.insert(provider);
        format!("{provider}: {text}")
    }

    async fn kill_and_restart(
        &mut self,
        round: usize,
        while_down: &mut Option<Action>,
        done: &mut Vec<String>,
    ) {
        let lived = self.manager.started_at.elapsed();
        if let Some(v) = self.manager.exited_by_itself() {
            self.violation(v);
        }
        self.manager.kill();
        let down = Instant::now();
        self.report.kills += 1;
        let checked = self.safety_checks().await;
        if let Some(action) = while_down.take() {
            let text = self.act(action).await;
            done.push(format!("{text} (while down)"));
        }
        self.manager.start();
        let line = format!(
            "kill {}/{} (round {round}) {:.2} s after start; {checked}; down {:.2} s; violations so far {}",
            self.report.kills,
            self.options.kills,
            lived.as_secs_f64(),
            down.elapsed().as_secs_f64(),
            self.report.violations.len()
        );
        self.say(line);
    }

    /// What must never happen, checked from the providers' own records; returns a short account of what it saw.
    async fn safety_checks(&mut self) -> String {
        let mut found = Vec::new();
        let sim = read_sim_state(&self.sim_state);
        found.extend(invariants::sim_creations(&sim, &self.clusters));
        found.extend(invariants::local_after_kill(
            &self.local_root,
            &self.clusters,
        ));
        let hosts = self.hosts().await;
        {
            let ledger = self.ledger.lock().unwrap();
            found.extend(invariants::metal_claims(&hosts, &ledger, &self.clusters));
        }
        for v in found {
            self.violation(v);
        }
        let sim_machines: usize = sim.clusters.values().map(|c| c.machines.len()).sum();
        let processes = invariants::local_processes(&self.local_root).len();
        let held = hosts
            .iter()
            .filter(|h| invariants::claim_of(h).is_some())
            .count();
        format!(
            "sim {} machines, local {processes} processes, baremetal {held}/{HOSTS} hosts held",
            sim_machines
        )
    }

    async fn hosts(&self) -> Vec<BareMetalHost> {
        Api::<BareMetalHost>::namespaced(self.client.clone(), &self.metal_ns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_else(|e| panic!("listing BareMetalHosts: {e}"))
    }

    /// Waits for the fleet to converge, then checks for leftovers. False when it did not converge in time.
    async fn converge(&mut self, round: usize, slow: bool, done: &[String]) -> bool {
        let limit = if slow { CONVERGE_SLOW } else { CONVERGE_SIM };
        let since = Instant::now();
        let mut last = Vec::new();
        while since.elapsed() < limit {
            if let Some(v) = self.manager.exited_by_itself() {
                self.violation(v);
                self.manager.start();
            }
            match self.pending().await {
                Ok(pending) if pending.is_empty() => {
                    last.clear();
                    break;
                }
                Ok(pending) => last = pending,
                Err(e) => last = vec![e],
            }
            tokio::time::sleep(POLL).await;
        }
        let took = since.elapsed();
        if !last.is_empty() {
            self.violation(Violation::new(
                format!("round {round}: the fleet did not converge within {limit:?}"),
                last.join("; "),
            ));
            return false;
        }
        self.report.convergence.push(took);
        let leftovers = self.leftover_checks().await;
        self.say(format!(
            "round {round}: converged {:.1} s after the last restart ({}); {leftovers}",
            took.as_secs_f64(),
            done.join(", ")
        ));
        true
    }

    /// Every cluster that is not where it was asked to be, and why; empty once the fleet has converged.
    async fn pending(&self) -> Result<Vec<String>, String> {
        let mut clusters = BTreeMap::new();
        let mut pools = BTreeMap::new();
        for ns in [&self.sim_ns, &self.local_ns, &self.metal_ns] {
            for c in Api::<Cluster>::namespaced(self.client.clone(), ns)
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("listing Clusters: {e}"))?
            {
                clusters.insert((ns.clone(), c.name_any()), c);
            }
            for p in Api::<MachinePool>::namespaced(self.client.clone(), ns)
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("listing MachinePools: {e}"))?
            {
                pools.insert((ns.clone(), p.name_any()), p);
            }
        }
        let sim = read_sim_state(&self.sim_state);
        let processes = invariants::local_processes(&self.local_root);
        let hosts = self.hosts().await;
        let mut pending = Vec::new();
        for tracked in &self.clusters {
            let cluster = clusters.get(&(tracked.namespace.clone(), tracked.name.clone()));
            let pool = pools.get(&(tracked.namespace.clone(), tracked.pool()));
            if tracked.life == Life::Deleted {
                if cluster.is_some() || pool.is_some() {
                    let why = cluster
                        .and_then(|c| c.status.as_ref())
                        .map(|s| support::condition_summary(&s.conditions))
                        .unwrap_or_default();
                    pending.push(format!("{} not gone yet: {why}", tracked.label()));
                }
                continue;
            }
            if let Err(why) = converged(tracked, cluster, pool) {
                pending.push(format!("{}: {why}", tracked.label()));
                continue;
            }
            let truth = match tracked.provider {
                Provider::Sim => {
                    let machines = invariants::sim_live_machines(&sim, tracked);
                    let cp = machines.get("control-plane").copied().unwrap_or(0);
                    let workers = machines.get(&tracked.pool()).copied().unwrap_or(0);
                    (cp == tracked.control_plane as usize && workers == tracked.workers() as usize)
                        .then_some(())
                        .ok_or_else(|| format!("the sim provider holds {machines:?}"))
                }
                Provider::Local => {
                    let dir = invariants::local_dir(&self.local_root, tracked);
                    match invariants::local_process_set(&processes, &dir, &tracked.label()) {
                        Ok(set) if set.len() == invariants::ONE_MEMBER_PROCESSES => Ok(()),
                        Ok(set) => Err(format!("control-plane processes running: {set:?}")),
                        Err(v) => Err(v.to_string()),
                    }
                }
                Provider::Metal => {
                    let held = |group: &str| {
                        hosts
                            .iter()
                            .filter(|h| {
                                invariants::claim_of(h)
                                    .is_some_and(|c| c.uid == tracked.uid && c.group == group)
                                    && invariants::host_state(h) == Some(HostState::Provisioned)
                            })
                            .count()
                    };
                    let (cp, workers) = (held("control-plane"), held(&tracked.pool()));
                    (cp == tracked.control_plane as usize && workers == tracked.workers() as usize)
                        .then_some(())
                        .ok_or_else(|| {
                            format!("hosts Provisioned for it: control plane {cp}, pool {workers}")
                        })
                }
            };
            if let Err(why) = truth {
                pending.push(format!("{}: {why}", tracked.label()));
            }
        }
        Ok(pending)
    }

    /// Once converged: the safety checks again (a watch may have delivered a claim late), nothing left of a
    /// deleted cluster, and the local clusters' Nodes are the ones the pools report.
    async fn leftover_checks(&mut self) -> String {
        let mut found = Vec::new();
        let sim = read_sim_state(&self.sim_state);
        found.extend(invariants::sim_creations(&sim, &self.clusters));
        let hosts = self.hosts().await;
        {
            let ledger = self.ledger.lock().unwrap();
            found.extend(invariants::metal_claims(&hosts, &ledger, &self.clusters));
        }
        let gone: Vec<&Tracked> = self
            .clusters
            .iter()
            .filter(|c| c.life == Life::Deleted)
            .collect();
        found.extend(invariants::sim_orphans(&sim, &gone));
        found.extend(invariants::metal_orphans(&hosts, &gone));
        found.extend(invariants::local_orphans(&self.local_root, &self.clusters));
        found.extend(self.orphaned_secrets(&gone).await);
        let deleted = gone.len();
        found.extend(self.local_nodes().await);
        let new = found.len();
        for v in found {
            self.violation(v);
        }
        // The control planes now converged are the ones later kills must find still running.
        let processes = invariants::local_processes(&self.local_root);
        for cluster in self
            .clusters
            .iter_mut()
            .filter(|c| c.provider == Provider::Local && c.life == Life::Live)
        {
            if cluster.adopted_pids.is_none() {
                let dir = invariants::local_dir(&self.local_root, cluster);
                cluster.adopted_pids = invariants::local_process_set(&processes, &dir, "").ok();
            }
        }
        let live = self.clusters.len() - deleted;
        format!(
            "{live} clusters live, {deleted} deleted; leftover and duplicate checks found {new} violations"
        )
    }

    /// Secrets of deleted clusters (Cluster API's label names the cluster) still in their namespace.
    async fn orphaned_secrets(&self, gone: &[&Tracked]) -> Vec<Violation> {
        let mut found = Vec::new();
        for ns in [&self.sim_ns, &self.local_ns, &self.metal_ns] {
            let secrets = Api::<Secret>::namespaced(self.client.clone(), ns)
                .list(&ListParams::default().labels("cluster.x-k8s.io/cluster-name"))
                .await
                .unwrap_or_else(|e| panic!("listing Secrets: {e}"));
            for cluster in gone.iter().filter(|c| &c.namespace == ns) {
                let left: Vec<String> = secrets
                    .iter()
                    .filter(|s| {
                        s.labels().get("cluster.x-k8s.io/cluster-name") == Some(&cluster.name)
                    })
                    .map(|s| s.name_any())
                    .collect();
                if !left.is_empty() {
                    found.push(Violation::new(
                        format!("{}: deleted, but its Secrets are left", cluster.label()),
                        format!("{left:?}"),
                    ));
                }
            }
        }
        found
    }

    /// Each live local cluster's workload API has exactly the pool's Nodes, Ready, and a Node seen before has the
    /// same UID unless the pool shrank since (a Node made again is a machine created twice).
    async fn local_nodes(&mut self) -> Vec<Violation> {
        let mut found = Vec::new();
        for cluster in self
            .clusters
            .iter_mut()
            .filter(|c| c.provider == Provider::Local && c.life == Life::Live)
        {
            let kubeconfig =
                invariants::local_dir(&self.local_root, cluster).join("admin.kubeconfig");
            let client = support::client_from_kubeconfig(&kubeconfig).await;
            let nodes = match Api::<Node>::all(client)
                .list(
                    &ListParams::default().labels(&format!("slipway.dev/pool={}", cluster.pool())),
                )
                .await
            {
                Ok(nodes) => nodes.items,
                Err(e) => {
                    found.push(Violation::new(
                        format!(
                            "{}: its workload API does not answer after converging",
                            cluster.label()
                        ),
                        e.to_string(),
                    ));
                    continue;
                }
            };
            let uids: BTreeMap<String, String> = nodes
                .iter()
                .map(|n| (n.name_any(), n.uid().unwrap_or_default()))
                .collect();
            if uids.len() != cluster.workers() as usize {
                found.push(Violation::new(
                    format!(
                        "{}: the pool reports Ready, the workload cluster disagrees",
                        cluster.label()
                    ),
                    format!(
                        "{} Nodes for {} workers: {:?}",
                        uids.len(),
                        cluster.workers(),
                        uids.keys()
                    ),
                ));
            }
            if !cluster.pool_shrank() {
                for (name, uid) in &uids {
                    if let Some(before) = cluster.node_uids.get(name)
                        && before != uid
                    {
                        found.push(Violation::new(
                            format!("{}: Node {name} was made again", cluster.label()),
                            format!("UID {before}, now {uid}"),
                        ));
                    }
                }
            }
            cluster.node_uids = uids;
        }
        found
    }

    /// Deletes every live cluster with the manager running (no more kills) and checks that nothing is left.
    async fn delete_everything(&mut self) {
        let live: Vec<usize> = (0..self.clusters.len())
            .filter(|i| self.clusters[*i].life == Life::Live)
            .collect();
        let mut done = Vec::new();
        for i in live {
            done.push(self.act(Action::Delete(i)).await);
        }
        self.report.rounds += 1;
        let round = self.report.rounds;
        self.converge(round, true, &done).await;
    }

    /// Kills, by process id, any local workload-cluster process still running under the campaign's state root.
    fn kill_leftover_processes(&self) -> Vec<String> {
        kill_local_processes(&self.local_root)
    }
}

/// Kills every local workload-cluster process under the root when dropped.
struct LocalCleanup(PathBuf);

impl Drop for LocalCleanup {
    fn drop(&mut self) {
        kill_local_processes(&self.0);
    }
}

/// Kills, by process id, every local workload-cluster process whose command line names a directory under `root`.
fn kill_local_processes(root: &Path) -> Vec<String> {
    let mut killed = Vec::new();
    for p in invariants::local_processes(root) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &p.pid.to_string()])
            .status();
        killed.push(format!("{} {} ({})", p.component, p.pid, p.dir.display()));
    }
    killed
}

fn without_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    let _ = std::fs::create_dir_all(to);
    for entry in entries.flatten() {
        let _ = std::fs::copy(entry.path(), to.join(entry.file_name()));
    }
}

fn read_sim_state(path: &Path) -> slipway_provider_sim::State {
    match slipway_provider_sim::SimProvider::read_state_file(path) {
        Ok(state) => state,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => panic!("reading the sim state file {}: {e}", path.display()),
    }
}

/// Whether the Cluster is Ready for the generation asked, and its pool Ready at the size asked.
fn converged(
    tracked: &Tracked,
    cluster: Option<&Cluster>,
    pool: Option<&MachinePool>,
) -> Result<(), String> {
    let cluster = cluster.ok_or("the Cluster is missing")?;
    let status = cluster.status.clone().unwrap_or_default();
    if !slipway_api::conditions::is_true(&status.conditions, "Ready")
        || status.observed_generation != cluster.metadata.generation
    {
        return Err(format!(
            "Cluster not Ready: {}",
            support::condition_summary(&status.conditions)
        ));
    }
    let pool = pool.ok_or("the MachinePool is missing")?;
    let status = pool.status.clone().unwrap_or_default();
    let asked = tracked.workers() as i32;
    if !slipway_api::conditions::is_true(&status.conditions, "Ready")
        || status.observed_generation != pool.metadata.generation
        || status.replicas != asked
        || status.ready_replicas != asked
    {
        return Err(format!(
            "pool at {}/{} ready of {asked}: {}",
            status.ready_replicas,
            status.replicas,
            support::condition_summary(&status.conditions)
        ));
    }
    Ok(())
}
