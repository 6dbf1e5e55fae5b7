//! The compiled playbook as the rest of remedy sees it: [`Program`], its [`Scope`]s and
//! [`Step`]s, each step's [`Kind`] and [`Undo`], declared [`Param`]s and how a value is checked
//! against one ([`Param::accept`]).
//!
//! Data only: building it from the files is the rest of `compile/`; binding it to targets and
//! parameter values is `plan`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use regex::Regex;

use crate::modules::ModuleKind;
use crate::playbook::model::ParamType;
use crate::source::Loc;
use crate::template::{Expr, Templates, Tpl};
use crate::transport::Access;

/// Names every template may read besides params, vars and results.
pub const BUILTIN_VARS: &[&str] = &["inventory_hostname"];

/// Section of a playbook a step came from (ordered as they run).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Detect,
    Steps,
    Verify,
}

/// A declared parameter.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
    pub required: bool,
    pub default: Option<serde_json::Value>,
    pub pattern: Option<Regex>,
    /// The pattern as written (the compiled one is anchored).
    pub pattern_text: Option<String>,
    pub choices: Option<Vec<serde_json::Value>>,
    pub secret: bool,
    pub help: String,
    pub loc: Loc,
}

impl Param {
    /// Whether this parameter's value is a secret: declared `secret: true`, or named like one
    /// ([`crate::redact::is_secret_name`]).
    pub fn is_secret(&self) -> bool {
        self.secret || crate::redact::is_secret_name(&self.name)
    }

    /// Check (and coerce from text given on the command line) a value for this parameter.
    /// The errors of a secret parameter never show the value.
    pub fn accept(&self, value: serde_json::Value) -> Result<serde_json::Value, String> {
        use serde_json::Value as J;
        let secret = self.is_secret();
        // The value as an error shows it: quoted, or not at all for a secret.
        let shown = |text: &str| {
            if secret {
                "a value that is not shown (the parameter is secret)".to_string()
            } else {
                format!("{text:?}")
            }
        };
        let v = match (self.ty, value) {
            (ParamType::String, J::String(s)) => J::String(s),
            (ParamType::String, v @ (J::Number(_) | J::Bool(_))) => J::String(v.to_string()),
            (ParamType::Int, J::Number(n)) if n.is_i64() || n.is_u64() => J::Number(n),
            (ParamType::Int, J::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(|n| J::Number(n.into()))
                .map_err(|_| format!("expected an integer, got {}", shown(&s)))?,
            (ParamType::Bool, J::Bool(b)) => J::Bool(b),
            (ParamType::Bool, J::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => J::Bool(true),
                "false" | "no" | "0" => J::Bool(false),
                _ => return Err(format!("expected true or false, got {}", shown(&s))),
            },
            (ParamType::List, J::Array(a)) => J::Array(a),
            (ParamType::List, J::String(s)) => J::Array(
                s.split(',')
                    .map(|p| J::String(p.trim().to_string()))
                    .filter(|p| p.as_str() != Some(""))
                    .collect(),
            ),
            (ty, _) if secret => return Err(format!("expected a {ty}, got {}", shown(""))),
            (ty, other) => return Err(format!("expected a {ty}, got {other}")),
        };
        if let Some(re) = &self.pattern {
            let texts: Vec<String> = match &v {
                J::Array(a) => a.iter().map(json_text).collect(),
                other => vec![json_text(other)],
            };
            for t in texts {
                if !re.is_match(&t) {
                    let shown = self.pattern_text.as_deref().unwrap_or(re.as_str());
                    return Err(if secret {
                        format!("value does not match pattern {shown}")
                    } else {
                        format!("{t:?} does not match pattern {shown}")
                    });
                }
            }
        }
        if let Some(choices) = &self.choices {
            // A list's items are each one of the choices; other values are one.
            let items: Vec<&J> = match &v {
                J::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            let allowed = |item: &J| choices.iter().any(|c| json_text(c) == json_text(item));
            if let Some(bad) = items.into_iter().find(|i| !allowed(i)) {
                let all = choices.iter().map(json_text).collect::<Vec<_>>().join(", ");
                return Err(match (&v, secret) {
                    (J::Array(_), false) => {
                        format!("{:?} must be one of {all}", json_text(bad))
                    }
                    _ => format!("must be one of {all}"),
                });
            }
        }
        Ok(v)
    }
}

pub fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One playbook instance: the root, or one `include`.
#[derive(Debug, Clone)]
pub struct Scope {
    pub playbook: String,
    pub path: PathBuf,
    /// Prefix of step ids in this scope (`""` for the root, `fix.` for an include with id fix).
    pub prefix: String,
    pub params: IndexMap<String, Param>,
    /// For includes: parameter values as templates, rendered in the parent scope.
    pub bindings: IndexMap<String, Tpl>,
    pub parent: Option<usize>,
    pub vars: Vec<(String, Tpl)>,
    /// An included playbook's `applies_when`, gating its steps.
    pub gate: Option<Expr>,
}

/// The action of a step, compiled.
#[derive(Debug, Clone)]
pub enum Kind {
    Ssh {
        cmd: Tpl,
        check: Option<Tpl>,
    },
    Api {
        command: String,
        args: Vec<(String, Tpl)>,
    },
    Module {
        kind: ModuleKind,
        /// The spec as JSON; string leaves listed in `tpls` by JSON pointer.
        spec: serde_json::Value,
        tpls: Vec<(String, Tpl)>,
    },
    Wait(Duration),
    Assert {
        that: Vec<Expr>,
        msg: Option<Tpl>,
    },
    Set(Vec<(String, Tpl)>),
    /// `report:` a titled table of findings and key facts ([`ReportSpec`]).
    Report(Box<ReportSpec>),
}

/// A compiled `report:` step. Its result: `rows` (as evaluated), `facts` (name -> value) and
/// `found`, besides `changed`, `failed` and `skipped`.
#[derive(Debug, Clone)]
pub struct ReportSpec {
    pub title: Tpl,
    pub rows: Option<Rows>,
    /// The columns as written (`None`: the keys of the first row).
    pub columns: Option<Vec<String>>,
    pub facts: Vec<(String, Tpl)>,
    /// Whether it is a finding; `None`: it has rows. May read its own result (`result.rows`).
    pub found: Option<Expr>,
    pub empty: Option<Tpl>,
}

/// Where a report's rows come from.
#[derive(Debug, Clone)]
pub enum Rows {
    /// An expression evaluating to a list.
    Expr(Expr),
    /// A template whose text is a YAML (or JSON) list.
    Tpl(Tpl),
}

/// The result fields of a `report` step, besides `changed`, `failed` and `skipped`.
pub const REPORT_RESULT_FIELDS: &[&str] = &["rows", "facts", "found"];

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Ssh { .. } => "ssh",
            Kind::Api { .. } => "api",
            Kind::Module { kind, .. } => kind.key(),
            Kind::Wait(_) => "wait",
            Kind::Assert { .. } => "assert",
            Kind::Set(_) => "set",
            Kind::Report(_) => "report",
        }
    }
}

/// How a step's change is undone.
#[derive(Debug, Clone)]
pub enum Undo {
    /// A read-only step: nothing to undo.
    ReadOnly,
    /// A structured module: undo computed from the captured pre-state.
    Auto,
    /// An explicit `rollback:` action.
    Ssh(Tpl),
    Api {
        command: String,
        args: Vec<(String, Tpl)>,
    },
    /// `irreversible: why` — refused without --allow-irreversible.
    Irreversible(String),
    /// `no_rollback: why` — a change that needs no undo.
    NotNeeded(String),
}

/// A step setting written as a value, or as a template rendered per node when the step runs
/// (`retries`, `delay`).
#[derive(Debug, Clone)]
pub enum Setting<T> {
    Value(T),
    Template(Tpl),
}

impl<T> Setting<T> {
    /// The template, when it is one.
    pub fn template(&self) -> Option<&Tpl> {
        match self {
            Setting::Value(_) => None,
            Setting::Template(t) => Some(t),
        }
    }
}

/// One step, resolved.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique id (with the include prefix).
    pub id: String,
    pub name: String,
    pub phase: Phase,
    pub scope: usize,
    pub on: Option<Tpl>,
    /// Indices of the steps this one waits for.
    pub needs: Vec<usize>,
    /// All must hold (include gates first, then the step's own `when`).
    pub when: Vec<Expr>,
    pub register: String,
    /// Attempts after the first (`retries`).
    pub retries: Setting<u32>,
    /// The pause between attempts (`delay`).
    pub delay: Setting<Duration>,
    pub until: Option<Expr>,
    pub timeout: Option<Duration>,
    pub ignore_errors: bool,
    pub changed_when: Option<Expr>,
    pub failed_when: Option<Expr>,
    pub undo: Undo,
    pub tags: Vec<String>,
    pub serial: Option<usize>,
    pub max_fail_percentage: Option<u8>,
    /// `refresh_inventory: true`: once this step has run, the inventory's CloudStack source is
    /// read again and every later step is bound to the machines that exist then.
    pub refresh_inventory: bool,
    /// `consumes: [ids]`: the ids of earlier mutating steps whose changes this step puts to
    /// use. Once it has changed (or may have), rollback leaves them in place
    /// ([`crate::rollback::consumed`]).
    pub consumes: Vec<String>,
    pub kind: Kind,
    pub access: Access,
    pub loc: Loc,
    /// Variables read that are not params, vars or results: must be host variables.
    pub host_vars: BTreeSet<String>,
    /// Results (by register name) read, with the index of the step that registers them.
    pub reads: BTreeMap<String, usize>,
}

impl Step {
    pub fn mutating(&self) -> bool {
        self.access == Access::Mutating
    }

    /// Whether it runs on the controller (API calls and structured CloudStack modules, and
    /// `assert`/`set`/`wait`/`report` without `on`).
    pub fn on_controller(&self) -> bool {
        self.on.is_none()
    }
}

/// A whole compiled playbook.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    pub description: String,
    pub templates: Templates,
    pub scopes: Vec<Scope>,
    pub steps: Vec<Step>,
    pub applies_when: Option<Expr>,
    /// Every file read, with its SHA-256.
    pub files: Vec<(PathBuf, String)>,
    /// The playbook's own file (the others in `files` are its includes).
    pub root: PathBuf,
}

impl Program {
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    pub fn params(&self) -> &IndexMap<String, Param> {
        &self.scopes[0].params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(ty: ParamType, choices: &[&str]) -> Param {
        Param {
            name: "zones".into(),
            ty,
            required: false,
            default: None,
            pattern: None,
            pattern_text: None,
            choices: Some(choices.iter().map(|c| serde_json::json!(c)).collect()),
            secret: false,
            help: String::new(),
            loc: Loc {
                file: std::sync::Arc::from(std::path::Path::new("t.yml")),
                pos: Default::default(),
            },
        }
    }

    #[test]
    fn choices_apply_to_each_item_of_a_list() {
        let p = param(ParamType::List, &["HCM", "HAN"]);
        assert_eq!(
            p.accept(serde_json::json!("HCM,HAN")),
            Ok(serde_json::json!(["HCM", "HAN"]))
        );
        assert_eq!(
            p.accept(serde_json::json!(["HAN"])),
            Ok(serde_json::json!(["HAN"]))
        );
        assert_eq!(
            p.accept(serde_json::json!("HCM,SGN")),
            Err("\"SGN\" must be one of HCM, HAN".to_string())
        );
        // an empty list has no item outside the choices
        assert_eq!(p.accept(serde_json::json!([])), Ok(serde_json::json!([])));
        // a single value is still compared whole
        let p = param(ParamType::String, &["HCM", "HAN"]);
        assert_eq!(
            p.accept(serde_json::json!("HCM,HAN")),
            Err("must be one of HCM, HAN".to_string())
        );
    }
}
