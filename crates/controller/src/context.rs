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
    /// The Cluster controller's cache, read by the pool reconciler.
    pub clusters: Store<Cluster>,
    /// The MachinePool controller's cache, read by the cluster reconciler.
    pub pools: Store<MachinePool>,
    /// Names and annotations of the clusters' Secrets (no data), to know what exists without reading it.
    pub secrets: Store<PartialObjectMeta<Secret>>,
    /// The AddonBundle controller's cache, read by the cluster reconciler for `AddonsReady`.
    pub bundles: Store<AddonBundle>,
    /// Downloads `url` add-on sources.
    pub http: reqwest::Client,
    /// Clients for workload clusters, by Cluster UID, with the resourceVersion of the kubeconfig Secret each was
    /// made from.
    pub workload_clients: Mutex<HashMap<String, (String, Client)>>,
    /// How often `Reconcile`-mode bundles are re-applied to repair drift.
    pub addon_resync: std::time::Duration,
    /// Consecutive failures per object, for the error backoff.
    pub(crate) failures: Mutex<HashMap<String, u32>>,
}
