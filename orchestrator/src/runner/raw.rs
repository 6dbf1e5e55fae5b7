//! A raw step's action (`ssh:` or `api:`) on one target: a read-only one run with its
//! `retries`/`delay`/`until` ([`attempts`]), judged by `failed_when`/`changed_when`
//! ([`judge`]); a mutating one announced, performed and judged, its outcome read with its
//! `check:` when the reply was lost, and its `rollback:` rendered ([`mutate`],
//! [`render_undo`]).
//!
//! Not here: structured modules (`module.rs`), choosing and rendering the step (`mod.rs`).

use std::time::Duration;

use minijinja::value::Value;
use serde_json::{json, Value as J};

use super::*;
use crate::playbook::Setting;
/// A read-only action with `retries`/`delay`/`until`/`failed_when`.
pub(super) async fn attempts(
    cx: &Ctx,
    step: &Step,
    host: &Host,
    ctx: &Value,
    action: &Action,
    access: Access,
    timeout: Duration,
) -> NodeResult {
    let (retries, delay) = match attempt_settings(cx, step, ctx) {
        Ok(s) => s,
        Err(e) => return NodeResult::bad_input(e, json!({"failed": true})),
    };
    let total = retries + 1;
    let mut last = NodeResult::failed("not run".into(), json!({}));
    for attempt in 1..=total {
        last = match cx.act(host, action, access, timeout).await {
            Ok(res) => judge(cx, step, ctx, &res, false),
            Err(e) => NodeResult::failed(e, json!({"failed": true, "unreachable": true})),
        };
        let done = match &step.until {
            Some(u) if last.outcome != Outcome::Failed => {
                let c = with_result(ctx, &step.register, &last.registered);
                match cx.test(u, &c) {
                    Ok(b) => b,
                    Err(e) => return NodeResult::bad_input(e, last.registered),
                }
            }
            Some(_) => false,
            None => last.outcome != Outcome::Failed,
        };
        if done {
            return last;
        }
        if attempt < total {
            let message = format!(
                "not yet; waiting {} (retry {attempt}/{})",
                humantime::format_duration(delay),
                retries
            );
            cx.progress(step, &host.name, message, None);
            if !cx.pause(delay).await {
                return NodeResult::failed(
                    "retries interrupted by a signal".into(),
                    last.registered,
                );
            }
        }
    }
    if step.until.is_some() && last.outcome != Outcome::Failed {
        let attempts = total;
        return NodeResult::failed(
            format!(
                "`until` still false after {attempts} attempt(s): {}; {}",
                step.until
                    .as_ref()
                    .map(|u| u.source.to_string())
                    .unwrap_or_default(),
                last_output(&last.registered, step.until.as_ref())
            ),
            merge(last.registered, json!({"failed": true})),
        );
    }
    last
}

/// The step's `retries` and `delay` for this node: as written, or rendered from their
/// templates (an invalid rendered value is the playbook's error, reported at its field).
fn attempt_settings(cx: &Ctx, step: &Step, ctx: &Value) -> Result<(u32, Duration), String> {
    let retries = match &step.retries {
        Setting::Value(n) => *n,
        Setting::Template(t) => {
            let text = cx.render(t, ctx)?;
            text.trim().parse().map_err(|_| {
                let text = text.trim();
                format!(
                    "{}: retries is {text:?}: expected a whole number, 0 or more",
                    t.loc
                )
            })?
        }
    };
    let delay = match &step.delay {
        Setting::Value(d) => *d,
        Setting::Template(t) => {
            let text = cx.render(t, ctx)?;
            crate::playbook::model::Dur::parse(&text)
                .map_err(|e| format!("{}: delay: {e}", t.loc))?
        }
    };
    Ok((retries, delay))
}

/// The most characters of an output or a reply a failed `until` quotes.
const QUOTED: usize = 400;

/// What the last attempt of a step saw, on one line, for the message of a failed `until`: a
/// command's exit status and the end of its stdout and stderr, or the API's reply: the fields
/// of it that `until` names ([`fields_read`]), else its beginning, cut to [`QUOTED`]
/// characters. Secrets in it are masked by the sink, like every message.
pub(super) fn last_output(registered: &J, until: Option<&crate::template::Expr>) -> String {
    let end = |s: &str| {
        let n = s.chars().count();
        let tail: String = s.chars().skip(n.saturating_sub(QUOTED)).collect();
        if n > QUOTED {
            format!("…{tail}")
        } else {
            tail
        }
    };
    if let Some(rc) = registered.get("rc") {
        let text = |k: &str| {
            registered
                .get(k)
                .and_then(J::as_str)
                .unwrap_or("")
                .to_string()
        };
        let mut words = format!("last output: rc {rc}, stdout {:?}", end(&text("stdout")));
        let err = text("stderr");
        if !err.is_empty() {
            words.push_str(&format!(", stderr {:?}", end(&err)));
        }
        return words;
    }
    if let Some(read) = until.and_then(|u| fields_read(registered, &u.source)) {
        return format!(
            "last reply, the fields it reads: {}",
            cut(&read.to_string(), QUOTED)
        );
    }
    match registered.get("json") {
        Some(reply) => {
            format!("last reply: {}", cut(&reply.to_string(), QUOTED))
        }
        None => "no output".to_string(),
    }
}

/// The part of an API step's result that an expression names, so that the field that decided
/// a failed `until` shows even far into a big reply: `json` and `items` when the expression
/// names them, each pruned to the keys named anywhere in it (a word of the expression, in a
/// string too: `selectattr("state", ...)` names `state`), with the objects and lists on the
/// way to them; a named key keeps its whole value when nothing inside it is named. `None`
/// when the expression names neither.
fn fields_read(registered: &J, source: &str) -> Option<J> {
    static WORD: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"[A-Za-z_][A-Za-z0-9_]*")
            .unwrap_or_else(|_| unreachable!("a valid pattern"))
    });
    let names: std::collections::BTreeSet<&str> =
        WORD.find_iter(source).map(|m| m.as_str()).collect();
    let mut read = serde_json::Map::new();
    for key in ["json", "items"] {
        if let (true, Some(v)) = (names.contains(key), registered.get(key)) {
            read.insert(key.into(), pruned(v, &names).unwrap_or_else(|| v.clone()));
        }
    }
    (!read.is_empty()).then_some(J::Object(read))
}

/// `value` with only the keys in `names` (and what leads to them); `None` when none is there.
fn pruned(value: &J, names: &std::collections::BTreeSet<&str>) -> Option<J> {
    match value {
        J::Object(map) => {
            let kept: serde_json::Map<String, J> = map
                .iter()
                .filter_map(|(k, child)| match pruned(child, names) {
                    Some(inner) => Some((k.clone(), inner)),
                    None if names.contains(k.as_str()) => Some((k.clone(), child.clone())),
                    None => None,
                })
                .collect();
            (!kept.is_empty()).then_some(J::Object(kept))
        }
        J::Array(items) => {
            let kept: Vec<J> = items.iter().filter_map(|i| pruned(i, names)).collect();
            (!kept.is_empty()).then_some(J::Array(kept))
        }
        _ => None,
    }
}

/// Interpret a result: failed_when (default: rc != 0), changed_when (default: mutating).
pub(super) fn judge(
    cx: &Ctx,
    step: &Step,
    ctx: &Value,
    res: &ActionResult,
    mutating: bool,
) -> NodeResult {
    let (mut reg, default_failed, why) = match res {
        ActionResult::Ssh(out) => {
            let failed = out.rc != Some(0);
            let why = if failed {
                let detail = if out.stderr.trim().is_empty() {
                    "(stderr was empty)".to_string()
                } else {
                    format!(
                        "stderr:\n{}",
                        tail(out.stderr.trim_end()).unwrap_or_default()
                    )
                };
                match (&out.rc, &out.signal) {
                    (_, Some(sig)) => format!("command killed by {sig} {detail}"),
                    (Some(rc), _) => format!("command exited {rc} {detail}"),
                    _ => format!("command failed {detail}"),
                }
            } else {
                String::new()
            };
            (cmd_json(out), failed, why)
        }
        ActionResult::Api(reply) => (api_json(reply), false, String::new()),
    };
    reg = merge(reg, json!({"changed": mutating, "failed": default_failed}));
    let c = with_result(ctx, &step.register, &reg);
    let failed = match &step.failed_when {
        Some(e) => match cx.test(e, &c) {
            Ok(b) => b,
            Err(e) => return NodeResult::bad_input(e, reg),
        },
        None => default_failed,
    };
    let changed = match &step.changed_when {
        Some(e) => match cx.test(e, &c) {
            Ok(b) => b,
            Err(e) => return NodeResult::bad_input(e, reg),
        },
        None => mutating,
    };
    reg = merge(reg, json!({"changed": changed, "failed": failed}));
    if failed {
        let why = if why.is_empty() {
            match &step.failed_when {
                Some(e) => format!("failed_when is true: {}", e.source),
                None => "failed".into(),
            }
        } else {
            why
        };
        return NodeResult::failed(why, reg);
    }
    NodeResult {
        outcome: if changed {
            Outcome::Changed
        } else if mutating {
            Outcome::NoChange
        } else {
            Outcome::Ok
        },
        registered: reg,
        facts: Vec::new(),
        undo: None,
        error: None,
        action: None,
        prediction: None,
        touched: None,
        settles_by: None,
        bad_input: false,
    }
}

/// Announce, perform and judge a mutating action; compute its undo.
#[allow(clippy::too_many_arguments)]
pub(super) async fn mutate(
    cx: &Ctx,
    step: &Step,
    host: &Host,
    ctx: &Value,
    action: Action,
    pre: Option<J>,
    check: Option<String>,
    timeout: Duration,
) -> NodeResult {
    let kind = step.kind.name();
    // The step's `check:` goes with its undo: it tells a rollback whether a change whose
    // outcome is unknown landed (exit 0: the host is as the step wanted).
    let with_check = |u: Option<UndoRecord>| {
        u.map(|mut u| {
            u.check.clone_from(&check);
            u
        })
    };
    // A rollback that does not read the step's result is recorded with the announcement, so
    // that a run killed mid-command can still be undone (`remedy rollback RUN`).
    let early_undo = with_check(render_undo(cx, step, ctx, &json!({})).ok().flatten());
    if let Err(r) = cx.announce(
        step,
        &host.name,
        kind,
        action.to_string(),
        pre,
        None,
        early_undo,
    ) {
        return r;
    }
    let res = match cx.act_typed(host, &action, Access::Mutating, timeout).await {
        Ok(r) => r,
        Err(e) => {
            // Refused before it could run: nothing changed. Otherwise (a lost reply, a
            // connection dropped mid-command, a timeout after sending) it may have run, and
            // a raw step has no probe to tell: its rollback runs if it can be rendered.
            if e.never_ran() {
                return NodeResult::failed_touched(
                    e.to_string(),
                    json!({"failed": true, "unreachable": true}),
                    Touched::No,
                );
            }
            let registered = json!({"failed": true, "unknown": true});
            let text = e.to_string();
            let text = if text.contains("may or may not") {
                text
            } else {
                format!("{text} (it may or may not have run)")
            };
            // Its check, when it has one, reads whether the change is there.
            let (touched, text) = match &check {
                Some(c) => match cx.act(host, &Action::ssh(c.clone()), Access::ReadOnly, timeout).await {
                    Ok(ActionResult::Ssh(out)) if out.rc == Some(0) => (
                        Touched::Yes,
                        format!("{text}; its check passes now: the change is there, so it is undone"),
                    ),
                    Ok(_) => (
                        Touched::Maybe,
                        format!("{text}; its check does not pass yet, but the command may still be running on {}", host.name),
                    ),
                    Err(e) => (Touched::Maybe, format!("{text}; its check could not run: {e}")),
                },
                None => (Touched::Maybe, text),
            };
            let mut r = NodeResult::failed_touched(text.clone(), registered.clone(), touched);
            match render_undo(cx, step, ctx, &registered).map(with_check) {
                Ok(u) => r.undo = u,
                Err(why) => {
                    r.error = Some(format!(
                        "{text}; its rollback cannot be rendered without the step's result: {why}"
                    ))
                }
            }
            return r;
        }
    };
    let mut r = judge(cx, step, ctx, &res, true);
    // Whether the action ran to its end: an API reply, or a command that exited 0 (a step
    // failed by `failed_when` still ran its change). A command that exited non-zero is taken
    // to have changed nothing.
    let ran = match &res {
        ActionResult::Ssh(out) => out.rc == Some(0),
        ActionResult::Api(_) => true,
    };
    let changed = r.outcome == Outcome::Changed || (r.outcome == Outcome::Failed && ran);
    r.touched = Some(if changed { Touched::Yes } else { Touched::No });
    if r.touched == Some(Touched::Yes) {
        match render_undo(cx, step, ctx, &r.registered).map(with_check) {
            Ok(u) => r.undo = u,
            Err(e) => {
                let prefix = r.error.take().map(|e| format!("{e}; ")).unwrap_or_default();
                r.error = Some(format!(
                    "{prefix}changed, but its rollback could not be rendered: {e}"
                ));
            }
        }
    }
    r
}

/// A raw step's rollback (`rollback:` command or API call), rendered against `ctx` with the
/// step's result `registered`; `Ok(None)` for steps whose undo is not a rollback action.
pub(super) fn render_undo(
    cx: &Ctx,
    step: &Step,
    ctx: &Value,
    registered: &J,
) -> Result<Option<UndoRecord>, String> {
    let c = with_result(ctx, &step.register, registered);
    match &step.undo {
        Undo::Ssh(t) => Ok(Some(UndoRecord {
            actions: vec![Action::ssh(cx.render(t, &c)?)],
            verify: None,
            check: None,
        })),
        Undo::Api { command, args } => {
            let mut rendered = std::collections::BTreeMap::new();
            for (k, t) in args {
                rendered.insert(k.clone(), cx.render(t, &c)?);
            }
            Ok(Some(UndoRecord {
                actions: vec![Action::Api(ApiCall {
                    command: command.clone(),
                    args: rendered,
                })],
                verify: None,
                check: None,
            }))
        }
        // Declared as needing none (`no_rollback:`): an undo with nothing to do, which
        // rollback reports as left in place.
        Undo::NotNeeded(_) => Ok(Some(UndoRecord {
            actions: Vec::new(),
            verify: None,
            check: None,
        })),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_until_reads_the_fields_it_names() {
        let registered = json!({
            "json": {"count": 1, "host": [{"id": "h1", "name": "kvm02", "state": "Connecting",
                      "details": {"state": "x", "other": 1}}]},
            "items": [{"id": "h1", "name": "kvm02", "state": "Connecting", "tags": ["a"]}],
            "changed": false,
        });
        let read = |src: &str| fields_read(&registered, src).map(|v| v.to_string());
        assert_eq!(
            read(r#"result.items[0].state == "Up""#).as_deref(),
            Some(r#"{"items":[{"state":"Connecting"}]}"#)
        );
        assert_eq!(
            read("result.json.count > 1").as_deref(),
            Some(r#"{"json":{"count":1}}"#)
        );
        // a named key whose value names nothing inside keeps it whole
        assert_eq!(
            read("result.items | map(attribute='tags') | list").as_deref(),
            Some(r#"{"items":[{"tags":["a"]}]}"#)
        );
        assert_eq!(
            read("result.items | length == 2").as_deref(),
            Some(r#"{"items":[{"id":"h1","name":"kvm02","state":"Connecting","tags":["a"]}]}"#)
        );
        assert_eq!(read("result.changed"), None);
        assert_eq!(
            last_output(&registered, None),
            format!(
                "last reply: {}",
                cut(&registered["json"].to_string(), QUOTED)
            )
        );
    }
}
