//! The sim provider keeps its promises: idempotent creates, delays, faults, and state that survives a restart.

use std::time::Duration;

use slipway_api::{InfrastructureSpec, MachinePhase, MachineSettings, SimSettings};
use slipway_provider::{
    ClusterInfo, Deletion, InfrastructureProvider, MachineRequest, MachineRole, ProviderError,
};
use slipway_provider_sim::SimProvider;

fn cluster(settings: SimSettings) -> ClusterInfo {
    ClusterInfo {
        namespace: "team-a".into(),
        name: "dev".into(),
        uid: "uid-1".into(),
        kubernetes_version: "v1.37.2".into(),
        infrastructure: InfrastructureSpec {
            sim: Some(settings),
            ..Default::default()
        },
    }
}

fn worker(name: &str) -> MachineRequest {
    MachineRequest {
        name: name.into(),
        role: MachineRole::Worker {
            pool: "workers".into(),
        },
        settings: MachineSettings::default(),
        kubernetes_version: "v1.37.2".into(),
        template_hash: "abc".into(),
        user_data: None,
    }
}

#[tokio::test]
async fn creating_the_same_machine_twice_makes_one() {
    let sim = SimProvider::new();
    let cluster = cluster(SimSettings::default());
    let first = sim
        .create_machine(&cluster, &worker("workers-0"))
        .await
        .unwrap();
    let second = sim
        .create_machine(&cluster, &worker("workers-0"))
        .await
        .unwrap();
    assert_eq!(first.provider_id, "sim://team-a/dev/workers-0");
    assert_eq!(first, second);
    let state = sim.snapshot();
    assert_eq!(state.create_calls, 1);
    assert_eq!(state.creations.values().copied().collect::<Vec<_>>(), [1]);
    let role = MachineRole::Worker {
        pool: "workers".into(),
    };
    assert_eq!(sim.list_machines(&cluster, &role).await.unwrap().len(), 1);
    assert!(
        sim.list_machines(&cluster, &MachineRole::ControlPlane)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn machines_run_after_the_create_delay_and_go_after_the_delete_delay() {
    let sim = SimProvider::new();
    let cluster = cluster(SimSettings {
        create_delay: Some("300ms".into()),
        delete_delay: Some("300ms".into()),
        ..Default::default()
    });
    let role = MachineRole::Worker {
        pool: "workers".into(),
    };
    let machine = sim
        .create_machine(&cluster, &worker("workers-0"))
        .await
        .unwrap();
    assert_eq!(machine.phase, MachinePhase::Provisioning);
    assert!(!machine.ready);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let listed = sim.list_machines(&cluster, &role).await.unwrap();
    assert_eq!(listed[0].phase, MachinePhase::Running);
    assert!(listed[0].ready);

    let deletion = sim
        .delete_machine(&cluster, &role, "workers-0")
        .await
        .unwrap();
    assert!(matches!(deletion, Deletion::InProgress(_)), "{deletion:?}");
    assert!(matches!(
        sim.delete_cluster(&cluster).await.unwrap(),
        Deletion::InProgress(_)
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(sim.list_machines(&cluster, &role).await.unwrap().is_empty());
    assert_eq!(
        sim.delete_machine(&cluster, &role, "workers-0")
            .await
            .unwrap(),
        Deletion::Done
    );
    assert_eq!(sim.delete_cluster(&cluster).await.unwrap(), Deletion::Done);
}

#[tokio::test]
async fn injected_failures_are_transient_and_counted_down() {
    let sim = SimProvider::new();
    let cluster = cluster(SimSettings::default());
    sim.inject_failures(2);
    for _ in 0..2 {
        let error = sim
            .create_machine(&cluster, &worker("workers-0"))
            .await
            .unwrap_err();
        assert!(error.is_retryable());
        assert_eq!(error.reason(), "InjectedFault");
    }
    sim.create_machine(&cluster, &worker("workers-0"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failure_rate_of_100_percent_fails_every_create() {
    let sim = SimProvider::new();
    let cluster = cluster(SimSettings {
        failure_percent: Some(100),
        ..Default::default()
    });
    for i in 0..5 {
        let error = sim
            .create_machine(&cluster, &worker(&format!("w-{i}")))
            .await
            .unwrap_err();
        assert!(matches!(error, ProviderError::Transient { .. }));
    }
    assert_eq!(sim.snapshot().create_calls, 0);
}

#[tokio::test]
async fn state_file_survives_a_new_provider() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.json");
    let cluster = cluster(SimSettings::default());
    {
        let sim = SimProvider::with_state_file(&path).unwrap();
        sim.create_machine(&cluster, &worker("workers-0"))
            .await
            .unwrap();
    }
    let sim = SimProvider::with_state_file(&path).unwrap();
    // Known from the file: creating it again is not a second creation.
    sim.create_machine(&cluster, &worker("workers-0"))
        .await
        .unwrap();
    let state = SimProvider::read_state_file(&path).unwrap();
    assert_eq!(state.creations.values().copied().collect::<Vec<_>>(), [1]);
}

#[tokio::test]
async fn a_bad_delay_is_a_permanent_error_naming_the_field() {
    let sim = SimProvider::new();
    let cluster = cluster(SimSettings {
        create_delay: Some("soon".into()),
        ..Default::default()
    });
    let error = sim
        .create_machine(&cluster, &worker("w"))
        .await
        .unwrap_err();
    assert!(!error.is_retryable());
    assert!(
        error
            .to_string()
            .contains("spec.infrastructure.sim.createDelay"),
        "{error}"
    );
}
