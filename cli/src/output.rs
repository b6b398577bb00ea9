//! Table vs JSON output. Tables are for humans and may change; JSON is the server's own
//! JSON, pretty-printed, so scripts see the API types. Only data goes to stdout.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::Value;
use time::macros::format_description;
use time::OffsetDateTime;

/// The `-o/--output` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text for humans.
    Table,
    /// The server's JSON, pretty-printed.
    Json,
}

/// Writes `text` to stdout with a trailing newline. Returns the io error (instead of
/// panicking like `println!`) so a closed pipe can end the program quietly.
pub fn emit(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()
}

/// Writes a value to stdout as JSON, pretty-printed. An API type prints with the API's
/// field names, so scripts see the server's JSON.
pub fn emit_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    emit(&serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Writes `value` as JSON, or as the text `render` makes of it.
pub fn emit_value<T: Serialize>(format: Format, value: &T, render: fn(&T) -> String) -> anyhow::Result<()> {
    match format {
        Format::Json => emit_json(value),
        Format::Table => Ok(emit(&render(value))?),
    }
}

/// Now, in the API's timestamp style: RFC 3339, UTC, milliseconds.
pub fn now_utc_millis() -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::now_utc().format(&format).unwrap_or_else(|_| "(clock unreadable)".to_string())
}

/// A JSON scalar as a table cell: strings without quotes, `null` or absent as `-`.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// An optional field as a table cell: `-` when absent, as [`cell`] shows `null`.
pub fn or_dash<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |value| value.to_string())
}

/// A float as JSON writes it (`50.0`, not `50`), as the tables showed the server's numbers.
pub fn float(value: f64) -> String {
    Value::from(value).to_string()
}

/// `key  value` lines with the values aligned.
pub fn render_fields(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(key, _)| key.chars().count()).max().unwrap_or(0);
    let lines: Vec<String> =
        fields.iter().map(|(key, value)| format!("{key:<width$}  {value}").trim_end().to_string()).collect();
    lines.join("\n")
}

/// Any JSON object as `key  value` lines: for reports whose shape the CLI does not own
/// (`tally-node backup …`). Anything else is shown as compact JSON.
pub fn render_object(value: &Value) -> String {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let fields: Vec<(&str, String)> = map.iter().map(|(key, value)| (key.as_str(), cell(value))).collect();
            render_fields(&fields)
        }
        Value::Null => "ok".to_string(),
        Value::Object(_) => "ok".to_string(),
        other => other.to_string(),
    }
}

/// A plain text table: columns two spaces apart, widths from the widest cell.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<&'static str>,
    right_aligned: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table { headers: headers.to_vec(), right_aligned: vec![false; headers.len()], rows: Vec::new() }
    }

    /// Numbers read best right-aligned.
    pub fn right_align(mut self, column: usize) -> Self {
        self.right_aligned[column] = true;
        self
    }

    pub fn push(&mut self, row: Vec<String>) {
        assert_eq!(row.len(), self.headers.len(), "a row needs one cell per column");
        self.rows.push(row);
    }

    pub fn render(&self) -> String {
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let widths = self.widths(&header);
        let lines: Vec<String> =
            std::iter::once(&header).chain(self.rows.iter()).map(|row| self.render_row(row, &widths)).collect();
        lines.join("\n")
    }

    fn widths(&self, header: &[String]) -> Vec<usize> {
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        widths
    }

    fn render_row(&self, row: &[String], widths: &[usize]) -> String {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .zip(&self.right_aligned)
            .map(|((cell, &width), &right)| pad(cell, width, right))
            .collect();
        // The last column is padded too; trimming keeps lines free of trailing blanks.
        cells.join("  ").trim_end().to_string()
    }
}

/// Pads by characters, not bytes, so cells with non-ASCII text (bars, titles) line up.
fn pad(cell: &str, width: usize, right: bool) -> String {
    let fill = " ".repeat(width.saturating_sub(cell.chars().count()));
    if right {
        format!("{fill}{cell}")
    } else {
        format!("{cell}{fill}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns_columns_and_trims_lines() {
        let mut table = Table::new(&["NAME", "VOTES"]).right_align(1);
        table.push(vec!["Rust".into(), "12".into()]);
        table.push(vec!["C++".into(), "3".into()]);
        assert_eq!(table.render(), "NAME  VOTES\nRust     12\nC++       3");
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let mut table = Table::new(&["A", "B"]);
        table.push(vec!["██".into(), "x".into()]);
        table.push(vec!["a".into(), "y".into()]);
        assert_eq!(table.render(), "A   B\n██  x\na   y");
    }

    #[test]
    fn cells_show_strings_bare_and_null_as_dash() {
        assert_eq!(cell(&json!("leader")), "leader");
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!(7)), "7");
        assert_eq!(or_dash(Some(7)), "7");
        assert_eq!(or_dash(None::<u64>), "-");
        assert_eq!(float(50.0), "50.0");
        assert_eq!(float(33.3), "33.3");
    }

    #[test]
    fn timestamps_have_milliseconds() {
        let now = now_utc_millis();
        assert_eq!(now.len(), "2026-04-05T12:00:01.234Z".len(), "{now}");
        assert!(now.ends_with('Z'));
    }

    #[test]
    fn objects_render_as_aligned_fields() {
        let text = render_object(&json!({"node_id": 4, "status": "added"}));
        assert_eq!(text, "node_id  4\nstatus   added");
        assert_eq!(render_object(&json!(null)), "ok");
    }
}
