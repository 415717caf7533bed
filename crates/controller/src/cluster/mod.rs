//! The Cluster reconciler: infrastructure, control plane, nodes, add-ons, Ready; and deletion in reverse
//! ([`deletion`]). Each step sets its condition ([`conditions`]); the pass returns the whole status, which the
//! runner writes once.

mod conditions;
mod deletion;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Event;
use kube::runtime::reflector::Store;
use slipway_api::conditions::{
    ADDONS_READY, CONTROL_PLANE_READY, INFRASTRUCTURE_READY, NODES_READY, READY, reason,
};
use slipway_api::{ApiEndpoint, Cluster, ClusterPhase, ClusterStatus, MachinePool, SecretRef};
use slipway_bootstrap::secrets::Purpose;
use slipway_provider::ClusterInfo;
use tracing::{info, warn};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::machines::call;
use crate::outcome::Outcome;
use crate::status::{self, condition, set_all};
use crate::{CLUSTER_FINALIZER, PAUSED_ANNOTATION, cluster_secrets, cost, events, finalizer};

pub const CONTROLLER: &str = "cluster";

/// How often a cluster that is not Ready yet is looked at again (machines come up without telling us).
const POLL: Duration = Duration::from_secs(2);

/// The steps whose conditions make up `Ready`, in order.
const STEPS: [&str; 4] = [
    INFRASTRUCTURE_READY,
    CONTROL_PLANE_READY,
    NODES_READY,
    ADDONS_READY,
];

pub async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Outcome<ClusterStatus> {
    if is_paused(&cluster) {
        return Outcome::unchanged(Action::await_change());
    }
    if cluster.metadata.deletion_timestamp.is_some() {
        return deletion::finalize(&cluster, &ctx).await;
    }
    let mut status = cluster.status.clone().unwrap_or_default();
    let mut events = Vec::new();
    let next = provision(&cluster, &ctx, &mut status, &mut events).await;
    Outcome::of(status, events, next)
}

/// The provisioning steps, top to bottom; each sets its condition in `status`.
async fn provision(
    cluster: &Cluster,
    ctx: &Context,
    status: &mut ClusterStatus,
    events: &mut Vec<Event>,
) -> Result<Action> {
    let api: Api<Cluster> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    finalizer::ensure(&api, cluster, CLUSTER_FINALIZER, None).await?;
    // AddonsReady reads the AddonBundle cache: before its first list it is empty, and "no bundle selects this
    // cluster" would be written for a cluster whose bundles are not applied.
    ctx.bundles_listed().await;
    let expires_at = expiry(cluster);
    if let Some(at) = expires_at
        && at <= Timestamp::now()
    {
        info!(cluster = %cluster.name_any(), "TTL expired, deleting the cluster");
        let ttl = cluster.spec.ttl.clone().unwrap_or_default();
        events.push(events::normal(
            "Expired",
            "Delete",
            format!("TTL {ttl} expired"),
        ));
        api.delete(&cluster.name_any(), &DeleteParams::background())
            .await?;
        return Ok(Action::await_change());
    }

    let generation = cluster.metadata.generation;
    status.observed_generation = generation;
    status.expires_at = expires_at.map(Time);
    status.provider = cluster
        .spec
        .infrastructure
        .provider_name()
        .map(str::to_string);
    let provider = match ctx.provider_for(cluster) {
        Ok(provider) => provider,
        Err(error) => {
            let message = error.to_string();
            set_all(
                &mut status.conditions,
                [
                    condition(
                        INFRASTRUCTURE_READY,
                        false,
                        reason::PROVIDER_NOT_REGISTERED,
                        &message,
                        generation,
                    ),
                    condition(
                        READY,
                        false,
                        reason::PROVIDER_NOT_REGISTERED,
                        &message,
                        generation,
                    ),
                ],
            );
            status.phase = Some(ClusterPhase::Failed);
            return Err(error);
        }
    };
    let info = cluster_info(cluster);
    let pools = pools_in(&ctx.pools, cluster);
    // The estimate goes into every status this pass writes, a failing step's too.
    status.cost = cost::estimate(
        |instance_type| provider.price_per_hour(instance_type),
        &cost::groups(cluster, &pools),
        &provider.infrastructure_prices(&info),
    );

    // 1. Infrastructure.
    let infrastructure = match call(
        ctx,
        provider.as_ref(),
        "reconcile_cluster",
        provider.reconcile_cluster(&info).await,
    ) {
        Ok(infrastructure) => infrastructure,
        Err(source) => {
            status::fail(
                &mut status.conditions,
                INFRASTRUCTURE_READY,
                &source,
                generation,
            );
            status.phase = Some(if source.is_retryable() {
                ClusterPhase::Provisioning
            } else {
                ClusterPhase::Failed
            });
            return Err(Error::Provider {
                provider: provider.name().to_string(),
                source,
            });
        }
    };
    status.control_plane_endpoint =
        infrastructure
            .endpoint
            .as_ref()
            .map(|(host, port)| ApiEndpoint {
                host: host.clone(),
                port: i32::from(*port),
            });
    conditions::infrastructure(&mut status.conditions, &infrastructure, generation);

    // 2. The cluster's CAs and service-account key, before any machine needs them.
    let new_ca = if infrastructure.ready {
        cluster_secrets::ensure_pki(ctx, cluster).await?
    } else {
        None
    };

    // 3. Control plane machines.
    let control_plane_ready = if infrastructure.ready {
        match conditions::control_plane(
            cluster,
            ctx,
            provider.as_ref(),
            &info,
            &infrastructure.endpoint,
            status,
            events,
        )
        .await
        {
            Ok(ready) => ready,
            Err(error) => {
                if let Error::Provider { source, .. } = &error {
                    status::fail(
                        &mut status.conditions,
                        CONTROL_PLANE_READY,
                        source,
                        generation,
                    );
                }
                return Err(error);
            }
        }
    } else {
        conditions::waiting_for_infrastructure(&mut status.conditions, generation);
        false
    };

    // 4. The admin kubeconfig, once there is a control plane to talk to.
    if control_plane_ready && let Some((host, port)) = &infrastructure.endpoint {
        cluster_secrets::ensure_kubeconfig(
            ctx,
            cluster,
            &crate::workload::server_url(host, port),
            new_ca.as_ref(),
        )
        .await?;
        status.kubeconfig_secret_ref = Some(SecretRef {
            name: Purpose::Kubeconfig.secret_name(&cluster.name_any()),
        });
    }

    // 4b. The workload cluster's Nodes, watched for the pools to find their machines' Nodes. A workload API that
    //     does not answer yet is no failure of this cluster: the watch retries, and the pools say what they wait for.
    //     The client is made for the endpoint the stored status names, so the first pass that finds the control
    //     plane ready leaves it to the next one, woken by this pass's status write.
    let endpoint_known = cluster
        .status
        .as_ref()
        .is_some_and(|s| s.control_plane_endpoint.is_some());
    if control_plane_ready
        && infrastructure.workload_api
        && endpoint_known
        && let Err(error) = ctx.nodes.ensure(ctx, cluster).await
    {
        warn!(cluster = %cluster.name_any(), %error, "cannot watch the workload cluster's Nodes yet");
    }

    // 5. Worker nodes, as their pools report them. The shared cache may not hold a pool created together with the
    //    cluster yet: before counting "no pools" as ready, the apiserver is asked.
    let pools = if pools.is_empty() && control_plane_ready {
        list_pools(ctx, cluster).await?
    } else {
        pools
    };
    conditions::nodes(&mut status.conditions, &pools, generation);

    // 6. Add-ons.
    conditions::addons(
        &mut status.conditions,
        cluster,
        ctx,
        infrastructure.workload_api,
        generation,
    );

    // 7. Ready.
    let was_ready = cluster
        .status
        .as_ref()
        .is_some_and(|s| slipway_api::conditions::is_true(&s.conditions, READY));
    let ready = status::summarize(&mut status.conditions, &STEPS, generation);
    status.phase = Some(if ready {
        ClusterPhase::Provisioned
    } else {
        ClusterPhase::Provisioning
    });
    // Logged, not an Event: `Ready`'s lastTransitionTime records it, and an Event per cluster would be one more
    // write per cluster of a fleet coming up.
    if ready && !was_ready {
        info!(cluster = %cluster.name_any(), "cluster is ready");
    }

    let mut next = if ready { None } else { Some(POLL) };
    if let Some(at) = expires_at {
        let until = Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default();
        next = Some(next.map_or(until, |n| n.min(until)));
    }
    Ok(next.map_or_else(Action::await_change, Action::requeue))
}

/// The pools of `cluster` in `store` (the shared MachinePool cache). A scan of every pool, so it compares in place
/// rather than through `ResourceExt::namespace`, which would allocate a String per pool: at 1000 clusters that
/// allocation was the manager's largest single cost.
pub fn pools_in(store: &Store<MachinePool>, cluster: &Cluster) -> Vec<Arc<MachinePool>> {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    store
        .state()
        .into_iter()
        .filter(|p| {
            p.spec.cluster_name == name && p.metadata.namespace == cluster.metadata.namespace
        })
        .collect()
}

/// The pools of `cluster` as the apiserver has them now.
async fn list_pools(ctx: &Context, cluster: &Cluster) -> Result<Vec<Arc<MachinePool>>> {
    let api: Api<MachinePool> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let selector = format!("spec.clusterName={}", cluster.name_any());
    Ok(api
        .list(&ListParams::default().fields(&selector))
        .await?
        .items
        .into_iter()
        .map(Arc::new)
        .collect())
}

/// `spec.paused`, or the `slipway.dev/paused` annotation set to anything but "false".
pub fn is_paused(cluster: &Cluster) -> bool {
    cluster.spec.paused
        || cluster
            .annotations()
            .get(PAUSED_ANNOTATION)
            .is_some_and(|v| v != "false")
}

/// When the cluster's TTL runs out: creation time plus `spec.ttl`.
pub fn expiry(cluster: &Cluster) -> Option<Timestamp> {
    let ttl: SignedDuration = cluster.spec.ttl.as_deref()?.parse().ok()?;
    let created = cluster.metadata.creation_timestamp.as_ref()?.0;
    created.checked_add(ttl).ok()
}

pub fn cluster_info(cluster: &Cluster) -> ClusterInfo {
    ClusterInfo {
        namespace: cluster.namespace().unwrap_or_default(),
        name: cluster.name_any(),
        uid: cluster.uid().unwrap_or_default(),
        kubernetes_version: cluster.spec.kubernetes.version.clone(),
        infrastructure: cluster.spec.infrastructure.clone(),
    }
}
