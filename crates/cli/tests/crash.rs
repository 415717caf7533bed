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

/// The pool's machines in the sim state file, with whether each is failed and whether its deletion started.
fn pool_machines(state: &std::path::Path, prefix: &str) -> Vec<(String, bool, bool)> {
    let Ok(sim) = slipway_provider_sim::SimProvider::read_state_file(state) else {
        // Caught mid-rename: the next read has it.
        return Vec::new();
    };
    sim.clusters
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .flat_map(|(_, c)| c.machines.iter())
        .filter(|(name, _)| name.contains("-workers-"))
        .map(|(name, m)| (name.clone(), m.failed, m.gone_at.is_some()))
        .collect()
}

#[tokio::test]
async fn a_manager_killed_mid_remediation_replaces_the_machine_once() {
    let env = env().await;
    let client = env.client().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("sim.json");
    let state_arg = format!("--sim-state-file={}", state.display());
    let args = ["--leader-elect=false", state_arg.as_str()];
    let ns = env.create_namespace("remedy").await;
    // Deletion takes a while, so the kill lands while the failed machine is still on its way out.
    apply(
        &client,
        &ns,
        &sim_cluster("remedy", 1, 3, "{ deleteDelay: 5s }"),
    )
    .await;
    let log = dir.path().join("manager-0.log");
    let mut manager = ManagerProcess::start(env.kubeconfig_path(), &log, &args);
    wait_ready(&client, &ns, "remedy", Duration::from_secs(60)).await;
    manager.kill();

    // A machine fails while no manager runs (as the sim state file tells the next one).
    let mut sim = slipway_provider_sim::SimProvider::read_state_file(&state).unwrap();
    let prefix = format!("{ns}/remedy/");
    let victim = {
        let (_, cluster) = sim
            .clusters
            .iter_mut()
            .find(|(k, _)| k.starts_with(&prefix))
            .unwrap();
        let (name, machine) = cluster
            .machines
            .iter_mut()
            .find(|(name, _)| name.contains("-workers-"))
            .unwrap();
        machine.failed = true;
        name.clone()
    };
    std::fs::write(&state, serde_json::to_vec(&sim).unwrap()).unwrap();

    // The next manager starts replacing it and is killed the moment the deletion is recorded.
    let log = dir.path().join("manager-1.log");
    let mut manager = ManagerProcess::start(env.kubeconfig_path(), &log, &args);
    support::eventually(
        "the failed machine's deletion started",
        Duration::from_secs(30),
        || async {
            let machines = pool_machines(&state, &prefix);
            if machines
                .iter()
                .any(|(name, _, leaving)| name == &victim && *leaving)
            {
                Ok(())
            } else {
                Err(format!("{machines:?}"))
            }
        },
    )
    .await;
    manager.kill();

    let log = dir.path().join("manager-2.log");
    let _manager = ManagerProcess::start(env.kubeconfig_path(), &log, &args);
    support::eventually(
        "the pool back to 3 healthy machines",
        Duration::from_secs(60),
        || async {
            let machines = pool_machines(&state, &prefix);
            let healthy = machines
                .iter()
                .filter(|(_, failed, leaving)| !failed && !leaving)
                .count();
            if machines.len() == 3 && healthy == 3 {
                Ok(())
            } else {
                Err(format!("{machines:?}"))
            }
        },
    )
    .await;
    wait_ready(&client, &ns, "remedy", Duration::from_secs(30)).await;
    let sim = slipway_provider_sim::SimProvider::read_state_file(&state).unwrap();
    let created: Vec<(&String, &u32)> = sim
        .creations
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix) && k.contains("-workers-"))
        .collect();
    assert_eq!(
        created.len(),
        4,
        "3 workers and one replacement: {created:?}"
    );
    assert!(
        created.iter().all(|(_, n)| **n == 1),
        "a machine made twice: {created:?}"
    );
}
