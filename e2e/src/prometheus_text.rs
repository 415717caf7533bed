//! Samples out of the Prometheus text exposition format (and OpenMetrics text, which the manager serves): one
//! `name{label="value",...} value [timestamp]` per line. Comments (`# HELP`, `# TYPE`, `# EOF`) carry nothing a
//! benchmark counts, so they are skipped, and an OpenMetrics exemplar (`value # {labels} value`) is dropped.
//!
//! Small on purpose: the crates that parse this format are unmaintained, and counting requests needs only samples.

use std::collections::BTreeMap;

/// One line of a scrape: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The value of `label`, or "" when the sample does not have it (as PromQL treats a missing label).
    pub fn label(&self, label: &str) -> &str {
        self.labels.get(label).map_or("", String::as_str)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line_number} of the metrics text: {reason}: {line:?}")]
pub struct ParseError {
    pub line_number: usize,
    pub line: String,
    pub reason: &'static str,
}

/// Every sample of a scrape, in the order they appear.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line).map_err(|reason| ParseError {
            line_number: index + 1,
            line: raw.to_string(),
            reason,
        })?;
        samples.push(sample);
    }
    Ok(samples)
}

fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("expected a metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = parse_labels(after_brace, &mut labels)?;
    }
    // OpenMetrics may follow the value with an exemplar: ` # {trace_id="..."} 1.0`.
    let rest = rest.split(" # ").next().unwrap_or_default();
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("expected a value after the name")?;
    let value = parse_value(value).ok_or("the value is not a number")?;
    // An optional timestamp may follow; a benchmark does not use it.
    if fields.nth(1).is_some() {
        return Err("unexpected text after the value and timestamp");
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `name="value",...}` into `labels`; returns what follows the closing brace.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, &'static str> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let (name, after_name) = rest.split_once('=').ok_or("expected label=\"value\"")?;
        let name = name.trim();
        if name.is_empty() {
            return Err("empty label name");
        }
        let after_quote = after_name
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let (value, after_value) = unescape_until_quote(after_quote)?;
        labels.insert(name.to_string(), value);
        rest = after_value.trim_start();
        if let Some(after_comma) = rest.strip_prefix(',') {
            rest = after_comma;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}' after a label");
        }
    }
}

/// Reads a label value up to its closing quote, undoing the format's three escapes (`\\`, `\"`, `\n`).
fn unescape_until_quote(text: &str) -> Result<(String, &str), &'static str> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[index + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, escaped)) => value.push(escaped),
                None => return Err("unterminated escape in a label value"),
            },
            other => value.push(other),
        }
    }
    Err("unterminated label value")
}

/// Go writes `+Inf`, `-Inf` and `NaN`; Rust's parser reads those spellings too, in any case.
fn parse_value(text: &str) -> Option<f64> {
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_and_values_and_skips_comments() {
        let text = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",group="slipway.dev",resource="clusters",scope="resource",subresource="",verb="POST",version="v1alpha1"} 1000
process_start_time_seconds 1.76e+09

up 1 1700000000000
"#;
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "apiserver_request_total");
        assert_eq!(samples[0].label("verb"), "POST");
        assert_eq!(samples[0].label("subresource"), "");
        assert_eq!(samples[0].label("absent"), "");
        assert_eq!(samples[0].value, 1000.0);
        assert_eq!(samples[1].value, 1.76e9);
        assert!(samples[1].labels.is_empty());
        assert_eq!(samples[2].value, 1.0);
    }

    #[test]
    fn undoes_escapes_in_label_values_including_braces_and_commas() {
        let samples = parse(r#"m{path="a\\b",msg="say \"hi\", {ok}\nbye",} 2"#).unwrap();
        assert_eq!(samples[0].label("path"), r"a\b");
        assert_eq!(samples[0].label("msg"), "say \"hi\", {ok}\nbye");
    }

    #[test]
    fn reads_infinities_and_nan_as_go_writes_them() {
        let samples = parse("h_bucket{le=\"+Inf\"} +Inf\nneg -Inf\nodd NaN\n# EOF\n").unwrap();
        assert_eq!(samples[0].label("le"), "+Inf");
        assert_eq!(samples[0].value, f64::INFINITY);
        assert_eq!(samples[1].value, f64::NEG_INFINITY);
        assert!(samples[2].value.is_nan());
    }

    #[test]
    fn drops_openmetrics_exemplars() {
        let samples =
            parse(r#"requests_total{a="1"} 5 # {trace_id="abc"} 1.0 1700000000"#).unwrap();
        assert_eq!(samples[0].value, 5.0);
    }

    #[test]
    fn names_the_line_it_cannot_read() {
        let error = parse("ok 1\nbroken{verb=\"GET\" 3\n").unwrap_err();
        assert_eq!(error.line_number, 2);
        assert_eq!(error.reason, "expected ',' or '}' after a label");
        assert_eq!(
            parse("m{a=\"x\"} many").unwrap_err().reason,
            "the value is not a number"
        );
        assert_eq!(
            parse("m{a=x} 1").unwrap_err().reason,
            "label value must be quoted"
        );
        assert_eq!(
            parse("m{a=\"x} 1").unwrap_err().reason,
            "unterminated label value"
        );
        assert_eq!(
            parse("{a=\"x\"} 1").unwrap_err().reason,
            "expected a metric name"
        );
    }
}
