//! `slipway get kubeconfig NAME`: the workload cluster's admin kubeconfig, from the Secret `<name>-kubeconfig`
//! (key `value`) that Cluster API tools also read. Printed, or written to a file only its owner can read.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use slipway_api::Cluster;

use crate::exit::NotSatisfied;
use crate::kube_context::ContextArgs;

#[derive(clap::Subcommand)]
pub enum GetCommand {
    /// Print (or save) the admin kubeconfig of a cluster.
    #[command(after_help = "Example:
  slipway get kubeconfig demo -o demo.kubeconfig && kubectl --kubeconfig demo.kubeconfig get nodes

Exits with 1 when the cluster exists but has no kubeconfig yet.")]
    Kubeconfig(Args),
}

#[derive(clap::Args)]
pub struct Args {
    /// Name of the Cluster.
    name: String,
    #[command(flatten)]
    context: ContextArgs,
    /// Write the kubeconfig to this file (mode 0600) instead of printing it.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

pub async fn run(command: GetCommand) -> anyhow::Result<()> {
    let GetCommand::Kubeconfig(args) = command;
    let session = args.context.connect().await?;
    let secret_name = format!("{}-kubeconfig", args.name);
    let secrets: Api<Secret> = Api::namespaced(session.client.clone(), &session.namespace);
    let secret = secrets
        .get_opt(&secret_name)
        .await
        .with_context(|| format!("reading Secret {secret_name}"))?;
    let Some(secret) = secret else {
        // Say why it is missing: a cluster that does not exist and one still provisioning need different fixes.
        let clusters: Api<Cluster> = Api::namespaced(session.client.clone(), &session.namespace);
        let cluster = clusters
            .get_opt(&args.name)
            .await
            .with_context(|| format!("reading Cluster {}", args.name))?
            .with_context(|| {
                format!(
                    "Cluster {} not found in namespace {}",
                    args.name, session.namespace
                )
            })?;
        let phase = cluster
            .status
            .and_then(|s| s.phase)
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "Pending".into());
        return Err(NotSatisfied(format!(
            "the cluster has no kubeconfig yet; its phase is {phase} (Secret {secret_name} appears once the \
             control plane answers: `slipway wait cluster {} --for ready`)",
            args.name
        ))
        .into());
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get("value"))
        .with_context(|| format!("Secret {secret_name} has no key `value`"))?;
    match &args.output {
        Some(path) => {
            write_private(path, &value.0)?;
            eprintln!(
                "wrote the kubeconfig of {} to {}",
                args.name,
                path.display()
            );
        }
        None => std::io::stdout()
            .write_all(&value.0)
            .context("writing to stdout")?,
    }
    Ok(())
}

/// Writes `content` to `path` readable by its owner only: a kubeconfig holds a cluster-admin credential. An existing
/// file is truncated and its mode tightened too.
fn write_private(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    file.write_all(content)
        .with_context(|| format!("writing {}", path.display()))
}
