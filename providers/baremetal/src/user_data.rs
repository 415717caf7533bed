//! A machine's user data (its cloud-init, which holds the cluster's private keys or a join token) in a Secret of
//! the host's namespace, never in the BareMetalHost itself.
//!
//! The order of writes is what keeps a host from booting without its data, whatever line a reconcile is cut at:
//!
//! 1. a fresh Secret `<machine>-user-data` is created (an older one of that name is deleted first, so every claim
//!    gets its own UID);
//! 2. the claim (a status write of the host) records the Secret's name and UID;
//! 3. the host is powered on only when its claim names a Secret that exists with that UID (or names none: a
//!    machine without user data);
//! 4. a release drops the claim first and deletes the Secret after, by UID, so a newer Secret of the same name
//!    is never taken.
//!
//! A cut between 1 and 2 leaves a Secret no claim names; a cut between the two writes of 4 does too. Such
//! Secrets are swept ([`sweep`]) whenever the provider lists a group's machines and when the cluster is deleted.
//! Each Secret also has the Cluster as owner, so Kubernetes' garbage collector removes what is left with it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use slipway_api::{BareMetalHost, UserDataSecretRef};
use slipway_provider::{ClusterInfo, MachineRequest};

use crate::error::{Error, Result};

/// The key of the Secret that holds the user data, as in Cluster API's bootstrap data Secrets.
pub const USER_DATA_KEY: &str = "value";
/// Label on every user-data Secret: the group (`control-plane` or the pool's name) of the machine.
pub const MACHINE_GROUP_LABEL: &str = "slipway.dev/machine-group";
/// Label on every user-data Secret, so they can be listed apart from the cluster's other Secrets.
pub const USER_DATA_LABEL: &str = "slipway.dev/user-data";
/// Annotation naming the machine a user-data Secret was written for (names can be longer than a label value).
pub const MACHINE_ANNOTATION: &str = "slipway.dev/machine";
/// The label Cluster API puts on a cluster's Secrets.
const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// The type Cluster API gives the Secrets of a cluster.
const SECRET_TYPE: &str = "cluster.x-k8s.io/secret";

/// `<machine>-user-data`.
pub fn secret_name(machine: &str) -> String {
    format!("{machine}-user-data")
}

fn secrets(client: &kube::Client, namespace: &str) -> Api<Secret> {
    Api::namespaced(client.clone(), namespace)
}

fn owner(cluster: &ClusterInfo) -> Option<OwnerReference> {
    (!cluster.uid.is_empty()).then(|| OwnerReference {
        api_version: format!("{}/{}", slipway_api::GROUP, slipway_api::VERSION),
        kind: "Cluster".into(),
        name: cluster.name.clone(),
        uid: cluster.uid.clone(),
        ..Default::default()
    })
}

/// Writes a fresh Secret holding `data` for the machine of `request` and returns its name and UID. A Secret of the
/// same name is deleted first: it is left over from an earlier claim of that name (whose release may still be
/// about to delete it by UID) or from a write whose claim never happened.
pub(crate) async fn write_fresh(
    client: &kube::Client,
    cluster: &ClusterInfo,
    request: &MachineRequest,
    data: &str,
) -> Result<UserDataSecretRef> {
    let api = secrets(client, &cluster.namespace);
    let name = secret_name(&request.name);
    let what = || format!("user data Secret {}/{name}", cluster.namespace);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => return Err(Error::kube(format!("deleting the old {}", what()), e)),
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([
                (CLUSTER_NAME_LABEL.to_string(), cluster.name.clone()),
                (
                    MACHINE_GROUP_LABEL.to_string(),
                    request.role.group().to_string(),
                ),
                (USER_DATA_LABEL.to_string(), "true".to_string()),
            ])),
            annotations: Some(BTreeMap::from([(
                MACHINE_ANNOTATION.to_string(),
                request.name.clone(),
            )])),
            owner_references: owner(cluster).map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.into()),
        data: Some(BTreeMap::from([
            (
                USER_DATA_KEY.to_string(),
                ByteString(data.as_bytes().to_vec()),
            ),
            // Fresh with every claim: the config drive URL of this claim, and of no other.
            (
                crate::config_drive::TOKEN_KEY.to_string(),
                ByteString(crate::config_drive::new_token().into_bytes()),
            ),
        ])),
        ..Default::default()
    };
    // A delete that has not finished yet (the old one had finalizers, say) answers 409 here: the next call retries.
    let created = api
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|e| Error::kube(format!("writing {}", what()), e))?;
    Ok(UserDataSecretRef {
        name,
        uid: created.uid().unwrap_or_default(),
    })
}

/// The Secret a claim names, when it exists as that incarnation (same UID).
pub(crate) async fn get(
    client: &kube::Client,
    namespace: &str,
    reference: &UserDataSecretRef,
) -> Result<Option<Secret>> {
    let found = secrets(client, namespace)
        .get_opt(&reference.name)
        .await
        .map_err(|e| {
            Error::kube(
                format!("reading user data Secret {namespace}/{}", reference.name),
                e,
            )
        })?;
    Ok(found.filter(|s| s.uid().as_deref() == Some(reference.uid.as_str())))
}

/// The Secret the host's claim names (`None` when it names none: a machine without user data). Fails when that
/// Secret is gone: a host is never powered on without its user data.
pub(crate) async fn require(client: &kube::Client, host: &BareMetalHost) -> Result<Option<Secret>> {
    let Some(reference) = host
        .status
        .as_ref()
        .and_then(|s| s.provisioning.as_ref())
        .and_then(|p| p.user_data_secret_ref.as_ref())
    else {
        return Ok(None);
    };
    let namespace = host.namespace().unwrap_or_default();
    match get(client, &namespace, reference).await? {
        Some(secret) => Ok(Some(secret)),
        None => Err(Error::UserDataMissing {
            host: crate::bmc::host_key(host),
            secret: format!("{namespace}/{}", reference.name),
        }),
    }
}

/// Deletes the Secret `reference` names, only that incarnation; done when it is already gone or was replaced.
pub(crate) async fn delete(
    client: &kube::Client,
    namespace: &str,
    reference: &UserDataSecretRef,
) -> Result<()> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(reference.uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match secrets(client, namespace)
        .delete(&reference.name, &params)
        .await
    {
        Ok(_) => Ok(()),
        // Gone, or a newer Secret of the same name (409: the UID precondition failed) that is not ours to take.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(
            format!("deleting user data Secret {namespace}/{}", reference.name),
            e,
        )),
    }
}

/// The user-data Secrets that no claim names: which of `secrets` (listed for one cluster) to delete, given every
/// host of the namespace. A Secret is kept while any host's claim names its UID.
pub(crate) fn unclaimed(secrets: &[Secret], hosts: &[BareMetalHost]) -> Vec<UserDataSecretRef> {
    let claimed: BTreeSet<&str> = hosts
        .iter()
        .filter_map(|h| h.status.as_ref()?.provisioning.as_ref())
        .filter_map(|p| p.user_data_secret_ref.as_ref())
        .map(|r| r.uid.as_str())
        .collect();
    secrets
        .iter()
        .filter_map(|s| {
            let uid = s.uid()?;
            (!claimed.contains(uid.as_str())).then(|| UserDataSecretRef {
                name: s.name_any(),
                uid,
            })
        })
        .collect()
}

/// Deletes the cluster's user-data Secrets (of one group, or all) that no claim names. Called where no claim of
/// that group can be in flight: before a group's machines are created in a pass, and when the cluster is deleted.
/// Returns how many were deleted.
pub(crate) async fn sweep(
    client: &kube::Client,
    cluster: &ClusterInfo,
    group: Option<&str>,
    hosts: &[BareMetalHost],
) -> Result<usize> {
    let mut selector = format!(
        "{USER_DATA_LABEL}=true,{CLUSTER_NAME_LABEL}={}",
        cluster.name
    );
    if let Some(group) = group {
        selector.push_str(&format!(",{MACHINE_GROUP_LABEL}={group}"));
    }
    let listed = secrets(client, &cluster.namespace)
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            Error::kube(
                format!(
                    "listing user data Secrets of cluster {} in namespace {}",
                    cluster.name, cluster.namespace
                ),
                e,
            )
        })?;
    // Only metadata was listed: no key material crosses the wire for a sweep.
    let listed: Vec<Secret> = listed
        .items
        .into_iter()
        .map(|m| Secret {
            metadata: m.metadata,
            ..Default::default()
        })
        .collect();
    let orphans = unclaimed(&listed, hosts);
    for orphan in &orphans {
        delete(client, &cluster.namespace, orphan).await?;
        tracing::info!(cluster = %cluster.key(), secret = %orphan.name, "deleted user data Secret that no claim names");
    }
    Ok(orphans.len())
}

#[cfg(test)]
mod tests {
    use slipway_api::{
        BareMetalHostSpec, BareMetalHostStatus, BmcDetails, ProvisioningStatus, UserDataSecretRef,
    };

    use super::*;

    fn secret(name: &str, uid: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn host_naming(secret: Option<(&str, &str)>) -> BareMetalHost {
        let mut host = BareMetalHost::new(
            "h",
            BareMetalHostSpec {
                bmc: BmcDetails {
                    address: "redfish+https://bmc/redfish/v1/Systems/1".into(),
                    credentials_secret_ref: None,
                    disable_certificate_verification: false,
                },
                boot_mac_address: None,
            },
        );
        host.status = Some(BareMetalHostStatus {
            provisioning: Some(ProvisioningStatus {
                image_url: "http://i".into(),
                template_hash: "h".into(),
                claimed_at: None,
                booted_at: None,
                release_requested_at: None,
                user_data_secret_ref: secret.map(|(name, uid)| UserDataSecretRef {
                    name: name.into(),
                    uid: uid.into(),
                }),
            }),
            ..Default::default()
        });
        host
    }

    #[test]
    fn only_secrets_no_claim_names_by_uid_are_swept() {
        let secrets = [
            secret("m-0-user-data", "uid-claimed"),
            // Same name as a claimed one once had, another incarnation: the claim does not keep it.
            secret("m-1-user-data", "uid-new"),
            secret("m-2-user-data", "uid-never-claimed"),
        ];
        let hosts = [
            host_naming(Some(("m-0-user-data", "uid-claimed"))),
            host_naming(Some(("m-1-user-data", "uid-old"))),
            host_naming(None),
        ];
        let swept: Vec<String> = unclaimed(&secrets, &hosts)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(swept, ["m-1-user-data", "m-2-user-data"]);
        assert!(unclaimed(&secrets[..1], &hosts).is_empty());
    }

    #[test]
    fn secret_names_follow_the_machine() {
        assert_eq!(
            secret_name("demo-md-0-abc1234-3"),
            "demo-md-0-abc1234-3-user-data"
        );
    }
}
