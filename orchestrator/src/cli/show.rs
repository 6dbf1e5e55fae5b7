//! `remedy show`: a playbook's parameters, steps and their order, as text for people or as a
//! Graphviz graph (`--format dot`); the order shown is each step's direct predecessors, or every
//! one with `--transitive`. Loading and compiling are `crate::playbook`'s.

use crate::error::{Error, ExitCode};
use crate::plan;
use crate::playbook::{self, Kind, Undo};

use super::output::fail;

/// How `remedy show` prints a playbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowFormat {
    Text,
    Dot,
}

/// Every step that finishes before each step starts: the transitive closure of `needs` (each
/// step's [`playbook::Step::needs`], by step index).
fn predecessors(needs: &[Vec<usize>]) -> Vec<std::collections::BTreeSet<usize>> {
    fn visit(
        i: usize,
        needs: &[Vec<usize>],
        memo: &mut Vec<Option<std::collections::BTreeSet<usize>>>,
    ) {
        if memo[i].is_some() {
            return;
        }
        // Compiled playbooks have no cycles; mark the step first so a cycle could not recurse.
        memo[i] = Some(Default::default());
        let mut all = std::collections::BTreeSet::new();
        for &d in &needs[i] {
            visit(d, needs, memo);
            all.insert(d);
            all.extend(memo[d].iter().flatten().copied());
        }
        memo[i] = Some(all);
    }
    let mut memo = vec![None; needs.len()];
    for i in 0..needs.len() {
        visit(i, needs, &mut memo);
    }
    memo.into_iter().map(Option::unwrap_or_default).collect()
}

/// The steps each step runs after, by index in step order: with `transitive`, every one;
/// otherwise only the direct ones, those not already before another step it needs (the
/// transitive reduction of `needs`, which holds implied edges too: a step after an include
/// needs every step of it).
fn run_after(needs: &[Vec<usize>], transitive: bool) -> Vec<Vec<usize>> {
    let before = predecessors(needs);
    if transitive {
        return before
            .into_iter()
            .map(|b| b.into_iter().collect())
            .collect();
    }
    needs
        .iter()
        .map(|mine| {
            let mut direct: Vec<usize> = mine
                .iter()
                .copied()
                .filter(|&d| !mine.iter().any(|&e| e != d && before[e].contains(&d)))
                .collect();
            direct.sort_unstable();
            direct.dedup();
            direct
        })
        .collect()
}
/// `remedy show`.
pub(super) fn run(name: &str, format: ShowFormat, transitive: bool) -> ExitCode {
    let program = match playbook::load(name).and_then(|l| playbook::compile(&l)) {
        Ok(p) => p,
        Err(d) => return fail(&Error::Invalid(d)),
    };
    let needs: Vec<Vec<usize>> = program.steps.iter().map(|s| s.needs.clone()).collect();
    let after = run_after(&needs, transitive);
    if format == ShowFormat::Dot {
        outln!("digraph \"{}\" {{\n  rankdir=LR;", program.name);
        for s in &program.steps {
            let shape = if s.mutating() { "box" } else { "ellipse" };
            outln!(
                "  \"{}\" [shape={shape}, label=\"{}\\n{}\"];",
                s.id,
                s.id,
                s.kind.name()
            );
        }
        for (s, after) in program.steps.iter().zip(&after) {
            for &n in after {
                outln!("  \"{}\" -> \"{}\";", program.steps[n].id, s.id);
            }
        }
        outln!("}}");
        return ExitCode::Success;
    }
    outln!(
        "{}\n  {}\n",
        program.name,
        program.description.trim().replace('\n', "\n  ")
    );
    outln!("parameters:");
    for (k, p) in program.params() {
        let mut attrs = vec![p.ty.to_string()];
        if p.required {
            attrs.push("required".into());
        }
        if let Some(d) = &p.default {
            attrs.push(format!(
                "default {}",
                if p.secret {
                    "********".into()
                } else {
                    d.to_string()
                }
            ));
        }
        if let Some(re) = &p.pattern {
            attrs.push(format!("pattern {}", re.as_str()));
        }
        if p.secret {
            attrs.push("secret".into());
        }
        let help = p.help.trim();
        if help.is_empty() {
            outln!("  {k:<20} {}", attrs.join(", "));
        } else {
            outln!("  {k:<20} {} — {help}", attrs.join(", "));
        }
    }
    outln!(
        "\nsteps (phase, id, kind, runs on, {}):",
        if transitive {
            "after: every step before it"
        } else {
            "after: the steps it directly follows; --transitive for all"
        }
    );
    for (s, after) in program.steps.iter().zip(&after) {
        let undo = match &s.undo {
            Undo::ReadOnly => "read-only".to_string(),
            Undo::Auto => "undo: automatic".into(),
            Undo::Ssh(_) | Undo::Api { .. } => "undo: rollback".into(),
            Undo::Irreversible(w) => format!("IRREVERSIBLE: {w}"),
            Undo::NotNeeded(w) => format!("no undo needed: {w}"),
        };
        let undo = if s.consumes.is_empty() {
            undo
        } else {
            format!("{undo}; consumes {}", s.consumes.join(", "))
        };
        let on =
            s.on.as_ref()
                .map(|t| t.source.to_string())
                .unwrap_or_else(|| plan::CONTROLLER.into());
        let after: Vec<&str> = after
            .iter()
            .map(|&n| program.steps[n].id.as_str())
            .collect();
        let kind = match &s.kind {
            Kind::Api { command, .. } => format!("api {command}"),
            k => k.name().to_string(),
        };
        outln!(
            "  {:<7} {:<28} {:<24} on {:<20} [{undo}] after: {}",
            format!("{:?}", s.phase).to_lowercase(),
            s.id,
            kind,
            on,
            if after.is_empty() {
                "-".into()
            } else {
                after.join(", ")
            }
        );
    }
    ExitCode::Success
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_after_keeps_direct_predecessors_unless_transitive() {
        // a <- b <- c, and d needs a, b and c (as a step after an include needs all of it).
        let steps = vec![vec![], vec![0], vec![1], vec![0, 1, 2], vec![2, 0]];
        assert_eq!(
            run_after(&steps, false),
            [vec![], vec![0], vec![1], vec![2], vec![2]]
        );
        assert_eq!(
            run_after(&steps, true),
            [vec![], vec![0], vec![0, 1], vec![0, 1, 2], vec![0, 1, 2]]
        );
    }
}
