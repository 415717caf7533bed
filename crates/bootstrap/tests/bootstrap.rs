//! What the bootstrap material contains, read back the way its consumers read it.

use base64::Engine as _;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use sha2::Digest as _;
use slipway_bootstrap::cloud_init::{self, ClusterNetwork, NodeSettings, ProviderId};
use slipway_bootstrap::kubeconfig::{admin_kubeconfig, needs_renewal};
use slipway_bootstrap::node_packages::{PackageRepository, install_step};
use slipway_bootstrap::pki::{Leaf, Usage};
use slipway_bootstrap::secrets::{self, Purpose};
use slipway_bootstrap::{BootstrapToken, CertificateAuthority, ClusterPki, K3sServerToken};
use x509_parser::prelude::*;

fn parse_pem(pem: &str) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    pem.contents
}

/// Asserts `cert_pem` is signed by `ca_pem`'s key and issued by its subject.
fn assert_chains_to(cert_pem: &str, ca_pem: &str) {
    let cert_der = parse_pem(cert_pem);
    let ca_der = parse_pem(ca_pem);
    let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert_eq!(cert.issuer(), ca.subject());
    cert.verify_signature(Some(ca.public_key()))
        .expect("signed by the CA");
}

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

fn cloud_config(user_data: &str) -> Value {
    let body = user_data
        .strip_prefix("#cloud-config\n")
        .expect("starts with #cloud-config");
    serde_saphyr::from_str(body).expect("valid YAML")
}

fn written_file<'a>(config: &'a Value, path: &str) -> &'a Value {
    config["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} not written"))
}

fn written_paths(config: &Value) -> Vec<&str> {
    config["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect()
}

/// The one YAML document in a written file.
fn written_yaml(config: &Value, path: &str) -> Value {
    serde_saphyr::from_str(written_file(config, path)["content"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

/// The eight files of `/etc/kubernetes/pki` every kubeadm control-plane member gets, with their content and mode.
fn kubeadm_pki_files(pki: &ClusterPki) -> [(&'static str, &str, &'static str); 8] {
    [
        (
            "/etc/kubernetes/pki/ca.crt",
            pki.ca.cert_pem.as_str(),
            "0644",
        ),
        (
            "/etc/kubernetes/pki/ca.key",
            pki.ca.key_pem.as_str(),
            "0600",
        ),
        (
            "/etc/kubernetes/pki/etcd/ca.crt",
            pki.etcd.cert_pem.as_str(),
            "0644",
        ),
        (
            "/etc/kubernetes/pki/etcd/ca.key",
            pki.etcd.key_pem.as_str(),
            "0600",
        ),
        (
            "/etc/kubernetes/pki/front-proxy-ca.crt",
            pki.front_proxy.cert_pem.as_str(),
            "0644",
        ),
        (
            "/etc/kubernetes/pki/front-proxy-ca.key",
            pki.front_proxy.key_pem.as_str(),
            "0600",
        ),
        (
            "/etc/kubernetes/pki/sa.pub",
            pki.service_account.public_pem.as_str(),
            "0644",
        ),
        (
            "/etc/kubernetes/pki/sa.key",
            pki.service_account.private_pem.as_str(),
            "0600",
        ),
    ]
}

/// The PEM blocks that hold a private key, whatever their kind (`PRIVATE KEY`, `EC PRIVATE KEY`, ...).
fn private_key_blocks(user_data: &str) -> usize {
    user_data.matches("PRIVATE KEY-----").count() / 2
}

#[test]
fn cluster_pki_has_three_distinct_self_signed_cas() {
    let pki = ClusterPki::generate("prod").unwrap();
    for ca in [&pki.ca, &pki.etcd, &pki.front_proxy] {
        assert_chains_to(&ca.cert_pem, &ca.cert_pem);
        let der = parse_pem(&ca.cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert!(cert.is_ca());
        let years = (cert.validity().not_after.timestamp()
            - cert.validity().not_before.timestamp())
            / (365 * 86400);
        assert_eq!(years, 10);
    }
    assert_ne!(pki.ca.cert_pem, pki.etcd.cert_pem);
    assert_ne!(pki.ca.cert_pem, pki.front_proxy.cert_pem);
    assert!(
        pki.service_account
            .public_pem
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let printed = format!("{pki:?} {pki:#?}");
    assert!(!printed.contains("PRIVATE"), "Debug must not print keys");
    for key in [
        &pki.ca.key_pem,
        &pki.etcd.key_pem,
        &pki.front_proxy.key_pem,
        &pki.service_account.private_pem,
    ] {
        let body = key.lines().nth(1).unwrap();
        assert!(!printed.contains(body), "Debug must not print keys");
    }
    assert!(printed.contains("<redacted>"), "{printed}");
}

#[test]
fn serving_certificate_chains_to_the_ca_and_names_the_endpoint() {
    let ca = CertificateAuthority::generate("prod-ca").unwrap();
    let now = Timestamp::now();
    let (cert, _key) = ca
        .sign(Leaf {
            common_name: "kube-apiserver",
            organization: None,
            hosts: &["127.0.0.1", "api.prod.example.com", "localhost"],
            usages: &[Usage::ServerAuth],
            not_before: now,
            not_after: now + SignedDuration::from_hours(24),
        })
        .unwrap();
    assert_chains_to(&cert, &ca.cert_pem);
    let der = parse_pem(&cert);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            GeneralName::IPAddress(ip) => format!("{ip:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(
        sans.contains(&"api.prod.example.com".to_string()),
        "{sans:?}"
    );
    assert!(sans.contains(&"[127, 0, 0, 1]".to_string()), "{sans:?}");
}

#[test]
fn admin_kubeconfig_points_at_the_endpoint_and_its_client_cert_chains_to_the_cluster_ca() {
    let ca = CertificateAuthority::generate("prod-ca").unwrap();
    let now = Timestamp::now();
    let kubeconfig = admin_kubeconfig("prod", "https://203.0.113.10:6443", &ca, now).unwrap();
    let parsed: Value = serde_saphyr::from_str(&kubeconfig.yaml).unwrap();
    assert_eq!(
        parsed["clusters"][0]["cluster"]["server"],
        "https://203.0.113.10:6443"
    );
    let decode = |v: &Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        decode(&parsed["clusters"][0]["cluster"]["certificate-authority-data"]),
        ca.cert_pem
    );
    let client_cert = decode(&parsed["users"][0]["user"]["client-certificate-data"]);
    assert_chains_to(&client_cert, &ca.cert_pem);
    let der = parse_pem(&client_cert);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let org: Vec<&str> = cert
        .subject()
        .iter_organization()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(org, ["system:masters"]);
    let days = (cert.validity().not_after.timestamp() - now.as_second()) / 86400;
    assert_eq!(days, 365);
    assert_eq!(parsed["current-context"], parsed["contexts"][0]["name"]);

    // Debug shows the validity, never the document with its client key.
    let printed = format!("{kubeconfig:?}");
    let client_key = decode(&parsed["users"][0]["user"]["client-key-data"]);
    assert!(
        !printed.contains(client_key.lines().nth(1).unwrap())
            && !printed.contains("client-key-data")
            && printed.contains("<redacted>"),
        "{printed}"
    );
}

#[test]
fn client_certificates_are_renewed_at_half_life() {
    let issued = Timestamp::from_second(1_700_000_000).unwrap();
    let expires = issued + SignedDuration::from_hours(365 * 24);
    assert!(!needs_renewal(
        issued,
        expires,
        issued + SignedDuration::from_hours(182 * 24)
    ));
    assert!(needs_renewal(
        issued,
        expires,
        issued + SignedDuration::from_hours(183 * 24)
    ));
}

#[test]
fn bootstrap_tokens_have_the_kubernetes_format_and_expire_in_15_minutes() {
    // Expirations are whole seconds, as kubeadm writes them.
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
    let token = BootstrapToken::generate(now);
    let text = token.token();
    let (id, secret) = text.split_once('.').unwrap();
    assert_eq!((id.len(), secret.len()), (6, 16));
    assert!(
        text.chars()
            .all(|c| c == '.' || c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{text}"
    );
    assert_eq!(
        token.expires_at.duration_since(now),
        SignedDuration::from_mins(15)
    );
    assert!(!token.needs_refresh(now));
    assert!(token.needs_refresh(now + SignedDuration::from_mins(11)));
    assert_ne!(
        BootstrapToken::generate(now).token(),
        text,
        "tokens are random"
    );

    let secret_object = token.secret();
    assert_eq!(
        secret_object.metadata.name.as_deref(),
        Some(format!("bootstrap-token-{id}").as_str())
    );
    assert_eq!(
        secret_object.metadata.namespace.as_deref(),
        Some("kube-system")
    );
    assert_eq!(
        secret_object.type_.as_deref(),
        Some("bootstrap.kubernetes.io/token")
    );
    let data = secret_object.data.unwrap();
    assert_eq!(
        data["expiration"].0,
        token.expires_at.to_string().into_bytes()
    );
    assert!(
        !format!("{token:?}").contains(secret),
        "Debug must not print the token secret"
    );
}

#[test]
fn a_join_token_is_replaced_when_missing_or_expired_extended_late_in_life_and_kept_otherwise() {
    use slipway_bootstrap::token::Renewal;
    let now = Timestamp::from_second(2_000_000_000).unwrap();
    let token = BootstrapToken::generate(now);
    assert_eq!(BootstrapToken::renewal(None, now), Renewal::Replace);
    assert_eq!(BootstrapToken::renewal(Some(&token), now), Renewal::Keep);
    let late = now + SignedDuration::from_mins(11);
    assert_eq!(BootstrapToken::renewal(Some(&token), late), Renewal::Extend);
    let expired = now + SignedDuration::from_mins(15);
    assert_eq!(
        BootstrapToken::renewal(Some(&token), expired),
        Renewal::Replace
    );

    let extended = token.extended(late);
    assert_eq!(
        (extended.id.as_str(), extended.secret.as_str()),
        (token.id.as_str(), token.secret.as_str()),
        "an extended token is the same token: machines booting with it still get in"
    );
    assert_eq!(extended.expires_at, late + SignedDuration::from_mins(15));
    assert_eq!(
        BootstrapToken::renewal(Some(&extended), late),
        Renewal::Keep
    );
}

#[test]
fn the_join_token_secret_round_trips_and_refuses_a_malformed_token() {
    let token = BootstrapToken::generate(Timestamp::now());
    let secret = secrets::join_token_secret("prod", &token, None);
    assert_eq!(
        secret.metadata.name.as_deref(),
        Some("prod-bootstrap-token")
    );
    assert_eq!(
        Purpose::JoinToken.secret_name("prod"),
        "prod-bootstrap-token"
    );
    assert_eq!(secret.type_.as_deref(), Some("cluster.x-k8s.io/secret"));
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()["cluster.x-k8s.io/cluster-name"],
        "prod"
    );
    assert_eq!(secrets::join_token_from_secret(&secret).unwrap(), token);

    let mut bad = secret.clone();
    bad.data.as_mut().unwrap().insert(
        "token-secret".into(),
        k8s_openapi::ByteString(b"TOO-SHORT".to_vec()),
    );
    let error = secrets::join_token_from_secret(&bad)
        .unwrap_err()
        .to_string();
    assert!(error.contains("prod-bootstrap-token"), "{error}");
    assert!(!error.contains(&token.secret), "{error}");
}

#[test]
fn pki_secrets_use_cluster_api_names_types_and_labels_and_read_back() {
    let pki = ClusterPki::generate("prod").unwrap();
    let secrets = secrets::pki_secrets("prod", &pki, None);
    let names: Vec<_> = secrets
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["prod-ca", "prod-etcd", "prod-proxy", "prod-sa"]);
    for s in &secrets {
        assert_eq!(s.type_.as_deref(), Some("cluster.x-k8s.io/secret"));
        assert_eq!(
            s.metadata.labels.as_ref().unwrap()["cluster.x-k8s.io/cluster-name"],
            "prod"
        );
    }
    let read = secrets::pki_from_secrets(&secrets.try_into().unwrap()).unwrap();
    assert_eq!(read, pki);
    assert_eq!(Purpose::Kubeconfig.secret_name("prod"), "prod-kubeconfig");
}

#[test]
fn a_ca_secret_without_its_key_is_an_error_naming_the_secret() {
    let pki = ClusterPki::generate("prod").unwrap();
    let mut secret = secrets::pki_secrets("prod", &pki, None).remove(0);
    secret.data.as_mut().unwrap().remove("tls.key");
    let error = secrets::ca_from_secret(&secret).unwrap_err().to_string();
    assert!(
        error.contains("prod-ca") && error.contains("tls.key"),
        "{error}"
    );
}

#[test]
fn kubeadm_init_carries_the_cluster_pki_token_and_network() {
    let pki = ClusterPki::generate("prod").unwrap();
    let token = BootstrapToken::generate(Timestamp::now());
    let node = NodeSettings {
        labels: vec![("slipway.dev/pool".into(), "control-plane".into())],
        provider_id: Some(ProviderId::Known("aws:///us-east-1a/i-0123".into())),
        ..NodeSettings::default()
    };
    let config = cloud_config(&cloud_init::kubeadm_init(&network(), &pki, &token, &node).unwrap());
    assert_eq!(
        written_file(&config, "/etc/kubernetes/pki/ca.crt")["content"],
        pki.ca.cert_pem
    );
    let key = written_file(&config, "/etc/kubernetes/pki/ca.key");
    assert_eq!(key["content"], pki.ca.key_pem);
    assert_eq!(key["permissions"], "0600");
    assert_eq!(
        written_file(&config, "/etc/kubernetes/pki/etcd/ca.crt")["content"],
        pki.etcd.cert_pem
    );
    assert_eq!(
        written_file(&config, "/etc/kubernetes/pki/front-proxy-ca.crt")["content"],
        pki.front_proxy.cert_pem
    );
    assert_eq!(
        written_file(&config, "/etc/kubernetes/pki/sa.key")["content"],
        pki.service_account.private_pem
    );

    let kubeadm = written_file(&config, "/run/kubeadm/kubeadm.yaml")["content"]
        .as_str()
        .unwrap();
    let documents: Vec<Value> = serde_saphyr::from_multiple(kubeadm).unwrap();
    let init = documents
        .iter()
        .find(|d| d["kind"] == "InitConfiguration")
        .unwrap();
    assert_eq!(init["bootstrapTokens"][0]["token"], token.token());
    assert_eq!(init["bootstrapTokens"][0]["ttl"], "900s");
    let cluster = documents
        .iter()
        .find(|d| d["kind"] == "ClusterConfiguration")
        .unwrap();
    assert_eq!(cluster["controlPlaneEndpoint"], "203.0.113.10:6443");
    assert_eq!(cluster["kubernetesVersion"], "v1.37.2");
    assert_eq!(cluster["networking"]["podSubnet"], "10.244.0.0/16");
    // First the node software (skipped on an image that has it), then kubeadm.
    assert_eq!(
        config["runcmd"][0],
        install_step(&PackageRepository::default(), "v1.37.2")
    );
    assert_eq!(
        config["runcmd"][1],
        serde_json::json!(["kubeadm", "init", "--config", "/run/kubeadm/kubeadm.yaml"]),
        "no --upload-certs: later members get the CA files in their own user data"
    );
}

#[test]
fn kubeadm_join_verifies_the_ca_by_its_public_key_hash_and_carries_no_keys() {
    let pki = ClusterPki::generate("prod").unwrap();
    let token = BootstrapToken::generate(Timestamp::now());
    let hash = pki.ca.public_key_hash().unwrap();
    assert!(
        hash.starts_with("sha256:") && hash.len() == 7 + 64,
        "{hash}"
    );
    let user_data =
        cloud_init::kubeadm_join(&network(), &hash, &token, &NodeSettings::default()).unwrap();
    assert!(
        !user_data.contains("PRIVATE KEY"),
        "a worker gets no private keys"
    );
    let config = cloud_config(&user_data);
    let join: Value = serde_saphyr::from_str(
        written_file(&config, "/run/kubeadm/kubeadm-join.yaml")["content"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(join["discovery"]["bootstrapToken"]["token"], token.token());
    assert_eq!(join["discovery"]["bootstrapToken"]["caCertHashes"][0], hash);
    assert_eq!(
        join["discovery"]["bootstrapToken"]["apiServerEndpoint"],
        "203.0.113.10:6443"
    );
    assert_eq!(config["runcmd"][0][3], "install-node-software");
    assert_eq!(config["runcmd"][1][1], "join");
}

#[test]
fn kubeadm_join_control_plane_hands_over_the_cluster_cas_and_joins_as_a_control_plane_member() {
    let pki = ClusterPki::generate("prod").unwrap();
    let token = BootstrapToken::generate(Timestamp::now());
    let node = NodeSettings {
        labels: vec![("slipway.dev/pool".into(), "control-plane".into())],
        provider_id: Some(ProviderId::Known("aws:///us-east-1b/i-0456".into())),
        ..NodeSettings::default()
    };
    let user_data =
        cloud_init::kubeadm_join_control_plane(&network(), &pki, &token, &node).unwrap();
    let config = cloud_config(&user_data);

    // The same CA and service-account files `kubeadm init` writes, so kubeadm signs this member's own
    // certificates with the cluster's authorities; keys readable by root only.
    for (path, content, mode) in kubeadm_pki_files(&pki) {
        let written = written_file(&config, path);
        assert_eq!(written["content"], content, "{path}");
        assert_eq!(written["permissions"], mode, "{path}");
    }

    let join = written_yaml(&config, "/run/kubeadm/kubeadm-join.yaml");
    assert_eq!(join["apiVersion"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(join["kind"], "JoinConfiguration");
    assert!(
        join["controlPlane"].is_object(),
        "a control-plane join: {join}"
    );
    assert!(
        join["controlPlane"].get("certificateKey").is_none(),
        "the CAs are on the machine; nothing is downloaded from kubeadm-certs"
    );
    let discovery = &join["discovery"]["bootstrapToken"];
    assert_eq!(discovery["apiServerEndpoint"], "203.0.113.10:6443");
    assert_eq!(discovery["token"], token.token());
    assert_eq!(
        discovery["caCertHashes"],
        serde_json::json!([pki.ca.public_key_hash().unwrap()])
    );
    assert_eq!(
        join["nodeRegistration"]["kubeletExtraArgs"],
        serde_json::json!([
            { "name": "node-labels", "value": "slipway.dev/pool=control-plane" },
            { "name": "provider-id", "value": "aws:///us-east-1b/i-0456" },
        ])
    );

    // It joins: no init configuration, no init command, nothing uploaded or downloaded with a certificate key.
    assert!(
        !written_paths(&config).contains(&"/run/kubeadm/kubeadm.yaml"),
        "{:?}",
        written_paths(&config)
    );
    assert_eq!(
        config["runcmd"],
        serde_json::json!([
            install_step(&PackageRepository::default(), "v1.37.2"),
            [
                "kubeadm",
                "join",
                "--config",
                "/run/kubeadm/kubeadm-join.yaml"
            ]
        ])
    );
    assert!(!user_data.contains("InitConfiguration"));
    assert!(!user_data.contains("certificate-key") && !user_data.contains("upload-certs"));
}

#[test]
fn of_the_three_kubeadm_roles_only_control_plane_members_carry_keys_and_only_the_first_initialises()
{
    let pki = ClusterPki::generate("prod").unwrap();
    let token = BootstrapToken::generate(Timestamp::now());
    let node = NodeSettings::default();
    let hash = pki.ca.public_key_hash().unwrap();
    let init = cloud_init::kubeadm_init(&network(), &pki, &token, &node).unwrap();
    let member = cloud_init::kubeadm_join_control_plane(&network(), &pki, &token, &node).unwrap();
    let worker = cloud_init::kubeadm_join(&network(), &hash, &token, &node).unwrap();

    let role = |user_data: &str| {
        let config = cloud_config(user_data);
        let command: Vec<String> = config["runcmd"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let control_plane = written_paths(&config)
            .contains(&"/run/kubeadm/kubeadm-join.yaml")
            .then(|| {
                written_yaml(&config, "/run/kubeadm/kubeadm-join.yaml")["controlPlane"].is_object()
            });
        (command[1].clone(), control_plane)
    };
    assert_eq!(role(&init), ("init".to_string(), None));
    assert_eq!(role(&member), ("join".to_string(), Some(true)));
    assert_eq!(role(&worker), ("join".to_string(), Some(false)));

    // Four private keys (three CAs and the service-account key) on each control-plane member, none on a worker.
    assert_eq!(private_key_blocks(&init), 4);
    assert_eq!(private_key_blocks(&member), 4);
    assert!(!worker.contains("PRIVATE KEY"), "{worker}");
    let contents = |user_data: &str| {
        let config = cloud_config(user_data);
        config["write_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["content"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    for key in [
        &pki.ca.key_pem,
        &pki.etcd.key_pem,
        &pki.front_proxy.key_pem,
        &pki.service_account.private_pem,
    ] {
        assert!(contents(&init).contains(key) && contents(&member).contains(key));
        assert!(!contents(&worker).iter().any(|c| c.contains(key.trim())));
    }
    let worker_files = cloud_config(&worker);
    assert_eq!(
        written_paths(&worker_files),
        ["/run/kubeadm/kubeadm-join.yaml"],
        "a worker writes its join configuration and nothing else (no sa.key, no CA file)"
    );
}

#[test]
fn k3s_first_server_starts_embedded_etcd_with_the_cluster_cas_and_a_server_token() {
    let pki = ClusterPki::generate("prod").unwrap();
    let server_token = K3sServerToken::generate();
    let join_token = BootstrapToken::generate(Timestamp::now());
    let user_data = cloud_init::k3s_server(
        &network(),
        &pki,
        &server_token,
        &join_token,
        &NodeSettings::default(),
    )
    .unwrap();
    let server = cloud_config(&user_data);
    let tls = "/var/lib/rancher/k3s/server/tls";
    for (path, content) in [
        ("server-ca.crt", &pki.ca.cert_pem),
        ("server-ca.key", &pki.ca.key_pem),
        ("client-ca.crt", &pki.ca.cert_pem),
        ("client-ca.key", &pki.ca.key_pem),
        ("request-header-ca.crt", &pki.front_proxy.cert_pem),
        ("request-header-ca.key", &pki.front_proxy.key_pem),
        ("etcd/server-ca.crt", &pki.etcd.cert_pem),
        ("etcd/server-ca.key", &pki.etcd.key_pem),
        ("etcd/peer-ca.crt", &pki.etcd.cert_pem),
        ("etcd/peer-ca.key", &pki.etcd.key_pem),
        ("service.key", &pki.service_account.private_pem),
    ] {
        assert_eq!(
            written_file(&server, &format!("{tls}/{path}"))["content"],
            **content,
            "{path}"
        );
    }

    let config = written_yaml(&server, "/etc/rancher/k3s/config.yaml");
    assert_eq!(
        config["cluster-init"], true,
        "embedded etcd, so servers can join"
    );
    assert!(
        config.get("server").is_none(),
        "the first server joins no one"
    );
    // The server token in k3s's short form: a plain password, never the `<id>.<secret>` form k3s refuses for a
    // server, and not the join token.
    assert_eq!(config["token"], server_token.password());
    assert!(!server_token.password().contains('.'));
    assert_ne!(config["token"], join_token.token());
    assert_eq!(config["tls-san"], serde_json::json!(["203.0.113.10"]));
    assert_eq!(config["cluster-cidr"], "10.244.0.0/16");
    assert_eq!(config["service-cidr"], "10.96.0.0/12");
    assert_eq!(config["cluster-domain"], "cluster.local");

    // The first join token reaches the cluster through a manifest k3s applies, as kubeadm's bootstrapTokens does.
    let manifest = written_yaml(
        &server,
        "/var/lib/rancher/k3s/server/manifests/slipway-join-token.yaml",
    );
    assert_eq!(
        written_file(
            &server,
            "/var/lib/rancher/k3s/server/manifests/slipway-join-token.yaml"
        )["permissions"],
        "0600"
    );
    assert_eq!(
        (manifest["apiVersion"].as_str(), manifest["kind"].as_str()),
        (Some("v1"), Some("Secret"))
    );
    assert_eq!(manifest["type"], "bootstrap.kubernetes.io/token");
    assert_eq!(manifest["metadata"]["namespace"], "kube-system");
    assert_eq!(
        manifest["metadata"]["name"],
        format!("bootstrap-token-{}", join_token.id)
    );
    let data = |key: &str| {
        let encoded = manifest["data"][key].as_str().unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(data("token-id"), join_token.id);
    assert_eq!(data("token-secret"), join_token.secret);
    assert_eq!(data("usage-bootstrap-authentication"), "true");
    assert!(
        server["runcmd"][0][2]
            .as_str()
            .unwrap()
            .contains("INSTALL_K3S_VERSION='v1.37.2+k3s1' INSTALL_K3S_EXEC='server'")
    );
}

#[test]
fn k3s_joining_server_gets_no_ca_files_and_presents_the_server_token_pinned_to_the_cluster_ca() {
    let pki = ClusterPki::generate("prod").unwrap();
    let server_token = K3sServerToken::generate();
    let join_token = BootstrapToken::generate(Timestamp::now());
    let node = NodeSettings {
        labels: vec![("slipway.dev/pool".into(), "control-plane".into())],
        provider_id: Some(ProviderId::Known("aws:///us-east-1c/i-0789".into())),
        ..NodeSettings::default()
    };
    let first = cloud_config(
        &cloud_init::k3s_server(&network(), &pki, &server_token, &join_token, &node).unwrap(),
    );
    let user_data =
        cloud_init::k3s_server_join(&network(), &pki.ca.cert_pem, &server_token, &node).unwrap();
    let joining = cloud_config(&user_data);

    // k3s hands a joining server the CAs from its datastore: no key and no CA file of its own.
    assert_eq!(written_paths(&joining), ["/etc/rancher/k3s/config.yaml"]);
    assert!(!user_data.contains("PRIVATE KEY") && !user_data.contains("BEGIN CERTIFICATE"));
    assert!(
        !user_data.contains(&join_token.token()),
        "servers do not join with a bootstrap token"
    );

    let config = written_yaml(&joining, "/etc/rancher/k3s/config.yaml");
    assert_eq!(config["server"], "https://203.0.113.10:6443");
    assert!(
        config.get("cluster-init").is_none(),
        "it joins the etcd the first server started"
    );
    // `K10<CA hash>::server:<password>`, the hash being SHA-256 of what k3s serves at /cacerts: the bytes of the
    // first server's server-ca.crt. A joining server that reaches anything else refuses to send the password.
    let served_ca =
        written_file(&first, "/var/lib/rancher/k3s/server/tls/server-ca.crt")["content"]
            .as_str()
            .unwrap();
    let token = config["token"].as_str().unwrap();
    let (hash, credentials) = token.strip_prefix("K10").unwrap().split_once("::").unwrap();
    assert_eq!(
        hash,
        hex::encode(sha2::Sha256::digest(served_ca.as_bytes()))
    );
    assert_eq!(credentials, format!("server:{}", server_token.password()));

    // Everything k3s requires to match across servers matches the first server's.
    let first_config = written_yaml(&first, "/etc/rancher/k3s/config.yaml");
    for key in [
        "tls-san",
        "cluster-cidr",
        "service-cidr",
        "cluster-domain",
        "node-label",
        "kubelet-arg",
    ] {
        assert_eq!(config[key], first_config[key], "{key}");
    }
    assert_eq!(
        config["kubelet-arg"],
        serde_json::json!(["provider-id=aws:///us-east-1c/i-0789"])
    );
    assert_eq!(
        joining["runcmd"], first["runcmd"],
        "both run `k3s server` of the same release"
    );
}

#[test]
fn k3s_agent_joins_with_a_bootstrap_token_pinned_to_the_cluster_ca_and_no_server_secret() {
    let pki = ClusterPki::generate("prod").unwrap();
    let server_token = K3sServerToken::generate();
    let token = BootstrapToken::generate(Timestamp::now());
    let user_data = cloud_init::k3s_agent(
        &network(),
        &pki.ca.cert_pem,
        &token,
        &NodeSettings::default(),
    )
    .unwrap();
    assert!(
        !user_data.contains("PRIVATE KEY"),
        "a worker gets no private keys"
    );
    assert!(!user_data.contains(server_token.password()));
    let agent = cloud_config(&user_data);
    assert_eq!(written_paths(&agent), ["/etc/rancher/k3s/config.yaml"]);
    let config = written_yaml(&agent, "/etc/rancher/k3s/config.yaml");
    assert_eq!(config["server"], "https://203.0.113.10:6443");
    assert_eq!(
        config["token"],
        format!(
            "K10{}::{}",
            hex::encode(sha2::Sha256::digest(pki.ca.cert_pem.as_bytes())),
            token.token()
        )
    );
    assert!(
        agent["runcmd"][0][2]
            .as_str()
            .unwrap()
            .contains("INSTALL_K3S_EXEC='agent'")
    );
}

#[test]
fn the_k3s_server_token_is_a_redacted_password_whose_secret_round_trips() {
    let token = K3sServerToken::generate();
    assert_eq!(token.password().len(), 32);
    assert!(
        token
            .password()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    );
    assert_ne!(K3sServerToken::generate(), token, "tokens are random");
    assert!(!format!("{token:?}").contains(token.password()));
    // k3s refuses a server token of the bootstrap-token form, and a short one is guessable.
    assert!(K3sServerToken::from_password("abcdef.0123456789abcdef").is_none());
    assert!(K3sServerToken::from_password("short").is_none());

    let secret = secrets::k3s_server_token_secret("prod", &token, None);
    assert_eq!(secret.metadata.name.as_deref(), Some("prod-token"));
    assert_eq!(Purpose::K3sServerToken.secret_name("prod"), "prod-token");
    assert_eq!(secret.type_.as_deref(), Some("cluster.x-k8s.io/secret"));
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()["cluster.x-k8s.io/cluster-name"],
        "prod"
    );
    assert_eq!(
        secrets::k3s_server_token_from_secret(&secret).unwrap(),
        token
    );

    let mut bad = secret.clone();
    bad.data.as_mut().unwrap().insert(
        "value".into(),
        k8s_openapi::ByteString(b"abcdef.0123456789abcdef".to_vec()),
    );
    let error = secrets::k3s_server_token_from_secret(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("prod-token") && error.contains("value"),
        "{error}"
    );
    assert!(!error.contains("0123456789abcdef"), "{error}");
}

#[test]
fn a_provider_id_known_only_on_the_machine_is_read_from_its_instance_data_before_the_node_starts() {
    let pki = ClusterPki::generate("prod").unwrap();
    let token = BootstrapToken::generate(Timestamp::now());
    let template = "aws:///{{ v1.availability_zone }}/{{ v1.instance_id }}";
    let node = NodeSettings {
        labels: vec![("slipway.dev/pool".into(), "workers".into())],
        provider_id: Some(ProviderId::FromInstanceData(template.into())),
        ..NodeSettings::default()
    };
    let hash = pki.ca.public_key_hash().unwrap();

    // kubeadm: after the node software's install, a command writes the ID where kubeadm's kubelet unit reads
    // extra flags, then kubeadm joins; the join configuration itself names no provider ID.
    let config = cloud_config(&cloud_init::kubeadm_join(&network(), &hash, &token, &node).unwrap());
    let runcmd = config["runcmd"].as_array().unwrap();
    assert_eq!(runcmd.len(), 3, "{runcmd:?}");
    assert_eq!(runcmd[0][3], "install-node-software");
    let runcmd = &runcmd[1..];
    assert_eq!(runcmd[0][0], "sh");
    let script = runcmd[0][2].as_str().unwrap();
    assert!(
        script.contains("cloud-init query --format \"$1\""),
        "{script}"
    );
    assert!(script.contains("> /etc/default/kubelet"), "{script}");
    assert!(
        script.contains("KUBELET_EXTRA_ARGS=--provider-id=%s"),
        "{script}"
    );
    assert!(
        !script.contains(template),
        "the template is an argument, not script text"
    );
    assert_eq!(runcmd[0][4], template);
    assert_eq!(runcmd[1][0], "kubeadm");
    let join = written_yaml(&config, "/run/kubeadm/kubeadm-join.yaml");
    assert_eq!(
        join["nodeRegistration"]["kubeletExtraArgs"],
        serde_json::json!([{ "name": "node-labels", "value": "slipway.dev/pool=workers" }])
    );

    // k3s: the ID goes into a drop-in k3s reads after its config.yaml, which names none.
    let config =
        cloud_config(&cloud_init::k3s_agent(&network(), &pki.ca.cert_pem, &token, &node).unwrap());
    let runcmd = config["runcmd"].as_array().unwrap();
    assert_eq!(runcmd.len(), 2, "{runcmd:?}");
    let script = runcmd[0][2].as_str().unwrap();
    assert!(
        script.contains("> /etc/rancher/k3s/config.yaml.d/50-provider-id.yaml"),
        "{script}"
    );
    assert_eq!(runcmd[0][4], template);
    let k3s = written_yaml(&config, "/etc/rancher/k3s/config.yaml");
    assert!(k3s.get("kubelet-arg").is_none(), "{k3s}");

    // Known when rendered: no such step, only the install and the join.
    let known = NodeSettings {
        provider_id: Some(ProviderId::Known("aws:///us-east-1a/i-0123".into())),
        ..node
    };
    let config =
        cloud_config(&cloud_init::kubeadm_join(&network(), &hash, &token, &known).unwrap());
    let runcmd = config["runcmd"].as_array().unwrap();
    assert_eq!(runcmd.len(), 2, "{runcmd:?}");
    assert_eq!(runcmd[0][3], "install-node-software");
}
