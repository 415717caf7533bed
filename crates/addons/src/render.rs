//! `${name}` substitution of a bundle's `values` into its manifest text.
//!
//! Deliberately tiny: no defaults, no expressions, no nesting. Only `${` starts a variable, so the `$` in regular
//! expressions (`^[a-z]$`) and in container arguments (`$(POD_NAMESPACE)`) pass through untouched. `$${` writes a
//! literal `${`, for manifests that carry shell snippets.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Rendered manifests may be at most this many times the size of what they are rendered from: the manifest text
/// plus the values. Many `${A}` references to a large `A` would otherwise turn a small bundle into gigabytes.
pub const MAX_RENDER_GROWTH: usize = 4;
/// Rendered manifests are never larger than this, whatever the input: 16 MiB.
pub const MAX_RENDERED_BYTES: usize = 16 * 1024 * 1024;
/// Below this size the growth factor does not apply, so a short manifest may use a value (a CA bundle, say) a few
/// times over. 64 KiB costs nothing to hold.
pub const MIN_RENDER_LIMIT: usize = 64 * 1024;

/// How large the rendering of `input` bytes of text and values may be; see [`MAX_RENDER_GROWTH`].
pub fn render_limit(input: usize) -> usize {
    input
        .saturating_mul(MAX_RENDER_GROWTH)
        .clamp(MIN_RENDER_LIMIT, MAX_RENDERED_BYTES)
}

/// Replaces every `${name}` in `text` by `values[name]`.
///
/// Fails naming every unknown variable at once (so one fix covers them all), or naming the line of a `${` that is
/// not closed on its line or does not hold a plain name (`[A-Za-z_][A-Za-z0-9_]*`), or with [`Error::Limit`] when
/// the result would be larger than [`render_limit`] of the text and values together. The size is counted in a
/// first pass that allocates nothing, so an oversized result is refused before any of it is built.
pub fn render(text: &str, values: &BTreeMap<String, String>) -> Result<String> {
    let input = values.iter().fold(text.len(), |sum, (k, v)| {
        sum.saturating_add(k.len() + v.len())
    });
    let limit = render_limit(input);
    let mut size = 0usize;
    substitute(text, values, |piece| {
        size = size.saturating_add(piece.len())
    })?;
    if size > limit {
        return Err(Error::Limit {
            what: format!(
                "rendered manifest size in bytes ({MAX_RENDER_GROWTH}x the {input} bytes of manifest text and values, at least {} KiB, at most {} MiB)",
                MIN_RENDER_LIMIT / 1024,
                MAX_RENDERED_BYTES / (1024 * 1024)
            ),
            seen: size,
            limit,
        });
    }
    let mut out = String::with_capacity(size);
    substitute(text, values, |piece| out.push_str(piece))?;
    Ok(out)
}

/// Walks `text`, handing `emit` each literal piece and each substituted value in order.
fn substitute(
    text: &str,
    values: &BTreeMap<String, String>,
    mut emit: impl FnMut(&str),
) -> Result<()> {
    let mut unknown: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        emit(&rest[..dollar]);
        let after = &rest[dollar..];
        if let Some(escaped) = after.strip_prefix("$${") {
            emit("${");
            rest = escaped;
        } else if let Some(open) = after.strip_prefix("${") {
            // Counted only for an error: counting lines at every reference would make rendering quadratic.
            let line = || line_of(text, text.len() - after.len());
            let close = open
                .find(['}', '\n'])
                .filter(|&i| open.as_bytes()[i] == b'}');
            let Some(close) = close else {
                return Err(Error::Template {
                    line: line(),
                    problem: "`${` without a closing `}` on the same line (write `$${` for a literal `${`)"
                        .to_string(),
                });
            };
            let name = &open[..close];
            if !is_variable_name(name) {
                return Err(Error::Template {
                    line: line(),
                    problem: format!(
                        "`${{{name}}}` is not a variable: names are letters, digits and `_` (write `$${{` for a literal `${{`)"
                    ),
                });
            }
            match values.get(name) {
                Some(value) => emit(value),
                None => {
                    if !unknown.iter().any(|u| u == name) {
                        unknown.push(name.to_string());
                    }
                }
            }
            rest = &open[close + 1..];
        } else {
            emit("$");
            rest = &after[1..];
        }
    }
    emit(rest);
    if unknown.is_empty() {
        Ok(())
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

    #[test]
    fn a_render_bomb_is_refused_by_size_before_its_output_is_built() {
        // 100 000 references to a 1 MiB value: 100 GiB if rendered. Refused at once, naming the limit and the size.
        let values = BTreeMap::from([("A".to_string(), "x".repeat(1024 * 1024))]);
        let text = "${A}".repeat(100_000);
        let started = std::time::Instant::now();
        let err = render(&text, &values).unwrap_err();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        match &err {
            Error::Limit { seen, limit, .. } => {
                assert_eq!(*seen, 100_000 * 1024 * 1024);
                // Four times the 400 000 bytes of text and the 1 MiB value (and its one-letter name).
                assert_eq!(*limit, 4 * (400_000 + 1 + 1024 * 1024));
            }
            other => panic!("expected Limit, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("104857600000"), "{message}");
        assert!(
            message.contains("more than the limit of 5794308"),
            "{message}"
        );
        assert_eq!(err.metric_label(), "limit");
    }

    #[test]
    fn output_may_grow_to_four_times_the_text_and_values_but_no_more() {
        // Just over 100 KiB of value and text: the limit is just over 400 KiB, above the 64 KiB floor.
        let value = "v".repeat(100 * 1024);
        let values = BTreeMap::from([("A".to_string(), value)]);
        let input = |refs: usize| "${A}".len() * refs + 1 + 100 * 1024;
        // Seven references are 700 KiB: more than 4 times.
        let err = render(&"${A}".repeat(7), &values).unwrap_err();
        assert!(
            matches!(err, Error::Limit { seen, limit, .. } if seen == 7 * 100 * 1024 && limit == 4 * input(7)),
            "{err:?}"
        );
        // Three references are 300 KiB: within 4 times.
        assert_eq!(
            render(&"${A}".repeat(3), &values).unwrap().len(),
            300 * 1024
        );
    }

    #[test]
    fn the_limit_has_a_floor_for_small_manifests_and_a_ceiling_for_large_ones() {
        assert_eq!(render_limit(10), MIN_RENDER_LIMIT);
        assert_eq!(render_limit(1024 * 1024), 4 * 1024 * 1024);
        assert_eq!(render_limit(10 * 1024 * 1024), MAX_RENDERED_BYTES);
        assert_eq!(render_limit(usize::MAX), MAX_RENDERED_BYTES);
        // A 1 KiB value used 20 times in a tiny manifest fits under the floor.
        let values = BTreeMap::from([("CA".to_string(), "c".repeat(1024))]);
        assert_eq!(
            render(&"${CA}\n".repeat(20), &values).unwrap().len(),
            20 * 1025
        );
    }
}
