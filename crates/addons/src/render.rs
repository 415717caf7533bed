//! `${name}` substitution of a bundle's `values` into its manifest text.
//!
//! Deliberately tiny: no defaults, no expressions, no nesting. Only `${` starts a variable, so the `$` in regular
//! expressions (`^[a-z]$`) and in container arguments (`$(POD_NAMESPACE)`) pass through untouched. `$${` writes a
//! literal `${`, for manifests that carry shell snippets.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Replaces every `${name}` in `text` by `values[name]`.
///
/// Fails naming every unknown variable at once (so one fix covers them all), or naming the line of a `${` that is
/// not closed on its line or does not hold a plain name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn render(text: &str, values: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut unknown: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(open) = after.strip_prefix("${") {
            let line = line_of(text, text.len() - after.len());
            let close = open
                .find(['}', '\n'])
                .filter(|&i| open.as_bytes()[i] == b'}');
            let Some(close) = close else {
                return Err(Error::Template {
                    line,
                    problem: "`${` without a closing `}` on the same line (write `$${` for a literal `${`)"
                        .to_string(),
                });
            };
            let name = &open[..close];
            if !is_variable_name(name) {
                return Err(Error::Template {
                    line,
                    problem: format!(
                        "`${{{name}}}` is not a variable: names are letters, digits and `_` (write `$${{` for a literal `${{`)"
                    ),
                });
            }
            match values.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    if !unknown.iter().any(|u| u == name) {
                        unknown.push(name.to_string());
                    }
                }
            }
            rest = &open[close + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    if unknown.is_empty() {
        Ok(out)
    } else {
        Err(Error::UnknownVariables {
            unknown,
            known: values.keys().cloned().collect(),
        })
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].bytes().filter(|&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("clusterName".to_string(), "prod-eu".to_string()),
            ("podCidr".to_string(), "10.244.0.0/16".to_string()),
        ])
    }

    #[test]
    fn known_variables_are_substituted() {
        let text = "name: ${clusterName}\ncidr: \"${podCidr}\"\nagain: ${clusterName}-x\n";
        assert_eq!(
            render(text, &values()).unwrap(),
            "name: prod-eu\ncidr: \"10.244.0.0/16\"\nagain: prod-eu-x\n"
        );
    }

    #[test]
    fn unknown_variables_are_an_error_naming_each_once() {
        let err = render("a: ${dnsDomain}\nb: ${nope}\nc: ${dnsDomain}\n", &values()).unwrap_err();
        match &err {
            Error::UnknownVariables { unknown, known } => {
                assert_eq!(unknown, &["dnsDomain", "nope"]);
                assert_eq!(known, &["clusterName", "podCidr"]);
            }
            other => panic!("expected UnknownVariables, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("dnsDomain, nope"), "{message}");
        assert_eq!(err.metric_label(), "unknown_variable");
    }

    #[test]
    fn dollar_not_followed_by_brace_is_left_alone() {
        let text = "pattern: ^[a-z]$\narg: --ns=$(POD_NAMESPACE)\ncost: $5 $$ $\nend$";
        assert_eq!(render(text, &BTreeMap::new()).unwrap(), text);
    }

    #[test]
    fn double_dollar_brace_writes_a_literal_variable() {
        assert_eq!(
            render("echo $${HOME} ${clusterName}", &values()).unwrap(),
            "echo ${HOME} prod-eu"
        );
    }

    #[test]
    fn unclosed_or_malformed_variables_name_their_line() {
        let err = render("a: 1\nb: ${clusterName\nc: }\n", &values()).unwrap_err();
        assert!(matches!(err, Error::Template { line: 2, .. }), "{err:?}");
        let err = render("x: ${HOME:-/root}\n", &values()).unwrap_err();
        assert!(matches!(err, Error::Template { line: 1, .. }), "{err:?}");
        assert!(err.to_string().contains("${HOME:-/root}"), "{err}");
    }

    #[test]
    fn values_are_inserted_verbatim_not_rescanned() {
        let values = BTreeMap::from([("a".to_string(), "${b}".to_string())]);
        assert_eq!(render("${a}", &values).unwrap(), "${b}");
    }
}
