//! The crate's one error type.

use slipway_provider::ProviderError;

use crate::redfish::RedfishError;

/// Why working with a host failed. Messages name the host or Secret and say what to fix; never a secret value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The BMC failed or refused.
    #[error("BareMetalHost {host}: {source}")]
    Redfish {
        host: String,
        #[source]
        source: RedfishError,
    },

    /// The host's credentials Secret is missing or incomplete: a person must fix it.
    #[error("BareMetalHost {host}: {message}")]
    Credentials { host: String, message: String },

    /// Talking to the BMC took longer than the host controller's reconcile deadline and was stopped.
    #[error(
        "BareMetalHost {host}: the BMC did not finish within {seconds}s and was left alone; it is tried again later"
    )]
    Deadline { host: String, seconds: u64 },

    /// A claimed host's user data Secret is gone, so the host is not powered on: it would boot without its
    /// cloud-init.
    #[error(
        "BareMetalHost {host}: user data Secret {secret} named by the claim (status.provisioning.userDataSecretRef) does not exist, so the host is not powered on; release it (scale the machine's pool down) and claim it again to write fresh user data"
    )]
    UserDataMissing { host: String, secret: String },

    /// A claim's user data Secret was written before config drives existed, so it holds no token to serve it with.
    #[error(
        "BareMetalHost {host}: user data Secret {secret} has no config-drive-token (it was written by an older Slipway), so the host is not booted; release it (scale the machine's pool down) and claim it again"
    )]
    ConfigDriveToken { host: String, secret: String },

    /// The management cluster's apiserver failed a request.
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    pub(crate) fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source,
        }
    }

    /// Whether retrying soon can succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Redfish { source, .. } => source.is_retryable(),
            Self::Credentials { .. }
            | Self::UserDataMissing { .. }
            | Self::ConfigDriveToken { .. } => false,
            Self::Deadline { .. } | Self::Kube { .. } => true,
        }
    }

    /// CamelCase reason for conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Redfish { source, .. } => source.reason(),
            Self::Credentials { .. } => "BMCCredentialsInvalid",
            Self::Deadline { .. } => "BMCTooSlow",
            Self::UserDataMissing { .. } => "UserDataMissing",
            Self::ConfigDriveToken { .. } => "ConfigDriveTokenMissing",
            Self::Kube { .. } => "KubernetesAPIError",
        }
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Redfish { .. } => "redfish",
            Self::Credentials { .. } => "credentials",
            Self::Deadline { .. } => "deadline",
            Self::UserDataMissing { .. } | Self::ConfigDriveToken { .. } => "user_data",
            Self::Kube { .. } => "kube",
        }
    }

    /// Whether the apiserver refused a write because the object changed since it was read.
    pub(crate) fn is_conflict(&self) -> bool {
        matches!(self, Self::Kube { source: kube::Error::Api(status), .. } if status.code == 409)
    }
}

impl From<Error> for ProviderError {
    fn from(error: Error) -> Self {
        let reason = error.reason();
        if error.is_retryable() {
            ProviderError::transient(reason, error.to_string())
        } else {
            ProviderError::permanent(reason, error.to_string())
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
