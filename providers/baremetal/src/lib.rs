//! slipway-provider-baremetal: Slipway's machines as physical hosts, booted over Redfish.
//!
//! The inventory is `BareMetalHost` objects in the Cluster's namespace (one per machine: BMC address, a
//! credentials Secret with `username` and `password`, labels). Two parts work on them:
//!
//! - the **host controller** ([`host_controller::run`], [`reconcile_host`]) reads each host's BMC, records
//!   power state and vendor, and makes it `Available`; a BMC that does not answer or refuses the credentials
//!   puts the host in `Error` with a `lastError` that says what to fix, and the host recovers by itself once
//!   fixed. It also finishes boots and releases that the provider could not complete in one call.
//! - the **provider** ([`BareMetalProvider`], name `baremetal`) claims an `Available` host that matches the
//!   Cluster's `spec.infrastructure.baremetal.hostSelector` for each machine. The claim writes
//!   `status.consumerRef` and state `Provisioning` with the resourceVersion it read, so two pools never get the
//!   same host. It then inserts the Cluster's `imageUrl` as virtual CD, sets a one-time boot override to the CD,
//!   and powers the host on. Deleting a machine powers its host off and ejects the image (`Deprovisioning`);
//!   the deletion is in progress until the BMC reports the host off, then the host is `Available` again. A
//!   machine is ready once its host is `Provisioned` (booted from the image and on), the way a cloud instance
//!   is ready once it runs; that the machine joined as a Node is for the Node to say. No free host is
//!   `ProviderError::Capacity` with reason `NoHostAvailable`. Provider IDs are
//!   `baremetal://<namespace>/<host>`. The provider relies on the host controller for two things: hosts must
//!   have been registered (`Available`) to be claimed, and it is the host controller that sees a booted host
//!   on and calls it `Provisioned`. `slipway manager` runs both.
//!
//! # User data
//! Redfish has no user-data channel. The machine's user data (the kubeadm or k3s cloud-init Slipway renders, with
//! the cluster's private keys or a join token) is kept in a Secret `<machine>-user-data` (key `value`, with a
//! fresh `config-drive-token`) in the host's namespace, never in the BareMetalHost: the claim names it in
//! `status.provisioning.userDataSecretRef` (name and UID). The Secret is written before the claim, the host is
//! powered on only while the Secret the claim names exists, and the Secret is deleted after the release (see
//! [`user_data`] for the order and the sweep of Secrets no claim names).
//!
//! The host reads it from a config drive (see [`config_drive`]): with a [`ConfigDriveSettings`] (`slipway manager
//! --config-drive-url`), the boot inserts, besides the image on the virtual CD, an ISO labelled `cidata` as second
//! virtual medium, which the manager builds from the Secret and serves over HTTPS at an unguessable per-claim URL
//! until the host is `Provisioned`. Its meta-data's `instance-id` is the provider ID, which the user data hands to
//! the kubelet. A BMC with a single virtual media device cannot take it: the boot fails with a message saying so.
//! Without config drive settings the host boots from the image alone, without its user data.
//!
//! Not here: the control plane's endpoint (bare metal has no load balancer to hand out; a virtual IP setting
//! would come with the Cluster API), firmware or RAID settings, inspection of hardware, IPMI or vendor APIs
//! other than Redfish, and deprovisioning by wiping disks (a released host is powered off, not erased).

pub mod config_drive;
pub mod host_controller;
pub mod redfish;
pub mod user_data;

mod bmc;
mod error;
mod hosts;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::core::{Selector, SelectorExt};
use kube::{Api, ResourceExt};
use slipway_api::{BareMetalHost, BareMetalSettings, HostState, MachinePhase};
use slipway_provider::{
    ClusterInfo, Deletion, InfrastructureProvider, InfrastructureStatus, Machine, MachineRequest,
    MachineRole, ProviderError, Result,
};

pub use config_drive::ConfigDriveSettings;
pub use error::Error;
pub use host_controller::{HostControllerSettings, reconcile_host, reconcile_host_with};
pub use hosts::LEGACY_USER_DATA_ANNOTATION;
pub use redfish::ClientOptions;

/// The baremetal provider. Holds a client of the management cluster, where the BareMetalHosts and their
/// credential Secrets live.
pub struct BareMetalProvider {
    client: kube::Client,
    redfish: ClientOptions,
    config_drive: Option<ConfigDriveSettings>,
}

impl BareMetalProvider {
    pub fn new(client: kube::Client) -> Self {
        Self::with_options(client, ClientOptions::default())
    }

    /// A provider whose Redfish calls use `redfish` (timeouts, retries, size limit, and the egress policy that
    /// decides which BMC addresses may be reached: the default refuses private and loopback ones); certificate
    /// verification still follows each host's `spec.bmc.disableCertificateVerification`.
    pub fn with_options(client: kube::Client, redfish: ClientOptions) -> Self {
        Self {
            client,
            redfish,
            config_drive: None,
        }
    }

    /// Hosts get their user data as a config drive served at `settings`' address (see [`config_drive`]); without
    /// it they boot from the image alone.
    pub fn with_config_drive(mut self, settings: ConfigDriveSettings) -> Self {
        self.config_drive = Some(settings);
        self
    }

    fn hosts(&self, cluster: &ClusterInfo) -> Api<BareMetalHost> {
        Api::namespaced(self.client.clone(), &cluster.namespace)
    }

    /// Boots a claimed host unless that was done, and records when it was.
    async fn boot(&self, api: &Api<BareMetalHost>, host: BareMetalHost) -> Result<BareMetalHost> {
        let Some(provisioning) = host.status.as_ref().and_then(|s| s.provisioning.clone()) else {
            return Ok(host);
        };
        if provisioning.booted_at.is_some() {
            return Ok(host);
        }
        let booted = async {
            // Never powered on without the user data its claim names.
            let secret = user_data::require(&self.client, &host).await?;
            let drive =
                config_drive::for_claim(self.config_drive.as_ref(), &host, secret.as_ref())?;
            let redfish = bmc::connect(&self.client, &host, &self.redfish).await?;
            bmc::boot_from_image(&redfish, &host, &provisioning.image_url, drive.as_ref()).await
        }
        .await;
        let name = host.name_any();
        let machine = consumer_machine(&host);
        let written = hosts::update_status(api, &name, |current, status| {
            // Only while the host still belongs to the machine we booted it for.
            if consumer_machine(current) != machine {
                return false;
            }
            match &booted {
                Ok(()) => {
                    if let Some(p) = status.provisioning.as_mut() {
                        p.booted_at.get_or_insert(Time(Timestamp::now()));
                    }
                    status.last_error = None;
                }
                Err(error) => status.last_error = Some(error.to_string()),
            }
            true
        })
        .await
        .map_err(ProviderError::from)?;
        booted.map_err(ProviderError::from)?;
        Ok(written.unwrap_or(host))
    }
}

fn settings(cluster: &ClusterInfo) -> Result<&BareMetalSettings> {
    cluster.infrastructure.baremetal.as_ref().ok_or_else(|| {
        ProviderError::permanent(
            "WrongProvider",
            format!(
                "cluster {} has no spec.infrastructure.baremetal",
                cluster.key()
            ),
        )
    })
}

fn selector(cluster: &ClusterInfo, settings: &BareMetalSettings) -> Result<Selector> {
    Selector::try_from(settings.host_selector.clone()).map_err(|e| {
        ProviderError::permanent(
            "InvalidHostSelector",
            format!(
                "cluster {}: spec.infrastructure.baremetal.hostSelector is not a valid label selector ({e}); use matchLabels or matchExpressions with In, NotIn, Exists, DoesNotExist",
                cluster.key()
            ),
        )
    })
}

fn consumer_machine(host: &BareMetalHost) -> Option<String> {
    host.status
        .as_ref()
        .and_then(|s| s.consumer_ref.as_ref())
        .map(|c| c.machine.clone())
}

/// `baremetal://<namespace>/<host>`.
pub fn provider_id(host: &BareMetalHost) -> String {
    format!(
        "baremetal://{}/{}",
        host.namespace().unwrap_or_default(),
        host.name_any()
    )
}

fn to_machine(host: &BareMetalHost) -> Machine {
    let status = host.status.clone().unwrap_or_default();
    let provisioning = status.provisioning.as_ref();
    let booted = provisioning.is_some_and(|p| p.booted_at.is_some());
    let phase = match status.state {
        Some(HostState::Provisioned) => MachinePhase::Running,
        Some(HostState::Deprovisioning) => MachinePhase::Deleting,
        // A BMC that stopped answering says nothing about the machine itself: its Node tells.
        Some(HostState::Error) if booted => MachinePhase::Running,
        _ => MachinePhase::Provisioning,
    };
    let created_at = provisioning
        .and_then(|p| p.claimed_at.as_ref())
        .or(host.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    Machine {
        name: status
            .consumer_ref
            .as_ref()
            .map(|c| c.machine.clone())
            .unwrap_or_default(),
        provider_id: provider_id(host),
        phase,
        // Booted from the image and powered on (or booted, with a BMC that stopped answering): as far as the
        // infrastructure can tell, the machine runs. Whether it serves as a node is for its Node to say.
        ready: phase == MachinePhase::Running,
        template_hash: provisioning
            .map(|p| p.template_hash.clone())
            .unwrap_or_default(),
        created_at,
        version: None,
    }
}

#[async_trait]
impl InfrastructureProvider for BareMetalProvider {
    fn name(&self) -> &'static str {
        "baremetal"
    }

    /// The config drive's meta-data gives the provider ID as `instance-id`.
    fn provider_id_from_instance_data(&self) -> Option<&'static str> {
        Some("{{ v1.instance_id }}")
    }

    async fn reconcile_cluster(&self, cluster: &ClusterInfo) -> Result<InfrastructureStatus> {
        let settings = settings(cluster)?;
        selector(cluster, settings)?;
        let endpoint = settings
            .control_plane_endpoint
            .as_ref()
            .map(|e| (e.host.clone(), u16::try_from(e.port).unwrap_or(6443)));
        let message = match &endpoint {
            Some((host, port)) => format!(
                "bare metal needs no shared infrastructure; hosts are claimed per machine; the API answers at {host}:{port}"
            ),
            None => "bare metal needs no shared infrastructure; hosts are claimed per machine; without spec.infrastructure.baremetal.controlPlaneEndpoint the workload API is out of reach (no kubeconfig, no worker join data, no add-ons)".into(),
        };
        Ok(InfrastructureStatus {
            ready: true,
            message,
            workload_api: endpoint.is_some(),
            endpoint,
        })
    }

    async fn delete_cluster(&self, cluster: &ClusterInfo) -> Result<Deletion> {
        let held = hosts::list(&self.hosts(cluster), &cluster.namespace)
            .await?
            .into_iter()
            .filter(|h| hosts::held_by(h, cluster, None, None))
            .map(|h| h.name_any())
            .collect::<Vec<_>>();
        if held.is_empty() {
            // A release cut short between dropping the claim and deleting the Secret, or a Secret whose claim never
            // happened: nothing of the cluster's user data stays behind.
            let hosts = hosts::list(&self.hosts(cluster), &cluster.namespace).await?;
            user_data::sweep(&self.client, cluster, None, &hosts).await?;
            Ok(Deletion::Done)
        } else {
            Ok(Deletion::InProgress(format!(
                "BareMetalHosts still held: {}",
                held.join(", ")
            )))
        }
    }

    async fn list_machines(
        &self,
        cluster: &ClusterInfo,
        role: &MachineRole,
    ) -> Result<Vec<Machine>> {
        let hosts = hosts::list(&self.hosts(cluster), &cluster.namespace).await?;
        // The controller lists a group before it creates any of its machines, one pass of a group at a time: no
        // claim of this group is in flight, so a user data Secret that no claim names is left over.
        user_data::sweep(&self.client, cluster, Some(role.group()), &hosts).await?;
        Ok(hosts
            .iter()
            .filter(|h| hosts::held_by(h, cluster, Some(role.group()), None))
            .map(to_machine)
            .collect())
    }

    async fn create_machine(
        &self,
        cluster: &ClusterInfo,
        request: &MachineRequest,
    ) -> Result<Machine> {
        let settings = settings(cluster)?;
        let selector = selector(cluster, settings)?;
        let api = self.hosts(cluster);
        let no_host = || {
            ProviderError::capacity(
                "NoHostAvailable",
                format!(
                    "no Available BareMetalHost in namespace {} matches spec.infrastructure.baremetal.hostSelector of cluster {} ({}); add BareMetalHosts with matching labels, or free some",
                    cluster.namespace,
                    cluster.name,
                    if selector.selects_all() {
                        "any host".to_string()
                    } else {
                        selector.to_string()
                    },
                ),
            )
        };
        let listed = hosts::list(&api, &cluster.namespace).await?;
        let held = listed
            .iter()
            .any(|h| hosts::held_by(h, cluster, None, Some(request.name.as_str())));
        if !held
            && !listed
                .iter()
                .any(|h| hosts::is_available(h) && selector.matches(h.labels()))
        {
            return Err(no_host());
        }
        // The user data first, then the claim that names it: a claim never exists without its Secret. A machine
        // that already holds a host was claimed with its Secret in an earlier call.
        let secret = match (&request.user_data, held) {
            (Some(data), false) => {
                Some(user_data::write_fresh(&self.client, cluster, request, data).await?)
            }
            _ => None,
        };
        let claimed = hosts::claim(
            &api,
            cluster,
            request,
            &selector,
            &settings.image_url,
            secret.as_ref(),
        )
        .await;
        let host = match claimed {
            Ok(Some(host)) => host,
            Ok(None) => {
                // Every free host went to someone else: the Secret is named by no claim.
                if let Some(secret) = &secret {
                    user_data::delete(&self.client, &cluster.namespace, secret).await?;
                }
                return Err(no_host());
            }
            // The claim may or may not have landed; the Secret stays for it, and is swept if it did not.
            Err(error) => return Err(error.into()),
        };
        let host = self.boot(&api, host).await?;
        Ok(to_machine(&host))
    }

    async fn delete_machine(
        &self,
        cluster: &ClusterInfo,
        _role: &MachineRole,
        name: &str,
    ) -> Result<Deletion> {
        let api = self.hosts(cluster);
        let Some(host) = hosts::find_held(&api, cluster, name).await? else {
            return Ok(Deletion::Done);
        };
        let host_name = host.name_any();
        let held = |h: &BareMetalHost| consumer_machine(h).as_deref() == Some(name);
        // Deprovisioning first: if the BMC fails below, the host stays held and marked, and the host controller
        // (or the next call) finishes the release.
        let Some(host) = hosts::update_status(&api, &host_name, |current, status| {
            status.state = Some(HostState::Deprovisioning);
            held(current)
        })
        .await?
        else {
            return Ok(Deletion::Done);
        };
        let step = async {
            let redfish = bmc::connect(&self.client, &host, &self.redfish).await?;
            bmc::release_step(&redfish, &host).await
        }
        .await;
        let step = match step {
            Ok(step) => step,
            Err(error) => {
                let message = error.to_string();
                hosts::update_status(&api, &host_name, |current, status| {
                    status.last_error = Some(message.clone());
                    held(current)
                })
                .await?;
                return Err(error.into());
            }
        };
        let secret = host
            .status
            .as_ref()
            .and_then(|s| s.provisioning.as_ref())
            .and_then(|p| p.user_data_secret_ref.clone());
        let released = hosts::update_status(&api, &host_name, |current, status| {
            if !held(current) {
                return false;
            }
            status.power_state = step.power_state.clone();
            status.last_error = None;
            if step.done {
                status.state = Some(HostState::Available);
                status.consumer_ref = None;
                status.provisioning = None;
            } else if step.requested
                && let Some(provisioning) = status.provisioning.as_mut()
            {
                provisioning.release_requested_at = Some(Time(Timestamp::now()));
            }
            true
        })
        .await?;
        // The claim is dropped first, the Secret deleted after: a cut in between leaves a Secret no claim names,
        // which is swept, never a claim without its Secret.
        if step.done
            && let Some(secret) = &secret
            && released.is_none_or(|h| consumer_machine(&h).as_deref() != Some(name))
        {
            user_data::delete(&self.client, &cluster.namespace, secret).await?;
        }
        if !step.done {
            return Ok(Deletion::InProgress(format!(
                "BareMetalHost {}/{host_name} is powering off (power state {})",
                cluster.namespace,
                step.power_state.as_deref().unwrap_or("unknown")
            )));
        }
        tracing::info!(host = %host_name, cluster = %cluster.key(), machine = name, "released BareMetalHost");
        Ok(Deletion::Done)
    }
}
