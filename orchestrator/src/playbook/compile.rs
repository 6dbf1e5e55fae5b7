//! From parsed files to a [`Program`]: every step resolved, typed and compiled, includes
//! flattened, dependencies checked. Nothing after this touches YAML.
//!
//! What is checked here, each with file:line:column: exactly one kind per step, unique ids,
//! `needs` naming known ids, dependency cycles, read-only `detect`/`verify` sections, a mutating
//! raw step declaring how it is undone (`rollback`), that it cannot be (`irreversible`) or why it
//! needs no undo (`no_rollback`), template syntax, parameter declarations (type, pattern,
//! choices, default), include parameters (unknown, missing required, failing their pattern),
//! and that every variable a template reads is a parameter, a var, a result registered by a step
//! that runs before it, or else a host variable (checked against the inventory by the plan).
//!
//! Not here: targets and parameter values (plan).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use petgraph::graph::DiGraph;
use regex::Regex;

use super::load::{File, Loaded};
use super::model::{ParamDoc, ParamType, RollbackDoc, StepDoc};
use crate::error::{Diagnostic, Diagnostics};
use crate::modules::{ModuleKind, ModuleSpec};
use crate::source::{Loc, Source};
use crate::template::{Expr, Mode, Templates, Tpl};
use crate::transport::{Access, ApiCall};

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
            if !choices.iter().any(|c| json_text(c) == json_text(&v)) {
                return Err(format!(
                    "must be one of {}",
                    choices.iter().map(json_text).collect::<Vec<_>>().join(", ")
                ));
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
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Ssh { .. } => "ssh",
            Kind::Api { .. } => "api",
            Kind::Module { kind, .. } => kind.key(),
            Kind::Wait(_) => "wait",
            Kind::Assert { .. } => "assert",
            Kind::Set(_) => "set",
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
    pub retries: u32,
    pub delay: Duration,
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
    /// `assert`/`set`/`wait` without `on`).
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

    fn scope(
        &mut self,
        file: &File,
        path: PathBuf,
        prefix: String,
        parent: Option<usize>,
        gate: Option<Expr>,
    ) -> usize {
        let src = &file.source;
        let mut params = IndexMap::new();
        for (name, doc) in &file.doc.params {
            if let Some(p) = self.param(src, name, doc) {
                params.insert(name.clone(), p);
            }
        }
        let mut vars = Vec::new();
        for (name, v) in &file.doc.vars {
            if let Some(t) = self.tpl(src, &format!("vars.{name}"), &yaml_text(v), Mode::Text) {
                vars.push((name.clone(), t));
            }
        }
        self.scopes.push(Scope {
            playbook: file.doc.name.clone(),
            path,
            prefix,
            params,
            bindings: IndexMap::new(),
            parent,
            vars,
            gate,
        });
        self.scopes.len() - 1
    }

    fn param(&mut self, src: &Source, name: &str, doc: &ParamDoc) -> Option<Param> {
        let at = format!("params.{name}");
        let re = Regex::new(ID_RE).ok()?;
        if !re.is_match(name) {
            self.diags.push(
                Diagnostic::at_key(src, &at, format!("invalid parameter name {name:?}"))
                    .with_help("use lower-case letters, digits and _"),
            );
        }
        let pattern = match &doc.pattern {
            Some(p) => match Regex::new(&format!("^(?:{p})$")) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.diags.push(
                        Diagnostic::at(
                            src,
                            &format!("{at}.pattern"),
                            format!("parameter {name}: invalid pattern: {e}"),
                        )
                        .with_label("not a valid regular expression"),
                    );
                    return None;
                }
            },
            None => None,
        };
        if doc.required && doc.default.is_some() {
            self.diags.push(Diagnostic::at_key(
                src,
                &format!("{at}.default"),
                format!("parameter {name} is required and has a default; choose one"),
            ));
        }
        let param = Param {
            name: name.to_string(),
            ty: doc.ty,
            required: doc.required,
            default: None,
            pattern,
            pattern_text: doc.pattern.clone(),
            choices: doc
                .choices
                .as_ref()
                .map(|c| c.iter().map(yaml_to_json).collect()),
            secret: doc.secret,
            help: doc.help.clone(),
            loc: src.key_loc(&at),
        };
        let default = match &doc.default {
            Some(d) => match param.accept(yaml_to_json(d)) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.diags.push(
                        Diagnostic::at(
                            src,
                            &format!("{at}.default"),
                            format!("parameter {name}: default {e}"),
                        )
                        .with_label("invalid default"),
                    );
                    None
                }
            },
            None => None,
        };
        Some(Param { default, ..param })
    }

    /// Compile one section (`detect`, `steps` or `verify`) of a file into steps of `scope`.
    /// `after`: steps the first item waits for; `gates`: conditions inherited from includes.
    fn section(
        &mut self,
        file: &File,
        scope: usize,
        section: &str,
        phase: Phase,
        after: &[usize],
        gates: &[Expr],
    ) -> Vec<usize> {
        let list = match section {
            "detect" => &file.doc.detect,
            "steps" => &file.doc.steps,
            _ => &file.doc.verify,
        };
        let src = file.source.clone();
        // Items of this section: local id -> the step indices it stands for.
        let mut items: Vec<(String, Vec<usize>)> = Vec::new();
        let mut pending_needs: Vec<PendingNeeds> = Vec::new();
        let mut pending_consumes: Vec<(usize, String, String, Vec<String>)> = Vec::new();
        let mut previous: Vec<usize> = after.to_vec();
        let mut seen_ids: HashMap<String, String> = HashMap::new();
        // ids from other sections of the same file are valid `needs` targets too
        let all_ids = self.file_ids(file);
        for (i, doc) in list.iter().enumerate() {
            let path = format!("{section}.{i}");
            let Some(local) = self.step_id(&src, &path, doc, &mut seen_ids) else {
                continue;
            };
            let needs_paths: Vec<(String, String)> = doc
                .needs
                .iter()
                .enumerate()
                .map(|(k, n)| (n.clone(), format!("{path}.needs.{k}")))
                .collect();
            for (n, at) in &needs_paths {
                if !all_ids.contains(n) {
                    self.diags.push(
                        Diagnostic::at(
                            &src,
                            at,
                            format!("step {local}: needs unknown step id {n:?}"),
                        )
                        .with_label("no step has this id")
                        .with_help(format!(
                            "ids in this playbook: {}",
                            all_ids.iter().cloned().collect::<Vec<_>>().join(", ")
                        )),
                    );
                }
            }
            let deps = if doc.needs.is_empty() {
                previous.clone()
            } else {
                after.to_vec()
            };
            let produced = if let Some(name) = &doc.include {
                self.include(
                    file, &src, &path, &local, doc, name, scope, phase, &deps, gates,
                )
            } else {
                match self.step(&src, &path, &local, doc, scope, phase, deps, gates) {
                    Some(idx) => vec![idx],
                    None => vec![],
                }
            };
            if !doc.needs.is_empty() {
                for &idx in &produced {
                    pending_needs.push((idx, local.clone(), needs_paths.clone()));
                }
            }
            if !doc.consumes.is_empty() && doc.include.is_none() {
                for &idx in &produced {
                    pending_consumes.push((idx, local.clone(), path.clone(), doc.consumes.clone()));
                }
            }
            if !produced.is_empty() {
                previous = produced.clone();
            }
            items.push((local, produced));
        }
        // Resolve `needs` now that every item of the section exists; ids of other sections of
        // this scope are resolved by scope-wide lookup.
        for (idx, _local, needs) in pending_needs {
            for (n, _) in needs {
                let targets: Vec<usize> = match items.iter().find(|(id, _)| *id == n) {
                    Some((_, steps)) => steps.clone(),
                    None => self.scope_steps(scope, &n),
                };
                for t in targets {
                    if !self.steps[idx].needs.contains(&t) {
                        self.steps[idx].needs.push(t);
                    }
                }
            }
        }
        for (idx, local, path, ids) in pending_consumes {
            self.resolve_consumes(&src, idx, &local, &path, &ids, &items);
        }
        items.into_iter().flat_map(|(_, s)| s).collect()
    }

    /// `consumes: [ids]` of step `idx`: each id an earlier mutating step of the same section.
    fn resolve_consumes(
        &mut self,
        src: &Source,
        idx: usize,
        local: &str,
        path: &str,
        ids: &[String],
        items: &[(String, Vec<usize>)],
    ) {
        if !self.steps[idx].mutating() {
            self.diags.push(Diagnostic::at_key(
                src,
                &format!("{path}.consumes"),
                format!("step {local} is read-only; it consumes nothing (`consumes` names the changes a mutating step puts to use)"),
            ));
            return;
        }
        for (k, id) in ids.iter().enumerate() {
            let at = format!("{path}.consumes.{k}");
            let mutating = |s: &Vec<usize>| -> Vec<usize> {
                s.iter()
                    .copied()
                    .filter(|&t| self.steps[t].mutating())
                    .collect()
            };
            let earlier: Vec<&str> = items
                .iter()
                .filter(|(_, s)| s.iter().all(|&t| t < idx) && !mutating(s).is_empty())
                .map(|(id, _)| id.as_str())
                .collect();
            let found = items.iter().find(|(i, _)| i == id).map(|(_, s)| s);
            let targets = found.map(mutating).unwrap_or_default();
            let why = match found {
                None => Some("no step of this section has this id"),
                Some(s) if s.iter().any(|&t| t >= idx) => Some("it comes after this step"),
                Some(_) if targets.is_empty() => Some("it changes nothing (read-only)"),
                Some(_) => None,
            };
            if let Some(why) = why {
                self.diags.push(
                    Diagnostic::at(
                        src,
                        &at,
                        format!("step {local}: consumes {id:?}, but {why}"),
                    )
                    .with_label("not an earlier mutating step")
                    .with_help(if earlier.is_empty() {
                        "`consumes` names earlier mutating steps (or includes) of the same section"
                            .to_string()
                    } else {
                        format!("earlier mutating steps: {}", earlier.join(", "))
                    }),
                );
                continue;
            }
            for t in targets {
                let full = self.steps[t].id.clone();
                if !self.steps[idx].consumes.contains(&full) {
                    self.steps[idx].consumes.push(full);
                }
            }
        }
    }

    fn file_ids(&self, file: &File) -> BTreeSet<String> {
        file.doc
            .detect
            .iter()
            .chain(&file.doc.steps)
            .chain(&file.doc.verify)
            .filter_map(|s| s.id.clone())
            .collect()
    }

    /// Steps of `scope` whose local id is `id`, or which belong to an include with that id.
    fn scope_steps(&self, scope: usize, id: &str) -> Vec<usize> {
        let prefix = &self.scopes[scope].prefix;
        let full = format!("{prefix}{id}");
        let inner = format!("{full}.");
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.id == full || s.id.starts_with(&inner))
            .map(|(i, _)| i)
            .collect()
    }

    fn step_id(
        &mut self,
        src: &Source,
        path: &str,
        doc: &StepDoc,
        seen: &mut HashMap<String, String>,
    ) -> Option<String> {
        let Some(id) = &doc.id else {
            self.diags.push(
                Diagnostic::at(src, path, "step has no id")
                    .with_help("every step needs a unique `id:` (lower-case letters, digits, _)"),
            );
            return None;
        };
        let valid = Regex::new(ID_RE).map(|r| r.is_match(id)).unwrap_or(false);
        if !valid {
            self.diags.push(
                Diagnostic::at(src, &format!("{path}.id"), format!("invalid step id {id:?}"))
                    .with_help("use lower-case letters, digits and _, starting with a letter: ids are also variable names"),
            );
        }
        if let Some(first) = seen.insert(id.clone(), path.to_string()) {
            let first_loc = src.loc(&format!("{first}.id"));
            self.diags.push(
                Diagnostic::at(
                    src,
                    &format!("{path}.id"),
                    format!("duplicate step id {id:?}"),
                )
                .with_help(format!("first used at {first_loc}")),
            );
        }
        Some(id.clone())
    }

    #[allow(clippy::too_many_arguments)]
    fn include(
        &mut self,
        file: &File,
        src: &Source,
        path: &str,
        local: &str,
        doc: &StepDoc,
        name: &str,
        scope: usize,
        phase: Phase,
        deps: &[usize],
        gates: &[Expr],
    ) -> Vec<usize> {
        let dir = file.source.path.parent().map(|p| p.to_path_buf());
        let Ok(child_path) = super::load::find(name, dir.as_deref()) else {
            return vec![]; // reported by load
        };
        let Some(child) = self.loaded.files.get(&child_path) else {
            return vec![];
        };
        let allowed_with_include = doc.on.is_none()
            && doc.ssh.is_none()
            && doc.api.is_none()
            && doc.rollback.is_none()
            && doc.irreversible.is_none()
            && doc.no_rollback.is_none()
            && doc.register.is_none()
            && doc.retries.is_none()
            && doc.until.is_none()
            && !doc.refresh_inventory;
        if !allowed_with_include {
            self.diags.push(Diagnostic::at_key(
                src,
                &format!("{path}.include"),
                "an include step takes only id, name, needs, when, tags and params",
            ));
        }
        let mut gates = gates.to_vec();
        if let Some(w) = &doc.when {
            if let Some(e) = self.expr(src, &format!("{path}.when"), w) {
                gates.push(e);
            }
        }
        let prefix = format!("{}{local}.", self.scopes[scope].prefix);
        let child_gate = child
            .doc
            .applies_when
            .as_ref()
            .and_then(|t| self.expr(&child.source, "applies_when", t));
        let child_scope = self.scope(child, child_path.clone(), prefix, Some(scope), None);
        // Parameter bindings, checked against the child's declarations.
        let given = doc.params.clone().unwrap_or_default();
        for (k, v) in &given {
            let at = format!("{path}.params.{k}");
            let Some(param) = self.scopes[child_scope].params.get(k).cloned() else {
                self.diags.push(
                    Diagnostic::at_key(src, &at, format!("{name} has no parameter {k:?}"))
                        .with_help(format!(
                            "its parameters: {}",
                            self.scopes[child_scope]
                                .params
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                );
                continue;
            };
            let text = yaml_text(v);
            if let Some(t) = self.tpl(src, &at, &text, Mode::Text) {
                if t.is_static {
                    if let Err(e) = param.accept(yaml_to_json(v)) {
                        self.diags.push(
                            Diagnostic::at(src, &at, format!("parameter {k} of {name}: {e}"))
                                .with_label("invalid value"),
                        );
                    }
                }
                self.scopes[child_scope].bindings.insert(k.clone(), t);
            }
        }
        for (pname, p) in self.scopes[child_scope].params.clone() {
            if p.required && !given.contains_key(&pname) {
                self.diags.push(
                    Diagnostic::at_key(
                        src,
                        &format!("{path}.include"),
                        format!("include of {name} is missing required parameter {pname:?}"),
                    )
                    .with_label("missing parameter")
                    .with_help(if p.help.is_empty() {
                        format!("add params: {{ {pname}: ... }}")
                    } else {
                        format!("{pname}: {}", p.help)
                    }),
                );
            }
        }
        // The child's detect steps, then (gated by its applies_when) its steps and verify.
        let detect = self.section(child, child_scope, "detect", phase, deps, &gates);
        let mut gated = gates.clone();
        if let Some(g) = child_gate {
            self.scopes[child_scope].gate = Some(g.clone());
            gated.push(g);
        }
        let after_detect = if detect.is_empty() {
            deps.to_vec()
        } else {
            detect.clone()
        };
        let main = self.section(child, child_scope, "steps", phase, &after_detect, &gated);
        let mut before_verify = after_detect.clone();
        before_verify.extend(&main);
        let verify_after = if main.is_empty() {
            after_detect
        } else {
            main.clone()
        };
        let verify = self.section(child, child_scope, "verify", phase, &verify_after, &gated);
        let _ = before_verify;
        let mut all = detect;
        all.extend(main);
        all.extend(verify);
        for &i in &all {
            self.steps[i].tags.extend(doc.tags.iter().cloned());
        }
        all
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        src: &Source,
        path: &str,
        local: &str,
        doc: &StepDoc,
        scope: usize,
        phase: Phase,
        deps: Vec<usize>,
        gates: &[Expr],
    ) -> Option<usize> {
        let p = |k: &str| format!("{path}.{k}");
        let mut kinds: Vec<&str> = Vec::new();
        if doc.ssh.is_some() {
            kinds.push("ssh");
        }
        if doc.api.is_some() {
            kinds.push("api");
        }
        if doc.wait.is_some() {
            kinds.push("wait");
        }
        if doc.assert.is_some() {
            kinds.push("assert");
        }
        if doc.set.is_some() {
            kinds.push("set");
        }
        let module_values: Vec<(ModuleKind, &serde_yaml::Value)> = [
            (ModuleKind::Service, &doc.service),
            (ModuleKind::File, &doc.file),
            (ModuleKind::Link, &doc.link),
            (ModuleKind::Route, &doc.route),
            (ModuleKind::OvsPort, &doc.ovs_port),
            (ModuleKind::OvsFlow, &doc.ovs_flow),
            (ModuleKind::CsSetting, &doc.cs_setting),
            (ModuleKind::VlanRange, &doc.vlan_range),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        kinds.extend(module_values.iter().map(|(k, _)| k.key()));
        if kinds.len() != 1 {
            let msg = if kinds.is_empty() {
                format!("step {local} does nothing: give one of ssh, api, wait, assert, set, include or a module")
            } else {
                format!(
                    "step {local} has several kinds ({}); give exactly one",
                    kinds.join(", ")
                )
            };
            self.diags.push(Diagnostic::at(src, &p("id"), msg));
            return None;
        }
        if doc.params.is_some() {
            self.diags.push(Diagnostic::at_key(
                src,
                &p("params"),
                "`params` belongs to an include step",
            ));
        }

        let loc = src.loc(&p("id"));
        let (kind, access) = if let Some(cmd) = &doc.ssh {
            let cmd_t = self.tpl(src, &p("ssh"), cmd, Mode::Shell)?;
            let check = match &doc.check {
                Some(c) => Some(self.tpl(src, &p("check"), c, Mode::Shell)?),
                None => None,
            };
            let access = if doc.changes.is_some() {
                Access::ReadOnly
            } else {
                Access::Mutating
            };
            (Kind::Ssh { cmd: cmd_t, check }, access)
        } else if let Some(api) = &doc.api {
            let mut args = Vec::new();
            for (k, v) in &api.args {
                args.push((
                    k.clone(),
                    self.tpl(src, &p(&format!("api.args.{k}")), &yaml_text(v), Mode::Text)?,
                ));
            }
            let call = ApiCall {
                command: api.command.clone(),
                args: BTreeMap::new(),
            };
            if !api
                .command
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase())
            {
                self.diags.push(
                    Diagnostic::at(
                        src,
                        &p("api.command"),
                        format!("invalid API command {:?}", api.command),
                    )
                    .with_help("CloudStack commands look like listRouters, rebootRouter"),
                );
            }
            (
                Kind::Api {
                    command: api.command.clone(),
                    args,
                },
                call.access(),
            )
        } else if let Some(w) = doc.wait {
            (Kind::Wait(w.0), Access::ReadOnly)
        } else if let Some(a) = &doc.assert {
            let mut that = Vec::new();
            for (k, e) in a.that.0.iter().enumerate() {
                let at = if a.that.0.len() == 1 {
                    p("assert.that")
                } else {
                    p(&format!("assert.that.{k}"))
                };
                that.push(self.expr(src, &at, e)?);
            }
            let msg = match &a.msg {
                Some(m) => Some(self.tpl(src, &p("assert.msg"), m, Mode::Text)?),
                None => None,
            };
            (Kind::Assert { that, msg }, Access::ReadOnly)
        } else if let Some(set) = &doc.set {
            let mut facts = Vec::new();
            for (k, v) in set {
                facts.push((
                    k.clone(),
                    self.tpl(src, &p(&format!("set.{k}")), &yaml_text(v), Mode::Text)?,
                ));
            }
            (Kind::Set(facts), Access::ReadOnly)
        } else {
            let (mk, value) = module_values[0];
            let at = p(mk.key());
            let spec = match ModuleSpec::from_json(mk, module_args(value)).and_then(|s| s.to_json())
            {
                Ok(j) => j,
                Err(e) => {
                    self.diags.push(
                        Diagnostic::at(src, &at, format!("{}: {e}", mk.key()))
                            .with_label("invalid module arguments"),
                    );
                    return None;
                }
            };
            let mut tpls = Vec::new();
            if let serde_json::Value::Object(map) = &spec {
                for (k, v) in map {
                    if let serde_json::Value::String(s) = v {
                        let t = self.tpl(src, &format!("{at}.{k}"), s, Mode::Text)?;
                        tpls.push((format!("/{k}"), t));
                    }
                }
            }
            // Without templates the arguments are final: check them now, not mid-run.
            if tpls.iter().all(|(_, t)| t.is_static) {
                if let Err(e) = ModuleSpec::from_json(mk, spec.clone()).and_then(|s| s.build()) {
                    self.diags.push(
                        Diagnostic::at(src, &at, format!("{}: {e}", mk.key()))
                            .with_label("invalid module arguments"),
                    );
                    return None;
                }
            }
            (
                Kind::Module {
                    kind: mk,
                    spec,
                    tpls,
                },
                Access::Mutating,
            )
        };

        // How is it undone?
        let mut undo_keys = Vec::new();
        if doc.rollback.is_some() {
            undo_keys.push("rollback");
        }
        if doc.irreversible.is_some() {
            undo_keys.push("irreversible");
        }
        if doc.no_rollback.is_some() {
            undo_keys.push("no_rollback");
        }
        if undo_keys.len() > 1 {
            self.diags.push(Diagnostic::at_key(
                src,
                &p(undo_keys[1]),
                format!(
                    "step {local}: {} exclude each other",
                    undo_keys.join(" and ")
                ),
            ));
        }
        let undo = if access == Access::ReadOnly {
            if let Some(k) = undo_keys.first() {
                self.diags.push(Diagnostic::at_key(
                    src,
                    &p(k),
                    format!("step {local} is read-only; `{k}` has no meaning here"),
                ));
            }
            Undo::ReadOnly
        } else if let Some(why) = &doc.irreversible {
            Undo::Irreversible(why.clone())
        } else if let Some(why) = &doc.no_rollback {
            Undo::NotNeeded(why.clone())
        } else if let Some(rb) = &doc.rollback {
            if matches!(kind, Kind::Module { .. }) {
                self.diags.push(Diagnostic::at_key(src, &p("rollback"), format!("step {local}: a module undoes itself from the captured state; remove `rollback`")));
            }
            match rb {
                RollbackDoc::Ssh(c) => Undo::Ssh(self.tpl(src, &p("rollback"), c, Mode::Shell)?),
                RollbackDoc::Api(a) => {
                    let mut args = Vec::new();
                    for (k, v) in &a.args {
                        args.push((
                            k.clone(),
                            self.tpl(
                                src,
                                &p(&format!("rollback.api.args.{k}")),
                                &yaml_text(v),
                                Mode::Text,
                            )?,
                        ));
                    }
                    Undo::Api {
                        command: a.command.clone(),
                        args,
                    }
                }
            }
        } else if matches!(kind, Kind::Module { .. }) {
            Undo::Auto
        } else {
            let what = match &kind {
                Kind::Api { command, .. } => format!("calls {command}, which changes the cloud"),
                _ => "runs a command that may change the host".to_string(),
            };
            self.diags.push(
                Diagnostic::at(src, &p("id"), format!("step {local} {what} but declares neither how it is undone nor why it needs no undo"))
                    .with_label("mutating step without undo")
                    .with_help("add `rollback: <command>`, `no_rollback: <why no undo is needed>`, `irreversible: <why>`, or `changes: none` if it only reads"),
            );
            return None;
        };
        if doc.changes.is_some() && doc.ssh.is_none() {
            self.diags.push(Diagnostic::at_key(
                src,
                &p("changes"),
                "`changes: none` applies to ssh steps; other kinds are classified by what they do",
            ));
        }
        if doc.check.is_some() && doc.ssh.is_none() {
            self.diags.push(Diagnostic::at_key(
                src,
                &p("check"),
                "`check` applies to ssh steps; modules have their own check",
            ));
        }
        if matches!(phase, Phase::Detect | Phase::Verify) && access == Access::Mutating {
            let sec = if phase == Phase::Detect {
                "detect"
            } else {
                "verify"
            };
            self.diags.push(
                Diagnostic::at(
                    src,
                    &p("id"),
                    format!(
                        "step {local} in `{sec}` changes things; {sec} steps must be read-only"
                    ),
                )
                .with_help(
                    "mark a read-only command with `changes: none`, or move the step to `steps`",
                ),
            );
        }

        let on = match &doc.on {
            Some(o) => Some(self.tpl(src, &p("on"), o, Mode::Text)?),
            None => {
                let needs_target = matches!(kind, Kind::Ssh { .. })
                    || matches!(&kind, Kind::Module { kind, .. } if !kind.runs_on_api());
                if needs_target {
                    self.diags.push(
                        Diagnostic::at(
                            src,
                            &p("id"),
                            format!("step {local} runs on hosts but has no `on:`"),
                        )
                        .with_help("add `on: <host, group or pattern>`"),
                    );
                    return None;
                }
                None
            }
        };
        let mut when = gates.to_vec();
        if let Some(w) = &doc.when {
            when.push(self.expr(src, &p("when"), w)?);
        }
        let until = match &doc.until {
            Some(u) => Some(self.expr(src, &p("until"), u)?),
            None => None,
        };
        let changed_when = match &doc.changed_when {
            Some(u) => Some(self.expr(src, &p("changed_when"), u)?),
            None => None,
        };
        let failed_when = match &doc.failed_when {
            Some(u) => Some(self.expr(src, &p("failed_when"), u)?),
            None => None,
        };
        if access == Access::Mutating && (doc.retries.is_some() || doc.until.is_some()) {
            self.diags.push(
                Diagnostic::at_key(src, &p(if doc.until.is_some() { "until" } else { "retries" }), format!("step {local} changes things; `retries`/`until` apply to read-only steps"))
                    .with_help("poll the outcome with a separate read-only step (changes: none) that has retries and until"),
            );
        }
        if until.is_some() && doc.retries.is_none() {
            self.diags.push(Diagnostic::at_key(
                src,
                &p("until"),
                format!("step {local}: `until` needs `retries` (how many attempts)"),
            ));
        }
        let register = doc.register.clone().unwrap_or_else(|| local.to_string());
        if let Some(max) = doc.max_fail_percentage {
            if max > 100 {
                self.diags.push(Diagnostic::at(
                    src,
                    &p("max_fail_percentage"),
                    "max_fail_percentage is a percentage (0-100)",
                ));
            }
        }
        if doc.serial == Some(0) {
            self.diags.push(Diagnostic::at(
                src,
                &p("serial"),
                "serial must be at least 1",
            ));
        }
        let step = Step {
            id: format!("{}{local}", self.scopes[scope].prefix),
            name: doc.name.clone().unwrap_or_else(|| local.to_string()),
            phase,
            scope,
            on,
            needs: deps,
            when,
            register,
            retries: doc.retries.unwrap_or(0),
            delay: doc.delay.map(|d| d.0).unwrap_or(Duration::from_secs(1)),
            until,
            timeout: doc.timeout.map(|d| d.0),
            ignore_errors: doc.ignore_errors,
            changed_when,
            failed_when,
            undo,
            tags: doc.tags.clone(),
            serial: doc.serial.map(|s| s as usize),
            max_fail_percentage: doc.max_fail_percentage,
            refresh_inventory: doc.refresh_inventory,
            consumes: Vec::new(),
            kind,
            access,
            loc,
            host_vars: BTreeSet::new(),
            reads: BTreeMap::new(),
        };
        self.steps.push(step);
        self.step_paths.push((src.clone(), path.to_string()));
        Some(self.steps.len() - 1)
    }

    /// Ids are unique across a playbook's sections (detect, steps, verify), not just within one.
    fn check_duplicates(&mut self) {
        let mut first: HashMap<&str, usize> = HashMap::new();
        let mut dups = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            if let Some(&f) = first.get(s.id.as_str()) {
                if self.step_paths[f].1.split('.').next() != self.step_paths[i].1.split('.').next()
                {
                    dups.push((f, i));
                }
            } else {
                first.insert(&s.id, i);
            }
        }
        for (f, i) in dups {
            let (src, path) = &self.step_paths[i];
            let first_loc = self.step_paths[f]
                .0
                .loc(&format!("{}.id", self.step_paths[f].1));
            self.diags.push(
                Diagnostic::at(
                    src,
                    &format!("{path}.id"),
                    format!("duplicate step id {:?}", self.steps[i].id),
                )
                .with_help(format!("first used at {first_loc}")),
            );
        }
    }

    fn check_cycles(&mut self) {
        let mut g = DiGraph::<usize, ()>::new();
        let nodes: Vec<_> = (0..self.steps.len()).map(|i| g.add_node(i)).collect();
        for (i, s) in self.steps.iter().enumerate() {
            for &d in &s.needs {
                g.add_edge(nodes[d], nodes[i], ());
            }
        }
        for scc in petgraph::algo::tarjan_scc(&g) {
            let self_loop = scc.len() == 1 && self.steps[g[scc[0]]].needs.contains(&g[scc[0]]);
            if scc.len() > 1 || self_loop {
                let mut idx: Vec<usize> = scc.iter().map(|n| g[*n]).collect();
                idx.sort();
                let names: Vec<String> = idx.iter().map(|&i| self.steps[i].id.clone()).collect();
                let (src, path) = self.step_paths[idx[0]].clone();
                self.diags.push(
                    Diagnostic::at(
                        &src,
                        &format!("{path}.needs"),
                        format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]),
                    )
                    .with_label("part of a cycle"),
                );
            }
        }
    }

    /// Every variable read must be known; results must come from steps that run before.
    fn check_variables(&mut self, applies_when: Option<&Expr>) {
        let n = self.steps.len();
        // ancestors[i] = every step that always finishes before step i starts
        let mut ancestors: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
        for i in 0..n {
            let mut acc = BTreeSet::new();
            for &d in &self.steps[i].needs {
                acc.insert(d);
                acc.extend(ancestors[d].iter().copied());
            }
            ancestors[i] = acc;
        }
        // register names per scope: name -> step indices
        let mut registered: Vec<BTreeMap<String, Vec<usize>>> =
            vec![BTreeMap::new(); self.scopes.len()];
        for (i, s) in self.steps.iter().enumerate() {
            registered[s.scope]
                .entry(s.register.clone())
                .or_default()
                .push(i);
            if let Kind::Set(facts) = &s.kind {
                for (k, _) in facts {
                    registered[s.scope].entry(k.clone()).or_default().push(i);
                }
            }
        }
        for (si, scope) in self.scopes.iter().enumerate() {
            for name in registered[si].keys() {
                if scope.params.contains_key(name) {
                    let (src, path) = registered[si][name]
                        .first()
                        .map(|&i| self.step_paths[i].clone())
                        .unwrap_or_else(|| {
                            (
                                Source::parse("?", "").unwrap_or_else(|_| unreachable!()),
                                String::new(),
                            )
                        });
                    self.diags.push(Diagnostic::at(
                        &src,
                        &path,
                        format!(
                            "result name {name:?} shadows a parameter of {}",
                            scope.playbook
                        ),
                    ));
                }
            }
        }
        let mut diags = Vec::new();
        #[allow(clippy::needless_range_loop)] // i indexes steps, ancestors and step_paths alike
        for i in 0..n {
            let s = &self.steps[i];
            let scope = &self.scopes[s.scope];
            let mut reads: BTreeMap<String, usize> = BTreeMap::new();
            let mut host_vars = BTreeSet::new();
            let own_scope_gate: BTreeSet<String> = scope
                .gate
                .iter()
                .flat_map(|g| g.vars.iter().cloned())
                .collect();
            for (var, loc, is_result_expr) in step_reads(s) {
                if scope.params.contains_key(&var)
                    || scope.vars.iter().any(|(k, _)| *k == var)
                    || BUILTIN_VARS.contains(&var.as_str())
                    || (is_result_expr && (var == "result" || var == s.register))
                {
                    continue;
                }
                // A gate of an enclosing include reads that include's scope; accept its names.
                if !own_scope_gate.contains(&var)
                    && s.when.iter().any(|w| w.vars.contains(&var))
                    && self.name_in_any_parent(s.scope, &var, &registered)
                {
                    continue;
                }
                match registered[s.scope].get(&var) {
                    Some(producers) => match producers.iter().find(|p| ancestors[i].contains(p)) {
                        Some(&p) => {
                            reads.insert(var, p);
                        }
                        None if producers.contains(&i) => {}
                        None => {
                            let p = producers[0];
                            let (src, _) = &self.step_paths[i];
                            diags.push(
                                    Diagnostic::at_loc(src, loc, format!("step {} reads {var:?}, registered by step {}, which does not run before it", s.id, self.steps[p].id))
                                        .with_help(format!("add `needs: [{}]` or move the step after it", self.steps[p].id.rsplit('.').next().unwrap_or(""))),
                                );
                        }
                    },
                    None => {
                        host_vars.insert(var);
                    }
                }
            }
            self.steps[i].reads = reads;
            self.steps[i].host_vars = host_vars;
        }
        // applies_when reads detect results of the root scope
        if let Some(e) = applies_when {
            for var in &e.vars {
                let known = self.scopes[0].params.contains_key(var)
                    || registered[0].contains_key(var)
                    || self.scopes[0].vars.iter().any(|(k, _)| k == var)
                    || BUILTIN_VARS.contains(&var.as_str());
                if !known {
                    let src = &self.loaded.root().source;
                    diags.push(
                        Diagnostic::at(
                            src,
                            "applies_when",
                            format!("applies_when reads undefined variable {var:?}"),
                        )
                        .with_help("it may read parameters, vars and results of detect steps"),
                    );
                }
            }
        }
        for d in diags {
            self.diags.push(d);
        }
    }

    fn name_in_any_parent(
        &self,
        scope: usize,
        var: &str,
        registered: &[BTreeMap<String, Vec<usize>>],
    ) -> bool {
        let mut cur = self.scopes[scope].parent;
        while let Some(p) = cur {
            if self.scopes[p].params.contains_key(var)
                || registered[p].contains_key(var)
                || self.scopes[p].vars.iter().any(|(k, _)| k == var)
            {
                return true;
            }
            cur = self.scopes[p].parent;
        }
        // an include's own gate reads its own scope
        registered[scope].contains_key(var) || self.scopes[scope].params.contains_key(var)
    }
}

/// Every (variable, location, is-a-result-expression) a step reads.
fn step_reads(s: &Step) -> Vec<(String, Loc, bool)> {
    let mut out = Vec::new();
    let mut t = |tpl: &Tpl| {
        for v in &tpl.vars {
            out.push((v.clone(), tpl.loc.clone(), false));
        }
    };
    match &s.kind {
        Kind::Ssh { cmd, check } => {
            t(cmd);
            if let Some(c) = check {
                t(c);
            }
        }
        Kind::Api { args, .. } => args.iter().for_each(|(_, a)| t(a)),
        Kind::Module { tpls, .. } => tpls.iter().for_each(|(_, a)| t(a)),
        Kind::Wait(_) => {}
        Kind::Assert { msg, .. } => {
            if let Some(m) = msg {
                t(m);
            }
        }
        Kind::Set(facts) => facts.iter().for_each(|(_, a)| t(a)),
    }
    match &s.undo {
        Undo::Ssh(tpl) => t(tpl),
        Undo::Api { args, .. } => args.iter().for_each(|(_, a)| t(a)),
        _ => {}
    }
    if let Some(on) = &s.on {
        t(on);
    }
    let mut e = |x: &Expr, result: bool| {
        for v in &x.vars {
            out.push((v.clone(), x.loc.clone(), result));
        }
    };
    if let Kind::Assert { that, .. } = &s.kind {
        that.iter().for_each(|x| e(x, false));
    }
    s.when.iter().for_each(|x| e(x, false));
    if let Some(x) = &s.until {
        e(x, true);
    }
    if let Some(x) = &s.changed_when {
        e(x, true);
    }
    if let Some(x) = &s.failed_when {
        e(x, true);
    }
    // rollback actions may read the step's own result
    let own: Vec<&String> = match &s.undo {
        Undo::Ssh(tpl) => tpl.vars.iter().collect(),
        Undo::Api { args, .. } => args.iter().flat_map(|(_, t)| t.vars.iter()).collect(),
        _ => Vec::new(),
    };
    for v in own {
        if *v == s.register || v == "result" {
            out.retain(|(n, _, _)| n != v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
    fn results_must_come_from_earlier_steps() {
        let e = first_error("name: x\nsteps:\n  - id: a\n    on: h\n    ssh: echo {{ b.stdout }}\n    changes: none\n  - id: b\n    on: h\n    ssh: echo hi\n    changes: none\n");
        assert!(
            e.contains("registered by step b, which does not run before it"),
            "{e}"
        );
    }
}
