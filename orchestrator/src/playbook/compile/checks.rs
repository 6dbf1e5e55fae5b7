//! Checks over the whole program once every step exists: ids unique across sections,
//! dependency cycles (petgraph), and every variable a template reads being a parameter, a var,
//! a result registered by a step that runs before it, or else a host variable (recorded on the
//! step for `plan` to check against the inventory).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use petgraph::graph::DiGraph;

use super::program::{Kind, Step, Undo, BUILTIN_VARS};
use super::Compiler;
use crate::error::Diagnostic;
use crate::source::{Loc, Source};
use crate::template::{Expr, Tpl};

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
        Kind::Report(r) => {
            t(&r.title);
            r.facts.iter().for_each(|(_, a)| t(a));
            if let Some(e) = &r.empty {
                t(e);
            }
            if let Some(super::program::Rows::Tpl(rows)) = &r.rows {
                t(rows);
            }
        }
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
