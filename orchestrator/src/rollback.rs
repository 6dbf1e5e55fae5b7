//! Undoing completed changes, newest first, from recorded undo data.
//!
//! Used by a failing run (its own changes) and by `remedy rollback RUN` (changes read back from
//! the audit log). Each undo is announced durably, performed, and — for structured modules —
//! verified by probing again and comparing with the captured pre-state. Anything that could not
//! be undone or verified is reported by name: that is exit code 3, a human must look.

use std::time::Duration;

use crate::event::{Event, UndoRecord};
use crate::modules::ModuleSpec;
use crate::runner::{probe, Ctx};
use crate::scheduler::Done;
use crate::transport::{Access, Action, ActionResult};

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub undone: usize,
    /// `step@target: why` for each change left in place.
    pub not_undone: Vec<String>,
}

const UNDO_TIMEOUT: Duration = Duration::from_secs(600);

/// Undo `done` in reverse order.
pub async fn rollback(cx: &Ctx, done: &[Done], reason: &str) -> Report {
    let mut report = Report::default();
    let _ = cx.sink.emit(Event::RollbackStart {
        run: cx.run.clone(),
        reason: reason.to_string(),
        steps: done.len(),
    });
    for d in done.iter().rev() {
        let label = format!("{}@{}", d.step, d.target);
        let Some(undo) = &d.undo else {
            // Record the verdict too, so a later `remedy rollback` does not list it again.
            let error = d
                .irreversible
                .as_ref()
                .map(|why| format!("irreversible ({why})"));
            match &error {
                Some(e) => report.not_undone.push(format!("{label}: {e}")),
                None => report.undone += 1, // declared as needing no undo
            }
            let _ = cx.sink.emit(Event::UndoEnd {
                run: cx.run.clone(),
                step: d.step.clone(),
                target: d.target.clone(),
                ok: error.is_none(),
                restored: None,
                error,
            });
            continue;
        };
        match undo_one(cx, &d.step, &d.target, undo).await {
            Ok(()) => report.undone += 1,
            Err(e) => report.not_undone.push(format!("{label}: {e}")),
        }
    }
    report
}

async fn undo_one(cx: &Ctx, step: &str, target: &str, undo: &UndoRecord) -> Result<(), String> {
    let host = cx
        .plan
        .host(target)
        .cloned()
        .ok_or_else(|| format!("host {target} is not in the inventory"))?;
    cx.sink
        .emit(Event::UndoStart {
            run: cx.run.clone(),
            step: step.to_string(),
            target: target.to_string(),
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
    if error.is_none() {
        if let Some(v) = &undo.verify {
            let check = ModuleSpec::from_json(v.kind, v.spec.clone()).and_then(|s| s.build());
            match check {
                Ok(m) => match probe(cx, &host, m.as_ref(), UNDO_TIMEOUT).await {
                    Ok(now) => {
                        let ok = m.restored(&v.before, &now);
                        restored = Some(ok);
                        if !ok {
                            error =
                                Some(format!("undo ran but the state is {now}, not {}", v.before));
                        }
                    }
                    Err(e) => error = Some(format!("undo ran but could not be verified: {e}")),
                },
                Err(e) => error = Some(format!("cannot rebuild the module to verify: {e}")),
            }
        }
    }
    let _ = cx.sink.emit(Event::UndoEnd {
        run: cx.run.clone(),
        step: step.to_string(),
        target: target.to_string(),
        ok: error.is_none(),
        restored,
        error: error.clone(),
    });
    match error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// The changes a recorded run left in place, oldest first: every `step_end` of `run` that
/// changed something, minus those already undone (by the run itself or an earlier
/// `remedy rollback`). Read back from the audit log.
pub fn pending_from_audit(
    records: &[crate::audit::Record],
    run: &str,
) -> Result<Vec<Done>, String> {
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
    let undone: std::collections::HashSet<(String, String)> = records
        .iter()
        .filter(|r| r.value["event"] == "undo_end" && r.value["ok"] == true)
        .filter(|r| r.value["run"].as_str().is_some_and(|x| runs.contains(&x)))
        .map(|r| {
            (
                r.value["step"].as_str().unwrap_or("").to_string(),
                r.value["target"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut out = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.value["event"] == "step_end" && r.value["run"] == run)
    {
        let v = &r.value;
        let changed = v["outcome"] == "changed"
            || (v["outcome"] == "failed" && v.get("undo").is_some_and(|u| !u.is_null()));
        if !changed {
            continue;
        }
        let step = v["step"].as_str().unwrap_or("").to_string();
        let target = v["target"].as_str().unwrap_or("").to_string();
        if undone.contains(&(step.clone(), target.clone())) {
            continue;
        }
        let undo: Option<UndoRecord> = match v.get("undo") {
            Some(J::Null) | None => None,
            Some(u) => Some(
                serde_json::from_value(u.clone())
                    .map_err(|e| format!("line {}: unreadable undo record: {e}", r.line))?,
            ),
        };
        out.push(Done {
            step,
            target,
            undo,
            irreversible: v["irreversible"].as_str().map(str::to_string),
        });
    }
    Ok(out)
}
