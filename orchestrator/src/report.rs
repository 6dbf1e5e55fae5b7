//! The terminal side of the event stream: one line per step and target, and a recap; or, with
//! `--output json`, one JSON event per line. Colour only on a TTY (and never when NO_COLOR is
//! set).
//!
//! While steps run, a terminal (stdout a TTY, human output) also shows a status area under the
//! lines: each running step with what it waits for (its command or API call, its async job,
//! a retry) and for how long, or, with more than [`MAX_NODE_LINES`] running at once, one line
//! of counts. The area is cleared when the run ends. Off a terminal (JSON, a pipe, a file)
//! there is no area: every [`STILL_RUNNING_EVERY`] a `still running` line (or event) names the
//! steps running, so the log of a long run is not silent.
//!
//! The wording is made by pure functions ([`Activity::area`], [`node_status`],
//! [`compact_line`], [`still_running_text`]); indicatif only draws it. Everything shown comes
//! from the events, which the sink has redacted.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indexmap::IndexMap;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::event::{Event, Outcome, Running};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Human,
    Json,
}

/// Off a terminal: how often the steps still running are named.
pub const STILL_RUNNING_EVERY: Duration = Duration::from_secs(30);

/// On a terminal: with more steps running than this, one line of counts instead of one each.
pub const MAX_NODE_LINES: usize = 8;

/// On a terminal: how often the status area is drawn again (the elapsed seconds tick).
const REDRAW_EVERY: Duration = Duration::from_millis(250);

/// On a terminal: a step shows in the area once it has run this long (the many that take a
/// moment would only flicker there).
const SHOW_AFTER: Duration = Duration::from_millis(500);

/// Waiting texts longer than this are cut (the terminal's width cuts the rest).
const WAITING_CHARS: usize = 72;

/// Lines are written in batches of at most this many bytes.
const BATCH: usize = 64 * 1024;

/// `text` on one line (runs of white space made one space), cut to `max` characters with `…`.
pub fn shorten(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    let mut cut = cut.trim_end().to_string();
    cut.push('…');
    cut
}

/// A duration as the status area shows it: `7s`, `3m05s`, `1h02m`.
pub fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// One running step's line: how long it has run, the step and target, what it waits for,
/// e.g. `  12s implement @ localhost: restartVPC job 4f2c...`. The time comes first so that a
/// terminal too narrow for the rest still shows it.
pub fn node_status(step: &str, target: &str, waiting: &str, running_for: Duration) -> String {
    let mut line = format!("{:>5} {step} @ {target}", elapsed(running_for));
    if !waiting.is_empty() {
        line.push_str(": ");
        line.push_str(waiting);
    }
    line
}

/// The line shown instead of one per step when many run at once, e.g.
/// `running 37 · done 120 · failed 2 of 400 · longest: restartVPC @ localhost 41s`; the total
/// counts the nodes of the phases queued so far (later phases, and steps that turn out not to
/// apply, are not known yet).
pub fn compact_line(
    running: usize,
    done: usize,
    failed: usize,
    total: usize,
    longest: Option<(&str, &str, Duration)>,
) -> String {
    let total = total.max(running + done + failed);
    let mut line = format!("running {running} · done {done} · failed {failed} of {total}");
    if let Some((step, target, d)) = longest {
        line.push_str(&format!(" · longest: {step} @ {target} {}", elapsed(d)));
    }
    line
}

/// The `still running` text off a terminal: a heading, then each step still running (the
/// longest first, at most [`MAX_NODE_LINES`], then how many more).
pub fn still_running_text(
    elapsed_s: u64,
    running: &[Running],
    done: usize,
    failed: usize,
) -> String {
    let mut text = format!(
        "  ... still running after {} (done {done}, failed {failed}):\n",
        elapsed(Duration::from_secs(elapsed_s))
    );
    for r in running.iter().take(MAX_NODE_LINES) {
        let line = node_status(&r.step, &r.target, &r.waiting, Duration::from_secs(r.for_s));
        text.push_str(&format!("    {line}\n"));
    }
    if running.len() > MAX_NODE_LINES {
        text.push_str(&format!(
            "    and {} more\n",
            running.len() - MAX_NODE_LINES
        ));
    }
    text
}

/// One step running on one target.
#[derive(Debug, Clone)]
struct Node {
    since: Instant,
    waiting: String,
}

/// What the events say is running now, and how many nodes have finished.
#[derive(Debug, Default)]
pub struct Activity {
    run: String,
    started: Option<Instant>,
    /// By (step, target), in the order they started. An undo is under `undo <step>`.
    nodes: IndexMap<(String, String), Node>,
    done: usize,
    failed: usize,
    /// Nodes queued so far ([`Event::Queued`]).
    total: usize,
}

impl Activity {
    /// Takes in one event, seen at `now`.
    pub fn see(&mut self, e: &Event, now: Instant) {
        let mut waits = |step: String, target: &str, waiting: String| {
            let node = self
                .nodes
                .entry((step, target.to_string()))
                .or_insert(Node {
                    since: now,
                    waiting: String::new(),
                });
            node.waiting = shorten(&waiting, WAITING_CHARS);
        };
        match e {
            Event::RunStart { run, .. } => {
                *self = Activity {
                    run: run.clone(),
                    started: Some(now),
                    ..Activity::default()
                };
            }
            Event::StepStart {
                step,
                target,
                action,
                ..
            } => waits(step.clone(), target, action.clone().unwrap_or_default()),
            Event::Progress {
                step,
                target,
                message,
                ..
            } => waits(step.clone(), target, message.clone()),
            Event::UndoStart {
                step,
                target,
                actions,
                ..
            } => {
                let what = actions
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" && ");
                waits(format!("undo {step}"), target, what)
            }
            Event::StepEnd {
                step,
                target,
                outcome,
                ..
            } => {
                self.nodes.shift_remove(&(step.clone(), target.clone()));
                match outcome {
                    Outcome::Failed | Outcome::FailedIgnored | Outcome::Drifted => self.failed += 1,
                    _ => self.done += 1,
                }
            }
            Event::UndoEnd { step, target, .. } => {
                self.nodes
                    .shift_remove(&(format!("undo {step}"), target.clone()));
            }
            Event::Queued { nodes, .. } => self.total += nodes,
            Event::RunEnd { .. } => self.nodes.clear(),
            _ => {}
        }
    }

    /// The status area's lines at `now`: one per step running for half a second or more (in
    /// the order they started), or with more than [`MAX_NODE_LINES`] running the one line of
    /// counts. Empty when nothing runs.
    pub fn area(&self, now: Instant) -> Vec<String> {
        if self.nodes.len() > MAX_NODE_LINES {
            let longest = self
                .nodes
                .iter()
                .min_by_key(|(_, n)| n.since)
                .map(|((s, t), n)| (s.as_str(), t.as_str(), now - n.since));
            return vec![compact_line(
                self.nodes.len(),
                self.done,
                self.failed,
                self.total,
                longest,
            )];
        }
        self.nodes
            .iter()
            .filter(|(_, n)| now - n.since >= SHOW_AFTER)
            .map(|((step, target), n)| node_status(step, target, &n.waiting, now - n.since))
            .collect()
    }

    /// A `still_running` event at `now`, when anything runs: the steps, longest first.
    pub fn still_running(&self, now: Instant) -> Option<Event> {
        if self.nodes.is_empty() {
            return None;
        }
        let mut running: Vec<Running> = self
            .nodes
            .iter()
            .map(|((step, target), n)| Running {
                step: step.clone(),
                target: target.clone(),
                for_s: (now - n.since).as_secs(),
                waiting: n.waiting.clone(),
            })
            .collect();
        running.sort_by_key(|r| std::cmp::Reverse(r.for_s));
        Some(Event::StillRunning {
            run: self.run.clone(),
            elapsed_s: self.started.map(|s| (now - s).as_secs()).unwrap_or(0),
            running,
            done: self.done,
            failed: self.failed,
        })
    }
}

/// The status area on a terminal: one indicatif line per [`Activity::area`] line.
struct Screen {
    bars: MultiProgress,
    lines: Vec<ProgressBar>,
    style: ProgressStyle,
    frame: usize,
}

impl Screen {
    const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

    fn new() -> Screen {
        Screen {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            lines: Vec::new(),
            style: ProgressStyle::with_template("{wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            frame: 0,
        }
    }

    /// Shows `text`, one bar per line; `tick` turns the spinner.
    fn draw(&mut self, text: &[String], tick: bool) {
        while self.lines.len() > text.len() {
            if let Some(bar) = self.lines.pop() {
                bar.finish_and_clear();
                self.bars.remove(&bar);
            }
        }
        while self.lines.len() < text.len() {
            let bar = self
                .bars
                .add(ProgressBar::new_spinner().with_style(self.style.clone()));
            self.lines.push(bar);
        }
        if tick {
            self.frame = (self.frame + 1) % Self::SPINNER.len();
        }
        let spin = Self::SPINNER[self.frame];
        for (bar, line) in self.lines.iter().zip(text) {
            bar.set_message(format!("{spin} {line}"));
        }
    }

    /// Writes finished lines above the area without tearing it.
    fn write<W: Write>(&self, out: &mut W, buf: &[u8]) {
        self.bars.suspend(|| {
            let _ = out.write_all(buf);
            let _ = out.flush();
        });
    }

    fn clear(&mut self) {
        self.draw(&[], false);
        let _ = self.bars.clear();
    }
}

/// Consume events until the channel closes; print them.
pub async fn print(rx: mpsc::UnboundedReceiver<Event>, output: Output, color: bool) {
    print_with(rx, output, color, false).await
}

/// [`print`], and with `show_output` the (tail of the) stdout and stderr of every step under
/// its line: `remedy exec` shows each host's output grouped under that host.
pub async fn print_with(
    rx: mpsc::UnboundedReceiver<Event>,
    output: Output,
    color: bool,
    show_output: bool,
) {
    let terminal =
        std::io::stdout().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
    let screen = (output == Output::Human && terminal).then(Screen::new);
    let lines = Lines {
        output,
        color,
        show_output,
        live: screen.is_some(),
        counts: BTreeMap::new(),
        width: crate::cli::fit::terminal_width(),
        reports: BTreeMap::new(),
    };
    print_to(rx, lines, screen, STILL_RUNNING_EVERY, std::io::stdout()).await;
}

/// The printing loop: events to `out` in batches (whatever is queued, then one write before
/// waiting for more: a run of 1,000 hosts does not cost a write(2) per line), the status
/// area drawn again at each batch and tick, or off a terminal the `still running` text every
/// `still_every`. Returns `out`.
async fn print_to<W: Write>(
    mut rx: mpsc::UnboundedReceiver<Event>,
    mut lines: Lines,
    mut screen: Option<Screen>,
    still_every: Duration,
    mut out: W,
) -> W {
    let mut activity = Activity::default();
    let mut buf: Vec<u8> = Vec::new();
    let period = if screen.is_some() {
        REDRAW_EVERY
    } else {
        still_every
    };
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticked = false;
    let write = |out: &mut W, buf: &mut Vec<u8>, screen: &Option<Screen>| {
        if !buf.is_empty() {
            match screen {
                Some(s) => s.write(out, buf),
                None => {
                    let _ = out.write_all(buf);
                }
            }
            buf.clear();
        }
        let _ = out.flush();
    };
    loop {
        let e = match rx.try_recv() {
            Ok(e) => e,
            Err(mpsc::error::TryRecvError::Empty) => {
                if let Some(s) = screen.as_mut() {
                    s.draw(&activity.area(Instant::now()), std::mem::take(&mut ticked));
                }
                write(&mut out, &mut buf, &screen);
                tokio::select! {
                    e = rx.recv() => match e {
                        Some(e) => e,
                        None => break,
                    },
                    _ = tick.tick() => {
                        ticked = true;
                        if screen.is_none() {
                            if let Some(still) = activity.still_running(Instant::now()) {
                                lines.render(&still, &mut buf);
                            }
                        }
                        continue;
                    }
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        activity.see(&e, Instant::now());
        lines.render(&e, &mut buf);
        if buf.len() >= BATCH {
            write(&mut out, &mut buf, &screen);
        }
    }
    if let Some(s) = screen.as_mut() {
        s.clear();
    }
    write(&mut out, &mut buf, &screen);
    out
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

/// How events become text: JSON lines, or the human lines and the recap.
struct Lines {
    output: Output,
    color: bool,
    show_output: bool,
    /// A status area shows what runs: progress is not written as lines too.
    live: bool,
    /// Per target, how many nodes came to each outcome (for the recap).
    counts: BTreeMap<String, BTreeMap<&'static str, usize>>,
    /// The terminal's width, which a report's table is fitted to.
    width: usize,
    /// A report's text, by (step, target), until its step's line is written (then under it).
    reports: BTreeMap<(String, String), Vec<u8>>,
}

/// How far a report's lines are indented (as a step's diff and output are).
const REPORT_INDENT: &str = "      ";

/// A report on the terminal: the title and whether it is a finding, its key facts, then the
/// table (fitted to `width`), or the `empty` text when there are no rows.
#[allow(clippy::too_many_arguments)]
pub fn report_text(
    title: &str,
    target: &str,
    columns: &[String],
    rows: &[serde_json::Value],
    facts: &[crate::event::Fact],
    found: bool,
    empty: Option<&str>,
    width: usize,
    color: bool,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let (word, code) = if found {
        ("FOUND", "33;1")
    } else {
        ("report", "36")
    };
    let rows_word = match rows.len() {
        0 => "no rows".to_string(),
        1 => "1 row".to_string(),
        n => format!("{n} rows"),
    };
    let _ = writeln!(
        out,
        "    {} {} @ {target} ({rows_word})",
        paint(color, code, &format!("{word:<10}")),
        paint(color, "1", title)
    );
    for f in facts {
        let _ = writeln!(
            out,
            "{REPORT_INDENT}{}: {}",
            f.name,
            crate::table::cell_text(&f.value)
        );
    }
    if rows.is_empty() {
        if let Some(e) = empty {
            let _ = writeln!(out, "{REPORT_INDENT}{e}");
        }
        return out;
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| crate::table::cell_text(r.get(c).unwrap_or(&serde_json::Value::Null)))
                .collect()
        })
        .collect();
    let room = width.saturating_sub(REPORT_INDENT.len());
    for (i, line) in crate::table::lines(columns, &cells, room)
        .iter()
        .enumerate()
    {
        let line = if i == 0 {
            paint(color, "1", line)
        } else {
            line.clone()
        };
        let _ = writeln!(out, "{REPORT_INDENT}{line}");
    }
    out
}

impl Lines {
    /// Appends what `e` prints to `out`.
    fn render(&mut self, e: &Event, out: &mut Vec<u8>) {
        if self.output == Output::Json {
            if matches!(e, Event::Queued { .. }) {
                return; // the terminal's count only
            }
            if let Ok(line) = serde_json::to_string(e) {
                let _ = writeln!(out, "{line}");
            }
            return;
        }
        let color = self.color;
        match e {
            Event::RunStart {
                run,
                playbook,
                mode,
                argv,
                plan,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "{} {playbook} ({}, run {run}{})",
                    paint(color, "1", "remedy"),
                    mode.word(argv),
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
                *self
                    .counts
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
                if self.show_output {
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
                if let Some(text) = self.reports.remove(&(step.clone(), target.clone())) {
                    out.extend_from_slice(&text);
                }
            }
            Event::Report {
                step,
                target,
                title,
                columns,
                rows,
                facts,
                found,
                empty,
                ..
            } => {
                let text = report_text(
                    title,
                    target,
                    columns,
                    rows,
                    facts,
                    *found,
                    empty.as_deref(),
                    self.width,
                    color,
                );
                self.reports
                    .entry((step.clone(), target.clone()))
                    .or_default()
                    .extend_from_slice(text.as_bytes());
            }
            Event::Progress {
                step,
                target,
                message,
                ..
            } if !self.live => {
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
                let what = if *steps == 0 {
                    "no change was made, nothing to undo".to_string()
                } else {
                    format!("undoing {steps} change(s), newest first")
                };
                let _ = writeln!(out, "{} {reason}; {what}", paint(color, "31;1", "ROLLBACK"));
            }
            Event::UndoEnd {
                step,
                target,
                ok,
                error,
                note,
                consumed_by,
                caveat,
                ..
            } => {
                use crate::event::UndoNote;
                let (word, detail) = match (ok, note) {
                    (true, Some(UndoNote::Unchanged)) => {
                        ("as before", Some("read first: nothing to undo".to_string()))
                    }
                    (true, Some(UndoNote::Left)) => (
                        "left",
                        Some("declared as needing no undo (no_rollback)".to_string()),
                    ),
                    (true, Some(UndoNote::Consumed)) => (
                        "kept",
                        Some(format!(
                            "consumed by {}",
                            consumed_by.as_deref().unwrap_or("a later step")
                        )),
                    ),
                    (true, None) => ("undone", None),
                    (false, _) => ("NOT UNDONE", None),
                };
                let _ = writeln!(
                    out,
                    "  {} {step} @ {target}{}",
                    paint(
                        color,
                        if *ok { "32" } else { "31;1" },
                        &format!("{word:<12}")
                    ),
                    detail.map(|d| format!(" ({d})")).unwrap_or_default()
                );
                if let Some(err) = error {
                    let _ = writeln!(out, "      {err}");
                }
                if let Some(c) = caveat {
                    let _ = writeln!(out, "      not exactly as before: {c}");
                }
            }
            Event::RunEnd {
                status,
                exit_code,
                not_undone,
                left,
                ..
            } => {
                // A report whose step's line never came (its end could not be recorded).
                for text in std::mem::take(&mut self.reports).into_values() {
                    out.extend_from_slice(&text);
                }
                let _ = writeln!(out, "\nrecap:");
                for (t, c) in &self.counts {
                    let parts: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let _ = writeln!(out, "  {t:<24} {}", parts.join(" "));
                }
                for n in not_undone {
                    let _ = writeln!(out, "  {} {n}", paint(color, "31;1", "left in place:"));
                }
                for n in left {
                    let _ = writeln!(out, "  kept, not undone: {n}");
                }
                let _ = writeln!(out, "{} (exit {exit_code})", status);
            }
            Event::StillRunning {
                elapsed_s,
                running,
                done,
                failed,
                ..
            } => {
                let text = still_running_text(*elapsed_s, running, *done, *failed);
                out.extend_from_slice(paint(color, "2", text.trim_end()).as_bytes());
                out.push(b'\n');
            }
            _ => {}
        }
    }
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
        let undo = if s.consumes.is_empty() {
            undo
        } else {
            format!("{undo}; once it ran, {} stays", s.consumes.join(", "))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RunMode;
    use crate::playbook::Phase;

    fn argv(words: &str) -> Vec<String> {
        words.split(' ').map(str::to_string).collect()
    }

    fn start(step: &str, target: &str, action: &str, mutating: bool) -> Event {
        Event::StepStart {
            run: "r1".into(),
            step: step.into(),
            target: target.into(),
            phase: Phase::Steps,
            kind: "api".into(),
            mutating,
            action: Some(action.into()),
            pre: None,
            diff: None,
            undo: None,
            settles_by: None,
            irreversible: None,
            consumes: Vec::new(),
        }
    }

    fn progress(step: &str, target: &str, message: &str) -> Event {
        Event::Progress {
            run: "r1".into(),
            step: step.into(),
            target: target.into(),
            message: message.into(),
            jobid: None,
        }
    }

    fn end(step: &str, target: &str, outcome: Outcome) -> Event {
        Event::StepEnd {
            run: "r1".into(),
            step: step.into(),
            target: target.into(),
            outcome,
            duration_ms: 0,
            action: None,
            rc: None,
            diff: None,
            output_sha256: None,
            stdout_tail: None,
            stderr_tail: None,
            error: None,
            undo: None,
            irreversible: None,
            touched: None,
        }
    }

    fn run_start(mode: RunMode, words: &str) -> Event {
        Event::RunStart {
            run: "r1".into(),
            playbook: "vr-backup-loop".into(),
            mode,
            operator: "op".into(),
            host: "h".into(),
            argv: argv(words),
            files: vec![],
            inventory: vec![],
            inventory_sha256: String::new(),
            params_sha256: String::new(),
            params: Default::default(),
            remedy_version: "0".into(),
            rollback_of: None,
            cloudstack_inventory: None,
            plan: None,
            inventory_origin: None,
        }
    }

    #[test]
    fn a_running_steps_status_says_what_it_waits_for_and_how_long() {
        assert_eq!(
            node_status(
                "implement",
                "localhost",
                "restartVPC job 4f2c",
                Duration::from_secs(12)
            ),
            "  12s implement @ localhost: restartVPC job 4f2c"
        );
        assert_eq!(
            node_status("pause", "kvm01", "", Duration::from_secs(185)),
            "3m05s pause @ kvm01"
        );
        assert_eq!(elapsed(Duration::from_secs(3720)), "1h02m");
        // commands are one line, cut with an ellipsis
        assert_eq!(
            shorten("systemctl restart\n   keepalived &&  sleep 5", 30),
            "systemctl restart keepalived…"
        );
        assert_eq!(shorten("short", 30), "short");
    }

    #[test]
    fn the_compact_line_counts_and_names_the_longest() {
        assert_eq!(
            compact_line(
                37,
                120,
                2,
                400,
                Some(("restartVPC", "localhost", Duration::from_secs(41)))
            ),
            "running 37 · done 120 · failed 2 of 400 · longest: restartVPC @ localhost 41s"
        );
        assert_eq!(
            compact_line(0, 3, 0, 10, None),
            "running 0 · done 3 · failed 0 of 10"
        );
        // a total that is not known yet is never below what was seen
        assert_eq!(
            compact_line(2, 3, 1, 0, None),
            "running 2 · done 3 · failed 1 of 6"
        );
    }

    #[test]
    fn the_area_follows_the_events_and_turns_compact_with_many_running() {
        let t0 = Instant::now();
        let mut a = Activity::default();
        a.see(&run_start(RunMode::Apply, "remedy apply x"), t0);
        a.see(
            &Event::Queued {
                run: "r1".into(),
                nodes: 12,
            },
            t0,
        );
        a.see(
            &start(
                "implement",
                "localhost",
                "restartVPC cleanup=true id=v1",
                true,
            ),
            t0,
        );
        a.see(&start("check", "kvm01", "virsh list", false), t0);
        let at = |s| t0 + Duration::from_secs(s);
        // a step that has just started does not show yet
        assert!(a.area(t0 + Duration::from_millis(300)).is_empty());
        assert_eq!(
            a.area(at(3)),
            vec![
                "   3s implement @ localhost: restartVPC cleanup=true id=v1",
                "   3s check @ kvm01: virsh list",
            ]
        );
        // the job id replaces the call; a finished step leaves the area
        a.see(
            &progress("implement", "localhost", "restartVPC job 4f2c"),
            at(4),
        );
        a.see(&end("check", "kvm01", Outcome::Ok), at(4));
        assert_eq!(
            a.area(at(9)),
            vec!["   9s implement @ localhost: restartVPC job 4f2c"]
        );
        a.see(&end("gone", "kvm02", Outcome::Failed), at(9));
        for i in 0..MAX_NODE_LINES {
            a.see(
                &start("probe", &format!("kvm{i:02}"), "true", false),
                at(10),
            );
        }
        assert_eq!(
            a.area(at(41)),
            vec!["running 9 · done 1 · failed 1 of 12 · longest: implement @ localhost 41s"]
        );
        a.see(
            &Event::RunEnd {
                run: "r1".into(),
                status: "ok".into(),
                exit_code: 0,
                changed: 0,
                failed: 0,
                undone: 0,
                not_undone: vec![],
                maybe_changed: 0,
                unchanged: 0,
                left: vec![],
                found: 0,
            },
            at(42),
        );
        assert!(a.area(at(42)).is_empty());
        assert!(a.still_running(at(42)).is_none());
    }

    #[test]
    fn still_running_lists_the_longest_first() {
        let text = still_running_text(
            95,
            &[
                Running {
                    step: "implement".into(),
                    target: "localhost".into(),
                    for_s: 41,
                    waiting: "restartVPC job 4f2c".into(),
                },
                Running {
                    step: "check".into(),
                    target: "kvm01".into(),
                    for_s: 2,
                    waiting: String::new(),
                },
            ],
            3,
            1,
        );
        assert_eq!(
            text,
            concat!(
                "  ... still running after 1m35s (done 3, failed 1):\n",
                "      41s implement @ localhost: restartVPC job 4f2c\n",
                "       2s check @ kvm01\n",
            )
        );
    }

    fn printed(output: Output, events: Vec<Event>, wait: Duration) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, rx) = mpsc::unbounded_channel();
            let lines = Lines {
                output,
                color: false,
                show_output: false,
                live: false,
                counts: BTreeMap::new(),
                width: 100,
                reports: BTreeMap::new(),
            };
            let printer = tokio::spawn(print_to(rx, lines, None, STILL_RUNNING_EVERY, Vec::new()));
            let mut events = events.into_iter();
            for e in events.by_ref().take(3) {
                tx.send(e).unwrap();
            }
            tokio::time::sleep(wait).await;
            for e in events {
                tx.send(e).unwrap();
            }
            drop(tx);
            String::from_utf8(printer.await.unwrap()).unwrap()
        })
    }

    fn report_event(rows: Vec<serde_json::Value>, found: bool, empty: Option<&str>) -> Event {
        Event::Report {
            run: "r1".into(),
            step: "stale_nics".into(),
            target: "localhost".into(),
            title: "Stale NICs on guest-net".into(),
            columns: vec!["vm".into(), "nic".into(), "state".into()],
            rows,
            facts: vec![crate::event::Fact {
                name: "network".into(),
                value: serde_json::json!("guest-net"),
            }],
            found,
            empty: empty.map(str::to_string),
        }
    }

    #[test]
    fn a_report_is_a_table_under_its_steps_line() {
        let rows = vec![
            serde_json::json!({"vm": "i-2-940-VM", "nic": "eth1", "state": "Deallocating"}),
            serde_json::json!({"vm": "i-2-77-VM", "nic": null, "state": {"removed": true}}),
        ];
        let text = printed(
            Output::Human,
            vec![
                run_start(RunMode::DryRun, "remedy apply stale-nics --dry-run"),
                report_event(rows, true, None),
                end("stale_nics", "localhost", Outcome::Ok),
            ],
            Duration::ZERO,
        );
        assert_eq!(
            text.lines().skip(1).take(7).collect::<Vec<_>>(),
            [
                "  ok           stale_nics @ localhost (0.0s)",
                "    FOUND      Stale NICs on guest-net @ localhost (2 rows)",
                "      network: guest-net",
                "      vm          nic   state",
                "      ----------  ----  ----------------",
                "      i-2-940-VM  eth1  Deallocating",
                r#"      i-2-77-VM         {"removed":true}"#,
            ]
        );
        // no rows: the `empty` text instead of a table
        let text = printed(
            Output::Human,
            vec![
                run_start(RunMode::DryRun, "remedy apply stale-nics --dry-run"),
                report_event(vec![], false, Some("no stale NICs")),
                end("stale_nics", "localhost", Outcome::Ok),
            ],
            Duration::ZERO,
        );
        assert_eq!(
            text.lines().skip(1).take(4).collect::<Vec<_>>(),
            [
                "  ok           stale_nics @ localhost (0.0s)",
                "    report     Stale NICs on guest-net @ localhost (no rows)",
                "      network: guest-net",
                "      no stale NICs",
            ]
        );
    }

    #[test]
    fn a_wide_report_fits_the_terminal() {
        let long = "x".repeat(200);
        let text = report_text(
            "t",
            "h",
            &["a".to_string(), "b".to_string()],
            &[serde_json::json!({"a": "short", "b": long})],
            &[],
            true,
            None,
            60,
            false,
        );
        assert!(text.lines().all(|l| l.chars().count() <= 60), "{text}");
        assert!(text.contains("short  xxxx"), "{text}");
        assert!(text.contains('…'), "{text}");
    }

    fn slow_run(mode: RunMode) -> Vec<Event> {
        vec![
            run_start(mode, "remedy apply vr-backup-loop"),
            start(
                "implement",
                "localhost",
                "restartVPC cleanup=true id=v1",
                true,
            ),
            progress("implement", "localhost", "restartVPC job 4f2c"),
            end("implement", "localhost", Outcome::Changed),
        ]
    }

    #[test]
    fn off_a_terminal_a_long_step_is_named_every_30s_and_nothing_else_is_drawn() {
        let text = printed(
            Output::Human,
            slow_run(RunMode::Apply),
            Duration::from_secs(65),
        );
        assert_eq!(
            text,
            concat!(
                "remedy vr-backup-loop (apply, run r1)\n",
                "  ... implement @ localhost: restartVPC job 4f2c\n",
                "  ... still running after 30s (done 0, failed 0):\n",
                "      30s implement @ localhost: restartVPC job 4f2c\n",
                "  ... still running after 1m00s (done 0, failed 0):\n",
                "    1m00s implement @ localhost: restartVPC job 4f2c\n",
                "  changed      implement @ localhost (0.0s)\n",
            )
        );
        // a short step: no still-running text
        let text = printed(
            Output::Human,
            slow_run(RunMode::DryRun),
            Duration::from_secs(5),
        );
        assert!(!text.contains("still running"), "{text}");
        assert!(
            text.starts_with("remedy vr-backup-loop (dry-run, run r1)\n"),
            "{text}"
        );
    }

    #[test]
    fn json_output_stays_one_parseable_event_per_line_with_still_running_events() {
        let text = printed(
            Output::Json,
            slow_run(RunMode::Apply),
            Duration::from_secs(35),
        );
        assert!(!text.contains('\x1b'), "{text}");
        let events: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(events.len(), 5, "{text}");
        match &events[3] {
            Event::StillRunning {
                run,
                elapsed_s,
                running,
                done,
                failed,
            } => {
                assert_eq!((run.as_str(), *elapsed_s, *done, *failed), ("r1", 30, 0, 0));
                assert_eq!(
                    running,
                    &vec![Running {
                        step: "implement".into(),
                        target: "localhost".into(),
                        for_s: 30,
                        waiting: "restartVPC job 4f2c".into(),
                    }]
                );
            }
            other => panic!("not still_running: {other:?}"),
        }
    }
}
