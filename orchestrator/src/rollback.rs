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
            match &d.irreversible {
                Some(why) => report
                    .not_undone
                    .push(format!("{label}: irreversible ({why})")),
                None => report.undone += 1, // declared as needing no undo
            }
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
        .inventory
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
