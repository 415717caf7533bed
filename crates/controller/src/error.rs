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

    #[error("no provider named {0:?} is registered in this manager")]
    UnknownProvider(String),

    #[error("bootstrap: {0}")]
    Bootstrap(#[from] slipway_bootstrap::Error),

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
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Provider { source, .. } => source.metric_label(),
            Self::UnknownProvider(_) => "unknown_provider",
            Self::Bootstrap(e) => e.metric_label(),
            Self::Workload { source, .. } => source.metric_label(),
            Self::WorkloadApi { .. } => "workload_api",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
