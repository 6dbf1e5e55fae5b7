//! One event type for everything that happens in a run. The same events feed the terminal
//! report and the audit log, so what the operator saw and what was recorded cannot diverge.
//!
//! [`Sink`] is the single place events go through: it redacts secrets, appends to the audit log
//! (durably before any mutating action: [`Event::announces_change`]), then hands the event to
//! the reporter. If the audit log cannot be written, `emit` fails and the caller must not act.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value as J;
use tokio::sync::mpsc;

use crate::audit::AuditLog;
use crate::playbook::Phase;
use crate::redact::Redactor;
use crate::transport::Action;

/// What a node came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A read-only step ran and passed.
    Ok,
    /// A mutating step changed something.
    Changed,
    /// Already as wanted: nothing ran.
    NoChange,
    /// Dry-run: would change (see the diff).
    WouldChange,
    /// Dry-run: cannot be predicted (depends on an earlier change).
    Unknown,
    /// `when` was false, or the run stopped before it.
    Skipped,
    Failed,
    /// Failed, but `ignore_errors` let the run go on.
    FailedIgnored,
    /// `apply --plan`: refused, because the state or the action differs from the plan.
    Drifted,
}

/// Whether a mutating node that started may have changed its target: the one model of "what
/// may have changed" that the run's own rollback and `remedy rollback RUN` share
/// ([`Touched::undo_candidate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Touched {
    /// Nothing changed: the change was refused before it ran, or the target was read again
    /// and is as it was before.
    No,
    /// Unknown: the reply was lost, the connection dropped mid-command, the step timed out
    /// after sending, or the run was killed; and the state could not be read again. Rollback
    /// reads it first and undoes only what moved.
    Maybe,
    /// It changed (the change ran, or the target was read again and moved).
    Yes,
}

/// Why an undo ended `ok` without running anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UndoNote {
    /// Read first: the target was as before (a change that did not land, or was put back).
    Unchanged,
    /// The step declared that its change needs no undo (`no_rollback:`): left in place.
    Left,
    /// A later change put it to use (an irreversible step, or a step that `consumes:` it):
    /// kept, not undone (`consumed_by` says which).
    Consumed,
}

impl Touched {
    /// Whether a node that came to `outcome` is one rollback must look at, and if so whether
    /// it certainly changed (`Some(true)`) or may have (`Some(false)`). `touched` is what the
    /// node's end recorded (`None`: no end record, as after a kill, or a log written before
    /// this was recorded; then a failure with an undo counts as "may have").
    pub fn undo_candidate(
        outcome: Outcome,
        touched: Option<Touched>,
        has_undo: bool,
    ) -> Option<bool> {
        match (outcome, touched) {
            (Outcome::Changed, _) => Some(true),
            (Outcome::Failed | Outcome::FailedIgnored, Some(Touched::Yes)) => Some(true),
            (Outcome::Failed | Outcome::FailedIgnored, Some(Touched::Maybe)) => Some(false),
            (Outcome::Failed | Outcome::FailedIgnored, None) if has_undo => Some(false),
            _ => None,
        }
    }
}

impl Outcome {
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Changed => "changed",
            Outcome::NoChange => "no change",
            Outcome::WouldChange => "will change",
            Outcome::Unknown => "unknown",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "FAILED",
            Outcome::FailedIgnored => "failed (ignored)",
            Outcome::Drifted => "REFUSED (drift)",
        }
    }
}

/// How to check, after an undo, that a structured module's target is back to its pre-state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleVerify {
    pub kind: crate::modules::ModuleKind,
    pub spec: J,
    pub before: J,
}

/// Everything needed to undo one completed change, as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UndoRecord {
    pub actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<ModuleVerify>,
    /// A raw `ssh:` step's rendered `check:` (exit 0: the host is as the step wanted): read
    /// before undoing a change whose outcome is unknown, and after an undo to verify it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunMode {
    Apply,
    DryRun,
    Rollback,
    /// `remedy plan`: a dry-run whose predictions are written to a plan file.
    Plan,
}

impl RunMode {
    /// How the audit log writes the mode (`apply`, `dry-run`, `plan`, `rollback`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Apply => "apply",
            RunMode::DryRun => "dry-run",
            RunMode::Plan => "plan",
            RunMode::Rollback => "rollback",
        }
    }

    /// The run's mode in the command line's words: see [`mode_word`].
    pub fn word(self, argv: &[String]) -> &'static str {
        mode_word(self.as_str(), argv)
    }
}

/// The words the command line uses for a run, shared by the terminal's run header and
/// `remedy audit list`, so an operator reads one vocabulary everywhere: the command they typed
/// (`apply`, `dry-run`, `plan`, `rollback`, `exec`, `exec --read-only`, `exec --dry-run`), not
/// the engine's mode names. Built from what a `run_start` record holds: `mode` as the audit log
/// writes it, and the recorded `argv`.
///
/// `remedy exec` runs through `apply`, so its mode alone says `apply` or `dry-run`; its argv
/// tells it apart. Only the part before `--` is read (the remote command may contain
/// `--read-only` itself), and the value of an option such as `--audit-log` is not taken for the
/// subcommand. Old logs hold the same fields and read the same; a mode this release does not
/// know (a log written by a newer one) reads `unknown`.
pub fn mode_word(mode: &str, argv: &[String]) -> &'static str {
    let own: Vec<&str> = argv
        .iter()
        .skip(1)
        .map(String::as_str)
        .take_while(|a| *a != "--")
        .collect();
    let mut subcommand = None;
    let mut value_next = false;
    for a in &own {
        if value_next {
            value_next = false;
        } else if matches!(*a, "--audit-log" | "--state-dir") {
            value_next = true;
        } else if !a.starts_with('-') {
            subcommand = Some(*a);
            break;
        }
    }
    if subcommand == Some("exec") {
        return if own.contains(&"--read-only") {
            "exec --read-only"
        } else if mode == "dry-run" || own.contains(&"--dry-run") {
            "exec --dry-run"
        } else {
            "exec"
        };
    }
    match mode {
        "apply" => "apply",
        "dry-run" => "dry-run",
        "plan" => "plan",
        "rollback" => "rollback",
        _ => "unknown",
    }
}

/// What came of a `refresh_inventory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefreshStatus {
    /// Read again; the later steps are bound to it.
    Refreshed,
    /// The step did not run (skipped on every target): nothing was re-created.
    NotNeeded,
    /// The inventory has no CloudStack source: the later steps keep their targets.
    Static,
    /// Dry-run: the step would change something, so the later steps' targets are unknown.
    Unknown,
    /// Reading it failed: the run stops and rolls back.
    Failed,
}

impl RefreshStatus {
    pub fn word(self) -> &'static str {
        match self {
            RefreshStatus::Refreshed => "refreshed",
            RefreshStatus::NotNeeded => "not needed (the step did not run)",
            RefreshStatus::Static => "static inventory: nothing to read again",
            RefreshStatus::Unknown => "not read (dry-run: the step would change something first)",
            RefreshStatus::Failed => "FAILED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    pub path: String,
    pub sha256: String,
}

/// How a run's inventory can be read again, so that `remedy rollback RUN` reaches the hosts
/// the run changed, from any directory: the inventory paths as given and made absolute, the
/// digest of the files alone (without the hosts the CloudStack API added), and whether the
/// CloudStack inventory source was used, with its endpoint. Never a secret: the keys stay
/// referenced from the files, which are read again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryOrigin {
    /// The `-i` paths, in order.
    pub paths: Vec<InventoryPath>,
    /// SHA-256 over the files read from `paths` (as [`crate::inventory::Inventory::digest`],
    /// without the generated hosts): a later read tells whether they changed.
    pub files_sha256: String,
    /// The hosts were completed from the CloudStack API (`remedy_cloudstack_inventory`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cloudstack_source: bool,
    /// Where the API was reached (`remedy_cloudstack`): a URL without credentials, a
    /// cloudmonkey profile, or the embedded simulator's scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudstack_endpoint: Option<String>,
}

/// One inventory path of a run: as the operator gave it, and made absolute against the
/// directory the run started in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryPath {
    pub given: String,
    pub absolute: String,
}

/// One step still running on one target, as `still_running` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub step: String,
    pub target: String,
    /// Seconds since it started.
    pub for_s: u64,
    /// What it waits for: its command or API call, its async job, a retry.
    pub waiting: String,
}

/// One key fact of a report (`facts:`), in the order written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    pub name: String,
    pub value: J,
}

/// The events. Serialized with an `event` tag, e.g. `{"event":"step_end",...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStart {
        run: String,
        playbook: String,
        mode: RunMode,
        operator: String,
        host: String,
        argv: Vec<String>,
        files: Vec<FileHash>,
        inventory: Vec<String>,
        inventory_sha256: String,
        params_sha256: String,
        params: std::collections::BTreeMap<String, String>,
        remedy_version: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollback_of: Option<String>,
        /// What the CloudStack inventory source read and made (`remedy_cloudstack_inventory`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cloudstack_inventory: Option<serde_json::Value>,
        /// `apply --plan`: the plan this run applies, who made it, and its approvals.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan: Option<crate::planlink::PlanLink>,
        /// How to read the inventory again (`remedy rollback RUN`); absent in records written
        /// before remedy kept it, and for runs given no inventory paths.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inventory_origin: Option<InventoryOrigin>,
    },
    /// A step starts acting on a target. For a mutating step this is the change's announcement
    /// (audited, durably, with the pre-state and the undo); a read-only step's (`mutating:
    /// false`) only tells the terminal what it runs, and is not audited.
    StepStart {
        run: String,
        step: String,
        target: String,
        phase: Phase,
        kind: String,
        mutating: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pre: Option<J>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        diff: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        undo: Option<UndoRecord>,
        /// A change's command may run on until this time (its start plus the step's timeout):
        /// after a kill, a target read "as before" earlier may still change.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        settles_by: Option<String>,
        /// The step is irreversible (why): once started, it counts as taken.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        irreversible: Option<String>,
        /// The earlier steps whose changes this one puts to use (`consumes:`): once it has
        /// changed, or may have, they are left in place.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        consumes: Vec<String>,
    },
    StepEnd {
        run: String,
        step: String,
        target: String,
        outcome: Outcome,
        duration_ms: u64,
        /// The rendered command or API call of a read-only step (mutating ones are in step_start).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rc: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        diff: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_sha256: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stdout_tail: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stderr_tail: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// How to undo this change (only for `changed` outcomes of reversible steps).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        undo: Option<UndoRecord>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        irreversible: Option<String>,
        /// For a mutating step that announced its change: whether it changed its target.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        touched: Option<Touched>,
    },
    /// A `report:` step's table of findings and key facts on one target: shown (a table on the
    /// terminal, one event in `--output json`) and audited, redacted like every event.
    Report {
        run: String,
        step: String,
        target: String,
        title: String,
        /// The columns shown, in order.
        columns: Vec<String>,
        /// One map per row, from column name to value (a column a row lacks is null).
        rows: Vec<J>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        facts: Vec<Fact>,
        /// Whether the report is a finding: a problem found. A run that succeeds with a
        /// finding ends with exit 8 (`found problems`).
        found: bool,
        /// Shown instead of the table when there are no rows (`empty:`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        empty: Option<String>,
    },
    /// What a running step waits for: a long wait, a retry, an async job; shown, not audited.
    Progress {
        run: String,
        step: String,
        target: String,
        message: String,
        /// The async job the step waits for, once the server has answered with its id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jobid: Option<String>,
    },
    /// The scheduler queued a phase's (or a segment's) nodes: the reporter's total, for the
    /// terminal's compact line (`... of 400`). Not audited, not in `--output json`.
    Queued { run: String, nodes: usize },
    /// Off a terminal (`--output json`, or output to a file or pipe): now and then, the steps
    /// still running, so that the log of a long run is not silent. Made by the reporter from
    /// the (redacted) events it was shown; not audited.
    StillRunning {
        run: String,
        /// Seconds since the run started.
        elapsed_s: u64,
        running: Vec<Running>,
        /// Nodes finished (not failed), and failed, so far.
        done: usize,
        failed: usize,
    },
    /// After a `refresh_inventory` step: the inventory's CloudStack source read again, and the
    /// later steps bound to what it found.
    InventoryRefresh {
        run: String,
        /// The step that asked for it.
        after_step: String,
        status: RefreshStatus,
        /// What was read (calls, items, groups, left out), when it was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cloudstack_inventory: Option<J>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inventory_sha256: Option<String>,
        /// Hosts that appeared, disappeared, or are reached differently now.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        added: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removed: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changed: Vec<String>,
        /// Later steps whose targets changed: (step, before, after).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        targets: Vec<crate::plan::TargetChange>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// `remedy plan`: the plan file written from this dry-run.
    PlanWritten {
        run: String,
        plan: String,
        file: String,
        expires_at: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        irreversible: Vec<String>,
    },
    /// `apply --plan`: the plan's predictions checked against the live state (a dry-run)
    /// before anything changes.
    PlanCheck {
        run: String,
        plan: String,
        on_drift: crate::planlink::OnDrift,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        drift: Vec<crate::planlink::Drift>,
    },
    /// `remedy approve`: an approval of a plan (not part of a run).
    Approval {
        approval: String,
        plan: String,
        playbook: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<String>,
        at: String,
        /// Who made the plan, as the plan file says.
        plan_made_by: String,
        /// `hmac-sha256` (keyed) or `sha256` (no key: a record, not a proof).
        alg: String,
        signature: String,
        operator: String,
    },
    /// `remedy locks break`: a lock taken from its holder by an operator (not part of a run).
    LockBroken {
        target: String,
        /// Who held it, as its lock record said (`by (pid N on HOST, run R, since T)`).
        holder: String,
        /// Where the lock was (`etcd at ... (prefix ...)`).
        backend: String,
        /// Who broke it.
        operator: String,
        host: String,
        at: String,
    },
    RollbackStart {
        run: String,
        reason: String,
        steps: usize,
    },
    UndoStart {
        run: String,
        step: String,
        target: String,
        actions: Vec<Action>,
    },
    UndoEnd {
        run: String,
        step: String,
        target: String,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restored: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Why nothing ran although `ok`: the target was already as before (`unchanged`), or
        /// the step declared that it needs no undo (`left`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<UndoNote>,
        /// `note: consumed`: what consumed it (`implement`, `the irreversible step destroy`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        consumed_by: Option<String>,
        /// Restored, but not exactly: what the undo could not put back (see
        /// [`crate::modules::Module::caveat`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caveat: Option<String>,
    },
    RunEnd {
        run: String,
        status: String,
        exit_code: i32,
        /// Nodes that changed their target.
        changed: usize,
        failed: usize,
        /// Changes undone by the run's rollback.
        undone: usize,
        not_undone: Vec<String>,
        /// Nodes whose change may have landed (a lost reply, a timeout after sending).
        #[serde(default)]
        maybe_changed: usize,
        /// Changes the rollback found were not there (read again: as before).
        #[serde(default)]
        unchanged: usize,
        /// Changes left in place by declaration (`no_rollback:`), as `step@target`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        left: Vec<String>,
        /// Findings of the reports that found a problem (each report counts its rows, at
        /// least one).
        #[serde(default)]
        found: usize,
    },
}

impl Event {
    /// Must be on disk before the action it announces runs.
    pub fn announces_change(&self) -> bool {
        matches!(
            self,
            Event::StepStart { mutating: true, .. }
                | Event::UndoStart { .. }
                | Event::RunEnd { .. }
                | Event::RollbackStart { .. }
        )
    }

    /// Whether the audit log records it. Progress, a read-only step's start and the reporter's
    /// `still_running` are for the terminal only: the log records what changed and what each
    /// node came to.
    pub fn audited(&self) -> bool {
        !matches!(
            self,
            Event::Progress { .. }
                | Event::StepStart {
                    mutating: false,
                    ..
                }
                | Event::StillRunning { .. }
                | Event::Queued { .. }
        )
    }
}

/// Where events go.
pub struct Sink {
    audit: Option<AuditLog>,
    redactor: Redactor,
    tx: Option<mpsc::UnboundedSender<Event>>,
}

impl Sink {
    pub fn new(
        audit: Option<AuditLog>,
        redactor: Redactor,
        tx: Option<mpsc::UnboundedSender<Event>>,
    ) -> Arc<Self> {
        Arc::new(Sink {
            audit,
            redactor,
            tx,
        })
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Record and show an event. An error means the audit log could not be written: do not act.
    pub fn emit(&self, event: Event) -> Result<(), String> {
        if self.tx.is_none() && (self.audit.is_none() || !event.audited()) {
            return Ok(()); // nobody to show it to, nothing to record
        }
        let mut value = serde_json::to_value(&event).map_err(|e| e.to_string())?;
        let masked = self.redactor.redact_json(&mut value);
        // What the terminal gets: the event itself when nothing in it was a secret, else the
        // redacted one read back. One that cannot be read back (a masked number where the
        // event has a number) is not shown at all rather than shown unredacted.
        let (audited, durable) = (event.audited(), event.announces_change());
        let shown = match &self.tx {
            Some(_) if masked => Event::deserialize(&value).ok(),
            Some(_) => Some(event),
            None => None,
        };
        if audited {
            if let Some(log) = &self.audit {
                let append = move || log.append(value, durable);
                // A durable append may wait for the disk (and for other threads' records in
                // the same sync): let the runtime move this worker's other tasks elsewhere
                // meanwhile, so the rest of the fleet keeps going.
                let multi_thread = tokio::runtime::Handle::try_current().is_ok_and(|h| {
                    h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                });
                let appended = if durable && multi_thread {
                    tokio::task::block_in_place(append)
                } else {
                    append()
                };
                appended.map_err(|e| e.to_string())?;
            }
        }
        if let (Some(tx), Some(shown)) = (&self.tx, shown) {
            let _ = tx.send(shown);
        }
        Ok(())
    }

    /// Flush pending audit records to disk.
    pub fn sync(&self) -> Result<(), String> {
        match &self.audit {
            Some(log) => log.sync().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(message: &str) -> Event {
        Event::Progress {
            run: "r1".into(),
            step: "fix".into(),
            target: "kvm1".into(),
            message: message.into(),
            jobid: None,
        }
    }

    fn step_start(mutating: bool) -> Event {
        Event::StepStart {
            run: "r1".into(),
            step: "fix".into(),
            target: "kvm1".into(),
            phase: Phase::Steps,
            kind: "ssh".into(),
            mutating,
            action: Some("true".into()),
            pre: None,
            diff: None,
            undo: None,
            settles_by: None,
            irreversible: None,
            consumes: Vec::new(),
        }
    }

    #[test]
    fn only_a_changes_start_is_audited() {
        assert!(step_start(true).audited() && step_start(true).announces_change());
        assert!(!step_start(false).audited() && !step_start(false).announces_change());
        assert!(!progress("waiting 5s").audited());
        let still = Event::StillRunning {
            run: "r1".into(),
            elapsed_s: 30,
            running: vec![],
            done: 0,
            failed: 0,
        };
        assert!(!still.audited());
    }

    #[test]
    fn the_terminal_gets_events_redacted() {
        let mut redactor = Redactor::new();
        redactor.add("s3cr3tvalue");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sink = Sink::new(None, redactor, Some(tx));
        sink.emit(progress("plain words")).unwrap();
        sink.emit(progress("the key is s3cr3tvalue")).unwrap();
        let shown = |e: Event| serde_json::to_value(e).unwrap()["message"].clone();
        assert_eq!(shown(rx.try_recv().unwrap()), "plain words");
        assert_eq!(
            shown(rx.try_recv().unwrap()),
            format!("the key is {}", Redactor::MASK)
        );
    }

    fn words_argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn plain_modes_read_as_their_command() {
        let apply = words_argv("remedy apply vr-backup-loop -i inventories/lab.yml --yes");
        assert_eq!(mode_word("apply", &apply), "apply");
        assert_eq!(
            mode_word(
                "dry-run",
                &words_argv("remedy apply vr-backup-loop --dry-run")
            ),
            "dry-run"
        );
        assert_eq!(
            mode_word("plan", &words_argv("remedy plan x -o p.json")),
            "plan"
        );
        assert_eq!(
            mode_word("rollback", &words_argv("remedy rollback r1 --yes")),
            "rollback"
        );
        // The daemon records its own argv; its runs read as the mode.
        assert_eq!(
            mode_word("apply", &words_argv("remedy daemon job-a")),
            "apply"
        );
        assert_eq!(mode_word("plan", &[]), "plan");
        assert_eq!(mode_word("something-new", &apply), "unknown");
    }

    #[test]
    fn exec_runs_read_as_exec_with_their_flag() {
        assert_eq!(
            mode_word(
                "apply",
                &words_argv("remedy exec routers -i lab.yml --yes -- systemctl restart x")
            ),
            "exec"
        );
        assert_eq!(
            mode_word(
                "apply",
                &words_argv("remedy exec all --read-only -- uptime")
            ),
            "exec --read-only"
        );
        assert_eq!(
            mode_word(
                "dry-run",
                &words_argv("remedy exec all --read-only --dry-run -- uptime")
            ),
            "exec --read-only"
        );
        assert_eq!(
            mode_word(
                "dry-run",
                &words_argv("remedy exec all --dry-run -- touch /x")
            ),
            "exec --dry-run"
        );
        // `--read-only` after `--` belongs to the remote command.
        assert_eq!(
            mode_word(
                "apply",
                &words_argv("remedy exec all --yes -- mount -o remount --read-only /")
            ),
            "exec"
        );
    }

    #[test]
    fn run_modes_map_to_the_same_words() {
        let a = words_argv("remedy apply x");
        assert_eq!(RunMode::Apply.word(&a), "apply");
        assert_eq!(RunMode::DryRun.word(&a), "dry-run");
        assert_eq!(RunMode::Plan.word(&a), "plan");
        assert_eq!(RunMode::Rollback.word(&a), "rollback");
        let e = words_argv("remedy exec all --read-only -- uptime");
        assert_eq!(RunMode::DryRun.word(&e), "exec --read-only");
    }

    #[test]
    fn an_options_value_is_not_the_subcommand() {
        assert_eq!(
            mode_word("apply", &words_argv("remedy --audit-log exec apply exec")),
            "apply"
        );
    }
}
