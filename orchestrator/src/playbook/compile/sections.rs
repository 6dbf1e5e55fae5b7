//! One section (`detect`, `steps` or `verify`) of a file, item by item and in order: step ids
//! (valid, unique in the section), what each item waits for (the previous item, or its
//! `needs`, resolved once the whole section exists) and what it `consumes` (earlier mutating
//! steps of the same section).
//!
//! Not here: compiling one step (`step.rs`) or an include (`include.rs`), ids unique across
//! sections and dependency cycles (`checks.rs`).

use std::collections::{BTreeSet, HashMap};

use regex::Regex;

use super::program::Phase;
use super::{Compiler, PendingNeeds, ID_RE};
use crate::error::Diagnostic;
use crate::playbook::load::File;
use crate::playbook::model::StepDoc;
use crate::source::Source;
use crate::template::Expr;

impl Compiler<'_> {
    /// Compile one section (`detect`, `steps` or `verify`) of a file into steps of `scope`.
    /// `after`: steps the first item waits for; `gates`: conditions inherited from includes.
    pub(super) fn section(
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
}
