//! An `include` step: the included playbook as a scope of its own, its parameter bindings
//! checked against its declarations (unknown, missing required, a static value failing its
//! type or pattern), its `applies_when` gating its steps, its sections compiled in order.
//!
//! Not here: finding and reading the included file (`load`).

use super::program::Phase;
use super::{yaml_text, yaml_to_json, Compiler};
use crate::error::Diagnostic;
use crate::playbook::load::File;
use crate::playbook::model::StepDoc;
use crate::source::Source;
use crate::template::{Expr, Mode};

impl Compiler<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn include(
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
        let Ok(child_path) = crate::playbook::load::find(name, dir.as_deref()) else {
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
}
