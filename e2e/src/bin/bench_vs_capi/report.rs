//! A side's measurements as `measure` writes them (JSON), and the markdown comparison of two of them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use slipway_e2e::percentile::percentile;

use crate::side::{MACHINES_PER_CLUSTER, Side};

#[derive(Debug, Serialize, Deserialize)]
pub struct SideResult {
    pub side: Side,
    pub clusters: usize,
    /// Whether Machines were counted too (Cluster API), besides the clusters' condition.
    pub machines_checked: bool,
    /// /proc/loadavg (1, 5, 15 minutes) just before the run.
    pub load_before: String,
    /// All clusters (and machines) Ready before the timeout.
    pub finished: bool,
    pub timeout_seconds: u64,
    pub clusters_ready: usize,
    pub machines_running: usize,
    /// From the first create until all were Ready; or until the timeout when not finished.
    pub seconds: f64,
    pub created_seconds: Option<f64>,
    pub create_concurrency: usize,
    pub warm_up_seconds: f64,
    /// Per Ready cluster: ready condition's lastTransitionTime minus creationTimestamp (1 s resolution).
    pub latencies_seconds: Vec<f64>,
    /// Per Ready cluster: create sent to Ready seen, on the bench's clock.
    pub observed_latencies_seconds: Vec<f64>,
    pub managers: Vec<ProcessResult>,
    /// The highest sum of the managers' VmRSS sampled at one moment (every 100 ms).
    pub peak_rss_sum_bytes: u64,
    pub control_plane: Vec<ProcessResult>,
    /// apiserver_request_total deltas from the first create until all Ready.
    pub run_requests: Vec<RequestRow>,
    pub steady_seconds: u64,
    /// Every write the apiserver served during the steady window, whoever sent it.
    pub steady_writes: Vec<RequestRow>,
    pub steady_manager_cpu_seconds: Option<f64>,
    pub not_ready_states: Vec<(String, usize)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProcessResult {
    pub name: String,
    pub pid: u32,
    /// utime + stime during the run.
    pub cpu_seconds: f64,
    /// Highest VmRSS sampled during the run (managers), or VmRSS at the end (control plane).
    pub peak_rss_bytes: u64,
    /// VmHWM at the end of the run: the kernel's high-water mark over the process's life.
    pub high_water_mark_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RequestRow {
    pub verb: String,
    pub resource: String,
    pub count: u64,
}

/// kube-apiserver renews its own identity and lease objects; the managers run without leader election, so every
/// other write in the steady window is a manager's.
fn is_apiserver_own(row: &RequestRow) -> bool {
    row.resource == "leases.coordination.k8s.io"
}

impl SideResult {
    fn manager_cpu(&self) -> f64 {
        self.managers.iter().map(|p| p.cpu_seconds).sum()
    }

    fn control_plane_cpu(&self) -> f64 {
        self.control_plane.iter().map(|p| p.cpu_seconds).sum()
    }

    fn by_verb(&self) -> BTreeMap<&str, u64> {
        let mut verbs = BTreeMap::new();
        for row in &self.run_requests {
            *verbs.entry(row.verb.as_str()).or_default() += row.count;
        }
        verbs
    }

    fn requests(&self) -> u64 {
        self.run_requests.iter().map(|r| r.count).sum()
    }

    fn steady_manager_writes(&self) -> Option<u64> {
        self.steady_manager_cpu_seconds?;
        Some(
            self.steady_writes
                .iter()
                .filter(|r| !is_apiserver_own(r))
                .map(|r| r.count)
                .sum(),
        )
    }

    fn ready_rule(&self) -> String {
        let n = self.clusters;
        match self.side {
            Side::Slipway => format!("{n} Clusters Ready=True"),
            Side::Capi => format!(
                "{n} Clusters Available=True and {} Machines Running",
                n * MACHINES_PER_CLUSTER
            ),
        }
    }

    fn how_far(&self) -> String {
        let mut text = format!(
            "did not finish in {} s: {}/{} clusters {}",
            self.timeout_seconds,
            self.clusters_ready,
            self.clusters,
            match self.side {
                Side::Slipway => "Ready",
                Side::Capi => "Available",
            }
        );
        if self.machines_checked {
            let _ = write!(
                text,
                ", {}/{} Machines Running",
                self.machines_running,
                self.clusters * MACHINES_PER_CLUSTER
            );
        }
        text
    }
}

pub fn render(slipway: &SideResult, capi: &SideResult) -> String {
    let n = slipway.clusters;
    let both = slipway.finished && capi.finished;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## {n} clusters per side (1 control-plane machine + a pool / MachineDeployment of 3 workers, zero infrastructure delay)\n"
    );
    if capi.clusters != n {
        let _ = writeln!(
            out,
            "**warning: the sides ran different N (Slipway {n}, Cluster API {})**\n",
            capi.clusters
        );
    }
    let _ = writeln!(
        out,
        "| | Slipway | Cluster API | Slipway/CAPI |\n|---|---|---|---|"
    );
    let mut row = |metric: &str, s: String, c: String, ratio: String| {
        let _ = writeln!(out, "| {metric} | {s} | {c} | {ratio} |");
    };
    let wall = |r: &SideResult| {
        if r.finished {
            format!("{:.1}", r.seconds)
        } else {
            r.how_far()
        }
    };
    row(
        &format!(
            "seconds until all Ready (Slipway: {}; CAPI: {})",
            slipway.ready_rule(),
            capi.ready_rule()
        ),
        wall(slipway),
        wall(capi),
        ratio(both, slipway.seconds, capi.seconds, true),
    );
    let quantile = |r: &SideResult, p: f64| percentile(&r.latencies_seconds, p);
    for (label, p) in [("median", 50.0), ("p99", 99.0)] {
        let (s, c) = (quantile(slipway, p), quantile(capi, p));
        row(
            &format!(
                "cluster latency {label}, s (Ready / Available lastTransitionTime - creationTimestamp, 1 s resolution)"
            ),
            s.map_or("n/a".into(), |v| format!("{v:.0}")),
            c.map_or("n/a".into(), |v| format!("{v:.0}")),
            match (s, c) {
                (Some(s), Some(c)) => ratio(both, s, c, false),
                _ => "n/a".into(),
            },
        );
    }
    let observed = |r: &SideResult, p: f64| percentile(&r.observed_latencies_seconds, p);
    let (s, c) = (observed(slipway, 50.0), observed(capi, 50.0));
    row(
        "cluster latency median, s (bench clock: create sent -> Ready seen)",
        s.map_or("n/a".into(), |v| format!("{v:.2}")),
        c.map_or("n/a".into(), |v| format!("{v:.2}")),
        match (s, c) {
            (Some(s), Some(c)) => ratio(both, s, c, false),
            _ => "n/a".into(),
        },
    );
    row(
        "manager CPU seconds during the run, summed over the side's processes",
        format!(
            "{:.1} ({} process)",
            slipway.manager_cpu(),
            slipway.managers.len()
        ),
        format!(
            "{:.1} ({} processes)",
            capi.manager_cpu(),
            capi.managers.len()
        ),
        ratio(both, slipway.manager_cpu(), capi.manager_cpu(), false),
    );
    let peak = |r: &SideResult| r.peak_rss_sum_bytes as f64;
    row(
        "manager peak RSS, summed over the side's processes (sampled every 100 ms)",
        mib(slipway.peak_rss_sum_bytes),
        mib(capi.peak_rss_sum_bytes),
        ratio(both, peak(slipway), peak(capi), false),
    );
    row(
        "kube-apiserver + etcd CPU seconds during the run (not the side's, for reference)",
        format!("{:.1}", slipway.control_plane_cpu()),
        format!("{:.1}", capi.control_plane_cpu()),
        ratio(
            both,
            slipway.control_plane_cpu(),
            capi.control_plane_cpu(),
            false,
        ),
    );
    row(
        "apiserver requests during the run, all clients",
        slipway.requests().to_string(),
        capi.requests().to_string(),
        ratio(
            both,
            slipway.requests() as f64,
            capi.requests() as f64,
            false,
        ),
    );
    let (sv, cv) = (slipway.by_verb(), capi.by_verb());
    let mut verbs: Vec<&str> = sv.keys().chain(cv.keys()).copied().collect();
    verbs.sort_unstable();
    verbs.dedup();
    for verb in verbs {
        let (s, c) = (
            sv.get(verb).copied().unwrap_or(0),
            cv.get(verb).copied().unwrap_or(0),
        );
        row(
            &format!("- {verb}"),
            s.to_string(),
            c.to_string(),
            ratio(both, s as f64, c as f64, false),
        );
    }
    let steady = |r: &SideResult| {
        r.steady_manager_writes()
            .map_or("n/a (not finished)".into(), |w| w.to_string())
    };
    row(
        &format!(
            "manager writes in the {} s steady window after all Ready (every write but kube-apiserver's leases)",
            slipway.steady_seconds
        ),
        steady(slipway),
        steady(capi),
        match (
            slipway.steady_manager_writes(),
            capi.steady_manager_writes(),
        ) {
            (Some(s), Some(c)) => ratio(both, s as f64, c as f64, false),
            _ => "n/a".into(),
        },
    );
    let steady_cpu = |r: &SideResult| {
        r.steady_manager_cpu_seconds
            .map_or("n/a".into(), |c| format!("{c:.2}"))
    };
    row(
        "manager CPU seconds in the steady window",
        steady_cpu(slipway),
        steady_cpu(capi),
        String::new(),
    );

    for side in [slipway, capi] {
        details(&mut out, side);
    }
    out
}

fn details(out: &mut String, r: &SideResult) {
    let _ = writeln!(out, "\n### {} details\n", r.side.label());
    let _ = writeln!(
        out,
        "- load average before the run: {}; warm-up (one cluster's objects as dry runs, before the clock): {:.1} s",
        r.load_before, r.warm_up_seconds
    );
    let _ = writeln!(
        out,
        "- created {} clusters ({} at a time) in {}",
        r.clusters,
        r.create_concurrency,
        r.created_seconds
            .map_or("(not all created)".into(), |s| format!("{s:.1} s"))
    );
    if !r.finished {
        let _ = writeln!(
            out,
            "- **{}**; most common states of the clusters not Ready:",
            r.how_far()
        );
        for (state, count) in &r.not_ready_states {
            let _ = writeln!(out, "  - {count} x {state}");
        }
    }
    let _ = writeln!(
        out,
        "\n| process | CPU s during the run | peak RSS during the run | VmHWM at the end of the run |\n|---|---|---|---|"
    );
    for p in r.managers.iter().chain(&r.control_plane) {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {} |",
            p.name,
            p.cpu_seconds,
            mib(p.peak_rss_bytes),
            mib(p.high_water_mark_bytes)
        );
    }
    let _ = writeln!(
        out,
        "\napiserver requests during the run, by verb and resource (top 25 of {}):\n\n| request | count |\n|---|---|",
        r.run_requests.len()
    );
    for row in r.run_requests.iter().take(25) {
        let _ = writeln!(out, "| {} {} | {} |", row.verb, row.resource, row.count);
    }
    if r.steady_manager_cpu_seconds.is_some() {
        let _ = writeln!(
            out,
            "\nwrites during the {} s steady window, all clients:",
            r.steady_seconds
        );
        if r.steady_writes.is_empty() {
            let _ = writeln!(out, "none");
        } else {
            let _ = writeln!(
                out,
                "\n| request | count | counted as the side's |\n|---|---|---|"
            );
            for row in &r.steady_writes {
                let side = if is_apiserver_own(row) { "no" } else { "yes" };
                let _ = writeln!(
                    out,
                    "| {} {} | {} | {side} |",
                    row.verb, row.resource, row.count
                );
            }
        }
    }
}

/// `slipway / capi`; for times also how many times faster. "n/a" unless both sides finished.
fn ratio(both_finished: bool, slipway: f64, capi: f64, faster: bool) -> String {
    if !both_finished {
        return "n/a (a side did not finish)".into();
    }
    if capi == 0.0 {
        return if slipway == 0.0 {
            "both 0".into()
        } else {
            "n/a (CAPI 0)".into()
        };
    }
    let r = slipway / capi;
    if faster && slipway > 0.0 {
        format!("{r:.3} ({:.1}x faster)", capi / slipway)
    } else {
        format!("{r:.3}")
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
