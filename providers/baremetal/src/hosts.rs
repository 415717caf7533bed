//! BareMetalHosts as inventory: who holds which host, claiming a free one, and writing status safely.
//!
//! Every status write carries the `metadata.resourceVersion` the writer read, so the apiserver refuses it (409)
//! when anyone wrote in between. That is what makes a claim atomic: of two pools that pick the same Available
//! host, exactly one write lands, and the other moves on to the next host.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::{Api, ResourceExt};
use serde_json::json;
use slipway_api::{
    BareMetalHost, BareMetalHostStatus, ConsumerRef, HostState, ProvisioningStatus,
    UserDataSecretRef,
};
use slipway_provider::{ClusterInfo, MachineRequest};

use crate::error::{Error, Result};

/// Annotation in which earlier versions kept a claimed host's user data (cloud-init, with private keys and a join
/// token). User data now lives in a Secret (`crate::user_data`); the host controller removes this annotation from
/// any host that still has it.
pub const LEGACY_USER_DATA_ANNOTATION: &str = "slipway.dev/user-data";

/// How many times a write is retried after a conflict before the caller is told to come back later.
const CONFLICT_RETRIES: usize = 8;

/// Whether `host` is held by `machine` of `cluster` (by name only, when `machine` is `None`) in `group` (any
/// group, when `None`).
pub(crate) fn held_by(
    host: &BareMetalHost,
    cluster: &ClusterInfo,
    group: Option<&str>,
    machine: Option<&str>,
) -> bool {
    let Some(consumer) = host.status.as_ref().and_then(|s| s.consumer_ref.as_ref()) else {
        return false;
    };
    consumer.namespace == cluster.namespace
        && consumer.cluster == cluster.name
        // A Cluster that was deleted and made again under the same name does not inherit the old one's hosts.
        && consumer
            .cluster_uid
            .as_deref()
            .is_none_or(|uid| cluster.uid.is_empty() || uid == cluster.uid)
        && group.is_none_or(|g| consumer.group == g)
        && machine.is_none_or(|m| consumer.machine == m)
}

/// Every host of the cluster's namespace.
pub(crate) async fn list(api: &Api<BareMetalHost>, namespace: &str) -> Result<Vec<BareMetalHost>> {
    api.list(&ListParams::default())
        .await
        .map(|list| list.items)
        .map_err(|e| {
            Error::kube(
                format!("listing BareMetalHosts in namespace {namespace}"),
                e,
            )
        })
}

/// The host that `request.name` already holds, if any.
pub(crate) async fn find_held(
    api: &Api<BareMetalHost>,
    cluster: &ClusterInfo,
    machine: &str,
) -> Result<Option<BareMetalHost>> {
    Ok(list(api, &cluster.namespace)
        .await?
        .into_iter()
        .find(|host| held_by(host, cluster, None, Some(machine))))
}

pub(crate) fn is_available(host: &BareMetalHost) -> bool {
    host.metadata.deletion_timestamp.is_none()
        && host
            .status
            .as_ref()
            .is_some_and(|s| s.state == Some(HostState::Available) && s.consumer_ref.is_none())
}

/// Claims an Available host matching `selector` for `request`: writes the consumer, state `Provisioning` and the
/// user data Secret (already written) with the resourceVersion it read, so no two claims get the same host.
/// Returns the host as written, or `None` when no host is free.
pub(crate) async fn claim(
    api: &Api<BareMetalHost>,
    cluster: &ClusterInfo,
    request: &MachineRequest,
    selector: &Selector,
    image_url: &str,
    user_data: Option<&UserDataSecretRef>,
) -> Result<Option<BareMetalHost>> {
    for _ in 0..CONFLICT_RETRIES {
        let hosts = list(api, &cluster.namespace).await?;
        if let Some(held) = hosts
            .iter()
            .find(|h| held_by(h, cluster, None, Some(request.name.as_str())))
        {
            return Ok(Some(held.clone()));
        }
        let mut free: Vec<&BareMetalHost> = hosts
            .iter()
            .filter(|h| is_available(h) && selector.matches(h.labels()))
            .collect();
        if free.is_empty() {
            return Ok(None);
        }
        // Start each machine at a different host, so that many claims at once mostly do not collide.
        free.sort_by_key(|h| h.name_any());
        let start = stable_hash(&request.name) % free.len();
        free.rotate_left(start);
        let mut conflicted = false;
        for host in free {
            let mut claimed = host.clone();
            let status = claimed.status.get_or_insert_with(Default::default);
            status.state = Some(HostState::Provisioning);
            status.consumer_ref = Some(ConsumerRef {
                namespace: cluster.namespace.clone(),
                cluster: cluster.name.clone(),
                cluster_uid: (!cluster.uid.is_empty()).then(|| cluster.uid.clone()),
                group: request.role.group().to_string(),
                machine: request.name.clone(),
            });
            status.provisioning = Some(ProvisioningStatus {
                image_url: image_url.to_string(),
                template_hash: request.template_hash.clone(),
                claimed_at: Some(Time(now())),
                booted_at: None,
                release_requested_at: None,
                user_data_secret_ref: user_data.cloned(),
            });
            status.last_error = None;
            match api
                .replace_status(&host.name_any(), &PostParams::default(), &claimed)
                .await
            {
                Ok(written) => {
                    tracing::info!(
                        host = %host.name_any(),
                        cluster = %cluster.key(),
                        machine = %request.name,
                        "claimed BareMetalHost"
                    );
                    return Ok(Some(written));
                }
                // Someone wrote the host since we listed it (another claim, or the host controller): try the
                // next one, and list again if all of them moved.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::debug!(host = %host.name_any(), machine = %request.name, "claim lost a race; trying the next host");
                    conflicted = true;
                }
                Err(e) => {
                    return Err(Error::kube(
                        format!(
                            "claiming BareMetalHost {}/{}",
                            cluster.namespace,
                            host.name_any()
                        ),
                        e,
                    ));
                }
            }
        }
        if !conflicted {
            return Ok(None);
        }
    }
    Err(Error::kube(
        format!(
            "claiming a BareMetalHost in namespace {}: hosts kept changing under {CONFLICT_RETRIES} attempts; will retry",
            cluster.namespace
        ),
        kube::Error::Api(Box::new(
            kube::core::Status::failure("conflict", "Conflict").with_code(409),
        )),
    ))
}

/// Reads the host afresh, lets `change` edit its status, and writes it if it changed; retries on conflicts.
/// `change` returns false to leave the host alone (it no longer is what the caller expected). Returns the host
/// as it now is, `None` when it is gone.
pub(crate) async fn update_status(
    api: &Api<BareMetalHost>,
    name: &str,
    mut change: impl FnMut(&BareMetalHost, &mut BareMetalHostStatus) -> bool,
) -> Result<Option<BareMetalHost>> {
    let collection = api.resource_url().to_string();
    for _ in 0..CONFLICT_RETRIES {
        let Some(host) = api
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("reading BareMetalHost {name}"), e))?
        else {
            return Ok(None);
        };
        let mut status = host.status.clone().unwrap_or_default();
        if !change(&host, &mut status) || host.status.as_ref() == Some(&status) {
            return Ok(Some(host));
        }
        let mut updated = host.clone();
        updated.status = Some(status);
        match api
            .replace_status(name, &PostParams::default(), &updated)
            .await
        {
            Ok(written) => return Ok(Some(written)),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => {
                return Err(Error::kube(
                    format!("writing status of BareMetalHost {name} at {collection}"),
                    e,
                ));
            }
        }
    }
    Err(Error::kube(
        format!("writing status of BareMetalHost {name}: it kept changing; will retry"),
        kube::Error::Api(Box::new(
            kube::core::Status::failure("conflict", "Conflict").with_code(409),
        )),
    ))
}

/// Removes the annotation earlier versions kept user data in; nothing to do when it is absent.
pub(crate) async fn remove_legacy_user_data(
    api: &Api<BareMetalHost>,
    host: &BareMetalHost,
) -> Result<()> {
    if !host.annotations().contains_key(LEGACY_USER_DATA_ANNOTATION) {
        return Ok(());
    }
    let patch = json!({ "metadata": { "annotations": { LEGACY_USER_DATA_ANNOTATION: null } } });
    api.patch(
        &host.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|e| {
        Error::kube(
            format!(
                "removing the user data annotation of BareMetalHost {}",
                host.name_any()
            ),
            e,
        )
    })
}

pub(crate) fn now() -> Timestamp {
    Timestamp::now()
}

/// FNV-1a: stable across runs and platforms, unlike `DefaultHasher`.
fn stable_hash(text: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as usize
}
