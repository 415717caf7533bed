//! The management cluster's kube-apiserver goes away while sim clusters are provisioning, and comes back on the
//! same etcd:
//! - after a 20 s outage, every cluster becomes Ready, no machine is created twice (the sim provider counts
//!   creations per machine), and the manager logs a bounded number of errors and no panic;
//! - when etcd's history was compacted meanwhile, every watch the manager resumes is answered 410 Gone: the
//!   manager lists again and carries on, with no machine created twice.
//!
//! Its own test binary, with environments of its own: no other test may lose its apiserver.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams};
use slipway_api::Cluster;
use slipway_testenv::{TestEnv, eventually};
use support::{ManagerProcess, apply, sim_cluster};

const OUTAGE: Duration = Duration::from_secs(20);

/// An environment with a manager provisioning `clusters` slow sim clusters, some of them under way.
struct Provisioning {
    env: TestEnv,
    ns: String,
    manager: ManagerProcess,
    _work: tempfile::TempDir,
    state: PathBuf,
    log: PathBuf,
}

async fn provisioning(name: &str, clusters: usize) -> Provisioning {
    let env = TestEnv::start().await.unwrap();
    support::install_crds(env.client().await).await;
    let client = env.client().await;
    let ns = env.create_namespace(name).await;
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("sim.json");
    let log = work.path().join("manager.log");
    let state_arg = format!("--sim-state-file={}", state.display());
    // Without leader election: a manager that loses its lease during the outage exits by design (its Deployment
    // starts it again); these tests are about the controllers riding the outage out.
    let manager = ManagerProcess::start(
        env.kubeconfig_path(),
        &log,
        &["--leader-elect=false", &state_arg],
    );
    // Slow machines, so that the outage finds most clusters between creating machines and recording them.
    for i in 0..clusters {
        apply(
            &client,
            &ns,
            &sim_cluster(&format!("c{i:02}"), 1, 1, "{ createDelay: 3s }"),
        )
        .await;
    }
    let api: Api<Cluster> = Api::namespaced(client, &ns);
    // The outage starts once the manager is at work (it exits, by design, when it finds no apiserver at start).
    eventually(
        "a cluster with a status",
        Duration::from_secs(60),
        || async {
            let list = api
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
    Provisioning {
        env,
        ns,
        manager,
        _work: work,
        state,
        log,
    }
}

impl Provisioning {
    async fn ready(&self) -> (usize, Vec<String>) {
        let api: Api<Cluster> = Api::namespaced(self.env.client().await, &self.ns);
        let list = api.list(&ListParams::default()).await.unwrap();
        let not_ready = list
            .items
            .iter()
            .filter(|c| {
                !c.status
                    .as_ref()
                    .is_some_and(|s| slipway_api::conditions::is_true(&s.conditions, "Ready"))
            })
            .map(|c| c.metadata.name.clone().unwrap_or_default())
            .collect();
        (list.items.len(), not_ready)
    }

    fn assert_manager_running(&mut self) {
        assert!(
            self.manager.child.try_wait().unwrap().is_none(),
            "the manager exited: {}",
            std::fs::read_to_string(&self.log).unwrap()
        );
    }

    async fn wait_all_ready(&self, clusters: usize) {
        let api: Api<Cluster> = Api::namespaced(self.env.client().await, &self.ns);
        eventually(
            "every cluster Ready after the outage",
            Duration::from_secs(240),
            || async {
                let list = api
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let not_ready: Vec<String> = list
                    .items
                    .iter()
                    .filter(|c| {
                        !c.status.as_ref().is_some_and(|s| {
                            slipway_api::conditions::is_true(&s.conditions, "Ready")
                        })
                    })
                    .map(|c| c.metadata.name.clone().unwrap_or_default())
                    .collect();
                if list.items.len() == clusters && not_ready.is_empty() {
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
    }

    /// One creation per machine: a control-plane machine and a worker per cluster.
    fn assert_each_machine_created_once(&self, clusters: usize) {
        let sim = slipway_provider_sim::SimProvider::read_state_file(&self.state).unwrap();
        let prefix = format!("{}/", self.ns);
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
        assert_eq!(created.len(), 2 * clusters, "{created:?}");
    }
}

fn manager_log(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap();
    assert!(!text.contains("panicked"), "the manager panicked:\n{text}");
    text
}

/// `text` without the terminal colour sequences (`ESC [ ... m`) the manager's log lines carry.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn clusters_provisioning_through_an_apiserver_outage_all_become_ready_without_duplicates() {
    const CLUSTERS: usize = 50;
    let mut run = provisioning("outage", CLUSTERS).await;
    let (_, not_ready) = run.ready().await;
    assert!(
        !not_ready.is_empty(),
        "all {CLUSTERS} clusters were Ready before the outage: nothing was provisioning"
    );
    run.assert_manager_running();

    run.env.stop_apiserver();
    tokio::time::sleep(OUTAGE).await;
    let restarted = Instant::now();
    run.env.start_apiserver().await.unwrap();
    run.wait_all_ready(CLUSTERS).await;
    println!(
        "{} of {CLUSTERS} Ready before a {}s outage; all Ready {:.1}s after the apiserver came back",
        CLUSTERS - not_ready.len(),
        OUTAGE.as_secs(),
        restarted.elapsed().as_secs_f64()
    );
    run.assert_each_machine_created_once(CLUSTERS);

    let text = manager_log(&run.log);
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

#[tokio::test]
async fn watches_that_expire_while_clusters_provision_are_listed_again_without_duplicate_work() {
    const CLUSTERS: usize = 30;
    let mut run = provisioning("expiry", CLUSTERS).await;
    let (_, not_ready) = run.ready().await;
    assert!(
        !not_ready.is_empty(),
        "all {CLUSTERS} clusters were Ready before the watches expired: nothing was provisioning"
    );
    run.assert_manager_running();

    // The apiserver goes for a moment; etcd's history is compacted past every resourceVersion the manager saw.
    run.env.stop_apiserver();
    let revision = run.env.compact_etcd().await.unwrap();
    run.env.start_apiserver().await.unwrap();
    run.wait_all_ready(CLUSTERS).await;
    run.assert_each_machine_created_once(CLUSTERS);
    run.assert_manager_running();

    // The manager's watches of both kinds were answered 410 Gone ("too old resource version"), and it listed
    // again: the clusters above became Ready after that.
    let text = without_colours(&manager_log(&run.log));
    let expired: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("too old resource version"))
        .collect();
    for kind in ["Cluster", "MachinePool"] {
        assert!(
            expired.iter().any(|l| l.contains(&format!("kind={kind}"))),
            "the manager's {kind} watch did not expire after etcd was compacted at revision {revision}; its \
             log:\n{text}"
        );
    }
    println!(
        "etcd compacted at revision {revision}; {} watches expired and were listed again",
        expired.len()
    );
}
