//! The terminal side of the event stream: one line per step and target, progress on long waits,
//! and a recap; or, with `--output json`, one JSON event per line. Colour only on a TTY (and
//! never when NO_COLOR is set).

use std::collections::BTreeMap;
use std::io::Write;

use tokio::sync::mpsc;

use crate::event::{Event, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Human,
    Json,
}

fn paint(color: bool, code: &str, text: &str) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn outcome_color(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok | Outcome::NoChange => "32",
        Outcome::Changed | Outcome::WouldChange => "33",
        Outcome::Failed | Outcome::Drifted => "31;1",
        Outcome::FailedIgnored | Outcome::Unknown => "35",
        Outcome::Skipped => "36",
    }
}

/// Consume events until the channel closes; print them.
pub async fn print(rx: mpsc::UnboundedReceiver<Event>, output: Output, color: bool) {
    print_with(rx, output, color, false).await
}

/// [`print`], and with `show_output` the (tail of the) stdout and stderr of every step under
/// its line: `remedy exec` shows each host's output grouped under that host.
pub async fn print_with(
    mut rx: mpsc::UnboundedReceiver<Event>,
    output: Output,
    color: bool,
    show_output: bool,
) {
    let mut counts: BTreeMap<String, BTreeMap<&'static str, usize>> = BTreeMap::new();
    // Lines are written in batches: whatever events are queued, then one flush before waiting
    // for more. A terminal sees every line as soon as the fleet goes quiet; a run of 1,000
    // hosts does not cost a write(2) and a wakeup of the reader per line.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    loop {
        let e = match rx.try_recv() {
            Ok(e) => e,
            Err(mpsc::error::TryRecvError::Empty) => {
                let _ = out.flush();
                match rx.recv().await {
                    Some(e) => e,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        if output == Output::Json {
            if let Ok(line) = serde_json::to_string(&e) {
                let _ = writeln!(out, "{line}");
            }
            continue;
        }
        match &e {
            Event::RunStart {
                run,
                playbook,
                mode,
                plan,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "{} {playbook} ({mode:?}, run {run}{})",
                    paint(color, "1", "remedy"),
                    plan.as_ref()
                        .map(|p| format!(", plan {}", crate::planfile::short(&p.id)))
                        .unwrap_or_default()
                );
            }
            Event::PlanCheck { drift, .. } => {
                let _ = writeln!(
                    out,
                    "  plan check: {}",
                    if drift.is_empty() {
                        "the live state is as planned".to_string()
                    } else {
                        paint(
                            color,
                            "31;1",
                            &format!("{} node(s) differ from the plan", drift.len()),
                        )
                    }
                );
            }
            Event::StepEnd {
                step,
                target,
                outcome,
                duration_ms,
                diff,
                error,
                stdout_tail,
                stderr_tail,
                rc,
                ..
            } => {
                *counts
                    .entry(target.clone())
                    .or_default()
                    .entry(outcome.word())
                    .or_default() += 1;
                let word = format!("{:<12}", outcome.word());
                let _ = writeln!(
                    out,
                    "  {} {step} @ {target} ({:.1}s)",
                    paint(color, outcome_color(*outcome), &word),
                    *duration_ms as f64 / 1000.0
                );
                if let Some(d) = diff {
                    if matches!(outcome, Outcome::WouldChange | Outcome::Changed) {
                        for l in d.lines() {
                            let _ = writeln!(out, "      {l}");
                        }
                    }
                }
                if show_output {
                    if let Some(rc) = rc {
                        let _ = writeln!(out, "      rc={rc}");
                    }
                    for l in stdout_tail.iter().flat_map(|t| t.lines()) {
                        let _ = writeln!(out, "      {l}");
                    }
                    for l in stderr_tail.iter().flat_map(|t| t.lines()) {
                        let _ = writeln!(out, "      {}", paint(color, "2", l));
                    }
                }
                if let Some(err) = error {
                    for l in err.lines() {
                        let _ = writeln!(out, "      {}", paint(color, "31", l));
                    }
                }
            }
            Event::Progress {
                step,
                target,
                message,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "  {} {step} @ {target}: {message}",
                    paint(color, "2", "...")
                );
            }
            Event::InventoryRefresh {
                after_step,
                status,
                added,
                removed,
                changed,
                targets,
                error,
                ..
            } => {
                let mut line = format!("inventory after {after_step}: {}", status.word());
                for (sign, hosts) in [("+", added), ("-", removed), ("~", changed)] {
                    if !hosts.is_empty() {
                        line.push_str(&format!(" {sign}{}", hosts.join(&format!(" {sign}"))));
                    }
                }
                let _ = writeln!(out, "  {} {line}", paint(color, "1", "..."));
                for (step, before, after) in targets {
                    let _ = writeln!(
                        out,
                        "      {step}: {} -> {}",
                        if before.is_empty() {
                            "-".to_string()
                        } else {
                            before.join(", ")
                        },
                        if after.is_empty() {
                            "-".to_string()
                        } else {
                            after.join(", ")
                        }
                    );
                }
                if let Some(err) = error {
                    let _ = writeln!(out, "      {}", paint(color, "31", err));
                }
            }
            Event::RollbackStart { reason, steps, .. } => {
                let _ = writeln!(
                    out,
                    "{} {reason}; undoing {steps} change(s)",
                    paint(color, "31;1", "ROLLBACK")
                );
            }
            Event::UndoEnd {
                step,
                target,
                ok,
                error,
                ..
            } => {
                let word = if *ok { "undone" } else { "NOT UNDONE" };
                let _ = writeln!(
                    out,
                    "  {} {step} @ {target}",
                    paint(
                        color,
                        if *ok { "32" } else { "31;1" },
                        &format!("{word:<12}")
                    )
                );
                if let Some(err) = error {
                    let _ = writeln!(out, "      {err}");
                }
            }
            Event::RunEnd {
                status,
                exit_code,
                not_undone,
                ..
            } => {
                let _ = writeln!(out, "\nrecap:");
                for (t, c) in &counts {
                    let parts: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let _ = writeln!(out, "  {t:<24} {}", parts.join(" "));
                }
                for n in not_undone {
                    let _ = writeln!(out, "  {} {n}", paint(color, "31;1", "left in place:"));
                }
                let _ = writeln!(out, "{} (exit {exit_code})", status);
            }
            _ => {}
        }
    }
    let _ = out.flush();
}

/// What `apply` is about to do, before it asks: the read-only checks counted, every step that
/// may change something listed with its targets and how it is undone.
pub fn plan_text(plan: &crate::plan::Plan) -> String {
    use crate::playbook::{Kind, Phase, Undo};
    use std::fmt::Write as _;
    let steps = &plan.program.steps;
    let live = |i: usize| !plan.targets[i].is_empty();
    let reads = |phase: Phase| {
        (0..steps.len())
            .filter(|&i| live(i) && steps[i].phase == phase && !steps[i].mutating())
            .count()
    };
    let mut out = String::new();
    let _ = writeln!(out, "plan for {}:", plan.program.name);
    let _ = writeln!(
        out,
        "  first {} read-only check(s); then, if it applies{}:",
        reads(Phase::Detect),
        if plan.program.applies_when.is_some() {
            " (applies_when)"
        } else {
            ""
        }
    );
    let mut n = 0;
    for (i, s) in steps.iter().enumerate() {
        if !live(i) || s.phase != Phase::Steps || !s.mutating() {
            continue;
        }
        n += 1;
        let what = match &s.kind {
            Kind::Api { command, .. } => format!("api {command}"),
            k => k.name().to_string(),
        };
        let undo = match &s.undo {
            Undo::Auto => "undo: from the state before".to_string(),
            Undo::Ssh(_) | Undo::Api { .. } => "undo: its rollback action".to_string(),
            Undo::NotNeeded(_) => "no undo needed".to_string(),
            Undo::Irreversible(why) => format!("IRREVERSIBLE: {why}"),
            Undo::ReadOnly => String::new(),
        };
        let mut targets = plan.targets[i].join(", ");
        if let Some(r) = plan.bound_after(i) {
            targets = format!(
                "targets chosen after {} refreshes the inventory",
                steps[r].id
            );
        }
        let when = if s.when.is_empty() { "" } else { " (when ...)" };
        let serial = s
            .serial
            .map(|k| format!(", {k} at a time"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {n:>2}. {}{when}: {what} on {targets}{serial}; {undo}",
            s.id
        );
    }
    if n == 0 {
        let _ = writeln!(out, "      (no step changes anything)");
    }
    let _ = writeln!(
        out,
        "  with {} more read-only check(s) between and after them; a failure undoes the changes, newest first",
        (0..steps.len())
            .filter(|&i| live(i) && steps[i].phase != Phase::Detect && !steps[i].mutating())
            .count()
    );
    out
}
