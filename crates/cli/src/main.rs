//! `slipway`: one binary for the manager and for the commands a platform engineer runs.

mod crds;
mod manager;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "slipway",
    version,
    about = "Kubernetes clusters from YAML: a simpler Cluster API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers that reconcile Clusters and MachinePools (what runs in the management cluster).
    Manager(manager::Args),
    /// Write Slipway's CustomResourceDefinitions as YAML files.
    Crds(crds::Args),
}

fn main() -> anyhow::Result<()> {
    // kube panics when two rustls providers are compiled in and none is chosen; choose before anything else.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Manager(args) => manager::run(args),
        Command::Crds(args) => crds::run(args),
    }
}
