//! Where the control-plane binaries built by `hack/build-k8s.sh` live.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The pinned versions, read from the same file that `hack/build-k8s.sh` builds from, so the two never disagree.
const VERSIONS: &str = include_str!("../../../hack/versions.env");

/// The Kubernetes version pinned in `hack/versions.env`.
pub fn kubernetes_version() -> &'static str {
    pinned("KUBERNETES_VERSION")
}

/// The minor before [`kubernetes_version`], pinned as `KUBERNETES_PREVIOUS_VERSION` in `hack/versions.env`: the
/// version an upgrade test starts from.
pub fn previous_kubernetes_version() -> &'static str {
    pinned("KUBERNETES_PREVIOUS_VERSION")
}

fn pinned(key: &str) -> &'static str {
    VERSIONS
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .unwrap_or_else(|| panic!("hack/versions.env names {key}"))
}

/// Where `hack/build-k8s.sh` puts the binaries of one Kubernetes version:
/// `${SLIPWAY_CACHE:-~/.cache/slipway}/k8s/<version>/bin`. `SLIPWAY_K8S_BIN` does not change it.
pub fn bin_dir_for(version: &str) -> PathBuf {
    cache_dir().join("k8s").join(version).join("bin")
}

/// The previous minor's directory ([`bin_dir_for`] [`previous_kubernetes_version`]) once it holds a whole control
/// plane laid out like [`bin_dir`]: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, and the
/// kwok stages in `../kwok/stages.yaml`. `hack/build-k8s.sh` builds the three Kubernetes binaries at that version
/// and shares etcd, kwok and the stages with the current version's directory.
pub fn previous_minor_bin_dir() -> Result<PathBuf> {
    let version = previous_kubernetes_version();
    let dir = bin_dir_for(version);
    let missing = CONTROL_PLANE_BINARIES
        .iter()
        .find(|name| !dir.join(name).is_file())
        .copied()
        .or_else(|| {
            (!dir.join("..").join("kwok").join("stages.yaml").is_file())
                .then_some("kwok stages (../kwok/stages.yaml)")
        });
    match missing {
        Some(binary) => Err(Error::PreviousMinorMissing {
            binary,
            version,
            dir,
        }),
        None => Ok(dir),
    }
}

/// Every binary a control plane with fake nodes runs, as `hack/build-k8s.sh` lays them out.
const CONTROL_PLANE_BINARIES: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

/// The directory holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok:
/// `$SLIPWAY_K8S_BIN` when set, else `${SLIPWAY_CACHE:-~/.cache/slipway}/k8s/<version>/bin`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLIPWAY_K8S_BIN") {
        return PathBuf::from(dir);
    }
    bin_dir_for(kubernetes_version())
}

/// Slipway's cache: `$SLIPWAY_CACHE`, else `~/.cache/slipway`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLIPWAY_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    Path::new(&home).join(".cache").join("slipway")
}

/// The path of one binary, or an error that says which command builds it.
pub fn binary(name: &'static str) -> Result<PathBuf> {
    let dir = bin_dir();
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::BinaryMissing { binary: name, dir })
    }
}

/// The kwok Stage configuration `hack/build-k8s.sh` gathers next to the binaries (`<bin>/../kwok/stages.yaml`).
pub fn kwok_stages() -> Result<PathBuf> {
    let dir = bin_dir();
    let path = dir.join("..").join("kwok").join("stages.yaml");
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::BinaryMissing {
            binary: "kwok stages (../kwok/stages.yaml)",
            dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(major, minor)` of a pinned `vMAJOR.MINOR.PATCH`.
    fn major_minor(version: &str) -> (u32, u32) {
        let mut parts = version
            .strip_prefix('v')
            .unwrap_or_else(|| panic!("{version} starts with v"))
            .split('.')
            .map(|part| part.parse::<u32>().unwrap());
        let (Some(major), Some(minor), Some(_patch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            panic!("{version} is vMAJOR.MINOR.PATCH");
        };
        (major, minor)
    }

    /// An upgrade test goes one minor (the only step Slipway admits), so the two pins must stay one minor apart
    /// when either is bumped.
    #[test]
    fn the_previous_version_is_the_minor_before_the_pinned_one() {
        let (major, minor) = major_minor(kubernetes_version());
        assert_eq!(
            major_minor(previous_kubernetes_version()),
            (major, minor - 1),
            "hack/versions.env: KUBERNETES_PREVIOUS_VERSION={} is not the minor before KUBERNETES_VERSION={}",
            previous_kubernetes_version(),
            kubernetes_version()
        );
    }
}
