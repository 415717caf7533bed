//! Two managers, one Lease: only the leader reconciles, and the standby takes over when the leader dies.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use support::{ManagerProcess, apply, env, eventually, sim_cluster, wait_ready};

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("slipway-manager")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

#[tokio::test]
async fn only_the_leader_reconciles_and_the_standby_takes_over_when_it_dies() {
    let env = env().await;
    let client = env.client().await;
    let dir = tempfile::tempdir().unwrap();
    let ports = [
        slipway_testenv::free_port().unwrap(),
        slipway_testenv::free_port().unwrap(),
    ];
    let start = |name: &str, port: u16| {
        let identity = format!("--identity={name}");
        let metrics = format!("--metrics-addr=127.0.0.1:{port}");
        ManagerProcess::start(
            env.kubeconfig_path(),
            &dir.path().join(format!("{name}.log")),
            &[identity.as_str(), metrics.as_str(), "--lease-duration=10"],
        )
    };
    let mut managers = [
        ("manager-a", start("manager-a", ports[0])),
        ("manager-b", start("manager-b", ports[1])),
    ];

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let leader = eventually("a leader", Duration::from_secs(30), || async {
        holder(&leases).await.ok_or_else(|| "no holder".to_string())
    })
    .await;
    let ns = env.create_namespace("leader").await;
    apply(&client, &ns, &sim_cluster("first", 1, 2, "{}")).await;
    wait_ready(&client, &ns, "first", Duration::from_secs(60)).await;
    // A scale of a running pool is told as an Event (the first machines of a cluster are not).
    apply(&client, &ns, &sim_cluster("first", 1, 3, "{}")).await;

    // Every Event about the cluster came from the leader.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let reporters: Vec<String> = eventually("an Event", Duration::from_secs(60), || async {
        let reporters: Vec<String> = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter_map(|e| e.reporting_instance)
            .collect();
        if reporters.is_empty() {
            Err("no events recorded".to_string())
        } else {
            Ok(reporters)
        }
    })
    .await;
    assert!(
        reporters.iter().all(|r| *r == leader),
        "events from {reporters:?}, leader {leader}"
    );

    // The leader's metrics count its reconciles; the standby's count none.
    let (leader_index, standby_index) = if leader == "manager-a" {
        (0, 1)
    } else {
        (1, 0)
    };
    let leader_metrics = scrape(ports[leader_index]).await;
    let standby_metrics = scrape(ports[standby_index]).await;
    assert!(
        reconciles(&leader_metrics) > 0,
        "leader metrics:\n{leader_metrics}"
    );
    assert_eq!(
        reconciles(&standby_metrics),
        0,
        "standby reconciled:\n{standby_metrics}"
    );

    // Kill the leader without letting it release the Lease: the standby waits out the lease and takes over.
    let killed_at = Instant::now();
    managers[leader_index].1.kill();
    let standby = managers[standby_index].0.to_string();
    eventually(
        "the standby holds the lease",
        Duration::from_secs(30),
        || async {
            match holder(&leases).await {
                Some(h) if h == standby => Ok(()),
                other => Err(format!("holder {other:?}")),
            }
        },
    )
    .await;
    apply(&client, &ns, &sim_cluster("second", 1, 2, "{}")).await;
    let remaining = Duration::from_secs(30).saturating_sub(killed_at.elapsed());
    wait_ready(
        &client,
        &ns,
        "second",
        remaining.max(Duration::from_secs(1)),
    )
    .await;
    assert!(
        killed_at.elapsed() < Duration::from_secs(30),
        "took over in {:?}",
        killed_at.elapsed()
    );

    // A graceful stop releases the lease at once.
    let status = managers[standby_index].1.terminate();
    assert!(status.success(), "graceful stop exited with {status}");
    let lease = leases.get("slipway-manager").await.unwrap();
    let holder_now = lease.spec.and_then(|s| s.holder_identity);
    assert!(
        holder_now.as_deref().is_none_or(str::is_empty),
        "lease still held by {holder_now:?} after SIGTERM"
    );
}

async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// Sum of `slipway_reconciles_total` over controllers.
fn reconciles(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("slipway_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
