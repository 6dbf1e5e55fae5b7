//! Checks over the whole program once every step exists: ids unique across sections,
//! dependency cycles (petgraph), and every variable a template reads being a parameter, a var,
//! a result registered by a step that runs before it, or else a host variable (recorded on the
//! step for `plan` to check against the inventory), and every field read of a result being one
//! its step's kind has, where the value is surely that one result.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use petgraph::graph::DiGraph;

use super::program::{Kind, Step, Undo, BUILTIN_VARS};
use super::Compiler;
use crate::error::Diagnostic;
use crate::source::{Loc, Source};
use crate::template::{AttrRead, Expr, Tpl};

impl Compiler<'_> {
    /// Ids are unique across a playbook's sections (detect, steps, verify), not just within one.
    pub(super) fn check_duplicates(&mut self) {
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

    pub(super) fn check_cycles(&mut self) {
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
    pub(super) fn check_variables(&mut self, applies_when: Option<&Expr>) {
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
                        None if producers.contains(&i) => {
                            diags.extend(fact_read_before_set(
                                &self.step_paths[i].0,
                                s,
                                &var,
                                &loc,
                            ));
                        }
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

/// The fields of a step's result when they are a closed set (`None`: open, or unknown here).
/// What the runner registers: `runner/mod.rs` (`cmd_json`, `api_json`, `NodeResult::simple`),
/// `runner/raw.rs` and `runner/module.rs`.
pub(super) fn result_fields(kind: &Kind) -> Option<&'static [&'static str]> {
    const EVERY: [&str; 3] = ["changed", "failed", "skipped"];
    const SSH: &[&str] = &[
        "rc",
        "signal",
        "stdout",
        "stderr",
        "stdout_lines",
        "dropped_bytes",
        "diff",
        "unreachable",
        "unknown",
        EVERY[0],
        EVERY[1],
        EVERY[2],
    ];
    const API: &[&str] = &[
        "json",
        "items",
        "diff",
        "unreachable",
        "unknown",
        EVERY[0],
        EVERY[1],
        EVERY[2],
    ];
    const MODULE: &[&str] = &["before", "after", "diff", EVERY[0], EVERY[1], EVERY[2]];
    // REPORT_RESULT_FIELDS and the common ones (a test holds the two together)
    const REPORT: &[&str] = &["rows", "facts", "found", EVERY[0], EVERY[1], EVERY[2]];
    Some(match kind {
        Kind::Ssh { .. } => SSH,
        Kind::Api { .. } => API,
        Kind::Module { .. } => MODULE,
        Kind::Wait(_) | Kind::Assert { .. } | Kind::Set(_) => &EVERY,
        Kind::Report(_) => REPORT,
    })
}

impl Compiler<'_> {
    /// `probe.stdoutt` where `probe` is surely one result of a step with a closed set of
    /// fields (its own `result` in `until`/`changed_when`/`failed_when`/`rollback`, or a
    /// result read on the same targets or from the controller) is an error, with did-you-mean.
    /// Results that may be a map by host, `set` facts and API replies' own fields are not
    /// checked here.
    pub(super) fn check_result_fields(&mut self) {
        let mut diags = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            for (_, attrs, _, own) in step_sources(s) {
                for a in attrs {
                    let producer = if own && (a.var == "result" || a.var == s.register) {
                        Some(s)
                    } else {
                        s.reads
                            .get(&a.var)
                            .map(|&p| &self.steps[p])
                            .filter(|p| p.register == a.var && single_result(p, s))
                    };
                    let Some((p, fields)) =
                        producer.and_then(|p| Some((p, result_fields(&p.kind)?)))
                    else {
                        continue;
                    };
                    if fields.contains(&a.attr.as_str()) {
                        continue;
                    }
                    let kind = p.kind.name();
                    let similar = crate::error::similar(&a.attr, fields.iter().copied());
                    let help = crate::error::did_you_mean(&similar).unwrap_or_else(|| {
                        format!("the result of a {kind} step has: {}", fields.join(", "))
                    });
                    let (src, _) = &self.step_paths[i];
                    diags.push(
                        Diagnostic::at_loc(
                            src,
                            a.loc.clone(),
                            format!(
                                "`{}` is the result of step {} ({kind}), which has no field `{}`",
                                a.var, p.id, a.attr
                            ),
                        )
                        .with_len(a.attr.len())
                        .with_label("no such field")
                        .with_help(help),
                    );
                }
            }
        }
        for d in diags {
            self.diags.push(d);
        }
    }
}

/// Whether step `s` surely sees one result of step `p` (not a map by host): `p` runs on the
/// controller, or both run on the same `on` in the same scope.
fn single_result(p: &Step, s: &Step) -> bool {
    match (&p.on, &s.on) {
        (None, _) => true,
        (Some(a), Some(b)) => p.scope == s.scope && a.source == b.source,
        _ => false,
    }
}

/// One template or expression of a step, as [`step_sources`] lists them.
type Read<'a> = (&'a BTreeSet<String>, &'a [AttrRead], &'a Loc, bool);

/// A `set` computes its names in the order written, each seeing the ones before it: a name
/// read by the template of itself or of an earlier name of the same step (and by no step
/// before it) is undefined when it runs.
fn fact_read_before_set(src: &Source, s: &Step, var: &str, loc: &Loc) -> Option<Diagnostic> {
    let Kind::Set(facts) = &s.kind else {
        return None;
    };
    let reader = facts.iter().position(|(_, t)| t.loc == *loc)?;
    let set_at = facts.iter().position(|(name, _)| name == var)?;
    (set_at >= reader).then(|| {
        Diagnostic::at_loc(
            src,
            loc.clone(),
            if set_at == reader {
                format!("{var:?} reads itself, which is not defined while it is computed")
            } else {
                format!(
                    "{:?} reads {var:?}, which this set step computes after it",
                    facts[reader].0
                )
            },
        )
        .with_help(
            "the names of a `set` are computed in the order written, each seeing the ones \
             before it: put the name it reads first, or in an earlier step",
        )
    })
}

/// Every template and expression of a step: (variables, attribute reads, location, whether
/// it sees the step's own result: `until`, `changed_when`, `failed_when`, the rollback).
fn step_sources<'a>(s: &'a Step) -> Vec<Read<'a>> {
    let mut out = Vec::new();
    let mut t = |tpl: &'a Tpl, own: bool| out.push((&tpl.vars, &tpl.attrs[..], &tpl.loc, own));
    match &s.kind {
        Kind::Ssh { cmd, check } => {
            t(cmd, false);
            if let Some(c) = check {
                t(c, false);
            }
        }
        Kind::Api { args, .. } => args.iter().for_each(|(_, a)| t(a, false)),
        Kind::Module { tpls, .. } => tpls.iter().for_each(|(_, a)| t(a, false)),
        Kind::Wait(_) => {}
        Kind::Assert { msg, .. } => {
            if let Some(m) = msg {
                t(m, false);
            }
        }
        Kind::Set(facts) => facts.iter().for_each(|(_, a)| t(a, false)),
        Kind::Report(r) => {
            t(&r.title, false);
            r.facts.iter().for_each(|(_, a)| t(a, false));
            if let Some(e) = &r.empty {
                t(e, false);
            }
            if let Some(super::program::Rows::Tpl(rows)) = &r.rows {
                t(rows, false);
            }
        }
    }
    // rollback actions may read the step's own result
    match &s.undo {
        Undo::Ssh(tpl) => t(tpl, true),
        Undo::Api { args, .. } => args.iter().for_each(|(_, a)| t(a, true)),
        _ => {}
    }
    if let Some(on) = &s.on {
        t(on, false);
    }
    for x in [s.retries.template(), s.delay.template()]
        .into_iter()
        .flatten()
    {
        t(x, false);
    }
    let mut e = |x: &'a Expr, own: bool| out.push((&x.vars, &x.attrs[..], &x.loc, own));
    if let Kind::Assert { that, .. } = &s.kind {
        that.iter().for_each(|x| e(x, false));
    }
    if let Kind::Report(r) = &s.kind {
        if let Some(super::program::Rows::Expr(rows)) = &r.rows {
            e(rows, false);
        }
        // `found` may read the report's own result (`result.rows`).
        if let Some(found) = &r.found {
            e(found, true);
        }
    }
    s.when.iter().for_each(|x| e(x, false));
    for x in [&s.until, &s.changed_when, &s.failed_when]
        .into_iter()
        .flatten()
    {
        e(x, true);
    }
    out
}

/// Every (variable, location, whether it may be the step's own result) a step reads.
fn step_reads(s: &Step) -> Vec<(String, Loc, bool)> {
    step_sources(s)
        .into_iter()
        .flat_map(|(vars, _, loc, own)| vars.iter().map(move |v| (v.clone(), loc.clone(), own)))
        .collect()
}
