//! One step on one target: render, check, diff, then change or report.
//!
//! The runner owns the per-kind protocol: a read-only step just runs (with `retries`/`until`);
//! a mutating step first runs its read-only check (a module's probe, or a raw step's `check:`),
//! then in a dry-run reports "will change" with the diff and stops, and otherwise announces the
//! change to the audit log (durably, with the pre-state and the undo computed from it) before
//! acting. Every action goes through the transport tagged with its [`Access`].
//!
//! Not here: ordering, concurrency and failure policy (scheduler), undoing (rollback).

use std::sync::Arc;
use std::time::{Duration, Instant};

use minijinja::value::Value;
use serde_json::{json, Value as J};
use sha2::{Digest, Sha256};

use crate::event::{Event, ModuleVerify, Outcome, Sink, Touched, UndoRecord};
use crate::inventory::Host;
use crate::modules::{ModuleKind, ModuleSpec};
use crate::plan::Plan;
use crate::planfile::Prediction;
use crate::playbook::{Kind, Step, Undo};
use crate::transport::{
    Access, Action, ActionResult, ApiCall, CmdOutput, Transport, TransportError,
};

mod module;
mod raw;
mod report;

use module::module;
pub use module::probe;
use raw::{attempts, mutate};

/// Default per-step deadline when a step sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// What the runner needs, shared by every node of a run.
pub struct Ctx {
    pub plan: Arc<Plan>,
    pub transport: Arc<dyn Transport>,
    pub sink: Arc<Sink>,
    pub run: String,
    pub dry_run: bool,
    /// Set to true on Ctrl-C / SIGTERM: waits and retry delays end early.
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
    /// Reads the inventory again after a `refresh_inventory` step (`None`: static inventory).
    pub reload: Option<Arc<crate::cloudstack::inventory::Reloader>>,
    /// `apply --plan`: what the plan predicted for each node; a node whose state or action
    /// differs is refused instead of acted on.
    pub expect: Option<Arc<crate::planfile::Expect>>,
    /// Set by the scheduler once the run fails: a node that has not announced its change yet
    /// does not start it (its check may still have been in flight).
    pub halt: Arc<std::sync::atomic::AtomicBool>,
}

/// What a node announced before it acted, kept outside the node's future so that the node's
/// deadline, which drops that future, cannot lose it.
type Announced = Arc<std::sync::Mutex<Announcement>>;

#[derive(Default)]
struct Announcement {
    /// Its undo, if it has one (`Some(None)`: announced without one).
    undo: Option<Option<UndoRecord>>,
    /// Until when its command may run on (see [`NodeResult::settles_by`]).
    settles_by: Option<jiff::Timestamp>,
}

tokio::task_local! {
    static ANNOUNCED: Announced;
}

/// The result of one node.
#[derive(Debug, Clone)]
pub struct NodeResult {
    pub outcome: Outcome,
    /// What the step registers (`rc`, `stdout`, `json`, ... plus `changed`, `failed`, `skipped`).
    pub registered: J,
    /// Extra facts (`set:` steps register each name).
    pub facts: Vec<(String, J)>,
    pub undo: Option<UndoRecord>,
    pub error: Option<String>,
    /// The rendered action (command or API call), for the record.
    pub action: Option<String>,
    /// A mutating step's decision before acting: what it would do and the state it saw
    /// (recorded by a dry-run for a plan; compared with the plan by `apply --plan`).
    pub prediction: Option<Prediction>,
    /// Once a mutating step announced its change: whether its target changed.
    pub touched: Option<Touched>,
    /// Once announced: until when its command may still run on the host (its start plus the
    /// step's timeout). A change whose outcome is unknown (`touched: maybe`) that reads "as
    /// before" may yet land until then.
    pub settles_by: Option<jiff::Timestamp>,
    /// It failed on its own input: a template or expression that could not be rendered or
    /// evaluated (an undefined name validate could not know, a value no quoting keeps inert).
    /// A run that fails so and changed nothing ends with exit 4 (invalid input).
    pub bad_input: bool,
}

impl NodeResult {
    fn simple(outcome: Outcome) -> Self {
        NodeResult {
            outcome,
            registered: json!({ "changed": false, "failed": false, "skipped": outcome == Outcome::Skipped }),
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

    fn failed(error: String, registered: J) -> Self {
        NodeResult {
            outcome: Outcome::Failed,
            registered,
            facts: Vec::new(),
            undo: None,
            error: Some(error),
            action: None,
            prediction: None,
            touched: None,
            settles_by: None,
            bad_input: false,
        }
    }

    /// A failure of the step's own templates or expressions (see [`NodeResult::bad_input`]).
    fn bad_input(error: String, registered: J) -> Self {
        let mut r = NodeResult::failed(error, registered);
        r.bad_input = true;
        r
    }

    /// A failure after the change was announced, with what is known of the target.
    fn failed_touched(error: String, registered: J, touched: Touched) -> Self {
        let mut r = NodeResult::failed(error, registered);
        r.touched = Some(touched);
        r
    }

    /// `apply --plan`: refused, the plan predicted something else.
    fn drifted(why: String, now: Prediction) -> Self {
        NodeResult {
            outcome: Outcome::Drifted,
            registered: json!({"failed": true, "changed": false}),
            facts: Vec::new(),
            undo: None,
            error: Some(why),
            action: None,
            prediction: Some(now),
            touched: None,
            settles_by: None,
            bad_input: false,
        }
    }
}

const TAIL: usize = 2048;

fn tail(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let start = s.len().saturating_sub(TAIL);
    let start = (start..=s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    Some(s[start..].to_string())
}

fn cmd_json(out: &CmdOutput) -> J {
    json!({
        "rc": out.rc,
        "signal": out.signal,
        "stdout": out.stdout.trim_end_matches('\n'),
        "stderr": out.stderr.trim_end_matches('\n'),
        "stdout_lines": out.stdout.lines().collect::<Vec<_>>(),
        "dropped_bytes": out.dropped_bytes,
    })
}

fn api_json(reply: &J) -> J {
    // `items`: the one array in a list reply, for convenient filters.
    let items = reply
        .as_object()
        .and_then(|o| {
            o.iter()
                .find(|(k, v)| *k != "count" && v.is_array())
                .map(|(_, v)| v.clone())
        })
        .unwrap_or(J::Array(vec![]));
    json!({ "json": reply, "items": items })
}

fn merge(mut base: J, extra: J) -> J {
    if let (Some(b), J::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
    base
}

/// The controller pseudo-host for API calls and controller steps.
pub fn controller_host(plan: &Plan) -> Host {
    plan.inventory
        .host(crate::plan::CONTROLLER)
        .cloned()
        .unwrap_or_else(|| {
            crate::inventory::Inventory::empty()
                .host(crate::plan::CONTROLLER)
                .cloned()
                .unwrap_or_else(|| unreachable!("the empty inventory always has localhost"))
        })
}

impl Ctx {
    /// Sleep, unless the run is cancelled first (then `false`).
    async fn pause(&self, d: Duration) -> bool {
        let Some(mut rx) = self.cancel.clone() else {
            tokio::time::sleep(d).await;
            return true;
        };
        if *rx.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = rx.wait_for(|c| *c) => false,
        }
    }

    fn host(&self, name: &str) -> Result<Host, String> {
        self.plan
            .inventory
            .host(name)
            .cloned()
            .ok_or_else(|| format!("host {name} vanished from the inventory"))
    }

    fn emit(&self, e: Event) -> Result<(), String> {
        self.sink.emit(e)
    }

    /// Whether the run is stopping (a failure elsewhere, or a signal): no change may start.
    fn stopping(&self) -> bool {
        self.halt.load(std::sync::atomic::Ordering::SeqCst)
            || self.cancel.as_ref().is_some_and(|c| *c.borrow())
    }

    /// Announces a change durably (`step_start` with its action, pre-state and undo), unless
    /// the run is stopping: then the node ends skipped, before it acted. Once announced, the
    /// node's undo is kept where its deadline cannot lose it.
    #[allow(clippy::too_many_arguments)]
    fn announce(
        &self,
        step: &Step,
        target: &str,
        kind: &str,
        action: String,
        pre: Option<J>,
        diff: Option<String>,
        undo: Option<UndoRecord>,
    ) -> Result<(), NodeResult> {
        if self.stopping() {
            let mut r = NodeResult::simple(Outcome::Skipped);
            r.error = Some("not started: the run is stopping (a failure or a signal)".into());
            return Err(r);
        }
        let settles_by = jiff::Timestamp::now()
            .checked_add(
                jiff::SignedDuration::try_from(step.timeout.unwrap_or(DEFAULT_TIMEOUT))
                    .unwrap_or(jiff::SignedDuration::MAX),
            )
            .unwrap_or(jiff::Timestamp::MAX);
        self.emit(Event::StepStart {
            run: self.run.clone(),
            step: step.id.clone(),
            target: target.to_string(),
            phase: step.phase,
            kind: kind.into(),
            mutating: true,
            action: Some(action),
            pre,
            diff,
            undo: undo.clone(),
            settles_by: Some(settles_by.to_string()),
            irreversible: match &step.undo {
                Undo::Irreversible(why) => Some(why.clone()),
                _ => None,
            },
            consumes: step.consumes.clone(),
        })
        .map_err(|e| {
            NodeResult::failed(format!("not run: audit log: {e}"), json!({"failed": true}))
        })?;
        let _ = ANNOUNCED.try_with(|a| {
            *a.lock().unwrap_or_else(|p| p.into_inner()) = Announcement {
                undo: Some(undo),
                settles_by: Some(settles_by),
            };
        });
        Ok(())
    }

    /// What a running node waits for now (shown, not audited).
    fn progress(&self, step: &Step, target: &str, message: String, jobid: Option<String>) {
        let _ = self.emit(Event::Progress {
            run: self.run.clone(),
            step: step.id.clone(),
            target: target.to_string(),
            message,
            jobid,
        });
    }

    /// A read-only step starts `action` (shown, not audited: see [`Event::audited`]).
    fn starting(&self, step: &Step, target: &str, action: &str) {
        let _ = self.emit(Event::StepStart {
            run: self.run.clone(),
            step: step.id.clone(),
            target: target.to_string(),
            phase: step.phase,
            kind: step.kind.name().into(),
            mutating: false,
            action: Some(action.to_string()),
            pre: None,
            diff: None,
            undo: None,
            settles_by: None,
            irreversible: None,
            consumes: Vec::new(),
        });
    }

    /// Tells the terminal each async job a node's API calls submit (`restartVPC job 4f2c...`).
    fn job_notice(&self, step: &Step, target: &str) -> crate::cloudstack::client::JobNotice {
        let (sink, run, step, target) = (
            self.sink.clone(),
            self.run.clone(),
            step.id.clone(),
            target.to_string(),
        );
        Arc::new(move |command: &str, jobid: &str| {
            let _ = sink.emit(Event::Progress {
                run: run.clone(),
                step: step.clone(),
                target: target.clone(),
                message: format!("{command} job {jobid}"),
                jobid: Some(jobid.to_string()),
            });
        })
    }

    async fn act(
        &self,
        host: &Host,
        action: &Action,
        access: Access,
        timeout: Duration,
    ) -> Result<ActionResult, String> {
        self.act_typed(host, action, access, timeout)
            .await
            .map_err(|e| e.to_string())
    }

    /// [`Ctx::act`], keeping the error's kind (whether the action can have run).
    async fn act_typed(
        &self,
        host: &Host,
        action: &Action,
        access: Access,
        timeout: Duration,
    ) -> Result<ActionResult, TransportError> {
        // API calls go to the CloudStack endpoint from the controller, whatever the target.
        let controller;
        let via = match action {
            Action::Api(_) => {
                controller = controller_host(&self.plan);
                &controller
            }
            Action::Ssh { .. } => host,
        };
        self.transport.run(via, action, access, timeout).await
    }

    /// Before a mutating action: in a dry-run, the decision is the result (`prediction`);
    /// under `apply --plan`, a decision that differs from the plan's refuses the node.
    fn decide(&self, step: &Step, target: &str, now: &Prediction) -> Option<NodeResult> {
        let planned = self.expect.as_ref()?.get(&step.id, target)?;
        crate::planfile::drift(planned, now, self.sink.redactor())
            .map(|why| NodeResult::drifted(why, now.clone()))
    }

    /// Renders for the wire; what is derived from a secret is masked wherever it shows.
    fn render(&self, tpl: &crate::template::Tpl, ctx: &Value) -> Result<String, String> {
        let (templates, redactor) = (&self.plan.program.templates, self.sink.redactor());
        crate::masked::render(templates, tpl, ctx, redactor).map_err(|e| e.to_string())
    }

    fn test(&self, e: &crate::template::Expr, ctx: &Value) -> Result<bool, String> {
        self.plan
            .program
            .templates
            .test(e, ctx)
            .map_err(|e| e.to_string())
    }
}

/// The most characters of one value a failed `assert` shows.
const SHOWN_VALUE: usize = 200;

/// The values an expression reads, for the message of a failed `assert`: each path it names
/// from a variable (`x`, `probe.stdout`, `hosts[0].state`) with its value as JSON, e.g.
/// `x = 2, probe.stdout = "Down"`. A path that does not evaluate is shown by its longest part
/// that does. Secrets are masked by the sink, like every message.
fn read_values(cx: &Ctx, e: &crate::template::Expr, ctx: &Value) -> String {
    static PATH: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r#"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[[0-9]+\]|\['[^']*'\]|\["[^"]*"\])*"#,
        )
        .unwrap_or_else(|_| unreachable!("a valid pattern"))
    });
    static PART: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"\.[A-Za-z_][A-Za-z0-9_]*$|\[[^\]]*\]$"#)
            .unwrap_or_else(|_| unreachable!("a valid pattern"))
    });
    let src: &str = &e.source;
    let mut shown: Vec<String> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for m in PATH.find_iter(src) {
        let before = src[..m.start()].trim_end();
        let root = m.as_str().split(['.', '[']).next().unwrap_or("");
        if !e.vars.contains(root) || before.ends_with('.') || before.ends_with('|') {
            continue;
        }
        let mut path = m.as_str().to_string();
        loop {
            let expr = crate::template::Expr {
                source: std::sync::Arc::from(path.as_str()),
                loc: e.loc.clone(),
                vars: Default::default(),
                attrs: Vec::new(),
            };
            match cx.plan.program.templates.eval(&expr, ctx) {
                Ok(v) if !v.is_undefined() => {
                    if seen.insert(path.clone()) {
                        let json = serde_json::to_string(&v).unwrap_or_else(|_| v.to_string());
                        shown.push(format!("{path} = {}", cut(&json, SHOWN_VALUE)));
                    }
                    break;
                }
                _ => match PART.find(&path) {
                    Some(p) => path.truncate(p.start()),
                    None => break,
                },
            }
        }
    }
    shown.join(", ")
}

/// `text` cut to its first `max` characters, with `…` when it was longer.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max).collect();
    out.push('…');
    out
}

/// A rendered fact's value (`set:`, a report's `facts:`): JSON for a number, boolean, list or
/// map becomes that value; anything else stays text.
fn fact_value(s: String) -> J {
    match serde_json::from_str::<J>(&s) {
        Ok(v @ (J::Number(_) | J::Bool(_) | J::Array(_) | J::Object(_))) => v,
        _ => J::String(s),
    }
}

fn with_result(ctx: &Value, register: &str, result: &J) -> Value {
    let r = Value::from_serialize(result);
    // minijinja looks a key up from the last map to the first: the step's own result wins
    // over a value of the same name in the context (the same step's result on a target that
    // ran before this one, under `serial`).
    minijinja::value::merge_maps([
        ctx.clone(),
        minijinja::context! { result => r.clone() },
        Value::from_iter([(register.to_string(), r)]),
    ])
}

/// Run one node. `ctx_value` is the template context (host vars, params, results so far).
pub async fn run_node(cx: &Ctx, step: &Step, target: &str, ctx_value: Value) -> NodeResult {
    let started = Instant::now();
    let timeout = step.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let host = match cx.host(target) {
        Ok(h) => h,
        Err(e) => return NodeResult::failed(e, json!({"failed": true})),
    };
    // A point of no return: what comes after it must be able to run (`preflight`).
    let mut refused = None;
    if !cx.dry_run && matches!(step.undo, Undo::Irreversible(_)) && !cx.stopping() {
        if let Some(i) = cx.plan.program.steps.iter().position(|s| s.id == step.id) {
            refused = crate::preflight::check(&cx.plan, cx.transport.as_ref(), i)
                .await
                .err();
        }
    }
    let announced: Announced = Arc::default();
    let work = ANNOUNCED.scope(
        announced.clone(),
        crate::cloudstack::client::notifying_jobs(
            cx.job_notice(step, target),
            run_kind(cx, step, &host, &ctx_value, timeout),
        ),
    );
    let outcome = match refused {
        Some(e) => Ok(NodeResult::failed_touched(
            e,
            json!({"failed": true}),
            Touched::No,
        )),
        None => tokio::time::timeout(timeout + Duration::from_secs(1), work).await,
    };
    let mut result = match outcome {
        Ok(r) => r,
        Err(_) => {
            let why = format!("timed out after {}", humantime::format_duration(timeout));
            match announced
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .undo
                .take()
            {
                // The change was announced, perhaps sent: it may have landed.
                Some(undo) => {
                    let mut r = NodeResult::failed_touched(
                        format!("{why}, after its change was sent: it may or may not have landed"),
                        json!({"failed": true}),
                        Touched::Maybe,
                    );
                    r.undo = undo;
                    r
                }
                None => NodeResult::failed(why, json!({"failed": true})),
            }
        }
    };
    if result.touched == Some(Touched::Maybe) {
        result.settles_by = announced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .settles_by;
    }
    if result.outcome == Outcome::Failed && step.ignore_errors {
        result.outcome = Outcome::FailedIgnored;
    }
    let (rc, out_tail, err_tail, digest) = match result.registered.get("rc") {
        Some(rc) => {
            let out = result
                .registered
                .get("stdout")
                .and_then(J::as_str)
                .unwrap_or("");
            let err = result
                .registered
                .get("stderr")
                .and_then(J::as_str)
                .unwrap_or("");
            let mut h = Sha256::new();
            h.update(out.as_bytes());
            h.update([0]);
            h.update(err.as_bytes());
            (
                rc.as_i64().map(|r| r as i32),
                tail(out),
                tail(err),
                Some(crate::playbook::load::hex(&h.finalize())),
            )
        }
        None => (None, None, None, None),
    };
    let irreversible = match (&step.undo, result.outcome) {
        (Undo::Irreversible(why), Outcome::Changed) => Some(why.clone()),
        _ => None,
    };
    let end = Event::StepEnd {
        run: cx.run.clone(),
        step: step.id.clone(),
        target: target.to_string(),
        outcome: result.outcome,
        duration_ms: started.elapsed().as_millis() as u64,
        rc,
        diff: result
            .registered
            .get("diff")
            .and_then(J::as_str)
            .map(str::to_string),
        output_sha256: digest,
        stdout_tail: out_tail,
        stderr_tail: err_tail,
        error: result.error.clone(),
        action: result.action.clone(),
        undo: result.undo.clone(),
        irreversible,
        touched: result.touched,
    };
    if let Err(e) = cx.emit(end) {
        // The change (if any) happened; its record did not make it. Keep the undo data so the
        // in-run rollback can still act, and fail the node so the run rolls back.
        result.outcome = Outcome::Failed;
        result.error = Some(format!("audit log: {e}"));
    }
    result
}

async fn run_kind(
    cx: &Ctx,
    step: &Step,
    host: &Host,
    ctx: &Value,
    timeout: Duration,
) -> NodeResult {
    match &step.kind {
        Kind::Wait(d) => {
            if cx.dry_run {
                return NodeResult::simple(Outcome::Ok);
            }
            if *d >= Duration::from_secs(5) {
                let message = format!("waiting {}", humantime::format_duration(*d));
                cx.progress(step, &host.name, message, None);
            }
            if cx.pause(*d).await {
                NodeResult::simple(Outcome::Ok)
            } else {
                NodeResult::failed(
                    "wait interrupted by a signal".into(),
                    json!({"failed": true}),
                )
            }
        }
        Kind::Assert { that, msg } => {
            for e in that {
                match cx.test(e, ctx) {
                    Ok(true) => {}
                    Ok(false) => {
                        let values = read_values(cx, e, ctx);
                        let text = match (msg, values.is_empty()) {
                            (Some(m), true) => cx.render(m, ctx).unwrap_or_else(|e| e),
                            (Some(m), false) => format!(
                                "{} (that: {}; {values})",
                                cx.render(m, ctx).unwrap_or_else(|e| e),
                                e.source
                            ),
                            (None, true) => format!("assertion failed: {}", e.source),
                            (None, false) => {
                                format!("assertion failed: {}; {values}", e.source)
                            }
                        };
                        return NodeResult::failed(text, json!({"failed": true, "changed": false}));
                    }
                    Err(err) => return NodeResult::bad_input(err, json!({"failed": true})),
                }
            }
            NodeResult::simple(Outcome::Ok)
        }
        Kind::Set(facts) => {
            // In the order written: each name sees the ones before it.
            let mut out = Vec::new();
            let mut seen = ctx.clone();
            for (k, t) in facts {
                match cx.render(t, &seen) {
                    Ok(s) => {
                        let v = fact_value(s);
                        seen = minijinja::value::merge_maps([
                            seen,
                            Value::from_iter([(k.clone(), Value::from_serialize(&v))]),
                        ]);
                        out.push((k.clone(), v));
                    }
                    Err(e) => return NodeResult::bad_input(e, json!({"failed": true})),
                }
            }
            let mut r = NodeResult::simple(Outcome::Ok);
            r.facts = out;
            r
        }
        Kind::Ssh { cmd, check } => {
            let command = match cx.render(cmd, ctx) {
                Ok(c) => c,
                Err(e) => return NodeResult::bad_input(e, json!({"failed": true})),
            };
            let action = Action::ssh(command.clone());
            if !step.mutating() {
                cx.starting(step, &host.name, &command);
                let mut r = attempts(cx, step, host, ctx, &action, Access::ReadOnly, timeout).await;
                r.action = Some(command);
                return r;
            }
            let mut pre = None;
            let mut check_cmd = None;
            if let Some(check) = check {
                let probe = match cx.render(check, ctx) {
                    Ok(c) => {
                        check_cmd = Some(c.clone());
                        Action::ssh(c)
                    }
                    Err(e) => return NodeResult::bad_input(e, json!({"failed": true})),
                };
                match cx.act(host, &probe, Access::ReadOnly, timeout).await {
                    Ok(ActionResult::Ssh(out)) if out.rc == Some(0) => {
                        let now = Prediction::no_change(Some(json!({"check_rc": 0})));
                        if let Some(refused) = cx.decide(step, &host.name, &now) {
                            return refused;
                        }
                        let mut r = NodeResult::simple(Outcome::NoChange);
                        r.registered =
                            merge(cmd_json(&out), json!({"changed": false, "failed": false}));
                        r.prediction = Some(now);
                        return r;
                    }
                    Ok(ActionResult::Ssh(out)) => pre = Some(json!({"check_rc": out.rc})),
                    Ok(_) => {}
                    Err(e) => {
                        return NodeResult::failed(
                            format!("check failed: {e}"),
                            json!({"failed": true}),
                        )
                    }
                }
            }
            let diff = format!("will run: {command}");
            let now = Prediction::change(vec![command.clone()], pre.clone(), Some(diff.clone()));
            if let Some(refused) = cx.decide(step, &host.name, &now) {
                return refused;
            }
            if cx.dry_run {
                let mut r = NodeResult::simple(Outcome::WouldChange);
                r.registered = json!({"changed": true, "diff": diff});
                r.prediction = Some(now);
                return r;
            }
            mutate(cx, step, host, ctx, action, pre, check_cmd, timeout).await
        }
        Kind::Api { command, args } => {
            let mut rendered = std::collections::BTreeMap::new();
            for (k, t) in args {
                match cx.render(t, ctx) {
                    Ok(v) => {
                        rendered.insert(k.clone(), v);
                    }
                    Err(e) => return NodeResult::bad_input(e, json!({"failed": true})),
                }
            }
            let action = Action::Api(ApiCall {
                command: command.clone(),
                args: rendered,
            });
            if !step.mutating() {
                cx.starting(step, &host.name, &action.to_string());
                let mut r = attempts(cx, step, host, ctx, &action, Access::ReadOnly, timeout).await;
                r.action = Some(action.to_string());
                return r;
            }
            let diff = format!("will call: {action}");
            let now = Prediction::change(vec![action.to_string()], None, Some(diff.clone()));
            if let Some(refused) = cx.decide(step, &host.name, &now) {
                return refused;
            }
            if cx.dry_run {
                let mut r = NodeResult::simple(Outcome::WouldChange);
                r.registered = json!({"changed": true, "diff": diff});
                r.prediction = Some(now);
                return r;
            }
            mutate(cx, step, host, ctx, action, None, None, timeout).await
        }
        Kind::Module { kind, spec, tpls } => {
            module(cx, step, host, ctx, *kind, spec, tpls, timeout).await
        }
        Kind::Report(spec) => report::report(cx, step, &host.name, ctx, spec),
    }
}
