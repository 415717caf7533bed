//! A small Redfish client: just what booting a host from an image takes.
//!
//! It reads a ComputerSystem (power, vendor), resets it (`On`, `ForceOff`), sets a one-time boot override to the
//! virtual CD, and inserts and ejects virtual media. Everything past the service root is found by following
//! `@odata.id` links and action `target`s from the System the host's address names, because BMC vendors lay out
//! their trees differently (virtual media hangs off the System on some, off the Manager on others).
//!
//! Requests carry HTTP basic auth, verify TLS certificates unless the host says not to, time out, and are retried
//! with capped exponential backoff (backon) on connection errors, timeouts, 429 and 5xx answers. An action the
//! BMC answers with `202 Accepted` is followed through its task monitor (`Location`) until it ends.
//!
//! The BMC is not trusted further than its own origin: every link it names (`@odata.id`, action targets, task
//! monitors in `Location`) and every redirect must stay within the scheme, host and port of `spec.bmc.address`,
//! or the call fails before anything (credentials included) is sent there. The BMC's address itself must be
//! allowed by the manager's egress policy (`slipway manager --allow-egress`), answers are read up to
//! [`ClientOptions::max_body_bytes`], and requests are never sent through an HTTP proxy.
//!
//! Passwords never reach a log, an error or a `Debug` print: [`Credentials`] redacts itself.

use std::fmt;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
use slipway_egress::{BodyError, ClientSettings, EgressError, EgressPolicy, HttpClient};

/// How much of an error answer is read for its message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// A BMC's System, parsed from a BareMetalHost's `spec.bmc.address`
/// (`redfish+https://10.0.0.5:443/redfish/v1/Systems/1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcAddress {
    /// Scheme, host and port: `https://10.0.0.5:443/`.
    origin: Url,
    /// Path of the ComputerSystem: `/redfish/v1/Systems/1`.
    system_path: String,
}

impl BmcAddress {
    pub fn parse(address: &str) -> Result<Self, RedfishError> {
        let invalid = |reason: &str| RedfishError::InvalidAddress {
            address: without_userinfo(address),
            reason: reason.to_string(),
        };
        let rest = address.strip_prefix("redfish+").ok_or_else(|| {
            invalid("must start with redfish+https:// (or redfish+http://), e.g. redfish+https://10.0.0.5/redfish/v1/Systems/1")
        })?;
        let url = Url::parse(rest).map_err(|e| invalid(&format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(invalid(
                "must start with redfish+https:// (or redfish+http://)",
            ));
        }
        if url.host_str().is_none() {
            return Err(invalid("names no host"));
        }
        // A password in the address would end up in logs and status; it belongs in the credentials Secret.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "must not contain a user or password; put them in the Secret named by spec.bmc.credentialsSecretRef",
            ));
        }
        let system_path = url.path().trim_end_matches('/').to_string();
        if !system_path.starts_with("/redfish/v1/") {
            return Err(invalid(
                "must name a Redfish System, e.g. redfish+https://10.0.0.5/redfish/v1/Systems/1",
            ));
        }
        let mut origin = url;
        origin.set_path("/");
        origin.set_query(None);
        origin.set_fragment(None);
        Ok(Self {
            origin,
            system_path,
        })
    }

    /// `https://host:port/`.
    pub fn origin(&self) -> &Url {
        &self.origin
    }

    /// `/redfish/v1/Systems/<id>`.
    pub fn system_path(&self) -> &str {
        &self.system_path
    }
}

impl fmt::Display for BmcAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = self.origin.as_str().trim_end_matches('/');
        write!(f, "redfish+{origin}{}", self.system_path)
    }
}

/// A BMC account. `Debug` shows the user name only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How patient the client is, and what it may reach.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientOptions {
    /// Accept any certificate (`spec.bmc.disableCertificateVerification`).
    pub disable_certificate_verification: bool,
    /// Whole-request deadline, per attempt. BMCs are slow, and InsertMedia may download the image first.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    /// How long a task started by a `202 Accepted` may run, and how often its monitor is polled. Shorter than
    /// a reconcile's deadline, so that a task that never ends is reported as such.
    pub task_timeout: Duration,
    pub task_poll_interval: Duration,
    /// Which BMC addresses may be connected to (`slipway manager --allow-egress`). BMCs usually live on a
    /// private management network, which the default policy refuses: the operator allows it explicitly.
    pub egress: EgressPolicy,
    /// Answers longer than this are refused; Redfish resources are a few KiB.
    pub max_body_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            disable_certificate_verification: false,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            task_timeout: Duration::from_secs(240),
            task_poll_interval: Duration::from_secs(2),
            egress: EgressPolicy::default(),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// Backoff for retryable failures within one call.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub max_retries: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            max_retries: 4,
        }
    }
}

/// Why a Redfish call failed. Messages name the BMC and say what to fix; they never contain the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedfishError {
    #[error("BMC address {address:?} {reason}")]
    InvalidAddress { address: String, reason: String },

    #[error(
        "BMC at {url} is unreachable ({detail}); check spec.bmc.address and that the BMC is on the network"
    )]
    Unreachable { url: String, detail: String },

    #[error(
        "BMC at {url} presented a certificate that is not trusted ({detail}); give the BMC a certificate from a trusted CA, or set spec.bmc.disableCertificateVerification: true"
    )]
    UntrustedCertificate { url: String, detail: String },

    #[error(
        "BMC at {url} refused the credentials (HTTP {status}); check username and password in the Secret named by spec.bmc.credentialsSecretRef"
    )]
    Unauthorized { url: String, status: u16 },

    #[error("BMC {method} {url} answered HTTP {status}: {message}")]
    Http {
        method: String,
        url: String,
        status: u16,
        message: String,
    },

    #[error("BMC at {url}: {source}")]
    AddressNotAllowed {
        url: String,
        #[source]
        source: EgressError,
    },

    #[error(
        "BMC at {bmc} named a link or redirect to {link}, outside its own scheme, host and port; it was not followed and no credentials were sent there"
    )]
    LinkLeavesOrigin { bmc: String, link: String },

    #[error("BMC {url} answered with more than {limit} bytes; refused")]
    ResponseTooLarge { url: String, limit: usize },

    #[error("BMC at {url}: {detail}")]
    Unexpected { url: String, detail: String },

    #[error("BMC task {url} ended {state}: {message}")]
    TaskFailed {
        url: String,
        state: String,
        message: String,
    },
}

impl RedfishError {
    /// The error with every occurrence of `secret` (a token the BMC may echo back in a message) replaced, so it
    /// can go into a host's status.
    pub fn redacted(self, secret: &str) -> Self {
        let clean = |s: String| s.replace(secret, "<redacted>");
        match self {
            Self::InvalidAddress { address, reason } => Self::InvalidAddress {
                address: clean(address),
                reason: clean(reason),
            },
            Self::Unreachable { url, detail } => Self::Unreachable {
                url: clean(url),
                detail: clean(detail),
            },
            Self::UntrustedCertificate { url, detail } => Self::UntrustedCertificate {
                url: clean(url),
                detail: clean(detail),
            },
            Self::Unauthorized { url, status } => Self::Unauthorized {
                url: clean(url),
                status,
            },
            Self::Http {
                method,
                url,
                status,
                message,
            } => Self::Http {
                method,
                url: clean(url),
                status,
                message: clean(message),
            },
            Self::AddressNotAllowed { url, source } => Self::AddressNotAllowed {
                url: clean(url),
                source,
            },
            Self::LinkLeavesOrigin { bmc, link } => Self::LinkLeavesOrigin {
                bmc: clean(bmc),
                link: clean(link),
            },
            Self::ResponseTooLarge { url, limit } => Self::ResponseTooLarge {
                url: clean(url),
                limit,
            },
            Self::Unexpected { url, detail } => Self::Unexpected {
                url: clean(url),
                detail: clean(detail),
            },
            Self::TaskFailed {
                url,
                state,
                message,
            } => Self::TaskFailed {
                url: clean(url),
                state,
                message: clean(message),
            },
        }
    }

    /// Whether trying again soon can succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Http { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// A CamelCase reason for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidAddress { .. } => "InvalidBMCAddress",
            Self::Unreachable { .. } => "BMCUnreachable",
            Self::UntrustedCertificate { .. } => "BMCCertificateUntrusted",
            Self::Unauthorized { .. } => "BMCCredentialsRefused",
            Self::Http { .. } => "BMCRequestFailed",
            Self::AddressNotAllowed { .. } => "BMCAddressNotAllowed",
            Self::LinkLeavesOrigin { .. } => "BMCLinkLeavesOrigin",
            Self::ResponseTooLarge { .. } => "BMCResponseTooLarge",
            Self::Unexpected { .. } => "BMCUnexpectedResponse",
            Self::TaskFailed { .. } => "BMCTaskFailed",
        }
    }
}

/// A power action of `ComputerSystem.Reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetType {
    On,
    ForceOff,
}

impl ResetType {
    fn as_str(self) -> &'static str {
        match self {
            Self::On => "On",
            Self::ForceOff => "ForceOff",
        }
    }
}

/// What a ComputerSystem says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The System's own `@odata.id`, where boot settings are PATCHed.
    pub odata_id: String,
    pub power_state: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial_number: Option<String>,
    /// `Actions.#ComputerSystem.Reset.target`.
    reset_target: Option<String>,
    /// `VirtualMedia.@odata.id`, when the System carries virtual media itself.
    virtual_media: Option<String>,
    /// `Links.ManagedBy[*].@odata.id`: where virtual media lives on BMCs that hang it off the Manager.
    managers: Vec<String>,
}

impl SystemInfo {
    fn from_json(url: &str, v: &Value) -> Result<Self, RedfishError> {
        let text = |v: &Value| v.as_str().map(str::to_string);
        let odata_id = text(&v["@odata.id"]).ok_or_else(|| RedfishError::Unexpected {
            url: url.to_string(),
            detail: "the ComputerSystem has no @odata.id; is spec.bmc.address a Redfish System?"
                .into(),
        })?;
        Ok(Self {
            odata_id,
            power_state: text(&v["PowerState"]),
            manufacturer: text(&v["Manufacturer"]).filter(|s| !s.is_empty()),
            model: text(&v["Model"]).filter(|s| !s.is_empty()),
            serial_number: text(&v["SerialNumber"]).filter(|s| !s.is_empty()),
            reset_target: text(&v["Actions"]["#ComputerSystem.Reset"]["target"]),
            virtual_media: text(&v["VirtualMedia"]["@odata.id"]),
            managers: v["Links"]["ManagedBy"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| text(&m["@odata.id"]))
                .collect(),
        })
    }

    /// A System that only reports its power state, for unit tests of what is made of it.
    #[cfg(test)]
    pub(crate) fn with_power(power_state: &str) -> Self {
        Self {
            odata_id: "/redfish/v1/Systems/1".into(),
            power_state: Some(power_state.into()),
            manufacturer: Some("Acme".into()),
            model: None,
            serial_number: None,
            reset_target: None,
            virtual_media: None,
            managers: Vec::new(),
        }
    }

    /// Whether the System is on or on its way there.
    pub fn is_on(&self) -> bool {
        matches!(self.power_state.as_deref(), Some("On" | "PoweringOn"))
    }

    /// Whether the System is off or on its way there.
    pub fn is_off(&self) -> bool {
        matches!(self.power_state.as_deref(), Some("Off" | "PoweringOff"))
    }
}

/// A virtual media device of the BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualMedia {
    pub odata_id: String,
    /// What it takes: `CD`, `DVD`, `USBStick`, `Floppy`, ...
    pub media_types: Vec<String>,
    pub inserted: bool,
    /// The image URL, `None` when empty.
    pub image: Option<String>,
    insert_target: String,
    eject_target: String,
}

impl VirtualMedia {
    fn from_json(v: &Value) -> Option<Self> {
        let media_types = v["MediaTypes"]
            .as_array()?
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        let odata_id = v["@odata.id"].as_str()?.to_string();
        let action = |name: &str, fallback: &str| {
            v["Actions"][name]["target"]
                .as_str()
                .map(str::to_string)
                // Older BMCs omit the action list; the targets are then at the standard place.
                .unwrap_or_else(|| format!("{}/Actions/{fallback}", odata_id.trim_end_matches('/')))
        };
        Some(Self {
            media_types,
            inserted: v["Inserted"].as_bool().unwrap_or(false),
            image: v["Image"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            insert_target: action("#VirtualMedia.InsertMedia", "VirtualMedia.InsertMedia"),
            eject_target: action("#VirtualMedia.EjectMedia", "VirtualMedia.EjectMedia"),
            odata_id,
        })
    }

    fn takes(&self, types: &[&str]) -> bool {
        self.media_types.iter().any(|t| types.contains(&t.as_str()))
    }

    fn is_empty(&self) -> bool {
        !self.inserted && self.image.is_none()
    }
}

/// The media types a CD device offers.
const CD_TYPES: &[&str] = &["CD", "DVD"];
/// The media types a config drive may go into: a removable disk, or a second CD drive.
const CONFIG_DRIVE_TYPES: &[&str] = &["USBStick", "Floppy", "CD", "DVD"];

/// The device that boots the installer image: the first that takes CDs.
fn pick_cd(devices: &[VirtualMedia]) -> Option<&VirtualMedia> {
    devices.iter().find(|d| d.takes(CD_TYPES))
}

/// The device the config drive goes into: the first one, other than the installer's CD, that takes a removable
/// disk or a CD.
fn pick_config_drive(devices: &[VirtualMedia]) -> Option<&VirtualMedia> {
    let cd = pick_cd(devices)?;
    devices
        .iter()
        .find(|d| d.odata_id != cd.odata_id && d.takes(CONFIG_DRIVE_TYPES))
}

/// A session with one BMC System. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedfishClient {
    http: HttpClient,
    address: BmcAddress,
    credentials: Credentials,
    options: ClientOptions,
}

impl RedfishClient {
    pub fn new(
        address: BmcAddress,
        credentials: Credentials,
        options: ClientOptions,
    ) -> Result<Self, RedfishError> {
        let settings = ClientSettings {
            connect_timeout: options.connect_timeout,
            timeout: options.timeout,
            accept_invalid_certificates: options.disable_certificate_verification,
        };
        let http = HttpClient::new(options.egress.clone(), &settings).map_err(|e| {
            RedfishError::Unexpected {
                url: address.origin.to_string(),
                detail: format!(
                    "cannot build an HTTP client: {}",
                    slipway_egress::error_chain(&e)
                ),
            }
        })?;
        Ok(Self {
            http,
            address,
            credentials,
            options,
        })
    }

    pub fn address(&self) -> &BmcAddress {
        &self.address
    }

    /// The service root, `/redfish/v1/`: the one path Redfish fixes, and the one that needs no login. Answering
    /// it shows that the address is a Redfish service before credentials come into question.
    pub async fn service_root(&self) -> Result<Value, RedfishError> {
        let response = self.call(Method::GET, "/redfish/v1/", None, false).await?;
        self.json(response).await
    }

    /// The host's ComputerSystem.
    pub async fn system(&self) -> Result<SystemInfo, RedfishError> {
        let path = self.address.system_path.clone();
        let value = self.get(&path).await?;
        SystemInfo::from_json(&self.url_text(&path), &value)
    }

    /// Asks for power on or off, unless the System already is (or is getting) there. Power changes take
    /// effect later on many BMCs: read the System again to see them land.
    pub async fn set_power(&self, reset: ResetType) -> Result<(), RedfishError> {
        let system = self.system().await?;
        let done = match reset {
            ResetType::On => system.is_on(),
            ResetType::ForceOff => system.is_off(),
        };
        if done {
            return Ok(());
        }
        let target = system
            .reset_target
            .clone()
            .ok_or_else(|| RedfishError::Unexpected {
                url: self.url_text(&system.odata_id),
                detail: "the System offers no #ComputerSystem.Reset action".into(),
            })?;
        tracing::info!(bmc = %self.address, reset = reset.as_str(), "resetting system");
        self.act(
            Method::POST,
            &target,
            &json!({ "ResetType": reset.as_str() }),
        )
        .await
    }

    /// Boots from the virtual CD on the next boot only, then from the disk the image installed to.
    pub async fn boot_once_from_cd(&self) -> Result<(), RedfishError> {
        let system = self.system().await?;
        self.act(
            Method::PATCH,
            &system.odata_id,
            &json!({
                "Boot": {
                    "BootSourceOverrideTarget": "Cd",
                    "BootSourceOverrideEnabled": "Once",
                }
            }),
        )
        .await
    }

    /// Every virtual media device, found through the System's (or its Manager's) `VirtualMedia` collection.
    pub async fn virtual_media(&self) -> Result<Vec<VirtualMedia>, RedfishError> {
        let system = self.system().await?;
        let mut collections: Vec<String> = system.virtual_media.iter().cloned().collect();
        if collections.is_empty() {
            for manager in &system.managers {
                let value = self.get(manager).await?;
                if let Some(link) = value["VirtualMedia"]["@odata.id"].as_str() {
                    collections.push(link.to_string());
                }
            }
        }
        let mut devices = Vec::new();
        for collection in &collections {
            let value = self.get(collection).await?;
            for member in value["Members"].as_array().into_iter().flatten() {
                let Some(link) = member["@odata.id"].as_str() else {
                    continue;
                };
                devices.extend(VirtualMedia::from_json(&self.get(link).await?));
            }
        }
        Ok(devices)
    }

    /// The virtual media device that takes CDs: the installer image goes there.
    pub async fn virtual_cd(&self) -> Result<VirtualMedia, RedfishError> {
        let devices = self.virtual_media().await?;
        pick_cd(&devices)
            .cloned()
            .ok_or_else(|| RedfishError::Unexpected {
                url: self.url_text(&self.address.system_path),
                detail: "found no virtual media device that takes CD or DVD images".into(),
            })
    }

    /// The second virtual media device, for the config drive: `None` when the BMC has only the CD.
    pub async fn config_drive_media(&self) -> Result<Option<VirtualMedia>, RedfishError> {
        let devices = self.virtual_media().await?;
        Ok(pick_config_drive(&devices).cloned())
    }

    /// Attaches `image_url` as the virtual CD; the BMC downloads it from there. Does nothing when that image is
    /// already inserted, and ejects another one first.
    pub async fn insert_media(&self, image_url: &str) -> Result<(), RedfishError> {
        let cd = self.virtual_cd().await?;
        tracing::info!(bmc = %self.address, image = image_url, "inserting virtual media");
        self.insert_into(&cd, image_url).await
    }

    /// Attaches the config drive at `url` as the second virtual medium. The URL holds `token`, a credential: it is
    /// never logged, and taken out of the errors (a BMC may quote the URL it failed to fetch).
    pub async fn insert_config_drive(&self, url: &str, token: &str) -> Result<(), RedfishError> {
        self.insert_config_drive_unredacted(url)
            .await
            .map_err(|e| e.redacted(token))
    }

    async fn insert_config_drive_unredacted(&self, url: &str) -> Result<(), RedfishError> {
        let device = self
            .config_drive_media()
            .await?
            .ok_or_else(|| RedfishError::Unexpected {
                url: self.url_text(&self.address.system_path),
                detail: "the BMC offers one virtual media device, which the installer image takes; the config drive needs a second one (a removable disk or another CD)".into(),
            })?;
        tracing::info!(bmc = %self.address, device = %device.odata_id, "inserting the config drive");
        self.insert_into(&device, url).await
    }

    async fn insert_into(
        &self,
        device: &VirtualMedia,
        image_url: &str,
    ) -> Result<(), RedfishError> {
        if device.inserted && device.image.as_deref() == Some(image_url) {
            return Ok(());
        }
        if device.inserted {
            self.act(Method::POST, &device.eject_target, &json!({}))
                .await?;
        }
        self.act(
            Method::POST,
            &device.insert_target,
            &json!({ "Image": image_url, "Inserted": true, "WriteProtected": true }),
        )
        .await
    }

    /// Ejects whatever the virtual CD and the config drive device hold; nothing to do when they are empty.
    pub async fn eject_media(&self) -> Result<(), RedfishError> {
        let devices = self.virtual_media().await?;
        let cd = pick_cd(&devices).ok_or_else(|| RedfishError::Unexpected {
            url: self.url_text(&self.address.system_path),
            detail: "found no virtual media device that takes CD or DVD images".into(),
        })?;
        for device in [Some(cd), pick_config_drive(&devices)]
            .into_iter()
            .flatten()
        {
            if device.is_empty() {
                continue;
            }
            tracing::info!(bmc = %self.address, device = %device.odata_id, "ejecting virtual media");
            self.act(Method::POST, &device.eject_target, &json!({}))
                .await?;
        }
        Ok(())
    }

    /// GETs a resource by its `@odata.id`.
    pub async fn get(&self, target: &str) -> Result<Value, RedfishError> {
        let response = self.call(Method::GET, target, None, true).await?;
        self.json(response).await
    }

    /// Sends an action or a PATCH, and follows the task monitor when the BMC answers `202 Accepted`.
    async fn act(&self, method: Method, target: &str, body: &Value) -> Result<(), RedfishError> {
        let response = self.call(method, target, Some(body), true).await?;
        if response.status() != StatusCode::ACCEPTED {
            return Ok(());
        }
        let monitor = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let monitor = match monitor {
            Some(location) => location,
            // Some BMCs name the task in the body instead of a Location header.
            None => match self.json(response).await?["@odata.id"].as_str() {
                Some(task) => task.to_string(),
                // Accepted with nothing to follow: the BMC will do it; nothing to wait on.
                None => return Ok(()),
            },
        };
        self.wait_for_task(&monitor).await
    }

    /// Polls a task monitor until the task ends: `202` means still running; then either the action's own
    /// answer or a Task whose `TaskState` says how it ended.
    async fn wait_for_task(&self, monitor: &str) -> Result<(), RedfishError> {
        let deadline = Instant::now() + self.options.task_timeout;
        let url = self.url_text(monitor);
        loop {
            let response = self.call(Method::GET, monitor, None, true).await?;
            if response.status() != StatusCode::ACCEPTED {
                // The action's own answer may be empty or not JSON; an oversized one is refused all the same.
                let task = match self.json(response).await {
                    Ok(task) => task,
                    Err(too_large @ RedfishError::ResponseTooLarge { .. }) => {
                        return Err(too_large);
                    }
                    Err(_) => Value::Null,
                };
                let state = task["TaskState"].as_str();
                let message = task["Messages"][0]["Message"]
                    .as_str()
                    .unwrap_or("no message")
                    .to_string();
                match state {
                    None | Some("Completed") => {
                        if matches!(task["TaskStatus"].as_str(), Some("Critical")) {
                            return Err(RedfishError::TaskFailed {
                                url,
                                state: "Completed with status Critical".into(),
                                message,
                            });
                        }
                        return Ok(());
                    }
                    Some(
                        ended
                        @ ("Exception" | "Killed" | "Cancelled" | "Interrupted" | "Suspended"),
                    ) => {
                        return Err(RedfishError::TaskFailed {
                            url,
                            state: ended.into(),
                            message,
                        });
                    }
                    Some(_) => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(RedfishError::TaskFailed {
                    url,
                    state: "still running".into(),
                    message: format!(
                        "gave up waiting after {}s",
                        self.options.task_timeout.as_secs()
                    ),
                });
            }
            tokio::time::sleep(self.options.task_poll_interval).await;
        }
    }

    /// One request, retried on what retrying can fix. Returns only 2xx answers. `target` is a path or a link the
    /// BMC gave; one that leaves the BMC's origin is refused before anything is sent.
    async fn call(
        &self,
        method: Method,
        target: &str,
        body: Option<&Value>,
        authenticate: bool,
    ) -> Result<reqwest::Response, RedfishError> {
        let url = self
            .address
            .origin
            .join(target)
            .map_err(|e| RedfishError::Unexpected {
                url: origin_text(&self.address.origin),
                detail: format!("named a link that is not a path or URL ({e})"),
            })?;
        if url.origin() != self.address.origin.origin() {
            return Err(RedfishError::LinkLeavesOrigin {
                bmc: origin_text(&self.address.origin),
                link: origin_text(&url),
            });
        }
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.options.retry.min_delay)
            .with_max_delay(self.options.retry.max_delay)
            .with_max_times(self.options.retry.max_retries)
            .with_jitter();
        let (method, url) = (&method, &url);
        let attempt = move || async move {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .map_err(|source| RedfishError::AddressNotAllowed {
                    url: origin_text(url),
                    source,
                })?
                .header(reqwest::header::ACCEPT, "application/json");
            if authenticate {
                request = request
                    .basic_auth(&self.credentials.username, Some(&self.credentials.password));
            }
            if let Some(body) = body {
                // By hand rather than reqwest's `json` feature, so this crate builds the same reqwest as the
                // rest of the workspace.
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            let response = request
                .send()
                .await
                .map_err(|e| classify_send_error(url, &e))?;
            let status = response.status();
            tracing::debug!(%method, %url, status = status.as_u16(), "redfish");
            if status.is_success() {
                return Ok(response);
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(RedfishError::Unauthorized {
                    url: origin_text(url),
                    status: status.as_u16(),
                });
            }
            let limit = ERROR_BODY_LIMIT.min(self.options.max_body_bytes);
            let text = slipway_egress::read_body(response, limit)
                .await
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default();
            Err(RedfishError::Http {
                method: method.to_string(),
                url: url.to_string(),
                status: status.as_u16(),
                message: redfish_message(&text),
            })
        };
        attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(RedfishError::is_retryable)
            .notify(|e: &RedfishError, after: Duration| {
                tracing::debug!(error = %e, retry_in_ms = after.as_millis() as u64, "retrying Redfish call");
            })
            .await
    }

    async fn json(&self, response: reqwest::Response) -> Result<Value, RedfishError> {
        let url = response.url().clone();
        let limit = self.options.max_body_bytes;
        let bytes = slipway_egress::read_body(response, limit)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge(_) => RedfishError::ResponseTooLarge {
                    url: url.to_string(),
                    limit,
                },
                BodyError::Read(e) => classify_send_error(&url, &e),
            })?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| RedfishError::Unexpected {
            url: url.to_string(),
            detail: format!("answer is not JSON: {e}"),
        })
    }

    fn url_text(&self, target: &str) -> String {
        self.address
            .origin
            .join(target)
            .map(|u| u.to_string())
            .unwrap_or_else(|_| target.to_string())
    }
}

/// The address with any `user:password@` replaced, so that an address someone wrongly wrote a password into is
/// not repeated in messages.
fn without_userinfo(address: &str) -> String {
    let Some((scheme, rest)) = address.split_once("://") else {
        return address.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
        None => address.to_string(),
    }
}

/// `https://host:port`, for messages about the BMC as a whole.
fn origin_text(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// Tells a refusal of the egress policy and an untrusted certificate (a person must act) from a network failure
/// (retry).
fn classify_send_error(url: &Url, error: &reqwest::Error) -> RedfishError {
    match slipway_egress::refusal(error) {
        Some(EgressError::RedirectLeavesOrigin { from, to }) => {
            return RedfishError::LinkLeavesOrigin {
                bmc: from.clone(),
                link: to.clone(),
            };
        }
        Some(refused @ EgressError::AddressRefused { .. }) => {
            return RedfishError::AddressNotAllowed {
                url: origin_text(url),
                source: refused.clone(),
            };
        }
        Some(other) => {
            return RedfishError::Unexpected {
                url: origin_text(url),
                detail: other.to_string(),
            };
        }
        None => {}
    }
    let detail = slipway_egress::error_chain(error);
    let lower = detail.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        return RedfishError::UntrustedCertificate {
            url: origin_text(url),
            detail,
        };
    }
    if error.is_connect() || error.is_timeout() || error.is_request() || error.is_body() {
        return RedfishError::Unreachable {
            url: origin_text(url),
            detail,
        };
    }
    RedfishError::Unexpected {
        url: url.to_string(),
        detail,
    }
}

/// The message of a Redfish error body (`error.message`, or the first extended info), else the text itself,
/// cut short.
fn redfish_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v["error"]["@Message.ExtendedInfo"][0]["Message"]
            .as_str()
            .or_else(|| v["error"]["message"].as_str())
            .map(str::to_string)
    });
    let text = message.unwrap_or_else(|| body.trim().to_string());
    if text.chars().count() > 300 {
        format!("{}…", text.chars().take(300).collect::<String>())
    } else if text.is_empty() {
        "no message".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redfish_addresses() {
        let address =
            BmcAddress::parse("redfish+https://10.0.0.5:8443/redfish/v1/Systems/1/").unwrap();
        assert_eq!(address.origin().as_str(), "https://10.0.0.5:8443/");
        assert_eq!(address.system_path(), "/redfish/v1/Systems/1");
        assert_eq!(
            address.to_string(),
            "redfish+https://10.0.0.5:8443/redfish/v1/Systems/1"
        );
        let plain = BmcAddress::parse("redfish+http://bmc.example/redfish/v1/Systems/abc").unwrap();
        assert_eq!(plain.origin().as_str(), "http://bmc.example/");
    }

    #[test]
    fn refuses_addresses_that_are_not_redfish_systems() {
        for bad in [
            "ipmi://10.0.0.5",
            "https://10.0.0.5/redfish/v1/Systems/1",
            "redfish+ftp://10.0.0.5/redfish/v1/Systems/1",
            "redfish+https://10.0.0.5/",
            "redfish+https://admin:pw@10.0.0.5/redfish/v1/Systems/1",
        ] {
            let error = BmcAddress::parse(bad).unwrap_err();
            assert!(
                matches!(error, RedfishError::InvalidAddress { .. }),
                "{bad}"
            );
            assert!(!error.to_string().contains("pw@"), "{error}");
        }
    }

    #[test]
    fn credentials_never_print_the_password() {
        let credentials = Credentials::new("admin", "hunter2");
        let printed = format!("{credentials:?}");
        assert!(
            printed.contains("admin") && !printed.contains("hunter2"),
            "{printed}"
        );
    }

    #[test]
    fn finds_the_cd_among_virtual_media() {
        let floppy = json!({ "@odata.id": "/v/Floppy", "MediaTypes": ["Floppy", "USBStick"] });
        let floppy = VirtualMedia::from_json(&floppy).unwrap();
        assert!(floppy.is_empty());
        assert_eq!(pick_cd(std::slice::from_ref(&floppy)), None);
        let cd = json!({
            "@odata.id": "/v/Cd", "MediaTypes": ["CD", "DVD"], "Inserted": true, "Image": "http://x/i.iso",
            "Actions": { "#VirtualMedia.InsertMedia": { "target": "/v/Cd/insert" } },
        });
        let cd = VirtualMedia::from_json(&cd).unwrap();
        assert!(cd.inserted);
        assert_eq!(cd.image.as_deref(), Some("http://x/i.iso"));
        assert_eq!(cd.insert_target, "/v/Cd/insert");
        assert_eq!(cd.eject_target, "/v/Cd/Actions/VirtualMedia.EjectMedia");
        // The CD takes the installer, the removable disk the config drive, in whatever order the BMC lists them.
        let devices = vec![floppy.clone(), cd.clone()];
        assert_eq!(pick_cd(&devices), Some(&cd));
        assert_eq!(pick_config_drive(&devices), Some(&floppy));
        // A BMC with one CD has no room for the config drive; one with two CDs uses the second.
        assert_eq!(pick_config_drive(std::slice::from_ref(&cd)), None);
        let second_cd = VirtualMedia {
            odata_id: "/v/Cd2".into(),
            ..cd.clone()
        };
        assert_eq!(
            pick_config_drive(&[cd.clone(), second_cd.clone()]),
            Some(&second_cd)
        );
    }

    #[test]
    fn a_token_the_bmc_quotes_is_taken_out_of_its_error() {
        let token = "0123abcd".repeat(8);
        let error = RedfishError::Http {
            method: "POST".into(),
            url: "https://bmc/redfish/v1/Managers/1/VirtualMedia/Floppy/Actions/VirtualMedia.InsertMedia".into(),
            status: 400,
            message: format!("cannot fetch https://slipway:8443/config-drive/ns/h/{token}/cidata.iso"),
        };
        let text = error.redacted(&token).to_string();
        assert!(!text.contains(&token), "{text}");
        assert!(
            text.contains("config-drive/ns/h/<redacted>/cidata.iso"),
            "{text}"
        );
    }

    #[test]
    fn reads_redfish_error_messages() {
        let body = r#"{"error":{"code":"Base.1.0.GeneralError","message":"Incorrect username or password"}}"#;
        assert_eq!(redfish_message(body), "Incorrect username or password");
        assert_eq!(redfish_message(""), "no message");
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let http = |status| RedfishError::Http {
            method: "GET".into(),
            url: "u".into(),
            status,
            message: "m".into(),
        };
        assert!(http(503).is_retryable());
        assert!(http(429).is_retryable());
        assert!(!http(400).is_retryable());
        assert!(
            !RedfishError::Unauthorized {
                url: "u".into(),
                status: 401
            }
            .is_retryable()
        );
    }
}
