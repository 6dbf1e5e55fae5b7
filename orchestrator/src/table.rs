//! A table of values as lines of text fitted to a width: a header, a rule, one line per row;
//! each cell on one line, columns as wide as their widest cell, the widest cut with `…` while
//! the table is wider than the room it has. Used for a `report:` step's table on the terminal.
//!
//! Pure text: no colour, no terminal. Where the width comes from (`cli/fit.rs`) and what the
//! rows are (`runner/report.rs`) are left to others.

use serde_json::Value as J;

/// Between two columns.
const GAP: &str = "  ";

/// A column is never cut below this many characters (or its natural width, if less).
const MIN_WIDTH: usize = 6;

/// A cell's text on one line: a string as is (control characters and line breaks made
/// spaces), nothing for null, anything else as compact JSON.
pub fn cell_text(v: &J) -> String {
    let text = match v {
        J::Null => String::new(),
        J::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The widths the columns get within `room` characters (gaps included): their natural widths
/// when they fit; else the widest column is narrowed, one character at a time, down to
/// [`MIN_WIDTH`], until the table fits or no column can give more.
pub fn fit_widths(natural: &[usize], room: usize) -> Vec<usize> {
    let mut widths = natural.to_vec();
    let gaps = GAP.len() * natural.len().saturating_sub(1);
    let floor = |i: usize| natural[i].min(MIN_WIDTH);
    while widths.iter().sum::<usize>() + gaps > room {
        let widest = (0..widths.len())
            .filter(|&i| widths[i] > floor(i))
            .max_by_key(|&i| (widths[i], std::cmp::Reverse(i)));
        match widest {
            Some(i) => widths[i] -= 1,
            None => break,
        }
    }
    widths
}

/// `text` padded or cut (with `…`) to exactly `width` characters.
fn fit_cell(text: &str, width: usize) -> String {
    let len = text.chars().count();
    if len <= width {
        return format!("{text}{}", " ".repeat(width - len));
    }
    if width == 0 {
        return String::new();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

/// The table's lines (without line breaks, trailing spaces trimmed), at most `room` characters
/// wide when the columns can be narrowed that far.
pub fn lines(columns: &[String], rows: &[Vec<String>], room: usize) -> Vec<String> {
    let natural: Vec<usize> = (0..columns.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .chain(std::iter::once(&columns[i]))
                .map(|t| t.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let widths = fit_widths(&natural, room);
    let line = |cells: &mut dyn Iterator<Item = String>| {
        cells.collect::<Vec<_>>().join(GAP).trim_end().to_string()
    };
    let mut out = Vec::with_capacity(rows.len() + 2);
    out.push(line(
        &mut columns.iter().zip(&widths).map(|(c, w)| fit_cell(c, *w)),
    ));
    out.push(line(&mut widths.iter().map(|w| "-".repeat(*w))));
    for r in rows {
        out.push(line(&mut widths.iter().enumerate().map(|(i, w)| {
            fit_cell(r.get(i).map(String::as_str).unwrap_or(""), *w)
        })));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(rows: &[&[&str]]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect()
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let cols = vec!["vm".to_string(), "nic".to_string(), "state".to_string()];
        let rows = strings(&[
            &["i-2-940-VM", "eth1", "Deallocating"],
            &["i-2-77-VM", "", "Removed"],
        ]);
        assert_eq!(
            lines(&cols, &rows, 100),
            [
                "vm          nic   state",
                "----------  ----  ------------",
                "i-2-940-VM  eth1  Deallocating",
                "i-2-77-VM         Removed",
            ]
        );
    }

    #[test]
    fn a_table_too_wide_cuts_its_widest_column_first() {
        assert_eq!(fit_widths(&[4, 30, 10], 100), [4, 30, 10]);
        // 4 + 30 + 10 + 2 gaps of 2 = 48; room 40: the widest gives 8
        assert_eq!(fit_widths(&[4, 30, 10], 40), [4, 22, 10]);
        // room 20: both wide ones shrink, never below 6 (or their natural width)
        assert_eq!(fit_widths(&[4, 30, 10], 20), [4, 6, 6]);
        let cols = vec!["id".to_string(), "message".to_string()];
        let rows = strings(&[&["1", "Unable to stop vm VM[User|i-2-940-VM]"]]);
        assert_eq!(
            lines(&cols, &rows, 20),
            [
                "id  message",
                "--  ----------------",
                "1   Unable to stop …"
            ]
        );
    }

    #[test]
    fn cells_are_one_line_of_text() {
        assert_eq!(cell_text(&json!(null)), "");
        assert_eq!(cell_text(&json!("a\nb\tc")), "a b c");
        assert_eq!(cell_text(&json!(3)), "3");
        assert_eq!(cell_text(&json!(["a", 1])), r#"["a",1]"#);
        assert_eq!(cell_text(&json!({"k": true})), r#"{"k":true}"#);
    }
}
