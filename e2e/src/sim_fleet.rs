//! The fleet both scale drivers make: N sim Clusters at zero delay (control plane 1), each with one MachinePool of
//! 3, named `bench-0000`, `bench-0001`, ... and `<cluster>-workers`. `bench-scale` creates them for the manager;
//! `bench-floor` creates the same objects and then does the manager's unavoidable writes itself.

use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::json;
use slipway_api::{Cluster, MachinePool};

pub const KUBERNETES_VERSION: &str = "v1.37.2";
pub const CONTROL_PLANE_REPLICAS: u32 = 1;
pub const WORKERS_PER_POOL: u32 = 3;

/// `bench-00`, `bench-01`, ... zero-padded to the width of `n`, so the names sort in creation order.
pub fn cluster_names(n: usize) -> Vec<String> {
    let width = n.to_string().len();
    (0..n).map(|i| format!("bench-{i:0width$}")).collect()
}

pub fn pool_name(cluster: &str) -> String {
    format!("{cluster}-workers")
}

/// A sim Cluster at zero delay with its pool, as in `config/samples/sim-cluster.yaml` without the delays. Untyped
/// objects: the apiserver gets exactly what a user's YAML would say, with the CRD's defaults applied by the
/// apiserver rather than by our Rust types.
pub fn sim_cluster(name: &str) -> (DynamicObject, DynamicObject) {
    let cluster = json!({
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": { "name": name },
        "spec": {
            "kubernetes": { "version": KUBERNETES_VERSION },
            "controlPlane": { "replicas": CONTROL_PLANE_REPLICAS },
            "infrastructure": { "sim": {} },
        },
    });
    let pool = json!({
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": "MachinePool",
        "metadata": { "name": pool_name(name) },
        "spec": { "clusterName": name, "replicas": WORKERS_PER_POOL },
    });
    (
        serde_json::from_value(cluster).expect("a fixed Cluster is a valid object"),
        serde_json::from_value(pool).expect("a fixed MachinePool is a valid object"),
    )
}

pub fn clusters_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::erase::<Cluster>(&()),
    )
}

pub fn pools_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::erase::<MachinePool>(&()),
    )
}

/// Sends one Cluster and one MachinePool as server-side dry runs and says how long that took. A fresh apiserver
/// spends about 2 s on the first create of a Cluster (it builds the CRD's validation, CEL rules included, on first
/// use); that is a one-off of the apiserver, not of what is measured, so the drivers do it before the clock starts.
pub async fn warm_up(client: &Client, namespace: &str) -> Result<Duration, kube::Error> {
    let started = Instant::now();
    let (cluster, pool) = sim_cluster("bench-warm-up");
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    clusters_api(client, namespace)
        .create(&dry_run, &cluster)
        .await?;
    pools_api(client, namespace).create(&dry_run, &pool).await?;
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_creation_order() {
        assert_eq!(cluster_names(3), ["bench-0", "bench-1", "bench-2"]);
        let names = cluster_names(1000);
        assert_eq!(names.len(), 1000);
        assert_eq!(names.first().unwrap(), "bench-0000");
        assert_eq!(names.last().unwrap(), "bench-0999");
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
    }

    #[test]
    fn the_pool_belongs_to_its_cluster() {
        let (cluster, pool) = sim_cluster("bench-7");
        assert_eq!(cluster.metadata.name.as_deref(), Some("bench-7"));
        assert_eq!(pool.metadata.name.as_deref(), Some("bench-7-workers"));
        assert_eq!(pool.data["spec"]["clusterName"], "bench-7");
        assert_eq!(pool.data["spec"]["replicas"], WORKERS_PER_POOL);
        assert!(cluster.data["spec"]["infrastructure"]["sim"].is_object());
    }
}
