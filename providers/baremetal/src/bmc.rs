//! From a BareMetalHost to a Redfish session with its BMC, and the two things Slipway does to a host through
//! it: boot it from an image, and release it.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use slipway_api::BareMetalHost;

use crate::error::{Error, Result};
use crate::redfish::{BmcAddress, ClientOptions, Credentials, RedfishClient, ResetType};

/// `<namespace>/<name>` of a host, for messages.
pub(crate) fn host_key(host: &BareMetalHost) -> String {
    format!(
        "{}/{}",
        host.namespace().unwrap_or_default(),
        host.name_any()
    )
}

/// Opens a session with the host's BMC: parses its address and reads the credentials Secret it names.
pub(crate) async fn connect(
    client: &kube::Client,
    host: &BareMetalHost,
    options: &ClientOptions,
) -> Result<RedfishClient> {
    let key = host_key(host);
    let namespace = host.namespace().unwrap_or_default();
    let bmc = &host.spec.bmc;
    let redfish = |source| Error::Redfish {
        host: key.clone(),
        source,
    };
    let address = BmcAddress::parse(&bmc.address).map_err(redfish)?;
    let credentials_error = |message: String| Error::Credentials {
        host: key.clone(),
        message,
    };
    let Some(secret_ref) = &bmc.credentials_secret_ref else {
        return Err(credentials_error(
            "spec.bmc.credentialsSecretRef is not set; name a Secret with the keys username and password".into(),
        ));
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = secrets
        .get_opt(&secret_ref.name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {namespace}/{}", secret_ref.name), e))?
        .ok_or_else(|| {
            credentials_error(format!(
                "credentials Secret {namespace}/{} (spec.bmc.credentialsSecretRef) does not exist; create it with the keys username and password",
                secret_ref.name
            ))
        })?;
    let value = |key: &str| -> Result<String> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|v| v.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|data| data.get(key))
                    .map(|v| v.clone().into_bytes())
            })
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                credentials_error(format!(
                    "credentials Secret {namespace}/{} has no key {key:?}; it needs the keys username and password",
                    secret_ref.name
                ))
            })?;
        String::from_utf8(bytes).map_err(|_| {
            credentials_error(format!(
                "credentials Secret {namespace}/{}: key {key:?} is not UTF-8 text",
                secret_ref.name
            ))
        })
    };
    let credentials = Credentials::new(value("username")?, value("password")?);
    let options = ClientOptions {
        disable_certificate_verification: bmc.disable_certificate_verification,
        ..options.clone()
    };
    RedfishClient::new(address, credentials, options).map_err(redfish)
}

/// Where a claim's config drive is served: its URL, and the token in it (a credential).
pub(crate) struct ConfigDrive {
    pub url: String,
    pub token: String,
}

/// Attaches the installer image as virtual CD and the config drive (when there is one) as second medium, makes
/// the next boot come from the CD, and powers the host on. Each step does nothing when it is already done, so a
/// boot cut short is finished by calling this again.
pub(crate) async fn boot_from_image(
    redfish: &RedfishClient,
    host: &BareMetalHost,
    image_url: &str,
    config_drive: Option<&ConfigDrive>,
) -> Result<()> {
    let wrap = |source| Error::Redfish {
        host: host_key(host),
        source,
    };
    redfish.insert_media(image_url).await.map_err(wrap)?;
    if let Some(drive) = config_drive {
        redfish
            .insert_config_drive(&drive.url, &drive.token)
            .await
            .map_err(wrap)?;
    }
    redfish.boot_once_from_cd().await.map_err(wrap)?;
    redfish.set_power(ResetType::On).await.map_err(wrap)?;
    Ok(())
}

/// How long an unanswered power-off is left alone before it is asked for again.
const RELEASE_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a release stands after one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReleaseStep {
    /// Power-off and eject were asked for in this step.
    pub requested: bool,
    /// The BMC reports the host off and was asked to empty its virtual media: the host can be freed.
    pub done: bool,
    /// The power state the BMC reported last.
    pub power_state: Option<String>,
}

/// One step of releasing a host: asks for power-off and eject unless that was asked for recently (some BMCs,
/// sushy among them, restart a pending power change when asked again), then reads whether the host is off.
pub(crate) async fn release_step(
    redfish: &RedfishClient,
    host: &BareMetalHost,
) -> Result<ReleaseStep> {
    let wrap = |source| Error::Redfish {
        host: host_key(host),
        source,
    };
    let last_ask = host
        .status
        .as_ref()
        .and_then(|s| s.provisioning.as_ref())
        .and_then(|p| p.release_requested_at.as_ref())
        .map(|t| t.0);
    let due = last_ask
        .is_none_or(|at| crate::hosts::now().duration_since(at).unsigned_abs() >= RELEASE_RETRY);
    if due {
        redfish.set_power(ResetType::ForceOff).await.map_err(wrap)?;
        redfish.eject_media().await.map_err(wrap)?;
    }
    let system = redfish.system().await.map_err(wrap)?;
    let off = system.power_state.as_deref() == Some("Off");
    if off && !due {
        // Cheap when empty; covers an eject that failed after the power-off went through.
        redfish.eject_media().await.map_err(wrap)?;
    }
    Ok(ReleaseStep {
        requested: due,
        done: off,
        power_state: system.power_state,
    })
}
