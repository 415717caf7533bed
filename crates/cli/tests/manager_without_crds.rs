//! Started against a management cluster without Slipway's CRDs, the manager says how to install them and exits.

mod support;

use slipway_testenv::TestEnv;
use support::ManagerProcess;

#[tokio::test]
async fn manager_without_crds_exits_with_the_command_that_installs_them() {
    let env = TestEnv::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("manager.log");
    let mut manager = ManagerProcess::start(env.kubeconfig_path(), &log, &["--leader-elect=false"]);
    let status = tokio::task::spawn_blocking(move || manager.child.wait().unwrap())
        .await
        .unwrap();
    assert!(!status.success(), "manager kept running without CRDs");
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(output.contains("lacks Slipway's CRDs"), "{output}");
    assert!(
        output.contains("slipway crds --stdout | kubectl apply --server-side -f -"),
        "{output}"
    );
}
