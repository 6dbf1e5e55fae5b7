//! A `report:` step's keys compiled: its title, where its rows come from (an expression, or a
//! template whose text is a YAML list), its columns, key facts, `found` and `empty`; and the step
//! keys that have no meaning on a report (`retries`, `until`, `changed_when`, `failed_when`).
//!
//! Not here: the step's common keys and undo (`step.rs`), running it (`runner/report.rs`).

use std::collections::BTreeSet;

use super::program::{Kind, ReportSpec, Rows};
use super::{yaml_text, Compiler};
use crate::error::Diagnostic;
use crate::playbook::model::{ReportDoc, StepDoc};
use crate::source::Source;
use crate::template::Mode;

/// Whether `text` is written as one expression (bare, or one `{{ ... }}` around all of it)
/// rather than a template with text or blocks around its values.
fn is_expression(text: &str) -> bool {
    let t = text.trim();
    if t.contains("{%") || t.contains("{#") {
        return false;
    }
    if !t.contains("{{") {
        return true;
    }
    t.strip_prefix("{{")
        .and_then(|r| r.strip_suffix("}}"))
        .is_some_and(|inner| !inner.contains("{{") && !inner.contains("}}"))
}

impl Compiler<'_> {
    /// The kind of a `report:` step at `path` (the step's YAML path), or `None` after a
    /// diagnostic.
    pub(super) fn report_kind(
        &mut self,
        src: &Source,
        path: &str,
        local: &str,
        step: &StepDoc,
        doc: &ReportDoc,
    ) -> Option<Kind> {
        let p = |k: &str| format!("{path}.report.{k}");
        self.report_options(src, path, local, step);
        let title = match &doc.title {
            Some(t) => self.tpl(src, &p("title"), t, Mode::Text)?,
            None => {
                let name = step.name.clone().unwrap_or_else(|| local.to_string());
                self.tpl(src, &format!("{path}.report"), &name, Mode::Text)?
            }
        };
        let rows = match &doc.rows {
            Some(r) if is_expression(r) => Some(Rows::Expr(self.expr(src, &p("rows"), r)?)),
            Some(r) => Some(Rows::Tpl(self.tpl(src, &p("rows"), r, Mode::Text)?)),
            None => None,
        };
        if let Some(columns) = &doc.columns {
            self.check_columns(src, &p("columns"), local, columns);
        }
        let mut facts = Vec::new();
        for (k, v) in &doc.facts {
            let at = p(&format!("facts.{k}"));
            facts.push((k.clone(), self.tpl(src, &at, &yaml_text(v), Mode::Text)?));
        }
        let found = match &doc.found {
            Some(f) => Some(self.expr(src, &p("found"), f)?),
            None => None,
        };
        let empty = match &doc.empty {
            Some(e) => Some(self.tpl(src, &p("empty"), e, Mode::Text)?),
            None => None,
        };
        Some(Kind::Report(Box::new(ReportSpec {
            title,
            rows,
            columns: doc.columns.clone(),
            facts,
            found,
            empty,
        })))
    }

    /// Columns: at least one, each named once.
    fn check_columns(&mut self, src: &Source, at: &str, local: &str, columns: &[String]) {
        if columns.is_empty() {
            self.diags.push(
                Diagnostic::at(src, at, format!("step {local}: `columns` is empty"))
                    .with_help("name the columns to show, or leave `columns` out to show the keys of the first row"),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, c) in columns.iter().enumerate() {
            if c.trim().is_empty() {
                self.diags.push(Diagnostic::at(
                    src,
                    &format!("{at}.{i}"),
                    format!("step {local}: a column needs a name"),
                ));
            } else if !seen.insert(c.as_str()) {
                self.diags.push(Diagnostic::at(
                    src,
                    &format!("{at}.{i}"),
                    format!("step {local}: column {c:?} is named twice"),
                ));
            }
        }
    }

    /// Step keys a report has no use for: it reads what it is given once, and is never a
    /// failure or a change.
    fn report_options(&mut self, src: &Source, path: &str, local: &str, step: &StepDoc) {
        let given = [
            ("retries", step.retries.is_some()),
            ("until", step.until.is_some()),
            ("changed_when", step.changed_when.is_some()),
            ("failed_when", step.failed_when.is_some()),
        ];
        for (key, _) in given.iter().filter(|(_, set)| *set) {
            self.diags.push(
                Diagnostic::at_key(
                    src,
                    &format!("{path}.{key}"),
                    format!("step {local} is a report; `{key}` has no meaning here"),
                )
                .with_help(
                    "poll or judge the data in an earlier read-only step, and report its result; \
                     `found:` says whether the report is a finding",
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_expression;

    #[test]
    fn rows_are_an_expression_unless_text_or_blocks_surround_the_values() {
        assert!(is_expression("nics | selectattr('stale')"));
        assert!(is_expression("{{ nics | selectattr('stale') }}"));
        assert!(!is_expression("{% for n in nics %}- {{ n }}\n{% endfor %}"));
        assert!(!is_expression("[{{ a }}, {{ b }}]"));
    }
}
