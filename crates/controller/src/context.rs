use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::Store;
use slipway_api::{AddonBundle, Cluster, MachinePool};
use slipway_provider::{InfrastructureProvider, KeyedCache};

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
            .ok_or_else(|| Error::UnknownProvider {
                name: name.to_string(),
                registered: self.names(),
            })
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
    /// Every Cluster: one watch, shared by the three controllers (the cluster controller's own cache).
    pub clusters: Store<Cluster>,
    /// Every MachinePool: one watch, shared by the pool and cluster controllers.
    pub pools: Store<MachinePool>,
    /// Names and annotations of the clusters' Secrets (no data), to know what exists without reading it.
    pub secrets: Store<PartialObjectMeta<Secret>>,
    /// Every AddonBundle: one watch, shared by the bundle and cluster controllers.
    pub bundles: Store<AddonBundle>,
    /// True once `clusters` has listed every Cluster ([`Context::clusters_listed`] waits for it).
    pub clusters_synced: tokio::sync::watch::Receiver<bool>,
    /// True once `bundles` has listed every AddonBundle ([`Context::bundles_listed`] waits for it).
    pub bundles_synced: tokio::sync::watch::Receiver<bool>,
    /// Downloads `url` add-on sources, within the manager's egress policy.
    pub http: slipway_egress::HttpClient,
    /// Clients for workload clusters, by Cluster UID, with the resourceVersion of the kubeconfig Secret each was
    /// made from.
    pub workload_clients: KeyedCache<String, (String, Client)>,
    /// The workload clusters' Nodes, one watch per cluster whose workload API answers.
    pub nodes: crate::nodes::NodeWatches,
    /// How often `Reconcile`-mode bundles are re-applied to repair drift.
    pub addon_resync: std::time::Duration,
    /// How often a ready pool lists its machines again.
    pub machine_resync: std::time::Duration,
    /// How long one reconcile may run before it is stopped as failed.
    pub reconcile_deadline: std::time::Duration,
    /// Where kubeadm machines install their node software from.
    pub node_packages: slipway_bootstrap::node_packages::PackageRepository,
    /// Status writes the shared cache does not show yet, so a pass woken before it does not write them again.
    pub(crate) status_in_flight: crate::status::InFlight,
    /// Consecutive failures per object, for the error backoff.
    pub(crate) failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// The provider `cluster.spec.infrastructure` names. Every controller asks here, and every caller records the
    /// error the same way: `ProviderNotRegistered` on the object, retried slowly (a person must start the manager
    /// with that provider, or change the cluster).
    pub fn provider_for(&self, cluster: &Cluster) -> Result<Arc<dyn InfrastructureProvider>> {
        let name = cluster
            .spec
            .infrastructure
            .provider_name()
            .unwrap_or_default();
        self.providers.get(name).cloned()
    }

    /// The Cluster `name` in `namespace` from the shared cache; when the cache does not hold it (a Cluster created
    /// a moment ago, or none), from the apiserver.
    pub async fn cluster(&self, namespace: &str, name: &str) -> Result<Option<Arc<Cluster>>> {
        if let Some(cluster) = self.clusters.get(&ObjectRef::new(name).within(namespace)) {
            return Ok(Some(cluster));
        }
        let api: kube::Api<Cluster> = kube::Api::namespaced(self.client.clone(), namespace);
        Ok(api.get_opt(name).await?.map(Arc::new))
    }

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
