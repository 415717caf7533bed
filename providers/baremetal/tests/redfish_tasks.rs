//! What sushy-tools never does: answer an action with `202 Accepted` and a task monitor, or fail with a 5xx
//! that goes away. A loopback BMC that does both, to prove the client follows tasks to their end and retries
//! transient failures, and that it sends credentials where Redfish wants them and nowhere else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use slipway_provider_baremetal::redfish::{
    BmcAddress, ClientOptions, Credentials, RedfishClient, RedfishError, ResetType, RetryPolicy,
};

#[derive(Clone, Default)]
struct Bmc {
    system_gets: Arc<AtomicUsize>,
    task_polls: Arc<AtomicUsize>,
    /// How the task ends: `Completed` or `Exception`.
    outcome: Arc<Mutex<&'static str>>,
    /// Authorization headers seen, by path.
    auth: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Bmc {
    fn saw(&self, path: &str, headers: &HeaderMap) {
        self.auth.lock().unwrap().push((
            path.to_string(),
            headers.contains_key(header::AUTHORIZATION),
        ));
    }
}

/// A JSON answer (axum's `json` feature is off in the workspace).
fn json_response(value: serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn root(State(bmc): State<Bmc>, headers: HeaderMap) -> Response {
    bmc.saw("/redfish/v1/", &headers);
    json_response(
        json!({ "@odata.id": "/redfish/v1/", "Systems": { "@odata.id": "/redfish/v1/Systems" } }),
    )
}

async fn system(State(bmc): State<Bmc>, headers: HeaderMap) -> Response {
    bmc.saw("/redfish/v1/Systems/1", &headers);
    // The first read fails the way an overloaded BMC does; the client must retry it.
    if bmc.system_gets.fetch_add(1, Ordering::SeqCst) == 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    }
    json_response(json!({
        "@odata.id": "/redfish/v1/Systems/1",
        "PowerState": "Off",
        "Manufacturer": "Acme",
        "Model": "R1000",
        "Actions": { "#ComputerSystem.Reset": { "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset" } },
    }))
}

async fn reset(State(bmc): State<Bmc>, headers: HeaderMap) -> Response {
    bmc.saw("reset", &headers);
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, "/redfish/v1/TaskService/TaskMonitors/7")],
    )
        .into_response()
}

async fn monitor(State(bmc): State<Bmc>) -> Response {
    // Running for two polls, then ended.
    if bmc.task_polls.fetch_add(1, Ordering::SeqCst) < 2 {
        return StatusCode::ACCEPTED.into_response();
    }
    let outcome = *bmc.outcome.lock().unwrap();
    json_response(json!({
        "@odata.id": "/redfish/v1/TaskService/Tasks/7",
        "TaskState": outcome,
        "TaskStatus": if outcome == "Completed" { "OK" } else { "Critical" },
        "Messages": [{ "Message": "Power supply 2 is missing" }],
    }))
}

async fn start(outcome: &'static str) -> (Bmc, RedfishClient, tokio::task::JoinHandle<()>) {
    let bmc = Bmc::default();
    *bmc.outcome.lock().unwrap() = outcome;
    let app = axum::Router::new()
        .route("/redfish/v1/", get(root))
        .route("/redfish/v1/Systems/1", get(system))
        .route(
            "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            post(reset),
        )
        .route("/redfish/v1/TaskService/TaskMonitors/7", get(monitor))
        .with_state(bmc.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let client = RedfishClient::new(
        BmcAddress::parse(&format!("redfish+http://{addr}/redfish/v1/Systems/1")).unwrap(),
        Credentials::new("admin", "secret"),
        ClientOptions {
            retry: RetryPolicy {
                min_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
                max_retries: 3,
            },
            task_poll_interval: Duration::from_millis(20),
            // This BMC listens on loopback, which the default egress policy refuses.
            egress: slipway_egress::EgressPolicy::allowing([slipway_egress::parse_cidr(
                "127.0.0.0/8",
            )
            .unwrap()]),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    (bmc, client, server)
}

#[tokio::test]
async fn an_accepted_action_is_followed_through_its_task_monitor() {
    let (bmc, client, server) = start("Completed").await;
    client.service_root().await.unwrap();
    client.set_power(ResetType::On).await.unwrap();
    assert_eq!(
        bmc.task_polls.load(Ordering::SeqCst),
        3,
        "polled while 202, stopped at the end"
    );
    assert_eq!(
        bmc.system_gets.load(Ordering::SeqCst),
        2,
        "the 503 was retried once"
    );
    let system = client.system().await.unwrap();
    assert_eq!(
        (system.manufacturer.as_deref(), system.model.as_deref()),
        (Some("Acme"), Some("R1000"))
    );
    // Credentials go with every request but the service root's, which Redfish serves without login.
    for (path, authenticated) in bmc.auth.lock().unwrap().iter() {
        assert_eq!(*authenticated, path != "/redfish/v1/", "{path}");
    }
    server.abort();
}

#[tokio::test]
async fn a_task_that_ends_in_exception_is_an_error_with_the_bmc_message() {
    let (_bmc, client, server) = start("Exception").await;
    let error = client.set_power(ResetType::On).await.unwrap_err();
    assert!(
        matches!(&error, RedfishError::TaskFailed { state, .. } if state == "Exception"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("Power supply 2 is missing"),
        "{error}"
    );
    assert!(!error.to_string().contains("secret"), "{error}");
    server.abort();
}
