//! The cluster's `status.cost`: what its desired machines cost per hour at the provider's prices.
//!
//! Desired, not actual: control-plane replicas plus every MachinePool's `spec.replicas`, each at the hourly price
//! of its instance type, plus the shared infrastructure the provider prices (the aws provider's NAT gateways).
//! That is what the cluster costs once converged; counting the machines that happen to exist would move the
//! estimate (and write the status) with every surge machine of a rollout. A type the provider has
//! no price for makes the estimate `unknown` and is named, rather than guessed or left out of the sum. A provider
//! that prices nothing at all (not even its default machine) gets no estimate.

use std::collections::BTreeMap;

use slipway_api::{Cluster, CostEstimate, MachinePool, MachineSettings};
use slipway_provider::{InfrastructurePrice, Price};

/// `perHour` of an estimate that misses a price.
pub const UNKNOWN: &str = "unknown";

/// One group of identical machines: how many, and the instance type they ask for (`None`: the provider's default).
#[derive(Debug, Clone, PartialEq)]
pub struct Group<'a> {
    pub what: String,
    pub replicas: u32,
    pub instance_type: Option<&'a str>,
}

/// The groups of a cluster: its control plane and the pools in `pools` that belong to it (not being deleted).
pub fn groups<'a>(cluster: &'a Cluster, pools: &'a [impl AsRef<MachinePool>]) -> Vec<Group<'a>> {
    let instance_type = |m: &'a MachineSettings| m.instance_type.as_deref();
    let mut groups = vec![Group {
        what: "control plane".into(),
        replicas: u32::try_from(cluster.spec.control_plane.replicas).unwrap_or(0),
        instance_type: instance_type(&cluster.spec.control_plane.machine),
    }];
    let mut pools: Vec<&MachinePool> = pools
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    pools.sort_by_key(|p| p.metadata.name.clone());
    groups.extend(pools.into_iter().map(|pool| Group {
        what: format!("pool {}", pool.metadata.name.as_deref().unwrap_or_default()),
        replicas: u32::try_from(pool.spec.replicas).unwrap_or(0),
        instance_type: instance_type(&pool.spec.template.machine),
    }));
    groups
}

/// The estimate for `groups` at the prices of `price_per_hour` (a provider's: instance type, `None` for its
/// default, to price); `None` when it has no prices at all.
pub fn estimate(
    price_per_hour: impl Fn(Option<&str>) -> Option<Price>,
    groups: &[Group<'_>],
    infrastructure: &[InfrastructurePrice],
) -> Option<CostEstimate> {
    // A provider with a price list prices its own default machine.
    let default = price_per_hour(None)?;
    let mut total = 0.0;
    let mut machines = 0;
    let mut currency = default.currency;
    let mut unpriced: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for group in groups.iter().filter(|g| g.replicas > 0) {
        machines += group.replicas;
        match price_per_hour(group.instance_type) {
            Some(price) => {
                total += price.per_hour * f64::from(group.replicas);
                currency = price.currency;
            }
            None => unpriced
                .entry(
                    group
                        .instance_type
                        .unwrap_or("the provider's default")
                        .to_string(),
                )
                .or_default()
                .push(group.what.clone()),
        }
    }
    let mut shared = Vec::new();
    for piece in infrastructure.iter().filter(|p| p.count > 0) {
        total += piece.price.per_hour * f64::from(piece.count);
        shared.push(format!(
            " and {} {}{}",
            piece.count,
            piece.what,
            if piece.count == 1 { "" } else { "s" }
        ));
    }
    Some(if unpriced.is_empty() {
        CostEstimate {
            per_hour: decimal(total),
            currency,
            unpriced_instance_types: Vec::new(),
            note: Some(format!(
                "on-demand price of {machines} desired machine{}{}; excludes volumes, traffic and addresses",
                if machines == 1 { "" } else { "s" },
                shared.concat()
            )),
        }
    } else {
        let which: Vec<String> = unpriced
            .iter()
            .map(|(t, groups)| format!("{t} ({})", groups.join(", ")))
            .collect();
        CostEstimate {
            per_hour: UNKNOWN.into(),
            currency,
            unpriced_instance_types: unpriced.into_keys().collect(),
            note: Some(format!(
                "no price for instance type {}; add it to the provider's price list",
                which.join(", ")
            )),
        }
    })
}

/// A price as a decimal string with at most 4 decimals (AWS lists hourly prices to 4), trailing zeros dropped:
/// `0.1248`, `0.5`, `0`.
pub fn decimal(amount: f64) -> String {
    let fixed = format!("{:.4}", (amount * 10_000.0).round() / 10_000.0);
    let trimmed = fixed.trim_end_matches('0').trim_end_matches('.');
    if trimmed.is_empty() || trimmed == "-0" {
        "0".into()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prices by type, `default.type` standing for the provider's default.
    fn priced(table: &'static [(&'static str, f64)]) -> impl Fn(Option<&str>) -> Option<Price> {
        move |instance_type| {
            let wanted = instance_type.unwrap_or("default.type");
            table
                .iter()
                .find(|(t, _)| *t == wanted)
                .map(|(_, p)| Price {
                    per_hour: *p,
                    currency: "USD".into(),
                })
        }
    }

    const PRICES: &[(&str, f64)] = &[
        ("default.type", 0.0416),
        ("t3.large", 0.0832),
        ("m5.large", 0.096),
    ];

    fn group(what: &str, replicas: u32, instance_type: Option<&'static str>) -> Group<'static> {
        Group {
            what: what.into(),
            replicas,
            instance_type,
        }
    }

    #[test]
    fn the_estimate_sums_replicas_times_price_per_group() {
        let cost = estimate(
            priced(PRICES),
            &[
                group("control plane", 3, None),
                group("pool a", 2, Some("t3.large")),
                group("pool b", 5, Some("m5.large")),
            ],
            &[],
        )
        .unwrap();
        // 3 × 0.0416 + 2 × 0.0832 + 5 × 0.096 = 0.1248 + 0.1664 + 0.48
        assert_eq!(cost.per_hour, "0.7712");
        assert_eq!(cost.currency, "USD");
        assert!(cost.unpriced_instance_types.is_empty());
        assert!(cost.note.unwrap().contains("10 desired machines"));
    }

    #[test]
    fn shared_infrastructure_is_added_and_named() {
        let nat = InfrastructurePrice {
            what: "NAT gateway".into(),
            count: 3,
            price: Price {
                per_hour: 0.045,
                currency: "USD".into(),
            },
        };
        let cost = estimate(priced(PRICES), &[group("control plane", 1, None)], &[nat]).unwrap();
        // 0.0416 + 3 × 0.045
        assert_eq!(cost.per_hour, "0.1766");
        let note = cost.note.unwrap();
        assert!(
            note.contains("1 desired machine and 3 NAT gateways"),
            "{note}"
        );
    }

    #[test]
    fn an_unpriced_type_makes_the_estimate_unknown_and_is_named() {
        let cost = estimate(
            priced(PRICES),
            &[
                group("control plane", 1, None),
                group("pool gpu", 2, Some("p5.48xlarge")),
                group("pool gpu2", 1, Some("p5.48xlarge")),
                group("pool odd", 1, Some("x9.huge")),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(cost.per_hour, UNKNOWN);
        assert_eq!(cost.unpriced_instance_types, ["p5.48xlarge", "x9.huge"]);
        let note = cost.note.unwrap();
        assert!(
            note.contains("p5.48xlarge (pool gpu, pool gpu2)")
                && note.contains("x9.huge (pool odd)"),
            "{note}"
        );
    }

    #[test]
    fn groups_scaled_to_zero_cost_nothing_and_need_no_price() {
        let cost = estimate(
            priced(PRICES),
            &[
                group("control plane", 1, None),
                group("pool idle", 0, Some("x9.huge")),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(cost.per_hour, "0.0416");
        assert!(cost.unpriced_instance_types.is_empty());
    }

    #[test]
    fn a_provider_without_prices_gives_no_estimate() {
        assert_eq!(
            estimate(priced(&[]), &[group("control plane", 1, None)], &[]),
            None
        );
    }

    #[test]
    fn decimals_have_at_most_four_places_and_no_float_noise() {
        assert_eq!(decimal(3.0 * 0.0416), "0.1248");
        assert_eq!(decimal(0.1 + 0.2), "0.3");
        assert_eq!(decimal(0.5), "0.5");
        assert_eq!(decimal(2.0), "2");
        assert_eq!(decimal(0.0), "0");
        assert_eq!(decimal(0.00004), "0");
        assert_eq!(decimal(12.34567), "12.3457");
    }

    #[test]
    fn groups_are_the_control_plane_then_live_pools_by_name() {
        let cluster: Cluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "Cluster",
            "metadata": { "name": "c" },
            "spec": {
                "kubernetes": { "version": "v1.37.2" },
                "controlPlane": { "replicas": 3, "machine": { "instanceType": "m5.large" } },
                "infrastructure": { "sim": {} }
            }
        }))
        .unwrap();
        let pool = |name: &str, replicas: i32, deleting: bool| -> MachinePool {
            let mut pool: MachinePool = serde_json::from_value(serde_json::json!({
                "apiVersion": "slipway.dev/v1alpha1", "kind": "MachinePool",
                "metadata": { "name": name },
                "spec": { "clusterName": "c", "replicas": replicas,
                          "template": { "machine": { "instanceType": "t3.large" } } }
            }))
            .unwrap();
            if deleting {
                pool.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::now(),
                    ));
            }
            pool
        };
        let pools = vec![
            std::sync::Arc::new(pool("z", 2, false)),
            std::sync::Arc::new(pool("gone", 9, true)),
            std::sync::Arc::new(pool("a", 1, false)),
        ];
        assert_eq!(
            groups(&cluster, &pools),
            [
                group("control plane", 3, Some("m5.large")),
                group("pool a", 1, Some("t3.large")),
                group("pool z", 2, Some("t3.large")),
            ]
        );
    }
}
