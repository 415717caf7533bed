//! Dropping an environment leaves no process and no directory behind.

use std::path::Path;

use slipway_testenv::TestEnv;

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would still show one with state Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2) != Some("Z"),
        Err(_) => false,
    }
}

#[tokio::test]
async fn dropping_the_env_stops_etcd_and_apiserver_and_removes_its_directory() {
    let env = TestEnv::start().await.unwrap();
    let pids = env.pids();
    let dir = env.kubeconfig_path().parent().unwrap().to_path_buf();
    assert_eq!(pids.len(), 2, "etcd and kube-apiserver");
    for pid in &pids {
        assert!(alive(*pid), "process {pid} should run while the env lives");
    }
    let names: Vec<String> = pids
        .iter()
        .map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["etcd", "kube-apiserver"]);

    drop(env);

    for pid in &pids {
        assert!(!alive(*pid), "process {pid} outlived its env");
    }
    assert!(!Path::new(&dir).exists(), "{} not removed", dir.display());
}

#[tokio::test]
async fn a_panicking_test_still_stops_its_processes() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = tokio::spawn(async move {
        let env = TestEnv::start().await.unwrap();
        tx.send(env.pids()).unwrap();
        panic!("the test fails while the env is alive");
    })
    .await;
    assert!(outcome.unwrap_err().is_panic());
    let pids = rx.recv().unwrap();
    for pid in &pids {
        assert!(!alive(*pid), "process {pid} outlived a panicking test");
    }
}
