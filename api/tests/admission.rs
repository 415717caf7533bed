//! What the apiserver does with Slipway's CRDs: it establishes them, accepts every sample and every valid
//! case, refuses every case in `tests/invalid/` with the message that file promises, applies the defaults, and
//! serves the status and scale subresources and the printer columns.
//!
//! Runs against a real etcd + kube-apiserver (slipway-testenv), never a fake: the apiserver is the only judge
//! of whether a schema is structural and what a CEL rule really says. Objects are written by server-side apply
//! with strict field validation, as `kubectl apply --server-side` does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, ValidationDirective,
};
use kube::runtime::wait::{await_condition, conditions::is_crd_established};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};
use slipway_api::{
    AddonBundle, BareMetalHost, Cluster, Distribution, FIELD_MANAGER, MachinePool, conditions,
};
use slipway_testenv::TestEnv;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The `.yaml` files of a directory, sorted so failures list in a stable order.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

fn documents(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Like `kubectl apply --server-side`: Slipway's field manager, conflicts forced, unknown fields refused.
fn apply_params() -> PatchParams {
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.field_validation = Some(ValidationDirective::Strict);
    params
}

/// The API for a document's kind: the three Slipway kinds and the core kinds the samples use.
fn api_for(client: &Client, namespace: &str, doc: &Value) -> Api<DynamicObject> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let resource = match (api_version, kind) {
        ("slipway.dev/v1alpha1", "Cluster") => Cluster::api_resource(),
        ("slipway.dev/v1alpha1", "MachinePool") => MachinePool::api_resource(),
        ("slipway.dev/v1alpha1", "AddonBundle") => AddonBundle::api_resource(),
        ("slipway.dev/v1alpha1", "BareMetalHost") => BareMetalHost::api_resource(),
        ("v1", "Secret") => ApiResource::erase::<Secret>(&()),
        ("v1", "ConfigMap") => ApiResource::erase::<ConfigMap>(&()),
        other => panic!("no API known for {other:?}; add it to api_for"),
    };
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn name_of(doc: &Value) -> String {
    doc["metadata"]["name"]
        .as_str()
        .expect("every document has metadata.name")
        .to_string()
}

async fn apply(
    client: &Client,
    namespace: &str,
    doc: &Value,
) -> Result<DynamicObject, kube::Error> {
    api_for(client, namespace, doc)
        .patch(&name_of(doc), &apply_params(), &Patch::Apply(doc))
        .await
}

/// Applies the checked-in CRD files (what a user applies) and waits until each is served. Every test calls
/// this: applying the same CRDs again is a no-op, and tests run in any order.
async fn install_crds(client: &Client) -> Vec<String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for path in yaml_files(&repo_path("../config/crd")) {
        for doc in documents(&path) {
            let crd: CustomResourceDefinition = serde_json::from_value(doc).unwrap();
            let name = crd.name_any();
            api.patch(&name, &apply_params(), &Patch::Apply(&crd))
                .await
                .unwrap_or_else(|e| panic!("apply {}: {e}", file_name(&path)));
            names.push(name);
        }
    }
    for name in &names {
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(api.clone(), name, is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("{name} not Established within 60s"))
        .unwrap();
    }
    names
}

async fn setup(prefix: &str) -> (Client, String) {
    let env = TestEnv::shared().await;
    let client = env.client().await;
    install_crds(&client).await;
    let namespace = env.create_namespace(prefix).await;
    (client, namespace)
}

fn error_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// Reads every Slipway object of the namespace back as the Rust types, so a field the apiserver stores but
/// the types cannot read (or the other way round) shows up here rather than in a controller.
async fn read_back_typed(client: &Client, namespace: &str) -> usize {
    let all = ListParams::default();
    let clusters = Api::<Cluster>::namespaced(client.clone(), namespace)
        .list(&all)
        .await;
    let clusters = clusters.expect("stored Clusters read as slipway_api::Cluster");
    let pools = Api::<MachinePool>::namespaced(client.clone(), namespace)
        .list(&all)
        .await;
    let pools = pools.expect("stored MachinePools read as slipway_api::MachinePool");
    let bundles = Api::<AddonBundle>::namespaced(client.clone(), namespace)
        .list(&all)
        .await;
    let bundles = bundles.expect("stored AddonBundles read as slipway_api::AddonBundle");
    let hosts = Api::<BareMetalHost>::namespaced(client.clone(), namespace)
        .list(&all)
        .await;
    let hosts = hosts.expect("stored BareMetalHosts read as slipway_api::BareMetalHost");
    clusters.items.len() + pools.items.len() + bundles.items.len() + hosts.items.len()
}

#[tokio::test]
async fn every_crd_is_accepted_and_established() {
    let env = TestEnv::shared().await;
    let client = env.client().await;
    let mut names = install_crds(&client).await;
    names.sort();
    let mut expected: Vec<String> = slipway_api::crds()
        .iter()
        .map(|crd| crd.name_any())
        .collect();
    expected.sort();
    assert_eq!(
        names, expected,
        "config/crd holds exactly the CRDs of slipway_api::crds()"
    );
}

/// Applies every document of `files` into `namespace`, in order, and reads the Slipway objects back as the Rust
/// types. A later document with the kind and name of an earlier one is an update of it (how `tests/valid/`
/// expresses an update that must be accepted, e.g. a one-minor version upgrade). Returns one line per refused
/// document.
async fn apply_files_and_read_back(
    client: &Client,
    namespace: &str,
    files: &[PathBuf],
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut slipway_objects = std::collections::BTreeSet::new();
    for path in files {
        for doc in documents(path) {
            if doc["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("slipway.dev/"))
            {
                slipway_objects.insert((doc["kind"].to_string(), name_of(&doc)));
            }
            if let Err(e) = apply(client, namespace, &doc).await {
                failures.push(format!(
                    "{} {}: {}",
                    file_name(path),
                    name_of(&doc),
                    error_message(&e)
                ));
            }
        }
    }
    if failures.is_empty() {
        assert_eq!(
            read_back_typed(client, namespace).await,
            slipway_objects.len()
        );
    }
    failures
}

#[tokio::test]
async fn every_sample_is_accepted() {
    let (client, namespace) = setup("samples").await;
    let samples = yaml_files(&repo_path("../config/samples"));
    assert!(
        samples.len() >= 5,
        "config/samples has a sample per provider and one of add-ons"
    );
    let failures = apply_files_and_read_back(&client, &namespace, &samples).await;
    assert!(
        failures.is_empty(),
        "samples refused:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn every_valid_case_is_accepted() {
    let (client, namespace) = setup("valid").await;
    let cases = yaml_files(&repo_path("tests/valid"));
    let failures = apply_files_and_read_back(&client, &namespace, &cases).await;
    assert!(
        failures.is_empty(),
        "valid cases refused:\n{}",
        failures.join("\n")
    );
}

/// One file of `tests/invalid/`: the YAML, the fragment the apiserver's message must contain (`# expect:`) and,
/// for a case about updates (`# update-of: FILE`), the valid object to create first: the first document of
/// `tests/valid/FILE`, under the case's name. The case's own document is then the update that must be refused.
struct InvalidCase {
    file: String,
    expect: String,
    update_of: Option<String>,
    doc: Value,
}

fn invalid_cases() -> Vec<InvalidCase> {
    yaml_files(&repo_path("tests/invalid"))
        .into_iter()
        .map(|path| {
            let file = file_name(&path);
            let text = std::fs::read_to_string(&path).unwrap();
            let header = |key: &str| {
                text.lines()
                    .take_while(|line| line.starts_with('#'))
                    .find_map(|line| line.strip_prefix(&format!("# {key}:")))
                    .map(|value| value.trim().to_string())
            };
            let expect = header("expect")
                .unwrap_or_else(|| panic!("{file}: no `# expect:` line at the top"));
            let update_of = header("update-of");
            let mut docs = documents(&path);
            assert_eq!(docs.len(), 1, "{file}: one object per invalid case");
            InvalidCase {
                file,
                expect,
                update_of,
                doc: docs.remove(0),
            }
        })
        .collect()
}

/// What happened to one case, as a line of the failure table; `None` when the case behaved.
async fn run_invalid_case(client: &Client, namespace: &str, case: &InvalidCase) -> Option<String> {
    if let Some(base) = &case.update_of {
        let mut docs = documents(&repo_path("tests/valid").join(base));
        let mut base_doc = docs.remove(0);
        base_doc["metadata"]["name"] = case.doc["metadata"]["name"].clone();
        if let Err(e) = apply(client, namespace, &base_doc).await {
            return Some(format!(
                "{:<45} | base {base} refused: {}",
                case.file,
                error_message(&e)
            ));
        }
    }
    match apply(client, namespace, &case.doc).await {
        Ok(_) => Some(format!(
            "{:<45} | ACCEPTED (expected: {})",
            case.file, case.expect
        )),
        Err(e) => {
            let message = error_message(&e);
            (!message.contains(&case.expect)).then(|| {
                format!(
                    "{:<45} | expected {:?}\n{:<45} | got      {message:?}",
                    case.file, case.expect, ""
                )
            })
        }
    }
}

#[tokio::test]
async fn every_invalid_case_is_refused_with_its_message() {
    let (client, namespace) = setup("invalid").await;
    let cases = invalid_cases();
    assert!(
        cases.len() >= 28,
        "tests/invalid has at least 28 cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        if let Some(failure) = run_invalid_case(&client, &namespace, case).await {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid cases misbehaved:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Cases too large to keep as files: inline manifests over 1 MiB, and a pool scaled past 1000 through `/scale`
/// (the path `kubectl scale` and autoscalers take).
#[tokio::test]
async fn oversized_inline_manifests_and_scaling_past_the_limit_are_refused() {
    let (client, namespace) = setup("limits").await;
    let inline = |size: usize| {
        // A valid document padded with a YAML comment up to `size` characters.
        let document = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n# ";
        format!("{document}{}", "x".repeat(size - document.len()))
    };
    let bundle = |name: &str, size: usize| {
        json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "AddonBundle",
            "metadata": { "name": name },
            "spec": { "source": { "inline": inline(size) } },
        })
    };
    let limit = slipway_api::limits::MAX_INLINE_MANIFESTS;
    apply(&client, &namespace, &bundle("at-the-limit", limit))
        .await
        .expect("1 MiB of inline manifests is accepted");
    let refused = apply(&client, &namespace, &bundle("over-the-limit", limit + 1))
        .await
        .expect_err("more than 1 MiB of inline manifests is refused");
    let message = error_message(&refused);
    // The schema's own message: it names the field and the limit. (A CEL rule with a friendlier message would not
    // run: the apiserver skips CEL rules once the schema refused the object.)
    assert!(
        message.contains("spec.source.inline: Too long: may not be more than 1048576 bytes"),
        "got {message}"
    );

    let pools: Api<MachinePool> = Api::namespaced(client.clone(), &namespace);
    let pool = json!({
        "apiVersion": "slipway.dev/v1alpha1", "kind": "MachinePool",
        "metadata": { "name": "workers" }, "spec": { "clusterName": "demo", "replicas": 3 },
    });
    pools
        .patch("workers", &apply_params(), &Patch::Apply(&pool))
        .await
        .unwrap();
    let merge = PatchParams::default();
    pools
        .patch_scale(
            "workers",
            &merge,
            &Patch::Merge(json!({ "spec": { "replicas": 1000 } })),
        )
        .await
        .expect("1000 replicas are accepted");
    let refused = pools
        .patch_scale(
            "workers",
            &merge,
            &Patch::Merge(json!({ "spec": { "replicas": 1001 } })),
        )
        .await
        .expect_err("1001 replicas are refused through /scale");
    let message = error_message(&refused);
    assert!(
        message.contains("spec.replicas in body should be less than or equal to 1000"),
        "got {message}"
    );
}

#[tokio::test]
async fn the_apiserver_fills_in_the_documented_defaults() {
    let (client, namespace) = setup("defaults").await;
    let minimal = documents(&repo_path("tests/valid/cluster-sim.yaml")).remove(0);
    apply(&client, &namespace, &minimal).await.unwrap();
    let cluster = Api::<Cluster>::namespaced(client.clone(), &namespace)
        .get(&name_of(&minimal))
        .await
        .unwrap();
    let spec = &cluster.spec;
    assert_eq!(spec.kubernetes.distribution, Distribution::Kubeadm);
    assert_eq!(spec.kubernetes.network.pod_cidr, "10.244.0.0/16");
    assert_eq!(spec.kubernetes.network.service_cidr, "10.96.0.0/12");
    assert_eq!(spec.kubernetes.network.dns_domain, "cluster.local");
    assert_eq!(spec.control_plane.replicas, 1);
    assert!(!spec.paused);

    let pool = documents(&repo_path("tests/valid/pool.yaml")).remove(0);
    apply(&client, &namespace, &pool).await.unwrap();
    let pool = Api::<MachinePool>::namespaced(client.clone(), &namespace)
        .get(&name_of(&pool))
        .await
        .unwrap();
    assert_eq!(pool.spec.replicas, 1);
    assert_eq!(
        (
            pool.spec.strategy.max_surge,
            pool.spec.strategy.max_unavailable
        ),
        (1, 0)
    );

    let bundle = documents(&repo_path("tests/valid/addon-inline.yaml")).remove(0);
    apply(&client, &namespace, &bundle).await.unwrap();
    let bundle = Api::<AddonBundle>::namespaced(client, &namespace)
        .get(&name_of(&bundle))
        .await
        .unwrap();
    assert_eq!(bundle.spec.mode, slipway_api::AddonMode::Reconcile);
    assert_eq!(bundle.spec.order, 0);
}

#[tokio::test]
async fn machine_pool_serves_status_and_scale_subresources() {
    let (client, namespace) = setup("scale").await;
    let pools: Api<MachinePool> = Api::namespaced(client.clone(), &namespace);
    let pool = json!({
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": "MachinePool",
        "metadata": { "name": "workers" },
        "spec": { "clusterName": "demo", "replicas": 3 },
    });
    pools
        .patch("workers", &apply_params(), &Patch::Apply(&pool))
        .await
        .unwrap();

    // Status goes through /status only: the main endpoint ignores it.
    let with_status = json!({
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": "MachinePool",
        "metadata": { "name": "workers" },
        "status": {
            "replicas": 3,
            "readyReplicas": 2,
            "selector": "slipway.dev/pool=workers",
            "machines": [{ "name": "workers-a", "phase": "Running", "providerID": "sim://workers-a" }],
            "conditions": [{
                "type": conditions::SCALING_UP, "status": "True", "reason": "CreatingMachines",
                "message": "2 of 3 machines ready", "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        },
    });
    let status_manager = PatchParams::apply("slipway-status").force();
    pools
        .patch_status("workers", &status_manager, &Patch::Apply(&with_status))
        .await
        .unwrap();
    let read = pools.get("workers").await.unwrap();
    let status = read
        .status
        .as_ref()
        .expect("status written through /status");
    assert_eq!((status.replicas, status.ready_replicas), (3, 2));
    assert!(conditions::is_true(
        &status.conditions,
        conditions::SCALING_UP
    ));
    assert_eq!(
        status.machines[0].provider_id.as_deref(),
        Some("sim://workers-a")
    );

    // The scale subresource reads spec.replicas, status.replicas and the selector...
    let scale = pools.get_scale("workers").await.unwrap();
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let scale_status = scale.status.as_ref().unwrap();
    assert_eq!(scale_status.replicas, 3);
    assert_eq!(
        scale_status.selector.as_deref(),
        Some("slipway.dev/pool=workers")
    );

    // ...and writing it changes spec.replicas, as `kubectl scale` does.
    let merge = PatchParams::default();
    pools
        .patch_scale(
            "workers",
            &merge,
            &Patch::Merge(json!({ "spec": { "replicas": 5 } })),
        )
        .await
        .unwrap();
    assert_eq!(pools.get("workers").await.unwrap().spec.replicas, 5);

    // The same rules hold through /scale.
    let refused = pools
        .patch_scale(
            "workers",
            &merge,
            &Patch::Merge(json!({ "spec": { "replicas": -1 } })),
        )
        .await;
    let message = error_message(&refused.expect_err("negative replicas refused through /scale"));
    assert!(
        message.contains("should be greater than or equal to 0"),
        "got {message}"
    );
}

#[tokio::test]
async fn machine_pools_can_be_listed_by_cluster_name() {
    let (client, namespace) = setup("selectable").await;
    let pools: Api<MachinePool> = Api::namespaced(client.clone(), &namespace);
    for (name, cluster) in [("a-workers", "a"), ("a-gpu", "a"), ("b-workers", "b")] {
        let pool = json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "MachinePool",
            "metadata": { "name": name }, "spec": { "clusterName": cluster },
        });
        pools
            .patch(name, &apply_params(), &Patch::Apply(&pool))
            .await
            .unwrap();
    }
    let of_a = pools
        .list(&ListParams::default().fields("spec.clusterName=a"))
        .await
        .unwrap();
    let mut names: Vec<String> = of_a.items.iter().map(|p| p.name_any()).collect();
    names.sort();
    assert_eq!(names, ["a-gpu", "a-workers"]);
}

#[tokio::test]
async fn cluster_status_round_trips_and_shows_in_kubectl_columns() {
    let (client, namespace) = setup("columns").await;
    let doc = documents(&repo_path("tests/valid/cluster-sim.yaml")).remove(0);
    apply(&client, &namespace, &doc).await.unwrap();
    let name = name_of(&doc);
    let status = json!({
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": { "name": name },
        "status": {
            "phase": "Provisioned",
            "provider": "sim",
            "expiresAt": "2030-01-01T00:00:00Z",
            "observedGeneration": 1,
            "controlPlaneEndpoint": { "host": "127.0.0.1", "port": 6443 },
            "kubeconfigSecretRef": { "name": format!("{name}-kubeconfig") },
            "cost": { "perHour": "0.00", "currency": "USD", "note": "sim machines are free" },
            "conditions": [{
                "type": conditions::READY, "status": "True", "reason": "Ready", "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1,
            }],
        },
    });
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &namespace);
    clusters
        .patch_status(
            &name,
            &PatchParams::apply("slipway-status").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    let read = clusters.get(&name).await.unwrap();
    let read_status = read.status.unwrap();
    assert_eq!(
        read_status.phase,
        Some(slipway_api::ClusterPhase::Provisioned)
    );
    assert!(conditions::is_true(
        &read_status.conditions,
        conditions::READY
    ));

    // What `kubectl get clusters` prints: the server renders the table from the CRD's printer columns.
    let request = http::Request::get(format!(
        "/apis/slipway.dev/v1alpha1/namespaces/{namespace}/clusters/{name}"
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .unwrap();
    let table: Value = client.request(request).await.unwrap();
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Name", "Phase", "Ready", "Version", "Provider", "Expires", "Age"
        ]
    );
    let cells = table["rows"][0]["cells"].as_array().unwrap();
    assert_eq!(
        &cells[..6],
        &[
            json!(name),
            json!("Provisioned"),
            json!("True"),
            json!("v1.37.2"),
            json!("sim"),
            json!("2030-01-01T00:00:00Z")
        ]
    );
}

#[tokio::test]
async fn a_status_write_cannot_smuggle_in_an_invalid_phase() {
    let (client, namespace) = setup("phase").await;
    let doc = documents(&repo_path("tests/valid/cluster-sim.yaml")).remove(0);
    apply(&client, &namespace, &doc).await.unwrap();
    let name = name_of(&doc);
    let clusters: Api<Cluster> = Api::namespaced(client, &namespace);
    let bad = json!({
        "apiVersion": "slipway.dev/v1alpha1", "kind": "Cluster", "metadata": { "name": name },
        "status": { "phase": "Exploded" },
    });
    let refused = clusters
        .patch_status(
            &name,
            &PatchParams::apply("slipway-status").force(),
            &Patch::Apply(&bad),
        )
        .await;
    let message = error_message(&refused.expect_err("unknown phase refused"));
    assert!(
        message.contains(r#"status.phase: Unsupported value: "Exploded""#),
        "got {message}"
    );
}
