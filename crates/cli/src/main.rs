//! `slipway`: one binary for the manager and for the commands a platform engineer runs.
//!
//! Also a kubectl plugin: linked or copied as `kubectl-slipway` somewhere on PATH, `kubectl slipway ...` runs it
//! and its help speaks of `kubectl slipway`.

mod completion;
mod crds;
mod describe;
mod duration;
mod exit;
mod fleet;
mod generate;
mod init;
mod kube_context;
mod kubeconfig;
mod manager;
mod output;
mod template;
mod wait;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// What `slipway version` and `--version` print: the release, the commit it was built from and the Kubernetes
/// versions its tests ran against.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("SLIPWAY_GIT_COMMIT"),
    "\ntested with Kubernetes ",
    env!("SLIPWAY_KUBERNETES_VERSION"),
    " (upgrades from ",
    env!("SLIPWAY_KUBERNETES_PREVIOUS_VERSION"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "slipway",
    version = VERSION,
    about = "Kubernetes clusters from YAML: a simpler Cluster API",
    after_help = exit::CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install or upgrade Slipway in the management cluster (CRDs, RBAC, manager), or check that it is ready.
    Init(init::Args),
    /// Print ready-to-apply YAML for a new cluster, rendered from a template.
    #[command(subcommand)]
    Generate(generate::Command),
    /// Show a cluster as a tree: infrastructure, control plane, pools and machines, add-ons.
    #[command(subcommand)]
    Describe(describe::Command),
    /// Read something a cluster produced.
    #[command(subcommand)]
    Get(kubeconfig::GetCommand),
    /// Wait until a cluster is ready or deleted.
    #[command(subcommand)]
    Wait(wait::Command),
    /// One row per cluster: status, nodes, resources, cost and time left.
    Fleet(fleet::Args),
    /// Print a shell completion script.
    Completion(completion::Args),
    /// Run the controllers that reconcile Clusters and MachinePools (what runs in the management cluster).
    Manager(Box<manager::Args>),
    /// Write Slipway's CustomResourceDefinitions as YAML files.
    Crds(crds::Args),
    /// Print the version, the git commit and the Kubernetes versions this build was tested with.
    Version,
}

fn main() -> std::process::ExitCode {
    // kube panics when two rustls providers are compiled in and none is chosen; choose before anything else.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Init(args) => block_on(init::run(args)),
        Command::Generate(command) => generate::run(command),
        Command::Describe(command) => block_on(describe::run(command)),
        Command::Get(command) => block_on(kubeconfig::run(command)),
        Command::Wait(command) => block_on(wait::run(command)),
        Command::Fleet(args) => block_on(fleet::run(args)),
        Command::Completion(args) => completion::run(args, command()),
        Command::Manager(args) => manager::run(*args),
        Command::Crds(args) => crds::run(args),
        Command::Version => {
            println!("slipway {VERSION}");
            Ok(())
        }
    };
    exit::report(result)
}

/// The clap command, named after how it was invoked: `kubectl slipway` when run as the kubectl plugin.
fn command() -> clap::Command {
    let invoked_as = std::env::args_os()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let command = Cli::command();
    if invoked_as.starts_with("kubectl-slipway") {
        command.bin_name("kubectl slipway")
    } else {
        command
    }
}

/// The commands that talk to an apiserver are short-lived; a current-thread runtime is all they need.
fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?
        .block_on(future)
}
