/// A provider's failure, classified by what the controller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying with backoff: throttling, timeouts, 5xx, an injected fault.
    #[error("{message}")]
    Transient { reason: String, message: String },

    /// Waiting will not help until a person changes something: bad credentials, an unknown image, a malformed
    /// setting. The controller reports it in a condition and retries slowly.
    #[error("{message}")]
    Permanent { reason: String, message: String },

    /// Not enough capacity right now (no free host, quota): the controller reports it and checks again later;
    /// not an error loop.
    #[error("{message}")]
    Capacity { reason: String, message: String },
}

impl ProviderError {
    pub fn transient(reason: &str, message: impl Into<String>) -> Self {
        Self::Transient {
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn permanent(reason: &str, message: impl Into<String>) -> Self {
        Self::Permanent {
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn capacity(reason: &str, message: impl Into<String>) -> Self {
        Self::Capacity {
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// Whether retrying soon can succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient { .. } | Self::Capacity { .. })
    }

    /// The CamelCase reason for a condition (`Throttled`, `InvalidCredentials`, `NoHostAvailable`, …).
    pub fn reason(&self) -> &str {
        match self {
            Self::Transient { reason, .. }
            | Self::Permanent { reason, .. }
            | Self::Capacity { reason, .. } => reason,
        }
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Transient { .. } => "transient",
            Self::Permanent { .. } => "permanent",
            Self::Capacity { .. } => "capacity",
        }
    }
}

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;
