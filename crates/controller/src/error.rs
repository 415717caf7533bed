use slipway_provider::ProviderError;

/// Why a reconcile failed. Each variant is countable by [`Error::metric_label`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("provider {provider}: {source}")]
    Provider {
        provider: String,
        #[source]
        source: ProviderError,
    },

    #[error(
        "spec.infrastructure names the provider {name:?}, which this manager does not run (it runs {registered:?}): \
         start the manager with --enable-provider {name}, or use one of those"
    )]
    UnknownProvider {
        name: String,
        registered: Vec<&'static str>,
    },

    #[error("bootstrap: {0}")]
    Bootstrap(#[from] slipway_bootstrap::Error),

    /// The reconcile ran past its deadline and was cut short; the next attempt starts over (each step is
    /// idempotent), after the usual error backoff.
    #[error(
        "the reconcile did not finish within {seconds}s and was stopped; a URL, BMC or API it waited on is too slow"
    )]
    Deadline { seconds: u64 },

    /// Reading or writing an add-on inventory failed.
    #[error("add-ons: {0}")]
    Addons(#[from] slipway_addons::Error),

    /// The workload cluster's apiserver refused some of a bundle's objects (named, with why).
    #[error("refused: {0}")]
    AddonsRefused(String),

    /// No client could be made for the workload cluster (its kubeconfig Secret was refused or unreadable).
    #[error("the API of cluster {cluster}: {source}")]
    Workload {
        cluster: String,
        #[source]
        source: crate::workload::Error,
    },

    /// The workload cluster's API could not be used for a step that needs it.
    #[error("the API of cluster {cluster}: {message}")]
    WorkloadApi { cluster: String, message: String },
}

impl Error {
    /// Whether the management apiserver gave no answer at all (connection refused or cut), as opposed to an answer
    /// that refused the request. Nothing about the object is wrong then, and it should be retried soon after the
    /// apiserver is back.
    pub fn is_apiserver_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Kube(kube::Error::Service(_) | kube::Error::HyperError(_))
        )
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Provider { source, .. } => source.metric_label(),
            Self::UnknownProvider { .. } => "unknown_provider",
            Self::Bootstrap(e) => e.metric_label(),
            Self::Deadline { .. } => "deadline",
            Self::Workload { source, .. } => source.metric_label(),
            Self::WorkloadApi { .. } => "workload_api",
            Self::Addons(e) => e.metric_label(),
            Self::AddonsRefused(_) => "addon_refused",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_apiserver_that_does_not_answer_is_unreachable() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(Error::Kube(kube::Error::Service(Box::new(refused))).is_apiserver_unreachable());
        let forbidden = kube::core::Status::failure("forbidden", "Forbidden").with_code(403);
        assert!(!Error::Kube(kube::Error::Api(Box::new(forbidden))).is_apiserver_unreachable());
        assert!(!Error::Deadline { seconds: 300 }.is_apiserver_unreachable());
    }
}
