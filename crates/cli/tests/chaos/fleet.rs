//! The clusters a campaign asks for, and what it asked of each: which provider, how many control-plane machines,
//! every worker count the pool was ever given, and whether the cluster was deleted. The invariants are judged
//! against this record, never against what the manager reports.

use std::collections::BTreeMap;
use std::fmt;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use slipway_api::{Cluster, MachinePool};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Provider {
    Sim,
    Local,
    Metal,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Sim => "sim",
            Provider::Local => "local",
            Provider::Metal => "baremetal",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Live,
    /// Deletion asked; the Cluster object may still be there.
    Deleted,
}

/// One cluster of the campaign.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub provider: Provider,
    pub namespace: String,
    pub name: String,
    /// Known once the Cluster was created.
    pub uid: String,
    pub control_plane: u32,
    /// Every `spec.replicas` the pool was given, oldest first.
    pub workers_asked: Vec<u32>,
    pub life: Life,
    /// Local clusters: the control plane's process ids, once seen converged; a later check finds the same ones.
    pub adopted_pids: Option<BTreeMap<String, u32>>,
    /// Local clusters: the UIDs of the pool's Nodes by name, as last seen converged. A Node made again has a
    /// new UID.
    pub node_uids: BTreeMap<String, String>,
}

impl Tracked {
    pub fn pool(&self) -> String {
        pool_name(&self.name)
    }

    pub fn workers(&self) -> u32 {
        *self.workers_asked.last().expect("a pool has a first size")
    }

    /// The most machines a correct controller can ever have created for the pool: its first size, plus every
    /// increase after. Creating only while short of `replicas` and deleting only above it, a controller cannot
    /// create more, however the changes and the kills interleave.
    pub fn worker_creation_bound(&self) -> u32 {
        self.workers_asked
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .sum::<u32>()
            + self.workers_asked[0]
    }

    /// Whether the pool ever shrank: only then may a machine name be used a second time (names are the lowest
    /// free index, so a scale-up after a scale-down reuses them).
    pub fn pool_shrank(&self) -> bool {
        self.workers_asked.windows(2).any(|w| w[1] < w[0])
    }

    pub fn label(&self) -> String {
        format!("{} {}/{}", self.provider, self.namespace, self.name)
    }
}

pub fn pool_name(cluster: &str) -> String {
    format!("{cluster}-workers")
}

/// The machine group a machine name belongs to: names are `<prefix>-<template hash>-<index>`, with the prefix
/// `<cluster>-control-plane` or the pool's name.
pub fn group_of(machine: &str) -> Option<&str> {
    let mut parts = machine.rsplitn(3, '-');
    let _index = parts.next()?;
    let _hash = parts.next()?;
    parts.next()
}

/// How a cluster of each provider is written. Sim clusters take their delays from the campaign's dice.
pub fn manifest(cluster: &Tracked, settings: &str) -> String {
    let name = &cluster.name;
    let (distribution, infrastructure) = match cluster.provider {
        Provider::Sim => ("kubeadm", format!("sim: {settings}")),
        Provider::Local => ("kubeadm", "local: {}".to_string()),
        Provider::Metal => ("k3s", settings.to_string()),
    };
    format!(
        r#"apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata:
  name: {name}
spec:
  kubernetes:
    version: v1.37.2
    distribution: {distribution}
  controlPlane:
    replicas: {control_plane}
  infrastructure:
    {infrastructure}
---
apiVersion: slipway.dev/v1alpha1
kind: MachinePool
metadata:
  name: {pool}
spec:
  clusterName: {name}
  replicas: {workers}
"#,
        control_plane = cluster.control_plane,
        pool = cluster.pool(),
        workers = cluster.workers(),
    )
}

/// Bare-metal settings: hosts labelled `rack: r1` (the test support's hosts), the loopback image server, and a
/// control-plane endpoint nothing connects to (bare metal has no load balancer to hand one out).
pub fn metal_settings(image_url: &str) -> String {
    format!(
        "baremetal:\n      hostSelector:\n        matchLabels:\n          rack: r1\n      imageUrl: {image_url}\n      controlPlaneEndpoint:\n        host: 127.0.0.1\n        port: 1"
    )
}

/// Creates the Cluster and its pool by server-side apply, and learns the Cluster's UID.
pub async fn create(client: &Client, cluster: &mut Tracked, settings: &str) -> Result<(), String> {
    let yaml = manifest(cluster, settings);
    let params = PatchParams::apply("slipway-chaos").force();
    for document in serde_saphyr::from_multiple::<serde_json::Value>(&yaml)
        .map_err(|e| format!("manifest of {}: {e}", cluster.name))?
    {
        let name = document["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let applied = match document["kind"].as_str() {
            Some("Cluster") => Api::<Cluster>::namespaced(client.clone(), &cluster.namespace)
                .patch(&name, &params, &Patch::Apply(&document))
                .await
                .map(|c| cluster.uid = c.uid().unwrap_or_default()),
            _ => Api::<MachinePool>::namespaced(client.clone(), &cluster.namespace)
                .patch(&name, &params, &Patch::Apply(&document))
                .await
                .map(|_| ()),
        };
        applied.map_err(|e| format!("applying {name}: {e}"))?;
    }
    Ok(())
}

/// Sets the pool's `spec.replicas` and records it.
pub async fn scale(client: &Client, cluster: &mut Tracked, replicas: u32) -> Result<(), String> {
    Api::<MachinePool>::namespaced(client.clone(), &cluster.namespace)
        .patch(
            &cluster.pool(),
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "spec": { "replicas": replicas } })),
        )
        .await
        .map_err(|e| format!("scaling {}: {e}", cluster.pool()))?;
    cluster.workers_asked.push(replicas);
    Ok(())
}

/// Deletes the Cluster, as a user would: its pools, machines and Secrets are the manager's to remove.
pub async fn delete(client: &Client, cluster: &mut Tracked) -> Result<(), String> {
    match Api::<Cluster>::namespaced(client.clone(), &cluster.namespace)
        .delete(&cluster.name, &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => return Err(format!("deleting {}: {e}", cluster.name)),
    }
    cluster.life = Life::Deleted;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(asked: &[u32]) -> Tracked {
        Tracked {
            provider: Provider::Sim,
            namespace: "ns".into(),
            name: "s1".into(),
            uid: String::new(),
            control_plane: 1,
            workers_asked: asked.to_vec(),
            life: Life::Live,
            adopted_pids: None,
            node_uids: BTreeMap::new(),
        }
    }

    #[test]
    fn the_creation_bound_is_the_first_size_plus_every_increase() {
        assert_eq!(tracked(&[3]).worker_creation_bound(), 3);
        assert_eq!(tracked(&[3, 1, 4]).worker_creation_bound(), 6);
        assert_eq!(tracked(&[0, 2, 2, 5, 0]).worker_creation_bound(), 5);
        assert!(!tracked(&[1, 3]).pool_shrank());
        assert!(tracked(&[3, 1]).pool_shrank());
    }

    #[test]
    fn a_machine_name_tells_its_group() {
        assert_eq!(
            group_of("s1-control-plane-abc1234-0"),
            Some("s1-control-plane")
        );
        assert_eq!(group_of("s1-workers-abc1234-12"), Some("s1-workers"));
        assert_eq!(group_of("nohash"), None);
    }
}
