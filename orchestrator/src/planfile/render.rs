//! A plan for people: `--format human` (a terminal summary) and `--format markdown` (a page
//! to paste into a change ticket). Both are pure functions of the plan file.

use std::fmt::Write as _;

use super::{short, PlannedStep, SavedPlan};
use crate::event::Outcome;
use crate::playbook::Phase;

/// How `show-plan` (and `plan --format`) print a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Markdown,
    Json,
}

/// The plan in `format`; `file` is where it is saved (for the apply command shown).
pub fn render(saved: &SavedPlan, format: Format, file: Option<&str>) -> String {
    match format {
        Format::Human => human(saved, file),
        Format::Markdown => markdown(saved, file),
        Format::Json => saved.to_json(),
    }
}

fn params(saved: &SavedPlan) -> String {
    let p = &saved.plan.shown_params;
    if p.is_empty() {
        return "(none)".into();
    }
    p.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Mutating steps of the Steps phase that have nodes.
fn changing(saved: &SavedPlan) -> impl Iterator<Item = &PlannedStep> {
    saved.plan.steps.iter().filter(|s| {
        s.phase == Phase::Steps
            && s.mutating
            && (!s.nodes.is_empty() || s.targets_after_refresh.is_some())
    })
}

fn apply_command(saved: &SavedPlan, file: Option<&str>) -> String {
    let secrets: Vec<String> = saved
        .plan
        .params
        .given
        .iter()
        .filter(|(_, g)| matches!(g, super::Given::SecretSha256(_)))
        .map(|(k, _)| format!(" -e {k}=..."))
        .collect();
    format!(
        "remedy apply --plan {}{} --expect-id {}",
        file.unwrap_or("PLAN.plan.json"),
        secrets.concat(),
        short(&saved.id)
    )
}

fn summary_line(saved: &SavedPlan) -> String {
    let (change, same, unknown) = saved.plan.counts();
    let hosts: std::collections::BTreeSet<&str> = changing(saved)
        .flat_map(|s| &s.nodes)
        .filter(|n| n.prediction.outcome == Outcome::WouldChange)
        .map(|n| n.target.as_str())
        .collect();
    format!(
        "{change} change(s) on {} target(s); {same} already as wanted; {unknown} decided during the run",
        hosts.len()
    )
}

fn human(saved: &SavedPlan, file: Option<&str>) -> String {
    let b = &saved.plan;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan {} for {} (made by {} on {} at {}; valid until {})",
        short(&saved.id),
        b.playbook.name,
        b.created_by,
        b.created_on,
        b.created_at,
        b.expires_at
    );
    let _ = writeln!(out, "  params: {}", params(saved));
    let _ = writeln!(out, "  inventory: {}", b.inventory.sources.join(", "));
    if let Some(l) = &b.limit {
        let _ = writeln!(out, "  limit: {l}");
    }
    if !b.applies {
        let _ = writeln!(
            out,
            "  nothing to do: applies_when was false when the plan was made"
        );
    }
    for s in changing(saved) {
        if let Some(r) = &s.targets_after_refresh {
            let _ = writeln!(
                out,
                "  {:<12} {} (targets chosen after {r} reads the inventory again)",
                Outcome::Unknown.word(),
                s.id
            );
            continue;
        }
        for n in &s.nodes {
            let _ = writeln!(
                out,
                "  {:<12} {} @ {}",
                n.prediction.outcome.word(),
                s.id,
                n.target
            );
            if n.prediction.outcome == Outcome::WouldChange {
                for l in n.prediction.diff.iter().flat_map(|d| d.lines()) {
                    let _ = writeln!(out, "      {l}");
                }
            }
        }
        if s.irreversible.is_some() {
            let _ = writeln!(out, "      {}", s.undo);
        }
    }
    let _ = writeln!(out, "  {}", summary_line(saved));
    let irreversible = b.irreversible();
    if !irreversible.is_empty() {
        let _ = writeln!(
            out,
            "  IRREVERSIBLE: {}",
            irreversible
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(out, "plan id {}", saved.id);
    if file.is_some() {
        let _ = writeln!(out, "apply it with: {}", apply_command(saved, file));
    }
    out
}

/// A table cell: no pipes or newlines.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// A fenced block, indented to sit inside a list item.
fn fence(out: &mut String, text: &str) {
    fence_at(out, text, "  ")
}

fn fence_at(out: &mut String, text: &str, indent: &str) {
    let ticks = if text.contains("```") { "````" } else { "```" };
    let _ = writeln!(out, "{indent}{ticks}");
    for l in text.trim_end().lines() {
        let _ = writeln!(out, "{indent}{l}");
    }
    let _ = writeln!(out, "{indent}{ticks}");
}

fn markdown(saved: &SavedPlan, file: Option<&str>) -> String {
    let b = &saved.plan;
    let mut out = String::new();
    let _ = writeln!(out, "# Change plan: {}\n", b.playbook.name);
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| Plan id | `{}` |", saved.id);
    let _ = writeln!(
        out,
        "| Playbook | {} (`{}`) |",
        cell(&b.playbook.name),
        cell(&b.playbook.path)
    );
    let _ = writeln!(out, "| Parameters | `{}` |", cell(&params(saved)));
    let _ = writeln!(
        out,
        "| Inventory | {} |",
        b.inventory
            .sources
            .iter()
            .map(|s| format!("`{}`", cell(s)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(l) = &b.limit {
        let _ = writeln!(out, "| Limit | `{}` |", cell(l));
    }
    let _ = writeln!(
        out,
        "| Made by | {} on {}, {} (dry-run `{}` in the audit log) |",
        cell(&b.created_by),
        cell(&b.created_on),
        b.created_at,
        b.run
    );
    let _ = writeln!(out, "| Valid until | {} |", b.expires_at);
    let _ = writeln!(out, "| remedy | {} |\n", b.remedy_version);

    let _ = writeln!(out, "## Summary\n");
    if !b.applies {
        let _ = writeln!(
            out,
            "**Nothing to do.** The playbook's `applies_when` was false when the plan was made: applying it changes nothing, and is refused if the state changed so that it would.\n"
        );
    } else {
        let _ = writeln!(out, "- {}", summary_line(saved));
        if let Some(w) = &b.applies_when {
            let _ = writeln!(
                out,
                "- It applies because its condition held: `{}`",
                cell(w)
            );
        }
    }
    let irreversible = b.irreversible();
    if irreversible.is_empty() {
        let _ = writeln!(
            out,
            "- Everything this plan changes can be undone: if a step fails, remedy undoes the changes already made, newest first.\n"
        );
    } else {
        for s in &irreversible {
            let _ = writeln!(
                out,
                "- **IRREVERSIBLE: step `{}` cannot be undone** ({}). A failure after it leaves it done.",
                s.id,
                cell(s.irreversible.as_deref().unwrap_or(""))
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "Before it acts, `remedy apply --plan` runs every check again and refuses (exit 5) where the state is no longer what is shown here.\n"
    );

    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| Host | Reached through |\n|---|---|");
    for t in &b.targets {
        let _ = writeln!(out, "| `{}` | {} |", cell(&t.host), cell(&t.reached));
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## Changes\n");
    let mut n = 0;
    for s in changing(saved) {
        n += 1;
        let title = s.name.as_deref().unwrap_or(&s.id);
        let _ = writeln!(out, "### {n}. `{}`: {}\n", s.id, title);
        let _ = write!(out, "`{}`", s.kind);
        if !s.when.is_empty() {
            let _ = write!(
                out,
                ", when {}",
                s.when
                    .iter()
                    .map(|w| format!("`{}`", cell(w.trim())))
                    .collect::<Vec<_>>()
                    .join(" and ")
            );
        }
        let _ = writeln!(out, "\n");
        if s.irreversible.is_some() {
            let _ = writeln!(out, "> **{}**\n", s.undo);
        } else {
            let _ = writeln!(out, "Undo: {}\n", s.undo);
        }
        if let Some(r) = &s.targets_after_refresh {
            let _ = writeln!(
                out,
                "Targets: chosen when `{r}` reads the inventory again (it replaces machines, so they are not known yet). The step's command is the playbook's, rendered then.\n"
            );
            continue;
        }
        for node in &s.nodes {
            let p = &node.prediction;
            let note = match p.outcome {
                Outcome::Unknown => " (depends on an earlier change: decided during the run)",
                Outcome::Skipped => " (its `when` is false: it does not run)",
                Outcome::NoChange => " (already as wanted)",
                _ => "",
            };
            let _ = writeln!(out, "- `{}`: **{}**{note}", node.target, p.outcome.word());
            if p.outcome != Outcome::WouldChange {
                continue;
            }
            if let Some(d) = p
                .diff
                .as_deref()
                .filter(|d| !d.starts_with("will run: ") && !d.starts_with("will call: "))
            {
                let _ = writeln!(out, "\n  Change:\n");
                fence(&mut out, d);
            }
            let _ = writeln!(out, "\n  Runs:\n");
            fence(&mut out, &p.actions.join("\n"));
            if !p.undo.is_empty() {
                let _ = writeln!(out, "\n  Undo, computed from the state before:\n");
                fence(&mut out, &p.undo.join("\n"));
            }
            if let Some(pre) = &p.pre {
                let _ = writeln!(
                    out,
                    "\n  Predicted from: `{}`",
                    cell(&serde_json::to_string(pre).unwrap_or_default())
                );
            }
        }
        let _ = writeln!(out);
    }
    if n == 0 {
        let _ = writeln!(out, "(no step changes anything)\n");
    }

    let detect: Vec<_> = b
        .steps
        .iter()
        .flat_map(|s| s.nodes.iter().map(move |n| (s, n)))
        .filter(|(_, n)| n.observed.is_some())
        .collect();
    if !detect.is_empty() {
        let _ = writeln!(
            out,
            "## What the checks saw\n\nThe read-only steps that ran when the plan was made (detection, and the checks of included playbooks).\n"
        );
        let _ = writeln!(out, "| Step | Target | Ran | Saw |\n|---|---|---|---|");
        for (s, node) in detect {
            let Some(o) = &node.observed else { continue };
            let ran = o.action.clone().unwrap_or_default();
            let saw = match (o.rc, &o.summary) {
                (Some(rc), Some(t)) => format!("rc {rc}: {t}"),
                (Some(rc), None) => format!("rc {rc}"),
                (None, Some(t)) => t.clone(),
                (None, None) => String::new(),
            };
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} | {} |",
                s.id,
                node.target,
                if ran.is_empty() {
                    String::new()
                } else {
                    format!("`{}`", cell(&ran))
                },
                cell(&saw)
            );
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "## To apply\n");
    fence_at(&mut out, &apply_command(saved, file), "");
    let _ = writeln!(
        out,
        "\nIt refuses (exit 5, nothing changed) if this file was edited, the plan expired, the playbook, inventory or parameters differ, or the live state drifted from what is shown above."
    );
    out
}
