//! The commands a platform engineer runs against clusters — `generate`, `describe`, `get kubeconfig`, `wait`,
//! `fleet` — as a user runs them: the real binary, against a real apiserver with Slipway's CRDs and a manager with
//! the sim provider.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use slipway_api::Cluster;
use support::{apply, env, manager, sim_cluster, slipway_cli, stdout_of, wait_ready};

/// A Cluster the controller leaves alone (`spec.paused`), so a test decides its status; with one pool.
fn paused_cluster(name: &str, workers: u32) -> String {
    format!(
        r#"apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata:
  name: {name}
  labels:
    team: {name}
spec:
  paused: true
  kubernetes:
    version: v1.37.2
  infrastructure:
    sim: {{}}
  template:
    name: sim
    revision: 0123456789ab
---
apiVersion: slipway.dev/v1alpha1
kind: MachinePool
metadata:
  name: {name}-workers
spec:
  clusterName: {name}
  replicas: {workers}
"#
    )
}

fn code(output: &std::process::Output) -> Option<i32> {
    output.status.code()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn generated_yaml_for_every_provider_is_accepted_by_the_apiserver() {
    let env = env().await;
    let client = env.client().await;
    let ns = env.create_namespace("generate").await;
    for provider in ["local", "sim", "aws", "baremetal"] {
        let name = format!("gen-{provider}");
        let mut args = vec![
            "generate",
            "cluster",
            &name,
            "--provider",
            provider,
            "--control-plane",
            "3",
            "--workers",
            "4",
            "--ttl",
            "2h",
        ];
        if provider == "baremetal" {
            args.extend([
                "--set",
                "BAREMETAL_IMAGE_URL=https://images.example/node.img",
            ]);
        }
        let yaml = stdout_of(&slipway_cli(None, &args));
        apply(&client, &ns, &yaml).await;

        let cluster = Api::<Cluster>::namespaced(client.clone(), &ns)
            .get(&name)
            .await
            .unwrap();
        assert_eq!(cluster.spec.infrastructure.provider_name(), Some(provider));
        assert_eq!(cluster.spec.control_plane.replicas, 3);
        assert_eq!(cluster.spec.ttl.as_deref(), Some("2h"));
        let template = cluster.spec.template.expect("spec.template is recorded");
        assert_eq!(template.name, provider);
        assert_eq!(template.revision.as_deref().map(str::len), Some(12));
        assert_eq!(template.variables["WORKER_MACHINE_COUNT"], "4");
        let pool = Api::<slipway_api::MachinePool>::namespaced(client.clone(), &ns)
            .get(&format!("{name}-workers"))
            .await
            .unwrap();
        assert_eq!(pool.spec.replicas, 4);
    }
}

#[tokio::test]
async fn a_template_file_renders_with_set_values_and_is_accepted_by_the_apiserver() {
    let env = env().await;
    let client = env.client().await;
    let ns = env.create_namespace("template-file").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.yaml");
    std::fs::write(
        &file,
        r#"name: tiny
description: One control plane machine, no workers
variables:
  - { name: CLUSTER_NAME, type: string, required: true }
  - { name: PAUSED, type: bool, default: false }
---
apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata:
  name: ${CLUSTER_NAME}
  labels:
    made-from: tiny-${CLUSTER_NAME}
spec:
  paused: ${PAUSED}
  kubernetes: { version: v1.36.1 }
  infrastructure: { sim: {} }
"#,
    )
    .unwrap();
    let yaml = stdout_of(&slipway_cli(
        None,
        &[
            "generate",
            "cluster",
            "tiny-one",
            "--template",
            file.to_str().unwrap(),
            "--set",
            "PAUSED=true",
        ],
    ));
    apply(&client, &ns, &yaml).await;
    let cluster = Api::<Cluster>::namespaced(client, &ns)
        .get("tiny-one")
        .await
        .unwrap();
    assert!(cluster.spec.paused);
    assert_eq!(
        cluster.metadata.labels.unwrap()["made-from"],
        "tiny-tiny-one"
    );
    assert_eq!(cluster.spec.template.unwrap().name, "tiny");
}

#[test]
fn generate_refuses_unknown_missing_and_ill_typed_variables_and_lists_what_the_template_takes() {
    let unknown = slipway_cli(
        None,
        &[
            "generate",
            "cluster",
            "x",
            "--provider",
            "sim",
            "--set",
            "REGION=eu",
        ],
    );
    assert_eq!(code(&unknown), Some(2));
    assert!(
        stderr(&unknown).contains("template sim has no variable REGION"),
        "{}",
        stderr(&unknown)
    );
    assert!(
        stderr(&unknown).contains("SIM_CREATE_DELAY"),
        "{}",
        stderr(&unknown)
    );

    let missing = slipway_cli(
        None,
        &["generate", "cluster", "x", "--provider", "baremetal"],
    );
    assert_eq!(code(&missing), Some(2));
    assert!(
        stderr(&missing).contains("needs BAREMETAL_IMAGE_URL"),
        "{}",
        stderr(&missing)
    );

    let ill_typed = slipway_cli(
        None,
        &[
            "generate",
            "cluster",
            "x",
            "--provider",
            "sim",
            "--ttl",
            "3 days",
        ],
    );
    assert_eq!(code(&ill_typed), Some(2));
    assert!(
        stderr(&ill_typed).contains("TTL must be a duration"),
        "{}",
        stderr(&ill_typed)
    );
}

#[test]
fn list_templates_names_one_template_per_provider_with_its_revision() {
    let out = stdout_of(&slipway_cli(
        None,
        &["generate", "cluster", "--list-templates"],
    ));
    assert!(out.starts_with("NAME"), "{out}");
    for provider in ["local", "sim", "aws", "baremetal"] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{provider} "))),
            "{provider} missing from:\n{out}"
        );
    }
}

#[tokio::test]
async fn describe_shows_a_ready_sim_cluster_with_its_pool_and_machines() {
    let env = env().await;
    manager(env);
    let client = env.client().await;
    let ns = env.create_namespace("describe").await;
    apply(&client, &ns, &sim_cluster("shown", 1, 2, "{}")).await;
    wait_ready(&client, &ns, "shown", Duration::from_secs(60)).await;

    let table = stdout_of(&slipway_cli(
        Some(env.kubeconfig_path()),
        &["describe", "cluster", "shown", "-n", &ns],
    ));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("READY"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("Cluster/shown") && lines[1].contains("True"),
        "{table}"
    );
    assert!(table.contains("├─Infrastructure/sim"), "{table}");
    assert!(
        table.contains("MachinePool/shown-workers (2/2 ready)"),
        "{table}"
    );
    assert_eq!(
        table.matches("│ ├─Machine/").count() + table.matches("│ └─Machine/").count(),
        2,
        "{table}"
    );

    let json: Value = serde_json::from_str(&stdout_of(&slipway_cli(
        Some(env.kubeconfig_path()),
        &[
            "describe",
            "cluster",
            "shown",
            "-n",
            &ns,
            "-o",
            "json",
            "--show-conditions",
            "all",
        ],
    )))
    .unwrap();
    assert_eq!(json["kind"], "Cluster");
    assert_eq!(json["ready"], "True");
    let children = json["children"].as_array().unwrap();
    let condition_types: Vec<&str> = children
        .iter()
        .filter(|c| c["kind"] == "Condition")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        condition_types,
        [
            "InfrastructureReady",
            "ControlPlaneReady",
            "NodesReady",
            "AddonsReady",
            "Ready"
        ]
    );
    let pool = children
        .iter()
        .find(|c| c["kind"] == "MachinePool")
        .unwrap();
    let machines = pool["children"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "Machine");
    assert_eq!(machines.count(), 2);
}

#[tokio::test]
async fn describe_of_an_unknown_cluster_is_an_error_naming_it() {
    let env = env().await;
    let ns = env.create_namespace("describe-unknown").await;
    let out = slipway_cli(
        Some(env.kubeconfig_path()),
        &["describe", "cluster", "nope", "-n", &ns],
    );
    assert_eq!(code(&out), Some(2));
    assert!(
        stderr(&out).contains("Cluster nope not found"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn get_kubeconfig_prints_the_secret_value_or_writes_it_readable_only_by_the_owner() {
    let env = env().await;
    let client = env.client().await;
    let ns = env.create_namespace("kubeconfig").await;
    let content = "apiVersion: v1\nkind: Config\nclusters: []\n";
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("keyed-kubeconfig".into()),
            labels: Some(BTreeMap::from([(
                "cluster.x-k8s.io/cluster-name".to_string(),
                "keyed".to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("cluster.x-k8s.io/secret".into()),
        data: Some(BTreeMap::from([(
            "value".to_string(),
            ByteString(content.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client, &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let printed = stdout_of(&slipway_cli(
        Some(env.kubeconfig_path()),
        &["get", "kubeconfig", "keyed", "-n", &ns],
    ));
    assert_eq!(printed, content);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keyed.kubeconfig");
    std::fs::write(&file, "old, longer content that must not survive").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    stdout_of(&slipway_cli(
        Some(env.kubeconfig_path()),
        &[
            "get",
            "kubeconfig",
            "keyed",
            "-n",
            &ns,
            "--output",
            file.to_str().unwrap(),
        ],
    ));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), content);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
}

#[tokio::test]
async fn get_kubeconfig_before_the_cluster_has_one_says_so_with_its_phase() {
    let env = env().await;
    let client = env.client().await;
    let ns = env.create_namespace("no-kubeconfig").await;
    apply(&client, &ns, &paused_cluster("early", 1)).await;
    let out = slipway_cli(
        Some(env.kubeconfig_path()),
        &["get", "kubeconfig", "early", "-n", &ns],
    );
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the cluster has no kubeconfig yet; its phase is Pending"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn wait_for_ready_exits_0_once_the_manager_has_made_the_cluster() {
    let env = env().await;
    manager(env);
    let client = env.client().await;
    let ns = env.create_namespace("wait-ready").await;
    apply(
        &client,
        &ns,
        &sim_cluster("awaited", 1, 2, "{createDelay: 1s}"),
    )
    .await;
    let out = slipway_cli(
        Some(env.kubeconfig_path()),
        &[
            "wait",
            "cluster",
            "awaited",
            "-n",
            &ns,
            "--for",
            "ready",
            "--timeout",
            "60s",
        ],
    );
    let stdout = stdout_of(&out);
    assert!(stdout.starts_with("Cluster awaited is Ready"), "{stdout}");
    // Not a terminal: one progress line per change, each naming the phase and the step waited on.
    let progress = stderr(&out);
    assert!(
        progress
            .lines()
            .all(|l| l.starts_with("Cluster awaited: ") && l.contains("waiting for Ready")),
        "{progress}"
    );
}

#[tokio::test]
async fn wait_times_out_with_exit_code_1_naming_the_condition_it_waited_on() {
    let env = env().await;
    let client = env.client().await;
    let ns = env.create_namespace("wait-timeout").await;
    apply(&client, &ns, &paused_cluster("stuck", 1)).await;
    let out = slipway_cli(
        Some(env.kubeconfig_path()),
        &["wait", "cluster", "stuck", "-n", &ns, "--timeout", "2s"],
    );
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("timed out after 2s"), "{message}");
    assert!(
        message.contains("InfrastructureReady not reported yet"),
        "{message}"
    );
}

#[tokio::test]
async fn wait_for_deleted_exits_0_once_the_cluster_is_gone() {
    let env = env().await;
    manager(env);
    let client = env.client().await;
    let ns = env.create_namespace("wait-deleted").await;
    apply(&client, &ns, &sim_cluster("doomed", 1, 1, "{}")).await;
    wait_ready(&client, &ns, "doomed", Duration::from_secs(60)).await;
    Api::<Cluster>::namespaced(client, &ns)
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let out = slipway_cli(
        Some(env.kubeconfig_path()),
        &[
            "wait",
            "cluster",
            "doomed",
            "-n",
            &ns,
            "--for",
            "deleted",
            "--timeout",
            "60s",
        ],
    );
    assert!(stdout_of(&out).starts_with("Cluster doomed deleted"));
}

/// Sets the status a controller would: phase, Ready, cost, expiry; and the pool's ready replicas.
async fn set_status(
    client: &kube::Client,
    ns: &str,
    name: &str,
    per_hour: Option<&str>,
    ready: i32,
) {
    let params = PatchParams::apply("fleet-test").force();
    let mut status = json!({
        "phase": "Provisioned",
        "provider": "sim",
        "expiresAt": "2099-01-01T00:00:00Z",
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "Ready", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z"
        }]
    });
    if let Some(per_hour) = per_hour {
        status["cost"] = json!({ "perHour": per_hour, "currency": "USD" });
    }
    Api::<Cluster>::namespaced(client.clone(), ns)
        .patch_status(
            name,
            &params,
            &Patch::Apply(json!({
                "apiVersion": "slipway.dev/v1alpha1", "kind": "Cluster",
                "metadata": { "name": name }, "status": status
            })),
        )
        .await
        .unwrap();
    // The manager of this test binary may write the pool's status once before it has the (paused) Cluster in its
    // cache, and that write would reset readyReplicas; so set it until it sticks.
    let pools = Api::<slipway_api::MachinePool>::namespaced(client.clone(), ns);
    let pool = format!("{name}-workers");
    support::eventually(
        &format!("{pool} status set"),
        Duration::from_secs(30),
        || async {
            pools
                .patch_status(
                    &pool,
                    &params,
                    &Patch::Apply(json!({
                        "apiVersion": "slipway.dev/v1alpha1", "kind": "MachinePool",
                        "metadata": { "name": pool },
                        "status": { "replicas": ready, "readyReplicas": ready }
                    })),
                )
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let seen = pools.get(&pool).await.map_err(|e| e.to_string())?;
            match seen.status.map(|s| s.ready_replicas) {
                Some(r) if r == ready => Ok(()),
                other => Err(format!("readyReplicas {other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn fleet_shows_one_row_per_cluster_with_nodes_resources_cost_and_template() {
    let env = env().await;
    let client = env.client().await;
    let ns = env.create_namespace("fleet").await;
    apply(&client, &ns, &paused_cluster("cheap", 3)).await;
    apply(&client, &ns, &paused_cluster("dear", 2)).await;
    apply(&client, &ns, &paused_cluster("free", 1)).await;
    set_status(&client, &ns, "cheap", Some("0.10"), 2).await;
    set_status(&client, &ns, "dear", Some("9.00"), 2).await;
    // Two Secrets made for "dear"; one for another cluster that must not be counted.
    for (secret, cluster) in [
        ("dear-ca", "dear"),
        ("dear-kubeconfig", "dear"),
        ("other-ca", "other"),
    ] {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(secret.into()),
                labels: Some(BTreeMap::from([(
                    "cluster.x-k8s.io/cluster-name".to_string(),
                    cluster.to_string(),
                )])),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Secret>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    let table = stdout_of(&slipway_cli(
        Some(env.kubeconfig_path()),
        &["fleet", "-n", &ns, "--sort", "cost"],
    ));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME ") && !lines[0].contains("NAMESPACE"),
        "{table}"
    );
    let names: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["dear", "cheap", "free"],
        "sorted by cost, unpriced last:\n{table}"
    );
    let dear: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &dear[..7],
        [
            "dear",
            "sim",
            "Provisioned",
            "True",
            "sim@0123456789ab",
            "2/2",
            "4"
        ],
        "{table}"
    );
    assert_eq!(dear[7..9], ["9.00", "USD"], "{table}");
    let free: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(
        &free[..9],
        [
            "free",
            "sim",
            "-",
            "-",
            "sim@0123456789ab",
            "0/1",
            "2",
            "-",
            "-"
        ],
        "{table}"
    );

    let rows: Value = serde_json::from_str(&stdout_of(&slipway_cli(
        Some(env.kubeconfig_path()),
        &["fleet", "-n", &ns, "-l", "team=cheap", "-o", "json"],
    )))
    .unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "cheap");
    assert_eq!(rows[0]["nodesReady"], 2);
    assert_eq!(rows[0]["nodesDesired"], 3);
    assert_eq!(rows[0]["costPerHour"], 0.1);
    assert_eq!(rows[0]["expiresAt"], "2099-01-01T00:00:00Z");

    let all = stdout_of(&slipway_cli(
        Some(env.kubeconfig_path()),
        &["fleet", "-A", "-o", "wide"],
    ));
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with(&ns) && l.contains(" dear ")),
        "{all}"
    );
}
