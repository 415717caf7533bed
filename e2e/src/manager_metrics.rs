//! What the manager says about its own work on `/metrics`: reconciles, their errors and durations per controller
//! (`slipway_reconciles_total`, `slipway_reconcile_errors_total`, `slipway_reconcile_duration_seconds`), and calls
//! into providers (`slipway_provider_calls_total`). Two scrapes give the work done between them.

use std::collections::BTreeMap;

use crate::prometheus_text::Sample;

pub const RECONCILES: &str = "slipway_reconciles_total";
pub const RECONCILE_ERRORS: &str = "slipway_reconcile_errors_total";
pub const RECONCILE_DURATION: &str = "slipway_reconcile_duration_seconds";
pub const PROVIDER_CALLS: &str = "slipway_provider_calls_total";

/// One controller's reconciles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControllerStats {
    pub reconciles: u64,
    /// Failed reconciles per error label.
    pub errors: BTreeMap<String, u64>,
    pub duration_sum_seconds: f64,
    pub duration_count: u64,
    /// Histogram buckets: upper bound in seconds and how many reconciles took at most that long (cumulative).
    pub duration_buckets: Vec<(f64, u64)>,
}

impl ControllerStats {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn mean_seconds(&self) -> Option<f64> {
        (self.duration_count > 0).then(|| self.duration_sum_seconds / self.duration_count as f64)
    }

    /// The upper bound of the histogram bucket that holds the `q` quantile (0 < q <= 1): "at most this long".
    /// Infinite when the quantile falls beyond the last finite bucket.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<f64> {
        if self.duration_count == 0 {
            return None;
        }
        let wanted = (q * self.duration_count as f64).ceil() as u64;
        self.duration_buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= wanted)
            .map(|(bound, _)| *bound)
    }

    fn since(&self, earlier: &Self) -> Self {
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        Self {
            reconciles: delta(self.reconciles, earlier.reconciles),
            errors: self
                .errors
                .iter()
                .map(|(e, &n)| {
                    (
                        e.clone(),
                        delta(n, earlier.errors.get(e).copied().unwrap_or(0)),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
            duration_sum_seconds: (self.duration_sum_seconds - earlier.duration_sum_seconds)
                .max(0.0),
            duration_count: delta(self.duration_count, earlier.duration_count),
            duration_buckets: self
                .duration_buckets
                .iter()
                .map(|&(bound, n)| {
                    let before = earlier
                        .duration_buckets
                        .iter()
                        .find(|(b, _)| *b == bound)
                        .map_or(0, |(_, n)| *n);
                    (bound, delta(n, before))
                })
                .collect(),
        }
    }
}

/// The manager's counters at one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManagerMetrics {
    /// Per controller (`cluster`, `machinepool`).
    pub controllers: BTreeMap<String, ControllerStats>,
    /// Provider calls per `provider operation outcome`.
    pub provider_calls: BTreeMap<String, u64>,
}

/// The stats of the sample's `controller`, made empty on first sight.
fn controller<'a>(
    controllers: &'a mut BTreeMap<String, ControllerStats>,
    sample: &Sample,
) -> &'a mut ControllerStats {
    controllers
        .entry(sample.label("controller").to_string())
        .or_default()
}

impl ManagerMetrics {
    pub fn from_samples(samples: &[Sample]) -> Self {
        let mut metrics = Self::default();
        let count = |sample: &Sample| sample.value.max(0.0).round() as u64;
        for sample in samples {
            match (
                sample.name.as_str(),
                sample.name.strip_prefix(RECONCILE_DURATION),
            ) {
                (_, Some("_sum")) => {
                    controller(&mut metrics.controllers, sample).duration_sum_seconds = sample.value
                }
                (_, Some("_count")) => {
                    controller(&mut metrics.controllers, sample).duration_count = count(sample)
                }
                (_, Some("_bucket")) => {
                    if let Ok(bound) = sample.label("le").parse::<f64>() {
                        controller(&mut metrics.controllers, sample)
                            .duration_buckets
                            .push((bound, count(sample)));
                    }
                }
                (RECONCILES, _) => {
                    controller(&mut metrics.controllers, sample).reconciles = count(sample)
                }
                (RECONCILE_ERRORS, _) => {
                    let error = sample.label("error").to_string();
                    *controller(&mut metrics.controllers, sample)
                        .errors
                        .entry(error)
                        .or_default() += count(sample);
                }
                (PROVIDER_CALLS, _) => {
                    let call = format!(
                        "{} {} {}",
                        sample.label("provider"),
                        sample.label("operation"),
                        sample.label("outcome")
                    );
                    *metrics.provider_calls.entry(call).or_default() += count(sample);
                }
                _ => {}
            }
        }
        for stats in metrics.controllers.values_mut() {
            stats.duration_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        metrics
    }

    /// The work done after `earlier` was scraped.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            controllers: self
                .controllers
                .iter()
                .map(|(name, stats)| {
                    let before = earlier.controllers.get(name).cloned().unwrap_or_default();
                    (name.clone(), stats.since(&before))
                })
                .collect(),
            provider_calls: self
                .provider_calls
                .iter()
                .map(|(call, &n)| {
                    let before = earlier.provider_calls.get(call).copied().unwrap_or(0);
                    (call.clone(), n.saturating_sub(before))
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus_text::parse;

    // The shape prometheus-client writes (OpenMetrics text).
    const SCRAPE: &str = r#"# HELP slipway_reconciles Reconciles run, per controller.
# TYPE slipway_reconciles counter
slipway_reconciles_total{controller="cluster"} 10
slipway_reconciles_total{controller="machinepool"} 4
# TYPE slipway_reconcile_errors counter
slipway_reconcile_errors_total{controller="cluster",error="kube"} 2
# TYPE slipway_reconcile_duration_seconds histogram
slipway_reconcile_duration_seconds_sum{controller="cluster"} 0.5
slipway_reconcile_duration_seconds_count{controller="cluster"} 10
slipway_reconcile_duration_seconds_bucket{le="0.001",controller="cluster"} 1
slipway_reconcile_duration_seconds_bucket{le="0.002",controller="cluster"} 5
slipway_reconcile_duration_seconds_bucket{le="0.1",controller="cluster"} 9
slipway_reconcile_duration_seconds_bucket{le="+Inf",controller="cluster"} 10
slipway_provider_calls_total{provider="sim",operation="create_machine",outcome="ok"} 4
# EOF
"#;

    #[test]
    fn reads_reconciles_errors_durations_and_provider_calls() {
        let metrics = ManagerMetrics::from_samples(&parse(SCRAPE).unwrap());
        let cluster = &metrics.controllers["cluster"];
        assert_eq!(cluster.reconciles, 10);
        assert_eq!(cluster.error_count(), 2);
        assert_eq!(cluster.mean_seconds(), Some(0.05));
        assert_eq!(cluster.quantile_upper_bound(0.5), Some(0.002));
        assert_eq!(cluster.quantile_upper_bound(0.9), Some(0.1));
        assert_eq!(cluster.quantile_upper_bound(0.99), Some(f64::INFINITY));
        assert_eq!(metrics.controllers["machinepool"].reconciles, 4);
        assert_eq!(metrics.controllers["machinepool"].mean_seconds(), None);
        assert_eq!(metrics.provider_calls["sim create_machine ok"], 4);
    }

    #[test]
    fn the_difference_of_two_scrapes_is_the_work_between_them() {
        let before = ManagerMetrics::from_samples(&parse(SCRAPE).unwrap());
        // Three more cluster reconciles, each slower than 0.1 s: the reconcile counter and the histogram's count.
        let later = SCRAPE
            .replace("{controller=\"cluster\"} 10", "{controller=\"cluster\"} 13")
            .replace(
                "_sum{controller=\"cluster\"} 0.5",
                "_sum{controller=\"cluster\"} 0.8",
            )
            .replace(
                "le=\"+Inf\",controller=\"cluster\"} 10",
                "le=\"+Inf\",controller=\"cluster\"} 13",
            );
        let after = ManagerMetrics::from_samples(&parse(&later).unwrap());
        let delta = after.since(&before);
        let cluster = &delta.controllers["cluster"];
        assert_eq!(cluster.reconciles, 3);
        assert_eq!(cluster.duration_count, 3);
        assert!((cluster.duration_sum_seconds - 0.3).abs() < 1e-9);
        assert_eq!(cluster.error_count(), 0);
        assert_eq!(cluster.quantile_upper_bound(0.5), Some(f64::INFINITY));
        assert!(delta.provider_calls.is_empty());
    }
}
