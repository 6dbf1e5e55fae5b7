//! Holding a run to its plan: what each node was predicted to do ([`Expect`], from
//! [`SavedPlan::expect`]), how a live decision differs from it ([`drift`], [`json_diff`]), and a
//! dry-run compared with a plan as a whole ([`compare`]).
//!
//! Not here: the checks before the run starts (`apply.rs`).

use std::collections::{BTreeSet, HashMap};

use super::*;

/// What `apply --plan` holds each node to, during the run.
#[derive(Debug, Clone)]
pub struct Expect {
    nodes: HashMap<(String, String), Prediction>,
    /// Steps whose targets the plan knows (not chosen after a refresh).
    bound: BTreeSet<String>,
    pub on_drift: OnDrift,
}

impl Expect {
    pub fn get(&self, step: &str, target: &str) -> Option<&Prediction> {
        self.nodes.get(&(step.to_string(), target.to_string()))
    }

    /// Whether a step runs (`skipped` false) or not where the plan said it would. `None`: as
    /// planned.
    pub fn decision(&self, step: &str, target: &str, skipped: bool) -> Option<String> {
        if !self.bound.contains(step) {
            return None;
        }
        let Some(p) = self.get(step, target) else {
            return Some(format!(
                "{target} is not a target of step {step} in the plan"
            ));
        };
        match p.outcome {
            Outcome::WouldChange | Outcome::NoChange | Outcome::Ok if skipped => Some(format!(
                "the plan had this step run here ({}); now its `when` is false",
                p.outcome.word()
            )),
            Outcome::Skipped if !skipped => Some(
                "the plan skipped this step here (its `when` was false); now it would run".into(),
            ),
            _ => None,
        }
    }
}

/// How `now` differs from `planned`, in words (`None`: as planned). `now` is redacted as the
/// plan was.
pub fn drift(planned: &Prediction, now: &Prediction, r: &Redactor) -> Option<String> {
    if planned.outcome == Outcome::Unknown {
        return None;
    }
    let now = now.redacted(r);
    if planned.outcome != now.outcome {
        let detail = match (&planned.outcome, &now.outcome) {
            (Outcome::WouldChange, Outcome::NoChange) => {
                "already as wanted: someone or something changed it since the plan".to_string()
            }
            (Outcome::NoChange, Outcome::WouldChange) => format!(
                "it needs changing now{}",
                now.diff
                    .as_deref()
                    .map(|d| format!(":\n{d}"))
                    .unwrap_or_default()
            ),
            _ => String::new(),
        };
        return Some(format!(
            "the plan predicted {}, now it is {}{}",
            planned.outcome.word(),
            now.outcome.word(),
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        ));
    }
    if planned.pre != now.pre {
        return Some(format!(
            "the state it was planned from changed:\n{}",
            json_diff(
                planned.pre.as_ref().unwrap_or(&J::Null),
                now.pre.as_ref().unwrap_or(&J::Null)
            )
        ));
    }
    if planned.actions != now.actions {
        return Some(format!(
            "the action differs from the plan's:\n  planned: {}\n  now:     {}",
            planned.actions.join(" && "),
            now.actions.join(" && ")
        ));
    }
    None
}

/// `path: before -> after` lines for the leaves that differ.
pub fn json_diff(a: &J, b: &J) -> String {
    fn walk(path: &str, a: Option<&J>, b: Option<&J>, out: &mut Vec<String>) {
        match (a, b) {
            (Some(J::Object(x)), Some(J::Object(y))) => {
                let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    walk(&format!("{path}.{k}"), x.get(k), y.get(k), out);
                }
            }
            (x, y) if x != y => {
                let show = |v: Option<&J>| v.map(|v| v.to_string()).unwrap_or("(absent)".into());
                out.push(format!(
                    "  {}: {} -> {}",
                    if path.is_empty() { "." } else { path },
                    show(x),
                    show(y)
                ));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", Some(a), Some(b), &mut out);
    out.join("\n")
}

/// Every difference between the plan and a dry-run made now (`summary`), node by node, for
/// the check `apply --plan` makes before it changes anything.
pub fn compare(saved: &SavedPlan, plan: &Plan, summary: &impl DryRun) -> Vec<Drift> {
    let body = &saved.plan;
    let mut out = Vec::new();
    if body.applies != summary.applies() {
        out.push(Drift {
            step: "applies_when".into(),
            // The whole plan: no target to leave out.
            target: String::new(),
            why: if body.applies {
                "the playbook applied when the plan was made; now `applies_when` is false (fixed already?)".into()
            } else {
                "the playbook did not apply when the plan was made (the plan changes nothing); now it does".into()
            },
        });
        return out;
    }
    if !body.applies {
        // Nothing ran past detection, then or now.
        return out;
    }
    let expect = saved.expect(OnDrift::Abort);
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for n in summary.nodes() {
        let step = &plan.program.steps[n.step];
        if step.phase != Phase::Steps || !expect.bound.contains(&step.id) {
            continue;
        }
        seen.insert((step.id.clone(), n.target.clone()));
        let now = n
            .prediction
            .clone()
            .unwrap_or_else(|| Prediction::of(n.outcome));
        let why = match expect.get(&step.id, &n.target) {
            None => Some(format!(
                "{} is not a target of step {} in the plan",
                n.target, step.id
            )),
            Some(p) => match (p.outcome, now.outcome) {
                (Outcome::Unknown, _) => None,
                // The dry-run now cannot predict what the plan could: an earlier node differs
                // (reported on its own).
                (_, Outcome::Unknown) => None,
                (Outcome::Ok, Outcome::Ok) => None,
                (a, b) if a == Outcome::Skipped || b == Outcome::Skipped => (a != b).then(|| {
                    if b == Outcome::Skipped {
                        format!(
                            "the plan had this step run here ({}); now its `when` is false",
                            a.word()
                        )
                    } else {
                        "the plan skipped this step here (its `when` was false); now it would run"
                            .into()
                    }
                }),
                _ => drift(p, &now, &plan.redactor),
            },
        };
        if let Some(why) = why {
            out.push(Drift {
                step: step.id.clone(),
                target: n.target.clone(),
                why,
            });
        }
    }
    for s in body
        .steps
        .iter()
        .filter(|s| s.phase == Phase::Steps && expect.bound.contains(&s.id))
    {
        for n in &s.nodes {
            let gone = !seen.contains(&(s.id.clone(), n.target.clone()));
            if gone && n.prediction.outcome != Outcome::Unknown {
                out.push(Drift {
                    step: s.id.clone(),
                    target: n.target.clone(),
                    why: format!(
                        "planned ({}), but {} is no longer a target of this step",
                        n.prediction.outcome.word(),
                        n.target
                    ),
                });
            }
        }
    }
    out
}

impl SavedPlan {
    /// What the run holds each node to.
    pub fn expect(&self, on_drift: OnDrift) -> Expect {
        let mut nodes = HashMap::new();
        let mut bound = BTreeSet::new();
        for s in self.plan.steps.iter().filter(|s| s.phase == Phase::Steps) {
            if s.targets_after_refresh.is_none() {
                bound.insert(s.id.clone());
            }
            for n in &s.nodes {
                nodes.insert((s.id.clone(), n.target.clone()), n.prediction.clone());
            }
        }
        Expect {
            nodes,
            bound,
            on_drift,
        }
    }
}
