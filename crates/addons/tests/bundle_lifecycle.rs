//! The add-on engine's behaviour against a real apiserver: sources, per-object failures, CRDs with their custom
//! resources in one bundle, drift repair, inventory and prune, readiness reasons and waiting for the API.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Api, Client};
use slipway_addons::{
    ApplyOptions, Error, Inventory, InventoryKey, ObjectRef, apply, inventory, parse, prune,
    readiness, render, source, wait_for_api, wait_ready,
};
use slipway_api::{AddonSource, Cluster, ConfigMapKeyRef, FIELD_MANAGER, UrlSource};
use slipway_testenv::TestEnv;

const FLANNEL: &str = "flannel/v0.28.9/kube-flannel.yml";
/// From PROVENANCE.md: the upstream blob's digest.
const FLANNEL_SHA256: &str = "e875824be2f552b45711dbda91af81b17eb961d00025d914d9fef18fad8f09c0";

fn fixture(relative: &str) -> String {
    slipway_testenv::addon_manifest(relative)
}

async fn setup(prefix: &str) -> (Client, String) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let env = TestEnv::shared_workload().await;
    let namespace = env.create_namespace(prefix).await;
    (env.client().await, namespace)
}

fn options(namespace: &str) -> ApplyOptions {
    ApplyOptions {
        default_namespace: namespace.to_string(),
        ..ApplyOptions::default()
    }
}

fn config_map(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

fn deployment(name: &str) -> String {
    format!(
        "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: main
        image: registry.example/{name}:1
"
    )
}

fn bundle(documents: &[String]) -> Vec<DynamicObject> {
    parse(&documents.join("---\n")).unwrap()
}

fn names(objects: &[ObjectRef]) -> Vec<String> {
    let mut names: Vec<String> = objects
        .iter()
        .map(|o| format!("{}/{}", o.kind, o.name))
        .collect();
    names.sort();
    names
}

/// A loopback HTTP server with one file; returns its URL.
async fn serve(path: &'static str, body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = axum::Router::new().route(path, axum::routing::get(move || async move { body }));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}{path}")
}

/// The add-on download client with loopback allowed, as `slipway manager --allow-egress 127.0.0.0/8` makes it.
fn loopback_client() -> slipway_egress::HttpClient {
    let loopback = slipway_egress::parse_cidr("127.0.0.0/8").unwrap();
    source::download_client(slipway_egress::EgressPolicy::allowing([loopback])).unwrap()
}

#[tokio::test]
async fn url_source_on_loopback_is_refused_without_the_allow_flag_and_nothing_is_fetched() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = requests.clone();
    let router = axum::Router::new().route(
        "/kube-flannel.yml",
        axum::routing::get(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { fixture(FLANNEL) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let http = source::download_client(slipway_egress::EgressPolicy::default()).unwrap();

    for url in [
        format!("http://{address}/kube-flannel.yml"),
        format!("http://localhost:{}/kube-flannel.yml", address.port()),
    ] {
        let err = source::fetch_url(&http, &url, FLANNEL_SHA256)
            .await
            .unwrap_err();
        assert_eq!(err.metric_label(), "egress_refused", "{url}: {err}");
        let message = err.to_string();
        assert!(
            message.contains("refused to connect to")
                && message.contains("(loopback)")
                && message.contains("--allow-egress"),
            "{message}"
        );
        assert!(!message.contains(FLANNEL_SHA256), "{message}");
    }
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a refused URL was fetched"
    );
}

#[tokio::test]
async fn url_source_is_fetched_when_its_sha256_matches_and_refused_naming_both_hashes_when_not() {
    let (client, namespace) = setup("url-source").await;
    let url = serve("/kube-flannel.yml", fixture(FLANNEL)).await;
    let http = loopback_client();

    let right = AddonSource {
        url: Some(UrlSource {
            url: url.clone(),
            sha256: FLANNEL_SHA256.to_string(),
        }),
        ..AddonSource::default()
    };
    let text = source::resolve(&right, &client, &namespace, &http)
        .await
        .unwrap();
    assert_eq!(text, fixture(FLANNEL));
    assert_eq!(parse(&text).unwrap().len(), 6);

    let wrong_sha256 = "0".repeat(64);
    let err = source::fetch_url(&http, &url, &wrong_sha256)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert_eq!(err.metric_label(), "digest_mismatch");
    assert!(
        message.contains(&format!("expected {wrong_sha256}")),
        "{message}"
    );
    assert!(
        message.contains(&format!("got {FLANNEL_SHA256}")),
        "{message}"
    );

    let missing = url.replace("kube-flannel.yml", "nothing-here.yml");
    let err = source::fetch_url(&http, &missing, FLANNEL_SHA256)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

#[tokio::test]
async fn config_map_source_reads_its_key_from_the_management_cluster() {
    let (client, namespace) = setup("cm-source").await;
    let manifests = config_map("from-config-map", "1");
    let holder = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("bundle-text".to_string()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "manifests.yaml".to_string(),
            manifests.clone(),
        )])),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &holder)
        .await
        .unwrap();
    let by_ref = |key: &str| AddonSource {
        config_map_ref: Some(ConfigMapKeyRef {
            name: "bundle-text".to_string(),
            key: key.to_string(),
        }),
        ..AddonSource::default()
    };
    let http = loopback_client();
    let text = source::resolve(&by_ref("manifests.yaml"), &client, &namespace, &http)
        .await
        .unwrap();
    assert_eq!(text, manifests);

    let err = source::resolve(&by_ref("other.yaml"), &client, &namespace, &http)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConfigMapKeyMissing { .. }), "{err}");
    let err = source::from_config_map(&client, &namespace, "absent", "k")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConfigMapNotFound { .. }), "{err}");

    let inline = AddonSource {
        inline: Some("x".to_string()),
        config_map_ref: by_ref("manifests.yaml").config_map_ref,
        url: None,
    };
    let err = source::resolve(&inline, &client, &namespace, &http)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exactly one"), "{err}");
}

#[tokio::test]
async fn refused_objects_are_reported_by_name_and_the_rest_still_apply() {
    let (client, namespace) = setup("partial").await;
    let bad_selector = deployment("mismatched").replace(
        "matchLabels: {app: mismatched}",
        "matchLabels: {app: other}",
    );
    let not_served = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n".to_string();
    let objects = bundle(&[
        config_map("first", "1"),
        bad_selector,
        not_served,
        config_map("last", "2"),
    ]);

    let report = apply(&client, &objects, &options(&namespace))
        .await
        .unwrap();
    assert_eq!(
        report.objects.len(),
        4,
        "every object is the bundle's, refused or not"
    );
    assert_eq!(report.failures.len(), 2, "{:?}", report.failures);
    let deployment_failure = report
        .failures
        .iter()
        .find(|f| f.object.kind == "Deployment")
        .unwrap();
    assert_eq!(
        deployment_failure.object.namespace.as_deref(),
        Some(namespace.as_str())
    );
    assert!(
        deployment_failure.message.contains("selector"),
        "{}",
        deployment_failure.message
    );
    let widget_failure = report
        .failures
        .iter()
        .find(|f| f.object.kind == "Widget")
        .unwrap();
    assert!(
        widget_failure
            .message
            .contains("does not serve kind Widget"),
        "{}",
        widget_failure.message
    );

    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &namespace);
    assert!(config_maps.get_opt("first").await.unwrap().is_some());
    assert!(config_maps.get_opt("last").await.unwrap().is_some());

    let err = report.into_result().unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("2 object(s) failed to apply"),
        "{message}"
    );
    assert!(
        message.contains(&format!("Deployment/{namespace}/mismatched: ")),
        "{message}"
    );
}

#[tokio::test]
async fn a_refused_namespace_stops_the_apply_before_anything_depends_on_it() {
    let (client, namespace) = setup("bad-ns").await;
    let objects = bundle(&[
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: Not_A_Valid_Name\n".to_string(),
        config_map("after", "1"),
    ]);
    let err = apply(&client, &objects, &options(&namespace))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ApplyFailed(f) if f.len() == 1),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("Namespace/Not_A_Valid_Name"),
        "{err}"
    );
    let after = Api::<ConfigMap>::namespaced(client, &namespace)
        .get_opt("after")
        .await
        .unwrap();
    assert!(
        after.is_none(),
        "nothing after the refused namespace was applied"
    );
}

#[tokio::test]
async fn a_crd_and_its_custom_resources_apply_in_one_bundle_and_prune_keeps_a_crd_still_in_use() {
    let (client, namespace) = setup("crd-bundle").await;
    // The custom resource comes first in the text: ordering, not the author, puts the CRD before it.
    let endpoint = |name: &str| {
        format!(
            "apiVersion: externaldns.k8s.io/v1alpha1\nkind: DNSEndpoint\nmetadata:\n  name: {name}\nspec:\n  endpoints:\n  - dnsName: ${{clusterName}}.example.org\n    recordType: A\n    targets: [10.0.0.1]\n"
        )
    };
    let text = [
        endpoint("from-bundle"),
        fixture("external-dns/v0.22.0/dnsendpoints.externaldns.k8s.io.yaml"),
    ]
    .join("---\n");
    let values = BTreeMap::from([("clusterName".to_string(), "prod-eu".to_string())]);
    let objects = parse(&render(&text, &values).unwrap()).unwrap();
    let report = apply(&client, &objects, &options(&namespace))
        .await
        .unwrap();
    let created = Inventory::after_apply(None, &report);
    let applied = report.into_result().unwrap();
    assert_eq!(applied[0].kind, "CustomResourceDefinition");
    assert!(
        readiness(&client, &applied).await.unwrap().is_empty(),
        "CRD Established"
    );

    let resource = ApiResource {
        group: "externaldns.k8s.io".into(),
        version: "v1alpha1".into(),
        api_version: "externaldns.k8s.io/v1alpha1".into(),
        kind: "DNSEndpoint".into(),
        plural: "dnsendpoints".into(),
    };
    let endpoints: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
    let live = endpoints.get("from-bundle").await.unwrap();
    assert_eq!(
        live.data["spec"]["endpoints"][0]["dnsName"],
        "prod-eu.example.org"
    );

    // Someone else's custom resource of the same kind: pruning the whole bundle must not take it with the CRD.
    let theirs = parse(&endpoint("theirs").replace("${clusterName}", "theirs"))
        .unwrap()
        .remove(0);
    endpoints
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();

    let report = prune(&client, &created, &Inventory::default(), FIELD_MANAGER)
        .await
        .unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(names(&report.deleted), ["DNSEndpoint/from-bundle"]);
    assert!(report.kept.is_empty(), "{:?}", report.kept);
    assert_eq!(report.blocked.len(), 1);
    assert_eq!(report.blocked[0].0.kind, "CustomResourceDefinition");
    assert!(
        report.blocked[0].1.contains("custom resource"),
        "{}",
        report.blocked[0].1
    );
    // Blocked, not given up: the CRD stays in what is left to prune.
    assert_eq!(report.unfinished.len(), 1);
    assert!(endpoints.get_opt("theirs").await.unwrap().is_some());
}

#[tokio::test]
async fn reapplying_repairs_a_deleted_deployment_and_a_hand_changed_config_map() {
    let (client, namespace) = setup("drift").await;
    let objects = bundle(&[config_map("settings", "original"), deployment("web")]);
    let applied = apply(&client, &objects, &options(&namespace))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    wait_ready(&client, &applied, Duration::from_secs(120))
        .await
        .unwrap();

    let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace);
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &namespace);
    deployments
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    // A hand edit by another field manager, as `kubectl edit` would make.
    let edit = serde_json::json!({"data": {"value": "hand-changed", "extra": "added by hand"}});
    config_maps
        .patch("settings", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    let not_ready = readiness(&client, &applied).await.unwrap();
    assert!(
        not_ready
            .iter()
            .any(|n| n.object.name == "web" && n.reason == "not found"),
        "{not_ready:?}"
    );

    apply(&client, &objects, &options(&namespace))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    wait_ready(&client, &applied, Duration::from_secs(120))
        .await
        .unwrap();
    let settings = config_maps.get("settings").await.unwrap().data.unwrap();
    assert_eq!(settings["value"], "original", "our field is ours again");
    // SSA owns only what the bundle sets: a field someone else added stays. That is the contract, not a leak.
    assert_eq!(settings["extra"], "added by hand");
}

/// Slipway's CRDs, once per test binary: inventories are owned by a Cluster.
static SLIPWAY_CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// A Cluster object named `cluster` in `namespace` (nothing reconciles it here) and the inventory key of `bundle`
/// on it.
async fn inventory_key(
    client: &Client,
    namespace: &str,
    cluster: &str,
    bundle: &str,
) -> InventoryKey {
    SLIPWAY_CRDS
        .get_or_init(|| async {
            let crds = Api::<CustomResourceDefinition>::all(client.clone());
            for crd in slipway_api::crds() {
                let name = crd.metadata.name.clone().unwrap();
                crds.patch(
                    &name,
                    &PatchParams::apply("test").force(),
                    &Patch::Apply(&crd),
                )
                .await
                .unwrap();
                tokio::time::timeout(
                    Duration::from_secs(30),
                    kube::runtime::wait::await_condition(
                        crds.clone(),
                        &name,
                        kube::runtime::wait::conditions::is_crd_established(),
                    ),
                )
                .await
                .unwrap()
                .unwrap();
            }
        })
        .await;
    let object: Cluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": cluster},
        "spec": {
            "kubernetes": {"version": "v1.37.2"},
            "controlPlane": {"replicas": 1},
            "infrastructure": {"sim": {}}
        }
    }))
    .unwrap();
    let created = Api::<Cluster>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    InventoryKey {
        namespace: namespace.to_string(),
        cluster: cluster.to_string(),
        cluster_uid: created.metadata.uid.unwrap(),
        bundle: bundle.to_string(),
    }
}

#[tokio::test]
async fn prune_deletes_exactly_the_dropped_objects_slipway_created_and_the_inventory_round_trips() {
    let (client, namespace) = setup("prune").await;
    let key = inventory_key(&client, &namespace, "owner", "prune").await;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &namespace);
    let bystander = parse(&config_map("bystander", "not ours"))
        .unwrap()
        .remove(0)
        .try_parse::<ConfigMap>()
        .unwrap();
    config_maps
        .create(&PostParams::default(), &bystander)
        .await
        .unwrap();

    let first = bundle(&[
        config_map("kept", "1"),
        config_map("dropped", "1"),
        config_map("recreated", "1"),
        deployment("dropped-deployment"),
    ]);
    let report = apply(&client, &first, &options(&namespace)).await.unwrap();
    assert_eq!(report.applied.len(), 4, "{:?}", report.failures);
    assert!(
        report
            .applied
            .iter()
            .all(|a| a.created && !a.uid.is_empty()),
        "{:?}",
        report.applied
    );
    inventory::store(&client, &key, &Inventory::after_apply(None, &report))
        .await
        .unwrap();

    // "recreated" is deleted and made again by someone else: its name is in the inventory, but it is not ours.
    config_maps
        .delete("recreated", &DeleteParams::default())
        .await
        .unwrap();
    let theirs = parse(&config_map("recreated", "theirs"))
        .unwrap()
        .remove(0)
        .try_parse::<ConfigMap>()
        .unwrap();
    config_maps
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();

    let second = bundle(&[config_map("kept", "2"), config_map("added", "1")]);
    let report = apply(&client, &second, &options(&namespace)).await.unwrap();
    let old = inventory::load(&client, &key)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(old.objects.len(), 4);
    assert!(old.objects.iter().all(|e| e.uid.is_some()), "{old:?}");
    let new = Inventory::after_apply(Some(&old), &report);
    assert!(
        new.objects.iter().all(|e| e.uid.is_some()),
        "kept and added are both Slipway's: {new:?}"
    );

    let report = prune(&client, &old, &new, FIELD_MANAGER).await.unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.blocked.is_empty(), "{:?}", report.blocked);
    assert_eq!(
        names(&report.deleted),
        ["ConfigMap/dropped", "Deployment/dropped-deployment"]
    );
    assert_eq!(
        names(&report.kept.iter().map(|k| k.0.clone()).collect::<Vec<_>>()),
        ["ConfigMap/recreated"]
    );
    assert!(
        report.kept[0].1.contains("UID changed"),
        "{}",
        report.kept[0].1
    );

    for (name, exists) in [
        ("kept", true),
        ("added", true),
        ("bystander", true),
        ("recreated", true),
        ("dropped", false),
    ] {
        assert_eq!(
            config_maps.get_opt(name).await.unwrap().is_some(),
            exists,
            "{name}"
        );
    }
    let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace);
    assert!(
        deployments
            .get_opt("dropped-deployment")
            .await
            .unwrap()
            .is_none()
    );

    // A second prune against the same sets has nothing left to do.
    let again = prune(&client, &old, &new, FIELD_MANAGER).await.unwrap();
    assert!(again.deleted.is_empty());

    // The inventory is labelled with its cluster and bundle, owned by the Cluster, and found by the bundle's label.
    let stored = config_maps.get(&key.name()).await.unwrap();
    let labels = stored.metadata.labels.unwrap();
    assert_eq!(labels[inventory::CLUSTER_LABEL], "owner");
    assert_eq!(labels[inventory::BUNDLE_LABEL], "prune");
    let owners = stored.metadata.owner_references.unwrap();
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].uid.as_str()),
        ("Cluster", key.cluster_uid.as_str())
    );
    let listed = inventory::list(&client, &namespace, "prune").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, key);
    assert_eq!(listed[0].inventory, old);
    inventory::delete(&client, &namespace, &key.name())
        .await
        .unwrap();
    assert!(inventory::load(&client, &key).await.unwrap().is_none());
    assert!(
        inventory::list(&client, &namespace, "prune")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_object_that_existed_before_the_first_apply_is_adopted_and_never_pruned() {
    let (client, namespace) = setup("adopt").await;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &namespace);
    let theirs = parse(&config_map("was-here", "theirs"))
        .unwrap()
        .remove(0)
        .try_parse::<ConfigMap>()
        .unwrap();
    config_maps
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();

    let objects = bundle(&[
        config_map("was-here", "bundle"),
        config_map("made-here", "1"),
    ]);
    let report = apply(&client, &objects, &options(&namespace))
        .await
        .unwrap();
    let created = |name: &str| {
        report
            .applied
            .iter()
            .find(|a| a.object.name == name)
            .unwrap()
            .created
    };
    assert!(
        !created("was-here"),
        "an apply over an existing object does not create it"
    );
    assert!(created("made-here"));
    let first = Inventory::after_apply(None, &report);
    // The bundle still sets its fields (it forces them), and a second apply keeps both entries as they were.
    assert_eq!(
        config_maps.get("was-here").await.unwrap().data.unwrap()["value"],
        "bundle"
    );
    let again = apply(&client, &objects, &options(&namespace))
        .await
        .unwrap();
    let second = Inventory::after_apply(Some(&first), &again);
    assert_eq!(second, first);
    let entry = |name: &str| {
        second
            .objects
            .iter()
            .find(|e| e.object.name == name)
            .cloned()
            .unwrap()
    };
    assert!(entry("was-here").adopted && entry("was-here").uid.is_none());
    assert!(!entry("made-here").adopted && entry("made-here").uid.is_some());

    let report = prune(&client, &second, &Inventory::default(), FIELD_MANAGER)
        .await
        .unwrap();
    assert_eq!(names(&report.deleted), ["ConfigMap/made-here"]);
    assert_eq!(report.kept.len(), 1);
    assert!(report.kept[0].1.contains("adopted"), "{}", report.kept[0].1);
    assert!(config_maps.get_opt("was-here").await.unwrap().is_some());
    assert!(config_maps.get_opt("made-here").await.unwrap().is_none());
}

#[tokio::test]
async fn an_inventory_from_before_uids_still_reads_and_prunes_nothing() {
    let (client, namespace) = setup("legacy").await;
    let key = inventory_key(&client, &namespace, "old", "bundle").await;
    let objects = bundle(&[config_map("applied-long-ago", "1")]);
    apply(&client, &objects, &options(&namespace))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    // What an older Slipway stored: `<cluster>-addons-<bundle>`, entries without UIDs.
    let legacy = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(key.legacy_name()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "slipway".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            inventory::INVENTORY_KEY.to_string(),
            format!(
                r#"{{"objects":[{{"version":"v1","kind":"ConfigMap","namespace":"{namespace}","name":"applied-long-ago"}}]}}"#
            ),
        )])),
        ..Default::default()
    };
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &namespace);
    config_maps
        .create(&PostParams::default(), &legacy)
        .await
        .unwrap();
    assert!(inventory::load(&client, &key).await.unwrap().is_none());
    let old = inventory::load_legacy(&client, &key)
        .await
        .unwrap()
        .expect("the old inventory reads");
    assert_eq!(old.objects.len(), 1);
    assert!(old.objects[0].uid.is_none());

    let report = prune(&client, &old, &Inventory::default(), FIELD_MANAGER)
        .await
        .unwrap();
    assert!(report.deleted.is_empty(), "{:?}", report.deleted);
    assert_eq!(report.kept.len(), 1);
    assert!(
        config_maps
            .get_opt("applied-long-ago")
            .await
            .unwrap()
            .is_some()
    );
    inventory::delete_legacy(&client, &key).await.unwrap();
    assert!(
        config_maps
            .get_opt(&key.legacy_name())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn each_bundle_owns_its_fields_under_its_own_manager_and_drops_the_shared_one() {
    let (client, namespace) = setup("managers").await;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &namespace);
    let two_keys = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: \"1\"\n  b: \"2\"\n";
    // As an older Slipway applied it: every bundle under the one manager `slipway`.
    apply(&client, &parse(two_keys).unwrap(), &options(&namespace))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let mine = ApplyOptions {
        field_manager: slipway_addons::field_manager("mine"),
        ..options(&namespace)
    };
    assert_eq!(mine.field_manager, "slipway-addon-mine");
    let report = apply(&client, &parse(two_keys).unwrap(), &mine)
        .await
        .unwrap();
    assert!(!report.applied[0].created);
    let managers = |cm: &ConfigMap| -> Vec<String> {
        cm.metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|e| e.operation.as_deref() == Some("Apply"))
            .filter_map(|e| e.manager.clone())
            .collect()
    };
    assert_eq!(
        managers(&config_maps.get("settings").await.unwrap()),
        ["slipway-addon-mine"]
    );
    // With the shared manager gone, a key the bundle drops is removed from the object.
    let one_key = two_keys.replace("  b: \"2\"\n", "");
    apply(&client, &parse(&one_key).unwrap(), &mine)
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let data = config_maps.get("settings").await.unwrap().data.unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["a"]);
}

#[tokio::test]
async fn a_dropped_namespace_is_kept_while_objects_slipway_did_not_create_live_in_it() {
    let (client, namespace) = setup("prune-ns").await;
    let with_user_data = format!("{namespace}-used");
    let only_ours = format!("{namespace}-ours");
    let mut documents = Vec::new();
    for ns in [&with_user_data, &only_ours] {
        documents.push(format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
        ));
        documents.push(config_map("settings", "1").replacen(
            "  name: settings\n",
            &format!("  name: settings\n  namespace: {ns}\n"),
            1,
        ));
        // A Deployment: its ReplicaSet and Pods are owned, so they never count as someone else's objects.
        documents.push(deployment("worker").replacen(
            "  name: worker\n",
            &format!("  name: worker\n  namespace: {ns}\n"),
            1,
        ));
    }
    let first = bundle(&documents);
    let report = apply(&client, &first, &options(&namespace)).await.unwrap();
    let created = Inventory::after_apply(None, &report);
    let applied = report.into_result().unwrap();
    assert_eq!(applied.len(), 6, "{:?}", names(&applied));
    // Someone keeps their own data in one of the bundle's namespaces.
    let user_data = parse(&config_map("user-data", "precious"))
        .unwrap()
        .remove(0)
        .try_parse::<ConfigMap>()
        .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &with_user_data)
        .create(&PostParams::default(), &user_data)
        .await
        .unwrap();

    // The next revision drops everything.
    let report = prune(&client, &created, &Inventory::default(), FIELD_MANAGER)
        .await
        .unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.kept.is_empty(), "{:?}", report.kept);
    let blocked: Vec<&(ObjectRef, String)> = report.blocked.iter().collect();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(
        (blocked[0].0.kind.as_str(), blocked[0].0.name.as_str()),
        ("Namespace", with_user_data.as_str())
    );
    // Only the user's ConfigMap: the Deployment's ReplicaSet and Pods, Events, `kube-root-ca.crt` and the
    // `default` ServiceAccount are not someone else's objects.
    assert!(
        blocked[0]
            .1
            .starts_with("1 object(s) Slipway did not create remain in it: ConfigMap/user-data;"),
        "{}",
        blocked[0].1
    );
    let mut deleted = names(&report.deleted);
    deleted.sort();
    assert_eq!(
        deleted,
        [
            "ConfigMap/settings".to_string(),
            "ConfigMap/settings".to_string(),
            "Deployment/worker".to_string(),
            "Deployment/worker".to_string(),
            format!("Namespace/{only_ours}"),
        ]
    );

    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let used = namespaces.get(&with_user_data).await.unwrap();
    assert!(
        used.metadata.deletion_timestamp.is_none(),
        "the Namespace with someone's data is being deleted"
    );
    let precious = Api::<ConfigMap>::namespaced(client.clone(), &with_user_data)
        .get("user-data")
        .await
        .unwrap();
    assert_eq!(precious.data.unwrap()["value"], "precious");
    let ours = namespaces.get_opt(&only_ours).await.unwrap();
    assert!(
        ours.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "the Namespace holding only the bundle's objects was not pruned"
    );
}

#[tokio::test]
async fn a_dropped_namespace_holding_a_custom_resource_slipway_did_not_create_is_kept_naming_it() {
    let (client, namespace) = setup("prune-cr").await;
    // A kind someone installed in the workload cluster by hand, outside any bundle: no fixed list of kinds knows it.
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
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.patch(
        "gizmos.attack.example.com",
        &PatchParams::apply("someone-else").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(
            crds,
            "gizmos.attack.example.com",
            kube::runtime::wait::conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap()
    .unwrap();

    let team = format!("{namespace}-team");
    let objects = bundle(&[
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {team}\n"),
        config_map("settings", "1").replacen(
            "  name: settings\n",
            &format!("  name: settings\n  namespace: {team}\n"),
            1,
        ),
    ]);
    let report = apply(&client, &objects, &options(&namespace))
        .await
        .unwrap();
    let created = Inventory::after_apply(None, &report);
    report.into_result().unwrap();

    let gizmos: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &team,
        &ApiResource {
            group: "attack.example.com".into(),
            version: "v1".into(),
            api_version: "attack.example.com/v1".into(),
            kind: "Gizmo".into(),
            plural: "gizmos".into(),
        },
    );
    let precious: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "attack.example.com/v1",
        "kind": "Gizmo",
        "metadata": {"name": "precious"},
        "spec": {"keep": "me"}
    }))
    .unwrap();
    // Established comes a moment before the apiserver serves the kind.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = gizmos.create(&PostParams::default(), &precious).await {
        assert!(std::time::Instant::now() < deadline, "create Gizmo: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let report = prune(&client, &created, &Inventory::default(), FIELD_MANAGER)
        .await
        .unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(names(&report.deleted), ["ConfigMap/settings"]);
    assert_eq!(report.blocked.len(), 1, "{:?}", report.blocked);
    let (object, reason) = &report.blocked[0];
    assert_eq!(
        (object.kind.as_str(), object.name.as_str()),
        ("Namespace", team.as_str())
    );
    assert!(
        reason.starts_with("1 object(s) Slipway did not create remain in it: Gizmo/precious;"),
        "{reason}"
    );
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    assert!(
        namespaces
            .get(&team)
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none(),
        "the Namespace holding someone's custom resource is being deleted"
    );
    assert_eq!(
        gizmos.get("precious").await.unwrap().data["spec"]["keep"],
        "me"
    );

    // Once the custom resource is gone, the next prune of what was left deletes the Namespace.
    gizmos
        .delete("precious", &DeleteParams::default())
        .await
        .unwrap();
    let left = Inventory::new(report.unfinished.clone());
    let report = prune(&client, &left, &Inventory::default(), FIELD_MANAGER)
        .await
        .unwrap();
    assert_eq!(names(&report.deleted), [format!("Namespace/{team}")]);
}

#[tokio::test]
async fn wait_ready_names_what_is_not_ready_and_why() {
    let (client, namespace) = setup("not-ready").await;
    let unschedulable = deployment("nowhere").replace(
        "      containers:",
        "      nodeSelector: {no-such-label: \"true\"}\n      containers:",
    );
    let applied = apply(&client, &bundle(&[unschedulable]), &options(&namespace))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let err = wait_ready(&client, &applied, Duration::from_secs(3))
        .await
        .unwrap_err();
    match &err {
        Error::NotReady { objects, .. } => {
            assert_eq!(objects.len(), 1);
            assert_eq!(objects[0].object.name, "nowhere");
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains(&format!("Deployment/{namespace}/nowhere: ")),
        "{err}"
    );
}

#[tokio::test]
async fn wait_for_api_returns_once_the_apiserver_answers_and_gives_up_on_a_dead_one() {
    let (client, _namespace) = setup("api").await;
    wait_for_api(&client, Duration::from_secs(10))
        .await
        .unwrap();

    // Nothing listens on a port we bound and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = kube::Config::new(format!("https://127.0.0.1:{port}").parse().unwrap());
    let dead = Client::try_from(config).unwrap();
    let started = std::time::Instant::now();
    let err = wait_for_api(&dead, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "bounded by the timeout"
    );
    assert!(
        matches!(err, Error::ApiUnreachable { seconds: 2, .. }),
        "{err:?}"
    );
    assert!(
        !err.to_string().ends_with(": "),
        "names the last error: {err}"
    );
}
