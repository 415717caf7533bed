//! The crate's one error type.

use std::fmt;

use crate::object_ref::ObjectRef;
use crate::readiness::NotReady;

/// Why rendering, fetching, parsing, applying, waiting or pruning failed. Each variant is countable by
/// [`Error::metric_label`]. Messages never carry a value from `values` or a URL's credentials or query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "render: unknown variable(s) {} (known: {})",
        names(unknown),
        names(known)
    )]
    UnknownVariables {
        unknown: Vec<String>,
        known: Vec<String>,
    },

    #[error("render: line {line}: {problem}")]
    Template { line: usize, problem: String },

    /// A bound on the work one bundle may cause was reached: render size, objects, YAML depth or aliases.
    #[error("limit exceeded: {what}: {seen}, more than the limit of {limit}")]
    Limit {
        what: String,
        seen: usize,
        limit: usize,
    },

    #[error("YAML: {}{message}", at(*document, *line))]
    Yaml {
        document: Option<usize>,
        line: Option<usize>,
        message: String,
    },

    #[error("manifest: {}{problem}", at(Some(*document), *line))]
    Manifest {
        document: usize,
        line: Option<usize>,
        problem: String,
    },

    #[error("source: {0}")]
    Source(String),

    #[error("source: ConfigMap {namespace}/{name} not found")]
    ConfigMapNotFound { namespace: String, name: String },

    #[error("source: ConfigMap {namespace}/{name} has no key {key:?} in data")]
    ConfigMapKeyMissing {
        namespace: String,
        name: String,
        key: String,
    },

    #[error("source: download {url}: {message}")]
    Download { url: String, message: String },

    /// The manager's egress policy refused the URL, a redirect, or an address its host resolves to: nothing
    /// was fetched, so the message holds no status, size or digest of an answer.
    #[error("source: {url}: {source}")]
    EgressRefused {
        url: String,
        #[source]
        source: slipway_egress::EgressError,
    },

    #[error(
        "source: {url}: sha256 mismatch: expected {expected}, got {got}; refusing the download"
    )]
    DigestMismatch {
        url: String,
        expected: String,
        got: String,
    },

    #[error("kubernetes API: {context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },

    #[error(
        "CustomResourceDefinitions not Established after {seconds}s: {}",
        names(crds)
    )]
    CrdsNotEstablished { crds: Vec<String>, seconds: u64 },

    #[error("{} object(s) failed to apply: {}", .0.len(), failures(.0))]
    ApplyFailed(Vec<ObjectFailure>),

    #[error("not ready after {seconds}s: {}", not_ready(objects))]
    NotReady {
        objects: Vec<NotReady>,
        seconds: u64,
    },

    #[error("workload API not answering after {seconds}s: {last}")]
    ApiUnreachable { seconds: u64, last: String },

    #[error("inventory {namespace}/{name}: {problem}")]
    Inventory {
        namespace: String,
        name: String,
        problem: String,
    },
}

/// One object the apiserver refused, with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectFailure {
    pub object: ObjectRef,
    pub message: String,
}

impl fmt::Display for ObjectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::UnknownVariables { .. } => "unknown_variable",
            Self::Template { .. } => "template",
            Self::Limit { .. } => "limit",
            Self::Yaml { .. } => "yaml",
            Self::Manifest { .. } => "manifest",
            Self::Source(_) => "source",
            Self::ConfigMapNotFound { .. } | Self::ConfigMapKeyMissing { .. } => "config_map",
            Self::Download { .. } => "download",
            Self::EgressRefused { .. } => "egress_refused",
            Self::DigestMismatch { .. } => "digest_mismatch",
            Self::Kube { .. } => "kube",
            Self::CrdsNotEstablished { .. } => "crd_not_established",
            Self::ApplyFailed(_) => "apply",
            Self::NotReady { .. } => "not_ready",
            Self::ApiUnreachable { .. } => "api_unreachable",
            Self::Inventory { .. } => "inventory",
        }
    }

    pub(crate) fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn names(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

fn at(document: Option<usize>, line: Option<usize>) -> String {
    match (document, line) {
        (Some(document), Some(line)) => format!("document {document} (line {line}): "),
        (Some(document), None) => format!("document {document}: "),
        (None, Some(line)) => format!("line {line}: "),
        (None, None) => String::new(),
    }
}

fn failures(failures: &[ObjectFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn not_ready(objects: &[NotReady]) -> String {
    objects
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
