//! The floor: the writes a provisioner cannot avoid for one sim cluster, and what a run of them measured.
//!
//! Per cluster, ten writes ([`WRITES_PER_CLUSTER`]): the user's 2 creates (Cluster, MachinePool), a finalizer on
//! each (one JSON patch each, shaped as the manager's; the pool's also adds its owner reference, as the manager's
//! does), the cluster's 4 PKI Secrets (`<cluster>-ca`, `-etcd`, `-proxy`, `-sa`; sim clusters have no kubeconfig),
//! and one server-side apply of each object's final status (`Ready=True`, field manager `slipway`). No reads, no
//! Events, no intermediate status. `bench-floor` sends them as fast as the apiserver accepts them, so its time is a
//! lower bound for any controller doing the same job against the same apiserver.

use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use slipway_api::conditions::{
    ADDONS_READY, CONTROL_PLANE_READY, Condition, INFRASTRUCTURE_READY, NODES_READY, READY,
    ROLLING_OUT, SCALING_DOWN, SCALING_UP, STATUS_FALSE, STATUS_TRUE,
};
use slipway_api::{
    ApiEndpoint, ClusterPhase, ClusterStatus, MachinePhase, MachinePoolStatus, MachineStatus,
};

use crate::sim_fleet::{CONTROL_PLANE_REPLICAS, WORKERS_PER_POOL};

/// The manager's finalizers (`slipway_controller::CLUSTER_FINALIZER` and `MACHINE_POOL_FINALIZER`, written out
/// here so the benchmark does not build the controller).
pub const CLUSTER_FINALIZER: &str = "slipway.dev/cluster";
pub const MACHINE_POOL_FINALIZER: &str = "slipway.dev/machinepool";
/// The label the manager puts in a pool's `status.selector` (`slipway_controller::POOL_LABEL`).
pub const POOL_LABEL: &str = "slipway.dev/pool";

/// 2 creates + 2 finalizer patches + 4 PKI Secrets + 2 status applies.
pub const WRITES_PER_CLUSTER: u64 = 10;

/// The JSON patch the manager sends to add its finalizer to an object that has none yet (and, for a pool, its
/// owner reference, which a created pool does not have either): `add` of the whole list, as
/// `crates/controller/src/finalizer.rs` does when the list is absent.
pub fn finalizer_patch(finalizer: &str, owner: Option<&OwnerReference>) -> json_patch::Patch {
    let mut ops =
        vec![json!({ "op": "add", "path": "/metadata/finalizers", "value": [finalizer] })];
    if let Some(owner) = owner {
        ops.push(json!({ "op": "add", "path": "/metadata/ownerReferences", "value": [owner] }));
    }
    serde_json::from_value(Value::Array(ops)).expect("add operations are a valid JSON patch")
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, now: &Timestamp) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: Some(1),
        last_transition_time: Time(*now),
    }
}

/// A ready sim Cluster's status as the manager leaves it (its conditions, messages, endpoint and phase, copied from
/// a run of the manager), without `kubeconfigSecretRef`: the floor writes no kubeconfig.
pub fn ready_cluster_status(cluster: &str, namespace: &str, now: Timestamp) -> ClusterStatus {
    let ready = |type_: &str, reason: &str, message: &str| {
        condition(type_, STATUS_TRUE, reason, message, &now)
    };
    ClusterStatus {
        phase: Some(ClusterPhase::Provisioned),
        provider: Some("sim".to_string()),
        conditions: vec![
            ready(
                INFRASTRUCTURE_READY,
                "Provisioned",
                "sim infrastructure needs no setup",
            ),
            ready(
                CONTROL_PLANE_READY,
                "Ready",
                &format!(
                    "{CONTROL_PLANE_REPLICAS} of {CONTROL_PLANE_REPLICAS} control-plane machines ready"
                ),
            ),
            ready(NODES_READY, "Ready", "1 MachinePools ready"),
            ready(
                ADDONS_READY,
                "NoWorkloadApi",
                "sim clusters have no workload API, so no add-ons are installed",
            ),
            ready(READY, "Ready", "the cluster is ready"),
        ],
        control_plane_endpoint: Some(ApiEndpoint {
            host: format!("{cluster}.{namespace}.sim.invalid"),
            port: 6443,
        }),
        observed_generation: Some(1),
        ..ClusterStatus::default()
    }
}

/// A ready sim pool's status as the manager leaves it: every machine Running, `Ready=True` and the three
/// not-happening conditions False.
pub fn ready_pool_status(
    cluster: &str,
    pool: &str,
    namespace: &str,
    now: Timestamp,
) -> MachinePoolStatus {
    let replicas = WORKERS_PER_POOL as i32;
    MachinePoolStatus {
        replicas,
        ready_replicas: replicas,
        updated_replicas: replicas,
        selector: Some(format!("{POOL_LABEL}={pool}")),
        machines: (0..WORKERS_PER_POOL)
            .map(|i| {
                // The manager's names: pool, a 7-character template hash, index.
                let name = format!("{pool}-0000000-{i}");
                MachineStatus {
                    provider_id: Some(format!("sim://{namespace}/{cluster}/{name}")),
                    name,
                    phase: MachinePhase::Running,
                    node_ref: None,
                }
            })
            .collect(),
        conditions: vec![
            condition(
                READY,
                STATUS_TRUE,
                "Ready",
                &format!("{replicas} of {replicas} machines ready, {replicas} up to date"),
                &now,
            ),
            condition(SCALING_UP, STATUS_FALSE, "AtReplicas", "", &now),
            condition(SCALING_DOWN, STATUS_FALSE, "AtReplicas", "", &now),
            condition(ROLLING_OUT, STATUS_FALSE, "UpToDate", "", &now),
        ],
        observed_generation: Some(1),
        ..MachinePoolStatus::default()
    }
}

/// The body of a server-side apply of `status` to the status subresource, as `status.rs::apply_if_changed` sends.
pub fn status_apply(kind: &str, status: &impl Serialize) -> Value {
    json!({
        "apiVersion": format!("{}/{}", slipway_api::GROUP, slipway_api::VERSION),
        "kind": kind,
        "status": status,
    })
}

/// What one floor run measured; `bench-floor --json` writes it and `bench-scale --floor-result` reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FloorResult {
    pub clusters: usize,
    /// Clusters in flight at once, each sending its writes one after the other.
    pub concurrency: usize,
    /// From the first create until the last write was answered.
    pub seconds: f64,
    /// Writes the floor sent and the apiserver accepted.
    pub writes: u64,
    /// Requests the apiserver served during the run, every client counted (its `apiserver_request_total`).
    pub apiserver_requests: u64,
}

impl FloorResult {
    pub fn writes_per_second(&self) -> f64 {
        per(self.writes as f64, self.seconds)
    }

    pub fn requests_per_cluster(&self) -> f64 {
        per(self.apiserver_requests as f64, self.clusters as f64)
    }
}

/// What a `bench-scale` run measured, in the terms it is compared with the floor in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleFigures {
    pub clusters: usize,
    /// From the first create until the last cluster was seen Ready.
    pub all_ready_seconds: f64,
    /// Requests the apiserver served during the run, every client counted.
    pub apiserver_requests: u64,
}

fn per(amount: f64, unit: f64) -> f64 {
    if unit > 0.0 { amount / unit } else { f64::NAN }
}

/// `slipway / floor` as `2.57x`, or `n/a` when the floor is zero or either side is not a number.
pub fn ratio(slipway: f64, floor: f64) -> String {
    let value = slipway / floor;
    if floor > 0.0 && value.is_finite() {
        format!("{value:.2}x")
    } else {
        "n/a".to_string()
    }
}

/// The side-by-side table of a `bench-scale` run and the floor for the same N.
pub fn render_comparison(slipway: &ScaleFigures, floor: &FloorResult) -> String {
    let n = slipway.clusters;
    let slipway_per_cluster = per(slipway.apiserver_requests as f64, n as f64);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| | Slipway | floor | Slipway / floor |\n|---|---|---|---|"
    );
    let _ = writeln!(
        out,
        "| seconds until all {n} clusters are done (Slipway: Ready seen; floor: its {WRITES_PER_CLUSTER} writes per cluster answered, {} clusters at a time) | {:.1} | {:.1} | {} |",
        floor.concurrency,
        slipway.all_ready_seconds,
        floor.seconds,
        ratio(slipway.all_ready_seconds, floor.seconds),
    );
    let _ = writeln!(
        out,
        "| apiserver requests per cluster (all clients) | {slipway_per_cluster:.1} | {:.1} | {} |",
        floor.requests_per_cluster(),
        ratio(slipway_per_cluster, floor.requests_per_cluster()),
    );
    let _ = writeln!(
        out,
        "| apiserver requests (all clients) | {} | {} | |",
        slipway.apiserver_requests, floor.apiserver_requests,
    );
    let _ = writeln!(
        out,
        "| floor: writes per second the apiserver accepted | | {:.0} | |",
        floor.writes_per_second(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor() -> FloorResult {
        FloorResult {
            clusters: 1000,
            concurrency: 32,
            seconds: 12.5,
            writes: 10_000,
            apiserver_requests: 10_012,
        }
    }

    #[test]
    fn ratios_and_what_cannot_be_one() {
        assert_eq!(ratio(39.0, 12.5), "3.12x");
        assert_eq!(ratio(12.5, 12.5), "1.00x");
        assert_eq!(ratio(1.0, 0.0), "n/a");
        assert_eq!(ratio(f64::NAN, 2.0), "n/a");
    }

    #[test]
    fn the_floor_per_second_and_per_cluster() {
        assert_eq!(floor().writes_per_second(), 800.0);
        assert!((floor().requests_per_cluster() - 10.012).abs() < 1e-9);
        let empty = FloorResult {
            seconds: 0.0,
            clusters: 0,
            ..floor()
        };
        assert!(empty.writes_per_second().is_nan());
        assert!(empty.requests_per_cluster().is_nan());
    }

    #[test]
    fn the_comparison_puts_slipway_next_to_the_floor() {
        let slipway = ScaleFigures {
            clusters: 1000,
            all_ready_seconds: 39.0,
            apiserver_requests: 24_567,
        };
        let table = render_comparison(&slipway, &floor());
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 6, "{table}");
        assert!(
            rows[2].starts_with("| seconds until all 1000 clusters are done"),
            "{table}"
        );
        assert!(rows[2].contains("32 clusters at a time"), "{table}");
        assert!(rows[2].ends_with("| 39.0 | 12.5 | 3.12x |"), "{table}");
        assert_eq!(
            rows[3],
            "| apiserver requests per cluster (all clients) | 24.6 | 10.0 | 2.45x |"
        );
        assert_eq!(
            rows[4],
            "| apiserver requests (all clients) | 24567 | 10012 | |"
        );
        assert_eq!(
            rows[5],
            "| floor: writes per second the apiserver accepted | | 800 | |"
        );
    }

    #[test]
    fn the_result_survives_its_json_file() {
        let text = serde_json::to_string(&floor()).unwrap();
        assert!(text.contains("\"apiserverRequests\":10012"), "{text}");
        let back: FloorResult = serde_json::from_str(&text).unwrap();
        assert_eq!(back, floor());
    }

    #[test]
    fn finalizer_patches_add_the_list_like_the_manager() {
        let plain = serde_json::to_value(finalizer_patch(CLUSTER_FINALIZER, None)).unwrap();
        assert_eq!(
            plain,
            json!([{ "op": "add", "path": "/metadata/finalizers", "value": ["slipway.dev/cluster"] }])
        );
        let owner = OwnerReference {
            api_version: "slipway.dev/v1alpha1".into(),
            kind: "Cluster".into(),
            name: "bench-1".into(),
            uid: "0000-1111".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let with_owner =
            serde_json::to_value(finalizer_patch(MACHINE_POOL_FINALIZER, Some(&owner))).unwrap();
        assert_eq!(with_owner.as_array().unwrap().len(), 2);
        assert_eq!(with_owner[1]["path"], "/metadata/ownerReferences");
        assert_eq!(with_owner[1]["value"][0]["uid"], "0000-1111");
    }

    #[test]
    fn the_statuses_are_ready() {
        let now = Timestamp::now();
        let cluster = status_apply("Cluster", &ready_cluster_status("bench-1", "bench", now));
        assert_eq!(cluster["apiVersion"], "slipway.dev/v1alpha1");
        let conditions = cluster["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 5);
        assert!(conditions.iter().all(|c| c["status"] == "True"));
        assert_eq!(cluster["status"]["phase"], "Provisioned");
        assert_eq!(
            cluster["status"]["controlPlaneEndpoint"]["host"],
            "bench-1.bench.sim.invalid"
        );
        let pool = ready_pool_status("bench-1", "bench-1-workers", "bench", now);
        assert_eq!(pool.machines.len(), WORKERS_PER_POOL as usize);
        assert_eq!(
            pool.machines[2].provider_id.as_deref(),
            Some("sim://bench/bench-1/bench-1-workers-0000000-2")
        );
        assert_eq!(pool.ready_replicas, pool.replicas);
        assert!(slipway_api::conditions::is_true(&pool.conditions, READY));
    }
}
