//! `slipway wait cluster NAME --for ready|deleted`: blocks until the cluster gets there, showing where it is on
//! the way: its phase and the first condition that is not True yet (the step it is working on).

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kube::api::Api;
use slipway_api::Cluster;
use slipway_api::conditions::{self, CLUSTER_CONDITION_TYPES, READY, STATUS_TRUE};

use crate::exit::NotSatisfied;
use crate::kube_context::ContextArgs;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Wait until a cluster is Ready, or gone.
    #[command(
        after_help = "Exit codes: 0 when the cluster got there, 1 on timeout, 2 on an error \
(such as an unknown cluster when waiting for ready), 3 when Slipway is not installed.

Example:
  slipway wait cluster demo --for ready --timeout 10m && slipway get kubeconfig demo -o demo.kubeconfig"
    )]
    Cluster(Args),
}

#[derive(clap::Args)]
pub struct Args {
    /// Name of the Cluster.
    name: String,
    #[command(flatten)]
    context: ContextArgs,
    /// What to wait for.
    #[arg(long = "for", value_enum, default_value = "ready")]
    target: Target,
    /// Give up after this long, e.g. 90s, 10m, 1h.
    #[arg(long, default_value = "10m", value_parser = crate::duration::parse)]
    timeout: Duration,
    /// How often to look.
    #[arg(long, default_value = "1s", value_parser = crate::duration::parse, hide = true)]
    poll_interval: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Target {
    /// The Cluster's Ready condition is True.
    Ready,
    /// The Cluster no longer exists.
    Deleted,
}

/// Where the cluster is, as shown on the progress line.
#[derive(PartialEq, Eq)]
enum Progress {
    Done(String),
    Waiting(String),
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    let Command::Cluster(args) = command;
    let session = args.context.connect().await?;
    let api: Api<Cluster> = Api::namespaced(session.client, &session.namespace);
    let started = Instant::now();
    let mut line = ProgressLine::new();
    loop {
        let cluster = api
            .get_opt(&args.name)
            .await
            .with_context(|| format!("reading Cluster {}", args.name))?;
        let progress = match (args.target, cluster) {
            (Target::Ready, None) => {
                line.finish();
                anyhow::bail!(
                    "Cluster {} not found in namespace {}",
                    args.name,
                    session.namespace
                );
            }
            (Target::Ready, Some(cluster)) => ready_progress(&cluster),
            (Target::Deleted, None) => Progress::Done(format!("Cluster {} deleted", args.name)),
            (Target::Deleted, Some(cluster)) => Progress::Waiting(format!(
                "Cluster {}: {}, waiting for it to be deleted",
                args.name,
                phase(&cluster)
            )),
        };
        match progress {
            Progress::Done(message) => {
                line.finish();
                println!(
                    "{message} (after {})",
                    crate::duration::human(started.elapsed())
                );
                return Ok(());
            }
            Progress::Waiting(message) => {
                if started.elapsed() >= args.timeout {
                    line.finish();
                    return Err(NotSatisfied(format!(
                        "timed out after {} — {message}",
                        crate::duration::human(args.timeout)
                    ))
                    .into());
                }
                line.show(&message);
            }
        }
        tokio::time::sleep(args.poll_interval).await;
    }
}

fn phase(cluster: &Cluster) -> String {
    cluster
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "Pending".into())
}

/// Ready, or the phase and the first provisioning step (condition) that is not done yet, with its reason.
fn ready_progress(cluster: &Cluster) -> Progress {
    let name = kube::ResourceExt::name_any(cluster);
    let empty = Vec::new();
    let list = cluster
        .status
        .as_ref()
        .map(|s| &s.conditions)
        .unwrap_or(&empty);
    if conditions::is_true(list, READY) {
        return Progress::Done(format!("Cluster {name} is Ready"));
    }
    let pending =
        CLUSTER_CONDITION_TYPES
            .iter()
            .find_map(|type_| match conditions::find(list, type_) {
                Some(c) if c.status == STATUS_TRUE => None,
                Some(c) if c.message.is_empty() => {
                    Some(format!("{type_}={} ({})", c.status, c.reason))
                }
                Some(c) => Some(format!(
                    "{type_}={} ({}: {})",
                    c.status, c.reason, c.message
                )),
                None => Some(format!("{type_} not reported yet")),
            });
    Progress::Waiting(format!(
        "Cluster {name}: {}, waiting for Ready; {}",
        phase(cluster),
        pending.unwrap_or_else(|| "Ready not reported yet".into())
    ))
}

/// On a terminal, one line rewritten in place; otherwise (logs, CI) a new line only when something changed.
struct ProgressLine {
    terminal: bool,
    last: Option<String>,
}

impl ProgressLine {
    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn show(&mut self, message: &str) {
        if self.last.as_deref() == Some(message) {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{message}");
        } else {
            let _ = writeln!(err, "{message}");
        }
        let _ = err.flush();
        self.last = Some(message.to_string());
    }

    /// Ends the line being rewritten, so what follows starts on a fresh one.
    fn finish(&mut self) {
        if self.terminal && self.last.take().is_some() {
            eprintln!();
        }
    }
}
