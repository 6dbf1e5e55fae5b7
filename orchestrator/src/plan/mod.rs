//! The plan: a compiled program bound to an inventory and parameter values, as a DAG of
//! step x target nodes.
//!
//! Owned here: parameter values (command line, defaults, include bindings), target selection
//! (`on:` patterns, `--limit`, `--tags`), host-variable checks, and the dependency edges
//! between nodes. A node of step B on target T waits for step A on T when A runs on T, and for
//! every node of A otherwise; `serial: N` makes each batch of a step wait for the one before.
//! Not here: running anything (runner).

use std::collections::{BTreeMap, BTreeSet};

use indexmap::IndexMap;
use minijinja::value::Value;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value as J;

use crate::error::{Diagnostic, Diagnostics};
use crate::inventory::{Inventory, PatternError};
use crate::playbook::compile::json_text;
use crate::playbook::{Phase, Program};
use crate::redact::Redactor;
use crate::source::Source;

mod missing;

pub use missing::NO_INVENTORY;

/// The name of the controller pseudo-target (API calls, and `assert`/`set`/`wait` without `on`).
pub const CONTROLLER: &str = "localhost";

/// One unit of work: a step on a target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub step: usize,
    pub target: String,
}

/// How a step's targets are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Excluded by `--tags`: no targets.
    TaggedOut,
    /// No `on:`: the controller.
    Controller,
    /// The rendered `on:` pattern.
    Pattern(String),
}

/// Options that shape a plan.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `-e name=value`, in order (later wins).
    pub extra: Vec<(String, String)>,
    /// `--limit PATTERN`.
    pub limit: Option<String>,
    /// `--tags`: run only `steps` carrying one of these (detect and verify always run).
    pub tags: Vec<String>,
    /// `remedy validate`: required parameters may hold a placeholder that skips their checks.
    pub validating: bool,
}

/// The bound, checked plan.
#[derive(Debug, Clone)]
pub struct Plan {
    pub program: Program,
    pub inventory: Inventory,
    /// Parameter and var values per scope.
    pub scope_values: Vec<BTreeMap<String, J>>,
    /// Target host names per step (empty: the step is excluded by tags). Steps after a
    /// `refresh_inventory` step are bound again when it has run ([`Plan::rebind`]).
    pub targets: Vec<Vec<String>>,
    /// How each step's targets are chosen, kept to bind them again after a refresh.
    pub bindings: Vec<Binding>,
    /// `--limit`, kept for the same reason.
    pub limit: Option<String>,
    /// Per step: how many `refresh_inventory` steps run before it (0: bound at plan time).
    pub segments: Vec<usize>,
    /// The `refresh_inventory` steps, in the order they run; the k-th ends segment k.
    pub refreshes: Vec<usize>,
    /// Hosts a refresh dropped from the inventory, as they were: a rollback still tries to
    /// undo on them what the run did there before.
    pub retired: BTreeMap<String, crate::inventory::Host>,
    pub graph: DiGraph<Node, ()>,
    pub index: BTreeMap<Node, NodeIndex>,
    /// Secrets to keep out of output and logs (secret params, resolved inventory secrets).
    pub redactor: Redactor,
    /// SHA-256 of the parameter values (secrets included in the hash, never stored).
    pub params_sha256: String,
}

impl Plan {
    /// A plan with no steps: the reach (inventory, secrets) for replaying recorded undo actions
    /// with `remedy rollback RUN`.
    pub fn for_inventory(inventory: Inventory, redactor: Redactor) -> Plan {
        Plan {
            program: Program {
                name: "rollback".into(),
                description: String::new(),
                templates: crate::template::Templates::new(),
                scopes: Vec::new(),
                steps: Vec::new(),
                applies_when: None,
                files: Vec::new(),
                root: Default::default(),
            },
            inventory,
            scope_values: Vec::new(),
            targets: Vec::new(),
            bindings: Vec::new(),
            limit: None,
            segments: Vec::new(),
            refreshes: Vec::new(),
            retired: BTreeMap::new(),
            graph: DiGraph::new(),
            index: BTreeMap::new(),
            redactor,
            params_sha256: String::new(),
        }
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    /// Nodes in a topological order.
    pub fn order(&self) -> Vec<NodeIndex> {
        petgraph::algo::toposort(&self.graph, None).unwrap_or_default()
    }

    /// Root parameter values, with secrets masked, for display.
    pub fn shown_params(&self) -> BTreeMap<String, String> {
        let root = &self.program.scopes[0];
        root.params
            .iter()
            .filter_map(|(k, p)| {
                let v = self.scope_values[0].get(k)?;
                Some((
                    k.clone(),
                    if p.secret || crate::redact::is_secret_name(k) {
                        Redactor::MASK.to_string()
                    } else {
                        json_text(v)
                    },
                ))
            })
            .collect()
    }
}

fn src_of(program: &Program, scope: usize) -> Option<Source> {
    let path = &program.scopes[scope].path;
    let text = std::fs::read_to_string(path).ok()?;
    Source::parse(path.clone(), text).ok()
}

fn diag_at_loc(
    program: &Program,
    scope: usize,
    loc: &crate::source::Loc,
    msg: String,
) -> Diagnostic {
    match src_of(program, scope) {
        Some(src) => Diagnostic::at_loc(&src, loc.clone(), msg),
        None => {
            let mut d = Diagnostic::new(msg);
            d.loc = Some(loc.clone());
            d
        }
    }
}

/// Context for plan-time rendering in a scope: its params and vars.
pub fn scope_context(values: &BTreeMap<String, J>) -> Value {
    Value::from_serialize(values)
}

/// Whether `tpl` reads any of `names`.
fn reads_any(tpl: &crate::template::Tpl, names: &BTreeSet<String>) -> bool {
    tpl.vars.iter().any(|v| names.contains(v))
}

/// One error per `-e NAME` the playbook does not declare, with the declared names it is
/// probably a misspelling of. Returns the required parameters such an error suggests and
/// that were not given: their own "missing" error would repeat it.
fn unknown_extra(
    program: &Program,
    extra: &IndexMap<String, String>,
    diags: &mut Diagnostics,
) -> BTreeSet<String> {
    let root = &program.scopes[0];
    let declared: Vec<&str> = root.params.keys().map(String::as_str).collect();
    let mut explained = BTreeSet::new();
    for k in extra.keys().filter(|k| !root.params.contains_key(*k)) {
        let suggestions = crate::error::similar(k, declared.iter().copied());
        let mut msg = format!("-e {k}: {} has no parameter {k:?}", program.name);
        if let Some(hint) = crate::error::did_you_mean(&suggestions) {
            msg.push_str(&format!("; {hint}"));
        }
        msg.push_str(&format!(" (it has: {})", declared.join(", ")));
        diags.push(Diagnostic::new(msg));
        if let Some(first) = suggestions.first() {
            let p = &root.params[first];
            if p.required && p.default.is_none() && !extra.contains_key(first) {
                explained.insert(first.clone());
            }
        }
    }
    explained
}

/// A required parameter without a value.
fn missing_param(program: &Program, scope: usize, p: &crate::playbook::Param) -> Diagnostic {
    let name = &p.name;
    diag_at_loc(
        program,
        scope,
        &p.loc,
        format!(
            "missing required parameter {name:?} of {}",
            program.scopes[scope].playbook
        ),
    )
    .with_help(format!(
        "pass -e {name}=...{}",
        if p.help.is_empty() {
            String::new()
        } else {
            format!(" ({})", p.help)
        }
    ))
}

/// Bind a program to an inventory and parameters. No error shows a secret value: errors go
/// through the plan's redactor, which by then knows the secrets and what derives from them.
pub fn build(program: Program, inventory: Inventory, opts: &Options) -> Result<Plan, Diagnostics> {
    let redactor = Redactor::new();
    bind(program, inventory, opts, redactor.clone()).map_err(|mut diags| {
        for d in diags.0.iter_mut() {
            d.message = redactor.redact(&d.message).into_owned();
            for text in [&mut d.label, &mut d.help].into_iter().flatten() {
                *text = redactor.redact(text).into_owned();
            }
        }
        diags
    })
}

/// [`build`], registering secrets with `redactor` (a clone of the caller's: they share them).
fn bind(
    program: Program,
    inventory: Inventory,
    opts: &Options,
    mut redactor: Redactor,
) -> Result<Plan, Diagnostics> {
    let mut diags = Diagnostics::default();

    // --- parameters, scope by scope (parents come before children) ---
    let mut scope_values: Vec<BTreeMap<String, J>> = Vec::new();
    // Per scope, the parameters and vars without a value because of an error already
    // reported: templates reading them are not evaluated (their errors would only repeat it).
    let mut unknown: Vec<BTreeSet<String>> = Vec::new();
    let extra: IndexMap<String, String> = opts.extra.iter().cloned().collect();
    let explained = unknown_extra(&program, &extra, &mut diags);
    for (si, scope) in program.scopes.iter().enumerate() {
        let mut values = BTreeMap::new();
        let mut missing = BTreeSet::new();
        for (name, p) in &scope.params {
            let parent = scope.parent.unwrap_or(0);
            let given: Option<Result<J, String>> = if si == 0 {
                extra.get(name).map(|v| Ok(J::String(v.clone())))
            } else {
                match scope.bindings.get(name) {
                    Some(tpl) if reads_any(tpl, &unknown[parent]) => {
                        missing.insert(name.clone());
                        continue;
                    }
                    Some(tpl) => {
                        let ctx = scope_context(&scope_values[parent]);
                        Some(
                            crate::masked::render(&program.templates, tpl, &ctx, &redactor)
                                .map(J::String)
                                .map_err(|e| e.message),
                        )
                    }
                    None => None,
                }
            };
            let value = match given {
                Some(Ok(J::String(v))) if opts.validating && v == PLACEHOLDER => Some(J::String(v)),
                Some(Ok(v)) => match p.accept(v) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        let msg = format!("parameter {name}: {e}");
                        diags.push(if si == 0 {
                            Diagnostic::new(format!("-e {msg}"))
                        } else {
                            diag_at_loc(&program, si, &p.loc, msg)
                        });
                        None
                    }
                },
                Some(Err(e)) => {
                    diags.push(diag_at_loc(
                        &program,
                        si,
                        &p.loc,
                        format!("parameter {name}: {e}"),
                    ));
                    None
                }
                None => match &p.default {
                    Some(d) => Some(d.clone()),
                    // A misspelt -e already said it.
                    None if p.required && si == 0 && explained.contains(name) => None,
                    None if p.required => {
                        diags.push(missing_param(&program, si, p));
                        None
                    }
                    None => Some(J::Null),
                },
            };
            match value {
                Some(v) => {
                    // Declared secret, or named like one (`api_password`): kept out of every
                    // output. (Not a flag's `true`, which would be masked everywhere.)
                    let named = crate::redact::is_secret_name(name) && !v.is_boolean();
                    if p.secret || named {
                        redactor.add(json_text(&v));
                    }
                    values.insert(name.clone(), v);
                }
                None => {
                    missing.insert(name.clone());
                }
            }
        }
        // vars render with the scope's params
        for (k, tpl) in &scope.vars {
            if reads_any(tpl, &missing) {
                missing.insert(k.clone());
                continue;
            }
            let ctx = scope_context(&values);
            match crate::masked::render(&program.templates, tpl, &ctx, &redactor) {
                Ok(v) => {
                    values.insert(k.clone(), J::String(v));
                }
                Err(e) => {
                    missing.insert(k.clone());
                    diags.push(diag_at_loc(
                        &program,
                        si,
                        &e.loc,
                        format!("vars.{k}: {}", e.message),
                    ))
                }
            }
        }
        scope_values.push(values);
        unknown.push(missing);
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let mut hasher_input = String::new();
    for v in &scope_values {
        hasher_input.push_str(&serde_json::to_string(v).unwrap_or_default());
        hasher_input.push('\n');
    }
    let params_sha256 = crate::playbook::load::hex(&<sha2::Sha256 as sha2::Digest>::digest(
        hasher_input.as_bytes(),
    ));

    crate::cloudstack::register_secrets(&inventory, &mut redactor);

    // --- targets ---
    let limit = opts.limit.clone();
    let no_inventory = missing::no_inventory_given(&inventory);
    let limit_names = match limited(&inventory, limit.as_deref()) {
        Ok(l) => l,
        Err(_) if no_inventory => {
            let l = limit.as_deref().unwrap_or_default();
            let msg = format!("{}: --limit {l} names hosts of one", missing::NO_INVENTORY);
            return Err(Diagnostic::new(msg).into());
        }
        Err(e) => return Err(Diagnostic::new(e).into()),
    };
    let mut bindings: Vec<Binding> = Vec::new();
    for step in &program.steps {
        let tagged_out = step.phase == Phase::Steps
            && !opts.tags.is_empty()
            && !step.tags.iter().any(|t| opts.tags.contains(t));
        if tagged_out {
            bindings.push(Binding::TaggedOut);
            continue;
        }
        let Some(on) = &step.on else {
            bindings.push(Binding::Controller);
            continue;
        };
        let ctx = scope_context(&scope_values[step.scope]);
        match crate::masked::render(&program.templates, on, &ctx, &redactor) {
            Ok(p) => bindings.push(Binding::Pattern(p)),
            Err(e) => {
                diags.push(diag_at_loc(
                    &program,
                    step.scope,
                    &e.loc,
                    format!("step {}: on: {}", step.id, e.message),
                ));
                bindings.push(Binding::TaggedOut);
            }
        }
    }
    let mut targets: Vec<Vec<String>> = Vec::new();
    let mut failures: Vec<(usize, PatternError)> = Vec::new();
    // With no inventory, steps on hosts: (step, pattern).
    let mut hostless: Vec<(usize, String)> = Vec::new();
    for (i, binding) in bindings.iter().enumerate() {
        let selected = select(&inventory, binding, limit_names.as_deref());
        if let (true, Binding::Pattern(p)) = (no_inventory, binding) {
            if selected.as_ref().is_ok_and(|names| !names.is_empty()) {
                // Only the implicit localhost resolves without an inventory.
            } else {
                hostless.push((i, p.clone()));
                targets.push(Vec::new());
                continue;
            }
        }
        match selected {
            Ok(names) => targets.push(names),
            Err(e) => {
                failures.push((i, e));
                targets.push(Vec::new());
            }
        }
    }
    if !hostless.is_empty() {
        let steps: Vec<usize> = hostless.iter().map(|(i, _)| *i).collect();
        let mut patterns: Vec<String> = Vec::new();
        for (_, p) in hostless {
            if !patterns.contains(&p) {
                patterns.push(p);
            }
        }
        // The one thing to fix; anything else reported now could be its consequence.
        return Err(missing::no_inventory(&program, &steps, &patterns).into());
    }
    for d in missing::unknown_targets(&program, &inventory, &scope_values, failures) {
        diags.push(d);
    }

    // --- refresh_inventory splits the run into segments ---
    let (segments, refreshes) = segment(&program);
    for (i, step) in program.steps.iter().enumerate() {
        for &d in &step.needs {
            if segments[d] > segments[i] {
                let r = refreshes[segments[i]];
                diags.push(diag_at_loc(
                    &program,
                    step.scope,
                    &step.loc,
                    format!(
                        "step {} needs {}, which runs after step {} refreshes the inventory",
                        step.id, program.steps[d].id, program.steps[r].id
                    ),
                ).with_help("a step that refreshes the inventory runs after every step before it; move it, or the needs"));
            }
        }
    }

    // --- host variables read by templates must exist on every target ---
    // (The same variable missing on the same hosts is one cause, however many steps read it.)
    let mut lacking: Vec<(MissingVar, Vec<usize>)> = Vec::new();
    for i in 0..program.steps.len() {
        if let Some(cause) = missing_host_var(&program, &inventory, &targets, i) {
            match lacking.iter_mut().find(|(seen, _)| *seen == cause) {
                Some((_, steps)) => steps.push(i),
                None => lacking.push((cause, vec![i])),
            }
        }
    }
    for ((var, missing), steps) in lacking {
        diags.push(host_var_error(&program, &steps, &var, &missing));
    }
    if !diags.is_empty() {
        return Err(diags);
    }

    let (graph, index) = dag(&program, &targets);
    Ok(Plan {
        program,
        inventory,
        scope_values,
        targets,
        bindings,
        limit,
        segments,
        refreshes,
        retired: BTreeMap::new(),
        graph,
        index,
        redactor,
        params_sha256,
    })
}

/// The host names `--limit` allows (`None`: no limit).
fn limited(inventory: &Inventory, limit: Option<&str>) -> Result<Option<Vec<String>>, String> {
    let Some(l) = limit else { return Ok(None) };
    match inventory.select(l) {
        Ok(hosts) => Ok(Some(hosts.into_iter().map(|h| h.name.clone()).collect())),
        Err(e) => Err(format!("--limit {l}: {e}")),
    }
}

/// A step's targets in `inventory`.
fn select(
    inventory: &Inventory,
    binding: &Binding,
    limit: Option<&[String]>,
) -> Result<Vec<String>, PatternError> {
    match binding {
        Binding::TaggedOut => Ok(Vec::new()),
        Binding::Controller => Ok(vec![CONTROLLER.to_string()]),
        Binding::Pattern(pattern) => {
            let hosts = inventory.select(pattern)?;
            let mut names: Vec<String> = hosts.into_iter().map(|h| h.name.clone()).collect();
            if let Some(l) = limit {
                names.retain(|n| l.contains(n));
            }
            Ok(names)
        }
    }
}

/// Steps in the order they run: by phase, then as written.
fn run_order(program: &Program) -> Vec<usize> {
    let mut order: Vec<usize> = (0..program.steps.len()).collect();
    order.sort_by_key(|&i| (program.steps[i].phase, i));
    order
}

/// Per step, how many `refresh_inventory` steps run before it; and those steps, in order.
fn segment(program: &Program) -> (Vec<usize>, Vec<usize>) {
    let mut segments = vec![0; program.steps.len()];
    let mut refreshes = Vec::new();
    for i in run_order(program) {
        segments[i] = refreshes.len();
        if program.steps[i].refresh_inventory {
            refreshes.push(i);
        }
    }
    (segments, refreshes)
}

/// A step reading host variables that some of its targets lack.
fn missing_host_vars(
    program: &Program,
    inventory: &Inventory,
    targets: &[Vec<String>],
    i: usize,
) -> Option<Diagnostic> {
    let (var, missing) = missing_host_var(program, inventory, targets, i)?;
    Some(host_var_error(program, &[i], &var, &missing))
}

/// A host variable and the targets that lack it.
type MissingVar = (String, Vec<String>);

/// The first host variable step `i` reads that some of its targets lack, and those targets.
fn missing_host_var(
    program: &Program,
    inventory: &Inventory,
    targets: &[Vec<String>],
    i: usize,
) -> Option<MissingVar> {
    let step = &program.steps[i];
    step.host_vars.iter().find_map(|var| {
        let missing: Vec<String> = targets[i]
            .iter()
            .filter(|t| inventory.host(t).is_none_or(|h| !h.vars.contains_key(var)))
            .cloned()
            .collect();
        (!missing.is_empty()).then(|| (var.clone(), missing))
    })
}

/// Steps reading a host variable that the same targets lack: one error, at the first step.
fn host_var_error(program: &Program, steps: &[usize], var: &str, missing: &[String]) -> Diagnostic {
    let step = &program.steps[steps[0]];
    let loc = first_loc_of(step, var).unwrap_or(step.loc.clone());
    diag_at_loc(
        program,
        step.scope,
        &loc,
        format!(
            "{}: undefined variable {var:?}: not a parameter, var or registered result, and {} {} no such variable",
            missing::who(program, steps),
            missing.join(", "),
            if missing.len() == 1 { "has" } else { "have" }
        ),
    )
    .with_label("undefined")
    .with_help(format!(
        "parameters of {}: {}",
        program.scopes[step.scope].playbook,
        program.scopes[step.scope]
            .params
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The step x target nodes and their edges.
fn dag(
    program: &Program,
    targets: &[Vec<String>],
) -> (DiGraph<Node, ()>, BTreeMap<Node, NodeIndex>) {
    let mut graph = DiGraph::new();
    let mut index = BTreeMap::new();
    for (i, ts) in targets.iter().enumerate() {
        for t in ts {
            let node = Node {
                step: i,
                target: t.clone(),
            };
            let ix = graph.add_node(node.clone());
            index.insert(node, ix);
        }
    }
    let at = |step: usize, target: &str| {
        index[&Node {
            step,
            target: target.to_string(),
        }]
    };
    for (i, step) in program.steps.iter().enumerate() {
        for t in &targets[i] {
            let me = at(i, t);
            for dep in effective_needs(program, targets, step.needs.clone()) {
                if targets[dep].contains(t) {
                    graph.add_edge(at(dep, t), me, ());
                } else {
                    for dt in &targets[dep] {
                        graph.add_edge(at(dep, dt), me, ());
                    }
                }
            }
        }
        if let Some(n) = step.serial {
            let batches: Vec<&[String]> = targets[i].chunks(n.max(1)).collect();
            for w in batches.windows(2) {
                for a in w[0] {
                    for b in w[1] {
                        graph.add_edge(at(i, a), at(i, b), ());
                    }
                }
            }
        }
    }
    (graph, index)
}

/// A later step whose targets a refresh changed: its id, the targets before, and after.
pub type TargetChange = (String, Vec<String>, Vec<String>);

impl Plan {
    /// A host of the inventory, or one a refresh dropped (for undoing what was done there).
    pub fn host(&self, name: &str) -> Option<&crate::inventory::Host> {
        self.inventory.host(name).or_else(|| self.retired.get(name))
    }

    /// The `refresh_inventory` step after which `step`'s targets are chosen (`None`: at plan
    /// time).
    pub fn bound_after(&self, step: usize) -> Option<usize> {
        match self.segments.get(step) {
            Some(&k) if k > 0 => self.refreshes.get(k - 1).copied(),
            _ => None,
        }
    }

    /// After the `refresh_inventory` step `after` has run: the inventory as read again, and
    /// every step that runs after it bound to the machines it names. Steps before keep their
    /// targets (and what they did). Returns the steps whose targets changed, with old and new.
    pub fn rebind(
        &mut self,
        inventory: Inventory,
        after: usize,
    ) -> Result<Vec<TargetChange>, String> {
        let k = self.segments[after];
        let limit = limited(&inventory, self.limit.as_deref())?;
        let mut targets = self.targets.clone();
        let mut changed = Vec::new();
        let later = self
            .program
            .steps
            .iter()
            .zip(&self.bindings)
            .zip(&self.segments);
        for (((step, binding), _), old) in later
            .zip(targets.iter_mut())
            .filter(|((_, k2), _)| **k2 > k)
        {
            let names = select(&inventory, binding, limit.as_deref())
                .map_err(|e| format!("step {}: {e}", step.id))?;
            if names != *old {
                changed.push((step.id.clone(), old.clone(), names.clone()));
            }
            *old = names;
        }
        for i in 0..self.program.steps.len() {
            if self.segments[i] > k {
                if let Some(d) = missing_host_vars(&self.program, &inventory, &targets, i) {
                    return Err(d.message);
                }
            }
        }
        let (graph, index) = dag(&self.program, &targets);
        for h in self.inventory.hosts() {
            if inventory.host(&h.name).is_none() {
                self.retired.insert(h.name.clone(), h.clone());
            }
        }
        self.targets = targets;
        self.graph = graph;
        self.index = index;
        self.inventory = inventory;
        Ok(changed)
    }
}

/// A step excluded by tags passes its dependencies on to the steps that need it.
fn effective_needs(program: &Program, targets: &[Vec<String>], needs: Vec<usize>) -> Vec<usize> {
    let mut out = Vec::new();
    let mut stack = needs;
    let mut seen = std::collections::BTreeSet::new();
    while let Some(d) = stack.pop() {
        if !seen.insert(d) {
            continue;
        }
        if targets[d].is_empty() {
            stack.extend(program.steps[d].needs.iter().copied());
        } else {
            out.push(d);
        }
    }
    out.sort();
    out
}

fn first_loc_of(step: &crate::playbook::Step, var: &str) -> Option<crate::source::Loc> {
    use crate::playbook::Kind;
    let tpls: Vec<&crate::template::Tpl> = match &step.kind {
        Kind::Ssh { cmd, check } => std::iter::once(cmd).chain(check.iter()).collect(),
        Kind::Api { args, .. } => args.iter().map(|(_, t)| t).collect(),
        Kind::Module { tpls, .. } => tpls.iter().map(|(_, t)| t).collect(),
        Kind::Set(f) => f.iter().map(|(_, t)| t).collect(),
        Kind::Assert { msg, .. } => msg.iter().collect(),
        Kind::Report(r) => std::iter::once(&r.title)
            .chain(r.facts.iter().map(|(_, t)| t))
            .chain(r.empty.iter())
            .chain(match &r.rows {
                Some(crate::playbook::Rows::Tpl(t)) => Some(t),
                _ => None,
            })
            .collect(),
        Kind::Wait(_) => vec![],
    };
    tpls.into_iter()
        .find(|t| t.vars.contains(var))
        .map(|t| t.loc.clone())
        .or_else(|| {
            step.when
                .iter()
                .find(|e| e.vars.contains(var))
                .map(|e| e.loc.clone())
        })
}

/// Load, compile and (when an inventory is given) plan a playbook: everything `remedy
/// validate` checks. Parameters are checked only when `opts.extra` names them or defaults exist;
/// missing required root parameters are not an error here.
pub fn validate(playbook: &str, inventory: Option<&Inventory>) -> Result<Program, Diagnostics> {
    let loaded = crate::playbook::load(playbook)?;
    let program = crate::playbook::compile(&loaded)?;
    let Some(inv) = inventory else {
        return Ok(program);
    };
    // Fill required root params with a placeholder that satisfies their declaration, so the
    // rest of the plan can be checked.
    let mut extra = Vec::new();
    for (k, p) in program.params() {
        if p.required {
            extra.push((k.clone(), placeholder(p)));
        }
    }
    let reloaded = crate::playbook::compile(&loaded)?;
    let opts = Options {
        extra,
        validating: true,
        ..Default::default()
    };
    match build(reloaded, inv.clone(), &opts) {
        Ok(_) => Ok(program),
        Err(d) => {
            // An `on:` that renders a required parameter's placeholder names no host: that is
            // not the playbook's fault.
            let real: Vec<Diagnostic> =
                d.0.into_iter()
                    .filter(|x| {
                        !x.message.contains(PLACEHOLDER)
                            && !x.message.contains(PLACEHOLDER_GROUP)
                            // targets chosen by optional parameters left empty
                            && !x.message.ends_with(EMPTY_PATTERN)
                    })
                    .collect();
            if real.is_empty() {
                Ok(program)
            } else {
                Err(Diagnostics(real))
            }
        }
    }
}

const PLACEHOLDER: &str = "__remedy_validate__";
/// How the inventory refuses an empty host pattern.
const EMPTY_PATTERN: &str = "empty host pattern";
/// The placeholder as a group name (`group_name` keeps only letters, digits and single `_`).
const PLACEHOLDER_GROUP: &str = "_remedy_validate";

fn placeholder(p: &crate::playbook::Param) -> String {
    use crate::playbook::model::ParamType;
    if let Some(c) = p.choices.as_ref().and_then(|c| c.first()) {
        return json_text(c);
    }
    match p.ty {
        ParamType::Bool => "false".into(),
        // Strings, ints and lists: a value the checks let through (see `validating`).
        _ => PLACEHOLDER.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// A one-file playbook, compiled (shared with the tests of [`super::missing`]).
    pub(super) fn program(text: &str) -> Program {
        let file = crate::playbook::load::parse(Path::new("t.yml"), text, text.as_bytes())
            .expect("parses");
        let mut files = BTreeMap::new();
        files.insert(PathBuf::from("t.yml"), file);
        crate::playbook::compile(&crate::playbook::Loaded {
            root: PathBuf::from("t.yml"),
            files,
        })
        .expect("compiles")
    }

    /// An inventory as the CloudStack source would generate it, with no files.
    fn inventory(ssvm: &str) -> Inventory {
        let yaml = format!(
            "all:\n  children:\n    hypervisors:\n      hosts:\n        kvm01: {{}}\n    \
             ssvm:\n      hosts:\n        {ssvm}: {{ remedy_jump: kvm01 }}\n"
        );
        Inventory::load_with_generated(&[], Some(&yaml)).expect("loads")
    }

    const REPLACE: &str = "name: t
detect:
  - id: old
    on: ssvm
    ssh: ssvm-check.sh
    changes: none
steps:
  - id: destroy
    api: { command: destroySystemVm, args: { id: x } }
    irreversible: replaced by CloudStack
  - id: replacement
    api: { command: listSystemVms }
    refresh_inventory: true
  - id: after
    on: hypervisors
    ssh: uptime
    changes: none
verify:
  - id: check
    on: ssvm
    ssh: ssvm-check.sh
    changes: none
";

    fn ids(plan: &Plan, step: &str) -> Vec<String> {
        let i = plan
            .program
            .steps
            .iter()
            .position(|s| s.id == step)
            .unwrap();
        plan.targets[i].clone()
    }

    #[test]
    fn a_refresh_splits_the_steps_into_segments() {
        let plan = build(program(REPLACE), inventory("s-1-VM"), &Options::default()).unwrap();
        let seg: Vec<(String, usize)> = plan
            .program
            .steps
            .iter()
            .zip(&plan.segments)
            .map(|(s, k)| (s.id.clone(), *k))
            .collect();
        assert_eq!(
            seg,
            [
                ("old", 0),
                ("destroy", 0),
                ("replacement", 0),
                ("after", 1),
                ("check", 1)
            ]
            .map(|(s, k)| (s.to_string(), k))
        );
        let replacement = 2;
        assert_eq!(plan.refreshes, vec![replacement]);
        assert_eq!(plan.bound_after(4), Some(replacement));
        assert_eq!(plan.bound_after(1), None);
    }

    #[test]
    fn rebind_moves_only_the_later_steps_to_the_new_machines() {
        let mut plan = build(program(REPLACE), inventory("s-1-VM"), &Options::default()).unwrap();
        assert_eq!(ids(&plan, "check"), ["s-1-VM"]);
        let changed = plan.rebind(inventory("s-3-VM"), 2).unwrap();
        assert_eq!(
            changed,
            vec![(
                "check".to_string(),
                vec!["s-1-VM".to_string()],
                vec!["s-3-VM".to_string()]
            )]
        );
        // Detect ran on the old machine; that stays as it was.
        assert_eq!(ids(&plan, "old"), ["s-1-VM"]);
        assert_eq!(ids(&plan, "check"), ["s-3-VM"]);
        assert!(plan.index.contains_key(&Node {
            step: 4,
            target: "s-3-VM".into()
        }));
        assert!(!plan.index.contains_key(&Node {
            step: 4,
            target: "s-1-VM".into()
        }));
        assert!(plan.inventory.host("s-3-VM").is_some());
        assert!(plan.inventory.host("s-1-VM").is_none());
        assert!(plan.host("s-1-VM").is_some(), "kept for a rollback");
        // The later nodes still wait for the ones before them.
        let check = plan.index[&Node {
            step: 4,
            target: "s-3-VM".into(),
        }];
        let before: Vec<&Node> = plan
            .graph
            .neighbors_directed(check, petgraph::Direction::Incoming)
            .map(|p| &plan.graph[p])
            .collect();
        assert!(before.iter().any(|n| n.step == 3), "{before:?}");
    }

    #[test]
    fn rebind_fails_when_a_later_pattern_names_nothing_now() {
        let mut plan = build(program(REPLACE), inventory("s-1-VM"), &Options::default()).unwrap();
        let no_ssvm = Inventory::load_with_generated(
            &[],
            Some("all:\n  children:\n    hypervisors:\n      hosts:\n        kvm01: {}\n"),
        )
        .unwrap();
        let e = plan.rebind(no_ssvm, 2).unwrap_err();
        assert!(e.starts_with("step check: "), "{e}");
        assert!(e.contains("ssvm"), "{e}");
        assert_eq!(ids(&plan, "check"), ["s-1-VM"], "left as it was");
    }

    #[test]
    fn a_step_cannot_need_one_that_runs_after_a_refresh() {
        let text = REPLACE.replace(
            "  - id: destroy\n",
            "  - id: early\n    needs: [after]\n    wait: 1s\n  - id: destroy\n    needs: [old]\n",
        );
        let e = build(program(&text), inventory("s-1-VM"), &Options::default()).unwrap_err();
        let msg = &e.0[0].message;
        assert!(
            msg.contains(
                "step early needs after, which runs after step replacement refreshes the inventory"
            ),
            "{msg}"
        );
    }

    /// A root playbook that derives a group from its parameters and passes it, and another
    /// parameter, to an include: written to a temporary directory and loaded from there.
    fn with_include() -> (tempfile::TempDir, Program) {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("root.yml"),
            "name: root
params:
  vpc: { required: true }
  vlan_range: { required: true, pattern: \"[0-9]+(-[0-9]+)?\" }
vars:
  router_group: \"{{ vpc | group_name('vpc') }}\"
  label: fixed
steps:
  - id: child
    include: child
    params:
      routers: \"{{ router_group }}\"
      range: \"{{ vlan_range }}\"
      note: \"{{ label }}\"
",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("child.yml"),
            "name: child
params:
  routers: { required: true }
  range: { required: true }
  note: { required: true }
vars:
  shown: \"{{ note | upper }}\"
steps:
  - id: up
    on: \"{{ routers }}\"
    ssh: ip link set eth1 up
    rollback: ip link set eth1 down
",
        )
        .expect("write");
        let root = dir.path().join("root.yml");
        let loaded = crate::playbook::load(root.to_str().expect("utf-8")).expect("loads");
        let program = crate::playbook::compile(&loaded).expect("compiles");
        (dir, program)
    }

    fn extra(pairs: &[(&str, &str)]) -> Options {
        Options {
            extra: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn missing_parameters_stop_before_templates_that_read_them() {
        let (dir, program) = with_include();
        let e = build(program, inventory("s-1-VM"), &Options::default()).unwrap_err();
        let root = dir.path().join("root.yml");
        let headlines: Vec<String> = e.0.iter().map(Diagnostic::headline).collect();
        assert_eq!(
            headlines,
            [
                format!(
                    "{}:3:3: missing required parameter \"vpc\" of root",
                    root.display()
                ),
                format!(
                    "{}:4:3: missing required parameter \"vlan_range\" of root",
                    root.display()
                ),
            ],
            "only the parameters: not vars.router_group, nor the include's routers and range"
        );
    }

    #[test]
    fn an_invalid_parameter_is_its_only_error() {
        let (_dir, program) = with_include();
        let e = build(
            program,
            inventory("s-1-VM"),
            &extra(&[("vpc", "web-vpc"), ("vlan_range", "lots")]),
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 1, "{:?}", e.0);
        assert!(
            e.0[0].message.starts_with("-e parameter vlan_range: "),
            "{}",
            e.0[0].message
        );
    }

    #[test]
    fn a_misspelt_parameter_is_one_error_with_a_suggestion() {
        let (_dir, program) = with_include();
        let e = build(
            program,
            inventory("s-1-VM"),
            &extra(&[("vpc", "web-vpc"), ("vlan_rang", "1000-1099")]),
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 1, "{:?}", e.0);
        assert_eq!(
            e.0[0].message,
            "-e vlan_rang: root has no parameter \"vlan_rang\"; did you mean \"vlan_range\"? \
             (it has: vpc, vlan_range)",
            "and no \"missing vlan_range\" besides"
        );
        // Nothing close: no guess, and the missing one is its own error.
        let (_dir, program) = with_include();
        let e = build(
            program,
            inventory("s-1-VM"),
            &extra(&[("vpc", "web-vpc"), ("range", "1000-1099")]),
        )
        .unwrap_err();
        let messages: Vec<&str> = e.0.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "-e range: root has no parameter \"range\" (it has: vpc, vlan_range)",
                "missing required parameter \"vlan_range\" of root",
            ]
        );
    }

    #[test]
    fn a_host_variable_missing_for_several_steps_is_one_error() {
        let text = "name: t
steps:
  - id: a
    on: hypervisors
    ssh: echo {{ cs.id }}
    changes: none
  - id: b
    on: hypervisors
    ssh: echo {{ cs.name }}
    changes: none
  - id: c
    on: ssvm
    ssh: echo {{ cs.id }}
    changes: none
";
        let e = build(program(text), inventory("s-1-VM"), &Options::default()).unwrap_err();
        let messages: Vec<&str> = e.0.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "2 steps (a, b): undefined variable \"cs\": not a parameter, var or registered \
                 result, and kvm01 has no such variable",
                "step c: undefined variable \"cs\": not a parameter, var or registered result, \
                 and s-1-VM has no such variable",
            ]
        );
        assert_eq!(e.0[0].loc.as_ref().map(|l| l.pos.line), Some(5));
    }
}
