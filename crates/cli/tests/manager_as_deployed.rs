//! The manager as it is deployed: a `slipway manager` process authenticated as its ServiceAccount
//! (`system:serviceaccount:slipway-system:slipway-manager`, with a token from the real apiserver's TokenRequest API,
//! not an admin impersonating it) and only the RBAC `slipway init` installs from `config/rbac/`, logging at debug.
//! It takes a sim cluster through create, scale and delete, an AWS cluster against moto, a bare-metal cluster
//! against sushy-tools and a local cluster with an add-on bundle. Then:
//! - nothing it wrote (its log, Events, and every Slipway object's status, conditions and annotations) contains a
//!   secret value it was given or made (AWS keys, the BMC password, CA and service-account private keys, join
//!   token secrets, kubeconfig client keys);
//! - its log has no `forbidden` answer: the RBAC is enough;
//! - SelfSubjectAccessReviews show what the ServiceAccount may not do.
//!
//! Its own test binary: this manager must be the only one on its apiserver.

mod support;

// The providers' own test support: moto, sushy-tools, hosts.
#[path = "../../../providers/aws/tests/support/mod.rs"]
mod aws_support;
#[path = "../../../providers/baremetal/tests/support/mod.rs"]
mod metal;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use slipway_api::{AddonBundle, BareMetalHost, Cluster, MachinePool};
use support::{
    ManagerProcess, apply, apply_file, env, eventually, service_account_token, wait_ready,
};

const MANAGER_NAMESPACE: &str = "slipway-system";
const MANAGER_ACCOUNT: &str = "slipway-manager";
const AWS_ACCESS_KEY_ID: &str = "AKIALEAKCHECK0000042";
const AWS_SECRET_ACCESS_KEY: &str = "leak-check/aws-secret-key+never-in-a-log-0042";

/// A kubeconfig for the test's apiserver that authenticates with `token` instead of the admin certificate.
fn kubeconfig_with_token(admin: &Path, token: &str, out: &Path) {
    let text = std::fs::read_to_string(admin).unwrap();
    let mut config: Value = serde_saphyr::from_str(&text).unwrap();
    for user in config["users"].as_array_mut().unwrap() {
        user["user"] = json!({ "token": token });
    }
    std::fs::write(out, serde_json::to_string(&config).unwrap()).unwrap();
}

/// Every secret value a cluster's Secrets hold: private keys, join token secrets, kubeconfig client keys. The
/// lines of a PEM block are searched one by one, so a key cut up or re-wrapped is still found.
async fn cluster_secret_values(client: &Client, namespace: &str) -> Vec<String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut values = Vec::new();
    for secret in secrets.list(&ListParams::default()).await.unwrap() {
        for (key, value) in secret.data.unwrap_or_default() {
            let text = String::from_utf8_lossy(&value.0).to_string();
            match key.as_str() {
                "tls.key" | "key" | "token-secret" | "password" | "AWS_SECRET_ACCESS_KEY" => {
                    values.extend(pem_body_lines(&text));
                }
                "value" => {
                    // A kubeconfig: its client key.
                    let config: Value = serde_saphyr::from_str(&text).unwrap_or(Value::Null);
                    if let Some(key) = config["users"][0]["user"]["client-key-data"].as_str() {
                        values.push(key.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    values
}

/// The body lines of a PEM text (long enough to be unique), or the whole text when it is not PEM.
fn pem_body_lines(text: &str) -> Vec<String> {
    if !text.contains("-----BEGIN") {
        return vec![text.trim().to_string()];
    }
    text.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .map(str::to_string)
        .collect()
}

/// What the manager wrote that anyone may read: every Slipway object (status, conditions, annotations) and every
/// Event and ConfigMap of `namespaces`, as JSON text.
async fn readable_records(client: &Client, namespaces: &[&str]) -> Vec<(String, String)> {
    let mut records = Vec::new();
    for ns in namespaces {
        let dump = |kind: &str, name: String, value: Value| {
            (format!("{kind} {ns}/{name}"), value.to_string())
        };
        for o in Api::<Cluster>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            records.push(dump(
                "Cluster",
                o.name_any(),
                serde_json::to_value(&o).unwrap(),
            ));
        }
        for o in Api::<MachinePool>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            records.push(dump(
                "MachinePool",
                o.name_any(),
                serde_json::to_value(&o).unwrap(),
            ));
        }
        for o in Api::<AddonBundle>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            records.push(dump(
                "AddonBundle",
                o.name_any(),
                serde_json::to_value(&o).unwrap(),
            ));
        }
        for o in Api::<BareMetalHost>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            records.push(dump(
                "BareMetalHost",
                o.name_any(),
                serde_json::to_value(&o).unwrap(),
            ));
        }
        for o in Api::<ConfigMap>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            records.push(dump(
                "ConfigMap",
                o.name_any(),
                serde_json::to_value(&o).unwrap(),
            ));
        }
        for o in Api::<Event>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            records.push(dump(
                "Event",
                o.name_any(),
                serde_json::to_value(&o).unwrap(),
            ));
        }
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
        for o in events.list(&ListParams::default()).await.unwrap() {
            records.push(dump(
                "events.k8s.io Event",
                o.name_any(),
                serde_json::to_value(&o).unwrap(),
            ));
        }
    }
    records
}

async fn can_i(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: namespace.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap()
        .allowed
}

const BUNDLE: &str = r#"apiVersion: slipway.dev/v1alpha1
kind: AddonBundle
metadata:
  name: greeting
spec:
  clusterSelector:
    matchLabels:
      env: dev
  order: 1
  source:
    inline: |
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: greeting
        namespace: default
      data:
        hello: world
"#;

/// A bare-metal Cluster on hosts labelled `rack=r1`, with a pool of one.
fn metal_cluster(image_url: &str) -> String {
    format!(
        r#"apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata:
  name: metal
spec:
  kubernetes:
    version: v1.37.2
    distribution: k3s
  controlPlane:
    replicas: 1
  infrastructure:
    baremetal:
      hostSelector:
        matchLabels:
          rack: r1
      imageUrl: {image_url}
      controlPlaneEndpoint:
        host: 127.0.0.1
        port: 1
---
apiVersion: slipway.dev/v1alpha1
kind: MachinePool
metadata:
  name: metal-workers
spec:
  clusterName: metal
  replicas: 1
"#
    )
}

#[tokio::test]
async fn the_manager_as_its_service_account_does_every_journey_and_leaks_no_secret() {
    let env = env().await;
    let admin = env.client().await;
    let work = tempfile::tempdir().unwrap();

    // RBAC, the namespace and the ServiceAccount as `slipway init` installs them.
    let init = support::slipway_cli(Some(env.kubeconfig_path()), &["init", "--without-manager"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let token = service_account_token(&admin, MANAGER_NAMESPACE, MANAGER_ACCOUNT).await;
    let kubeconfig = work.path().join("manager.kubeconfig");
    kubeconfig_with_token(env.kubeconfig_path(), &token, &kubeconfig);

    let moto = aws_support::Moto::start().await;
    let sushy = metal::Sushy::start(2, true).await;
    let image = metal::ImageServer::start().await;
    let state = work.path().join("clusters");
    let log = work.path().join("manager.log");
    let aws_endpoint = format!("--aws-endpoint-url={}", moto.url);
    let state_arg = format!("--local-state-dir={}", state.display());
    let _manager = ManagerProcess::start_logging(
        &kubeconfig,
        &log,
        &[
            "--enable-provider=sim,local",
            // sushy-tools and the image server listen on loopback.
            "--allow-egress=127.0.0.0/8",
            "--lease-namespace=slipway-system",
            &aws_endpoint,
            &state_arg,
        ],
        "debug",
    );

    let sim_ns = env.create_namespace("as-sa-sim").await;
    let aws_ns = env.create_namespace("as-sa-aws").await;
    let metal_ns = env.create_namespace("as-sa-metal").await;
    let local_ns = env.create_namespace("as-sa-local").await;

    // sim: create, scale, delete.
    apply(&admin, &sim_ns, &support::sim_cluster("fleet", 1, 2, "{}")).await;
    wait_ready(&admin, &sim_ns, "fleet", Duration::from_secs(60)).await;
    Api::<MachinePool>::namespaced(admin.clone(), &sim_ns)
        .patch(
            "fleet-workers",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 3 } })),
        )
        .await
        .unwrap();
    eventually(
        "the sim pool scaled to 3",
        Duration::from_secs(60),
        || async {
            let pool = Api::<MachinePool>::namespaced(admin.clone(), &sim_ns)
                .get("fleet-workers")
                .await
                .map_err(|e| e.to_string())?;
            let ready = pool.status.map(|s| s.ready_replicas).unwrap_or_default();
            (ready == 3).then_some(()).ok_or(format!("{ready} ready"))
        },
    )
    .await;

    // aws against moto, with credentials the test chose.
    let credentials: Secret = serde_json::from_value(json!({
        "metadata": { "name": "aws-credentials" },
        "stringData": { "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY }
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), &aws_ns)
        .create(&PostParams::default(), &credentials)
        .await
        .unwrap();
    apply(
        &admin,
        &aws_ns,
        &format!(
            r#"apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata:
  name: cloud
spec:
  kubernetes:
    version: v1.37.2
  controlPlane:
    replicas: 1
    machine:
      image: {ami}
  infrastructure:
    aws:
      region: us-east-1
      credentialsSecretRef:
        name: aws-credentials
      availabilityZones: [us-east-1a]
---
apiVersion: slipway.dev/v1alpha1
kind: MachinePool
metadata:
  name: cloud-workers
spec:
  clusterName: cloud
  replicas: 1
  template:
    machine:
      image: {ami}
"#,
            ami = aws_support::MOTO_UBUNTU_AMI
        ),
    )
    .await;

    // bare metal against sushy-tools.
    metal::create_hosts(&admin, &metal_ns, &sushy, 2).await;
    apply(&admin, &metal_ns, &metal_cluster(&image.url)).await;

    // local, with an add-on bundle.
    apply_file(
        &admin,
        &local_ns,
        &support::repo_path("config/samples/local-cluster.yaml"),
    )
    .await;
    apply(&admin, &local_ns, BUNDLE).await;

    wait_ready(&admin, &aws_ns, "cloud", Duration::from_secs(120)).await;
    wait_ready(&admin, &metal_ns, "metal", Duration::from_secs(180)).await;
    wait_ready(&admin, &local_ns, "local-demo", Duration::from_secs(180)).await;
    eventually(
        "the bundle ready on local-demo",
        Duration::from_secs(60),
        || async {
            let bundle = Api::<AddonBundle>::namespaced(admin.clone(), &local_ns)
                .get("greeting")
                .await
                .map_err(|e| e.to_string())?;
            let clusters = bundle.status.map(|s| s.clusters).unwrap_or_default();
            clusters
                .iter()
                .find(|c| c.cluster == "local-demo" && c.ready)
                .map(|_| ())
                .ok_or(format!("{clusters:?}"))
        },
    )
    .await;

    // Every secret value in play, read while the clusters still have their Secrets.
    let namespaces = [
        sim_ns.as_str(),
        aws_ns.as_str(),
        metal_ns.as_str(),
        local_ns.as_str(),
    ];
    let mut secrets = vec![
        AWS_ACCESS_KEY_ID.to_string(),
        AWS_SECRET_ACCESS_KEY.to_string(),
        metal::PASSWORD.to_string(),
        token.clone(),
    ];
    for ns in namespaces {
        secrets.extend(cluster_secret_values(&admin, ns).await);
    }
    assert!(
        secrets.len() > 20,
        "too few secret values to search for: {}",
        secrets.len()
    );
    let before_deletion = readable_records(&admin, &namespaces).await;

    // Deleting everything is part of the journeys.
    for (ns, name) in [
        (&sim_ns, "fleet"),
        (&aws_ns, "cloud"),
        (&metal_ns, "metal"),
        (&local_ns, "local-demo"),
    ] {
        Api::<Cluster>::namespaced(admin.clone(), ns)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    for (ns, name) in [
        (&sim_ns, "fleet"),
        (&aws_ns, "cloud"),
        (&metal_ns, "metal"),
        (&local_ns, "local-demo"),
    ] {
        support::wait_deleted(&admin, ns, name, Duration::from_secs(180)).await;
    }

    let manager_log = std::fs::read_to_string(&log).unwrap();
    let mut records = before_deletion;
    records.extend(readable_records(&admin, &namespaces).await);
    records.extend(
        manager_log
            .lines()
            .enumerate()
            .map(|(i, line)| (format!("manager log line {}", i + 1), line.to_string())),
    );
    // The RBAC was enough: nothing the manager asked for was refused.
    let forbidden: Vec<&str> = manager_log
        .lines()
        .filter(|l| l.contains("forbidden") || l.contains("Forbidden"))
        .collect();
    assert!(
        forbidden.is_empty(),
        "the manager was refused:\n{}",
        forbidden.join("\n")
    );

    // What the ServiceAccount may and may not do.
    let as_manager = support::client_from_kubeconfig(&kubeconfig).await;
    let tenant = Some(sim_ns.as_str());
    let expectations: &[(&str, &str, &str, Option<&str>, bool)] = &[
        ("list", "slipway.dev", "clusters", None, true),
        ("patch", "slipway.dev", "clusters/status", tenant, true),
        ("create", "", "secrets", tenant, true),
        ("get", "", "secrets", tenant, true),
        ("update", "", "secrets", tenant, false),
        ("create", "slipway.dev", "clusters", tenant, false),
        ("update", "slipway.dev", "clusters", tenant, false),
        ("list", "", "pods", tenant, false),
        ("create", "", "pods", tenant, false),
        ("create", "", "pods/exec", tenant, false),
        // Inventories are listed by label when a bundle is deleted; ConfigMaps are never watched or updated.
        ("list", "", "configmaps", tenant, true),
        ("watch", "", "configmaps", tenant, false),
        ("update", "", "configmaps", tenant, false),
        (
            "create",
            "",
            "serviceaccounts/token",
            MANAGER_NAMESPACE.into(),
            false,
        ),
        (
            "create",
            "rbac.authorization.k8s.io",
            "clusterroles",
            None,
            false,
        ),
        (
            "bind",
            "rbac.authorization.k8s.io",
            "clusterroles",
            None,
            false,
        ),
        (
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings",
            tenant,
            false,
        ),
        (
            "update",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
            false,
        ),
        ("delete", "", "namespaces", None, false),
        ("list", "", "nodes", None, false),
        ("create", "apps", "deployments", tenant, false),
        ("impersonate", "", "users", None, false),
    ];
    println!(
        "{:<12} {:<40} {:<14} ALLOWED",
        "VERB", "RESOURCE", "NAMESPACE"
    );
    let mut wrong = Vec::new();
    for (verb, group, resource, namespace, expected) in expectations {
        let allowed = can_i(&as_manager, verb, group, resource, *namespace).await;
        let shown = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        println!(
            "{verb:<12} {shown:<40} {:<14} {allowed}",
            namespace
                .map(|n| if n == MANAGER_NAMESPACE {
                    n
                } else {
                    "(a tenant's)"
                })
                .unwrap_or("(all)")
        );
        if allowed != *expected {
            wrong.push(format!(
                "{verb} {shown}: allowed={allowed}, expected {expected}"
            ));
        }
    }
    assert!(wrong.is_empty(), "RBAC differs:\n{}", wrong.join("\n"));
    let mut leaks = Vec::new();
    for (place, text) in &records {
        for secret in &secrets {
            if text.contains(secret.as_str()) {
                // The text around it, with the value itself blanked, says where it comes from.
                let blanked = text.replace(secret.as_str(), "<SECRET>");
                let at = blanked.find("<SECRET>").unwrap_or_default();
                let shown: String = blanked
                    .chars()
                    .skip(blanked[..at].chars().count().saturating_sub(300))
                    .take(400)
                    .collect();
                leaks.push(format!(
                    "{place} holds a secret value starting {:?}: {shown}",
                    &secret[..8]
                ));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "secret values found:\n{}",
        leaks.join("\n")
    );
    println!(
        "searched {} records ({} manager log lines) for {} secret values: none found",
        records.len(),
        manager_log.lines().count(),
        secrets.len()
    );
}
