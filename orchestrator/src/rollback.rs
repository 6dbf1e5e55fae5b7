//! Undoing completed changes, newest first, from recorded undo data.
//!
//! Used by a failing run (its own changes) and by `remedy rollback RUN` (changes read back from
//! the audit log, including nodes that started and never ended, as after a kill). Both use one
//! model of what may have changed ([`crate::event::Touched::undo_candidate`]), so they agree.
//!
//! For a structured module the target is read first: a change that did not land (or was put
//! back) needs no undo, and a change whose outcome was unknown is undone only if the target
//! moved. Each undo is announced durably, performed, and verified by probing again and
//! comparing with the captured pre-state. Anything that could not be undone or verified is
//! reported by name with what to check: that is exit code 3, a human must look.

use std::time::Duration;

use crate::event::{Event, UndoNote, UndoRecord};
use crate::modules::{Module, ModuleSpec};
use crate::runner::{probe, Ctx};
use crate::transport::{Access, Action, ActionResult};

#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Changes undone (and verified, for modules).
    pub undone: usize,
    /// Changes that were not there to undo: read first, the target was as before.
    pub unchanged: usize,
    /// `step@target` of changes left in place by declaration (`no_rollback:`).
    pub left: Vec<String>,
    /// `step@target: why` for each change left in place, or whose state is unknown.
    pub not_undone: Vec<String>,
}

const UNDO_TIMEOUT: Duration = Duration::from_secs(600);

/// How one recorded change came out of the rollback.
enum Settled {
    Undone,
    Unchanged,
    Left,
}

/// A completed change, in completion order.
#[derive(Debug, Clone)]
pub struct Done {
    pub step: String,
    pub target: String,
    pub undo: Option<UndoRecord>,
    pub irreversible: Option<String>,
    /// It changed (`true`), or it may have (`false`: the outcome of its change is unknown;
    /// rollback reads the target first and undoes only what moved). See
    /// [`crate::event::Touched::undo_candidate`].
    pub certain: bool,
    /// The earlier steps whose changes this one put to use (its `consumes:`).
    pub consumes: Vec<String>,
    /// A raw `api:` step's command: when its outcome is unknown, rollback asks CloudStack
    /// whether a job of it is still running (`listAsyncJobs`).
    pub api_command: Option<String>,
    /// What consumed this change ([`consumed`]): a later irreversible step, or a
    /// later step that `consumes:` it. It is left in place, not undone.
    pub consumed_by: Option<String>,
    /// A change whose outcome is unknown (a node of a killed run, a connection lost
    /// mid-command): until this time its command may still be running on the host, so a
    /// target that reads "as before" may yet change.
    pub settles_by: Option<jiff::Timestamp>,
}

/// Marks the changes that a later change in `done` (in completion order; one that may have
/// happened counts) put to use, so that they are left in place, not undone:
/// - everything completed before the last irreversible change (it may have consumed any of
///   them: a new SSVM boots with the setting changed before);
/// - the steps a later change names in its `consumes:` (the guest VLAN range the tiers now
///   hold, once restartVPC has implemented them).
pub fn consumed(done: &mut [Done]) {
    // An irreversible step that changed, or may have (killed while it ran, its reply lost),
    // counts as taken.
    if let Some(last) = done
        .iter()
        .rposition(|d| d.irreversible.is_some() && d.undo.is_none())
    {
        let by = format!("the irreversible step {}", done[last].step);
        for d in &mut done[..last] {
            if d.consumed_by.is_none() && d.irreversible.is_none() {
                d.consumed_by = Some(by.clone());
            }
        }
    }
    for i in (0..done.len()).rev() {
        if done[i].consumes.is_empty() {
            continue;
        }
        let (earlier, rest) = done.split_at_mut(i);
        let by = &rest[0];
        for d in earlier {
            if d.consumed_by.is_none() && by.consumes.contains(&d.step) {
                d.consumed_by = Some(by.step.clone());
            }
        }
    }
}

/// How an undo that must wait begins: the change may still land (a job or a command still
/// running), so the target cannot be judged yet.
const STILL: &str = "may still change";

/// Undo `done` in reverse order.
pub async fn rollback(cx: &Ctx, done: &[Done], reason: &str) -> Report {
    let mut report = Report::default();
    let _ = cx.sink.emit(Event::RollbackStart {
        run: cx.run.clone(),
        reason: reason.to_string(),
        steps: done.len(),
    });
    // Targets where a newer change may still be landing: what is older there waits for it
    // (undone now, it could come before the newer change's command and be undone wrongly).
    // A CloudStack job (a change made on the controller) can change any machine of the zone.
    let mut unsettled: Vec<(String, String)> = Vec::new();
    for d in done.iter().rev() {
        let label = format!("{}@{}", d.step, d.target);
        let holding = unsettled
            .iter()
            .find(|(t, _)| *t == d.target || t == crate::plan::CONTROLLER);
        let outcome = match holding {
            Some((_, newer)) => {
                let r = Err(format!(
                    "not undone yet: the newer change {newer} may still be landing, and could \
                     overtake this undo; run `remedy rollback` for this run again once it has \
                     settled"
                ));
                end(cx, d, &r, None);
                r
            }
            None => undo_one(cx, d).await,
        };
        if matches!(&outcome, Err(e) if e.starts_with(STILL)) {
            unsettled.push((d.target.clone(), label.clone()));
        }
        match outcome {
            Ok(Settled::Undone) => report.undone += 1,
            Ok(Settled::Unchanged) => report.unchanged += 1,
            Ok(Settled::Left) => report.left.push(match &d.consumed_by {
                Some(by) => format!("{label}, consumed by {by}"),
                None => label,
            }),
            Err(e) => report.not_undone.push(format!("{label}: {e}")),
        }
    }
    report
}

/// Records the end of one undo (also when nothing ran, so that a later `remedy rollback`
/// does not list it again).
fn end(cx: &Ctx, d: &Done, result: &Result<Settled, String>, restored: Option<bool>) {
    end_with(cx, d, result, restored, None)
}

/// [`end`], with what a restored undo could not put back exactly.
fn end_with(
    cx: &Ctx,
    d: &Done,
    result: &Result<Settled, String>,
    restored: Option<bool>,
    caveat: Option<String>,
) {
    let _ = cx.sink.emit(Event::UndoEnd {
        run: cx.run.clone(),
        step: d.step.clone(),
        target: d.target.clone(),
        ok: result.is_ok(),
        restored,
        error: result.as_ref().err().cloned(),
        note: match result {
            Ok(Settled::Unchanged) => Some(UndoNote::Unchanged),
            Ok(Settled::Left) if d.consumed_by.is_some() => Some(UndoNote::Consumed),
            Ok(Settled::Left) => Some(UndoNote::Left),
            _ => None,
        },
        consumed_by: match result {
            Ok(Settled::Left) => d.consumed_by.clone(),
            _ => None,
        },
        caveat,
    });
}

async fn undo_one(cx: &Ctx, d: &Done) -> Result<Settled, String> {
    if d.consumed_by.is_some() {
        let r = Ok(Settled::Left);
        end(cx, d, &r, None);
        return r;
    }
    let may = if d.certain {
        "changed"
    } else {
        "may have changed"
    };
    let undo = match (&d.undo, &d.irreversible) {
        (Some(u), _) => u,
        (None, Some(why)) => {
            let r = Err(format!("irreversible ({why})"));
            end(cx, d, &r, None);
            return r;
        }
        (None, None) => {
            let r = Err(format!(
                "{may}, and no undo was recorded for it (its rollback could not be rendered, or \
                 the run ended before its result was known): check {} on {} by hand",
                d.step, d.target
            ));
            end(cx, d, &r, None);
            return r;
        }
    };
    // What CloudStack call made the change, to ask whether a job of it still runs.
    let api_command = undo
        .actions
        .iter()
        .find_map(|a| match a {
            Action::Api(c) => Some(c.command.clone()),
            Action::Ssh { .. } => None,
        })
        .or_else(|| d.api_command.clone());
    if undo.actions.is_empty() && undo.verify.is_none() {
        // Nothing to undo; but a CloudStack job of unknown outcome may still be changing the
        // zone, which older undos must wait for.
        if let (false, Some(command)) = (d.certain, &d.api_command) {
            if let Err(e) = job_settled(cx, command).await {
                end(cx, d, &Err(e.clone()), None);
                return Err(e);
            }
        }
        let r = Ok(Settled::Left);
        end(cx, d, &r, None);
        return r;
    }
    let Some(host) = cx.plan.host(&d.target).cloned() else {
        let r = Err(format!(
            "{may}, but host {} is not in the inventory now, so it cannot be reached to undo it",
            d.target
        ));
        end(cx, d, &r, None);
        return r;
    };
    // A killed run's command may still be running on the host until `settles_by`: what reads
    // "as before" now may yet change, and a raw rollback run now could come before it.
    let running_until = d
        .settles_by
        .filter(|t| !d.certain && jiff::Timestamp::now() < *t);
    let still_running = |t: jiff::Timestamp| {
        format!(
            "{STILL}: its outcome is unknown (the run was killed, or its connection lost, while \
             it ran), and its command may still be running on {} until {t} (the step's \
             timeout); check the host, then run `remedy rollback` for this run again",
            d.target
        )
    };
    // A raw step's `check:` reads whether a change of unknown outcome is there.
    if let (false, Some(check)) = (d.certain, &undo.check) {
        match run_check(cx, &host, check).await {
            Ok(true) => {}
            Ok(false) => {
                let r = match running_until {
                    Some(t) => Err(still_running(t)),
                    None => Ok(Settled::Unchanged),
                };
                end(cx, d, &r, Some(true));
                return r;
            }
            Err(e) => {
                let r = Err(format!(
                    "may have changed, but its check `{check}` could not run ({e}): check {} \
                     on {} by hand",
                    d.step, d.target
                ));
                end(cx, d, &r, None);
                return r;
            }
        }
    } else if let (Some(t), None) = (running_until, &undo.verify) {
        let r = Err(still_running(t));
        end(cx, d, &r, None);
        return r;
    }
    let module = match &undo.verify {
        Some(v) => match ModuleSpec::from_json(v.kind, v.spec.clone()).and_then(|s| s.build()) {
            Ok(m) => Some((m, &v.before)),
            Err(e) => {
                let r = Err(format!("cannot rebuild the module to read its state: {e}"));
                end(cx, d, &r, None);
                return r;
            }
        },
        None => None,
    };
    // A change made through the API whose outcome was unknown may be a job that is still
    // running: what reads "as before" (or half-moved: a VM `Migrating`) now may yet change, and
    // an undo sent now would race it. Ask CloudStack before reading.
    if let (false, Some(command), Some(_)) = (d.certain, &api_command, &module) {
        if let Err(e) = job_settled(cx, command).await {
            end(cx, d, &Err(e.clone()), None);
            return Err(e);
        }
    }
    // Read first: undo only what is not already as before.
    if let Some((m, before)) = &module {
        match probe(cx, &host, m.as_ref(), UNDO_TIMEOUT).await {
            Ok(now) if m.restored(before, &now) && running_until.is_some() => {
                let r = Err(still_running(running_until.unwrap_or_default()));
                end(cx, d, &r, Some(true));
                return r;
            }
            Ok(now) if m.restored(before, &now) => {
                let r = Ok(Settled::Unchanged);
                end(cx, d, &r, Some(true));
                return r;
            }
            Ok(_) => {}
            Err(e) if !d.certain => {
                let r = Err(format!(
                    "may have changed, but its state cannot be read ({e}): check {} on {} \
                     against the state before, {before}",
                    d.step, d.target
                ));
                end(cx, d, &r, None);
                return r;
            }
            // It changed for certain: undo it anyway, then verify.
            Err(_) => {}
        }
    }
    cx.sink
        .emit(Event::UndoStart {
            run: cx.run.clone(),
            step: d.step.clone(),
            target: d.target.clone(),
            actions: undo.actions.clone(),
        })
        .map_err(|e| format!("not undone: audit log: {e}"))?;
    let mut error = None;
    for a in &undo.actions {
        let via = match a {
            Action::Api(_) => crate::runner::controller_host(&cx.plan),
            Action::Ssh { .. } => host.clone(),
        };
        match cx
            .transport
            .run(&via, a, Access::Mutating, UNDO_TIMEOUT)
            .await
        {
            Ok(ActionResult::Ssh(out)) if out.rc != Some(0) => {
                error = Some(format!("`{a}` exited {:?}: {}", out.rc, out.stderr.trim()));
                break;
            }
            Ok(_) => {}
            Err(e) => {
                error = Some(format!("`{a}`: {e}"));
                break;
            }
        }
    }
    let mut restored = None;
    let mut caveat = None;
    if let (None, Some((m, before))) = (&error, &module) {
        let (ok, e, c) = verify(cx, &host, m.as_ref(), before).await;
        restored = Some(ok);
        error = e;
        caveat = c;
    }
    // A raw step's check passed before its undo could be needed; after the undo it must not.
    if let (None, Some(check)) = (&error, &undo.check) {
        match run_check(cx, &host, check).await {
            Ok(false) => restored = Some(true),
            Ok(true) => {
                restored = Some(false);
                error = Some(format!(
                    "undo ran, but the step's check `{check}` still passes: the change is still there"
                ));
            }
            Err(e) => {
                restored = Some(false);
                error = Some(format!(
                    "undo ran but could not be verified: its check `{check}` could not run: {e}"
                ));
            }
        }
    }
    let r = match error {
        None => Ok(Settled::Undone),
        Some(e) => Err(e),
    };
    end_with(cx, d, &r, restored, caveat);
    r
}

/// `Ok` when CloudStack runs no job of `command` (`listAsyncJobs`: none pending); else why the
/// change it made may still land.
async fn job_settled(cx: &Ctx, command: &str) -> Result<(), String> {
    let list = Action::Api(crate::transport::ApiCall {
        command: "listAsyncJobs".into(),
        args: Default::default(),
    });
    let via = crate::runner::controller_host(&cx.plan);
    let reply = match cx
        .transport
        .run(&via, &list, Access::ReadOnly, UNDO_TIMEOUT)
        .await
    {
        Ok(ActionResult::Api(v)) => v,
        Ok(ActionResult::Ssh(_)) => return Err(format!("{STILL}: listAsyncJobs gave no reply")),
        Err(e) => {
            return Err(format!(
                "{STILL}: the outcome of its {command} was unknown, and whether a job of it \
                 still runs cannot be read ({e}); check listAsyncJobs, then run `remedy \
                 rollback` for this run again"
            ))
        }
    };
    let running: Vec<String> = reply["asyncjobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["jobstatus"].as_i64() == Some(0))
        .filter(|j| crate::cloudstack::reply::job_is_of(j, command))
        .map(|j| j["jobid"].as_str().unwrap_or("?").to_string())
        .collect();
    if running.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{STILL}: the outcome of its {command} was unknown, and CloudStack still runs a job of \
         it ({}); once it has ended, run `remedy rollback` for this run again",
        running.join(", ")
    ))
}

/// A raw step's `check:` on `host`: whether it passes (exit 0: the step's change is there).
async fn run_check(cx: &Ctx, host: &crate::inventory::Host, check: &str) -> Result<bool, String> {
    match cx
        .transport
        .run(
            host,
            &Action::ssh(check.to_string()),
            Access::ReadOnly,
            UNDO_TIMEOUT,
        )
        .await
    {
        Ok(ActionResult::Ssh(out)) => Ok(out.rc == Some(0)),
        Ok(ActionResult::Api(_)) => Err("not a command".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// After an undo: whether the target is as before; if not, exactly what differs; if so, what
/// the module could not put back exactly (its caveat).
async fn verify(
    cx: &Ctx,
    host: &crate::inventory::Host,
    m: &dyn Module,
    before: &serde_json::Value,
) -> (bool, Option<String>, Option<String>) {
    match probe(cx, host, m, UNDO_TIMEOUT).await {
        Ok(now) if m.restored(before, &now) => (true, None, m.caveat(before, &now)),
        Ok(now) => (
            false,
            Some(format!("undo ran but the state is {now}, not {before}")),
            None,
        ),
        Err(e) => (
            false,
            Some(format!("undo ran but could not be verified: {e}")),
            None,
        ),
    }
}

/// The changes a recorded run may have left in place, oldest first, read back from the audit
/// log with the same model as the run's own rollback: every node of `run` that announced a
/// change (`step_start`) and changed, or may have (its `step_end` says so, or it has no
/// `step_end` at all: the run was killed while it ran), minus those an undo already settled
/// (the run's own rollback, or an earlier `remedy rollback`, even one that was killed itself).
pub fn pending_from_audit(
    records: &[crate::audit::Record],
    run: &str,
) -> Result<Vec<Done>, String> {
    use crate::event::{Outcome, Touched};
    use serde_json::Value as J;
    if !records
        .iter()
        .any(|r| r.value["event"] == "run_start" && r.value["run"] == run)
    {
        return Err(format!("no run {run} in the audit log"));
    }
    // runs whose undos count for this one: itself and rollbacks of it
    let mut runs: Vec<&str> = vec![run];
    for r in records {
        if r.value["event"] == "run_start" && r.value["rollback_of"] == run {
            if let Some(id) = r.value["run"].as_str() {
                runs.push(id);
            }
        }
    }
    let key = |v: &J| {
        (
            v["step"].as_str().unwrap_or("").to_string(),
            v["target"].as_str().unwrap_or("").to_string(),
        )
    };
    let settled: std::collections::HashSet<(String, String)> = records
        .iter()
        .filter(|r| r.value["event"] == "undo_end" && r.value["ok"] == true)
        .filter(|r| r.value["run"].as_str().is_some_and(|x| runs.contains(&x)))
        .map(|r| key(&r.value))
        .collect();
    let undo_of = |v: &J, line: usize| -> Result<Option<crate::event::UndoRecord>, String> {
        match v.get("undo") {
            Some(J::Null) | None => Ok(None),
            Some(u) => serde_json::from_value(u.clone())
                .map(Some)
                .map_err(|e| format!("line {line}: unreadable undo record: {e}")),
        }
    };
    fn mine<'a>(
        records: &'a [crate::audit::Record],
        run: &'a str,
        event: &'static str,
    ) -> impl Iterator<Item = &'a crate::audit::Record> {
        records
            .iter()
            .filter(move |r| r.value["event"] == event && r.value["run"] == run)
    }
    let ends: std::collections::HashMap<(String, String), &crate::audit::Record> =
        mine(records, run, "step_end")
            .map(|r| (key(&r.value), r))
            .collect();
    let mut out: Vec<Done> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // Nodes that announced a change, in the order they started; then any change recorded only
    // by its end (logs written before every change was announced).
    let starts = mine(records, run, "step_start").filter(|r| r.value["mutating"] == true);
    let ended_only = mine(records, run, "step_end").filter(|r| {
        let v = &r.value;
        v["outcome"] == "changed" || v.get("undo").is_some_and(|u| !u.is_null())
    });
    for r in starts.chain(ended_only) {
        let k = key(&r.value);
        if !seen.insert(k.clone()) || settled.contains(&k) {
            continue;
        }
        let start_undo = if r.value["event"] == "step_start" {
            undo_of(&r.value, r.line)?
        } else {
            None
        };
        // A node with no end: its command may still run until its start plus its timeout.
        let settles_by = if ends.contains_key(&k) {
            None
        } else {
            r.value["settles_by"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        };
        let consumes: Vec<String> = r.value["consumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect();
        let (certain, undo, irreversible) = match ends.get(&k) {
            // Killed while it ran: an irreversible step counts as taken.
            None => (
                false,
                start_undo,
                r.value["irreversible"].as_str().map(str::to_string),
            ),
            Some(e) => {
                let v = &e.value;
                let outcome: Outcome = match serde_json::from_value(v["outcome"].clone()) {
                    Ok(o) => o,
                    Err(_) => continue,
                };
                let touched: Option<Touched> = serde_json::from_value(v["touched"].clone()).ok();
                let undo = undo_of(v, e.line)?.or(start_undo);
                match Touched::undo_candidate(outcome, touched, undo.is_some()) {
                    None => continue,
                    Some(certain) => (
                        certain,
                        undo,
                        v["irreversible"].as_str().map(str::to_string),
                    ),
                }
            }
        };
        let api_command = (r.value["kind"] == "api")
            .then(|| r.value["action"].as_str())
            .flatten()
            .and_then(|a| a.split_whitespace().next())
            .map(str::to_string);
        out.push(Done {
            step: k.0,
            target: k.1,
            undo,
            irreversible,
            certain,
            consumes,
            api_command,
            consumed_by: None,
            settles_by,
        });
    }
    consumed(&mut out);
    Ok(out)
}

/// A run that ended without an end record (killed, or its machine lost) and left changes that
/// may need undoing, on some of the targets a new run is about to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    pub run: String,
    pub playbook: String,
    /// Its unsettled changes' targets that the new run shares.
    pub targets: Vec<String>,
}

/// The runs in `records` with no `run_end`, none of whose targets is locked now (`alive`:
/// whether a target's lock is held, i.e. that run may still be going), that left changes
/// `pending_from_audit` still lists on any of `targets`. Rollback runs are not listed.
pub fn interrupted(
    records: &[crate::audit::Record],
    targets: &std::collections::BTreeSet<String>,
    alive: &dyn Fn(&str) -> bool,
) -> Vec<Interrupted> {
    let ended: std::collections::HashSet<&str> = records
        .iter()
        .filter(|r| r.value["event"] == "run_end")
        .filter_map(|r| r.value["run"].as_str())
        .collect();
    let mut out = Vec::new();
    for start in records.iter().filter(|r| r.value["event"] == "run_start") {
        let v = &start.value;
        let Some(run) = v["run"].as_str() else {
            continue;
        };
        if ended.contains(run)
            || v["mode"] != "apply"
            || v.get("rollback_of").is_some_and(|r| !r.is_null())
        {
            continue;
        }
        let Ok(pending) = pending_from_audit(records, run) else {
            continue;
        };
        let mut shared: Vec<String> = pending
            .iter()
            .map(|d| d.target.clone())
            .filter(|t| targets.contains(t))
            .collect();
        shared.sort();
        shared.dedup();
        if shared.is_empty() || pending.iter().any(|d| alive(&d.target)) {
            continue;
        }
        out.push(Interrupted {
            run: run.to_string(),
            playbook: v["playbook"].as_str().unwrap_or("").to_string(),
            targets: shared,
        });
    }
    out
}

#[cfg(test)]
mod consumed_tests {
    use super::*;
    use crate::event::UndoRecord;

    fn done(step: &str, irreversible: bool, consumes: &[&str]) -> Done {
        Done {
            step: step.into(),
            target: "localhost".into(),
            undo: (!irreversible).then(|| UndoRecord {
                actions: Vec::new(),
                verify: None,
                check: None,
            }),
            irreversible: irreversible.then(|| "gone".to_string()),
            certain: true,
            consumes: consumes.iter().map(|s| s.to_string()).collect(),
            api_command: None,
            consumed_by: None,
            settles_by: None,
        }
    }

    fn by(list: &[Done]) -> Vec<Option<&str>> {
        list.iter().map(|d| d.consumed_by.as_deref()).collect()
    }

    #[test]
    fn a_step_consumes_only_what_it_names_and_only_what_came_before() {
        let mut list = vec![
            done("range", false, &[]),
            done("link", false, &[]),
            done("implement", false, &["range", "later"]),
            done("later", false, &[]),
        ];
        consumed(&mut list);
        assert_eq!(by(&list), [Some("implement"), None, None, None]);
    }

    #[test]
    fn an_irreversible_step_consumes_everything_before_it() {
        let mut list = vec![
            done("setting", false, &[]),
            done("destroy", true, &[]),
            done("after", false, &[]),
        ];
        consumed(&mut list);
        assert_eq!(
            by(&list),
            [Some("the irreversible step destroy"), None, None]
        );
        // not taken (it has an undo record: it did not run): nothing consumed
        let mut list = vec![done("setting", false, &[]), done("destroy", false, &[])];
        list[1].irreversible = Some("gone".into());
        consumed(&mut list);
        assert_eq!(by(&list), [None, None]);
    }
}
