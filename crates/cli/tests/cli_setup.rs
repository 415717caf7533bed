//! Setting Slipway up and finding it: `slipway init` (apply, idempotence, `--check`, `--dry-run`), what every
//! command says when there is no kubeconfig or no Slipway in the cluster, shell completions, and running as a
//! kubectl plugin. Every apiserver here starts without Slipway's CRDs: `init` installs them.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use slipway_testenv::TestEnv;
use support::{slipway_cli, stdout_of};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn init_installs_crds_rbac_and_manager_and_a_second_run_changes_nothing() {
    // An apiserver of its own, so that "created" is not raced by the other init test.
    let env = TestEnv::start().await.unwrap();
    let kubeconfig = Some(env.kubeconfig_path());

    let first = stdout_of(&slipway_cli(kubeconfig, &["init"]));
    let expected = [
        "namespace/slipway-system",
        "customresourcedefinition.apiextensions.k8s.io/clusters.slipway.dev",
        "customresourcedefinition.apiextensions.k8s.io/machinepools.slipway.dev",
        "customresourcedefinition.apiextensions.k8s.io/addonbundles.slipway.dev",
        "customresourcedefinition.apiextensions.k8s.io/baremetalhosts.slipway.dev",
        "serviceaccount/slipway-manager",
        "clusterrole.rbac.authorization.k8s.io/slipway-manager",
        "clusterrolebinding.rbac.authorization.k8s.io/slipway-manager",
        "role.rbac.authorization.k8s.io/slipway-leader-election",
        "rolebinding.rbac.authorization.k8s.io/slipway-leader-election",
        "deployment.apps/slipway-manager",
        "service/slipway-manager-metrics",
    ];
    for object in expected {
        assert!(
            first.lines().any(|l| l == format!("{object} created")),
            "{object} not created:\n{first}"
        );
    }
    assert_eq!(first.lines().count(), expected.len(), "{first}");

    let second = stdout_of(&slipway_cli(kubeconfig, &["init"]));
    assert!(
        second.lines().all(|l| l.ends_with(" unchanged")),
        "a second init changed something:\n{second}"
    );
    assert_eq!(second.lines().count(), expected.len(), "{second}");

    // The Deployment is what the manager runs as: leader election on, the image at this version.
    let deployment = Api::<Deployment>::namespaced(env.client().await, "slipway-system")
        .get("slipway-manager")
        .await
        .unwrap();
    let container = &deployment.spec.template.spec.unwrap().containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(format!("ghcr.io/slipway/slipway:v{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(
        container.args.as_deref().unwrap()[..2],
        ["manager".to_string(), "--leader-elect=true".to_string()]
    );

    // After init, the other commands find Slipway.
    let fleet = slipway_cli(kubeconfig, &["fleet", "-A"]);
    assert_eq!(fleet.status.code(), Some(0), "{}", stderr(&fleet));
}

/// `--check` with the Deployment installed but no kubelet to run it: not ready, and it says both why. The ready
/// case needs a real manager: `manager_image.rs` runs the built image and checks `init --check` against it.
#[tokio::test]
async fn init_check_exits_1_while_the_manager_is_not_available_and_no_manager_leads() {
    let env = TestEnv::shared().await;
    let kubeconfig = Some(env.kubeconfig_path());
    stdout_of(&slipway_cli(kubeconfig, &["init"]));

    // No kube-controller-manager runs here, so nothing makes the Deployment Available by itself.
    let not_ready = slipway_cli(kubeconfig, &["init", "--check"]);
    assert_eq!(not_ready.status.code(), Some(1), "{}", stderr(&not_ready));
    let table = String::from_utf8_lossy(&not_ready.stdout);
    assert!(table.contains("crd/clusters.slipway.dev"), "{table}");
    assert!(
        table.contains("lease/slipway-system/slipway-manager"),
        "{table}"
    );
    let error = stderr(&not_ready);
    assert!(
        error.contains("Deployment slipway-system/slipway-manager 0 of 2 replicas available"),
        "{error}"
    );
    assert!(
        error.contains(
            "Lease slipway-system/slipway-manager: no manager has taken the leader Lease"
        ),
        "{error}"
    );
}

#[test]
fn init_dry_run_prints_every_object_without_a_cluster() {
    let out = stdout_of(&slipway_cli(
        None,
        &["init", "--dry-run", "--image", "registry.local/slipway:dev"],
    ));
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&out).unwrap();
    let kinds: Vec<&str> = documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service"
        ]
    );
    assert!(out.contains("image: registry.local/slipway:dev"), "{out}");
}

#[test]
fn without_a_kubeconfig_commands_say_how_to_connect_and_exit_3() {
    for args in [
        &["fleet"][..],
        &["describe", "cluster", "x"],
        &["wait", "cluster", "x"],
        &["get", "kubeconfig", "x"],
        &["init"],
    ] {
        let out = slipway_cli(None, args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        let message = stderr(&out);
        assert!(message.contains("no kubeconfig"), "{args:?}: {message}");
        assert!(
            message.contains("--kubeconfig or KUBECONFIG"),
            "{args:?}: {message}"
        );
        assert!(message.contains("slipway init"), "{args:?}: {message}");
    }
}

#[tokio::test]
async fn against_a_cluster_without_slipways_crds_commands_say_to_run_init_and_exit_3() {
    // An apiserver of its own: the shared one gets the CRDs from an init test.
    let bare = TestEnv::start().await.unwrap();
    for args in [
        &["fleet"][..],
        &["describe", "cluster", "x"],
        &["wait", "cluster", "x"],
        &["get", "kubeconfig", "x"],
    ] {
        let out = slipway_cli(Some(bare.kubeconfig_path()), args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        let message = stderr(&out);
        assert!(
            message.contains("Slipway is not installed"),
            "{args:?}: {message}"
        );
        assert!(
            message.contains("run `slipway init`"),
            "{args:?}: {message}"
        );
    }
    let check = slipway_cli(Some(bare.kubeconfig_path()), &["init", "--check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
}

#[test]
fn completion_scripts_are_generated_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F _slipway"),
        ("zsh", "#compdef slipway"),
        ("fish", "complete -c slipway"),
    ] {
        let script = stdout_of(&slipway_cli(None, &["completion", shell]));
        assert!(script.contains(marker), "{shell}: {marker:?} missing");
        assert!(script.contains("fleet"), "{shell}: subcommands missing");
    }
}

#[test]
fn run_as_kubectl_slipway_the_help_speaks_of_kubectl_slipway() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kubectl-slipway");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_slipway"), &plugin).unwrap();
    let out = std::process::Command::new(&plugin)
        .args(["fleet", "--help"])
        .output()
        .unwrap();
    let help = stdout_of(&out);
    assert!(help.contains("Usage: kubectl slipway fleet"), "{help}");
}

#[tokio::test]
async fn init_without_manager_installs_crds_and_rbac_but_no_deployment() {
    let output = support::slipway_cli(None, &["init", "--dry-run", "--without-manager"]);
    assert!(output.status.success(), "{output:?}");
    let yaml = String::from_utf8(output.stdout).unwrap();
    assert!(yaml.contains("kind: CustomResourceDefinition"), "{yaml}");
    assert!(yaml.contains("kind: ClusterRole"), "{yaml}");
    assert!(
        !yaml.contains("kind: Deployment"),
        "a manager Deployment was included"
    );
    assert!(
        !yaml.contains("kind: Service\n"),
        "a metrics Service was included"
    );
}

#[test]
fn version_names_the_release_the_commit_and_the_kubernetes_versions_tested() {
    let versions = std::fs::read_to_string(support::repo_path("hack/versions.env")).unwrap();
    let pin = |key: &str| {
        versions
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap()
            .to_string()
    };
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let expected = format!(
        "slipway {}\ncommit: {commit}\ntested with Kubernetes {} (upgrades from {})\n",
        env!("CARGO_PKG_VERSION"),
        pin("KUBERNETES_VERSION"),
        pin("KUBERNETES_PREVIOUS_VERSION"),
    );
    assert_eq!(stdout_of(&slipway_cli(None, &["version"])), expected);
    assert_eq!(stdout_of(&slipway_cli(None, &["--version"])), expected);
}
