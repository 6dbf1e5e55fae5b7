//! A structured module's step on one target: probe, diff, and in a dry-run stop there;
//! otherwise announce the change with its pre-state and undo, act, and confirm with the probe
//! ([`module`]). A failed action is judged by reading the target again ([`reobserve`]);
//! [`probe`] runs a module's read-only checks (also for rollback).
//!
//! Not here: raw `ssh:`/`api:` steps (`raw.rs`), undoing (`crate::rollback`).

use std::time::Duration;

use minijinja::value::Value;
use serde_json::{json, Value as J};

use super::*;
#[allow(clippy::too_many_arguments)]
pub(super) async fn module(
    cx: &Ctx,
    step: &Step,
    host: &Host,
    ctx: &Value,
    kind: ModuleKind,
    spec: &J,
    tpls: &[(String, crate::template::Tpl)],
    timeout: Duration,
) -> NodeResult {
    let mut spec = spec.clone();
    for (ptr, t) in tpls {
        match cx.render(t, ctx) {
            Ok(v) => {
                if let Some(slot) = spec.pointer_mut(ptr) {
                    *slot = J::String(v);
                }
            }
            Err(e) => return NodeResult::bad_input(e, json!({"failed": true})),
        }
    }
    let built = ModuleSpec::from_json(kind, spec.clone()).and_then(|s| s.build());
    let m = match built {
        Ok(m) => m,
        Err(e) => {
            // its rendered arguments are invalid: the playbook's input
            return NodeResult::bad_input(format!("{}: {e}", kind.key()), json!({"failed": true}));
        }
    };
    let before = match probe(cx, host, m.as_ref(), timeout).await {
        Ok(b) => b,
        Err(e) => return NodeResult::failed(e, json!({"failed": true})),
    };
    let diff = match m.diff(&before) {
        Ok(d) => d,
        Err(e) => {
            return NodeResult::failed(e.to_string(), json!({"failed": true, "before": before}))
        }
    };
    let Some(diff) = diff else {
        let now = Prediction::no_change(Some(before.clone()));
        if let Some(refused) = cx.decide(step, &host.name, &now) {
            return refused;
        }
        let mut r = NodeResult::simple(Outcome::NoChange);
        r.registered =
            json!({"changed": false, "failed": false, "before": before, "after": before});
        r.prediction = Some(now);
        return r;
    };
    let diff_text = diff.to_string();
    let (changes, undo) = match (m.change(&before), m.undo(&before)) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(e), _) | (_, Err(e)) => {
            return NodeResult::failed(e.to_string(), json!({"failed": true}))
        }
    };
    let mut now = Prediction::change(
        changes.iter().map(|a| a.to_string()).collect(),
        Some(before.clone()),
        Some(diff_text.clone()),
    );
    now.undo = undo.iter().map(|a| a.to_string()).collect();
    if let Some(refused) = cx.decide(step, &host.name, &now) {
        return refused;
    }
    if cx.dry_run {
        let mut r = NodeResult::simple(Outcome::WouldChange);
        r.registered = json!({"changed": true, "before": before, "diff": diff_text});
        r.prediction = Some(now);
        return r;
    }
    let undo = UndoRecord {
        actions: undo,
        verify: Some(ModuleVerify {
            kind,
            spec: spec.clone(),
            before: before.clone(),
        }),
        check: None,
    };
    let action = changes
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" && ");
    if let Err(r) = cx.announce(
        step,
        &host.name,
        kind.key(),
        action,
        Some(before.clone()),
        Some(diff_text.clone()),
        Some(undo.clone()),
    ) {
        return r;
    }
    for a in &changes {
        let res = cx.act_typed(host, a, Access::Mutating, timeout).await;
        // An API call whose outcome is unknown (its reply lost and its job not found, or its
        // job still running at the deadline) may yet change the target after it is read.
        let mut pending_job = false;
        let failure = match res {
            Ok(ActionResult::Ssh(out)) if out.rc != Some(0) => Some(format!(
                "`{a}` exited {} {}",
                out.rc
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "by signal".into()),
                if out.stderr.trim().is_empty() {
                    "(stderr was empty)".to_string()
                } else {
                    format!("stderr:\n{}", out.stderr.trim_end())
                }
            )),
            Ok(_) => None,
            // Sent, and then the reply was lost: a job it started, or the command itself
            // (the connection dropped mid-command), may still be running.
            Err(e) => {
                pending_job = !e.never_ran();
                Some(e.to_string())
            }
        };
        if let Some(f) = failure {
            // What happened is read, not guessed: the module's own probe says whether the
            // target moved (a lost reply may hide a change that landed; an earlier action of
            // this change may have run).
            let (mut touched, mut seen) = reobserve(cx, host, m.as_ref(), &before, timeout).await;
            if pending_job && touched == Touched::No {
                touched = Touched::Maybe;
                seen = match a {
                    Action::Api(_) => format!(
                        "read again: unchanged for now, but a job of `{a}` may still be running \
                         (check listAsyncJobs)"
                    ),
                    Action::Ssh { .. } => format!(
                        "read again: unchanged for now, but `{a}` may still be running on {} \
                         (its connection was lost after it was sent)",
                        host.name
                    ),
                };
            }
            let mut r = NodeResult::failed_touched(
                format!("{f}; {seen}"),
                json!({"failed": true, "changed": touched != Touched::No, "before": before}),
                touched,
            );
            r.undo = Some(undo);
            return r;
        }
    }
    // Confirm the change took. A confirmation that cannot be read is a failure: the change
    // ran, so it is undone with the rest.
    let after = match probe(cx, host, m.as_ref(), timeout).await {
        Ok(a) => a,
        Err(e) => {
            let mut r = NodeResult::failed_touched(
                format!("changed, but the read that confirms it failed: {e}"),
                json!({"failed": true, "changed": true, "before": before, "diff": diff_text}),
                Touched::Yes,
            );
            r.undo = Some(undo);
            return r;
        }
    };
    let still = m.remaining(&after).ok().flatten();
    let mut r = NodeResult {
        outcome: Outcome::Changed,
        registered: json!({"changed": true, "failed": false, "before": before, "after": after, "diff": diff_text}),
        facts: Vec::new(),
        undo: Some(undo),
        error: None,
        action: None,
        prediction: None,
        touched: Some(Touched::Yes),
        settles_by: None,
        bad_input: false,
    };
    if let Some(left) = still {
        r.outcome = Outcome::Failed;
        r.error = Some(format!("the change did not take; still differs: {left}"));
    }
    r
}

/// After a change action failed: the target read again with the module's probe. Unchanged
/// (as `before`), moved, or unreadable (then it may have changed), with words for the error.
pub(super) async fn reobserve(
    cx: &Ctx,
    host: &Host,
    m: &dyn crate::modules::Module,
    before: &J,
    timeout: Duration,
) -> (Touched, String) {
    match probe(cx, host, m, timeout).await {
        Ok(now) if m.restored(before, &now) => {
            (Touched::No, "read again: unchanged, nothing to undo".into())
        }
        Ok(_) => (
            Touched::Yes,
            "read again: it changed, so it is undone".into(),
        ),
        Err(e) => (
            Touched::Maybe,
            format!("could not read it again ({e}): it may or may not have changed"),
        ),
    }
}

/// Run a module's read-only probes and interpret them.
pub async fn probe(
    cx: &Ctx,
    host: &Host,
    m: &dyn crate::modules::Module,
    timeout: Duration,
) -> Result<J, String> {
    let mut results = Vec::new();
    for a in m.check() {
        results.push(cx.act(host, &a, Access::ReadOnly, timeout).await?);
    }
    m.observe(&results).map_err(|e| e.to_string())
}
