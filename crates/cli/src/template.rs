//! Cluster templates: YAML files whose first document declares variables (name, type, default, required,
//! description) and whose other documents are the objects to create, with `${VARIABLE}` where a value goes.
//!
//! Deliberately not a template language: no conditionals, loops or expressions. Substitution happens in the parsed
//! YAML, not the text, so a value can never change the document's structure: a scalar that is exactly
//! `${VARIABLE}` becomes the variable's typed value (an int stays a number), a scalar with `${VARIABLE}` inside
//! other text gets the value spliced in, and a scalar whose variable has no value is dropped with its key. The
//! templates Slipway ships live in `config/templates/` and are compiled into the binary.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The templates compiled into the binary, one per provider, named after it.
pub const BUILT_IN: [(&str, &str); 4] = [
    (
        "local",
        include_str!("../../../config/templates/local.yaml"),
    ),
    ("sim", include_str!("../../../config/templates/sim.yaml")),
    ("aws", include_str!("../../../config/templates/aws.yaml")),
    (
        "baremetal",
        include_str!("../../../config/templates/baremetal.yaml"),
    ),
];

/// A parsed template.
#[derive(Debug)]
pub struct Template {
    pub name: String,
    pub description: String,
    /// First 12 hex digits of the SHA-256 of the file: changes whenever the file does.
    pub revision: String,
    pub variables: Vec<Variable>,
    documents: Vec<Value>,
}

/// What the header says about one variable.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: Kind,
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    String,
    Int,
    Bool,
    Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    variables: Vec<Variable>,
}

/// The objects a template rendered to, and the values it used (defaults included, unset ones left out).
#[derive(Debug)]
pub struct Rendered {
    pub documents: Vec<Value>,
    pub values: BTreeMap<String, String>,
}

impl Template {
    /// One of [`BUILT_IN`] by name.
    pub fn built_in(name: &str) -> anyhow::Result<Template> {
        let (_, text) = BUILT_IN.iter().find(|(n, _)| *n == name).with_context(|| {
            let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
            format!(
                "there is no built-in template {name:?}; choose one of {}",
                names.join(", ")
            )
        })?;
        Template::parse(text).with_context(|| format!("built-in template {name}"))
    }

    pub fn parse(text: &str) -> anyhow::Result<Template> {
        let mut documents: Vec<Value> =
            serde_saphyr::from_multiple(text).context("the template is not valid YAML")?;
        if documents.len() < 2 {
            bail!(
                "a template is a header document (name, description, variables) followed by at least one \
                 object, separated by `---`"
            );
        }
        let header: Header = serde_json::from_value(documents.remove(0))
            .context("the first document must be the header: name, description, variables")?;
        let template = Template {
            name: header.name,
            description: header.description,
            revision: hex::encode(Sha256::digest(text.as_bytes()))[..12].to_string(),
            variables: header.variables,
            documents,
        };
        for variable in &template.variables {
            if let Some(default) = &variable.default {
                check_type(variable, &scalar_text(default))
                    .with_context(|| format!("the default of {}", variable.name))?;
            }
        }
        let mut used = Vec::new();
        for document in &template.documents {
            collect_placeholders(document, &mut used);
        }
        if let Some(undeclared) = used.iter().find(|u| template.variable(u).is_none()) {
            bail!(
                "the template uses ${{{undeclared}}} but its header does not declare it; add it to `variables`"
            );
        }
        Ok(template)
    }

    fn variable(&self, name: &str) -> Option<&Variable> {
        self.variables.iter().find(|v| v.name == name)
    }

    /// Substitutes `values` (each checked against the header) and the declared defaults.
    pub fn render(&self, values: &BTreeMap<String, String>) -> anyhow::Result<Rendered> {
        for (name, value) in values {
            let variable = self.variable(name).with_context(|| {
                format!(
                    "template {} has no variable {name}\n{}",
                    self.name,
                    self.describe_variables()
                )
            })?;
            check_type(variable, value).with_context(|| {
                format!(
                    "{name}={value:?} does not fit template {}\n{}",
                    self.name,
                    self.describe_variables()
                )
            })?;
        }
        let mut resolved = BTreeMap::new();
        let mut missing = Vec::new();
        for variable in &self.variables {
            match (values.get(&variable.name), &variable.default) {
                (Some(value), _) => {
                    resolved.insert(variable.name.clone(), value.clone());
                }
                (None, Some(default)) => {
                    resolved.insert(variable.name.clone(), scalar_text(default));
                }
                (None, None) if variable.required => missing.push(variable.name.as_str()),
                (None, None) => {}
            }
        }
        if !missing.is_empty() {
            bail!(
                "template {} needs {} (set with --set {}=VALUE)\n{}",
                self.name,
                missing.join(", "),
                missing[0],
                self.describe_variables()
            );
        }
        let documents = self
            .documents
            .iter()
            .map(|document| substitute(document, &resolved, &self.variables))
            .map(|value| value.unwrap_or(Value::Null))
            .collect();
        Ok(Rendered {
            documents,
            values: resolved,
        })
    }

    /// The variables, one a line: what an error about them shows, so the user sees what the template takes.
    pub fn describe_variables(&self) -> String {
        let mut out = format!("template {} takes:\n", self.name);
        for v in &self.variables {
            let default = match (&v.default, v.required) {
                (Some(default), _) => format!("default {}", scalar_text(default)),
                (None, true) => "required".to_string(),
                (None, false) => "optional".to_string(),
            };
            let kind = format!("{:?}", v.kind).to_lowercase();
            let _ = writeln!(
                out,
                "  {:<32} {:<8} {:<20} {}",
                v.name, kind, default, v.description
            );
        }
        out.trim_end().to_string()
    }
}

fn check_type(variable: &Variable, value: &str) -> anyhow::Result<()> {
    let ok = match variable.kind {
        Kind::String => !value.is_empty(),
        Kind::Int => value.parse::<i64>().is_ok(),
        Kind::Bool => matches!(value, "true" | "false"),
        Kind::Duration => crate::duration::parse(value).is_ok(),
    };
    if !ok {
        let expected = match variable.kind {
            Kind::String => "a non-empty string",
            Kind::Int => "an integer such as 3",
            Kind::Bool => "true or false",
            Kind::Duration => "a duration such as 30m, 8h or 1h30m",
        };
        bail!("{} must be {expected}", variable.name);
    }
    Ok(())
}

/// A header default as text, whether the file wrote it as `3`, `"3"` or `true`.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every `${NAME}` inside string values, in order.
fn collect_placeholders(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                let Some(len) = rest[start..].find('}') else {
                    break;
                };
                out.push(rest[start + 2..start + len].to_string());
                rest = &rest[start + len + 1..];
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_placeholders(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_placeholders(v, out)),
        _ => {}
    }
}

/// The value with placeholders replaced; `None` when it was a placeholder without a value, so that the caller
/// drops the field (an empty string would be refused where a field is optional, e.g. `spec.ttl`).
fn substitute(
    value: &Value,
    values: &BTreeMap<String, String>,
    variables: &[Variable],
) -> Option<Value> {
    match value {
        Value::String(s) => {
            if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}'))
                && !name.contains("${")
            {
                let text = values.get(name)?;
                let kind = variables
                    .iter()
                    .find(|v| v.name == name)
                    .map(|v| v.kind)
                    .unwrap_or_default();
                return Some(match kind {
                    Kind::Int => Value::from(text.parse::<i64>().ok()?),
                    Kind::Bool => Value::Bool(text == "true"),
                    Kind::String | Kind::Duration => Value::String(text.clone()),
                });
            }
            let mut out = s.clone();
            for name in {
                let mut used = Vec::new();
                collect_placeholders(value, &mut used);
                used
            } {
                out = out.replace(
                    &format!("${{{name}}}"),
                    values.get(&name).map(String::as_str).unwrap_or(""),
                );
            }
            Some(Value::String(out))
        }
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .filter_map(|v| substitute(v, values, variables))
                .collect(),
        )),
        Value::Object(map) => Some(Value::Object(
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), substitute(v, values, variables)?)))
                .collect(),
        )),
        // A field the template itself leaves empty (`ttl:`) is dropped too.
        Value::Null => None,
        other => Some(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_built_in_template_parses_and_renders_with_only_its_required_variables() {
        for (name, _) in BUILT_IN {
            let template = Template::built_in(name).unwrap();
            assert_eq!(template.name, name);
            let mut given = values(&[("CLUSTER_NAME", "demo")]);
            if name == "baremetal" {
                given.insert(
                    "BAREMETAL_IMAGE_URL".into(),
                    "http://10.0.0.1/node.img".into(),
                );
            }
            let rendered = template.render(&given).unwrap();
            assert_eq!(rendered.documents.len(), 2, "{name}");
        }
    }

    #[test]
    fn an_int_variable_renders_as_a_number_and_an_unset_one_drops_its_field() {
        let template = Template::built_in("sim").unwrap();
        let rendered = template
            .render(&values(&[
                ("CLUSTER_NAME", "demo"),
                ("WORKER_MACHINE_COUNT", "5"),
            ]))
            .unwrap();
        let cluster = &rendered.documents[0];
        let pool = &rendered.documents[1];
        assert_eq!(pool["spec"]["replicas"], Value::from(5));
        assert_eq!(pool["metadata"]["name"], "demo-workers");
        assert!(cluster["spec"].get("ttl").is_none());
        assert_eq!(
            cluster["spec"]["infrastructure"]["sim"]["failurePercent"],
            0
        );
    }

    #[test]
    fn an_ill_typed_value_names_the_variable_and_lists_the_others() {
        let template = Template::built_in("sim").unwrap();
        let error = template
            .render(&values(&[
                ("CLUSTER_NAME", "demo"),
                ("WORKER_MACHINE_COUNT", "lots"),
            ]))
            .unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains("WORKER_MACHINE_COUNT must be an integer"),
            "{message}"
        );
        assert!(message.contains("SIM_CREATE_DELAY"), "{message}");
    }

    #[test]
    fn a_template_using_an_undeclared_variable_is_refused() {
        let text = "name: t\nvariables: []\n---\nkind: Cluster\nmetadata:\n  name: ${NAME}\n";
        let error = Template::parse(text).unwrap_err().to_string();
        assert!(error.contains("${NAME}"), "{error}");
    }

    #[test]
    fn the_revision_follows_the_content() {
        let a = Template::parse("name: t\n---\nkind: A\n").unwrap();
        let b = Template::parse("name: t\n---\nkind: B\n").unwrap();
        assert_eq!(a.revision.len(), 12);
        assert_ne!(a.revision, b.revision);
    }
}
