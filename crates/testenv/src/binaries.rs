//! Where the control-plane binaries built by `hack/build-k8s.sh` live.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The pinned versions, read from the same file that `hack/build-k8s.sh` builds from, so the two never disagree.
const VERSIONS: &str = include_str!("../../../hack/versions.env");

/// The Kubernetes version pinned in `hack/versions.env`.
pub fn kubernetes_version() -> &'static str {
    VERSIONS
        .lines()
        .find_map(|line| line.strip_prefix("KUBERNETES_VERSION="))
        .map(str::trim)
        .expect("hack/versions.env names KUBERNETES_VERSION")
}

/// The directory holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok:
/// `$SLIPWAY_K8S_BIN` when set, else `${SLIPWAY_CACHE:-~/.cache/slipway}/k8s/<version>/bin`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLIPWAY_K8S_BIN") {
        return PathBuf::from(dir);
    }
    cache_dir()
        .join("k8s")
        .join(kubernetes_version())
        .join("bin")
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
