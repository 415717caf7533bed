//! `bench-vs-capi`: the measuring half of `hack/bench-vs-capi.sh`, which compares Slipway with Cluster API on the
//! same work: N clusters of 1 control-plane machine and one pool (MachineDeployment) of 3 workers, at zero
//! infrastructure delay, each side against its own fresh apiserver.
//!
//! - `bench-vs-capi measure --side slipway|capi ...` creates the N clusters on an apiserver whose managers the
//!   script has started, waits until all are Ready (Slipway: `Ready=True`; Cluster API: `Available=True` and 4N
//!   Machines `Running`), then watches a steady window, and writes what it measured as JSON. Both sides are measured
//!   by the same code; only the objects created and the readiness rule differ (`side.rs`).
//! - `bench-vs-capi table --slipway A.json --capi B.json` prints one markdown table with Slipway/CAPI ratios and
//!   each side's details. It refuses to print a table when either file is missing or unreadable.
//!
//! What it is not: a process supervisor. Starting and stopping etcd, kube-apiserver and the managers is the
//! script's job; this binary only reads their `/proc` entries.

mod measure;
mod report;
mod side;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bench-vs-capi",
    about = "Measure Slipway or Cluster API bringing N clusters to Ready, and tabulate both"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create N clusters for one side against a running apiserver and managers; write the measurements as JSON.
    Measure(measure::MeasureArgs),
    /// Print the comparison table of two `measure` results.
    Table {
        #[arg(long)]
        slipway: PathBuf,
        #[arg(long)]
        capi: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // kube panics when two rustls providers are compiled in and none is chosen; choose before anything else.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match Args::parse().command {
        Command::Measure(args) => measure::run(args).await,
        Command::Table { slipway, capi } => {
            let read = |path: &PathBuf| -> anyhow::Result<report::SideResult> {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
            };
            let (slipway, capi) = (read(&slipway)?, read(&capi)?);
            print!("{}", report::render(&slipway, &capi));
            if !(slipway.finished && capi.finished) {
                // The table says how far the unfinished side got; the exit code says it did not finish.
                std::process::exit(3);
            }
            Ok(())
        }
    }
}
