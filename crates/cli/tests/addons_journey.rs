//! The whole quickstart journey: a local cluster with the three base add-ons, served from a loopback URL with their
//! sha256, applied in order, kept in shape when someone deletes part of them.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams};
use sha2::{Digest, Sha256};
use slipway_api::AddonBundle;
use support::{apply_file, env, eventually, local_manager, wait_ready};

fn fixture(relative: &str) -> String {
    slipway_testenv::addon_manifest(relative)
}

/// Serves the upstream manifests on a loopback port, as a release server would.
async fn serve_fixtures() -> String {
    let app = axum::Router::new()
        .route(
            "/flannel/kube-flannel.yml",
            axum::routing::get(|| async { fixture("flannel/v0.28.9/kube-flannel.yml") }),
        )
        .route(
            "/cert-manager/cert-manager.yaml",
            axum::routing::get(|| async { fixture("cert-manager/v1.19.4/cert-manager.yaml") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn bundles(base: &str) -> String {
    let external_dns = [
        "external-dns/v0.22.0/external-dns-serviceaccount.yaml",
        "external-dns/v0.22.0/external-dns-clusterrole.yaml",
        "external-dns/v0.22.0/external-dns-clusterrolebinding.yaml",
        "external-dns/v0.22.0/external-dns-deployment.yaml",
    ]
    .map(fixture)
    .join("\n---\n");
    let indented: String = external_dns
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    format!(
        r#"apiVersion: slipway.dev/v1alpha1
kind: AddonBundle
metadata:
  name: cni
spec:
  order: 10
  source:
    url:
      url: {base}/flannel/kube-flannel.yml
      sha256: {flannel}
---
apiVersion: slipway.dev/v1alpha1
kind: AddonBundle
metadata:
  name: cert-manager
spec:
  order: 20
  source:
    url:
      url: {base}/cert-manager/cert-manager.yaml
      sha256: {cert_manager}
---
apiVersion: slipway.dev/v1alpha1
kind: AddonBundle
metadata:
  name: external-dns
spec:
  order: 30
  source:
    inline: |
{indented}"#,
        flannel = sha256(&fixture("flannel/v0.28.9/kube-flannel.yml")),
        cert_manager = sha256(&fixture("cert-manager/v1.19.4/cert-manager.yaml")),
    )
}

async fn available(deployments: &Api<Deployment>, name: &str) -> Result<(), String> {
    let d = deployments
        .get(name)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let ok = d
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True"));
    if ok {
        Ok(())
    } else {
        Err(format!("{name} not Available"))
    }
}

#[tokio::test]
async fn local_cluster_with_base_addons_becomes_ready_and_repairs_drift() {
    let env = env().await;
    local_manager(env, Duration::from_secs(3));
    let ns = env.create_namespace("journey").await;
    let client = env.client().await;
    let base = serve_fixtures().await;

    let started = Instant::now();
    support::apply(&client, &ns, &bundles(&base)).await;
    apply_file(
        &client,
        &ns,
        &support::repo_path("config/samples/local-cluster.yaml"),
    )
    .await;
    let cluster = wait_ready(&client, &ns, "local-demo", Duration::from_secs(180)).await;
    println!(
        "local-demo with flannel, cert-manager and external-dns: apply to Ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let addons = slipway_api::conditions::find(&cluster.status.unwrap().conditions, "AddonsReady")
        .cloned()
        .unwrap();
    assert_eq!(
        (addons.status.as_str(), addons.reason.as_str()),
        ("True", "Ready"),
        "{addons:?}"
    );

    let bundles: Api<AddonBundle> = Api::namespaced(client.clone(), &ns);
    for name in ["cni", "cert-manager", "external-dns"] {
        let status = bundles.get(name).await.unwrap().status.unwrap();
        let entry = &status.clusters[0];
        assert_eq!(entry.cluster, "local-demo");
        assert!(entry.ready && entry.revision.is_some(), "{name}: {entry:?}");
    }

    let workload = support::workload_client(&client, &ns, "local-demo").await;

    let flannel = Api::<DaemonSet>::namespaced(workload.clone(), "kube-flannel")
        .get("kube-flannel-ds")
        .await
        .unwrap();
    let flannel = flannel.status.unwrap();
    assert_eq!(
        (flannel.desired_number_scheduled, flannel.number_ready),
        (3, 3)
    );
    let cert_manager: Api<Deployment> = Api::namespaced(workload.clone(), "cert-manager");
    for name in [
        "cert-manager",
        "cert-manager-cainjector",
        "cert-manager-webhook",
    ] {
        available(&cert_manager, name).await.unwrap();
    }
    let crds = Api::<CustomResourceDefinition>::all(workload.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let cert_manager_crds = crds
        .items
        .iter()
        .filter(|c| c.spec.group == "cert-manager.io" || c.spec.group == "acme.cert-manager.io")
        .count();
    assert_eq!(cert_manager_crds, 6);
    available(
        &Api::namespaced(workload.clone(), "default"),
        "external-dns",
    )
    .await
    .unwrap();

    // Someone deletes cert-manager's webhook in the workload cluster: the next resync brings it back.
    cert_manager
        .delete("cert-manager-webhook", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the webhook Deployment restored",
        Duration::from_secs(60),
        || async {
            let restored = cert_manager
                .get_opt("cert-manager-webhook")
                .await
                .map_err(|e| e.to_string())?;
            match restored {
                Some(d) if d.metadata.deletion_timestamp.is_none() => Ok(()),
                _ => Err("not yet".to_string()),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn default_bundles_are_accepted_and_pinned_to_the_upstream_manifests() {
    let env = env().await;
    let ns = env.create_namespace("defaults").await;
    let client = env.client().await;
    let fixtures = [
        ("kube-flannel.yml", "flannel/v0.28.9/kube-flannel.yml"),
        (
            "cert-manager.yaml",
            "cert-manager/v1.19.4/cert-manager.yaml",
        ),
        (
            "external-dns-serviceaccount.yaml",
            "external-dns/v0.22.0/external-dns-serviceaccount.yaml",
        ),
        (
            "external-dns-clusterrole.yaml",
            "external-dns/v0.22.0/external-dns-clusterrole.yaml",
        ),
        (
            "external-dns-clusterrolebinding.yaml",
            "external-dns/v0.22.0/external-dns-clusterrolebinding.yaml",
        ),
        (
            "external-dns-deployment.yaml",
            "external-dns/v0.22.0/external-dns-deployment.yaml",
        ),
    ];
    let mut pinned = 0;
    for file in ["flannel.yaml", "cert-manager.yaml", "external-dns.yaml"] {
        apply_file(
            &client,
            &ns,
            &support::repo_path(&format!("config/addons/{file}")),
        )
        .await;
    }
    for bundle in Api::<AddonBundle>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        let url = bundle
            .spec
            .source
            .url
            .clone()
            .expect("default bundles come from a release URL");
        let (_, fixture_path) = fixtures
            .iter()
            .find(|(name, _)| url.url.ends_with(name))
            .unwrap_or_else(|| panic!("no fixture for {}", url.url));
        assert_eq!(
            url.sha256,
            sha256(&fixture(fixture_path)),
            "{} is not pinned to the upstream file",
            url.url
        );
        pinned += 1;
    }
    assert_eq!(pinned, 6);
}

fn config_map_bundle(name: &str, mode: &str, made: &str) -> String {
    format!(
        r#"apiVersion: slipway.dev/v1alpha1
kind: AddonBundle
metadata:
  name: {name}
spec:
  mode: {mode}
  source:
    inline: |
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: {name}
        namespace: default
      data:
        made: {made}
"#
    )
}

#[tokio::test]
async fn apply_once_bundles_are_left_alone_after_applying_until_their_revision_changes() {
    let env = env().await;
    local_manager(env, Duration::from_secs(3));
    let ns = env.create_namespace("once").await;
    let client = env.client().await;
    let cluster = r#"apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata:
  name: once
spec:
  kubernetes:
    version: v1.37.2
  controlPlane:
    replicas: 1
  infrastructure:
    local: {}
"#;
    support::apply(&client, &ns, cluster).await;
    support::apply(
        &client,
        &ns,
        &config_map_bundle("kept", "Reconcile", "first"),
    )
    .await;
    support::apply(
        &client,
        &ns,
        &config_map_bundle("left", "ApplyOnce", "first"),
    )
    .await;
    wait_ready(&client, &ns, "once", Duration::from_secs(120)).await;

    let workload = support::workload_client(&client, &ns, "once").await;
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(workload, "default");
    for name in ["kept", "left"] {
        config_maps
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("{name} was applied: {e}"));
    }

    // A resync runs (the Reconcile bundle comes back)...
    eventually(
        "the Reconcile bundle's ConfigMap restored",
        Duration::from_secs(60),
        || async {
            match config_maps
                .get_opt("kept")
                .await
                .map_err(|e| e.to_string())?
            {
                Some(_) => Ok(()),
                None => Err("not yet".to_string()),
            }
        },
    )
    .await;
    // ...and another one after it, yet the ApplyOnce bundle's object stays deleted: its new owner decided.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        config_maps.get_opt("left").await.unwrap().is_none(),
        "an ApplyOnce bundle repaired drift"
    );

    // A new revision of the ApplyOnce bundle is applied once more.
    support::apply(
        &client,
        &ns,
        &config_map_bundle("left", "ApplyOnce", "second"),
    )
    .await;
    let applied = eventually(
        "the new revision applied",
        Duration::from_secs(60),
        || async {
            config_maps
                .get_opt("left")
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await;
    assert_eq!(applied.data.unwrap()["made"], "second");
}

// What a bundle must not be able to do to what it did not create: the attacker's side of add-ons, on two local
// clusters shared by the tests below (each test has bundles of its own, selecting one cluster by label).

/// The namespace of the two clusters, made once: `a` and `a-addons-b`. With bundles `b-addons-c` on `a` and `c`
/// on `a-addons-b`, their inventories used to share the name `a-addons-b-addons-c`.
static SAFETY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

async fn safety_clusters() -> (kube::Client, String) {
    let env = env().await;
    local_manager(env, Duration::from_secs(3));
    let namespace = SAFETY
        .get_or_init(|| async {
            let namespace = env.create_namespace("safety").await;
            let client = env.client().await;
            for name in ["a", "a-addons-b"] {
                let cluster = format!(
                    "apiVersion: slipway.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\n  labels:\n    test-cluster: {name}\nspec:\n  kubernetes:\n    version: v1.37.2\n  controlPlane:\n    replicas: 1\n  infrastructure:\n    local: {{}}\n"
                );
                support::apply(&client, &namespace, &cluster).await;
            }
            for name in ["a", "a-addons-b"] {
                wait_ready(&client, &namespace, name, Duration::from_secs(180)).await;
            }
            namespace
        })
        .await
        .clone();
    (env.client().await, namespace)
}

/// An AddonBundle `name` with `manifests` inline, selecting the cluster labelled `test-cluster: <cluster>`.
fn inline_bundle(name: &str, cluster: &str, manifests: &str, values: &[(&str, &str)]) -> String {
    let indented: String = manifests.lines().map(|l| format!("      {l}\n")).collect();
    let values: String = if values.is_empty() {
        String::new()
    } else {
        let entries: String = values
            .iter()
            .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
            .collect();
        format!("  values:\n{entries}")
    };
    format!(
        "apiVersion: slipway.dev/v1alpha1\nkind: AddonBundle\nmetadata:\n  name: {name}\nspec:\n  clusterSelector:\n    matchLabels:\n      test-cluster: {cluster}\n{values}  source:\n    inline: |\n{indented}"
    )
}

fn config_map_in(namespace: &str, name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\ndata:\n  value: \"{value}\"\n"
    )
}

/// The bundle's status on `cluster`, once it has one.
async fn bundle_on(
    client: &kube::Client,
    namespace: &str,
    bundle: &str,
    cluster: &str,
) -> Result<slipway_api::AddonClusterStatus, String> {
    let bundle = Api::<AddonBundle>::namespaced(client.clone(), namespace)
        .get(bundle)
        .await
        .map_err(|e| e.to_string())?;
    bundle
        .status
        .and_then(|s| s.clusters.into_iter().find(|c| c.cluster == cluster))
        .ok_or_else(|| "no status for the cluster yet".to_string())
}

/// Waits until `bundle` is ready on `cluster` at its current generation.
async fn bundle_ready(client: &kube::Client, namespace: &str, bundle: &str, cluster: &str) {
    let bundles = Api::<AddonBundle>::namespaced(client.clone(), namespace);
    eventually(
        &format!("bundle {bundle} ready on {cluster}"),
        Duration::from_secs(90),
        || async {
            let generation = bundles
                .get(bundle)
                .await
                .map_err(|e| e.to_string())?
                .metadata
                .generation;
            let entry = bundle_on(client, namespace, bundle, cluster).await?;
            if entry.ready && entry.observed_generation == generation {
                Ok(())
            } else {
                Err(format!("{entry:?}"))
            }
        },
    )
    .await;
}

/// The inventories of `bundle` (found by their label), as `(ConfigMap name, cluster label, inventory JSON)`.
async fn inventories_of(
    client: &kube::Client,
    namespace: &str,
    bundle: &str,
) -> Vec<(String, String, serde_json::Value)> {
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("slipway.dev/addon-bundle={bundle}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|cm| {
            let labels = cm.metadata.labels.clone().unwrap_or_default();
            let json = cm.data.unwrap_or_default()["inventory.json"].clone();
            (
                cm.metadata.name.unwrap(),
                labels
                    .get("slipway.dev/cluster")
                    .cloned()
                    .unwrap_or_default(),
                serde_json::from_str(&json).unwrap(),
            )
        })
        .collect()
}

fn inventory_names(inventory: &serde_json::Value) -> Vec<String> {
    inventory["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_namespace_the_bundle_drops_is_kept_while_it_holds_a_custom_resource_slipway_did_not_create()
 {
    let (client, ns) = safety_clusters().await;
    let workload = support::workload_client(&client, &ns, "a").await;
    let first = [
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-data\n".to_string(),
        config_map_in("team-data", "settings", "1"),
        config_map_in("default", "ns-owner-marker", "1"),
    ]
    .join("---\n");
    support::apply(&client, &ns, &inline_bundle("ns-owner", "a", &first, &[])).await;
    bundle_ready(&client, &ns, "ns-owner", "a").await;

    // Someone installs their own kind in the workload cluster and keeps an object of it in the bundle's Namespace.
    let crds = Api::<CustomResourceDefinition>::all(workload.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gizmos.attack.example.com"},
        "spec": {
            "group": "attack.example.com",
            "names": {"kind": "Gizmo", "plural": "gizmos"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    }))
    .unwrap();
    crds.patch(
        "gizmos.attack.example.com",
        &kube::api::PatchParams::apply("someone-else").force(),
        &kube::api::Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let gizmos: Api<kube::api::DynamicObject> = Api::namespaced_with(
        workload.clone(),
        "team-data",
        &kube::api::ApiResource {
            group: "attack.example.com".into(),
            version: "v1".into(),
            api_version: "attack.example.com/v1".into(),
            kind: "Gizmo".into(),
            plural: "gizmos".into(),
        },
    );
    let precious: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "attack.example.com/v1",
        "kind": "Gizmo",
        "metadata": {"name": "precious"},
        "spec": {"keep": "me"}
    }))
    .unwrap();
    eventually("the Gizmo created", Duration::from_secs(30), || async {
        gizmos
            .create(&Default::default(), &precious)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;

    // The next revision drops the Namespace and what the bundle had in it.
    let second = config_map_in("default", "ns-owner-marker", "2");
    support::apply(&client, &ns, &inline_bundle("ns-owner", "a", &second, &[])).await;
    let entry = eventually(
        "the bundle's status says why the Namespace stays",
        Duration::from_secs(60),
        || async {
            let entry = bundle_on(&client, &ns, "ns-owner", "a").await?;
            match &entry.message {
                Some(m) if m.contains("not pruned: Namespace/team-data") => Ok(entry),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let message = entry.message.unwrap();
    assert!(message.contains("Gizmo/precious"), "{message}");
    assert!(entry.ready, "the bundle's own objects are ready: {message}");

    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(workload.clone(), "team-data");
    eventually(
        "the bundle's own ConfigMap pruned",
        Duration::from_secs(30),
        || async {
            match config_maps
                .get_opt("settings")
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(()),
                Some(_) => Err("still there".to_string()),
            }
        },
    )
    .await;
    let namespace = Api::<k8s_openapi::api::core::v1::Namespace>::all(workload.clone())
        .get("team-data")
        .await
        .unwrap();
    assert!(
        namespace.metadata.deletion_timestamp.is_none(),
        "the Namespace holding someone's Gizmo is being deleted"
    );
    assert_eq!(
        gizmos.get("precious").await.unwrap().data["spec"]["keep"],
        "me"
    );
}

#[tokio::test]
async fn an_object_that_existed_before_the_first_apply_is_adopted_and_not_deleted_when_the_bundle_drops_it()
 {
    let (client, ns) = safety_clusters().await;
    let workload = support::workload_client(&client, &ns, "a").await;
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(workload.clone(), "default");
    let theirs: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "was-here"},
        "data": {"owner": "them"}
    }))
    .unwrap();
    config_maps
        .create(&Default::default(), &theirs)
        .await
        .unwrap();

    let first = [
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: was-here\n  namespace: default\ndata:\n  owner: bundle\n"
            .to_string(),
        config_map_in("default", "made-here", "1"),
    ]
    .join("---\n");
    support::apply(&client, &ns, &inline_bundle("adopter", "a", &first, &[])).await;
    bundle_ready(&client, &ns, "adopter", "a").await;
    assert_eq!(
        config_maps.get("was-here").await.unwrap().data.unwrap()["owner"],
        "bundle",
        "an adopted object still gets the bundle's fields"
    );

    let second = config_map_in("default", "adopter-marker", "1");
    support::apply(&client, &ns, &inline_bundle("adopter", "a", &second, &[])).await;
    eventually(
        "the bundle's own ConfigMap pruned",
        Duration::from_secs(60),
        || async {
            match config_maps
                .get_opt("made-here")
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(()),
                Some(_) => Err("still there".to_string()),
            }
        },
    )
    .await;
    // A few resyncs later the adopted object is still there.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let kept = config_maps.get_opt("was-here").await.unwrap();
    assert!(
        kept.is_some(),
        "the object that existed before the bundle was deleted"
    );
}

#[tokio::test]
async fn clusters_and_bundles_whose_old_inventory_names_collide_keep_separate_inventories() {
    let (client, ns) = safety_clusters().await;
    // Old name of both: `<cluster>-addons-<bundle>` = `a-addons-b-addons-c`.
    support::apply(
        &client,
        &ns,
        &inline_bundle(
            "c",
            "a-addons-b",
            &config_map_in("default", "from-c", "1"),
            &[],
        ),
    )
    .await;
    support::apply(
        &client,
        &ns,
        &inline_bundle(
            "b-addons-c",
            "a",
            &config_map_in("default", "from-b-addons-c", "1"),
            &[],
        ),
    )
    .await;
    bundle_ready(&client, &ns, "c", "a-addons-b").await;
    bundle_ready(&client, &ns, "b-addons-c", "a").await;

    let of_c = inventories_of(&client, &ns, "c").await;
    let of_bc = inventories_of(&client, &ns, "b-addons-c").await;
    assert_eq!(of_c.len(), 1, "{of_c:?}");
    assert_eq!(of_bc.len(), 1, "{of_bc:?}");
    assert_ne!(of_c[0].0, of_bc[0].0, "one ConfigMap for both inventories");
    assert_eq!(of_c[0].1, "a-addons-b");
    assert_eq!(of_bc[0].1, "a");
    assert_eq!(inventory_names(&of_c[0].2), ["from-c"]);
    assert_eq!(inventory_names(&of_bc[0].2), ["from-b-addons-c"]);

    // Each bundle prunes from its own cluster what it dropped, and nothing of the other's.
    support::apply(
        &client,
        &ns,
        &inline_bundle(
            "c",
            "a-addons-b",
            &config_map_in("default", "from-c-2", "1"),
            &[],
        ),
    )
    .await;
    let on_ab: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(
        support::workload_client(&client, &ns, "a-addons-b").await,
        "default",
    );
    eventually(
        "from-c pruned from a-addons-b",
        Duration::from_secs(60),
        || async {
            match on_ab.get_opt("from-c").await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".to_string()),
            }
        },
    )
    .await;
    let on_a: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(support::workload_client(&client, &ns, "a").await, "default");
    assert!(on_a.get_opt("from-b-addons-c").await.unwrap().is_some());
    assert_eq!(
        inventory_names(&inventories_of(&client, &ns, "b-addons-c").await[0].2),
        ["from-b-addons-c"]
    );
}

#[tokio::test]
async fn deleting_a_bundle_removes_what_it_created_and_its_inventory() {
    let (client, ns) = safety_clusters().await;
    let workload = support::workload_client(&client, &ns, "a").await;
    let defaults: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(workload.clone(), "default");
    let theirs: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "doomed-adopted"},
        "data": {"owner": "them"}
    }))
    .unwrap();
    defaults.create(&Default::default(), &theirs).await.unwrap();
    let manifests = [
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: doomed\n".to_string(),
        config_map_in("doomed", "inside", "1"),
        config_map_in("default", "doomed-made", "1"),
        config_map_in("default", "doomed-adopted", "1"),
    ]
    .join("---\n");
    support::apply(&client, &ns, &inline_bundle("doomed", "a", &manifests, &[])).await;
    bundle_ready(&client, &ns, "doomed", "a").await;
    assert_eq!(inventories_of(&client, &ns, "doomed").await.len(), 1);

    let bundles = Api::<AddonBundle>::namespaced(client.clone(), &ns);
    bundles
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the bundle gone", Duration::from_secs(60), || async {
        match bundles.get_opt("doomed").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(b) => Err(format!("{:?}", b.status)),
        }
    })
    .await;
    assert!(defaults.get_opt("doomed-made").await.unwrap().is_none());
    let namespace = Api::<k8s_openapi::api::core::v1::Namespace>::all(workload.clone())
        .get_opt("doomed")
        .await
        .unwrap();
    assert!(
        namespace.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "the bundle's Namespace is left"
    );
    assert!(
        defaults.get_opt("doomed-adopted").await.unwrap().is_some(),
        "what the bundle adopted goes with it"
    );
    assert!(inventories_of(&client, &ns, "doomed").await.is_empty());
}

#[tokio::test]
async fn a_render_bomb_is_refused_with_the_limit_in_the_bundle_status_and_the_manager_stays_responsive()
 {
    let (client, ns) = safety_clusters().await;
    // 600 kB of `${BIG}` and a BIG of 4 KiB (the largest value the API admits): 400 MB once rendered.
    let big = "x".repeat(slipway_api::limits::MAX_ADDON_VALUE);
    let bomb = "${BIG}".repeat(100_000);
    support::apply(
        &client,
        &ns,
        &inline_bundle("bomb", "a", &bomb, &[("BIG", &big)]),
    )
    .await;
    // Nine levels of nine aliases: 387 million strings from 600 bytes of YAML.
    let mut laughs =
        String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: laughs\ndata:\n");
    laughs.push_str("  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..9 {
        let previous = format!("*a{}", level - 1);
        laughs.push_str(&format!(
            "  a{level}: &a{level} [{}]\n",
            [previous.as_str(); 9].join(", ")
        ));
    }
    support::apply(&client, &ns, &inline_bundle("laughs", "a", &laughs, &[])).await;

    let refused = |bundle: &'static str, expected: &'static str| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            eventually(
                &format!("bundle {bundle} refused"),
                Duration::from_secs(30),
                || async {
                    let entry = bundle_on(&client, &ns, bundle, "a").await?;
                    match entry.message {
                        Some(m) if m.contains(expected) => Ok(m),
                        other => Err(format!("{other:?}")),
                    }
                },
            )
            .await
        }
    };
    let message = refused("bomb", "limit exceeded: rendered manifest size").await;
    // 100 000 times 4 KiB, and the newline that ends the inline text.
    assert!(
        message.contains(": 409600001, more than the limit of"),
        "{message}"
    );
    let message = refused(
        "laughs",
        "limit exceeded: YAML events expanded from aliases",
    )
    .await;
    assert!(
        message.contains("more than the limit of 100000"),
        "{message}"
    );

    // Meanwhile the manager goes on with everyone else's bundles.
    support::apply(
        &client,
        &ns,
        &inline_bundle(
            "after-bomb",
            "a",
            &config_map_in("default", "after-bomb", "1"),
            &[],
        ),
    )
    .await;
    let started = Instant::now();
    bundle_ready(&client, &ns, "after-bomb", "a").await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}
