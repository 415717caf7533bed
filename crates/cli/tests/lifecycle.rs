//! A sim cluster's life against a real apiserver, with the manager's controllers running in-process.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use slipway_api::conditions::{self, CLUSTER_CONDITION_TYPES};
use slipway_api::{Cluster, ClusterPhase, MachinePool};
use support::{apply, env, eventually, manager, sim_cluster, wait_ready};

const TIMEOUT: Duration = Duration::from_secs(60);

fn machines_of(
    sim: &slipway_provider_sim::SimProvider,
    namespace: &str,
    name: &str,
) -> Vec<String> {
    sim.snapshot()
        .clusters
        .iter()
        .filter(|(key, _)| key.starts_with(&format!("{namespace}/{name}/")))
        .flat_map(|(_, c)| c.machines.keys().cloned())
        .collect()
}

async fn pool_ready_replicas(
    pools: &Api<MachinePool>,
    name: &str,
    want: i32,
) -> Result<MachinePool, String> {
    let pool = pools.get(name).await.map_err(|e| e.to_string())?;
    let status = pool.status.clone().unwrap_or_default();
    let ready = conditions::is_true(&status.conditions, "Ready");
    if ready
        && status.ready_replicas == want
        && status.replicas == want
        && pool.spec.replicas == want
    {
        Ok(pool)
    } else {
        Err(format!(
            "spec {} status {}/{} ready={ready}",
            pool.spec.replicas, status.ready_replicas, status.replicas
        ))
    }
}

#[tokio::test]
async fn sim_cluster_becomes_ready_with_every_condition_true() {
    let env = env().await;
    let sim = manager(env);
    let ns = env.create_namespace("ready").await;
    let client = env.client().await;
    apply(&client, &ns, &sim_cluster("alpha", 1, 3, "{}")).await;

    let cluster = wait_ready(&client, &ns, "alpha", TIMEOUT).await;
    let cluster_uid = cluster.metadata.uid.clone().unwrap();
    let status = cluster.status.clone().unwrap();
    let kubeconfig_ref = status.kubeconfig_secret_ref.clone().map(|r| r.name);
    for type_ in CLUSTER_CONDITION_TYPES {
        let condition = conditions::find(&status.conditions, type_)
            .unwrap_or_else(|| panic!("{type_} missing"));
        assert_eq!(condition.status, "True", "{type_}: {condition:?}");
        assert!(
            !condition.reason.is_empty() && condition.reason.chars().next().unwrap().is_uppercase()
        );
        assert_eq!(condition.observed_generation, cluster.metadata.generation);
    }
    assert_eq!(status.phase, Some(ClusterPhase::Provisioned));
    assert_eq!(status.provider.as_deref(), Some("sim"));
    assert_eq!(status.observed_generation, cluster.metadata.generation);
    assert!(
        cluster
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"slipway.dev/cluster".to_string())
    );

    let pool = Api::<MachinePool>::namespaced(client.clone(), &ns)
        .get("alpha-workers")
        .await
        .unwrap();
    let owner = &pool.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Cluster", "alpha")
    );
    let pool_status = pool.status.unwrap();
    assert_eq!(
        (
            pool_status.replicas,
            pool_status.ready_replicas,
            pool_status.updated_replicas
        ),
        (3, 3, 3)
    );
    assert_eq!(pool_status.machines.len(), 3);
    assert!(pool_status.machines.iter().all(|m| {
        m.provider_id
            .as_deref()
            .unwrap()
            .starts_with(&format!("sim://{ns}/alpha/alpha-workers-"))
    }));

    let machines = machines_of(sim, &ns, "alpha");
    assert_eq!(
        machines.len(),
        4,
        "1 control plane + 3 workers: {machines:?}"
    );
    assert_eq!(
        machines
            .iter()
            .filter(|m| m.starts_with("alpha-control-plane-"))
            .count(),
        1
    );

    // Cluster API's Secrets: the PKI and the admin kubeconfig, labelled and owned by the Cluster.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for suffix in ["ca", "etcd", "proxy", "sa", "kubeconfig"] {
        let secret = secrets
            .get(&format!("alpha-{suffix}"))
            .await
            .unwrap_or_else(|e| panic!("alpha-{suffix}: {e}"));
        assert_eq!(secret.type_.as_deref(), Some("cluster.x-k8s.io/secret"));
        assert_eq!(secret.labels()["cluster.x-k8s.io/cluster-name"], "alpha");
        assert_eq!(secret.owner_references()[0].uid, cluster_uid);
    }
    assert_eq!(kubeconfig_ref.as_deref(), Some("alpha-kubeconfig"));
    let kubeconfig = secrets
        .get("alpha-kubeconfig")
        .await
        .unwrap()
        .data
        .unwrap()
        .remove("value")
        .unwrap();
    let kubeconfig: serde_json::Value =
        serde_saphyr::from_str(std::str::from_utf8(&kubeconfig.0).unwrap()).unwrap();
    assert_eq!(
        kubeconfig["clusters"][0]["cluster"]["server"],
        format!("https://alpha.{ns}.sim.invalid:6443")
    );
}

#[tokio::test]
async fn scaling_a_pool_converges_through_spec_and_scale_subresource() {
    let env = env().await;
    let sim = manager(env);
    let ns = env.create_namespace("scale").await;
    let client = env.client().await;
    apply(&client, &ns, &sim_cluster("beta", 1, 3, "{}")).await;
    wait_ready(&client, &ns, "beta", TIMEOUT).await;
    let pools: Api<MachinePool> = Api::namespaced(client.clone(), &ns);

    pools
        .patch(
            "beta-workers",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "replicas": 5 } })),
        )
        .await
        .unwrap();
    eventually("pool at 5", TIMEOUT, || {
        pool_ready_replicas(&pools, "beta-workers", 5)
    })
    .await;
    assert_eq!(machines_of(sim, &ns, "beta").len(), 6);

    pools
        .patch_scale(
            "beta-workers",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "replicas": 1 } })),
        )
        .await
        .unwrap();
    eventually("pool at 1", TIMEOUT, || {
        pool_ready_replicas(&pools, "beta-workers", 1)
    })
    .await;
    assert_eq!(machines_of(sim, &ns, "beta").len(), 2);
    let scale = pools.get_scale("beta-workers").await.unwrap();
    assert_eq!(scale.status.unwrap().replicas, 1);
    wait_ready(&client, &ns, "beta", TIMEOUT).await;
}

#[tokio::test]
async fn a_pool_outside_the_version_skew_is_held_with_a_condition_naming_the_fix() {
    let env = env().await;
    let sim = manager(env);
    let ns = env.create_namespace("skew").await;
    let client = env.client().await;
    apply(&client, &ns, &sim_cluster("skew", 1, 2, "{}")).await;
    wait_ready(&client, &ns, "skew", TIMEOUT).await;
    let machines = machines_of(sim, &ns, "skew");
    let pools: Api<MachinePool> = Api::namespaced(client.clone(), &ns);

    // Four minors behind a v1.37.2 control plane: admission cannot see the Cluster; the controller holds the pool.
    pools
        .patch(
            "skew-workers",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "version": "v1.33.4" } })),
        )
        .await
        .unwrap();
    let held = eventually("the pool held for version skew", TIMEOUT, || async {
        let pool = pools.get("skew-workers").await.map_err(|e| e.to_string())?;
        let status = pool.status.clone().unwrap_or_default();
        let ready = conditions::find(&status.conditions, "Ready").cloned();
        match ready {
            Some(c) if c.status == "False" && c.reason == "VersionSkew" => Ok(c.message),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        held.contains("spec.version") && held.contains("v1.34.x or newer"),
        "{held}"
    );
    assert_eq!(
        machines_of(sim, &ns, "skew"),
        machines,
        "a held pool's machines were changed"
    );

    // Following the cluster again (a pinned version may be removed; stepping v1.33 → v1.36 would be refused at
    // admission, one minor at a time): the pool is Ready again.
    pools
        .patch(
            "skew-workers",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "version": null } })),
        )
        .await
        .unwrap();
    eventually("pool ready again", TIMEOUT, || {
        pool_ready_replicas(&pools, "skew-workers", 2)
    })
    .await;
}

#[tokio::test]
async fn deleting_a_cluster_removes_pools_machines_and_finalizers() {
    let env = env().await;
    let sim = manager(env);
    let ns = env.create_namespace("delete").await;
    let client = env.client().await;
    // A delete delay makes the ordered teardown observable.
    apply(
        &client,
        &ns,
        &sim_cluster("gamma", 1, 3, "{ deleteDelay: 300ms }"),
    )
    .await;
    wait_ready(&client, &ns, "gamma", TIMEOUT).await;
    assert_eq!(machines_of(sim, &ns, "gamma").len(), 4);

    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
    let pools: Api<MachinePool> = Api::namespaced(client.clone(), &ns);
    clusters
        .delete("gamma", &DeleteParams::default())
        .await
        .unwrap();

    // While workers are still going, the control plane stays: deletion is ordered.
    let saw = std::sync::atomic::AtomicBool::new(false);
    let (saw_ref, clusters_ref, ns_ref) = (&saw, &clusters, &ns);
    eventually("cluster gone", TIMEOUT, move || async move {
        let (clusters, ns) = (clusters_ref, ns_ref);
        let machines = machines_of(sim, ns, "gamma");
        let workers = machines
            .iter()
            .filter(|m| m.starts_with("gamma-workers-"))
            .count();
        let control_plane = machines
            .iter()
            .filter(|m| m.starts_with("gamma-control-plane-"))
            .count();
        if workers > 0 {
            assert_eq!(control_plane, 1, "control plane deleted before the workers");
        } else if control_plane > 0 {
            saw_ref.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        match clusters.get_opt("gamma").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(c) => Err(format!(
                "still there: {}",
                support::condition_summary(&c.status.map(|s| s.conditions).unwrap_or_default())
            )),
        }
    })
    .await;
    assert!(
        saw.load(std::sync::atomic::Ordering::Relaxed),
        "never saw the control plane outlive its workers"
    );
    assert!(
        pools.get_opt("gamma-workers").await.unwrap().is_none(),
        "pool left behind"
    );
    assert!(
        machines_of(sim, &ns, "gamma").is_empty(),
        "machines left behind"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let left = secrets
        .list(&ListParams::default().labels("cluster.x-k8s.io/cluster-name=gamma"))
        .await
        .unwrap();
    let left: Vec<String> = left.items.iter().map(|s| s.name_any()).collect();
    assert!(left.is_empty(), "Secrets left behind: {left:?}");
}

#[tokio::test]
async fn a_paused_cluster_is_left_alone_until_unpaused() {
    let env = env().await;
    let sim = manager(env);
    let ns = env.create_namespace("paused").await;
    let client = env.client().await;
    let yaml = sim_cluster("delta", 1, 2, "{}")
        .replace("  controlPlane:", "  paused: true\n  controlPlane:");
    apply(&client, &ns, &yaml).await;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);

    tokio::time::sleep(Duration::from_secs(3)).await;
    let cluster = clusters.get("delta").await.unwrap();
    assert!(
        cluster.status.is_none(),
        "a paused cluster got a status: {:?}",
        cluster.status
    );
    assert!(
        cluster.metadata.finalizers.is_none(),
        "a paused cluster got a finalizer"
    );
    assert!(
        machines_of(sim, &ns, "delta").is_empty(),
        "machines created for a paused cluster"
    );

    clusters
        .patch(
            "delta",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "paused": false } })),
        )
        .await
        .unwrap();
    wait_ready(&client, &ns, "delta", TIMEOUT).await;
    assert_eq!(machines_of(sim, &ns, "delta").len(), 3);

    // The annotation pauses too: a scale-up waits until it is removed.
    clusters
        .patch(
            "delta",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({ "metadata": { "annotations": { "slipway.dev/paused": "true" } } }),
            ),
        )
        .await
        .unwrap();
    let pools: Api<MachinePool> = Api::namespaced(client.clone(), &ns);
    pools
        .patch(
            "delta-workers",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "replicas": 4 } })),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        machines_of(sim, &ns, "delta").len(),
        3,
        "scaled while paused"
    );
    clusters
        .patch(
            "delta",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({ "metadata": { "annotations": { "slipway.dev/paused": null } } }),
            ),
        )
        .await
        .unwrap();
    eventually("pool at 4 after unpause", TIMEOUT, || {
        pool_ready_replicas(&pools, "delta-workers", 4)
    })
    .await;
}

#[tokio::test]
async fn an_expired_ttl_deletes_the_cluster() {
    let env = env().await;
    let sim = manager(env);
    let ns = env.create_namespace("ttl").await;
    let client = env.client().await;
    let yaml =
        sim_cluster("epsilon", 1, 1, "{}").replace("  controlPlane:", "  ttl: 8s\n  controlPlane:");
    apply(&client, &ns, &yaml).await;
    let cluster = wait_ready(&client, &ns, "epsilon", TIMEOUT).await;
    let created = cluster.metadata.creation_timestamp.clone().unwrap().0;
    let expires = cluster
        .status
        .unwrap()
        .expires_at
        .expect("status.expiresAt set")
        .0;
    assert_eq!(expires.duration_since(created).as_secs(), 8);

    support::wait_deleted(&client, &ns, "epsilon", TIMEOUT).await;
    let gone_at = k8s_openapi::jiff::Timestamp::now();
    assert!(gone_at >= expires, "deleted before it expired");
    assert!(machines_of(sim, &ns, "epsilon").is_empty());
}

#[tokio::test]
async fn a_ready_cluster_sees_no_writes_for_30_seconds() {
    let env = env().await;
    manager(env);
    let ns = env.create_namespace("steady").await;
    let client = env.client().await;
    apply(&client, &ns, &sim_cluster("zeta", 1, 3, "{}")).await;
    wait_ready(&client, &ns, "zeta", TIMEOUT).await;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
    let pools: Api<MachinePool> = Api::namespaced(client.clone(), &ns);
    // Let the pool's last status write land before the window opens.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let versions = |c: Option<String>, p: Option<String>| (c, p);
    let before = versions(
        clusters.get("zeta").await.unwrap().resource_version(),
        pools.get("zeta-workers").await.unwrap().resource_version(),
    );
    let mut cluster_events = watcher::watcher(clusters.clone(), watcher::Config::default()).boxed();
    let mut pool_events = watcher::watcher(pools.clone(), watcher::Config::default()).boxed();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let window = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(window);
    loop {
        tokio::select! {
            _ = &mut window => break,
            Some(Ok(watcher::Event::Apply(c))) = cluster_events.next() => {
                *seen.entry(format!("cluster rv {}", c.resource_version().unwrap())).or_default() += 1;
            }
            Some(Ok(watcher::Event::Apply(p))) = pool_events.next() => {
                *seen.entry(format!("pool rv {}", p.resource_version().unwrap())).or_default() += 1;
            }
        }
    }
    let after = versions(
        clusters.get("zeta").await.unwrap().resource_version(),
        pools.get("zeta-workers").await.unwrap().resource_version(),
    );
    assert_eq!(
        before, after,
        "the manager wrote during the steady window; watch saw {seen:?}"
    );
    assert!(
        seen.len() <= 2,
        "only the initial state may be listed: {seen:?}"
    );
}

#[tokio::test]
async fn user_provided_ca_is_used_as_it_is_and_kept_after_deletion() {
    let env = env().await;
    manager(env);
    let ns = env.create_namespace("byo-ca").await;
    let client = env.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    // The platform team brings its own cluster CA, without an owner: Slipway must use it and never replace it.
    let own = slipway_bootstrap::CertificateAuthority::generate("corporate-ca").unwrap();
    let mut secret = slipway_bootstrap::secrets::pki_secrets(
        "eta",
        &slipway_bootstrap::ClusterPki::generate("eta").unwrap(),
        None,
    )
    .remove(0);
    secret.data = Some(
        [("tls.crt", &own.cert_pem), ("tls.key", &own.key_pem)]
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    k8s_openapi::ByteString(v.as_bytes().to_vec()),
                )
            })
            .collect(),
    );
    secrets.create(&Default::default(), &secret).await.unwrap();

    apply(&client, &ns, &sim_cluster("eta", 1, 1, "{}")).await;
    wait_ready(&client, &ns, "eta", TIMEOUT).await;
    let ca = secrets.get("eta-ca").await.unwrap();
    let cert = String::from_utf8(ca.data.unwrap()["tls.crt"].0.clone()).unwrap();
    assert_eq!(cert, own.cert_pem, "the user's CA was replaced");
    let kubeconfig = secrets
        .get("eta-kubeconfig")
        .await
        .unwrap()
        .data
        .unwrap()
        .remove("value")
        .unwrap();
    let kubeconfig: serde_json::Value =
        serde_saphyr::from_str(std::str::from_utf8(&kubeconfig.0).unwrap()).unwrap();
    let ca_data = kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    use base64::Engine as _;
    let ca_in_kubeconfig = base64::engine::general_purpose::STANDARD
        .decode(ca_data)
        .unwrap();
    assert_eq!(
        ca_in_kubeconfig,
        own.cert_pem.as_bytes(),
        "the kubeconfig trusts another CA"
    );

    Api::<Cluster>::namespaced(client.clone(), &ns)
        .delete("eta", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_deleted(&client, &ns, "eta", TIMEOUT).await;
    assert!(
        secrets.get_opt("eta-ca").await.unwrap().is_some(),
        "the user's CA Secret was deleted"
    );
    assert!(
        secrets.get_opt("eta-etcd").await.unwrap().is_none(),
        "Slipway's own Secrets stay behind"
    );
}

#[tokio::test]
async fn a_failing_provider_shows_in_conditions_and_is_retried_with_backoff() {
    let env = env().await;
    let sim = manager(env);
    let ns = env.create_namespace("failing").await;
    let client = env.client().await;
    apply(
        &client,
        &ns,
        &sim_cluster("theta", 1, 1, "{ failurePercent: 100 }"),
    )
    .await;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
    let cluster = eventually("the failure in conditions", TIMEOUT, || async {
        let cluster = clusters.get("theta").await.map_err(|e| e.to_string())?;
        let conditions = cluster
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        match conditions::find(&conditions, "ControlPlaneReady") {
            Some(c) if c.reason == "InjectedFault" => Ok(cluster),
            _ => Err(support::condition_summary(&conditions)),
        }
    })
    .await;
    let conditions = cluster.status.unwrap().conditions;
    let ready = conditions::find(&conditions, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InjectedFault")
    );
    assert!(
        ready.message.contains("injected failure of create_machine"),
        "{}",
        ready.message
    );

    // Backoff of 1, 2, 4, 8 s: a handful of attempts in 12 s, not a hot loop.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let attempts: u32 = sim
        .snapshot()
        .injected_failures
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{ns}/theta/")))
        .map(|(_, n)| *n)
        .sum();
    assert!(
        (2..=8).contains(&attempts),
        "{attempts} attempts in about 12 s"
    );
}

/// The `reason` and `note` of every events.k8s.io Event in `namespace` about the object `name`.
async fn events_about(client: &kube::Client, namespace: &str, name: &str) -> Vec<(String, String)> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), namespace);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn a_machine_the_provider_reports_failed_is_replaced_once() {
    let env = env().await;
    let sim = manager(env);
    let ns = env.create_namespace("failed").await;
    let client = env.client().await;
    apply(&client, &ns, &sim_cluster("eta", 1, 3, "{}")).await;
    wait_ready(&client, &ns, "eta", TIMEOUT).await;
    let pools: Api<MachinePool> = Api::namespaced(client.clone(), &ns);
    let before: Vec<String> = pools
        .get("eta-workers")
        .await
        .unwrap()
        .status
        .unwrap()
        .machines
        .iter()
        .map(|m| m.name.clone())
        .collect();
    assert_eq!(before.len(), 3);
    let victim = before[1].clone();
    assert!(sim.fail_machine(&ns, "eta", &victim));

    let pool = eventually("the failed machine replaced", TIMEOUT, || async {
        let pool = pool_ready_replicas(&pools, "eta-workers", 3).await?;
        let names: Vec<String> = pool
            .status
            .clone()
            .unwrap_or_default()
            .machines
            .iter()
            .map(|m| m.name.clone())
            .collect();
        if names.len() == 3 && !names.contains(&victim) {
            Ok(pool)
        } else {
            Err(format!("machines {names:?}"))
        }
    })
    .await;
    let status = pool.status.unwrap();
    let blocked =
        conditions::find(&status.conditions, "RemediationBlocked").expect("RemediationBlocked");
    assert_eq!(
        (blocked.status.as_str(), blocked.reason.as_str()),
        ("False", "WithinLimit")
    );
    // The two healthy machines stayed; exactly one new one was made, once.
    for kept in before.iter().filter(|n| **n != victim) {
        assert!(
            status.machines.iter().any(|m| &m.name == kept),
            "{kept} was replaced too"
        );
    }
    let state = sim.snapshot();
    let made: Vec<(&String, &u32)> = state
        .creations
        .iter()
        .filter(|(key, _)| key.starts_with(&format!("{ns}/eta/")) && key.contains("/eta-workers-"))
        .collect();
    assert_eq!(made.len(), 4, "3 machines and one replacement: {made:?}");
    assert!(
        made.iter().all(|(_, count)| **count == 1),
        "a machine made twice: {made:?}"
    );
    let remediated: Vec<String> = events_about(&client, &ns, "eta-workers")
        .await
        .into_iter()
        .filter(|(reason, _)| reason == "MachineRemediated")
        .map(|(_, note)| note)
        .collect();
    assert_eq!(
        remediated,
        [format!(
            "replacing machine {victim}: the provider reports it failed"
        )],
        "one Event for the one replacement"
    );
}
