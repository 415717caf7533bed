//! `AddonBundle`: a set of manifests applied to every selected cluster, in order, and kept applied.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of the bundle: which clusters get it, in what order, from where, and how it is kept applied.
// The derive generates the `AddonBundle` resource type around it, with `metadata` and `status`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "slipway.dev",
    version = "v1alpha1",
    kind = "AddonBundle",
    namespaced,
    status = "AddonBundleStatus",
    derive = "PartialEq",
    shortname = "swab",
    category = "slipway",
    doc = "Manifests that Slipway applies, in order, to every selected workload cluster and keeps applied.",
    printcolumn(name = "Order", type_ = "integer", json_path = ".spec.order"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    // The name is a label value on the bundle's inventories and part of its field manager in workload clusters.
    validation = Rule::new(
        "self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')"
    )
    .message(
        "metadata.name: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AddonBundleSpec {
    /// Which Clusters in this namespace get the bundle, by their labels. Empty: every Cluster.
    #[serde(default)]
    #[schemars(schema_with = "crate::limits::label_selector")]
    pub cluster_selector: LabelSelector,

    /// Bundles with a lower order are applied, and must be ready, before those with a higher one; e.g.
    /// CNI 10, cert-manager 20, external-dns 30.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub order: i32,

    /// Where the manifests come from: exactly one of `inline`, `configMapRef`, `url`.
    pub source: AddonSource,

    /// `Reconcile` corrects drift in the workload cluster; `ApplyOnce` applies once and then leaves the
    /// objects to their new owners.
    #[serde(default)]
    pub mode: AddonMode,

    /// Substitutions made in the manifests: `${NAME}` becomes the value of `NAME`. Slipway also provides
    /// `CLUSTER_NAME`, `DNS_DOMAIN`, `POD_CIDR` and `SERVICE_CIDR` from the target Cluster. At most 64, names of
    /// at most 128 and values of at most 4096 characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::limits::addon_values")]
    pub values: BTreeMap<String, String>,
}

/// Where a bundle's manifests come from. A union: exactly one member is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.inline) ? 1 : 0) + (has(self.configMapRef) ? 1 : 0) + (has(self.url) ? 1 : 0) == 1"
).message("spec.source: set exactly one of inline, configMapRef, url"))]
pub struct AddonSource {
    /// Multi-document YAML, written in the bundle itself: at most 1 MiB (1048576 characters); larger manifests
    /// belong behind `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::limits::MAX_INLINE_MANIFESTS))]
    pub inline: Option<String>,

    /// A key of a ConfigMap in this namespace holding multi-document YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyRef>,

    /// Multi-document YAML downloaded from a URL and checked against its SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<UrlSource>,
}

/// A key of a ConfigMap in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(
        "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')"
    ).message("spec.source.configMapRef.name: must be the name of a ConfigMap in this namespace (lowercase letters, digits, '-' and '.')"))]
    pub name: String,
    /// Key in the ConfigMap's `data`.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')")
        .message("spec.source.configMapRef.key: must be a ConfigMap key (letters, digits, '-', '_' and '.'), e.g. manifests.yaml"))]
    pub key: String,
}

/// Manifests at a URL, pinned by digest.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct UrlSource {
    /// An http:// or https:// URL.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']")
        .message("spec.source.url.url: must be an http:// or https:// URL"))]
    pub url: String,
    /// Hex SHA-256 of the document; a download with another digest is refused.
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[a-f0-9]{64}$')")
        .message("spec.source.url.sha256: must be 64 lowercase hex digits (sha256sum of the file)"))]
    pub sha256: String,
}

/// What happens after a bundle's objects have been applied once.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AddonMode {
    /// Re-apply whenever the bundle or the objects change, correcting drift and pruning what the bundle
    /// dropped.
    #[default]
    Reconcile,
    /// Apply once per bundle generation, then leave the objects alone.
    ApplyOnce,
}

/// What the controller observed about a bundle, per target cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AddonBundleStatus {
    /// One entry per selected cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["cluster".into()]))]
    pub clusters: Vec<AddonClusterStatus>,
}

/// The bundle on one cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddonClusterStatus {
    /// Name of the Cluster.
    pub cluster: String,
    /// Revision of the bundle's content last applied to it (a digest of the rendered manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Whether every applied object is ready.
    #[serde(default)]
    pub ready: bool,
    /// What is missing, why applying failed, or what pruning left in place for now and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The bundle's `metadata.generation` last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
