//! Making a plan: the file `remedy plan` writes, from the plan (what would run where) and its
//! dry-run ([`DryRun`]: whether the playbook applies, and what each node came to), with the
//! inputs hashed and secret parameters kept out ([`SavedPlan::make`]).
//!
//! Not here: running the dry-run (`crate::app::make_plan`), sealing and the file format
//! (`mod.rs`), checks before applying (`apply.rs`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::*;

/// What a plan is made from, besides the dry-run.
pub struct Making<'a> {
    pub playbook_path: &'a Path,
    pub inventory: &'a [PathBuf],
    pub extra: &'a [(String, String)],
    pub tags: &'a [String],
    pub valid_for: std::time::Duration,
}

/// What one node came to, kept for the plan file and the plan check.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub step: usize,
    pub target: String,
    pub outcome: Outcome,
    pub prediction: Option<Prediction>,
    /// Dry-run only: what a read-only step ran and saw.
    pub observed: Option<Observed>,
    pub error: Option<String>,
}

/// What a dry-run came to, as a plan is made from it and checked against it: whether the
/// playbook applies, and every node's outcome in order. The run's summary
/// ([`crate::scheduler::Summary`]) is one.
pub trait DryRun {
    fn applies(&self) -> bool;
    fn nodes(&self) -> &[NodeRecord];
}

impl SavedPlan {
    /// A plan from a dry-run's `summary` of `plan`.
    pub fn make(
        plan: &Plan,
        summary: &impl DryRun,
        m: &Making,
        run: &str,
    ) -> Result<SavedPlan, Error> {
        let now = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .map_err(|e| Error::Other(e.to_string()))?;
        let valid = jiff::SignedDuration::try_from(m.valid_for)
            .map_err(|e| Error::invalid(format!("--valid-for: {e}")))?;
        let expires = now
            .checked_add(valid)
            .map_err(|e| Error::invalid(format!("--valid-for: {e}")))?;
        // Declared secret, or named like one (the redactor would mask its value anyway).
        let secret: BTreeSet<&str> = plan
            .program
            .params()
            .iter()
            .filter(|(n, p)| p.secret || crate::redact::is_secret_name(n))
            .map(|(n, _)| n.as_str())
            .collect();
        let salt = uuid::Uuid::new_v4().simple().to_string();
        let given = m
            .extra
            .iter()
            .map(|(k, v)| {
                let g = if secret.contains(k.as_str()) {
                    Given::SecretSha256(secret_hash(&salt, k, v))
                } else {
                    Given::Value(v.clone())
                };
                (k.clone(), g)
            })
            .collect();
        let mut steps: Vec<PlannedStep> = plan
            .program
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| PlannedStep {
                id: s.id.clone(),
                name: (!s.name.is_empty() && s.name != s.id).then(|| s.name.clone()),
                phase: s.phase,
                kind: match &s.kind {
                    Kind::Api { command, .. } => format!("api {command}"),
                    k => k.name().to_string(),
                },
                mutating: s.mutating(),
                undo: undo_words(&s.undo),
                irreversible: match &s.undo {
                    Undo::Irreversible(why) => Some(why.clone()),
                    _ => None,
                },
                when: s.when.iter().map(|w| w.source.to_string()).collect(),
                targets_after_refresh: None,
                nodes: plan.targets[i]
                    .iter()
                    .map(|t| PlannedNode {
                        target: t.clone(),
                        prediction: Prediction::of(Outcome::Skipped),
                        observed: None,
                    })
                    .collect(),
            })
            .collect();
        // What the dry-run found, node by node.
        for n in summary.nodes() {
            let Some(step) = steps.get_mut(n.step) else {
                continue;
            };
            let prediction = match &n.prediction {
                Some(p) => p.clone(),
                None => Prediction::of(n.outcome),
            };
            let node = PlannedNode {
                target: n.target.clone(),
                prediction,
                observed: n.observed.clone(),
            };
            match step.nodes.iter_mut().find(|x| x.target == n.target) {
                Some(slot) => *slot = node,
                None => step.nodes.push(node),
            }
        }
        // Steps whose targets the dry-run could not know: they are chosen after a refresh
        // that comes after a predicted change.
        for (i, s) in steps.iter_mut().enumerate() {
            if let Some(r) = plan.bound_after(i) {
                let refreshed = summary
                    .nodes()
                    .iter()
                    .any(|n| n.step == r && n.outcome == Outcome::WouldChange)
                    || summary
                        .nodes()
                        .iter()
                        .any(|n| n.step == r && n.outcome == Outcome::Unknown);
                if refreshed {
                    s.targets_after_refresh = Some(plan.program.steps[r].id.clone());
                    for node in &mut s.nodes {
                        node.prediction = Prediction::of(Outcome::Unknown);
                        node.observed = None;
                    }
                }
            }
        }
        let hosts: BTreeSet<&String> = plan.targets.iter().flatten().collect();
        let targets = hosts
            .into_iter()
            .map(|h| TargetRef {
                host: h.clone(),
                reached: if h == crate::plan::CONTROLLER {
                    "the controller itself (CloudStack API calls go from here)".into()
                } else {
                    plan.host(h)
                        .map(crate::inventory::show::reach)
                        .unwrap_or_else(|| "(not in the inventory)".into())
                },
            })
            .collect();
        let body = Body {
            remedy_version: env!("CARGO_PKG_VERSION").into(),
            created_at: now.to_string(),
            expires_at: expires.to_string(),
            created_by: crate::identity::operator(),
            created_on: crate::identity::hostname(),
            run: run.to_string(),
            playbook: PlaybookRef {
                name: plan.program.name.clone(),
                path: absolute(m.playbook_path),
                files: plan
                    .program
                    .files
                    .iter()
                    .map(|(p, h)| FileHash {
                        path: absolute(p),
                        sha256: h.clone(),
                    })
                    .collect(),
            },
            inventory: InventoryRef {
                sources: m.inventory.iter().map(|p| absolute(p)).collect(),
                files_sha256: inventory_files_sha256(m.inventory)?,
            },
            params: ParamsRef {
                sha256: resolved_sha256(plan, &salt),
                given,
                salt,
            },
            shown_params: plan.shown_params(),
            limit: plan.limit.clone(),
            tags: m.tags.to_vec(),
            applies: summary.applies(),
            applies_when: plan
                .program
                .applies_when
                .as_ref()
                .map(|e| e.source.trim().to_string()),
            targets,
            steps,
        };
        let mut value = serde_json::to_value(&body).map_err(|e| Error::Other(e.to_string()))?;
        // Everything but the parameters as given, which hold secrets only as salted hashes
        // (and which the redactor's key names would mask: `secret_sha256`).
        let params = value
            .as_object_mut()
            .and_then(|o| o.remove("params"))
            .unwrap_or(J::Null);
        plan.redactor.redact_json(&mut value);
        if let Some(o) = value.as_object_mut() {
            o.insert("params".into(), params);
        }
        let body: Body = serde_json::from_value(value)
            .map_err(|e| Error::Other(format!("internal error: plan body: {e}")))?;
        Ok(SavedPlan::seal(body))
    }
}
