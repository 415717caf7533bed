//! Hourly prices for the cost estimate in `status.cost`.
//!
//! An embedded table of common instance types, overridable as a whole or per type (the manager can fill the
//! overrides from a ConfigMap). Unknown types have no price; the controller then says the cost is unknown
//! rather than guessing.

use std::collections::BTreeMap;

use slipway_provider::Price;

/// On-demand prices in USD per hour, Linux, shared tenancy, region us-east-1, from AWS's public price list
/// (https://aws.amazon.com/ec2/pricing/on-demand/), as published in 2025. Other regions cost up to ~30% more;
/// a ConfigMap override is the place for exact numbers.
const US_EAST_1_ON_DEMAND: &[(&str, f64)] = &[
    ("t3.micro", 0.0104),
    ("t3.small", 0.0208),
    ("t3.medium", 0.0416),
    ("t3.large", 0.0832),
    ("t3.xlarge", 0.1664),
    ("t3.2xlarge", 0.3328),
    ("t3a.medium", 0.0376),
    ("t3a.large", 0.0752),
    ("t4g.medium", 0.0336),
    ("t4g.large", 0.0672),
    ("m5.large", 0.096),
    ("m5.xlarge", 0.192),
    ("m5.2xlarge", 0.384),
    ("m6i.large", 0.096),
    ("m6i.xlarge", 0.192),
    ("m6i.2xlarge", 0.384),
    ("m6g.large", 0.077),
    ("m7i.large", 0.1008),
    ("m7i.xlarge", 0.2016),
    ("c5.large", 0.085),
    ("c5.xlarge", 0.17),
    ("c6i.large", 0.085),
    ("c6i.xlarge", 0.17),
    ("c6g.large", 0.068),
    ("r5.large", 0.126),
    ("r6i.large", 0.126),
    ("r6i.xlarge", 0.252),
];

/// A NAT gateway's hourly charge in us-east-1 (2025), data processing not included. The price ConfigMap can
/// override it under the key [`NAT_GATEWAY_KEY`].
const NAT_GATEWAY_PER_HOUR: f64 = 0.045;
/// The price table's key for a NAT gateway.
pub const NAT_GATEWAY_KEY: &str = "nat-gateway";

/// Prices by instance type, and a NAT gateway's.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    per_hour: BTreeMap<String, f64>,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            per_hour: US_EAST_1_ON_DEMAND
                .iter()
                .map(|(t, p)| (t.to_string(), *p))
                .collect(),
        }
    }
}

impl PriceTable {
    /// The embedded table with `overrides` on top (USD per hour by instance type).
    pub fn with_overrides(overrides: BTreeMap<String, f64>) -> Self {
        let mut table = Self::default();
        table.per_hour.extend(overrides);
        table
    }

    /// Overrides from a ConfigMap's `data`: each key an instance type, each value its on-demand price in USD per
    /// hour as a decimal (`m5.large: "0.096"`). The error names the first entry that is not a price.
    pub fn parse_overrides(
        data: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, f64>, String> {
        data.iter()
            .map(|(instance_type, value)| match value.trim().parse::<f64>() {
                Ok(price) if price.is_finite() && price >= 0.0 => {
                    Ok((instance_type.clone(), price))
                }
                _ => Err(format!(
                    "{instance_type}: {value:?} is not a price; write the hourly price in USD as a \
                         decimal, e.g. \"0.096\""
                )),
            })
            .collect()
    }

    /// One NAT gateway's hourly price.
    pub fn nat_gateway(&self) -> Price {
        Price {
            per_hour: self
                .per_hour
                .get(NAT_GATEWAY_KEY)
                .copied()
                .unwrap_or(NAT_GATEWAY_PER_HOUR),
            currency: "USD".into(),
        }
    }

    pub fn price(&self, instance_type: &str) -> Option<Price> {
        self.per_hour.get(instance_type).map(|per_hour| Price {
            per_hour: *per_hour,
            currency: "USD".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_listed_prices_and_add_new_types() {
        let table = PriceTable::with_overrides(BTreeMap::from([
            ("t3.medium".to_string(), 0.05),
            ("x9.huge".to_string(), 9.0),
        ]));
        assert_eq!(table.price("t3.medium").unwrap().per_hour, 0.05);
        assert_eq!(table.price("x9.huge").unwrap().per_hour, 9.0);
        assert_eq!(table.price("m5.large").unwrap().per_hour, 0.096);
        assert_eq!(table.price("nope.large"), None);
    }

    #[test]
    fn configmap_data_parses_as_usd_per_hour_and_names_a_bad_entry() {
        let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            PriceTable::parse_overrides(&data(&[("m5.large", "0.1"), ("x9.huge", " 9 ")])),
            Ok(BTreeMap::from([
                ("m5.large".to_string(), 0.1),
                ("x9.huge".to_string(), 9.0)
            ]))
        );
        for bad in ["", "cheap", "-1", "NaN", "inf", "$0.10"] {
            let error = PriceTable::parse_overrides(&data(&[("m5.large", "0.1"), ("t3.odd", bad)]))
                .unwrap_err();
            assert!(error.starts_with("t3.odd: "), "{bad:?}: {error}");
        }
    }
}
