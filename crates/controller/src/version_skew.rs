//! Which Kubernetes versions may run side by side, and which step one change of a version may take.
//!
//! Two rules, as pure functions so they are tested without an apiserver:
//! - [`upgrade_step`]: one update of a version (the Cluster's `spec.kubernetes.version`, a pool's `spec.version`)
//!   keeps the major version, raises the minor by one at most and never lowers it; patches of one minor may go
//!   either way. The apiserver enforces the same rule at admission (the CEL rules in `slipway_api`'s
//!   `version_rules`); this copy is for the controller, which sees versions CEL cannot (a pool's effective
//!   version when it follows the cluster). Its messages are the CEL messages without the field name, which the
//!   caller puts in front; a test below holds them to the admission cases in `api/tests/`.
//! - [`pool_skew`]: a pool's nodes against the control plane, as the Kubernetes version skew policy allows a
//!   kubelet: not a newer minor than kube-apiserver, and at most [`MAX_POOL_MINORS_BEHIND`] minors older. CEL on a
//!   MachinePool cannot read the Cluster, so only the controller can check this one.

use std::fmt;
use std::str::FromStr;

/// How many minors a pool's nodes may lag the control plane: the kubelet skew the Kubernetes version skew policy
/// supports (kubelet up to three minors older than kube-apiserver).
pub const MAX_POOL_MINORS_BEHIND: u32 = 3;

/// A Kubernetes release as Slipway's specs write it: `vMAJOR.MINOR.PATCH`, e.g. `v1.37.2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubernetesVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for KubernetesVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A string that is not `vMAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a Kubernetes version: write it as vMAJOR.MINOR.PATCH, e.g. v1.37.2")]
pub struct ParseVersionError {
    pub value: String,
}

impl FromStr for KubernetesVersion {
    type Err = ParseVersionError;

    /// Accepts what the CRDs accept: `v`, then three dot-separated numbers of 1 to 9 decimal digits.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseVersionError {
            value: value.to_string(),
        };
        let number = |part: &str| -> Result<u32, ParseVersionError> {
            // `u32::from_str` alone would also take a leading `+`.
            if part.is_empty() || part.len() > 9 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            part.parse().map_err(|_| invalid())
        };
        let mut parts = value.strip_prefix('v').ok_or_else(invalid)?.split('.');
        let (Some(major), Some(minor), Some(patch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        Ok(Self {
            major: number(major)?,
            minor: number(minor)?,
            patch: number(patch)?,
        })
    }
}

/// Why two versions may not follow each other, or run side by side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkewError {
    /// `which` names the value: "the old version", "spec.version", ...
    #[error("{which}: {source}")]
    Invalid {
        which: &'static str,
        #[source]
        source: ParseVersionError,
    },

    #[error(
        "the major version cannot change ({from} → {to}); stay on v{} and upgrade one minor at a time",
        from.major
    )]
    MajorChange {
        from: KubernetesVersion,
        to: KubernetesVersion,
    },

    #[error(
        "cannot go back a minor version ({from} → {to}), Kubernetes does not support it; set v{}.{}.x or newer",
        from.major, from.minor
    )]
    MinorDowngrade {
        from: KubernetesVersion,
        to: KubernetesVersion,
    },

    #[error(
        "upgrade one minor at a time: {from} → v{}.{}.x first, then on towards {to}",
        from.major, from.minor + 1
    )]
    MinorSkipped {
        from: KubernetesVersion,
        to: KubernetesVersion,
    },

    #[error(
        "spec.version: {pool} is not the control plane's major version ({control_plane}, the Cluster's \
         spec.kubernetes.version); set spec.version to a v{}.x.y version, or remove it to follow the cluster",
        control_plane.major
    )]
    PoolMajorDiffers {
        control_plane: KubernetesVersion,
        pool: KubernetesVersion,
    },

    #[error(
        "spec.version: {pool} is newer than the control plane's {control_plane} (the Cluster's \
         spec.kubernetes.version), and nodes may not run a newer minor than the control plane; set spec.version \
         to v{}.{}.x or older, or remove it to follow the cluster",
        control_plane.major, control_plane.minor
    )]
    PoolNewerThanControlPlane {
        control_plane: KubernetesVersion,
        pool: KubernetesVersion,
    },

    #[error(
        "spec.version: {pool} is {} minors older than the control plane's {control_plane} (the Cluster's \
         spec.kubernetes.version), and nodes may be at most {MAX_POOL_MINORS_BEHIND} minors older; set \
         spec.version to v{}.{}.x or newer, or remove it to follow the cluster",
        control_plane.minor - pool.minor,
        control_plane.major, control_plane.minor - MAX_POOL_MINORS_BEHIND
    )]
    PoolTooOld {
        control_plane: KubernetesVersion,
        pool: KubernetesVersion,
    },
}

fn parse(which: &'static str, value: &str) -> Result<KubernetesVersion, SkewError> {
    value
        .parse()
        .map_err(|source| SkewError::Invalid { which, source })
}

/// May a version field change from `old` to `new` in one update? The same major, the minor up by one at most
/// and never down, any patch within those. Errors name no field: prefix the one that changed.
pub fn upgrade_step(old: &str, new: &str) -> Result<(), SkewError> {
    let from = parse("the old version", old)?;
    let to = parse("the new version", new)?;
    if to.major != from.major {
        Err(SkewError::MajorChange { from, to })
    } else if to.minor < from.minor {
        Err(SkewError::MinorDowngrade { from, to })
    } else if to.minor > from.minor + 1 {
        Err(SkewError::MinorSkipped { from, to })
    } else {
        Ok(())
    }
}

/// May a pool whose `spec.version` is `pool` run beside a control plane at `control_plane` (the Cluster's
/// `spec.kubernetes.version`)? The same major; not a newer minor; at most [`MAX_POOL_MINORS_BEHIND`] minors older.
/// Patches do not count: every patch of a minor is within the skew of every other (a pool at v1.37.3 beside a
/// control plane at v1.37.2 is fine). Errors name `spec.version` and say what to set it to.
pub fn pool_skew(control_plane: &str, pool: &str) -> Result<(), SkewError> {
    let control_plane = parse("the Cluster's spec.kubernetes.version", control_plane)?;
    let pool = parse("spec.version", pool)?;
    if pool.major != control_plane.major {
        Err(SkewError::PoolMajorDiffers {
            control_plane,
            pool,
        })
    } else if pool.minor > control_plane.minor {
        Err(SkewError::PoolNewerThanControlPlane {
            control_plane,
            pool,
        })
    } else if pool.minor + MAX_POOL_MINORS_BEHIND < control_plane.minor {
        Err(SkewError::PoolTooOld {
            control_plane,
            pool,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn v(major: u32, minor: u32, patch: u32) -> KubernetesVersion {
        KubernetesVersion {
            major,
            minor,
            patch,
        }
    }

    #[test]
    fn parses_and_prints_what_the_crds_accept() {
        assert_eq!("v1.37.2".parse(), Ok(v(1, 37, 2)));
        assert_eq!(
            "v1.36.3".parse::<KubernetesVersion>().unwrap().to_string(),
            "v1.36.3"
        );
        assert_eq!("v0.0.0".parse(), Ok(v(0, 0, 0)));
        assert_eq!("v999999999.1.1".parse(), Ok(v(999_999_999, 1, 1)));
    }

    #[test]
    fn refuses_what_the_crds_refuse_with_the_value_and_the_fix() {
        for bad in [
            "",
            "v",
            "1.37.2",
            "v1.37",
            "v1.37.2.1",
            "v1..2",
            "v1.37.",
            "v1.37.+2",
            "v1.37.-2",
            "v1.37.2-rc.0",
            "V1.37.2",
            " v1.37.2",
            "v1.3a.2",
            "v1.1234567890.0",
            "latest",
        ] {
            let error = bad.parse::<KubernetesVersion>().unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "{bad:?} is not a Kubernetes version: write it as vMAJOR.MINOR.PATCH, e.g. v1.37.2"
                )
            );
        }
    }

    #[test]
    fn versions_order_by_major_then_minor_then_patch() {
        assert!(v(1, 37, 0) > v(1, 36, 9));
        assert!(v(1, 37, 10) > v(1, 37, 9));
        assert!(v(2, 0, 0) > v(1, 99, 99));
    }

    #[test]
    fn an_upgrade_goes_one_minor_at_a_time() {
        assert_eq!(upgrade_step("v1.36.3", "v1.37.2"), Ok(()));
        assert_eq!(upgrade_step("v1.36.3", "v1.37.0"), Ok(()));
        assert_eq!(
            upgrade_step("v1.36.3", "v1.38.0").unwrap_err().to_string(),
            "upgrade one minor at a time: v1.36.3 → v1.37.x first, then on towards v1.38.0"
        );
        assert!(matches!(
            upgrade_step("v1.30.0", "v1.37.2"),
            Err(SkewError::MinorSkipped { .. })
        ));
    }

    #[test]
    fn the_minor_never_goes_down() {
        assert_eq!(
            upgrade_step("v1.37.2", "v1.36.3").unwrap_err().to_string(),
            "cannot go back a minor version (v1.37.2 → v1.36.3), Kubernetes does not support it; set v1.37.x or newer"
        );
        // A higher patch does not make a lower minor newer.
        assert!(matches!(
            upgrade_step("v1.37.0", "v1.36.9"),
            Err(SkewError::MinorDowngrade { .. })
        ));
    }

    #[test]
    fn patches_of_one_minor_go_either_way_and_no_change_is_a_step() {
        assert_eq!(upgrade_step("v1.37.2", "v1.37.1"), Ok(()));
        assert_eq!(upgrade_step("v1.37.1", "v1.37.3"), Ok(()));
        assert_eq!(upgrade_step("v1.37.2", "v1.37.2"), Ok(()));
    }

    #[test]
    fn the_major_never_changes() {
        assert_eq!(
            upgrade_step("v1.37.2", "v2.0.0").unwrap_err().to_string(),
            "the major version cannot change (v1.37.2 → v2.0.0); stay on v1 and upgrade one minor at a time"
        );
        // Not even to what would be "the next minor" by number, nor down.
        assert!(matches!(
            upgrade_step("v1.37.2", "v2.38.0"),
            Err(SkewError::MajorChange { .. })
        ));
        assert!(matches!(
            upgrade_step("v1.37.2", "v0.37.2"),
            Err(SkewError::MajorChange { .. })
        ));
    }

    #[test]
    fn a_malformed_version_is_named() {
        assert_eq!(
            upgrade_step("v1.37", "v1.37.2").unwrap_err().to_string(),
            "the old version: \"v1.37\" is not a Kubernetes version: write it as vMAJOR.MINOR.PATCH, e.g. v1.37.2"
        );
        assert!(matches!(
            upgrade_step("v1.37.2", "latest"),
            Err(SkewError::Invalid {
                which: "the new version",
                ..
            })
        ));
        assert!(matches!(
            pool_skew("v1.37.2", "1.37.2"),
            Err(SkewError::Invalid {
                which: "spec.version",
                ..
            })
        ));
        assert!(matches!(
            pool_skew("", "v1.37.2"),
            Err(SkewError::Invalid {
                which: "the Cluster's spec.kubernetes.version",
                ..
            })
        ));
    }

    #[test]
    fn a_pool_may_run_the_control_planes_minor_or_up_to_three_older() {
        for pool in [
            "v1.37.2", "v1.37.0", "v1.37.9", "v1.36.3", "v1.35.0", "v1.34.12",
        ] {
            assert_eq!(pool_skew("v1.37.2", pool), Ok(()), "pool at {pool}");
        }
    }

    #[test]
    fn a_pool_may_not_run_a_newer_minor_than_the_control_plane() {
        assert_eq!(
            pool_skew("v1.37.2", "v1.38.0").unwrap_err().to_string(),
            "spec.version: v1.38.0 is newer than the control plane's v1.37.2 (the Cluster's spec.kubernetes.version), \
             and nodes may not run a newer minor than the control plane; set spec.version to v1.37.x or older, or \
             remove it to follow the cluster"
        );
    }

    #[test]
    fn a_pool_may_not_lag_more_than_three_minors() {
        assert_eq!(
            pool_skew("v1.37.2", "v1.33.9").unwrap_err().to_string(),
            "spec.version: v1.33.9 is 4 minors older than the control plane's v1.37.2 (the Cluster's \
             spec.kubernetes.version), and nodes may be at most 3 minors older; set spec.version to v1.34.x or \
             newer, or remove it to follow the cluster"
        );
        assert!(matches!(
            pool_skew("v1.37.2", "v1.0.0"),
            Err(SkewError::PoolTooOld { .. })
        ));
    }

    #[test]
    fn a_pool_keeps_the_control_planes_major() {
        assert_eq!(
            pool_skew("v1.37.2", "v2.0.0").unwrap_err().to_string(),
            "spec.version: v2.0.0 is not the control plane's major version (v1.37.2, the Cluster's \
             spec.kubernetes.version); set spec.version to a v1.x.y version, or remove it to follow the cluster"
        );
        // A lower major is not "older within three minors" just because its minor number is close.
        assert!(matches!(
            pool_skew("v2.1.0", "v1.99.0"),
            Err(SkewError::PoolMajorDiffers { .. })
        ));
    }

    #[test]
    fn at_minor_zero_the_pool_limits_do_not_underflow() {
        assert_eq!(pool_skew("v1.0.0", "v1.0.5"), Ok(()));
        assert!(matches!(
            pool_skew("v1.0.0", "v1.1.0"),
            Err(SkewError::PoolNewerThanControlPlane { .. })
        ));
        assert_eq!(pool_skew("v1.3.0", "v1.0.0"), Ok(()));
    }

    // The admission rules and `upgrade_step` must agree. The version cases of the API's admission tests (run
    // against a real apiserver by api/tests/admission.rs) are read here and fed to `upgrade_step`: every refused
    // update is refused with the apiserver's message minus the field name, and every accepted sequence of updates
    // is accepted.

    fn api_tests() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../api/tests")
    }

    fn documents(path: &Path) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).unwrap();
        serde_saphyr::from_multiple::<serde_json::Value>(&text)
            .unwrap()
            .into_iter()
            .filter(|doc| !doc.is_null())
            .collect()
    }

    /// The version field of a Cluster or MachinePool document: its path and value (None when left out). None
    /// for other kinds.
    fn version_of(doc: &serde_json::Value) -> Option<(&'static str, Option<String>)> {
        match doc["kind"].as_str() {
            Some("Cluster") => Some((
                "spec.kubernetes.version",
                doc["spec"]["kubernetes"]["version"]
                    .as_str()
                    .map(String::from),
            )),
            Some("MachinePool") => Some((
                "spec.version",
                doc["spec"]["version"].as_str().map(String::from),
            )),
            _ => None,
        }
    }

    fn yaml_files(dir: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(api_tests().join(dir))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn every_version_update_refused_at_admission_is_refused_with_the_same_message() {
        let mut checked = 0;
        for path in yaml_files("invalid") {
            let text = std::fs::read_to_string(&path).unwrap();
            let header = |key: &str| {
                text.lines()
                    .take_while(|line| line.starts_with('#'))
                    .find_map(|line| line.strip_prefix(&format!("# {key}:")))
                    .map(|value| value.trim().to_string())
            };
            let (Some(expect), Some(base)) = (header("expect"), header("update-of")) else {
                continue;
            };
            let case = documents(&path).remove(0);
            let Some((field, new)) = version_of(&case) else {
                continue;
            };
            if !expect.starts_with(&format!("{field}: ")) {
                continue;
            }
            let base = documents(&api_tests().join("valid").join(&base)).remove(0);
            let (Some((_, Some(old))), Some(new)) = (version_of(&base), new) else {
                panic!(
                    "{}: a version case whose base or update has no version",
                    path.display()
                );
            };
            let error = upgrade_step(&old, &new)
                .expect_err(&format!("{}: {old} → {new} is refused", path.display()));
            assert_eq!(format!("{field}: {error}"), expect, "{}", path.display());
            checked += 1;
        }
        // Cluster and pool: minor skipped, minor down, major changed.
        assert!(checked >= 6, "only {checked} version update cases found");
    }

    #[test]
    fn every_version_update_accepted_at_admission_is_a_step() {
        let mut checked = 0;
        for path in yaml_files("valid") {
            let docs = documents(&path);
            for pair in docs.windows(2) {
                if pair[0]["kind"] != pair[1]["kind"]
                    || pair[0]["metadata"]["name"] != pair[1]["metadata"]["name"]
                {
                    continue;
                }
                // A version added or removed is no step (admission does not check it either).
                if let (Some((_, Some(old))), Some((_, Some(new)))) =
                    (version_of(&pair[0]), version_of(&pair[1]))
                {
                    assert_eq!(
                        upgrade_step(&old, &new),
                        Ok(()),
                        "{}: {old} → {new}",
                        path.display()
                    );
                    checked += 1;
                }
            }
        }
        // Cluster one minor up, patch down, patch up; pool one minor up.
        assert!(checked >= 4, "only {checked} version updates found");
    }
}
