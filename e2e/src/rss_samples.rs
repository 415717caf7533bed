//! A process's resident memory sampled at intervals over a long window (the soak's hold), and how to print it: every
//! sample, so a slow leak shows as a trend, and first / last / min / max, so a flat line reads at a glance.

use std::fmt::Write as _;
use std::time::Duration;

/// VmRSS samples, each with its offset from the start of the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RssSamples {
    samples: Vec<(Duration, u64)>,
}

/// The shape of a series of samples, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssSummary {
    pub first: u64,
    pub last: u64,
    pub min: u64,
    pub max: u64,
}

impl RssSummary {
    /// Last minus first: positive when the process grew over the window.
    pub fn change(&self) -> i128 {
        i128::from(self.last) - i128::from(self.first)
    }
}

/// How many samples one line of [`RssSamples::render_lines`] holds.
const SAMPLES_PER_LINE: usize = 12;

impl RssSamples {
    pub fn push(&mut self, offset: Duration, rss_bytes: u64) {
        self.samples.push((offset, rss_bytes));
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn summary(&self) -> Option<RssSummary> {
        let (_, first) = *self.samples.first()?;
        let (_, last) = *self.samples.last()?;
        let values = self.samples.iter().map(|(_, bytes)| *bytes);
        Some(RssSummary {
            first,
            last,
            min: values.clone().min()?,
            max: values.max()?,
        })
    }

    /// Every sample in MiB with one decimal, [`SAMPLES_PER_LINE`] to a line, each line starting with the offset
    /// of its first sample in seconds: `     0 s: 41.2 41.2 41.3 ...`.
    pub fn render_lines(&self) -> String {
        let mut out = String::new();
        for chunk in self.samples.chunks(SAMPLES_PER_LINE) {
            let values: Vec<String> = chunk
                .iter()
                .map(|(_, bytes)| format!("{:.1}", mib(*bytes)))
                .collect();
            let _ = writeln!(out, "{:6} s: {}", chunk[0].0.as_secs(), values.join(" "));
        }
        out
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn series(values_mib_tenths: &[u64]) -> RssSamples {
        let mut samples = RssSamples::default();
        for (i, tenths) in values_mib_tenths.iter().enumerate() {
            samples.push(Duration::from_secs(10 * i as u64), tenths * MIB / 10);
        }
        samples
    }

    #[test]
    fn summarises_first_last_min_max_and_change() {
        let summary = series(&[412, 415, 409, 420, 418]).summary().unwrap();
        assert_eq!(summary.first, 412 * MIB / 10);
        assert_eq!(summary.last, 418 * MIB / 10);
        assert_eq!(summary.min, 409 * MIB / 10);
        assert_eq!(summary.max, 420 * MIB / 10);
        assert!(summary.change() > 0);
        let shrinking = series(&[420, 400]).summary().unwrap();
        assert_eq!(shrinking.change(), -(i128::from(20 * MIB / 10)));
    }

    #[test]
    fn one_sample_is_first_last_min_and_max_and_none_is_nothing() {
        let summary = series(&[300]).summary().unwrap();
        assert_eq!(
            (summary.first, summary.last, summary.min, summary.max),
            (30 * MIB, 30 * MIB, 30 * MIB, 30 * MIB)
        );
        assert_eq!(summary.change(), 0);
        assert_eq!(RssSamples::default().summary(), None);
        assert!(RssSamples::default().is_empty());
    }

    #[test]
    fn prints_every_sample_twelve_to_a_line_with_its_offset() {
        let samples = series(&(400..425).collect::<Vec<_>>());
        assert_eq!(samples.len(), 25);
        let text = samples.render_lines();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            "     0 s: 40.0 40.1 40.2 40.3 40.4 40.5 40.6 40.7 40.8 40.9 41.0 41.1"
        );
        assert!(lines[1].starts_with("   120 s: 41.2 "), "{text}");
        assert_eq!(lines[2], "   240 s: 42.4");
        assert_eq!(RssSamples::default().render_lines(), "");
    }
}
