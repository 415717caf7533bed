//! Runs a local control plane (etcd + kube-apiserver, optionally the workload flavour) in the foreground until
//! SIGINT or SIGTERM, keeping its state in a directory. The quickstart uses it as the management cluster.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use slipway_testenv::TestEnv;

#[derive(Parser)]
#[command(about = "Run a local etcd + kube-apiserver until interrupted")]
struct Args {
    /// Directory for etcd data, certificates, logs and the kubeconfig (kept across runs).
    #[arg(long)]
    dir: PathBuf,
    /// Also run kube-controller-manager, kube-scheduler and kwok with this many fake nodes.
    #[arg(long)]
    workload_nodes: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = TestEnv::builder().dir(&args.dir);
    if let Some(nodes) = args.workload_nodes {
        builder = builder.workload(nodes);
    }
    let env = builder
        .start()
        .await
        .context("starting the control plane")?;
    println!("control plane ready at {}", env.server());
    println!("kubeconfig: {}", env.kubeconfig_path().display());

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    println!("stopping the control plane");
    drop(env);
    Ok(())
}
