//! A BMC that tries to send the client elsewhere: the real sushy-tools behind a loopback proxy that rewrites one
//! answer, and a second listener on another port that records every request (and whether it carried
//! credentials). A link (`@odata.id`), a redirect or a task monitor (`Location`) leading off the BMC's origin is
//! refused before anything is sent there; an oversized answer is refused; a BMC address outside the egress
//! policy is refused before connecting, and the host controller says which flag allows it.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use kube::Api;
use serde_json::{Value, json};
use slipway_api::{BareMetalHost, HostState};
use slipway_provider_baremetal::redfish::{
    BmcAddress, ClientOptions, Credentials, RedfishClient, RedfishError, ResetType,
};
use slipway_provider_baremetal::{HostControllerSettings, reconcile_host_with};
use support::{PASSWORD, Sushy, USERNAME, state};

/// An answer on its way back through the proxy.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

type Rewrite = Arc<dyn Fn(&Method, &str, Answer) -> Answer + Send + Sync>;

/// A loopback proxy in front of sushy-tools that passes requests through and lets a test rewrite answers.
struct Proxy {
    origin: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String, rewrite: Rewrite) -> Self {
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let app = axum::Router::new().fallback(move |request: Request| {
            counter.fetch_add(1, Ordering::SeqCst);
            let (http, upstream, rewrite) = (http.clone(), upstream.clone(), rewrite.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let path = parts.uri.path().to_string();
                let mut forward = http
                    .request(parts.method.clone(), format!("{upstream}{path}"))
                    .body(body.to_vec());
                for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
                    if let Some(value) = parts.headers.get(&name) {
                        forward = forward.header(name, value);
                    }
                }
                let answer = forward.send().await.unwrap();
                let mut headers = HeaderMap::new();
                for name in [header::CONTENT_TYPE, header::LOCATION] {
                    if let Some(value) = answer.headers().get(&name) {
                        headers.insert(name, value.clone());
                    }
                }
                let answer = Answer {
                    status: answer.status(),
                    headers,
                    body: answer.bytes().await.unwrap().to_vec(),
                };
                let answer = rewrite(&parts.method, &path, answer);
                let mut response = Response::new(Body::from(answer.body));
                *response.status_mut() = answer.status;
                *response.headers_mut() = answer.headers;
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            origin,
            requests,
            task,
        }
    }

    /// `spec.bmc.address` of sushy's system 0, through the proxy.
    fn address(&self) -> String {
        format!(
            "redfish+{}/redfish/v1/Systems/{}",
            self.origin,
            Sushy::system_id(0)
        )
    }

    fn client(&self, options: ClientOptions) -> RedfishClient {
        RedfishClient::new(
            BmcAddress::parse(&self.address()).unwrap(),
            Credentials::new(USERNAME, PASSWORD),
            options,
        )
        .unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Another origin: records each request's path and whether it carried an `Authorization` header, and answers
/// what a BMC would, so that a client that followed a link there would get on with it.
struct Elsewhere {
    origin: String,
    seen: Arc<Mutex<Vec<(String, bool)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Elsewhere {
    async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |request: Request| {
            record.lock().unwrap().push((
                request.uri().path().to_string(),
                request.headers().contains_key(header::AUTHORIZATION),
            ));
            async {
                let body =
                    json!({ "@odata.id": "/elsewhere", "Members": [], "TaskState": "Completed" });
                let mut response = Response::new(Body::from(body.to_string()));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { origin, seen, task }
    }

    fn assert_untouched(&self) {
        let seen = self.seen.lock().unwrap();
        assert!(
            seen.is_empty(),
            "requests reached the other origin (path, with credentials): {seen:?}"
        );
    }
}

impl Drop for Elsewhere {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn system_path() -> String {
    format!("/redfish/v1/Systems/{}", Sushy::system_id(0))
}

fn json_body(answer: &Answer) -> Value {
    serde_json::from_slice(&answer.body).unwrap()
}

fn with_json(mut answer: Answer, value: &Value) -> Answer {
    answer.body = value.to_string().into_bytes();
    answer
}

fn assert_leaves_origin(error: &RedfishError, proxy: &Proxy, elsewhere: &Elsewhere) {
    match error {
        RedfishError::LinkLeavesOrigin { bmc, link } => {
            assert_eq!(bmc, &proxy.origin);
            assert_eq!(link, &elsewhere.origin);
        }
        other => panic!("expected LinkLeavesOrigin, got {other:?}"),
    }
    assert_eq!(error.reason(), "BMCLinkLeavesOrigin");
    assert!(!error.to_string().contains(PASSWORD), "{error}");
}

/// One sushy behind four proxies, each rewriting one answer. (One emulator for all four: starting several at once
/// on a busy machine is slow.)
#[tokio::test]
async fn links_redirects_and_task_monitors_off_the_bmc_origin_are_refused_and_oversized_answers_too()
 {
    let sushy = Sushy::start(1, false).await;

    // A link: the System names its virtual media collection on another origin.
    let elsewhere = Elsewhere::start().await;
    let target = format!("{}{}/VirtualMedia", elsewhere.origin, system_path());
    let rewrite: Rewrite = Arc::new(move |method, path, answer| {
        if method == Method::GET && path == system_path() && answer.status.is_success() {
            let mut system = json_body(&answer);
            system["VirtualMedia"] = json!({ "@odata.id": target });
            return with_json(answer, &system);
        }
        answer
    });
    let proxy = Proxy::start(sushy.origin(), rewrite).await;
    let client = proxy.client(support::fast_redfish());
    // The System itself reads fine through the proxy.
    client.system().await.unwrap();
    let error = client
        .insert_media("http://127.0.0.1:1/installer.iso")
        .await
        .unwrap_err();
    assert_leaves_origin(&error, &proxy, &elsewhere);
    elsewhere.assert_untouched();

    // A redirect: the System answers 307 to another origin.
    let elsewhere = Elsewhere::start().await;
    let target = format!("{}{}", elsewhere.origin, system_path());
    let rewrite: Rewrite = Arc::new(move |method, path, mut answer| {
        if method == Method::GET && path == system_path() {
            answer.status = StatusCode::TEMPORARY_REDIRECT;
            answer
                .headers
                .insert(header::LOCATION, target.parse().unwrap());
            answer.body.clear();
        }
        answer
    });
    let proxy = Proxy::start(sushy.origin(), rewrite).await;
    let client = proxy.client(support::fast_redfish());
    client.service_root().await.unwrap();
    let error = client.system().await.unwrap_err();
    assert_leaves_origin(&error, &proxy, &elsewhere);
    elsewhere.assert_untouched();

    // A task monitor: sushy answers a reset at once; a BMC that runs it as a task answers 202 and names its
    // monitor in Location, here on another origin.
    let elsewhere = Elsewhere::start().await;
    let monitor = format!("{}/redfish/v1/TaskService/TaskMonitors/1", elsewhere.origin);
    let rewrite: Rewrite = Arc::new(move |method, path, mut answer| {
        if method == Method::POST && path.ends_with("/Actions/ComputerSystem.Reset") {
            answer.status = StatusCode::ACCEPTED;
            answer
                .headers
                .insert(header::LOCATION, monitor.parse().unwrap());
            answer.body.clear();
        }
        answer
    });
    let proxy = Proxy::start(sushy.origin(), rewrite).await;
    let client = proxy.client(support::fast_redfish());
    let error = client.set_power(ResetType::On).await.unwrap_err();
    assert_leaves_origin(&error, &proxy, &elsewhere);
    elsewhere.assert_untouched();

    // An oversized answer: the System padded to 2 MiB.
    let rewrite: Rewrite = Arc::new(|method, path, answer| {
        if method == Method::GET && path == system_path() && answer.status.is_success() {
            let mut system = json_body(&answer);
            system["Oem"] = json!({ "padding": "x".repeat(2 * 1024 * 1024) });
            return with_json(answer, &system);
        }
        answer
    });
    let proxy = Proxy::start(sushy.origin(), rewrite).await;
    let client = proxy.client(support::fast_redfish());
    client.service_root().await.unwrap();
    let error = client.system().await.unwrap_err();
    assert!(
        matches!(error, RedfishError::ResponseTooLarge { limit, .. } if limit == ClientOptions::default().max_body_bytes),
        "{error:?}"
    );
    assert_eq!(error.reason(), "BMCResponseTooLarge");
}

#[tokio::test]
async fn a_bmc_address_outside_the_egress_policy_is_refused_and_the_host_says_which_flag_allows_it()
{
    let sushy = Sushy::start(1, false).await;
    let proxy = Proxy::start(sushy.origin(), Arc::new(|_, _, answer| answer)).await;
    let refusing = ClientOptions {
        egress: Default::default(),
        ..support::fast_redfish()
    };
    let error = proxy
        .client(refusing.clone())
        .service_root()
        .await
        .unwrap_err();
    assert!(
        matches!(error, RedfishError::AddressNotAllowed { .. }),
        "{error:?}"
    );
    assert_eq!(error.reason(), "BMCAddressNotAllowed");

    // Through the host controller: the host goes to Error and says what to do.
    let (client, namespace) = support::namespace("bmh-egress").await;
    support::put_secret(&client, &namespace, "bmc", USERNAME, PASSWORD).await;
    support::create_host(&client, &namespace, "fenced", proxy.address(), "bmc", false).await;
    let api: Api<BareMetalHost> = Api::namespaced(client.clone(), &namespace);
    let settings = HostControllerSettings {
        redfish: refusing,
        ..support::controller_settings(&namespace)
    };
    reconcile_host_with(&client, &api.get("fenced").await.unwrap(), &settings)
        .await
        .unwrap();
    let host = api.get("fenced").await.unwrap();
    assert_eq!(state(&host), Some(HostState::Error));
    let last_error = host.status.unwrap().last_error.unwrap_or_default();
    assert!(
        last_error.contains("refused to connect to 127.0.0.1 (loopback)")
            && last_error.contains("--allow-egress 127.0.0.1/32"),
        "{last_error}"
    );
    assert_eq!(
        proxy.requests.load(Ordering::SeqCst),
        0,
        "the refused BMC was connected to"
    );

    // Allowed, the same host registers.
    reconcile_host_with(
        &client,
        &api.get("fenced").await.unwrap(),
        &support::controller_settings(&namespace),
    )
    .await
    .unwrap();
    assert_eq!(
        state(&api.get("fenced").await.unwrap()),
        Some(HostState::Available)
    );
}
