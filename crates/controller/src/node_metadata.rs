//! A pool's `template.nodeLabels` and `template.taints` on its Nodes: put there, kept there, and taken off again
//! when they leave the template, without touching what others (the kubelet, the node controller, a person) put on
//! the Node.
//!
//! What Slipway put on a Node is recorded on the Node itself, in two annotations, so that a label or taint removed
//! from the template can be told from one someone else added. The change is one merge patch carrying the Node's
//! resourceVersion: if the Node changed meanwhile the patch is refused and the next pass, woken by that change,
//! works from the new Node.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Taint};
use serde_json::{Map, Value, json};
use slipway_api::{NodeTaint, TaintEffect};

/// Keys of the labels Slipway put on the Node, comma-separated.
pub const APPLIED_LABELS_ANNOTATION: &str = "slipway.dev/applied-labels";
/// The taints Slipway put on the Node, as `key:Effect`, comma-separated.
pub const APPLIED_TAINTS_ANNOTATION: &str = "slipway.dev/applied-taints";

/// The merge patch that brings the Node's labels and taints to what the pool wants, or `None` when they are
/// there already.
pub fn patch(
    node: &Node,
    labels: &BTreeMap<String, String>,
    taints: &[NodeTaint],
) -> Option<Value> {
    let annotations = node.metadata.annotations.clone().unwrap_or_default();
    let recorded = |key: &str| -> BTreeSet<String> {
        annotations
            .get(key)
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut metadata = Map::new();

    // Labels: the wanted ones with their values, and the ones Slipway put there before and no longer wants gone.
    let current = node.metadata.labels.clone().unwrap_or_default();
    let mut label_changes = Map::new();
    for (key, value) in labels {
        if current.get(key) != Some(value) {
            label_changes.insert(key.clone(), json!(value));
        }
    }
    for key in recorded(APPLIED_LABELS_ANNOTATION) {
        if !labels.contains_key(&key) && current.contains_key(&key) {
            label_changes.insert(key, Value::Null);
        }
    }
    if !label_changes.is_empty() {
        metadata.insert("labels".into(), Value::Object(label_changes));
    }

    // Taints are one list: the Node's own taints, less the ones Slipway put there (they are added back as wanted).
    let wanted: Vec<Taint> = taints.iter().map(to_taint).collect();
    let ours: BTreeSet<String> = recorded(APPLIED_TAINTS_ANNOTATION)
        .into_iter()
        .chain(wanted.iter().map(taint_id))
        .collect();
    let existing = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut next: Vec<Taint> = existing
        .iter()
        .filter(|t| !ours.contains(&taint_id(t)))
        .cloned()
        .collect();
    next.extend(wanted.iter().cloned());
    let same = |a: &[Taint], b: &[Taint]| {
        let set = |list: &[Taint]| -> BTreeSet<(String, Option<String>, String)> {
            list.iter()
                .map(|t| (t.key.clone(), t.value.clone(), t.effect.clone()))
                .collect()
        };
        a.len() == b.len() && set(a) == set(b)
    };
    let taints_change = !same(&existing, &next);

    let mut annotation_changes = Map::new();
    for (key, value) in [
        (APPLIED_LABELS_ANNOTATION, join(labels.keys().cloned())),
        (APPLIED_TAINTS_ANNOTATION, join(wanted.iter().map(taint_id))),
    ] {
        let now = annotations.get(key).map(String::as_str).unwrap_or_default();
        if now != value {
            annotation_changes.insert(
                key.into(),
                if value.is_empty() {
                    Value::Null
                } else {
                    json!(value)
                },
            );
        }
    }
    if !annotation_changes.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotation_changes));
    }

    if metadata.is_empty() && !taints_change {
        return None;
    }
    metadata.insert(
        "resourceVersion".into(),
        json!(node.metadata.resource_version),
    );
    let mut patch = json!({ "metadata": metadata });
    if taints_change {
        patch["spec"] = json!({ "taints": next });
    }
    Some(patch)
}

fn to_taint(taint: &NodeTaint) -> Taint {
    Taint {
        key: taint.key.clone(),
        value: taint.value.clone(),
        effect: match taint.effect {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
        .into(),
        time_added: None,
    }
}

/// A taint's identity on a Node: its key and effect (a Node holds one taint per pair).
fn taint_id(taint: &Taint) -> String {
    format!("{}:{}", taint.key, taint.effect)
}

fn join(items: impl Iterator<Item = String>) -> String {
    items
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::NodeSpec;
    use kube::api::ObjectMeta;

    use super::*;

    fn node(
        labels: &[(&str, &str)],
        taints: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> Node {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                resource_version: Some("42".into()),
                labels: Some(map(labels)),
                annotations: Some(map(annotations)),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(key, effect)| Taint {
                            key: key.to_string(),
                            effect: effect.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn wanted_labels() -> BTreeMap<String, String> {
        [("tier".to_string(), "web".to_string())].into()
    }

    fn wanted_taints() -> Vec<NodeTaint> {
        vec![NodeTaint {
            key: "dedicated".into(),
            value: Some("web".into()),
            effect: TaintEffect::NoSchedule,
        }]
    }

    #[test]
    fn a_new_node_gets_the_labels_taints_and_the_record_of_them() {
        let fresh = node(
            &[("kubernetes.io/hostname", "n1")],
            &[("node.kubernetes.io/not-ready", "NoSchedule")],
            &[],
        );
        let patch = patch(&fresh, &wanted_labels(), &wanted_taints()).expect("a change");
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["metadata"]["labels"], json!({ "tier": "web" }));
        assert_eq!(
            patch["metadata"]["annotations"],
            json!({ APPLIED_LABELS_ANNOTATION: "tier", APPLIED_TAINTS_ANNOTATION: "dedicated:NoSchedule" })
        );
        // The node controller's taint stays.
        assert_eq!(
            patch["spec"]["taints"],
            json!([
                { "key": "node.kubernetes.io/not-ready", "effect": "NoSchedule" },
                { "key": "dedicated", "value": "web", "effect": "NoSchedule" }
            ])
        );
    }

    #[test]
    fn a_node_as_wanted_needs_no_patch() {
        let done = node(
            &[("tier", "web"), ("other", "x")],
            &[("node.kubernetes.io/not-ready", "NoSchedule")],
            &[
                (APPLIED_LABELS_ANNOTATION, "tier"),
                (APPLIED_TAINTS_ANNOTATION, "dedicated:NoSchedule"),
            ],
        );
        let mut done = done;
        done.spec
            .as_mut()
            .unwrap()
            .taints
            .as_mut()
            .unwrap()
            .push(Taint {
                key: "dedicated".into(),
                value: Some("web".into()),
                effect: "NoSchedule".into(),
                time_added: None,
            });
        assert_eq!(patch(&done, &wanted_labels(), &wanted_taints()), None);
    }

    #[test]
    fn a_label_removed_by_hand_comes_back_and_one_removed_from_the_template_goes() {
        let edited = node(
            &[("gone", "1"), ("mine", "x")],
            &[],
            &[(APPLIED_LABELS_ANNOTATION, "gone,tier")],
        );
        let patch = patch(&edited, &wanted_labels(), &[]).expect("a change");
        // `tier` was removed by hand: back. `gone` left the template: removed. `mine` was never Slipway's: kept.
        assert_eq!(
            patch["metadata"]["labels"],
            json!({ "tier": "web", "gone": null })
        );
        assert_eq!(
            patch["metadata"]["annotations"],
            json!({ APPLIED_LABELS_ANNOTATION: "tier" })
        );
        assert!(patch.get("spec").is_none(), "no taint changes: {patch}");
    }

    #[test]
    fn a_taint_removed_from_the_template_goes_and_others_stay() {
        let tainted = node(
            &[],
            &[("dedicated", "NoSchedule"), ("someone-else", "NoExecute")],
            &[(APPLIED_TAINTS_ANNOTATION, "dedicated:NoSchedule")],
        );
        let patch = patch(&tainted, &BTreeMap::new(), &[]).expect("a change");
        assert_eq!(
            patch["spec"]["taints"],
            json!([{ "key": "someone-else", "effect": "NoExecute" }])
        );
        assert_eq!(
            patch["metadata"]["annotations"],
            json!({ APPLIED_TAINTS_ANNOTATION: null })
        );
    }

    #[test]
    fn a_changed_taint_value_replaces_the_old_one() {
        let tainted = node(
            &[],
            &[("dedicated", "NoSchedule")],
            &[(APPLIED_TAINTS_ANNOTATION, "dedicated:NoSchedule")],
        );
        let patch = patch(&tainted, &BTreeMap::new(), &wanted_taints()).expect("a change");
        assert_eq!(
            patch["spec"]["taints"],
            json!([{ "key": "dedicated", "value": "web", "effect": "NoSchedule" }])
        );
    }
}
