//! Counting the requests kube-apiserver served, from its own `apiserver_request_total` counter: summed over the
//! labels a benchmark does not compare (response code, scope, version, component, dry run) and kept per verb,
//! API group, resource and subresource, so that two scrapes give the requests made between them.
//!
//! kube-apiserver counts a request when it completes, so a WATCH shows up when it ends, not when it starts.

use std::collections::BTreeMap;
use std::fmt;

use crate::prometheus_text::Sample;

/// The counter the apiserver keeps for every request it served.
pub const REQUEST_COUNTER: &str = "apiserver_request_total";

/// Verbs that change stored state. `APPLY` is server-side apply (a PATCH with the apply content type).
pub const WRITE_VERBS: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// What a request was: its verb and the resource it was made on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKind {
    pub verb: String,
    /// The API group; "" for the core group.
    pub group: String,
    /// The resource, "" for non-resource URLs such as `/openapi/v3`.
    pub resource: String,
    /// The subresource (`status`); for a non-resource URL the apiserver puts its path here.
    pub subresource: String,
}

impl RequestKind {
    pub fn is_write(&self) -> bool {
        WRITE_VERBS.contains(&self.verb.as_str())
    }

    /// `resource[.group][/subresource]`, as kubectl names it (`clusters.slipway.dev/status`); the path for a
    /// non-resource URL.
    pub fn resource_name(&self) -> String {
        if self.resource.is_empty() {
            return if self.subresource.is_empty() {
                "(non-resource URL)".to_string()
            } else {
                self.subresource.clone()
            };
        }
        let mut name = self.resource.clone();
        if !self.group.is_empty() {
            name = format!("{name}.{}", self.group);
        }
        if !self.subresource.is_empty() {
            name = format!("{name}/{}", self.subresource);
        }
        name
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource_name())
    }
}

/// Requests served, per kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestCounts {
    counts: BTreeMap<RequestKind, u64>,
}

impl RequestCounts {
    /// The apiserver's totals since it started, from one scrape of its `/metrics`.
    pub fn from_samples(samples: &[Sample]) -> Self {
        let mut counts = BTreeMap::new();
        for sample in samples.iter().filter(|s| s.name == REQUEST_COUNTER) {
            let kind = RequestKind {
                verb: sample.label("verb").to_string(),
                group: sample.label("group").to_string(),
                resource: sample.label("resource").to_string(),
                subresource: sample.label("subresource").to_string(),
            };
            // Counters are integers written as floats.
            *counts.entry(kind).or_default() += sample.value.max(0.0).round() as u64;
        }
        Self { counts }
    }

    /// The requests served after `earlier` was scraped, up to when `self` was. A kind whose counter went down
    /// (the apiserver restarted) counts from zero.
    pub fn since(&self, earlier: &Self) -> Self {
        let counts = self
            .counts
            .iter()
            .map(|(kind, &now)| {
                let before = earlier.counts.get(kind).copied().unwrap_or(0);
                let delta = if now >= before { now - before } else { now };
                (kind.clone(), delta)
            })
            .filter(|(_, delta)| *delta > 0)
            .collect();
        Self { counts }
    }

    /// Only the kinds `keep` accepts.
    pub fn filter(&self, keep: impl Fn(&RequestKind) -> bool) -> Self {
        let counts = self
            .counts
            .iter()
            .filter(|(kind, _)| keep(kind))
            .map(|(kind, &count)| (kind.clone(), count))
            .collect();
        Self { counts }
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Totals per verb, verbs in alphabetical order.
    pub fn by_verb(&self) -> BTreeMap<String, u64> {
        let mut verbs = BTreeMap::new();
        for (kind, count) in &self.counts {
            *verbs.entry(kind.verb.clone()).or_default() += count;
        }
        verbs
    }

    /// Every kind with its count, the most frequent first.
    pub fn most_frequent(&self) -> Vec<(&RequestKind, u64)> {
        let mut kinds: Vec<(&RequestKind, u64)> =
            self.counts.iter().map(|(k, &c)| (k, c)).collect();
        kinds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        kinds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus_text::parse;

    fn scrape(lines: &[(&str, &str, &str, &str, u64)]) -> RequestCounts {
        let text: String = lines
            .iter()
            .map(|(verb, group, resource, code, count)| {
                format!(
                    "apiserver_request_total{{code=\"{code}\",group=\"{group}\",resource=\"{resource}\",subresource=\"\",verb=\"{verb}\",version=\"v1\"}} {count}\n"
                )
            })
            .collect();
        RequestCounts::from_samples(&parse(&text).unwrap())
    }

    #[test]
    fn sums_over_codes_and_keeps_verb_and_resource_apart() {
        let counts = scrape(&[
            ("POST", "slipway.dev", "clusters", "201", 90),
            ("POST", "slipway.dev", "clusters", "409", 10),
            ("GET", "slipway.dev", "clusters", "200", 7),
            ("POST", "", "events", "201", 3),
        ]);
        assert_eq!(counts.total(), 110);
        assert_eq!(
            counts.by_verb(),
            BTreeMap::from([("GET".into(), 7), ("POST".into(), 103)])
        );
        let top = counts.most_frequent();
        assert_eq!(top[0].0.to_string(), "POST clusters.slipway.dev");
        assert_eq!(top[0].1, 100);
        assert_eq!(top[2].0.to_string(), "POST events");
    }

    #[test]
    fn the_difference_of_two_scrapes_is_what_happened_between_them() {
        let before = scrape(&[
            ("APPLY", "slipway.dev", "clusters", "200", 5),
            ("GET", "", "namespaces", "200", 4),
        ]);
        let after = scrape(&[
            ("APPLY", "slipway.dev", "clusters", "200", 8),
            ("GET", "", "namespaces", "200", 4),
            ("PUT", "coordination.k8s.io", "leases", "200", 2),
        ]);
        let delta = after.since(&before);
        assert_eq!(
            delta.by_verb(),
            BTreeMap::from([("APPLY".into(), 3), ("PUT".into(), 2)])
        );
        let slipway_writes = delta.filter(|k| k.is_write() && k.group == "slipway.dev");
        assert_eq!(slipway_writes.total(), 3);
    }

    #[test]
    fn a_counter_that_went_down_counts_from_zero() {
        let before = scrape(&[("GET", "", "pods", "200", 50)]);
        let after = scrape(&[("GET", "", "pods", "200", 4)]);
        assert_eq!(after.since(&before).total(), 4);
    }

    #[test]
    fn names_subresources_and_non_resource_requests() {
        let kind = RequestKind {
            verb: "APPLY".into(),
            group: "slipway.dev".into(),
            resource: "machinepools".into(),
            subresource: "status".into(),
        };
        assert_eq!(kind.to_string(), "APPLY machinepools.slipway.dev/status");
        assert!(kind.is_write());
        let openapi = RequestKind {
            verb: "GET".into(),
            group: String::new(),
            resource: String::new(),
            subresource: "/openapi/v3".into(),
        };
        assert_eq!(openapi.to_string(), "GET /openapi/v3");
        assert!(!openapi.is_write());
    }
}
