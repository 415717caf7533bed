//! Deleting a Cluster in reverse order: its MachinePools (their own finalizers delete their machines), the control
//! plane, the infrastructure, the cluster's Secrets; then the finalizer. Until then `Ready` says what is left.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::Action;
use slipway_api::conditions::{self, READY, reason};
use slipway_api::{Cluster, ClusterPhase, ClusterStatus, MachinePool};
use slipway_provider::{Deletion, MachineRole};
use tracing::info;

use super::cluster_info;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::machines::{self, call};
use crate::outcome::Outcome;
use crate::status::{self, condition};
use crate::{CLUSTER_FINALIZER, cluster_secrets, finalizer};

/// How soon a deletion that waits for something is looked at again.
const DELETION_POLL: Duration = Duration::from_secs(1);
/// How soon a deletion that waits for the provider's infrastructure is looked at again.
const INFRASTRUCTURE_POLL: Duration = Duration::from_secs(2);

pub async fn finalize(cluster: &Cluster, ctx: &Context) -> Outcome<ClusterStatus> {
    if !cluster.finalizers().iter().any(|f| f == CLUSTER_FINALIZER) {
        return Outcome::unchanged(Action::await_change());
    }
    let mut status = cluster.status.clone().unwrap_or_default();
    status.phase = Some(ClusterPhase::Deleting);
    let next = delete_in_order(cluster, ctx, &mut status).await;
    Outcome::of(status, Vec::new(), next)
}

async fn delete_in_order(
    cluster: &Cluster,
    ctx: &Context,
    status: &mut ClusterStatus,
) -> Result<Action> {
    let generation = cluster.metadata.generation;
    let namespace = cluster.namespace().unwrap_or_default();

    // 1. MachinePools, read from the apiserver: a pool the cache does not show yet must not be left behind.
    let pools: Api<MachinePool> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("spec.clusterName={}", cluster.name_any());
    let remaining = pools
        .list(&ListParams::default().fields(&selector))
        .await?
        .items;
    if !remaining.is_empty() {
        for pool in remaining
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            match pools
                .delete(&pool.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let pools: Vec<String> = remaining.iter().map(pool_deletion_progress).collect();
        let message = format!(
            "deleting MachinePools: {}",
            conditions::join_truncated(&pools, "; ")
        );
        deleting(status, message, generation);
        return Ok(Action::requeue(DELETION_POLL));
    }

    let provider = ctx
        .provider_for(cluster)
        .inspect_err(|error| blocked(status, "anything", error, generation))?;
    let info = cluster_info(cluster);

    // 2. Control plane machines.
    let remaining = machines::delete_all(
        ctx,
        provider.as_ref(),
        &info,
        &MachineRole::ControlPlane,
        None,
    )
    .await
    .inspect_err(|error| blocked(status, "the control-plane machines", error, generation))?;
    if !remaining.is_empty() {
        let message = format!(
            "deleting control-plane machines: {}",
            conditions::join_truncated(&remaining, ", ")
        );
        deleting(status, message, generation);
        return Ok(Action::requeue(DELETION_POLL));
    }

    // 3. Infrastructure.
    let deletion = call(
        ctx,
        provider.as_ref(),
        "delete_cluster",
        provider.delete_cluster(&info).await,
    )
    .map_err(|source| Error::Provider {
        provider: provider.name().to_string(),
        source,
    })
    .inspect_err(|error| blocked(status, "the cluster's infrastructure", error, generation))?;
    if let Deletion::InProgress(what) = deletion {
        deleting(
            status,
            format!("deleting infrastructure: {what}"),
            generation,
        );
        return Ok(Action::requeue(INFRASTRUCTURE_POLL));
    }

    // 4. Its Secrets (the apiserver's garbage collector would too, but only where a controller-manager runs).
    cluster_secrets::delete_owned(ctx, cluster).await?;

    crate::workload::forget_cluster(ctx, &cluster.uid().unwrap_or_default());

    // 5. Nothing of the cluster is left: let the object go.
    let api: Api<Cluster> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer::remove(&api, cluster, CLUSTER_FINALIZER).await?;
    info!(cluster = %cluster.name_any(), "cluster deleted");
    Ok(Action::await_change())
}

fn deleting(status: &mut ClusterStatus, message: String, generation: Option<i64>) {
    conditions::set(
        &mut status.conditions,
        condition(READY, false, reason::DELETING, message, generation),
    );
}

fn blocked(status: &mut ClusterStatus, what: &str, error: &Error, generation: Option<i64>) {
    status::deletion_blocked(&mut status.conditions, what, error, generation);
}

/// A pool being deleted, with what holds it up when its own status says so (a provider that cannot delete its
/// machines), so the cluster shows why its deletion does not move.
fn pool_deletion_progress(pool: &MachinePool) -> String {
    let ready = pool
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, READY));
    match ready {
        Some(c)
            if pool.metadata.deletion_timestamp.is_some()
                && c.status == conditions::STATUS_FALSE
                && c.reason != reason::DELETING =>
        {
            format!("{} ({}: {})", pool.name_any(), c.reason, c.message)
        }
        _ => pool.name_any(),
    }
}
