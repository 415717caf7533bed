use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use slipway_api::{AddonBundle, Cluster, MachinePool};
use slipway_provider::InfrastructureProvider;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The providers a manager can use, by the name of their `spec.infrastructure` member.
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    providers: BTreeMap<&'static str, Arc<dyn InfrastructureProvider>>,
}

impl ProviderRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(mut self, provider: Arc<dyn InfrastructureProvider>) -> Self {
        self.providers.insert(provider.name(), provider);
        self
    }

    pub fn get(&self, name: &str) -> Result<&Arc<dyn InfrastructureProvider>> {
        self.providers
            .get(name)
            .ok_or_else(|| Error::UnknownProvider(name.to_string()))
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.providers.keys().copied().collect()
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub providers: ProviderRegistry,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Every Cluster, read by the bundle reconciler and the bundle controller's triggers.
    pub clusters: Store<Cluster>,
    /// The MachinePool controller's cache, read by the cluster reconciler.
    pub pools: Store<MachinePool>,
    /// Names and annotations of the clusters' Secrets (no data), to know what exists without reading it.
    pub secrets: Store<PartialObjectMeta<Secret>>,
    /// Every AddonBundle, read by the cluster reconciler for `AddonsReady` and the triggers between the two.
    pub bundles: Store<AddonBundle>,
    /// True once `clusters` has listed every Cluster ([`Context::clusters_listed`] waits for it).
    pub clusters_synced: tokio::sync::watch::Receiver<bool>,
    /// True once `bundles` has listed every AddonBundle ([`Context::bundles_listed`] waits for it).
    pub bundles_synced: tokio::sync::watch::Receiver<bool>,
    /// Downloads `url` add-on sources, within the manager's egress policy.
    pub http: slipway_egress::HttpClient,
    /// Clients for workload clusters, by Cluster UID, with the resourceVersion of the kubeconfig Secret each was
    /// made from.
    pub workload_clients: Mutex<HashMap<String, (String, Client)>>,
    /// How often `Reconcile`-mode bundles are re-applied to repair drift.
    pub addon_resync: std::time::Duration,
    /// How long one reconcile may run before it is stopped as failed.
    pub reconcile_deadline: std::time::Duration,
    /// Consecutive failures per object, for the error backoff.
    pub(crate) failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// Returns once the Cluster cache has listed every Cluster: before that it is empty, and a bundle would find no
    /// cluster to apply to.
    pub async fn clusters_listed(&self) {
        let _ = self
            .clusters_synced
            .clone()
            .wait_for(|synced| *synced)
            .await;
    }

    /// Returns once the AddonBundle cache has listed every bundle: before that it is empty, and a cluster would
    /// count as selected by none.
    pub async fn bundles_listed(&self) {
        let _ = self.bundles_synced.clone().wait_for(|synced| *synced).await;
    }
}
