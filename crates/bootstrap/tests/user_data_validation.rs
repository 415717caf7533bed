//! Every user data the bootstrap renders, checked offline the way a machine's first boot reads it: Debian's
//! `cloud-init schema --config-file` accepts it, and the shell script cloud-init makes of its `runcmd` (made by
//! cloud-init's own `shellify`) passes `shellcheck`. These six renders are what every provider boots: the
//! controller renders user data once (`crates/controller/src/user_data.rs`) and the providers pass it on unchanged.
//! `hack/test.sh` installs both tools (Debian packages `cloud-init` and `shellcheck`).

use std::path::Path;
use std::process::{Command, Stdio};

use jiff::Timestamp;
use slipway_bootstrap::cloud_init::{self, ClusterNetwork, NodeSettings, ProviderId};
use slipway_bootstrap::{BootstrapToken, ClusterPki, K3sServerToken};

fn network() -> ClusterNetwork {
    ClusterNetwork {
        cluster_name: "prod".into(),
        kubernetes_version: "v1.37.2".into(),
        endpoint: "203.0.113.10:6443".into(),
        pod_cidr: "10.244.0.0/16".into(),
        service_cidr: "10.96.0.0/12".into(),
        dns_domain: "cluster.local".into(),
    }
}

/// Labels with characters a shell would care about, so quoting is exercised, and the provider ID known at render
/// time or read from the instance data on the machine (the step that runs `cloud-init query`).
fn nodes() -> [(&'static str, NodeSettings); 2] {
    let labels = vec![
        ("node-role.kubernetes.io/worker".to_string(), String::new()),
        ("team".to_string(), "platform's".to_string()),
    ];
    [
        (
            "provider ID known",
            NodeSettings {
                labels: labels.clone(),
                provider_id: Some(ProviderId::Known(
                    "aws:///eu-west-1a/i-0123456789abcdef0".into(),
                )),
                ..NodeSettings::default()
            },
        ),
        (
            "provider ID from instance data",
            NodeSettings {
                labels,
                provider_id: Some(ProviderId::FromInstanceData(
                    "aws:///{{ v1.availability_zone }}/{{ v1.instance_id }}".into(),
                )),
                ..NodeSettings::default()
            },
        ),
    ]
}

/// (name, user data) for the three roles of both distributions, with each way of giving the provider ID.
fn every_user_data() -> Vec<(String, String)> {
    nodes()
        .into_iter()
        .flat_map(|(variant, node)| {
            user_data_for(&node)
                .into_iter()
                .map(move |(role, data)| (format!("{role}, {variant}"), data))
        })
        .collect()
}

fn user_data_for(node: &NodeSettings) -> Vec<(&'static str, String)> {
    let pki = ClusterPki::generate("prod").unwrap();
    let token = BootstrapToken::generate(Timestamp::now());
    let server_token = K3sServerToken::generate();
    let hash = pki.ca.public_key_hash().unwrap();
    let network = network();
    vec![
        (
            "kubeadm control-plane init",
            cloud_init::kubeadm_init(&network, &pki, &token, node).unwrap(),
        ),
        (
            "kubeadm control-plane join",
            cloud_init::kubeadm_join_control_plane(&network, &pki, &token, node).unwrap(),
        ),
        (
            "kubeadm worker join",
            cloud_init::kubeadm_join(&network, &hash, &token, node).unwrap(),
        ),
        (
            "k3s first server",
            cloud_init::k3s_server(&network, &pki, &server_token, &token, node).unwrap(),
        ),
        (
            "k3s joining server",
            cloud_init::k3s_server_join(&network, &pki.ca.cert_pem, &server_token, node).unwrap(),
        ),
        (
            "k3s agent",
            cloud_init::k3s_agent(&network, &pki.ca.cert_pem, &token, node).unwrap(),
        ),
    ]
}

/// Runs a tool, or fails saying which package brings it.
fn run(program: &str, args: &[&str], stdin: Option<&str>, package: &str) -> std::process::Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program}: {e}; install Debian's {package} package (hack/test.sh does: apt-get install {package})")
        });
    if let Some(text) = stdin {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The script cloud-init runs for `runcmd`, made by cloud-init itself.
fn runcmd_script(user_data_file: &Path) -> String {
    const SHELLIFY: &str = "import sys, yaml\n\
        from cloudinit.util import shellify\n\
        config = yaml.safe_load(open(sys.argv[1]))\n\
        sys.stdout.write(shellify(config.get('runcmd', [])))\n";
    // Debian's cloud-init lives in the system Python, whatever python3 is first on PATH.
    let output = run(
        "/usr/bin/python3",
        &["-c", SHELLIFY, user_data_file.to_str().unwrap()],
        None,
        "cloud-init",
    );
    assert!(
        output.status.success(),
        "cloud-init's shellify: {}",
        text(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn every_user_data_passes_cloud_init_schema_and_its_commands_pass_shellcheck() {
    let dir = tempfile::tempdir().unwrap();
    for (name, user_data) in every_user_data() {
        // EC2 takes at most 16 KiB of user data (before base64).
        assert!(
            user_data.len() <= 16 * 1024,
            "{name}: {} bytes, over EC2's 16 KiB user data limit",
            user_data.len()
        );
        let file = dir.path().join(format!("{}.yaml", name.replace(' ', "-")));
        std::fs::write(&file, &user_data).unwrap();

        let schema = run(
            "cloud-init",
            &["schema", "--config-file", file.to_str().unwrap()],
            None,
            "cloud-init",
        );
        assert!(
            schema.status.success(),
            "{name}: cloud-init schema refused it:\n{}\n{user_data}",
            text(&schema)
        );
        assert!(
            text(&schema).contains("Valid cloud-config"),
            "{name}: {}",
            text(&schema)
        );

        let script = runcmd_script(&file);
        assert!(script.lines().count() > 1, "{name}: no runcmd: {script}");
        let check = run(
            "shellcheck",
            &["--shell=sh", "-"],
            Some(&script),
            "shellcheck",
        );
        assert!(
            check.status.success(),
            "{name}: shellcheck:\n{}\n{script}",
            text(&check)
        );

        // The scripts of `sh -c SCRIPT ARGS…` steps are one quoted word above: each is checked on its own.
        let config: serde_json::Value = serde_saphyr::from_str(&user_data).unwrap();
        for step in config["runcmd"].as_array().into_iter().flatten() {
            if step[0] != "sh" || step[1] != "-c" {
                continue;
            }
            let inner = step[2].as_str().unwrap();
            let check = run(
                "shellcheck",
                &["--shell=sh", "-"],
                Some(inner),
                "shellcheck",
            );
            assert!(
                check.status.success(),
                "{name}: shellcheck of a sh -c step:\n{}\n{inner}",
                text(&check)
            );
        }
    }
}

/// The checks can fail: a user data with an error of each kind is refused by them.
#[test]
fn the_checks_refuse_a_wrong_schema_and_a_broken_command() {
    let dir = tempfile::tempdir().unwrap();
    let bad_schema = dir.path().join("bad-schema.yaml");
    std::fs::write(
        &bad_schema,
        "#cloud-config\nruncmd: 5\nwrite_files:\n  - content: no path\n",
    )
    .unwrap();
    let schema = run(
        "cloud-init",
        &["schema", "--config-file", bad_schema.to_str().unwrap()],
        None,
        "cloud-init",
    );
    assert!(!schema.status.success(), "{}", text(&schema));

    let bad_command = dir.path().join("bad-command.yaml");
    std::fs::write(
        &bad_command,
        "#cloud-config\nruncmd:\n  - echo $UNQUOTED_VARIABLE > /tmp/$FILE\n",
    )
    .unwrap();
    let script = runcmd_script(&bad_command);
    let check = run(
        "shellcheck",
        &["--shell=sh", "-"],
        Some(&script),
        "shellcheck",
    );
    assert!(!check.status.success(), "shellcheck passed {script}");
}
