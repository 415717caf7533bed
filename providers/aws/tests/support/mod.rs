//! Real parts for the aws provider's tests: a moto server (EC2 and Elastic Load Balancing on one port) per test,
//! and a throttling proxy in front of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use slipway_api::{AwsSettings, InfrastructureSpec, SecretRef};
use slipway_provider::ClusterInfo;
use slipway_provider_aws::{
    AwsConfig, AwsCredentials, AwsProvider, RetryPolicy, StaticCredentials,
};

pub const REGION: &str = "us-east-1";
/// An Ubuntu image that moto knows in every region (moto/ec2/resources/amis.json).
pub const MOTO_UBUNTU_AMI: &str = "ami-785db401";

/// The rustls provider, once per test binary (the SDK's HTTPS client needs one installed).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "slipway_provider_aws=info".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `moto_server` from the venv that hack/moto.sh makes, made now if it is missing.
fn moto_server() -> PathBuf {
    let cache = std::env::var_os("SLIPWAY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/slipway")
        });
    let server = cache.join("venv/bin/moto_server");
    if server.exists() {
        return server;
    }
    let script = repo_root().join("hack/moto.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--ensure")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; run `hack/moto.sh --ensure` by hand",
                script.display()
            )
        });
    assert!(
        out.status.success() && server.exists(),
        "moto is not installed and `hack/moto.sh --ensure` failed; run it by hand to see why:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server
}

/// A moto server on a free loopback port, killed on drop.
pub struct Moto {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub async fn start() -> Self {
        init();
        let server = moto_server();
        let port = slipway_testenv::free_port().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // Unknown AMIs and instance types fail as they do on AWS.
            .env("MOTO_ENABLE_AMI_VALIDATION", "true")
            .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", server.display()));
        let mut moto = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if client
                .get(format!("{}/moto-api/data.json", moto.url))
                .send()
                .await
                .is_ok()
            {
                return moto;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                let log =
                    std::fs::read_to_string(moto._dir.path().join("moto.log")).unwrap_or_default();
                panic!("moto_server exited with {status} before answering:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on {} within 60 s",
                moto.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Moto {
    /// The moto_server process, for tests that keep it until their binary exits.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A provider against `endpoint` with static test credentials and quick retries.
pub fn provider(endpoint: &str, config: AwsConfig) -> AwsProvider {
    AwsProvider::new(
        AwsConfig {
            endpoint_url: Some(endpoint.to_string()),
            ..config
        },
        Arc::new(StaticCredentials(AwsCredentials::new(
            "AKIDSLIPWAYTEST",
            "test-secret",
            None,
        ))),
    )
}

pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_retries: 10,
    }
}

pub fn cluster(name: &str) -> ClusterInfo {
    ClusterInfo {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        kubernetes_version: "v1.37.2".into(),
        infrastructure: InfrastructureSpec {
            aws: Some(AwsSettings {
                region: REGION.into(),
                credentials_secret_ref: SecretRef { name: "aws".into() },
                vpc_id: None,
                availability_zones: vec!["us-east-1a".into(), "us-east-1b".into()],
                control_plane_ingress_cidrs: vec!["203.0.113.0/24".into()],
                nat_gateways: Default::default(),
            }),
            ..Default::default()
        },
    }
}

/// A plain EC2 client on moto, to look at what the provider made without going through it.
pub async fn ec2(endpoint: &str) -> aws_sdk_ec2::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "AKIDINSPECT",
            "x",
            None,
            None,
            "test",
        ))
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_ec2::Client::new(&config)
}

/// A plain Elastic Load Balancing (v2) client on moto.
pub async fn elb(endpoint: &str) -> aws_sdk_elasticloadbalancingv2::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "AKIDINSPECT",
            "x",
            None,
            None,
            "test",
        ))
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_elasticloadbalancingv2::Client::new(&config)
}

/// Tags of one Elastic Load Balancing resource, by key.
pub type ElbTags = BTreeMap<String, String>;

/// Every load balancer, target group and listener moto holds, each with its tags, read without the provider.
#[derive(Debug, Default)]
pub struct ElbInventory {
    pub load_balancers: Vec<(aws_sdk_elasticloadbalancingv2::types::LoadBalancer, ElbTags)>,
    pub target_groups: Vec<(aws_sdk_elasticloadbalancingv2::types::TargetGroup, ElbTags)>,
    pub listeners: Vec<(aws_sdk_elasticloadbalancingv2::types::Listener, ElbTags)>,
}

impl ElbInventory {
    pub async fn read(elb: &aws_sdk_elasticloadbalancingv2::Client) -> Self {
        let load_balancers = elb
            .describe_load_balancers()
            .send()
            .await
            .unwrap()
            .load_balancers()
            .to_vec();
        let target_groups = elb
            .describe_target_groups()
            .send()
            .await
            .unwrap()
            .target_groups()
            .to_vec();
        let mut listeners = Vec::new();
        for lb in &load_balancers {
            listeners.extend(
                elb.describe_listeners()
                    .load_balancer_arn(lb.load_balancer_arn().unwrap())
                    .send()
                    .await
                    .unwrap()
                    .listeners()
                    .iter()
                    .cloned(),
            );
        }
        let mut arns: Vec<String> = load_balancers
            .iter()
            .filter_map(|lb| lb.load_balancer_arn())
            .chain(target_groups.iter().filter_map(|tg| tg.target_group_arn()))
            .chain(listeners.iter().filter_map(|l| l.listener_arn()))
            .map(str::to_string)
            .collect();
        let mut tags: BTreeMap<String, ElbTags> = BTreeMap::new();
        while !arns.is_empty() {
            let chunk: Vec<String> = arns.drain(..arns.len().min(20)).collect();
            let out = elb
                .describe_tags()
                .set_resource_arns(Some(chunk))
                .send()
                .await
                .unwrap();
            for description in out.tag_descriptions() {
                tags.insert(
                    description.resource_arn().unwrap().to_string(),
                    description
                        .tags()
                        .iter()
                        .map(|t| {
                            (
                                t.key().unwrap_or_default().to_string(),
                                t.value().unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                );
            }
        }
        let tags_of = |arn: Option<&str>| {
            tags.get(arn.unwrap_or_default())
                .cloned()
                .unwrap_or_default()
        };
        Self {
            load_balancers: load_balancers
                .into_iter()
                .map(|lb| {
                    let t = tags_of(lb.load_balancer_arn());
                    (lb, t)
                })
                .collect(),
            target_groups: target_groups
                .into_iter()
                .map(|tg| {
                    let t = tags_of(tg.target_group_arn());
                    (tg, t)
                })
                .collect(),
            listeners: listeners
                .into_iter()
                .map(|l| {
                    let t = tags_of(l.listener_arn());
                    (l, t)
                })
                .collect(),
        }
    }

    /// How many load balancers, target groups and listeners there are: all of them, or (with `cluster`) those
    /// tagged `slipway.dev/cluster=<cluster>`, or (with `Some("*")`) those carrying that tag at all.
    pub fn counts(&self, cluster: Option<&str>) -> (usize, usize, usize) {
        let ours = |tags: &ElbTags| match cluster {
            None => true,
            Some("*") => tags.contains_key("slipway.dev/cluster"),
            Some(key) => tags.get("slipway.dev/cluster").map(String::as_str) == Some(key),
        };
        (
            self.load_balancers.iter().filter(|(_, t)| ours(t)).count(),
            self.target_groups.iter().filter(|(_, t)| ours(t)).count(),
            self.listeners.iter().filter(|(_, t)| ours(t)).count(),
        )
    }
}

/// The instance ids a target group holds (draining ones left out: they are on their way out), sorted.
pub async fn targets(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    target_group: &str,
) -> Vec<String> {
    let out = elb
        .describe_target_health()
        .target_group_arn(target_group)
        .send()
        .await
        .unwrap();
    let mut ids: Vec<String> = out
        .target_health_descriptions()
        .iter()
        .filter(|d| {
            d.target_health().and_then(|h| h.state())
                != Some(&aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::Draining)
        })
        .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// A loopback proxy in front of moto that answers a share of requests with EC2's throttling error, and records
/// when each request reached it.
pub struct ThrottlingProxy {
    pub url: String,
    pub seen: Arc<Mutex<Vec<(Instant, String)>>>,
    pub throttled: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// One request that reached a proxy: when, which EC2 action, signed with which access key, and its form body
/// (the request's parameters, URL-encoded).
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub action: String,
    pub access_key: String,
    pub body: String,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    /// Throttle every `every`-th request; 0: never.
    every: u64,
    count: Arc<AtomicU64>,
    throttled: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Access keys answered with EC2's `AuthFailure`, as AWS answers a deleted or revoked key.
    refused: Arc<Mutex<Vec<String>>>,
}

impl ProxyState {
    fn new(upstream: &str, every: u64) -> Self {
        Self {
            upstream: upstream.to_string(),
            client: reqwest::Client::new(),
            every,
            count: Arc::default(),
            throttled: Arc::default(),
            seen: Arc::default(),
            calls: Arc::default(),
            refused: Arc::default(),
        }
    }

    async fn serve(self) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(forward).with_state(self);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (format!("http://{addr}"), task)
    }
}

/// A loopback proxy in front of moto that counts every request by action and access key, and answers the
/// access keys it is told to refuse with `AuthFailure`: moto accepts any credentials, AWS does not.
pub struct CountingProxy {
    pub url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    refused: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    pub async fn start(upstream: &str) -> Self {
        let state = ProxyState::new(upstream, 0);
        let (calls, refused) = (state.calls.clone(), state.refused.clone());
        let (url, task) = state.serve().await;
        Self {
            url,
            calls,
            refused,
            task,
        }
    }

    /// From now on, requests signed with `access_key` get EC2's `AuthFailure` (HTTP 401).
    pub fn refuse(&self, access_key: &str) {
        self.refused.lock().unwrap().push(access_key.to_string());
    }

    /// The requests signed with `access_key` so far.
    pub fn calls_by(&self, access_key: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.access_key == access_key)
            .cloned()
            .collect()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const THROTTLED_BODY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"#;

/// Elastic Load Balancing's throttling answer: its own error document and code, HTTP 400.
const ELB_THROTTLED_BODY: &str = r#"<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>00000000-0000-0000-0000-000000000002</RequestId></ErrorResponse>"#;

/// Elastic Load Balancing's answer to a key it does not know.
const ELB_AUTH_FAILURE_BODY: &str = r#"<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error><RequestId>00000000-0000-0000-0000-000000000003</RequestId></ErrorResponse>"#;

impl ThrottlingProxy {
    /// Throttles every `every`-th request (counting from the first).
    pub async fn start(upstream: &str, every: u64) -> Self {
        assert!(
            every > 0,
            "a ThrottlingProxy throttles every n-th request, n > 0"
        );
        let state = ProxyState::new(upstream, every);
        let (seen, throttled) = (state.seen.clone(), state.throttled.clone());
        let (url, task) = state.serve().await;
        Self {
            url,
            seen,
            throttled,
            task,
        }
    }

    /// Requests that reached the proxy, by action (EC2's and Elastic Load Balancing's).
    pub fn actions(&self) -> Vec<(Instant, String)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ThrottlingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    State(state): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let action = form_value(&body, "Action").unwrap_or_else(|| "unknown".into());
    let access_key = access_key(&headers).unwrap_or_default();
    let elb = signing_service(&headers).as_deref() == Some("elasticloadbalancing");
    state
        .seen
        .lock()
        .unwrap()
        .push((Instant::now(), action.clone()));
    state.calls.lock().unwrap().push(Call {
        at: Instant::now(),
        action,
        access_key: access_key.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if state.refused.lock().unwrap().contains(&access_key) {
        let (status, body) = if elb {
            (StatusCode::FORBIDDEN, ELB_AUTH_FAILURE_BODY)
        } else {
            (StatusCode::UNAUTHORIZED, AUTH_FAILURE_BODY)
        };
        return Response::builder()
            .status(status)
            .header("content-type", "text/xml")
            .body(Body::from(body))
            .unwrap();
    }
    let n = state.count.fetch_add(1, Ordering::SeqCst);
    if state.every > 0 && n % state.every == 0 {
        state.throttled.fetch_add(1, Ordering::SeqCst);
        let (status, body) = if elb {
            (StatusCode::BAD_REQUEST, ELB_THROTTLED_BODY)
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, THROTTLED_BODY)
        };
        return Response::builder()
            .status(status)
            .header("content-type", "text/xml")
            .body(Body::from(body))
            .unwrap();
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = state
        .client
        .request(method, format!("{}{path}", state.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.unwrap();
    let status = answer.status();
    let content_type = answer.headers().get("content-type").cloned();
    let bytes = answer.bytes().await.unwrap();
    let mut response = Response::builder().status(status);
    if let Some(content_type) = content_type {
        response = response.header("content-type", content_type);
    }
    response.body(Body::from(bytes)).unwrap()
}

const AUTH_FAILURE_BODY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>AuthFailure</Code><Message>AWS was not able to validate the provided access credentials</Message></Error></Errors><RequestID>00000000-0000-0000-0000-000000000001</RequestID></Response>"#;

/// The access key of a SigV4-signed request: `Authorization: AWS4-HMAC-SHA256 Credential=<key>/<date>/…`.
fn access_key(headers: &HeaderMap) -> Option<String> {
    let authorization = headers.get("authorization")?.to_str().ok()?;
    let credential = authorization.split("Credential=").nth(1)?;
    Some(credential.split('/').next()?.to_string())
}

/// The service a SigV4-signed request is for: `…Credential=<key>/<date>/<region>/<service>/aws4_request`.
fn signing_service(headers: &HeaderMap) -> Option<String> {
    let authorization = headers.get("authorization")?.to_str().ok()?;
    let credential = authorization.split("Credential=").nth(1)?;
    Some(credential.split('/').nth(3)?.to_string())
}

fn form_value(body: &[u8], key: &str) -> Option<String> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{key}=")).map(str::to_string))
}
