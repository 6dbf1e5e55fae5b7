//! A scope's declarations: its parameters (name, type, pattern, choices, a default that must
//! pass them) and its `vars`, compiled as templates.
//!
//! Not here: an include's parameter bindings (`include.rs`), values given at run time
//! ([`Param::accept`], called by `plan`).

use std::path::PathBuf;

use indexmap::IndexMap;
use regex::Regex;

use super::program::{Param, Scope};
use super::{yaml_text, yaml_to_json, Compiler, ID_RE};
use crate::error::Diagnostic;
use crate::playbook::load::File;
use crate::playbook::model::ParamDoc;
use crate::source::Source;
use crate::template::{Expr, Mode};

impl Compiler<'_> {
    pub(super) fn scope(
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
}
