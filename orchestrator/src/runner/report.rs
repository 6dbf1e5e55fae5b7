//! A `report:` step on one target: its rows evaluated (an expression, or a template whose text is
//! a YAML list), its columns chosen (as written, or the keys of the first row), each row made a
//! map from column to value, its key facts rendered, whether it is a finding decided (`found:`,
//! by default "it has rows"), and the [`Event::Report`] emitted: audited and shown, redacted by
//! the sink like every event. Read-only: it runs in a dry-run as in a real run.
//!
//! Not here: drawing the table (`report.rs`, `table.rs`), the run's exit code for findings
//! (`scheduler.rs`).

use minijinja::value::Value;
use serde_json::{json, Map, Value as J};

use super::{fact_value, with_result, Ctx, NodeResult};
use crate::event::{Event, Fact, Outcome};
use crate::playbook::{ReportSpec, Rows, Step};

/// Run a report on `target` against the template context `ctx`.
pub(super) fn report(
    cx: &Ctx,
    step: &Step,
    target: &str,
    ctx: &Value,
    spec: &ReportSpec,
) -> NodeResult {
    match evaluate(cx, step, ctx, spec) {
        Ok(r) => {
            let registered = json!({
                "changed": false,
                "failed": false,
                "skipped": false,
                "rows": r.raw_rows,
                "facts": r.facts.iter().map(|f| (f.name.clone(), f.value.clone())).collect::<Map<_, _>>(),
                "found": r.found,
            });
            let event = Event::Report {
                run: cx.run.clone(),
                step: step.id.clone(),
                target: target.to_string(),
                title: r.title,
                columns: r.columns,
                rows: r.rows,
                facts: r.facts,
                found: r.found,
                empty: r.empty,
            };
            if let Err(e) = cx.emit(event) {
                return NodeResult::failed(format!("audit log: {e}"), json!({"failed": true}));
            }
            let mut out = NodeResult::simple(Outcome::Ok);
            out.registered = registered;
            out
        }
        // every error here is one of its templates or expressions: the playbook's input
        Err(e) => NodeResult::bad_input(e, json!({"failed": true, "changed": false})),
    }
}

/// A report as evaluated, before it is an event.
struct Evaluated {
    title: String,
    columns: Vec<String>,
    /// Each row as a map from column to value.
    rows: Vec<J>,
    /// The rows as the playbook gave them (the step's result).
    raw_rows: Vec<J>,
    facts: Vec<Fact>,
    found: bool,
    empty: Option<String>,
}

fn evaluate(cx: &Ctx, step: &Step, ctx: &Value, spec: &ReportSpec) -> Result<Evaluated, String> {
    let title = cx.render(&spec.title, ctx)?;
    let raw_rows = match &spec.rows {
        None => Vec::new(),
        Some(rows) => {
            as_rows(rows_value(cx, rows, ctx)?).map_err(|e| format!("{}: {e}", rows_loc(rows)))?
        }
    };
    let columns = match &spec.columns {
        Some(c) => c.clone(),
        None => default_columns(&raw_rows),
    };
    let rows = raw_rows.iter().map(|r| by_column(r, &columns)).collect();
    let mut facts = Vec::new();
    for (name, t) in &spec.facts {
        facts.push(Fact {
            name: name.clone(),
            value: fact_value(cx.render(t, ctx)?),
        });
    }
    let found = match &spec.found {
        None => !raw_rows.is_empty(),
        Some(e) => {
            let own = json!({
                "rows": raw_rows,
                "facts": facts.iter().map(|f| (f.name.clone(), f.value.clone())).collect::<Map<_, _>>(),
            });
            cx.test(e, &with_result(ctx, &step.register, &own))?
        }
    };
    let empty = match (&spec.empty, raw_rows.is_empty()) {
        (Some(t), true) => Some(cx.render(t, ctx)?),
        _ => None,
    };
    Ok(Evaluated {
        title,
        columns,
        rows,
        raw_rows,
        facts,
        found,
        empty,
    })
}

/// The rows' value: the expression evaluated, or the template rendered and read as YAML.
fn rows_value(cx: &Ctx, rows: &Rows, ctx: &Value) -> Result<J, String> {
    match rows {
        Rows::Expr(e) => {
            let v = cx
                .plan
                .program
                .templates
                .eval(e, ctx)
                .map_err(|e| e.to_string())?;
            if v.is_undefined() || v.is_none() {
                return Ok(J::Null);
            }
            serde_json::to_value(&v).map_err(|err| format!("{}: rows: {err}", e.loc))
        }
        Rows::Tpl(t) => {
            let text = cx.render(t, ctx)?;
            let yaml: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| {
                // Written on one line (a folded `>` block joins its lines), the rows can only
                // be on lines of their own if the template writes the newlines itself.
                let hint = if t.source.contains('\n') {
                    ""
                } else {
                    "; the template is one line (a folded block, `>`, joins its lines): write \
                     it as a literal block, `rows: |`, one row per line"
                };
                format!(
                    "{}: rows: the rendered text is not a YAML list: {e}{hint}",
                    t.loc
                )
            })?;
            serde_json::to_value(&yaml).map_err(|e| format!("{}: rows: {e}", t.loc))
        }
    }
}

/// Where the rows are written, for messages.
fn rows_loc(rows: &Rows) -> &crate::source::Loc {
    match rows {
        Rows::Expr(e) => &e.loc,
        Rows::Tpl(t) => &t.loc,
    }
}

/// A list of rows (nothing at all is no rows).
fn as_rows(v: J) -> Result<Vec<J>, String> {
    match v {
        J::Array(rows) => Ok(rows),
        J::Null => Ok(Vec::new()),
        other => Err(format!(
            "report rows must be a list (of maps, or of lists), got {}",
            kind_of(&other)
        )),
    }
}

fn kind_of(v: &J) -> &'static str {
    match v {
        J::Null => "nothing",
        J::Bool(_) => "a boolean",
        J::Number(_) => "a number",
        J::String(_) => "a string",
        J::Array(_) => "a list",
        J::Object(_) => "a map",
    }
}

/// Without `columns:`: the keys of the first row (a map), `1`, `2`, ... (a list), or `value`.
fn default_columns(rows: &[J]) -> Vec<String> {
    match rows.first() {
        None => Vec::new(),
        Some(J::Object(m)) => m.keys().cloned().collect(),
        Some(J::Array(cells)) => (1..=cells.len()).map(|i| i.to_string()).collect(),
        Some(_) => vec!["value".to_string()],
    }
}

/// A row as a map from each column to its value (null where the row has none).
fn by_column(row: &J, columns: &[String]) -> J {
    let cell = |i: usize, c: &str| match row {
        J::Object(m) => m.get(c).cloned().unwrap_or(J::Null),
        J::Array(cells) => cells.get(i).cloned().unwrap_or(J::Null),
        scalar if i == 0 => scalar.clone(),
        _ => J::Null,
    };
    J::Object(
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), cell(i, c)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_default_to_the_first_rows_keys_and_rows_become_maps() {
        let rows = vec![
            json!({"vm": "i-2-940-VM", "nic": "eth1", "extra": 1}),
            json!({"vm": "i-2-941-VM"}),
        ];
        let cols = default_columns(&rows);
        assert_eq!(cols, ["extra", "nic", "vm"]);
        let chosen = vec!["vm".to_string(), "nic".to_string()];
        assert_eq!(
            by_column(&rows[1], &chosen),
            json!({"vm": "i-2-941-VM", "nic": null})
        );
        let lists = vec![json!(["a", 1]), json!(["b"])];
        assert_eq!(default_columns(&lists), ["1", "2"]);
        assert_eq!(
            by_column(&lists[1], &default_columns(&lists)),
            json!({"1": "b", "2": null})
        );
        assert_eq!(default_columns(&[json!("x")]), ["value"]);
        assert_eq!(
            by_column(&json!("x"), &["value".to_string()]),
            json!({"value": "x"})
        );
    }

    #[test]
    fn rows_must_be_a_list() {
        assert_eq!(as_rows(J::Null).unwrap(), Vec::<J>::new());
        assert_eq!(
            as_rows(json!({"a": 1})).unwrap_err(),
            "report rows must be a list (of maps, or of lists), got a map"
        );
    }
}
