//! The control plane is a real kube-apiserver: storage, server-side apply, watches and RBAC all behave as in a
//! cluster.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use slipway_testenv::TestEnv;

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

#[tokio::test]
async fn config_map_can_be_created_applied_and_deleted() {
    let env = TestEnv::shared().await;
    let ns = env.create_namespace("crud").await;
    let api: Api<ConfigMap> = Api::namespaced(env.client().await, &ns);

    api.create(
        &PostParams::default(),
        &config_map("settings", &[("a", "1")]),
    )
    .await
    .unwrap();

    let patch = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "settings" },
        "data": { "b": "2" },
    });
    let applied = api
        .patch(
            "settings",
            &PatchParams::apply("slipway-test").force(),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap();
    let data = applied.data.unwrap();
    assert_eq!(
        data.get("a").map(String::as_str),
        Some("1"),
        "create's field kept"
    );
    assert_eq!(
        data.get("b").map(String::as_str),
        Some("2"),
        "applied field added"
    );
    let managers: Vec<_> = applied
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"slipway-test".to_string()),
        "{managers:?}"
    );

    api.delete("settings", &DeleteParams::default())
        .await
        .unwrap();
    let gone = api.get_opt("settings").await.unwrap();
    assert!(gone.is_none(), "deleted ConfigMap still readable: {gone:?}");
}

#[tokio::test]
async fn watch_receives_added_modified_and_deleted_events() {
    let env = TestEnv::shared().await;
    let ns = env.create_namespace("watch").await;
    let api: Api<ConfigMap> = Api::namespaced(env.client().await, &ns);

    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    // The initial list of an empty namespace ends with InitDone; after it, every event is ours.
    loop {
        match events.try_next().await.unwrap().unwrap() {
            watcher::Event::InitDone => break,
            _ => continue,
        }
    }

    api.create(
        &PostParams::default(),
        &config_map("watched", &[("v", "1")]),
    )
    .await
    .unwrap();
    let merge = json!({ "data": { "v": "2" } });
    api.patch("watched", &PatchParams::default(), &Patch::Merge(&merge))
        .await
        .unwrap();
    api.delete("watched", &DeleteParams::default())
        .await
        .unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(20), events.try_next())
            .await
            .expect("watch event within 20s")
            .unwrap()
            .unwrap();
        match event {
            watcher::Event::Apply(cm) => seen.push(format!(
                "apply v={}",
                cm.data
                    .unwrap_or_default()
                    .get("v")
                    .cloned()
                    .unwrap_or_default()
            )),
            watcher::Event::Delete(cm) => {
                seen.push(format!("delete {}", cm.metadata.name.unwrap()))
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(seen, ["apply v=1", "apply v=2", "delete watched"]);
}

#[tokio::test]
async fn identity_without_grant_is_denied_until_a_role_allows_it() {
    let env = TestEnv::shared().await;
    let ns = env.create_namespace("rbac").await;
    let admin = env.client().await;
    let alice: Api<ConfigMap> = Api::namespaced(env.client_as("alice", &["developers"]).await, &ns);

    let denied = alice.list(&Default::default()).await.unwrap_err();
    match &denied {
        kube::Error::Api(status) => assert_eq!(status.code, 403, "{denied}"),
        other => panic!("expected 403 Forbidden, got {other}"),
    }

    let role = Role {
        metadata: ObjectMeta {
            name: Some("config-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("alice-reads-config".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "config-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: "alice".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin, &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    // RBAC reads from the apiserver's informer cache: the grant takes effect within moments, not instantly.
    let mut allowed = false;
    for _ in 0..50 {
        if alice.list(&Default::default()).await.is_ok() {
            allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(allowed, "alice still denied after the RoleBinding");

    // The grant is read-only: writing is still refused.
    let write = alice
        .create(&PostParams::default(), &config_map("nope", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&write, kube::Error::Api(s) if s.code == 403),
        "{write}"
    );
}

#[tokio::test]
async fn serves_the_pinned_kubernetes_version() {
    let env = TestEnv::shared().await;
    let version = env.client().await.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, slipway_testenv::kubernetes_version());
}
