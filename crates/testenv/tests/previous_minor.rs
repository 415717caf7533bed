//! The previous minor's control plane that `hack/build-k8s.sh` builds for upgrade tests is really that release:
//! each Kubernetes binary in `previous_minor_bin_dir()` reports `KUBERNETES_PREVIOUS_VERSION`, and etcd and kwok
//! are there beside them.

use std::process::Command;

use slipway_testenv::{kubernetes_version, previous_kubernetes_version, previous_minor_bin_dir};

#[test]
fn the_previous_minor_binaries_report_the_previous_version() {
    let dir = previous_minor_bin_dir().unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(previous_kubernetes_version(), kubernetes_version());
    for binary in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        let output = Command::new(dir.join(binary))
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("run {binary} --version: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            stdout.trim(),
            format!("Kubernetes {}", previous_kubernetes_version()),
            "{binary} --version"
        );
    }
    let etcd = Command::new(dir.join("etcd"))
        .arg("--version")
        .output()
        .expect("run etcd --version");
    assert!(
        String::from_utf8_lossy(&etcd.stdout).starts_with("etcd Version: 3."),
        "{}",
        String::from_utf8_lossy(&etcd.stdout)
    );
}
