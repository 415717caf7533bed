//! What a tenant writes in its own namespace cannot make the shared manager run a command, send its requests
//! elsewhere or delete files outside the manager's state directory.

mod support;

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use slipway_api::{AddonBundle, Cluster};
use slipway_bootstrap::secrets::{KUBECONFIG_DIGEST_ANNOTATION, kubeconfig_digest};
use support::{apply, apply_file, env, eventually, local_manager, wait_ready};

const BUNDLE: &str = r#"apiVersion: slipway.dev/v1alpha1
kind: AddonBundle
metadata:
  name: marker
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
        name: tenant-marker
        namespace: default
      data:
        written: "by slipway"
"#;

/// The kubeconfig in `<cluster>-kubeconfig`, as JSON.
async fn kubeconfig(secrets: &Api<Secret>, name: &str) -> Value {
    let secret = secrets.get(&format!("{name}-kubeconfig")).await.unwrap();
    let value = &secret.data.unwrap()["value"].0;
    serde_saphyr::from_slice(value).unwrap()
}

/// Replaces the kubeconfig's value; with `forge_digest` also the digest annotation, as someone who knows how
/// Slipway marks its own Secrets would.
async fn write_kubeconfig(
    secrets: &Api<Secret>,
    name: &str,
    kubeconfig: &Value,
    forge_digest: bool,
) {
    let value = serde_json::to_vec(kubeconfig).unwrap();
    let mut patch = json!({ "data": { "value": ByteString(value.clone()) } });
    if forge_digest {
        patch["metadata"] =
            json!({ "annotations": { KUBECONFIG_DIGEST_ANNOTATION: kubeconfig_digest(&value) } });
    }
    secrets
        .patch(
            &format!("{name}-kubeconfig"),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
}

/// The bundle's message for `cluster`, once it contains `expected`.
async fn bundle_says(bundles: &Api<AddonBundle>, cluster: &str, expected: &str) -> String {
    eventually(
        &format!("bundle status for {cluster} saying {expected:?}"),
        Duration::from_secs(60),
        || async {
            let bundle = bundles.get("marker").await.map_err(|e| e.to_string())?;
            let entry = bundle
                .status
                .and_then(|s| s.clusters.into_iter().find(|c| c.cluster == cluster))
                .ok_or("no status for the cluster")?;
            let message = entry.message.unwrap_or_default();
            if message.contains(expected) {
                Ok(message)
            } else {
                Err(format!("ready={} message={message}", entry.ready))
            }
        },
    )
    .await
}

async fn bundle_ready(bundles: &Api<AddonBundle>, cluster: &str) {
    eventually(
        &format!("bundle ready on {cluster}"),
        Duration::from_secs(60),
        || async {
            let bundle = bundles.get("marker").await.map_err(|e| e.to_string())?;
            let entry = bundle
                .status
                .and_then(|s| s.clusters.into_iter().find(|c| c.cluster == cluster))
                .ok_or("no status for the cluster")?;
            if entry.ready && entry.observed_generation == bundle.metadata.generation {
                Ok(())
            } else {
                Err(format!("{:?}", entry.message))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_kubeconfig_secret_cannot_make_the_manager_run_a_command_or_talk_elsewhere() {
    let env = env().await;
    local_manager(env, Duration::from_secs(1));
    let ns = env.create_namespace("trust").await;
    let client = env.client().await;
    apply_file(
        &client,
        &ns,
        &support::repo_path("config/samples/local-cluster.yaml"),
    )
    .await;
    wait_ready(&client, &ns, "local-demo", Duration::from_secs(120)).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let bundles: Api<AddonBundle> = Api::namespaced(client.clone(), &ns);
    apply(&client, &ns, BUNDLE).await;
    bundle_ready(&bundles, "local-demo").await;

    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("the-manager-ran-this");
    let original = kubeconfig(&secrets, "local-demo").await;
    let with_exec = |mut config: Value| {
        config["users"][0]["user"] = json!({ "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "/bin/sh",
            "args": ["-c", format!("touch {}", marker.display())],
            "interactiveMode": "Never",
        } });
        config
    };

    // Changed without knowing Slipway's digest: the manager notices and writes its own kubeconfig back.
    write_kubeconfig(&secrets, "local-demo", &with_exec(original.clone()), false).await;
    eventually(
        "the kubeconfig rewritten",
        Duration::from_secs(60),
        || async {
            let now = kubeconfig(&secrets, "local-demo").await;
            if now["users"][0]["user"].get("exec").is_none()
                && now["users"][0]["user"]["client-key-data"].is_string()
            {
                Ok(())
            } else {
                Err(format!("user is {}", now["users"][0]["user"]))
            }
        },
    )
    .await;
    bundle_ready(&bundles, "local-demo").await;

    // Changed with a forged digest: refused, naming the field, each time.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let elsewhere = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let current = kubeconfig(&secrets, "local-demo").await;
    let mut token_file = current.clone();
    token_file["users"][0]["user"] =
        json!({ "tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token" });
    let mut insecure = current.clone();
    insecure["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = json!(true);
    let mut other_server = current.clone();
    other_server["clusters"][0]["cluster"]["server"] = json!(format!("https://{elsewhere}"));
    let mut key_file = current.clone();
    key_file["users"][0]["user"]["client-key"] = json!("/etc/ssl/private/manager.key");
    for (config, field) in [
        (with_exec(current.clone()), "users[].user.exec"),
        (token_file, "users[].user.tokenFile"),
        (insecure, "clusters[].cluster.insecure-skip-tls-verify"),
        (other_server, "clusters[].cluster.server"),
        (key_file, "users[].user.client-key"),
    ] {
        write_kubeconfig(&secrets, "local-demo", &config, true).await;
        let message = bundle_says(&bundles, "local-demo", field).await;
        assert!(message.contains("is not accepted"), "{message}");
        // Nothing of the Secret's data is repeated in the message.
        let key = current["users"][0]["user"]["client-key-data"]
            .as_str()
            .unwrap();
        assert!(!message.contains(key), "{message}");
    }
    assert!(
        !marker.exists(),
        "the manager ran the kubeconfig's exec command"
    );
    assert!(
        listener.accept().is_err(),
        "the manager connected to a server the kubeconfig named"
    );

    // Slipway's own kubeconfig back in place (deleting the Secret makes the manager write a new one): all is well.
    secrets
        .delete("local-demo-kubeconfig", &DeleteParams::default())
        .await
        .unwrap();
    bundle_ready(&bundles, "local-demo").await;
    let workload = support::workload_client(&client, &ns, "local-demo").await;
    let written = Api::<ConfigMap>::namespaced(workload, "default")
        .get("tenant-marker")
        .await
        .unwrap();
    assert_eq!(written.data.unwrap()["written"], "by slipway");
    assert!(!marker.exists());

    bundles
        .delete("marker", &DeleteParams::default())
        .await
        .unwrap();
    Api::<Cluster>::namespaced(client.clone(), &ns)
        .delete("local-demo", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_deleted(&client, &ns, "local-demo", Duration::from_secs(120)).await;
}

#[tokio::test]
async fn a_state_dir_outside_the_managers_state_directory_is_refused_and_never_deleted() {
    let env = env().await;
    let state = local_manager(env, Duration::from_secs(1));
    let ns = env.create_namespace("statedir").await;
    let client = env.client().await;
    let outside = tempfile::tempdir().unwrap();
    let precious = outside.path().join(&ns).join("escape").join("precious.txt");
    std::fs::create_dir_all(precious.parent().unwrap()).unwrap();
    std::fs::write(&precious, "not the manager's").unwrap();
    let inside = state.join("team-dirs");

    apply(
        &client,
        &ns,
        &format!(
            r#"apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata:
  name: escape
spec:
  kubernetes:
    version: v1.37.2
  controlPlane:
    replicas: 1
  infrastructure:
    local:
      stateDir: {}
"#,
            outside.path().display()
        ),
    )
    .await;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
    let message = eventually(
        "InfrastructureReady=False StateDirOutsideRoot",
        Duration::from_secs(30),
        || async {
            let cluster = clusters.get("escape").await.map_err(|e| e.to_string())?;
            let conditions = cluster.status.map(|s| s.conditions).unwrap_or_default();
            conditions
                .iter()
                .find(|c| c.type_ == "InfrastructureReady" && c.reason == "StateDirOutsideRoot")
                .map(|c| c.message.clone())
                .ok_or_else(|| support::condition_summary(&conditions))
        },
    )
    .await;
    assert!(
        message.contains("spec.infrastructure.local.stateDir")
            && message.contains("--local-state-dir"),
        "{message}"
    );
    clusters
        .delete("escape", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_deleted(&client, &ns, "escape", Duration::from_secs(60)).await;
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        "not the manager's"
    );

    // A stateDir inside the manager's state directory is used, and removed with its cluster.
    apply(
        &client,
        &ns,
        &format!(
            r#"apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata:
  name: inside
spec:
  kubernetes:
    version: v1.37.2
  controlPlane:
    replicas: 1
  infrastructure:
    local:
      stateDir: {}
"#,
            inside.display()
        ),
    )
    .await;
    wait_ready(&client, &ns, "inside", Duration::from_secs(120)).await;
    let dir = inside.join(&ns).join("inside");
    assert!(
        dir.join("members").is_dir() && dir.join("cluster.json").is_file(),
        "no control plane in {}",
        dir.display()
    );
    clusters
        .delete("inside", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_deleted(&client, &ns, "inside", Duration::from_secs(120)).await;
    assert!(!dir.exists(), "{} left behind", dir.display());
}
