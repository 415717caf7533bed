//! Whole-journey tests and benchmark drivers: Slipway exercised the way a user runs it, against a real
//! kube-apiserver (slipway-testenv) and a `slipway manager` process, end to end.
//!
//! The library holds what those drivers measure with and that can be proved without a cluster: parsing the
//! Prometheus text the apiserver and the manager serve, counting apiserver requests, reading a process's memory
//! and CPU from `/proc`, percentiles, the sim fleet both scale drivers create, the floor's writes and how its
//! result compares, and the setup every driver does before it measures. The drivers are binaries: `bench-scale`
//! (run by `hack/bench-scale.sh`), `bench-floor` (the writes a provisioner cannot avoid, run by
//! `hack/bench-floor.sh` and at the start of every `hack/bench-scale.sh`) and `bench-vs-capi`.
//!
//! What it is not: part of `cargo test`'s integration suite. A benchmark takes minutes and judges numbers, not
//! behaviour, so nothing here starts an apiserver from a `#[test]`; the unit tests cover the pure helpers only.

pub mod apiserver_requests;
pub mod bench_setup;
pub mod floor;
pub mod manager_metrics;
pub mod percentile;
pub mod process_usage;
pub mod prometheus_text;
pub mod rss_samples;
pub mod sim_fleet;
