//! From parsed files to a [`Program`]: every step resolved, typed and compiled, includes
//! flattened, dependencies checked. Nothing after this touches YAML.
//!
//! What is checked here, each with file:line:column: exactly one kind per step, unique ids,
//! `needs` naming known ids, dependency cycles, read-only `detect`/`verify` sections, a mutating
//! raw step declaring how it is undone (`rollback`), that it cannot be (`irreversible`) or why it
//! needs no undo (`no_rollback`), template syntax and the filters, tests and functions
//! templates use, the fields of step results they read, parameter declarations (type, pattern,
//! choices, default), include parameters (unknown, missing required, failing their pattern),
//! and that every variable a template reads is a parameter, a var, a result registered by a step
//! that runs before it, or else a host variable (checked against the inventory by the plan).
//!
//! Not here: targets and parameter values (plan).
//!
//! Files: `program.rs` the compiled types ([`Program`], [`Step`], [`Kind`], [`Undo`],
//! [`Param`], ...), `params.rs` a scope's parameter and var declarations, `sections.rs` a
//! section's items in order (ids, `needs`, `consumes`), `step.rs` one step (its kind, how it
//! is undone, its options), `include.rs` an `include` and its parameter bindings, `report.rs` a `report:` step's keys, `checks.rs`
//! the checks over the whole program (duplicate ids, cycles, variables). This file holds the
//! entry [`compile`], the compiler's state and the helpers they share.

mod checks;
mod include;
mod params;
mod program;
mod report;
mod sections;
mod step;

use crate::error::Diagnostics;
use crate::playbook::load::Loaded;
use crate::source::Source;
use crate::template::{Expr, Mode, Templates, Tpl};

pub use program::{
    json_text, Kind, Param, Phase, Program, ReportSpec, Rows, Scope, Setting, Step, Undo,
    BUILTIN_VARS, REPORT_RESULT_FIELDS,
};

/// Compile a loaded playbook. Every problem found is reported, not just the first.
pub fn compile(loaded: &Loaded) -> Result<Program, Diagnostics> {
    let mut c = Compiler {
        loaded,
        templates: Templates::new(),
        scopes: Vec::new(),
        steps: Vec::new(),
        diags: Diagnostics::default(),
        step_paths: Vec::new(),
    };
    let root = loaded.root();
    let root_scope = c.scope(root, loaded.root.clone(), String::new(), None, None);
    let applies_when = root
        .doc
        .applies_when
        .as_ref()
        .and_then(|t| c.expr(&root.source, "applies_when", t));
    c.section(root, root_scope, "detect", Phase::Detect, &[], &[]);
    let detect: Vec<usize> = (0..c.steps.len()).collect();
    c.section(root, root_scope, "steps", Phase::Steps, &detect, &[]);
    let main: Vec<usize> = (detect.len()..c.steps.len()).collect();
    let mut before_verify = detect.clone();
    before_verify.extend(&main);
    c.section(
        root,
        root_scope,
        "verify",
        Phase::Verify,
        &before_verify,
        &[],
    );
    c.check_duplicates();
    c.check_cycles();
    if c.diags.is_empty() {
        c.check_variables(applies_when.as_ref());
        c.check_result_fields();
    }
    let Compiler {
        templates,
        scopes,
        steps,
        diags,
        ..
    } = c;
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(Program {
        name: root.doc.name.clone(),
        description: root.doc.description.clone(),
        templates,
        scopes,
        steps,
        applies_when,
        root: loaded.root.clone(),
        files: loaded
            .files
            .iter()
            .map(|(p, f)| (p.clone(), f.sha256.clone()))
            .collect(),
    })
}

/// A step whose `needs` are resolved once its whole section exists: (step, local id, [(id, path)]).
type PendingNeeds = (usize, String, Vec<(String, String)>);

struct Compiler<'a> {
    loaded: &'a Loaded,
    templates: Templates,
    scopes: Vec<Scope>,
    steps: Vec<Step>,
    diags: Diagnostics,
    /// For each step: its file's source and its YAML path, for later messages.
    step_paths: Vec<(Source, String)>,
}

/// Module arguments as JSON, with numbers written as text (`mode: 640` and `range: 3933` mean
/// what they say; the module specs take text).
fn module_args(v: &serde_yaml::Value) -> serde_json::Value {
    match yaml_to_json(v) {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::Number(n) => (k, serde_json::Value::String(n.to_string())),
                    other => (k, other),
                })
                .collect(),
        ),
        other => other,
    }
}

fn yaml_to_json(v: &serde_yaml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// A YAML value as template text (scalars as written; lists comma-joined, as CloudStack wants).
fn yaml_text(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Null => String::new(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Sequence(items) => {
            items.iter().map(yaml_text).collect::<Vec<_>>().join(",")
        }
        other => serde_json::to_string(&yaml_to_json(other)).unwrap_or_default(),
    }
}

const ID_RE: &str = r"^[a-z_][a-z0-9_]*$";

impl Compiler<'_> {
    fn expr(&mut self, source: &Source, path: &str, text: &str) -> Option<Expr> {
        match self.templates.expr(source, path, text) {
            Ok(e) => Some(e),
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }

    fn tpl(&mut self, source: &Source, path: &str, text: &str, mode: Mode) -> Option<Tpl> {
        match self.templates.add(source, path, text, mode) {
            Ok(t) => Some(t),
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn compile_text(text: &str) -> Result<Program, Diagnostics> {
        let file = super::super::load::parse(Path::new("t.yml"), text, text.as_bytes())
            .map_err(Diagnostics::from)?;
        let mut files = std::collections::BTreeMap::new();
        files.insert(PathBuf::from("t.yml"), file);
        compile(&Loaded {
            root: PathBuf::from("t.yml"),
            files,
        })
    }

    fn first_error(text: &str) -> String {
        compile_text(text).expect_err("should not compile").0[0].headline()
    }

    #[test]
    fn ids_are_unique_across_sections() {
        let e = first_error(
            "name: x\ndetect:\n  - id: a\n    wait: 1s\nsteps:\n  - id: a\n    wait: 1s\n",
        );
        assert!(e.starts_with("t.yml:6:9: duplicate step id \"a\""), "{e}");
    }

    #[test]
    fn mutating_steps_cannot_retry() {
        let e = first_error("name: x\nsteps:\n  - id: a\n    on: h\n    ssh: reboot\n    no_rollback: x\n    retries: 3\n");
        assert!(
            e.contains("retries`/`until` apply to read-only steps"),
            "{e}"
        );
    }

    #[test]
    fn static_module_arguments_are_checked_at_compile_time() {
        let e = first_error(
            "name: x\nsteps:\n  - id: a\n    on: h\n    file: { path: relative/x, mode: 640 }\n",
        );
        assert!(e.starts_with("t.yml:5:11: file:"), "{e}");
        // numbers are text, and a valid spec compiles
        compile_text("name: x\nsteps:\n  - id: a\n    on: h\n    file: { path: /x, mode: 640 }\n")
            .unwrap_or_else(|d| panic!("{}", d.render(false)));
    }

    #[test]
    fn detect_must_be_read_only_and_raw_changes_need_an_undo() {
        let e = first_error(
            "name: x\ndetect:\n  - id: a\n    on: h\n    ssh: touch x\n    no_rollback: y\n",
        );
        assert!(e.contains("detect steps must be read-only"), "{e}");
        let e = first_error("name: x\nsteps:\n  - id: a\n    on: h\n    ssh: touch x\n");
        assert!(e.contains("declares neither how it is undone"), "{e}");
    }

    #[test]
    fn result_fields_are_checked_where_the_result_is_surely_one() {
        // the step's own result
        let e = first_error("name: x\nsteps:\n  - id: a\n    on: h\n    ssh: echo\n    changes: none\n    retries: 2\n    until: result.stdot != ''\n");
        assert_eq!(
            e,
            "t.yml:8:19: `result` is the result of step a (ssh), which has no field `stdot`"
        );
        // a controller step's result, read anywhere; `json`'s own fields are open
        let e = first_error("name: x\nsteps:\n  - id: q\n    api: { command: listHosts }\n  - id: b\n    assert: { that: 'q.json.count > 0 and q.jsn' }\n");
        assert!(
            e.starts_with(
                "t.yml:6:45: `q` is the result of step q (api), which has no field `jsn`"
            ),
            "{e}"
        );
        // a result of several targets may be a map by host where read from elsewhere; set facts
        // are open; the same `on` sees its own target's result
        compile_text("name: x\nsteps:\n  - id: p\n    on: routers\n    ssh: echo\n    changes: none\n  - id: f\n    set: { n: '{{ p.r1.rc }}' }\n  - id: g\n    assert: { that: 'n.anything' }\n  - id: h\n    on: routers\n    ssh: echo {{ p.rc }} {{ p.stdout_lines | length }}\n    changes: none\n")
            .unwrap_or_else(|d| panic!("{}", d.render(false)));
        let e = first_error("name: x\nsteps:\n  - id: p\n    on: routers\n    ssh: echo\n    changes: none\n  - id: h\n    on: routers\n    ssh: echo {{ p.code }}\n    changes: none\n");
        assert!(e.contains("which has no field `code`"), "{e}");
    }

    #[test]
    fn a_reports_result_fields_are_checked() {
        let p = compile_text("name: x\nsteps:\n  - id: r\n    report: { rows: \"[]\" }\n")
            .unwrap_or_else(|d| panic!("{}", d.render(false)));
        let fields = checks::result_fields(&p.steps[0].kind).unwrap_or_default();
        assert!(REPORT_RESULT_FIELDS.iter().all(|f| fields.contains(f)));
        let e = first_error("name: x\nsteps:\n  - id: r\n    report: { rows: \"[]\" }\n  - id: a\n    assert: { that: r.fuond }\n");
        assert!(
            e.contains("`r` is the result of step r (report), which has no field `fuond`"),
            "{e}"
        );
    }

    #[test]
    fn functions_are_not_variables_and_unknown_names_are_errors() {
        let p = compile_text("name: x\nsteps:\n  - id: a\n    set: { n: '{% set ns = namespace(c=0) %}{{ range(3) | list | length + ns.c }}', d: '{{ dict(a=1) | tojson }}' }\n")
            .unwrap_or_else(|d| panic!("{}", d.render(false)));
        assert!(
            p.steps[0].host_vars.is_empty(),
            "{:?}",
            p.steps[0].host_vars
        );
        let e = first_error("name: x\nsteps:\n  - id: a\n    when: x is definedd\n    wait: 1s\n");
        assert_eq!(e, "t.yml:4:16: unknown test `definedd`");
        let e = first_error(
            "name: x\nsteps:\n  - id: a\n    set: { n: \"{{ 'a | nope' | lowr }}\" }\n",
        );
        assert_eq!(e, "t.yml:4:32: unknown filter `lowr`");
    }

    #[test]
    fn a_report_compiles_with_every_key_in_any_section() {
        let p = compile_text(
            "name: x\nvars:\n  nics: []\ndetect:\n  - id: seen\n    report:\n      title: \"NICs ({{ nics | length }})\"\n      rows: nics\n      columns: [vm, nic]\n      facts: { count: \"{{ nics | length }}\" }\n      found: result.rows | length > 1\n      empty: no stale NICs\nsteps:\n  - id: again\n    on: h\n    report:\n      rows: \"{% for n in nics %}- {{ n }}\\n{% endfor %}\"\nverify:\n  - id: after\n    report: { title: \"{{ seen.found }}\", rows: \"{{ seen.rows }}\" }\n",
        )
        .unwrap_or_else(|d| panic!("{}", d.render(false)));
        let names: Vec<&str> = p.steps.iter().map(|s| s.kind.name()).collect();
        assert_eq!(names, ["report", "report", "report"]);
        assert!(p.steps.iter().all(|s| !s.mutating()));
        match &p.steps[0].kind {
            Kind::Report(r) => {
                assert!(matches!(r.rows, Some(Rows::Expr(_))));
                assert_eq!(
                    r.columns.as_deref(),
                    Some(&["vm".to_string(), "nic".to_string()][..])
                );
                assert_eq!(r.facts.len(), 1);
                assert!(r.found.is_some() && r.empty.is_some());
            }
            other => panic!("{other:?}"),
        }
        match &p.steps[1].kind {
            Kind::Report(r) => assert!(matches!(r.rows, Some(Rows::Tpl(_)))),
            other => panic!("{other:?}"),
        }
        // the verify report reads the detect report's result
        assert!(p.steps[2].reads.contains_key("seen"));
    }

    #[test]
    fn a_report_refuses_keys_it_has_no_use_for() {
        let e =
            first_error("name: x\nsteps:\n  - id: r\n    report: { rows: \"[]\", colums: [a] }\n");
        assert!(e.contains("unknown field `colums`"), "{e}");
        let e = first_error(
            "name: x\nsteps:\n  - id: r\n    report: { rows: \"[]\" }\n    retries: 3\n",
        );
        assert_eq!(
            e,
            "t.yml:5:5: step r is a report; `retries` has no meaning here"
        );
        let e = first_error(
            "name: x\nsteps:\n  - id: r\n    report: { rows: \"[]\" }\n    failed_when: r.found\n",
        );
        assert!(e.contains("`failed_when` has no meaning here"), "{e}");
        let e = first_error(
            "name: x\nsteps:\n  - id: r\n    report: { rows: \"[]\" }\n    no_rollback: why\n",
        );
        assert!(
            e.contains("step r is read-only; `no_rollback` has no meaning here"),
            "{e}"
        );
        let e = first_error(
            "name: x\nsteps:\n  - id: r\n    report: { rows: \"[]\" }\n    changes: none\n",
        );
        assert!(e.contains("`changes: none` applies to ssh steps"), "{e}");
        let e = first_error(
            "name: x\nsteps:\n  - id: r\n    report: { rows: \"[]\" }\n    set: { a: b }\n",
        );
        assert!(e.contains("has several kinds (set, report)"), "{e}");
        let e = first_error(
            "name: x\nsteps:\n  - id: r\n    report: { rows: \"[]\", columns: [a, b, a] }\n",
        );
        assert_eq!(e, "t.yml:4:43: step r: column \"a\" is named twice");
        let e =
            first_error("name: x\nsteps:\n  - id: r\n    report: { rows: \"[]\", columns: [] }\n");
        assert!(e.contains("`columns` is empty"), "{e}");
        let e = first_error("name: x\nsteps:\n  - id: r\n    report: { rows: \"nics |\" }\n");
        assert!(e.contains("invalid expression"), "{e}");
        // what the rows read must run before it
        let e = first_error("name: x\nsteps:\n  - id: r\n    report: { rows: later.items }\n  - id: later\n    api: { command: listHosts }\n");
        assert!(
            e.contains("registered by step later, which does not run before it"),
            "{e}"
        );
    }

    #[test]
    fn results_must_come_from_earlier_steps() {
        let e = first_error("name: x\nsteps:\n  - id: a\n    on: h\n    ssh: echo {{ b.stdout }}\n    changes: none\n  - id: b\n    on: h\n    ssh: echo hi\n    changes: none\n");
        assert!(
            e.contains("registered by step b, which does not run before it"),
            "{e}"
        );
    }
}
