//! How commands print: kubectl-style tables (upper-case headers, columns three spaces apart), `-o json|yaml`,
//! and colour only when stdout is a terminal (and `NO_COLOR` is not set), so pipes and files get plain text.

use std::io::IsTerminal;

use serde::Serialize;

/// Machine-readable output formats, shared by every command with `-o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Yaml,
}

/// Prints `value` as pretty JSON or YAML.
pub fn print_structured(value: &impl Serialize, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(value)?),
    }
    Ok(())
}

/// Whether stdout is a person's terminal: colours and progress lines rewritten in place are for them only.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Colours a table cell by what it says, or leaves it alone when colour is off.
#[derive(Clone, Copy, Debug)]
pub struct Palette {
    pub enabled: bool,
}

impl Palette {
    /// Colour when stdout is a terminal and the user did not opt out with `NO_COLOR`.
    pub fn for_stdout() -> Self {
        Self {
            enabled: stdout_is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    #[cfg(test)]
    pub fn plain() -> Self {
        Self { enabled: false }
    }

    /// Green for good news, red for bad, yellow for in between, by the status words Slipway uses.
    pub fn status(&self, text: &str) -> String {
        let code = match text {
            "True" | "Ready" | "Running" | "Provisioned" => "32",
            "False" | "Failed" | "expired" => "31",
            "Unknown" | "Pending" | "Provisioning" | "Deleting" => "33",
            _ => return text.to_string(),
        };
        self.paint(code, text)
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// A table printed like `kubectl get`: headers in capitals, each column as wide as its widest cell plus three
/// spaces, the last column unpadded. Widths ignore colour escapes so coloured cells still line up.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths = vec![0; columns];
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(visible_width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < columns {
                    let pad = widths[i] - visible_width(cell) + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Width on screen: characters, not counting ANSI colour escapes.
pub fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => width += 1,
        }
    }
    width
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coloured_cells_line_up_with_plain_ones() {
        let colour = Palette { enabled: true };
        let mut table = Table::new(&["NAME", "READY", "AGE"]);
        table.row(vec!["a".into(), colour.status("True"), "5s".into()]);
        table.row(vec!["longer".into(), "False".into(), "10m".into()]);
        let plain: String = table
            .render()
            .replace("\x1b[32m", "")
            .replace("\x1b[0m", "");
        assert_eq!(
            plain,
            "NAME     READY   AGE\na        True    5s\nlonger   False   10m\n"
        );
    }
}
