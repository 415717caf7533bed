//! The kill campaign: `slipway manager` SIGKILLed at random moments while sim, local and bare-metal (sushy-tools)
//! clusters are created, scaled and deleted. After every kill no machine was created twice, no host claimed twice
//! and no second process set started; after every round the fleet converges and nothing of a deleted cluster is
//! left. The short campaign runs with the tests; `hack/chaos.sh N` runs the long one (`kill_campaign`).

#[path = "../support/mod.rs"]
mod support;

// The baremetal provider's own test support (sushy-tools, an image server, hosts); it allows its unused parts.
#[path = "../../../../providers/baremetal/tests/support/mod.rs"]
mod metal;

mod campaign;
mod fleet;
mod invariants;

use std::path::PathBuf;

use campaign::Options;
use fleet::Provider;

/// The seed of the campaign's dice: `SLIPWAY_CHAOS_SEED` to replay a schedule, a random one otherwise. Timing is
/// not replayed (kills land where the clock puts them), the actions and the delays are.
fn seed() -> u64 {
    std::env::var("SLIPWAY_CHAOS_SEED")
        .ok()
        .map(|s| s.parse().expect("SLIPWAY_CHAOS_SEED is a number"))
        .unwrap_or_else(rand::random)
}

/// The manager binary: `SLIPWAY_CHAOS_MANAGER_BIN` (hack/chaos.sh runs a copy, so a build of another tree into the
/// same target directory cannot swap it mid-campaign), else the one cargo built for this test.
fn manager_binary() -> PathBuf {
    std::env::var_os("SLIPWAY_CHAOS_MANAGER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_slipway")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_kills_across_sim_local_and_baremetal_create_nothing_twice_leave_nothing_and_converge()
{
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        kills: 10,
        seed: seed(),
        // Every round acts on local and bare-metal clusters too: ten kills see all three providers created,
        // scaled and deleted.
        slow_every: 1,
        // Quiet unless it fails (then every line is in the panic message), or asked to speak as it goes.
        verbose: std::env::var_os("SLIPWAY_CHAOS_VERBOSE").is_some(),
        manager_binary: manager_binary(),
    };
    let report = campaign::run(options, dir.path()).await;
    let summary = report.summary();
    if !report.violations.is_empty() {
        // The logs are the evidence: keep them.
        let kept = dir.keep();
        panic!(
            "{}\n{summary}logs kept in {}",
            report.lines.join("\n"),
            kept.display()
        );
    }
    assert_eq!(report.kills, 10, "{summary}");
    assert_eq!(
        report.providers_touched,
        [Provider::Sim, Provider::Local, Provider::Metal].into(),
        "{summary}"
    );
    println!("{summary}");
}

/// `hack/chaos.sh N`: `SLIPWAY_CHAOS_KILLS` kills, logs and state in `SLIPWAY_CHAOS_DIR` (kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: hack/chaos.sh N runs it"]
async fn kill_campaign() {
    let kills: usize = std::env::var("SLIPWAY_CHAOS_KILLS")
        .expect("SLIPWAY_CHAOS_KILLS says how many kills (hack/chaos.sh N sets it)")
        .parse()
        .expect("SLIPWAY_CHAOS_KILLS is a number");
    let dir = std::env::var_os("SLIPWAY_CHAOS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tempfile::tempdir().unwrap().keep());
    std::fs::create_dir_all(&dir).unwrap();
    let options = Options {
        kills,
        seed: seed(),
        // Local and bare-metal clusters are slow to make and to delete: they act every other round.
        slow_every: 2,
        verbose: true,
        manager_binary: manager_binary(),
    };
    let report = campaign::run(options, &dir).await;
    let summary = report.summary();
    println!("\n{summary}");
    std::fs::write(dir.join("summary.txt"), &summary).unwrap();
    assert!(report.violations.is_empty(), "{summary}");
}
