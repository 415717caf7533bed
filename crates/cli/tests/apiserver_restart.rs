//! The management cluster's kube-apiserver goes away for 20 s while 50 sim clusters are provisioning, then comes
//! back on the same etcd: every cluster becomes Ready, no machine is created twice (the sim provider counts
//! creations per machine), and the manager logs a bounded number of errors and no panic.
//!
//! Its own test binary, with an environment of its own: no other test may lose its apiserver.

mod support;

use std::time::{Duration, Instant};

use kube::api::{Api, ListParams};
use slipway_api::Cluster;
use slipway_testenv::{TestEnv, eventually};
use support::{ManagerProcess, apply, sim_cluster};

const CLUSTERS: usize = 50;
const OUTAGE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn clusters_provisioning_through_an_apiserver_outage_all_become_ready_without_duplicates() {
    let mut env = TestEnv::start().await.unwrap();
    support::install_crds(env.client().await).await;
    let client = env.client().await;
    let ns = env.create_namespace("outage").await;
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("sim.json");
    let log = work.path().join("manager.log");
    let state_arg = format!("--sim-state-file={}", state.display());
    // Without leader election: a manager that loses its lease during the outage exits by design (its Deployment
    // starts it again); this test is about the controllers riding the outage out.
    let mut manager = ManagerProcess::start(
        env.kubeconfig_path(),
        &log,
        &["--leader-elect=false", &state_arg],
    );

    // Slow machines, so that the outage finds most clusters between creating machines and recording them.
    for i in 0..CLUSTERS {
        apply(
            &client,
            &ns,
            &sim_cluster(&format!("c{i:02}"), 1, 1, "{ createDelay: 3s }"),
        )
        .await;
    }
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
    let ready_count = || async {
        let list = clusters
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok::<usize, String>(
            list.items
                .iter()
                .filter(|c| {
                    c.status
                        .as_ref()
                        .is_some_and(|s| slipway_api::conditions::is_true(&s.conditions, "Ready"))
                })
                .count(),
        )
    };
    // The outage starts once the manager is at work (it exits, by design, when it finds no apiserver at start).
    eventually(
        "a cluster with a status",
        Duration::from_secs(60),
        || async {
            let list = clusters
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .iter()
                .any(|c| c.status.is_some())
                .then_some(())
                .ok_or("no status yet".to_string())
        },
    )
    .await;
    let before = ready_count().await.unwrap();
    assert!(
        before < CLUSTERS,
        "all {CLUSTERS} clusters were Ready before the outage: nothing was provisioning"
    );

    assert!(
        manager.child.try_wait().unwrap().is_none(),
        "the manager exited before the outage: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    env.stop_apiserver();
    tokio::time::sleep(OUTAGE).await;
    let restarted = Instant::now();
    env.start_apiserver().await.unwrap();
    let client = env.client().await;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
    eventually(
        "every cluster Ready after the outage",
        Duration::from_secs(240),
        || async {
            let list = clusters
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let not_ready: Vec<String> = list
                .items
                .iter()
                .filter(|c| {
                    !c.status
                        .as_ref()
                        .is_some_and(|s| slipway_api::conditions::is_true(&s.conditions, "Ready"))
                })
                .map(|c| c.metadata.name.clone().unwrap_or_default())
                .collect();
            if list.items.len() == CLUSTERS && not_ready.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} clusters, not Ready: {not_ready:?}",
                    list.items.len()
                ))
            }
        },
    )
    .await;
    println!(
        "{before} of {CLUSTERS} Ready before a {}s outage; all Ready {:.1}s after the apiserver came back",
        OUTAGE.as_secs(),
        restarted.elapsed().as_secs_f64()
    );

    // One creation per machine: a control-plane machine and a worker per cluster.
    let sim = slipway_provider_sim::SimProvider::read_state_file(&state).unwrap();
    let prefix = format!("{ns}/");
    let created: Vec<(&String, &u32)> = sim
        .creations
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect();
    let twice: Vec<_> = created.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "machines created more than once: {twice:?}"
    );
    assert_eq!(created.len(), 2 * CLUSTERS, "{created:?}");

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("panicked"), "the manager panicked:\n{text}");
    // Levels are coloured: look for the word, not for it between spaces.
    let errors = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    println!(
        "manager log: {} lines, {errors} warnings and errors",
        text.lines().count()
    );
    // A failed reconcile is retried with a growing backoff, and watches re-connect with one: a 20 s outage costs a
    // few attempts per object and watch, not a line per request.
    let bound = 10 * 2 * CLUSTERS;
    assert!(
        errors <= bound,
        "{errors} warnings and errors for a {}s outage (bound {bound})",
        OUTAGE.as_secs()
    );
}
