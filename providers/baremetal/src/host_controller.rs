//! The host controller: keeps each BareMetalHost's status true to its BMC.
//!
//! A new host is read through Redfish (power state, manufacturer, model) and becomes `Available`. A host whose
//! BMC cannot be reached, distrusts its certificate or refuses its credentials goes to `Error` with `lastError`
//! saying what to fix, and is tried again every `error_requeue` until it answers; then it returns to where it
//! was. It also finishes what the provider started and could not complete in one call: a claimed host whose
//! boot was cut short is booted, one being released is powered off and emptied, and a claimed host that is on
//! becomes `Provisioned`.
//!
//! Claiming and releasing are the provider's (`crate::BareMetalProvider`); this controller never picks a
//! consumer. Every status write is guarded by the resourceVersion it read, so it never undoes a claim.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use slipway_api::{BareMetalHost, BareMetalHostStatus, HostState, VendorDetails};
use tracing::{Instrument, info_span};

use crate::bmc::ReleaseStep;
use crate::bmc::{self, host_key};
use crate::config_drive::{self, ConfigDriveSettings};
use crate::error::{Error, Result};
use crate::hosts;
use crate::redfish::{ClientOptions, SystemInfo};
use crate::user_data;

/// How the host controller runs.
#[derive(Debug, Clone)]
pub struct HostControllerSettings {
    /// Watch hosts in this namespace only; `None`: every namespace.
    pub namespace: Option<String>,
    /// How often a host in `Error` is tried again.
    pub error_requeue: Duration,
    /// How often a claimed host is looked at while it powers on.
    pub provisioning_poll: Duration,
    /// How often a settled host's power state is read again.
    pub resync: Duration,
    /// Reconciles in flight.
    pub concurrency: u16,
    /// Timeouts, size limits and the egress policy of the Redfish client.
    pub redfish: ClientOptions,
    /// How long one pass may talk to a BMC before it is stopped and the host is put in `Error`, so that a slow
    /// BMC cannot hold a worker.
    pub deadline: Duration,
    /// Where the config drives of boots this controller finishes are served; `None`: boots without one.
    pub config_drive: Option<ConfigDriveSettings>,
}

impl Default for HostControllerSettings {
    fn default() -> Self {
        Self {
            namespace: None,
            error_requeue: Duration::from_secs(30),
            provisioning_poll: Duration::from_secs(5),
            resync: Duration::from_secs(300),
            concurrency: 8,
            redfish: ClientOptions::default(),
            deadline: Duration::from_secs(300),
            config_drive: None,
        }
    }
}

/// Runs the host controller until `shutdown` completes; reconciles in flight finish first.
pub async fn run(
    client: Client,
    settings: HostControllerSettings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<BareMetalHost> = match &settings.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let config = ControllerConfig::default().concurrency(settings.concurrency);
    let context = Arc::new((client, settings));
    Controller::new(api, watcher::Config::default())
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .run(
            |host: Arc<BareMetalHost>, context: Arc<(Client, HostControllerSettings)>| async move {
                let (client, settings) = context.as_ref();
                let span = info_span!(
                    "reconcile_host",
                    namespace = %host.namespace().unwrap_or_default(),
                    name = %host.name_any()
                );
                reconcile_host_with(client, &host, settings)
                    .instrument(span)
                    .await
            },
            |host: Arc<BareMetalHost>,
             error: &Error,
             context: Arc<(Client, HostControllerSettings)>| {
                tracing::warn!(host = %host_key(&host), %error, "reconciling BareMetalHost failed");
                Action::requeue(context.1.error_requeue)
            },
            context,
        )
        .for_each(|_| async {})
        .await;
}

/// Reconciles one host with the default settings.
pub async fn reconcile_host(client: &Client, host: &BareMetalHost) -> Result<Action> {
    reconcile_host_with(client, host, &HostControllerSettings::default()).await
}

/// Reconciles one host: reads its BMC, moves it along its states, writes its status when it changed. Returns
/// when to look again. Errors are apiserver failures only; BMC failures are the host's `Error` state.
pub async fn reconcile_host_with(
    client: &Client,
    host: &BareMetalHost,
    settings: &HostControllerSettings,
) -> Result<Action> {
    if host.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = host.namespace().unwrap_or_default();
    let api: Api<BareMetalHost> = Api::namespaced(client.clone(), &namespace);
    let name = host.name_any();
    let outcome = tokio::time::timeout(settings.deadline, drive(client, &api, host, settings))
        .await
        .unwrap_or_else(|_| {
            Err(Error::Deadline {
                host: host_key(host),
                seconds: settings.deadline.as_secs(),
            })
        });

    let (observed, error) = match outcome {
        Ok(observed) => (Some(observed), None),
        Err(error @ Error::Kube { .. }) if !error.is_conflict() => return Err(error),
        Err(error) => (None, Some(error)),
    };
    let generation = host.metadata.generation;
    let written = hosts::update_status(&api, &name, |current, status| {
        status.observed_generation = generation;
        match (&observed, &error) {
            (Some(observed), _) => apply_observation(current, status, observed),
            (None, Some(error)) => {
                if !error.is_conflict() {
                    status.state = Some(HostState::Error);
                    status.last_error = Some(error.to_string());
                }
            }
            (None, None) => {}
        }
        true
    })
    .await?;
    // A release this pass finished: the claim is dropped above, so the Secret it named goes now (a cut before this
    // line leaves a Secret that no claim names, which the provider sweeps).
    let released = observed
        .as_ref()
        .and_then(|o| o.release.as_ref())
        .is_some_and(|step| step.done);
    let named = host
        .status
        .as_ref()
        .and_then(|s| s.provisioning.as_ref())
        .and_then(|p| p.user_data_secret_ref.as_ref());
    if released
        && let Some(secret) = named
        && written.as_ref().is_none_or(|h| !still_names(h, secret))
    {
        user_data::delete(client, &namespace, secret).await?;
    }
    if let Some(error) = &error {
        // Info once, when the host enters Error; every retry after that is detail.
        let was = host.status.as_ref().and_then(|s| s.state);
        if was == Some(HostState::Error) {
            tracing::debug!(host = %host_key(host), %error, "BareMetalHost still in Error");
        } else {
            tracing::info!(host = %host_key(host), %error, "BareMetalHost in Error");
        }
        return Ok(Action::requeue(settings.error_requeue));
    }
    let state = written
        .as_ref()
        .and_then(|h| h.status.as_ref())
        .and_then(|s| s.state);
    Ok(match state {
        Some(HostState::Provisioning | HostState::Deprovisioning | HostState::Registering) => {
            Action::requeue(settings.provisioning_poll)
        }
        Some(HostState::Error) => Action::requeue(settings.error_requeue),
        _ => Action::requeue(settings.resync),
    })
}

/// Whether the host's claim names this very Secret.
fn still_names(host: &BareMetalHost, secret: &slipway_api::UserDataSecretRef) -> bool {
    host.status
        .as_ref()
        .and_then(|s| s.provisioning.as_ref())
        .and_then(|p| p.user_data_secret_ref.as_ref())
        == Some(secret)
}

/// What one pass learned from the BMC, and what it did.
struct Observation {
    system: SystemInfo,
    /// The boot of a claimed host was completed in this pass.
    booted: bool,
    /// How far releasing the host came in this pass, when it is being released.
    release: Option<ReleaseStep>,
}

/// Talks to the BMC: reads the System and finishes an interrupted boot or release.
async fn drive(
    client: &Client,
    api: &Api<BareMetalHost>,
    host: &BareMetalHost,
    settings: &HostControllerSettings,
) -> Result<Observation> {
    // User data lives in Secrets now; a host that still carries it from an earlier version loses it.
    hosts::remove_legacy_user_data(api, host).await?;
    let redfish = bmc::connect(client, host, &settings.redfish).await?;
    let wrap = |source| Error::Redfish {
        host: host_key(host),
        source,
    };
    // The service root needs no login: when it answers and the System does not, the fault is the credentials.
    redfish.service_root().await.map_err(wrap)?;
    let mut observation = Observation {
        system: redfish.system().await.map_err(wrap)?,
        booted: false,
        release: None,
    };
    let status = host.status.clone().unwrap_or_default();
    let state = status.state.unwrap_or(HostState::Registering);
    match (&status.consumer_ref, &status.provisioning) {
        (Some(_), Some(provisioning))
            if state != HostState::Deprovisioning && provisioning.booted_at.is_none() =>
        {
            // Never powered on without the user data its claim names.
            let secret = user_data::require(client, host).await?;
            let drive =
                config_drive::for_claim(settings.config_drive.as_ref(), host, secret.as_ref())?;
            bmc::boot_from_image(&redfish, host, &provisioning.image_url, drive.as_ref()).await?;
            observation.booted = true;
            observation.system = redfish.system().await.map_err(wrap)?;
        }
        _ if state == HostState::Deprovisioning => {
            let step = bmc::release_step(&redfish, host).await?;
            observation.system.power_state = step.power_state.clone();
            observation.release = Some(step);
        }
        _ => {}
    }
    Ok(observation)
}

/// The status a successful pass leads to, from the host as it is now (which may have been claimed or
/// released since the pass began: the state follows the current consumer, not the one the pass started with).
fn apply_observation(
    current: &BareMetalHost,
    status: &mut BareMetalHostStatus,
    observed: &Observation,
) {
    let system = &observed.system;
    status.power_state = system.power_state.clone();
    status.vendor = Some(VendorDetails {
        manufacturer: system.manufacturer.clone(),
        model: system.model.clone(),
        serial_number: system.serial_number.clone(),
    });
    status.last_error = None;
    let state = current
        .status
        .as_ref()
        .and_then(|s| s.state)
        .unwrap_or(HostState::Registering);
    if state == HostState::Deprovisioning
        && let Some(step) = &observed.release
    {
        if step.done {
            status.consumer_ref = None;
            status.provisioning = None;
            status.state = Some(HostState::Available);
            return;
        }
        if step.requested
            && let Some(provisioning) = status.provisioning.as_mut()
        {
            provisioning.release_requested_at = Some(Time(hosts::now()));
        }
    }
    if observed.booted
        && let Some(provisioning) = status.provisioning.as_mut()
        && provisioning.booted_at.is_none()
    {
        provisioning.booted_at = Some(Time(hosts::now()));
    }
    status.state = Some(match (state, &status.consumer_ref) {
        (HostState::Deprovisioning, _) => HostState::Deprovisioning,
        (_, None) => HostState::Available,
        // Booted once: a host switched off later is still the machine's (its power column shows it), not one
        // to boot again.
        (HostState::Provisioned, Some(_)) => HostState::Provisioned,
        (_, Some(_)) => {
            let booted = status
                .provisioning
                .as_ref()
                .is_some_and(|p| p.booted_at.is_some());
            if booted && system.power_state.as_deref() == Some("On") {
                HostState::Provisioned
            } else {
                HostState::Provisioning
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use slipway_api::{BareMetalHostSpec, BmcDetails, ConsumerRef, ProvisioningStatus};

    use super::*;

    fn host(state: Option<HostState>, consumer: bool, booted: bool) -> BareMetalHost {
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
            state,
            consumer_ref: consumer.then(|| ConsumerRef {
                namespace: "ns".into(),
                cluster: "c".into(),
                cluster_uid: None,
                group: "control-plane".into(),
                machine: "c-control-plane-0".into(),
            }),
            provisioning: consumer.then(|| ProvisioningStatus {
                image_url: "http://images/i.iso".into(),
                template_hash: "h1".into(),
                claimed_at: None,
                booted_at: booted.then(|| Time(hosts::now())),
                release_requested_at: None,
                user_data_secret_ref: None,
            }),
            last_error: Some("old".into()),
            ..Default::default()
        });
        host
    }

    fn next(
        host: &BareMetalHost,
        power: &str,
        booted: bool,
        releasing: bool,
    ) -> BareMetalHostStatus {
        let mut status = host.status.clone().unwrap_or_default();
        let observed = Observation {
            system: SystemInfo::with_power(power),
            booted,
            release: releasing.then(|| ReleaseStep {
                requested: true,
                done: power == "Off",
                power_state: Some(power.into()),
            }),
        };
        apply_observation(host, &mut status, &observed);
        status
    }

    #[test]
    fn a_free_host_that_answers_is_available() {
        for state in [None, Some(HostState::Registering), Some(HostState::Error)] {
            let status = next(&host(state, false, false), "Off", false, false);
            assert_eq!(status.state, Some(HostState::Available));
            assert_eq!(status.last_error, None);
            assert_eq!(status.power_state.as_deref(), Some("Off"));
            assert_eq!(status.vendor.unwrap().manufacturer.as_deref(), Some("Acme"));
        }
    }

    #[test]
    fn a_claimed_host_is_provisioned_once_booted_and_on() {
        let claimed = host(Some(HostState::Provisioning), true, false);
        assert_eq!(
            next(&claimed, "Off", false, false).state,
            Some(HostState::Provisioning)
        );
        let booted_now = next(&claimed, "On", true, false);
        assert!(booted_now.provisioning.unwrap().booted_at.is_some());
        let booted = host(Some(HostState::Provisioning), true, true);
        assert_eq!(
            next(&booted, "Off", false, false).state,
            Some(HostState::Provisioning)
        );
        assert_eq!(
            next(&booted, "On", false, false).state,
            Some(HostState::Provisioned)
        );
        let provisioned = host(Some(HostState::Provisioned), true, true);
        assert_eq!(
            next(&provisioned, "Off", false, false).state,
            Some(HostState::Provisioned)
        );
        // A claimed host that was in Error goes back to where its boot is, not to Available.
        let recovering = host(Some(HostState::Error), true, true);
        assert_eq!(
            next(&recovering, "On", false, false).state,
            Some(HostState::Provisioned)
        );
    }

    #[test]
    fn a_released_host_is_available_and_free() {
        let releasing = host(Some(HostState::Deprovisioning), true, true);
        let waiting = next(&releasing, "On", false, true);
        assert_eq!(waiting.state, Some(HostState::Deprovisioning));
        assert!(waiting.provisioning.unwrap().release_requested_at.is_some());
        let status = next(&releasing, "Off", false, true);
        assert_eq!(status.state, Some(HostState::Available));
        assert_eq!((status.consumer_ref, status.provisioning), (None, None));
    }
}
