//! Multi-document YAML → Kubernetes objects, within bounds a bundle cannot talk its way past.

use kube::api::DynamicObject;
use serde_json::Value;
use serde_saphyr::Spanned;
use serde_saphyr::budget::BudgetBreach;

use crate::error::{Error, Result};
use crate::render::MAX_RENDERED_BYTES;

/// Objects one bundle may hold (List items count one each). The largest upstream add-on we ship, cert-manager,
/// has 49.
pub const MAX_OBJECTS: usize = 1000;
/// YAML documents in one bundle. Higher than [`MAX_OBJECTS`] because empty documents (only comments, or nothing
/// between two `---`) count here but make no object.
pub const MAX_DOCUMENTS: usize = 2 * MAX_OBJECTS;
/// Nesting of mappings and sequences. The deepest upstream manifest we ship (cert-manager's CRD schemas) is 38.
/// Building the document recurses once per level: at about 100 levels that overflows a 2 MiB thread stack (tokio's
/// default) in a debug build and aborts the whole manager, so the bound stays well below that.
pub const MAX_YAML_DEPTH: usize = 64;
/// Values, mappings and sequences in the whole stream: cert-manager's 1 MB has 17 000, so 16 MiB of real
/// manifests stays well below; a stream of tiny values would otherwise cost far more memory than its bytes.
pub const MAX_YAML_NODES: usize = 500_000;
/// Aliases (`*name`) and anchors (`&name`). Kubernetes manifests rarely use either.
pub const MAX_YAML_ALIASES: usize = 1000;
/// Nodes produced by expanding aliases, over the whole stream: what stops a "billion laughs" document, whose
/// nested aliases expand a few hundred bytes into billions of nodes.
pub const MAX_ALIAS_EXPANSION: usize = 100_000;

/// Parses a multi-document YAML stream into objects, in document order.
///
/// Empty documents (only comments, or nothing between two `---`) are skipped. A `List` (any kind ending in `List`
/// with an `items` array, as `kubectl get -o yaml` writes) is expanded into its items. Every object needs
/// `apiVersion`, `kind` and `metadata.name`: server-side apply cannot use `generateName`.
///
/// Errors name the document (1-based, counting `---` separators as a reader would, empty documents included) and
/// the line where it starts. A stream past one of the bounds above ([`MAX_OBJECTS`], [`MAX_YAML_DEPTH`], …) is
/// refused with [`Error::Limit`] naming the bound and what was seen; serde-saphyr's budget stops the parser as soon
/// as one is crossed, before the document is built.
pub fn parse(text: &str) -> Result<Vec<DynamicObject>> {
    let options = serde_saphyr::options! {
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_depth: MAX_YAML_DEPTH,
            max_documents: MAX_DOCUMENTS,
            max_nodes: MAX_YAML_NODES,
            // Each node is one or two parser events (a mapping's start and end); this never binds before nodes do.
            max_events: 4 * MAX_YAML_NODES,
            max_aliases: MAX_YAML_ALIASES,
            max_anchors: MAX_YAML_ALIASES,
            max_total_scalar_bytes: MAX_RENDERED_BYTES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_EXPANSION,
        },
    };
    let documents: Vec<Spanned<Value>> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| {
            limit_of(&e).unwrap_or_else(|| {
                let line = e.location().map(|l| l.line() as usize).filter(|&l| l > 0);
                Error::Yaml {
                    document: line.map(|l| document_number(text, l)),
                    line,
                    message: e.to_string(),
                }
            })
        })?;

    let count: usize = documents
        .iter()
        .map(|document| match &document.value {
            Value::Object(map) if is_list(map) => map["items"].as_array().map_or(0, Vec::len),
            _ => 1,
        })
        .sum();
    if count > MAX_OBJECTS {
        return Err(Error::Limit {
            what: "objects in one bundle".to_string(),
            seen: count,
            limit: MAX_OBJECTS,
        });
    }

    let mut objects = Vec::with_capacity(count);
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

/// The bound a parse error reports crossing, if it is one.
fn limit_of(error: &serde_saphyr::Error) -> Option<Error> {
    let limit = |what: &str, seen: usize, limit: usize| Error::Limit {
        what: what.to_string(),
        seen,
        limit,
    };
    let mut error = error;
    // serde-saphyr wraps errors met inside aliases or with a snippet; the breach is the innermost one.
    while let serde_saphyr::Error::AliasError { error: inner, .. }
    | serde_saphyr::Error::WithSnippet { error: inner, .. } = error
    {
        error = inner;
    }
    Some(match error {
        serde_saphyr::Error::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { depth } => limit("YAML nesting depth", *depth, MAX_YAML_DEPTH),
            BudgetBreach::Documents { documents } => {
                limit("YAML documents", *documents, MAX_DOCUMENTS)
            }
            BudgetBreach::Nodes { nodes } => limit(
                "YAML nodes (values, mappings and sequences)",
                *nodes,
                MAX_YAML_NODES,
            ),
            BudgetBreach::Events { events } => {
                limit("YAML parser events", *events, 4 * MAX_YAML_NODES)
            }
            BudgetBreach::Aliases { aliases } => {
                limit("YAML aliases (*name)", *aliases, MAX_YAML_ALIASES)
            }
            BudgetBreach::Anchors { anchors } => {
                limit("YAML anchors (&name)", *anchors, MAX_YAML_ALIASES)
            }
            BudgetBreach::AliasAnchorRatio { aliases, anchors } => limit(
                &format!("YAML aliases for {anchors} anchor(s) (at most 10 per anchor)"),
                *aliases,
                anchors.saturating_mul(10),
            ),
            BudgetBreach::ScalarBytes { total_scalar_bytes } => limit(
                "bytes of YAML scalar text",
                *total_scalar_bytes,
                MAX_RENDERED_BYTES,
            ),
            _ => return None,
        },
        serde_saphyr::Error::AliasReplayLimitExceeded {
            total_replayed_events,
            max_total_replayed_events,
            ..
        } => limit(
            "YAML events expanded from aliases",
            *total_replayed_events,
            *max_total_replayed_events,
        ),
        serde_saphyr::Error::AliasReplayStackDepthExceeded {
            depth, max_depth, ..
        } => limit("YAML aliases nested in aliases", *depth, *max_depth),
        _ => return None,
    })
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

    fn limit(err: &Error) -> (&str, usize, usize) {
        match err {
            Error::Limit { what, seen, limit } => (what.as_str(), *seen, *limit),
            other => panic!("expected Limit, got {other:?}"),
        }
    }

    #[test]
    fn a_billion_laughs_document_is_refused_quickly() {
        // Nine levels of nine aliases each: 9^9 = 387 420 489 strings from under 1 KiB of YAML.
        let mut text =
            String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: laughs}\ndata:\n");
        text.push_str("  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for level in 1..9 {
            let previous = format!("*a{}", level - 1);
            let items = [previous.as_str(); 9].join(", ");
            text.push_str(&format!("  a{level}: &a{level} [{items}]\n"));
        }
        assert!(text.len() < 1024, "{}", text.len());
        let started = std::time::Instant::now();
        let err = parse(&text).unwrap_err();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        let (what, seen, max) = limit(&err);
        assert!(what.contains("alias"), "{err}");
        assert!(seen > max, "{err}");
        assert_eq!(max, MAX_ALIAS_EXPANSION);
        assert!(err.to_string().starts_with("limit exceeded: "), "{err}");
    }

    #[test]
    fn aliases_within_the_bounds_still_work() {
        let text =
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: &l {app: x}}\ndata: *l\n";
        let objects = parse(text).unwrap();
        assert_eq!(objects[0].data["data"]["app"], "x");
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused_naming_the_depth() {
        let depth = MAX_YAML_DEPTH + 20;
        let text = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\ndata: {}1{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let err = parse(&text).unwrap_err();
        let (what, seen, max) = limit(&err);
        assert_eq!(what, "YAML nesting depth", "{err}");
        assert_eq!(max, MAX_YAML_DEPTH);
        assert!(seen > MAX_YAML_DEPTH, "{err}");
        // Block style too, not only flow style.
        let mut block =
            String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\ndata:\n");
        for level in 0..depth {
            block.push_str(&format!("{}k{level}:\n", "  ".repeat(level + 1)));
        }
        assert_eq!(limit(&parse(&block).unwrap_err()).0, "YAML nesting depth");
    }

    #[test]
    fn more_objects_than_the_limit_are_refused_with_their_count() {
        let one = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n";
        let documents = vec![one; MAX_OBJECTS].join("---\n");
        assert_eq!(parse(&documents).unwrap().len(), MAX_OBJECTS);
        // Over the limit through a List's items, not only through documents.
        let items: String = (0..MAX_OBJECTS)
            .map(|i| format!("- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: i{i}}}}}\n"))
            .collect();
        let text = format!("{documents}---\napiVersion: v1\nkind: List\nitems:\n{items}");
        let err = parse(&text).unwrap_err();
        assert_eq!(
            limit(&err),
            ("objects in one bundle", 2 * MAX_OBJECTS, MAX_OBJECTS)
        );
        assert!(
            err.to_string()
                .contains("2000, more than the limit of 1000"),
            "{err}"
        );
    }

    #[test]
    fn a_storm_of_document_separators_is_refused() {
        let text = "---\n".repeat(MAX_DOCUMENTS + 10);
        let err = parse(&text).unwrap_err();
        let (what, _, max) = limit(&err);
        assert_eq!((what, max), ("YAML documents", MAX_DOCUMENTS));
    }
}
