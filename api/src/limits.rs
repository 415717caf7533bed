//! How large a tenant's objects may be: the bounds the CRD schemas put on maps, selectors and counts, so that no
//! single object can make the manager (or the apiserver's CEL rules) do unbounded work.
//!
//! Strings with their own meaning carry their `maxLength` next to the field (`#[schemars(length(max = …))]`); what
//! schemars cannot say with an attribute (a map's size, the length of its keys and values, a label selector's
//! parts) is built here as a schema and named in the field's `schema_with`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

/// `spec.replicas` of a MachinePool: at most this many machines.
pub const MAX_POOL_REPLICAS: i32 = 1000;
/// `spec.strategy.maxSurge` of a MachinePool: at most this many machines above `replicas` during a rollout.
pub const MAX_SURGE: i32 = 100;
/// `status.machines` of a MachinePool lists at most this many machines; `status.unlistedMachines` counts the rest.
pub const MAX_LISTED_MACHINES: usize = 100;
/// `spec.source.inline` of an AddonBundle, in characters (1 MiB): the apiserver stores objects up to about 1.5 MiB.
pub const MAX_INLINE_MANIFESTS: usize = 1024 * 1024;
/// Entries of a map of labels, tags, variables or values.
pub const MAX_MAP_ENTRIES: usize = 64;
/// A label key: a DNS-subdomain prefix (253), '/', a name (63).
pub const MAX_LABEL_KEY: usize = 317;
/// A label value.
pub const MAX_LABEL_VALUE: usize = 63;
/// Labels of a machine: on AWS they become tags, of which an instance takes 50, five of them Slipway's own.
pub const MAX_MACHINE_LABELS: usize = 40;
/// A machine label's key and value; on AWS they become tags, whose keys take 128 characters and values 256.
pub const MAX_TAG_KEY: usize = 128;
pub const MAX_TAG_VALUE: usize = 256;
/// A template variable's or add-on value's name.
pub const MAX_VARIABLE_NAME: usize = 128;
/// A template variable's value.
pub const MAX_VARIABLE_VALUE: usize = 1024;
/// An add-on value: substituted into manifests wherever `${NAME}` appears, so a long one multiplies the output.
pub const MAX_ADDON_VALUE: usize = 4096;
/// Requirements of a label selector's `matchExpressions`, and values of one requirement.
pub const MAX_SELECTOR_EXPRESSIONS: usize = 32;
pub const MAX_SELECTOR_VALUES: usize = 64;

/// A map of strings with at most `max_entries` entries, keys of at most `max_key` characters and values of
/// at most `max_value`. `field` is the field's path, for the message of the rule on its keys (the schema cannot
/// bound keys itself: structural schemas have no `propertyNames`).
fn string_map(field: &str, max_entries: usize, max_key: usize, max_value: usize) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": max_entries,
        "additionalProperties": { "type": "string", "maxLength": max_value },
        "x-kubernetes-validations": [{
            "rule": format!("self.all(k, k.size() <= {max_key})"),
            "message": format!("{field}: keys may be at most {max_key} characters; use shorter names"),
        }],
    })
}

/// `labels` of a machine (tags on AWS).
pub(crate) fn machine_labels(_: &mut SchemaGenerator) -> Schema {
    string_map("labels", MAX_MACHINE_LABELS, MAX_TAG_KEY, MAX_TAG_VALUE)
}

/// `nodeLabels` of a MachinePool's template.
pub(crate) fn node_labels(_: &mut SchemaGenerator) -> Schema {
    string_map(
        "spec.template.nodeLabels",
        MAX_MAP_ENTRIES,
        MAX_LABEL_KEY,
        MAX_LABEL_VALUE,
    )
}

/// `variables` of a Cluster's template reference.
pub(crate) fn template_variables(_: &mut SchemaGenerator) -> Schema {
    string_map(
        "spec.template.variables",
        MAX_MAP_ENTRIES,
        MAX_VARIABLE_NAME,
        MAX_VARIABLE_VALUE,
    )
}

/// `values` of an AddonBundle.
pub(crate) fn addon_values(_: &mut SchemaGenerator) -> Schema {
    string_map(
        "spec.values",
        MAX_MAP_ENTRIES,
        MAX_VARIABLE_NAME,
        MAX_ADDON_VALUE,
    )
}

/// A `metav1.LabelSelector` whose every part is bounded: at most [`MAX_MAP_ENTRIES`] `matchLabels` and
/// [`MAX_SELECTOR_EXPRESSIONS`] `matchExpressions` of at most [`MAX_SELECTOR_VALUES`] values, keys and values as
/// long as labels allow.
pub(crate) fn label_selector(generator: &mut SchemaGenerator) -> Schema {
    // Its own schema, not a subschema (which could be a `$ref`); kube's generator inlines the nested requirement.
    let mut schema = <LabelSelector as schemars::JsonSchema>::json_schema(generator);
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return schema;
    };
    if let Some(labels) = properties
        .get_mut("matchLabels")
        .and_then(Value::as_object_mut)
    {
        labels.insert("maxProperties".into(), json!(MAX_MAP_ENTRIES));
        labels.insert(
            "additionalProperties".into(),
            json!({ "type": "string", "maxLength": MAX_LABEL_VALUE }),
        );
        labels.insert(
            "x-kubernetes-validations".into(),
            json!([{
                "rule": format!("self.all(k, k.size() <= {MAX_LABEL_KEY})"),
                "message": format!("matchLabels: keys may be at most {MAX_LABEL_KEY} characters (a label key)"),
            }]),
        );
    }
    if let Some(expressions) = properties
        .get_mut("matchExpressions")
        .and_then(Value::as_object_mut)
    {
        expressions.insert("maxItems".into(), json!(MAX_SELECTOR_EXPRESSIONS));
        if let Some(requirement) = expressions
            .get_mut("items")
            .and_then(|i| i.get_mut("properties"))
            .and_then(Value::as_object_mut)
        {
            if let Some(key) = requirement.get_mut("key").and_then(Value::as_object_mut) {
                key.insert("maxLength".into(), json!(MAX_LABEL_KEY));
            }
            if let Some(operator) = requirement
                .get_mut("operator")
                .and_then(Value::as_object_mut)
            {
                // In, NotIn, Exists, DoesNotExist.
                operator.insert("maxLength".into(), json!(12));
            }
            if let Some(values) = requirement.get_mut("values").and_then(Value::as_object_mut) {
                values.insert("maxItems".into(), json!(MAX_SELECTOR_VALUES));
                if let Some(item) = values.get_mut("items").and_then(Value::as_object_mut) {
                    item.insert("maxLength".into(), json!(MAX_LABEL_VALUE));
                }
            }
        }
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_selector_schema_bounds_every_part() {
        // As kube-derive generates CRD schemas: subschemas inlined.
        let mut generator = schemars::generate::SchemaSettings::openapi3()
            .with(|s| s.inline_subschemas = true)
            .into_generator();
        let schema = label_selector(&mut generator);
        let value = serde_json::to_value(&schema).unwrap();
        let properties = &value["properties"];
        assert_eq!(properties["matchLabels"]["maxProperties"], MAX_MAP_ENTRIES);
        assert_eq!(
            properties["matchLabels"]["additionalProperties"]["maxLength"],
            MAX_LABEL_VALUE
        );
        let expressions = &properties["matchExpressions"];
        assert_eq!(expressions["maxItems"], MAX_SELECTOR_EXPRESSIONS);
        let requirement = &expressions["items"]["properties"];
        assert_eq!(requirement["key"]["maxLength"], MAX_LABEL_KEY);
        assert_eq!(requirement["values"]["maxItems"], MAX_SELECTOR_VALUES);
        assert_eq!(requirement["values"]["items"]["maxLength"], MAX_LABEL_VALUE);
    }
}
