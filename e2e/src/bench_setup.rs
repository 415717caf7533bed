//! What every benchmark driver does before and while it measures, whichever manager it measures: a client from the
//! kubeconfig the script wrote, a namespace free of earlier clusters, and kube-apiserver's own request counters.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};

use crate::apiserver_requests::RequestCounts;
use crate::prometheus_text::{self, ParseError};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("reading the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: KubeconfigError,
    },
    #[error("building a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("creating namespace {namespace}: {source}")]
    Namespace {
        namespace: String,
        source: kube::Error,
    },
    #[error("listing {what} in namespace {namespace} (are the CRDs installed?): {source}")]
    ListClusters {
        what: String,
        namespace: String,
        source: kube::Error,
    },
    #[error(
        "namespace {namespace} already holds {what}: their work would be counted; use a fresh apiserver or another namespace"
    )]
    NotEmpty { what: String, namespace: String },
    #[error("GET /metrics from kube-apiserver: {0}")]
    Scrape(#[source] kube::Error),
    #[error("reading kube-apiserver's /metrics: {0}")]
    Metrics(#[source] ParseError),
}

/// A client for the apiserver the kubeconfig points at.
pub async fn client_for(kubeconfig: &Path) -> Result<Client, SetupError> {
    let kubeconfig_error = |source| SetupError::Kubeconfig {
        path: kubeconfig.to_path_buf(),
        source,
    };
    let file = Kubeconfig::read_from(kubeconfig).map_err(kubeconfig_error)?;
    let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(kubeconfig_error)?;
    Client::try_from(config).map_err(SetupError::Client)
}

/// Creates the namespace if needed, and refuses one that already holds objects of `clusters`.
pub async fn prepare_namespace(
    client: &Client,
    namespace: &str,
    clusters: &ApiResource,
) -> Result<(), SetupError> {
    let object = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &object)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        Err(source) => {
            return Err(SetupError::Namespace {
                namespace: namespace.to_string(),
                source,
            });
        }
    }
    let what = format!("{} {}s", clusters.api_version, clusters.kind);
    let existing = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, clusters)
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map_err(|source| SetupError::ListClusters {
            what: what.clone(),
            namespace: namespace.to_string(),
            source,
        })?;
    if !existing.items.is_empty() {
        return Err(SetupError::NotEmpty {
            what,
            namespace: namespace.to_string(),
        });
    }
    Ok(())
}

/// kube-apiserver's own request counters, every client's requests included.
pub async fn scrape_apiserver(client: &Client) -> Result<RequestCounts, SetupError> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("a GET of a fixed path is a valid request");
    let text = client
        .request_text(request)
        .await
        .map_err(SetupError::Scrape)?;
    let samples = prometheus_text::parse(&text).map_err(SetupError::Metrics)?;
    Ok(RequestCounts::from_samples(&samples))
}
