use std::path::PathBuf;

/// Everything that can stop a test control plane from coming up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{binary} not found in {dir}: the control-plane binaries are not built.\n  \
         Run `hack/build-k8s.sh` (builds them into {dir}), or point SLIPWAY_K8S_BIN at a directory that has \
         etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok."
    )]
    BinaryMissing { binary: &'static str, dir: PathBuf },

    /// The previous minor's control plane, for upgrade tests, is not built.
    #[error(
        "{binary} not found in {dir}: the previous minor's control-plane binaries (Kubernetes {version}) are not \
         built.\n  Run `hack/build-k8s.sh` (builds them into {dir})."
    )]
    PreviousMinorMissing {
        binary: &'static str,
        version: &'static str,
        dir: PathBuf,
    },

    /// etcd's own API (used to compact its history) refused or failed a request.
    #[error("etcd {operation}: {message}")]
    Etcd {
        operation: &'static str,
        message: String,
    },

    #[error("could not start {name}: {source}")]
    Spawn {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{name} exited during start-up ({status}); last lines of {log}:\n{tail}")]
    ExitedEarly {
        name: &'static str,
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error("{what} was not ready after {seconds}s; last lines of {log}:\n{tail}")]
    NotReady {
        what: String,
        seconds: u64,
        log: PathBuf,
        tail: String,
    },

    #[error("could not generate certificates: {0}")]
    Certificates(#[from] rcgen::Error),

    #[error("file system: {0}")]
    Io(#[from] std::io::Error),

    #[error("kubeconfig: {0}")]
    Kubeconfig(String),

    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
