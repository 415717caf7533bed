//! A manager killed with SIGKILL at a random moment of provisioning, then restarted, never makes a machine twice:
//! the provider's listing, not the manager's memory, is the truth.

mod support;

use std::time::Duration;

use rand::Rng;
use support::{ManagerProcess, apply, env, sim_cluster, wait_ready};

#[tokio::test]
async fn a_manager_killed_mid_provisioning_never_creates_a_duplicate_machine() {
    let env = env().await;
    let client = env.client().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("sim.json");
    let state_arg = format!("--sim-state-file={}", state.display());
    let args = ["--leader-elect=false", state_arg.as_str()];

    for trial in 0..3 {
        let ns = env.create_namespace(&format!("crash-{trial}")).await;
        // Slow machines and several of them, so a kill lands between creating machines and recording them.
        apply(
            &client,
            &ns,
            &sim_cluster("crashy", 3, 5, "{ createDelay: 1s }"),
        )
        .await;
        let mut kills = Vec::new();
        for round in 0..3 {
            let log = dir.path().join(format!("manager-{trial}-{round}.log"));
            let mut manager = ManagerProcess::start(env.kubeconfig_path(), &log, &args);
            let after = Duration::from_millis(rand::rng().random_range(300..2500));
            tokio::time::sleep(after).await;
            manager.kill();
            kills.push(after);
        }
        let log = dir.path().join(format!("manager-{trial}-final.log"));
        let _manager = ManagerProcess::start(env.kubeconfig_path(), &log, &args);
        wait_ready(&client, &ns, "crashy", Duration::from_secs(90)).await;

        let sim = slipway_provider_sim::SimProvider::read_state_file(&state).unwrap();
        let prefix = format!("{ns}/crashy/");
        let created: Vec<(&String, &u32)> = sim
            .creations
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .collect();
        let duplicates: Vec<_> = created.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            duplicates.is_empty(),
            "trial {trial} (killed after {kills:?}): duplicates {duplicates:?}"
        );
        assert_eq!(
            created.len(),
            8,
            "trial {trial}: 3 control-plane + 5 worker machines: {created:?}"
        );
        let machines: usize = sim
            .clusters
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, c)| c.machines.len())
            .sum();
        assert_eq!(machines, 8, "trial {trial}: machines that exist");
    }
}
