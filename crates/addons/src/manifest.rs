//! Multi-document YAML → Kubernetes objects.

use kube::api::DynamicObject;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::error::{Error, Result};

/// Parses a multi-document YAML stream into objects, in document order.
///
/// Empty documents (only comments, or nothing between two `---`) are skipped. A `List` (any kind ending in `List`
/// with an `items` array, as `kubectl get -o yaml` writes) is expanded into its items. Every object needs
/// `apiVersion`, `kind` and `metadata.name`: server-side apply cannot use `generateName`.
///
/// Errors name the document (1-based, counting `---` separators as a reader would, empty documents included) and
/// the line where it starts.
pub fn parse(text: &str) -> Result<Vec<DynamicObject>> {
    let options = serde_saphyr::options! { with_snippet: false };
    let documents: Vec<Spanned<Value>> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| {
            let line = e.location().map(|l| l.line() as usize).filter(|&l| l > 0);
            Error::Yaml {
                document: line.map(|l| document_number(text, l)),
                line,
                message: e.to_string(),
            }
        })?;

    let mut objects = Vec::with_capacity(documents.len());
    for document in documents {
        let line = Some(document.referenced.line() as usize).filter(|&l| l > 0);
        let number = line.map_or(objects.len() + 1, |l| document_number(text, l));
        let problem = |problem: String| Error::Manifest {
            document: number,
            line,
            problem,
        };
        match document.value {
            Value::Object(ref map) if is_list(map) => {
                let Some(Value::Array(items)) = map.get("items") else {
                    unreachable!("is_list checked items")
                };
                for (i, item) in items.iter().enumerate() {
                    let object =
                        to_object(item.clone()).map_err(|p| problem(format!("items[{i}]: {p}")))?;
                    objects.push(object);
                }
            }
            Value::Object(_) => objects.push(to_object(document.value).map_err(problem)?),
            other => {
                return Err(problem(format!(
                    "expected a mapping (a Kubernetes object), found {}",
                    json_type(&other)
                )));
            }
        }
    }
    Ok(objects)
}

fn is_list(map: &serde_json::Map<String, Value>) -> bool {
    map.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.ends_with("List"))
        && map.get("items").is_some_and(Value::is_array)
}

fn to_object(value: Value) -> std::result::Result<DynamicObject, String> {
    let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
    if field("apiVersion").is_empty() {
        return Err("apiVersion is missing".to_string());
    }
    if field("kind").is_empty() {
        return Err("kind is missing".to_string());
    }
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() {
        return Err(format!(
            "{} has no metadata.name (server-side apply cannot use generateName)",
            field("kind")
        ));
    }
    serde_json::from_value(value).map_err(|e| format!("not a Kubernetes object: {e}"))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

/// The 1-based number of the document holding `line` (1-based): every `---` after some content, or after an
/// earlier `---`, starts a new document; a leading `---` does not.
fn document_number(text: &str, line: usize) -> usize {
    let mut number = 1;
    let mut started = false;
    for text_line in text.lines().take(line.saturating_sub(1)) {
        if is_document_start(text_line) {
            if started {
                number += 1;
            }
            started = true;
        } else if is_content(text_line) {
            started = true;
        }
    }
    number
}

fn is_document_start(line: &str) -> bool {
    line == "---" || line.starts_with("--- ") || line.starts_with("---\t") || line == "---\r"
}

fn is_content(line: &str) -> bool {
    let trimmed = line.trim();
    !(trimmed.is_empty()
        || trimmed.starts_with('#')
        || trimmed.starts_with('%')
        || trimmed == "...")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_become_objects_in_order_skipping_empty_ones() {
        let text = "\
# leading comment
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: a
data:
  port: \"53\"
---
# only a comment
---
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: b
  namespace: x
spec:
  replicas: 2
";
        let objects = parse(text).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].metadata.name.as_deref(), Some("a"));
        assert_eq!(objects[0].data["data"]["port"], "53");
        assert_eq!(objects[1].types.as_ref().unwrap().kind, "Deployment");
        assert_eq!(objects[1].metadata.namespace.as_deref(), Some("x"));
        assert_eq!(objects[1].data["spec"]["replicas"], 2);
    }

    #[test]
    fn lists_are_expanded_into_their_items() {
        let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ServiceAccount
  metadata: {name: one}
- apiVersion: v1
  kind: ServiceAccount
  metadata: {name: two}
";
        let names: Vec<_> = parse(text)
            .unwrap()
            .into_iter()
            .map(|o| o.metadata.name.unwrap())
            .collect();
        assert_eq!(names, ["one", "two"]);
    }

    #[test]
    fn a_document_without_a_name_is_an_error_naming_the_document_and_line() {
        let text = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: fine}
---

---
apiVersion: v1
kind: Secret
metadata:
  generateName: nope-
";
        let err = parse(text).unwrap_err();
        match &err {
            Error::Manifest {
                document,
                line,
                problem,
            } => {
                assert_eq!(*document, 3);
                assert_eq!(*line, Some(7));
                assert!(problem.contains("Secret has no metadata.name"), "{problem}");
            }
            other => panic!("expected Manifest, got {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("manifest: document 3 (line 7): "),
            "{err}"
        );
    }

    #[test]
    fn a_document_that_is_not_a_mapping_is_an_error() {
        let err = parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n- 1\n- 2\n")
            .unwrap_err();
        assert!(
            matches!(&err, Error::Manifest { document: 2, problem, .. } if problem.contains("a sequence")),
            "{err:?}"
        );
        let err = parse("kind: ConfigMap\nmetadata: {name: a}\n").unwrap_err();
        assert!(err.to_string().contains("apiVersion is missing"), "{err}");
    }

    #[test]
    fn a_yaml_syntax_error_names_the_document_and_line() {
        let text = "a: 1\n---\nb: [1, 2\n---\nc: 3\n";
        let err = parse(text).unwrap_err();
        match &err {
            Error::Yaml { document, line, .. } => {
                assert!(line.is_some(), "{err}");
                assert!(matches!(document, Some(2) | Some(3)), "{err}");
            }
            other => panic!("expected Yaml, got {other:?}"),
        }
    }

    #[test]
    fn document_numbers_count_separators_like_a_reader() {
        let text = "---\na: 1\n---\n---\nb: 2\n";
        assert_eq!(document_number(text, 2), 1);
        assert_eq!(document_number(text, 5), 3);
        assert_eq!(document_number("a: 1\n---\nb: 2\n", 3), 2);
    }
}
