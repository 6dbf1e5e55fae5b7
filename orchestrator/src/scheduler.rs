//! The coordinator of a run: what runs when, how many at once, and what happens on failure.
//!
//! It owns all run state. Nodes whose dependencies are done are rendered here (with the results
//! registered so far) and handed to workers on a `JoinSet`, at most `forks` at a time; workers
//! return their results, nothing is shared. Detect runs first; `applies_when` decides whether
//! the rest runs. On a failure (or a cancel: Ctrl-C / SIGTERM) it stops scheduling, lets
//! in-flight nodes finish, and rolls back every completed change in reverse order.
//!
//! In a dry-run a node that depends on something that would change is reported as unknown
//! instead of being run against a state that is about to differ.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use minijinja::value::Value;
use petgraph::graph::NodeIndex;
use petgraph::Direction;
use serde_json::{json, Value as J};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::error::ExitCode;
use crate::event::{Event, Outcome, RefreshStatus, Touched};
use crate::plan::{Plan, CONTROLLER};
pub use crate::planfile::NodeRecord;
use crate::playbook::{Phase, Undo};
pub use crate::rollback::Done;
use crate::runner::{run_node, Ctx, NodeResult};

/// The most reports a `found problems` status names (then `and N more`).
const SHOWN_FOUND: usize = 5;

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Summary {
    pub exit: ExitCode,
    pub status: String,
    pub outcomes: BTreeMap<(String, String), Outcome>,
    pub changed: usize,
    pub failed: usize,
    pub undone: usize,
    pub not_undone: Vec<String>,
    /// Nodes whose change may have landed (outcome unknown when they ended).
    pub maybe_changed: usize,
    /// Changes the rollback read again and found not there.
    pub unchanged: usize,
    /// Changes left in place by declaration (`no_rollback:`), as `step@target`.
    pub left: Vec<String>,
    /// The reports that found a problem, as `step@target`.
    pub found: Vec<String>,
    /// Their findings: each report counts its rows, at least one.
    pub findings: usize,
    pub applies: bool,
    /// Every node that came to an outcome, in that order (what a plan file is made from).
    pub nodes: Vec<NodeRecord>,
    /// `apply --plan`: the nodes refused because they differ from the plan.
    pub drift: Vec<crate::planfile::Drift>,
}

impl crate::planfile::DryRun for Summary {
    fn applies(&self) -> bool {
        self.applies
    }

    fn nodes(&self) -> &[NodeRecord] {
        &self.nodes
    }
}

/// What a clean rollback did, in words: `rolled back: 2 change(s) undone; 1 left in place
/// (no undo needed: implement@localhost)`.
fn undone_words(report: &crate::rollback::Report) -> String {
    let mut words = format!("rolled back: {} change(s) undone", report.undone);
    if !report.left.is_empty() {
        words.push_str(&format!(
            "; {} left in place (no undo needed: {})",
            report.left.len(),
            report.left.join(", ")
        ));
    }
    words
}

impl Summary {
    /// Takes in what a rollback did.
    fn take(&mut self, report: &crate::rollback::Report) {
        self.undone = report.undone;
        self.unchanged = report.unchanged;
        self.left = report.left.clone();
        self.not_undone = report.not_undone.clone();
    }

    /// The run's end record: its status, exit code and what changed, was undone, or left.
    pub fn end_event(&self, run: &str) -> Event {
        Event::RunEnd {
            run: run.to_string(),
            status: self.status.clone(),
            exit_code: self.exit.code(),
            changed: self.changed,
            failed: self.failed,
            undone: self.undone,
            not_undone: self.not_undone.clone(),
            maybe_changed: self.maybe_changed,
            unchanged: self.unchanged,
            left: self.left.clone(),
            found: self.findings,
        }
    }

    /// A run that succeeded with findings ends `found problems` (exit 8); a failure keeps
    /// its own exit code and status.
    fn with_findings(&mut self) {
        if self.exit != ExitCode::Success || self.found.is_empty() {
            return;
        }
        self.found.sort();
        let mut named = self
            .found
            .iter()
            .take(SHOWN_FOUND)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if self.found.len() > SHOWN_FOUND {
            named.push_str(&format!(" and {} more", self.found.len() - SHOWN_FOUND));
        }
        self.exit = ExitCode::Found;
        self.status = format!("found problems: {} finding(s) ({named})", self.findings);
    }
}

pub struct Scheduler {
    cx: Arc<Ctx>,
    forks: usize,
    cancel: watch::Receiver<bool>,
    results: HashMap<(usize, String), BTreeMap<String, J>>,
    outcomes: HashMap<NodeIndex, Outcome>,
    done: Vec<Done>,
    /// Targets that failed within a step's `max_fail_percentage`: they run nothing more.
    failed_targets: std::collections::BTreeSet<String>,
    /// Dry-run: from this segment on, targets depend on a refresh that could not happen (the
    /// step before it would change something first), so nothing there can be predicted.
    unknown_from: Option<usize>,
    nodes: Vec<NodeRecord>,
    drift: Vec<crate::planfile::Drift>,
    /// `apply --plan --on-drift abort`: the run stopped because a node drifted.
    refused: bool,
    /// Every name a step registers a result or a fact under, in any scope.
    result_names: std::collections::BTreeSet<String>,
    /// The failure that stopped the run was the playbook's input (a template that could not
    /// be rendered at run time): exit 4 when nothing was changed.
    bad_input: bool,
    /// Reports that found a problem (`step@target`), and their findings.
    found: Vec<String>,
    findings: usize,
    /// Why the cancel flag was set, when it was not a signal (e.g. the run's locks were lost).
    stopped_by: Arc<std::sync::OnceLock<String>>,
}

impl Scheduler {
    /// Where the reason for a cancel is written when it is not a signal.
    pub fn stopped_by(mut self, why: Arc<std::sync::OnceLock<String>>) -> Self {
        self.stopped_by = why;
        self
    }

    /// Why the run was cancelled: the reason given, else a signal.
    fn stop_reason(&self) -> String {
        self.stopped_by
            .get()
            .cloned()
            .unwrap_or_else(|| "cancelled by signal".into())
    }

    pub fn new(cx: Ctx, forks: usize, cancel: watch::Receiver<bool>) -> Self {
        Scheduler {
            cx: Arc::new(cx),
            forks: forks.max(1),
            cancel,
            results: HashMap::new(),
            outcomes: HashMap::new(),
            done: Vec::new(),
            failed_targets: Default::default(),
            unknown_from: None,
            nodes: Vec::new(),
            drift: Vec::new(),
            refused: false,
            result_names: Default::default(),
            bad_input: false,
            found: Vec::new(),
            findings: 0,
            stopped_by: Default::default(),
        }
        .with_result_names()
    }

    fn with_result_names(mut self) -> Self {
        for s in &self.cx.plan.program.steps {
            self.result_names.insert(s.register.clone());
            if let crate::playbook::Kind::Set(facts) = &s.kind {
                self.result_names
                    .extend(facts.iter().map(|(k, _)| k.clone()));
            }
        }
        self
    }

    /// `apply --plan --on-drift skip`: targets the plan check refused run nothing (their
    /// drift is reported with the run's).
    pub fn refusing(mut self, drift: Vec<crate::planfile::Drift>) -> Self {
        for d in &drift {
            self.failed_targets.insert(d.target.clone());
        }
        self.drift.extend(drift);
        self
    }

    fn plan(&self) -> &Plan {
        &self.cx.plan
    }

    /// The template context of a node: host vars, the scope's params and vars, and results.
    /// The template context of `step` on `target`. With `every_result` false, a result
    /// registered on several targets but not on this one (the map of every host's value) is
    /// built only if the step reads it: building it for every node would cost each node time
    /// in the size of the fleet, most of it for results of steps still running elsewhere.
    fn context(&self, step: usize, target: &str, every_result: bool) -> Value {
        let plan = self.plan();
        let s = &plan.program.steps[step];
        let reads = |name: &str| {
            every_result
                || s.reads.contains_key(name)
                || s.when.iter().any(|w| w.vars.contains(name))
        };
        let mut map: BTreeMap<String, J> = BTreeMap::new();
        if let Some(h) = plan.inventory.host(target) {
            for (k, v) in &h.vars {
                map.insert(k.clone(), v.clone());
            }
        }
        map.insert("inventory_hostname".into(), J::String(target.to_string()));
        // Results visible in this scope (and, for include gates, in parent scopes).
        let mut scopes = vec![s.scope];
        let mut cur = plan.program.scopes[s.scope].parent;
        while let Some(p) = cur {
            scopes.push(p);
            cur = plan.program.scopes[p].parent;
        }
        for &sc in scopes.iter().rev() {
            for ((rs, name), per_target) in &self.results {
                if *rs != sc {
                    continue;
                }
                let v = match per_target.get(target) {
                    Some(v) => v.clone(),
                    None if per_target.len() == 1 => {
                        per_target.values().next().cloned().unwrap_or(J::Null)
                    }
                    None if !reads(name) => continue,
                    None => J::Object(
                        per_target
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    ),
                };
                map.insert(name.clone(), v);
            }
            for (k, v) in &plan.scope_values[sc] {
                map.insert(k.clone(), v.clone());
            }
        }
        Value::from_serialize(&map)
    }

    fn record(&mut self, ix: NodeIndex, r: &NodeResult) {
        let plan = self.cx.plan.clone();
        let node = plan.graph[ix].clone();
        let step = &plan.program.steps[node.step];
        let (scope, register) = (step.scope, step.register.clone());
        self.results
            .entry((scope, register))
            .or_default()
            .insert(node.target.clone(), r.registered.clone());
        for (k, v) in &r.facts {
            self.results
                .entry((scope, k.clone()))
                .or_default()
                .insert(node.target.clone(), v.clone());
        }
        self.outcomes.insert(ix, r.outcome);
        if matches!(step.kind, crate::playbook::Kind::Report(_))
            && r.outcome == Outcome::Ok
            && r.registered["found"] == J::Bool(true)
        {
            let rows = r.registered["rows"].as_array().map_or(0, Vec::len);
            self.found.push(format!("{}@{}", step.id, node.target));
            self.findings += rows.max(1);
        }
        self.nodes.push(NodeRecord {
            step: node.step,
            target: node.target.clone(),
            outcome: r.outcome,
            prediction: r.prediction.clone(),
            observed: if self.cx.dry_run && !step.mutating() && r.outcome == Outcome::Ok {
                crate::planfile::Observed::of(
                    r.action.as_deref(),
                    &r.registered,
                    self.cx.sink.redactor(),
                )
            } else {
                None
            },
            error: r.error.clone(),
        });
        if let Some(certain) = Touched::undo_candidate(r.outcome, r.touched, r.undo.is_some()) {
            self.done.push(Done {
                step: step.id.clone(),
                target: node.target.clone(),
                undo: r.undo.clone(),
                irreversible: match &step.undo {
                    Undo::Irreversible(w) => Some(w.clone()),
                    _ => None,
                },
                certain,
                consumes: step.consumes.clone(),
                api_command: match &step.kind {
                    crate::playbook::Kind::Api { command, .. } => Some(command.clone()),
                    _ => None,
                },
                consumed_by: None,
                // An unknown outcome: its command may still be running until then.
                settles_by: if certain { None } else { r.settles_by },
            });
        }
    }

    /// Run every step of `phase`: segment by segment, reading the inventory again after each
    /// `refresh_inventory` step of the phase.
    async fn phase(&mut self, phase: Phase) -> Result<(), String> {
        let segments = self.plan().refreshes.len() + 1;
        for seg in 0..segments {
            self.pass(phase, seg).await?;
            let refresh = self.plan().refreshes.get(seg).copied();
            if let Some(r) = refresh.filter(|&r| self.plan().program.steps[r].phase == phase) {
                self.refresh(r).await?;
            }
        }
        Ok(())
    }

    /// Run the nodes of one phase and segment. Returns Err(reason) on a failure or cancel.
    async fn pass(&mut self, phase: Phase, seg: usize) -> Result<(), String> {
        let plan = self.cx.plan.clone();
        let in_pass = |ix: NodeIndex| {
            let step = plan.graph[ix].step;
            plan.program.steps[step].phase == phase && plan.segments[step] == seg
        };
        let unpredictable = self.cx.dry_run && self.unknown_from.is_some_and(|k| seg >= k);
        let mut indeg: HashMap<NodeIndex, usize> = HashMap::new();
        let mut ready: VecDeque<NodeIndex> = VecDeque::new();
        for ix in plan.order() {
            if !in_pass(ix) || self.outcomes.contains_key(&ix) {
                continue;
            }
            let d = plan
                .graph
                .neighbors_directed(ix, Direction::Incoming)
                .filter(|p| in_pass(*p) && !self.outcomes.contains_key(p))
                .count();
            indeg.insert(ix, d);
            if d == 0 {
                ready.push_back(ix);
            }
        }
        if !indeg.is_empty() {
            let _ = self.cx.sink.emit(Event::Queued {
                run: self.cx.run.clone(),
                nodes: indeg.len(),
            });
        }
        let mut set: JoinSet<(NodeIndex, NodeResult)> = JoinSet::new();
        let mut failure: Option<String> = None;
        loop {
            while failure.is_none() && set.len() < self.forks {
                let Some(ix) = ready.pop_front() else { break };
                if *self.cancel.borrow() {
                    failure = Some(self.stop_reason());
                    break;
                }
                let node = plan.graph[ix].clone();
                let step = &plan.program.steps[node.step];
                // Dry-run: anything downstream of a predicted change cannot be predicted.
                let tainted = unpredictable
                    || self.cx.dry_run
                        && plan
                            .graph
                            .neighbors_directed(ix, Direction::Incoming)
                            // The same step on another target is a `serial` batch before
                            // this one, not something this one reads.
                            .filter(|p| plan.graph[*p].step != node.step)
                            .any(|p| {
                                matches!(
                                    self.outcomes.get(&p),
                                    Some(Outcome::WouldChange | Outcome::Unknown)
                                )
                            });
                let ctx = self.context(node.step, &node.target, false);
                // A `when` that reads no step's result (only params, vars, host variables)
                // is known even downstream of a predicted change: false is a sure skip.
                let surely_skipped = || {
                    step.when.iter().any(|w| {
                        w.vars
                            .iter()
                            .all(|v| !step.reads.contains_key(v) && !self.result_names.contains(v))
                            && matches!(plan.program.templates.test(w, &ctx), Ok(false))
                    })
                };
                let skip = if self.failed_targets.contains(&node.target)
                    || (tainted && surely_skipped())
                {
                    Some(Outcome::Skipped)
                } else if tainted {
                    Some(Outcome::Unknown)
                } else {
                    let mut skip = None;
                    for w in &step.when {
                        match plan.program.templates.test(w, &ctx) {
                            Ok(true) => {}
                            Ok(false) => {
                                skip = Some(Outcome::Skipped);
                                break;
                            }
                            Err(e) => {
                                // An undefined result (a skipped producer) makes the step skip.
                                tracing::debug!(step = %step.id, error = %e, "when could not be evaluated");
                                skip = Some(Outcome::Failed);
                                let r = NodeResult {
                                    outcome: Outcome::Failed,
                                    registered: json!({"failed": true}),
                                    facts: vec![],
                                    undo: None,
                                    error: Some(format!("when: {e}")),
                                    action: None,
                                    prediction: None,
                                    touched: None,
                                    settles_by: None,
                                    bad_input: true,
                                };
                                self.finish_now(
                                    ix,
                                    r,
                                    &mut ready,
                                    &mut indeg,
                                    &mut failure,
                                    &in_pass,
                                );
                                break;
                            }
                        }
                    }
                    skip
                };
                // apply --plan: the step runs here exactly where the plan ran it.
                let refused = match (&self.cx.expect, skip) {
                    (Some(expect), None | Some(Outcome::Skipped))
                        if step.phase == Phase::Steps
                            && !self.failed_targets.contains(&node.target) =>
                    {
                        expect.decision(&step.id, &node.target, skip.is_some())
                    }
                    _ => None,
                };
                if let Some(why) = refused {
                    let r = self.settled(&step.id, &node.target, Outcome::Drifted, Some(why));
                    self.finish_now(ix, r, &mut ready, &mut indeg, &mut failure, &in_pass);
                    continue;
                }
                match skip {
                    Some(Outcome::Failed) => continue,
                    Some(o) => {
                        let r = self.settled(&step.id, &node.target, o, None);
                        self.finish_now(ix, r, &mut ready, &mut indeg, &mut failure, &in_pass);
                        continue;
                    }
                    None => {}
                }
                let cx = self.cx.clone();
                let step_idx = node.step;
                let target = node.target.clone();
                set.spawn(async move {
                    let step = &cx.plan.program.steps[step_idx];
                    let r = run_node(&cx, step, &target, ctx).await;
                    (ix, r)
                });
            }
            if set.is_empty() {
                break;
            }
            let mut cancel = self.cancel.clone();
            if *cancel.borrow() && failure.is_none() {
                failure = Some(self.stop_reason());
            }
            self.halt_on(&failure);
            // Watched until it is set (a clone keeps its original's last-seen version, so once
            // set it would answer at once at every turn) or its sender is gone (never set).
            let watch_cancel = cancel.has_changed().is_ok() && !*cancel.borrow();
            tokio::select! {
                joined = set.join_next() => {
                    match joined {
                        Some(Ok((ix, r))) => self.finish_now(ix, r, &mut ready, &mut indeg, &mut failure, &in_pass),
                        Some(Err(e)) => failure = Some(format!("internal error: a worker panicked: {e}")),
                        None => {}
                    }
                }
                _ = cancel.changed(), if watch_cancel => {
                    if *cancel.borrow() && failure.is_none() {
                        failure = Some(self.stop_reason());
                    }
                }
            }
        }
        // A signal is the reason, even when a step interrupted by it reported first.
        if *self.cancel.borrow() {
            failure = Some(self.stop_reason());
        }
        self.halt_on(&failure);
        match failure {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    /// A node that comes to `outcome` without running (skipped, unknown, refused): its end
    /// recorded, its result.
    fn settled(
        &self,
        step: &str,
        target: &str,
        outcome: Outcome,
        error: Option<String>,
    ) -> NodeResult {
        let _ = self.cx.sink.emit(Event::StepEnd {
            run: self.cx.run.clone(),
            step: step.to_string(),
            target: target.to_string(),
            outcome,
            duration_ms: 0,
            action: None,
            rc: None,
            diff: None,
            output_sha256: None,
            stdout_tail: None,
            stderr_tail: None,
            error: error.clone(),
            undo: None,
            irreversible: None,
            touched: None,
        });
        let failed = outcome == Outcome::Drifted;
        NodeResult {
            outcome,
            registered: json!({"changed": false, "failed": failed, "skipped": outcome == Outcome::Skipped}),
            facts: vec![],
            undo: None,
            error,
            action: None,
            prediction: None,
            touched: None,
            settles_by: None,
            bad_input: false,
        }
    }

    /// After the `refresh_inventory` step `r` (every node of it finished, nothing in flight):
    /// read the inventory again and bind the later steps to it, with a record in the audit log.
    async fn refresh(&mut self, r: usize) -> Result<(), String> {
        let plan = self.cx.plan.clone();
        let step = plan.program.steps[r].id.clone();
        let outcomes: Vec<Outcome> = plan.targets[r]
            .iter()
            .filter_map(|t| {
                let node = crate::plan::Node {
                    step: r,
                    target: t.clone(),
                };
                plan.index.get(&node).and_then(|ix| self.outcomes.get(ix))
            })
            .copied()
            .collect();
        let (run, sink) = (self.cx.run.clone(), self.cx.sink.clone());
        let record = |status: RefreshStatus, error: Option<String>| Event::InventoryRefresh {
            run: run.clone(),
            after_step: step.clone(),
            status,
            cloudstack_inventory: None,
            inventory_sha256: None,
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
            targets: Vec::new(),
            error,
        };
        let emit = |e: Event| {
            sink.emit(e)
                .map_err(|e| format!("audit log: {e}; stopping"))
        };
        if self.cx.dry_run
            && outcomes
                .iter()
                .any(|o| matches!(o, Outcome::WouldChange | Outcome::Unknown))
        {
            let seg = plan.segments[r] + 1;
            self.unknown_from = Some(self.unknown_from.map_or(seg, |k| k.min(seg)));
            return emit(record(RefreshStatus::Unknown, None));
        }
        let ran = outcomes.iter().any(|o| {
            matches!(
                o,
                Outcome::Ok | Outcome::Changed | Outcome::NoChange | Outcome::FailedIgnored
            )
        });
        if !ran {
            return emit(record(RefreshStatus::NotNeeded, None));
        }
        let Some(reload) = self.cx.reload.clone() else {
            return emit(record(RefreshStatus::Static, None));
        };
        if *self.cancel.borrow() {
            return Err(self.stop_reason());
        }
        let failed = |error: String| {
            let _ = emit(record(RefreshStatus::Failed, Some(error.clone())));
            format!("refreshing the inventory after step {step}: {error}")
        };
        let (inventory, generated) = reload.reload().await.map_err(failed)?;
        let (added, removed, changed) = host_changes(&plan.inventory, &inventory);
        let done: Vec<(crate::plan::Node, Outcome)> = self
            .outcomes
            .iter()
            .map(|(ix, o)| (plan.graph[*ix].clone(), *o))
            .collect();
        drop(plan);
        // Nothing is in flight between passes, so the run's context and plan are ours alone.
        let cx = Arc::get_mut(&mut self.cx)
            .ok_or_else(|| failed("internal error: the run's context is still shared".into()))?;
        let plan = Arc::get_mut(&mut cx.plan)
            .ok_or_else(|| failed("internal error: the plan is still shared".into()))?;
        let targets = plan.rebind(inventory, r).map_err(&failed)?;
        self.outcomes = done
            .into_iter()
            .filter_map(|(node, o)| plan.index.get(&node).map(|ix| (*ix, o)))
            .collect();
        cx.transport.inventory_changed(&plan.inventory);
        emit(Event::InventoryRefresh {
            run: run.clone(),
            after_step: step.clone(),
            status: RefreshStatus::Refreshed,
            cloudstack_inventory: Some(generated.record()),
            inventory_sha256: Some(plan.inventory.digest()),
            added,
            removed,
            changed,
            targets,
            error: None,
        })
    }

    /// Once the run has failed, no node that has not announced its change yet may start it:
    /// nodes in flight (their checks running) end skipped instead of acting.
    fn halt_on(&self, failure: &Option<String>) {
        if failure.is_some() {
            self.cx
                .halt
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn finish_now(
        &mut self,
        ix: NodeIndex,
        r: NodeResult,
        ready: &mut VecDeque<NodeIndex>,
        indeg: &mut HashMap<NodeIndex, usize>,
        failure: &mut Option<String>,
        in_pass: &dyn Fn(NodeIndex) -> bool,
    ) {
        self.record(ix, &r);
        let plan = self.cx.plan.clone();
        if r.outcome == Outcome::Drifted {
            let node = &plan.graph[ix];
            let step = plan.program.steps[node.step].id.clone();
            let why = self
                .cx
                .sink
                .redactor()
                .redact(r.error.as_deref().unwrap_or_default())
                .into_owned();
            self.drift.push(crate::planfile::Drift {
                step: step.clone(),
                target: node.target.clone(),
                why: why.clone(),
            });
            let skip = self
                .cx
                .expect
                .as_ref()
                .is_some_and(|e| e.on_drift == crate::planfile::OnDrift::Skip);
            if skip {
                // This target runs nothing more (and its changes are put back at the end);
                // the others go on.
                self.failed_targets.insert(node.target.clone());
            } else {
                self.refused = true;
                if failure.is_none() {
                    *failure = Some(format!(
                        "the live state differs from the plan at step {step} on {}: {why}",
                        node.target
                    ));
                }
                return;
            }
        } else if r.outcome == Outcome::Failed {
            let node = &plan.graph[ix];
            let step = &plan.program.steps[node.step];
            let tolerated = step.max_fail_percentage.is_some_and(|max| {
                let total = plan.targets[node.step].len().max(1);
                let failed = plan.targets[node.step]
                    .iter()
                    .filter(|t| {
                        let n = crate::plan::Node {
                            step: node.step,
                            target: (*t).clone(),
                        };
                        plan.index.get(&n).and_then(|i| self.outcomes.get(i))
                            == Some(&Outcome::Failed)
                    })
                    .count();
                failed * 100 <= total * max as usize
            });
            if tolerated {
                self.failed_targets.insert(node.target.clone());
            } else {
                if failure.is_none() {
                    self.bad_input = r.bad_input;
                    *failure = Some(format!(
                        "step {} failed on {}: {}",
                        step.id,
                        node.target,
                        r.error.clone().unwrap_or_default()
                    ));
                }
                return;
            }
        }
        // A tolerated failure: that target's later steps are skipped (their `when` cannot
        // see a result), others go on.
        for succ in plan.graph.neighbors_directed(ix, Direction::Outgoing) {
            if !in_pass(succ) {
                continue;
            }
            if let Some(d) = indeg.get_mut(&succ) {
                *d = d.saturating_sub(1);
                if *d == 0 {
                    ready.push_back(succ);
                }
            }
        }
    }

    /// Run the whole plan: detect, applies_when, steps, verify; roll back on failure.
    pub async fn run(mut self) -> Summary {
        let mut applies = true;
        let mut result = self.phase(Phase::Detect).await;
        if result.is_ok() {
            if let Some(e) = &self.plan().program.applies_when {
                let ctx = self.context_root();
                match self.plan().program.templates.test(e, &ctx) {
                    Ok(b) => applies = b,
                    Err(err) => {
                        self.bad_input = true;
                        result = Err(format!("applies_when: {err}"));
                    }
                }
            }
        }
        if result.is_ok() && applies {
            result = self.phase(Phase::Steps).await;
            if result.is_ok() {
                result = self.phase(Phase::Verify).await;
            }
        }
        let plan = self.cx.plan.clone();
        let mut summary = Summary {
            exit: ExitCode::Success,
            status: if applies {
                "ok".into()
            } else {
                "not applicable".into()
            },
            outcomes: self
                .outcomes
                .iter()
                .map(|(ix, o)| {
                    let n = &plan.graph[*ix];
                    (
                        (plan.program.steps[n.step].id.clone(), n.target.clone()),
                        *o,
                    )
                })
                .collect(),
            changed: self.done.iter().filter(|d| d.certain).count(),
            maybe_changed: self.done.iter().filter(|d| !d.certain).count(),
            unchanged: 0,
            left: Vec::new(),
            found: self.found.clone(),
            findings: self.findings,
            failed: self
                .outcomes
                .values()
                .filter(|o| **o == Outcome::Failed)
                .count(),
            undone: 0,
            not_undone: Vec::new(),
            applies,
            nodes: std::mem::take(&mut self.nodes),
            drift: self.drift.clone(),
        };
        if result.is_ok() && !self.failed_targets.is_empty() {
            // Tolerated failures: the healthy targets keep their changes; the failed ones are
            // put back as they were.
            let failed: Vec<String> = self.failed_targets.iter().cloned().collect();
            let theirs: Vec<Done> = self
                .done
                .iter()
                .filter(|d| self.failed_targets.contains(&d.target))
                .cloned()
                .collect();
            let reason = if self.drift.is_empty() {
                format!(
                    "failed on {} (within max_fail_percentage)",
                    failed.join(", ")
                )
            } else {
                format!(
                    "refused on {} (the live state differs from the plan: --on-drift skip)",
                    failed.join(", ")
                )
            };
            let mut theirs = theirs;
            crate::rollback::consumed(&mut theirs);
            let report = crate::rollback::rollback(&self.cx, &theirs, &reason).await;
            summary.take(&report);
            summary.exit = if !report.not_undone.is_empty() {
                ExitCode::RollbackIncomplete
            } else if !self.drift.is_empty() {
                // Part of the plan was refused: the plan was not applied as approved.
                ExitCode::PlanRefused
            } else {
                ExitCode::RolledBack
            };
            summary.status = format!(
                "{reason}; their changes {}; other targets done",
                if report.not_undone.is_empty() {
                    "rolled back"
                } else {
                    "NOT ALL rolled back"
                }
            );
        }
        if let Err(reason) = result {
            crate::rollback::consumed(&mut self.done);
            let report = crate::rollback::rollback(&self.cx, &self.done, &reason).await;
            summary.take(&report);
            // Whether anything was changed and then undone, or left by declaration; or
            // nothing was changed at all (what may have changed was read again: as before).
            let touched = report.undone > 0 || !report.left.is_empty();
            if report.not_undone.is_empty() && self.refused {
                summary.exit = ExitCode::PlanRefused;
                summary.status = if touched {
                    format!("refused ({reason}); {}", undone_words(&report))
                } else {
                    format!("refused ({reason}); nothing was changed")
                };
            } else if report.not_undone.is_empty() && touched {
                summary.exit = ExitCode::RolledBack;
                summary.status = format!("failed ({reason}); {}", undone_words(&report));
            } else if report.not_undone.is_empty() {
                // A template the run could not render is bad input, like one validate refuses.
                summary.exit = if self.bad_input {
                    ExitCode::InvalidInput
                } else {
                    ExitCode::FailedUnchanged
                };
                summary.status = format!("failed ({reason}); nothing was changed");
                if report.unchanged > 0 {
                    summary.status.push_str(&format!(
                        " ({} change(s) whose outcome was unknown were read again: as before)",
                        report.unchanged
                    ));
                }
            } else {
                summary.exit = ExitCode::RollbackIncomplete;
                summary.status = format!("failed ({reason}); ROLLBACK INCOMPLETE");
            }
        }
        summary.with_findings();
        let _ = self.cx.sink.emit(summary.end_event(&self.cx.run));
        let _ = self.cx.sink.sync();
        summary
    }

    fn context_root(&self) -> Value {
        // applies_when: root params, vars and results, as seen from the controller.
        let first_root = self
            .plan()
            .program
            .steps
            .iter()
            .position(|s| s.scope == 0)
            .unwrap_or(0);
        if self.plan().program.steps.is_empty() {
            return Value::from_serialize(&self.plan().scope_values[0]);
        }
        self.context(first_root, CONTROLLER, true)
    }
}

/// Hosts that appeared, disappeared, or are reached differently (address, port, user, key,
/// jumps, host key policy) in `after`.
fn host_changes(
    before: &crate::inventory::Inventory,
    after: &crate::inventory::Inventory,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let reach = |h: &crate::inventory::Host| serde_json::to_value(&h.conn).unwrap_or(J::Null);
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for h in after.hosts() {
        match before.host(&h.name) {
            None => added.push(h.name.clone()),
            Some(old) if reach(old) != reach(h) => changed.push(h.name.clone()),
            Some(_) => {}
        }
    }
    let removed = before
        .hosts()
        .filter(|h| after.host(&h.name).is_none())
        .map(|h| h.name.clone())
        .collect();
    (added, removed, changed)
}
