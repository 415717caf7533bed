//! `ObjectRef`: which object a manifest document, an inventory entry or an error is about.

use std::fmt;

use kube::api::{DynamicObject, GroupVersionKind};
use serde::{Deserialize, Serialize};

/// An object's identity: group, version, kind, namespace (absent for cluster-scoped objects) and name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// Empty for the core group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    pub version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    /// The reference of a parsed object, namespace as written in it.
    pub fn from_object(object: &DynamicObject) -> Self {
        let (api_version, kind) = object
            .types
            .as_ref()
            .map(|t| (t.api_version.as_str(), t.kind.as_str()))
            .unwrap_or_default();
        let (group, version) = split_api_version(api_version);
        Self {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            namespace: object.metadata.namespace.clone(),
            name: object.metadata.name.clone().unwrap_or_default(),
        }
    }

    pub fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind::gvk(&self.group, &self.version, &self.kind)
    }

    /// Whether both name the same object in the cluster. The version is left out on purpose: a bundle that moves
    /// a kind from `v1beta1` to `v1` still means the same object, and pruning must not delete it.
    pub fn same_object(&self, other: &ObjectRef) -> bool {
        self.group == other.group
            && self.kind == other.kind
            && self.namespace == other.namespace
            && self.name == other.name
    }

    pub(crate) fn is(&self, group: &str, kind: &str) -> bool {
        self.group == group && self.kind == kind
    }
}

/// `Kind/namespace/name`, or `Kind/name` for cluster-scoped objects.
impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{}/{}/{}", self.kind, namespace, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_and_grouped_api_versions_split_into_group_and_version() {
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
        assert_eq!(
            split_api_version("apiextensions.k8s.io/v1"),
            ("apiextensions.k8s.io", "v1")
        );
    }

    #[test]
    fn same_object_ignores_the_version_only() {
        let v1beta1 = ObjectRef {
            group: "example.com".into(),
            version: "v1beta1".into(),
            kind: "Widget".into(),
            namespace: Some("a".into()),
            name: "w".into(),
        };
        let v1 = ObjectRef {
            version: "v1".into(),
            ..v1beta1.clone()
        };
        let elsewhere = ObjectRef {
            namespace: Some("b".into()),
            ..v1.clone()
        };
        assert!(v1beta1.same_object(&v1));
        assert!(!v1.same_object(&elsewhere));
        assert_eq!(v1.to_string(), "Widget/a/w");
    }
}
