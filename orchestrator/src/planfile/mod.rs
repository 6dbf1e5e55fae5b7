//! Saved plans: `remedy plan -o FILE`, `remedy show-plan`, `remedy apply --plan FILE`.
//!
//! A plan file is what a dry-run predicted, written down so that an approver can read it and
//! `apply --plan` can hold the run to it:
//! - the inputs, by SHA-256: every playbook file, the inventory files, the parameters (secret
//!   ones only as a salted hash), and remedy's version;
//! - the targets and how each is reached;
//! - per step and target: the predicted outcome (will change, no change, skipped, unknown),
//!   the rendered actions (redacted), the diff, the pre-state the prediction came from, and
//!   the undo computed from it;
//! - an expiry.
//!
//! The plan's id is the SHA-256 of its body, so an edit shows. `apply --plan` refuses (exit 5)
//! before anything runs when the file, its age, remedy's version, or any input differs
//! ([`SavedPlan::check_file`], [`SavedPlan::check_inputs`]); then it runs the dry-run again
//! and compares every node ([`compare`]), and during the run each node is compared once more
//! just before it acts ([`Expect`], used by the runner and the scheduler).
//!
//! Not here: how the predictions are made (runner, scheduler), the rendering for people
//! (`render`), approvals (`approval`).

pub mod approval;
pub mod render;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value as J;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::event::{FileHash, Outcome};
use crate::plan::Plan;
use crate::playbook::{Kind, Phase, Undo};
use crate::redact::Redactor;
use crate::scheduler::Summary;

/// The file format this remedy writes and reads.
pub const FORMAT: &str = "remedy-plan/1";

/// How long a plan stays valid when `--valid-for` is not given.
pub const DEFAULT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Characters of a read-only step's output kept in the plan.
const OBSERVED_TAIL: usize = 400;

/// What `apply --plan` does with the rest of the run when a target drifted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OnDrift {
    /// Stop, and undo what this run changed.
    #[default]
    Abort,
    /// Leave that target alone (its changes in this run are undone); go on with the others.
    Skip,
}

/// One node refused because it differs from the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub step: String,
    pub target: String,
    pub why: String,
}

/// A mutating step's decision on one target, before it acts: recorded by a dry-run, and
/// found again by `apply --plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub outcome: Outcome,
    /// What will run (rendered, redacted), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// The state the decision was made from: a module's probed state, or a `check:`'s exit
    /// status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre: Option<J>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The undo computed from `pre` (modules), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undo: Vec<String>,
}

impl Prediction {
    pub fn change(actions: Vec<String>, pre: Option<J>, diff: Option<String>) -> Self {
        Prediction {
            outcome: Outcome::WouldChange,
            actions,
            pre,
            diff,
            undo: Vec::new(),
        }
    }

    pub fn no_change(pre: Option<J>) -> Self {
        Prediction {
            outcome: Outcome::NoChange,
            actions: Vec::new(),
            pre,
            diff: None,
            undo: Vec::new(),
        }
    }

    fn of(outcome: Outcome) -> Self {
        Prediction {
            outcome,
            actions: Vec::new(),
            pre: None,
            diff: None,
            undo: Vec::new(),
        }
    }

    fn redacted(&self, r: &Redactor) -> Prediction {
        let mut v = serde_json::to_value(self).unwrap_or(J::Null);
        r.redact_json(&mut v);
        serde_json::from_value(v).unwrap_or_else(|_| self.clone())
    }
}

/// What a read-only step ran and saw, for the approver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rc: Option<i64>,
    /// SHA-256 of the output (stdout, or the API reply).
    pub sha256: String,
    /// The end of stdout, or for an API call how many items it listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

impl Observed {
    /// From a step's registered result (`rc`/`stdout`, or `json`/`items`), secrets masked
    /// before anything is cut or hashed.
    pub fn of(action: Option<&str>, registered: &J, r: &Redactor) -> Option<Observed> {
        let mut registered = registered.clone();
        r.redact_json(&mut registered);
        let action = action.map(|a| r.redact(a).into_owned());
        let (text, summary, rc) = if let Some(out) = registered.get("stdout").and_then(J::as_str) {
            let start = out.len().saturating_sub(OBSERVED_TAIL);
            let start = (start..=out.len())
                .find(|&i| out.is_char_boundary(i))
                .unwrap_or(out.len());
            (
                out.to_string(),
                (!out.is_empty()).then(|| out[start..].to_string()),
                registered.get("rc").and_then(J::as_i64),
            )
        } else if let Some(reply) = registered.get("json") {
            let items = registered
                .get("items")
                .and_then(J::as_array)
                .map(|a| a.len());
            (
                reply.to_string(),
                items.map(|n| format!("{n} item(s)")),
                None,
            )
        } else {
            return None;
        };
        Some(Observed {
            action,
            rc,
            sha256: hex(&Sha256::digest(text.as_bytes())),
            summary,
        })
    }
}

/// One step on one target, as planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedNode {
    pub target: String,
    #[serde(flatten)]
    pub prediction: Prediction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
}

/// One step, as planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub phase: Phase,
    /// `ssh`, `api COMMAND`, or a module's key.
    pub kind: String,
    pub mutating: bool,
    /// How a change is undone, in words.
    pub undo: String,
    /// Why the step cannot be undone, when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irreversible: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<String>,
    /// The `refresh_inventory` step after which this step's targets are chosen, when the
    /// dry-run could not read the inventory again (the refresh comes after a change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets_after_refresh: Option<String>,
    pub nodes: Vec<PlannedNode>,
}

/// A value given with `-e`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Given {
    Value(String),
    /// A secret parameter: SHA-256 of salt, name and value; the value is never stored.
    SecretSha256(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaybookRef {
    pub name: String,
    /// The path it was loaded from (absolute).
    pub path: String,
    /// Every file read: the playbook and its includes.
    pub files: Vec<FileHash>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryRef {
    /// The inventory paths as given (absolute).
    pub sources: Vec<String>,
    /// SHA-256 over the inventory files as read (vars files included).
    pub files_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamsRef {
    /// The `-e` values as given.
    pub given: BTreeMap<String, Given>,
    /// Salt for the secret hashes.
    pub salt: String,
    /// SHA-256 of every resolved parameter value (defaults and includes too).
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRef {
    pub host: String,
    pub reached: String,
}

/// The body of a plan file: what the id is the digest of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Body {
    pub remedy_version: String,
    pub created_at: String,
    pub expires_at: String,
    pub created_by: String,
    pub created_on: String,
    /// The dry-run that made the plan (in the audit log).
    pub run: String,
    pub playbook: PlaybookRef,
    pub inventory: InventoryRef,
    pub params: ParamsRef,
    /// The parameter values, secrets masked, for reading.
    pub shown_params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Whether `applies_when` held: when false, the plan changes nothing.
    pub applies: bool,
    /// The playbook's `applies_when`, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies_when: Option<String>,
    pub targets: Vec<TargetRef>,
    pub steps: Vec<PlannedStep>,
}

impl Body {
    /// Steps that will (or may) run something that cannot be undone.
    pub fn irreversible(&self) -> Vec<&PlannedStep> {
        self.steps
            .iter()
            .filter(|s| s.irreversible.is_some())
            .filter(|s| {
                s.targets_after_refresh.is_some()
                    || s.nodes.iter().any(|n| {
                        matches!(
                            n.prediction.outcome,
                            Outcome::WouldChange | Outcome::Unknown
                        )
                    })
            })
            .collect()
    }

    /// (will change, no change, unknown) node counts of the mutating steps.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for n in self
            .steps
            .iter()
            .filter(|s| s.mutating && s.phase == Phase::Steps)
            .flat_map(|s| &s.nodes)
        {
            match n.prediction.outcome {
                Outcome::WouldChange => c.0 += 1,
                Outcome::NoChange => c.1 += 1,
                Outcome::Unknown => c.2 += 1,
                _ => {}
            }
        }
        c
    }
}

/// A plan file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format: String,
    /// SHA-256 of the canonical JSON of `plan`.
    pub id: String,
    pub plan: Body,
}

/// The short form of an id, for people.
pub fn short(id: &str) -> &str {
    // (An id read from an edited file need not be ASCII.)
    id.char_indices().nth(12).map_or(id, |(i, _)| &id[..i])
}

fn hex(bytes: &[u8]) -> String {
    crate::playbook::load::hex(bytes)
}

/// The digest of a body as JSON: serde_json's maps are sorted, so this is canonical.
fn digest(body: &J) -> String {
    hex(&Sha256::digest(body.to_string().as_bytes()))
}

fn refused(msg: impl Into<String>) -> Error {
    Error::PlanRefused(msg.into())
}

/// SHA-256 of one secret parameter value.
fn secret_hash(salt: &str, name: &str, value: &str) -> String {
    let mut h = Sha256::new();
    for part in [salt, name, value] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize())
}

/// The inventory files alone (no CloudStack source read), as `apply --plan` compares them.
pub fn inventory_files_sha256(paths: &[PathBuf]) -> Result<String, Error> {
    // The digest covers the paths read too: read them by one name, however they were given.
    let paths: Vec<PathBuf> = paths.iter().map(|p| PathBuf::from(absolute(p))).collect();
    let files = crate::inventory::Inventory::load(&paths)
        .map_err(|e| Error::Invalid(crate::error::Diagnostic::new(e.to_string()).into()))?;
    Ok(files.digest())
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// What a plan is made from, besides the dry-run.
pub struct Making<'a> {
    pub playbook_path: &'a Path,
    pub inventory: &'a [PathBuf],
    pub extra: &'a [(String, String)],
    pub tags: &'a [String],
    pub valid_for: std::time::Duration,
}

/// `remedy plan`: a dry-run of `plan` (recorded in the audit log as the making of a plan),
/// and the plan made from it, written to `out` when given (with a `plan_written` record).
/// No plan when the dry-run did not succeed: the summary says why.
pub async fn make(
    plan: Plan,
    transport: std::sync::Arc<dyn crate::transport::Transport>,
    mut opts: crate::app::RunOptions,
    making: &Making<'_>,
    out: Option<&Path>,
    cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<(String, Summary, Option<SavedPlan>), Error> {
    opts.dry_run = true;
    opts.planning = true;
    opts.from_plan = None;
    let audit = opts.audit_log.clone();
    let copy = plan.clone();
    let (run, summary) = crate::app::execute(plan, transport, opts, None, cancel).await?;
    if summary.exit != crate::error::ExitCode::Success {
        return Ok((run, summary, None));
    }
    let saved = SavedPlan::make(&copy, &summary, making, &run)?;
    if let Some(out) = out {
        saved.write(out)?;
        let event = crate::event::Event::PlanWritten {
            run: run.clone(),
            plan: saved.id.clone(),
            file: absolute(out),
            expires_at: saved.plan.expires_at.clone(),
            irreversible: saved
                .plan
                .irreversible()
                .iter()
                .map(|s| s.id.clone())
                .collect(),
        };
        if let Some(path) = audit {
            let recorded = crate::audit::AuditLog::open(&path)
                .map_err(|e| e.to_string())
                .and_then(|log| {
                    let v = serde_json::to_value(&event).map_err(|e| e.to_string())?;
                    log.append(v, true).map(|_| ()).map_err(|e| e.to_string())
                });
            if let Err(e) = recorded {
                let _ = std::fs::remove_file(out);
                return Err(Error::Audit(format!("{e}; the plan was not kept")));
            }
        }
    }
    Ok((run, summary, Some(saved)))
}

impl SavedPlan {
    /// A plan from a dry-run's `summary` of `plan`.
    pub fn make(plan: &Plan, summary: &Summary, m: &Making, run: &str) -> Result<SavedPlan, Error> {
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
        for n in &summary.nodes {
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
                    .nodes
                    .iter()
                    .any(|n| n.step == r && n.outcome == Outcome::WouldChange)
                    || summary
                        .nodes
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
            created_by: crate::app::operator(),
            created_on: crate::app::hostname(),
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
            applies: summary.applies,
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

    /// A plan of `body`, its id computed. (An edited body sealed again is a new plan, with a
    /// new id: approvals name ids.)
    pub fn seal(body: Body) -> SavedPlan {
        let value = serde_json::to_value(&body).unwrap_or(J::Null);
        SavedPlan {
            format: FORMAT.into(),
            id: digest(&value),
            plan: body,
        }
    }

    /// The file's text.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Write the plan to `path` (readable by its owner only: it describes the estate).
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::Other(format!("cannot write {}: {e}", tmp.display())))?;
        f.write_all(self.to_json().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::Other(format!("cannot write {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::Other(format!("cannot write {}: {e}", path.display())))
    }

    /// Read a plan file and check that it is whole: the format is one this remedy reads, the
    /// id is the digest of the body, the version is compatible. Refusals are exit 5.
    pub fn read(path: &Path) -> Result<SavedPlan, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(format!("cannot read the plan {}: {e}", path.display())))?;
        let value: J = serde_json::from_str(&text).map_err(|e| {
            refused(format!(
                "{}:{}:{}: not a plan file: {e}",
                path.display(),
                e.line(),
                e.column()
            ))
        })?;
        let format = value.get("format").and_then(J::as_str).unwrap_or("");
        if format != FORMAT {
            return Err(refused(format!(
                "{}: format {format:?} is not one this remedy reads ({FORMAT}); make the plan again with this remedy",
                path.display()
            )));
        }
        let id = value.get("id").and_then(J::as_str).unwrap_or("");
        let body = value.get("plan").cloned().unwrap_or(J::Null);
        let actual = digest(&body);
        if actual != id {
            return Err(refused(format!(
                "{}: the plan was edited after it was made: its content's digest is {} but its id says {}; make and approve a new plan",
                path.display(),
                short(&actual),
                short(id)
            )));
        }
        let version = body
            .get("remedy_version")
            .and_then(J::as_str)
            .unwrap_or("")
            .to_string();
        if !compatible(&version, env!("CARGO_PKG_VERSION")) {
            return Err(refused(format!(
                "{}: made by remedy {version}, which this remedy ({}) does not apply: a plan is applied by the release that made it (same major version; same minor before 1.0)",
                path.display(),
                env!("CARGO_PKG_VERSION")
            )));
        }
        serde_json::from_value(value).map_err(|e| {
            refused(format!(
                "{}: not a plan this remedy understands: {e}",
                path.display()
            ))
        })
    }

    /// Refusals that need nothing but the file: the expected id, the expiry.
    pub fn check_file(&self, expect_id: Option<&str>, now: jiff::Timestamp) -> Result<(), Error> {
        if let Some(want) = expect_id {
            let want = want.trim().to_ascii_lowercase();
            if want.len() < 12 || !self.id.starts_with(&want) {
                return Err(refused(format!(
                    "this plan's id is {}, not the expected {want} (--expect-id takes the id or at least its first 12 characters)",
                    self.id
                )));
            }
        }
        let expires: jiff::Timestamp = self
            .plan
            .expires_at
            .parse()
            .map_err(|e| refused(format!("the plan's expires_at cannot be read: {e}")))?;
        if now > expires {
            return Err(refused(format!(
                "plan {} expired at {} (made at {}); make a new plan",
                short(&self.id),
                self.plan.expires_at,
                self.plan.created_at
            )));
        }
        Ok(())
    }

    /// The `-e` values to plan with again: the plan's own, with the secret ones from
    /// `secrets` (checked against their hashes). Any other `-e` is refused.
    pub fn params(&self, given: &[(String, String)]) -> Result<Vec<(String, String)>, Error> {
        let p = &self.plan.params;
        let mut out = Vec::new();
        for (name, g) in &p.given {
            match g {
                Given::Value(v) => {
                    if let Some((_, other)) = given.iter().find(|(k, _)| k == name) {
                        if other != v {
                            return Err(refused(format!(
                                "parameter {name}: the plan was made with {name}={v}; -e {name}={other} would apply something else"
                            )));
                        }
                    }
                    out.push((name.clone(), v.clone()));
                }
                Given::SecretSha256(h) => match given.iter().find(|(k, _)| k == name) {
                    Some((_, v)) if secret_hash(&p.salt, name, v) == *h => {
                        out.push((name.clone(), v.clone()))
                    }
                    Some(_) => {
                        return Err(refused(format!(
                            "secret parameter {name} is not the value the plan was made with"
                        )))
                    }
                    None => {
                        return Err(refused(format!(
                            "secret parameter {name} is not stored in the plan: pass it again with -e {name}=..."
                        )))
                    }
                },
            }
        }
        if let Some((k, _)) = given.iter().find(|(k, _)| !p.given.contains_key(k)) {
            return Err(refused(format!(
                "parameter {k} was not given when the plan was made; a plan is applied with its own parameters"
            )));
        }
        Ok(out)
    }

    /// Refusals about the inputs on disk and the plan rebuilt from them: the playbook files,
    /// the inventory files, the parameters.
    pub fn check_inputs(&self, plan: &Plan, inventory: &[PathBuf]) -> Result<(), Error> {
        let body = &self.plan;
        let now: BTreeMap<String, &String> = plan
            .program
            .files
            .iter()
            .map(|(p, h)| (absolute(p), h))
            .collect();
        for f in &body.playbook.files {
            match now.get(&f.path) {
                Some(h) if **h == f.sha256 => {}
                Some(h) => {
                    return Err(refused(format!(
                        "playbook file {} changed since the plan was made (sha256 {} then, {} now)",
                        f.path,
                        short(&f.sha256),
                        short(h)
                    )))
                }
                None => {
                    return Err(refused(format!(
                        "playbook file {} is no longer part of the playbook",
                        f.path
                    )))
                }
            }
        }
        if let Some(extra) = now
            .keys()
            .find(|p| !body.playbook.files.iter().any(|f| &f.path == *p))
        {
            return Err(refused(format!(
                "the playbook now also reads {extra}, which the plan did not"
            )));
        }
        let sources: Vec<String> = inventory.iter().map(|p| absolute(p)).collect();
        if sources != body.inventory.sources {
            return Err(refused(format!(
                "the plan was made with inventory {}; this run names {}",
                body.inventory.sources.join(", "),
                sources.join(", ")
            )));
        }
        let files = inventory_files_sha256(inventory)?;
        if files != body.inventory.files_sha256 {
            return Err(refused(format!(
                "the inventory files ({}) changed since the plan was made (sha256 {} then, {} now)",
                sources.join(", "),
                short(&body.inventory.files_sha256),
                short(&files)
            )));
        }
        if resolved_sha256(plan, &body.params.salt) != body.params.sha256 {
            return Err(refused(
                "the resolved parameters differ from the plan's (sha256), though the values given match: a default changed?",
            ));
        }
        if plan.limit != body.limit {
            return Err(refused("the --limit differs from the plan's"));
        }
        Ok(())
    }

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

    /// The link from a run to this plan, for the audit log.
    pub fn link(&self, file: &Path, approvals: Vec<approval::ApprovalRef>) -> PlanLink {
        PlanLink {
            id: self.id.clone(),
            file: absolute(file),
            made_by: self.plan.created_by.clone(),
            made_at: self.plan.created_at.clone(),
            made_in_run: self.plan.run.clone(),
            approvals,
        }
    }
}

/// What `apply --plan` was asked.
#[derive(Debug, Clone)]
pub struct Applying {
    pub file: PathBuf,
    pub expect_id: Option<String>,
    /// `-e`: only the plan's secret parameters (or the same values again).
    pub extra: Vec<(String, String)>,
    /// `-i`: empty for the plan's own.
    pub inventory: Vec<PathBuf>,
    pub on_drift: OnDrift,
    pub require_approval: bool,
    pub four_eyes: bool,
    pub approval_key: Option<PathBuf>,
    pub audit: PathBuf,
}

/// A plan file read and checked as far as it can be without the live inventory: whole,
/// expected, not expired, playbook and inventory files as hashed, parameters as given,
/// approved when approval is required.
#[derive(Debug, Clone)]
pub struct Opened {
    pub saved: SavedPlan,
    pub inventory: Vec<PathBuf>,
    pub extra: Vec<(String, String)>,
    pub link: PlanLink,
}

impl Applying {
    pub fn open(&self, now: jiff::Timestamp) -> Result<Opened, Error> {
        let saved = SavedPlan::read(&self.file)?;
        saved.check_file(self.expect_id.as_deref(), now)?;
        // The files as they are on disk, before anything is parsed: an edited playbook is a
        // refusal, not a syntax error.
        for f in &saved.plan.playbook.files {
            let now = std::fs::read(&f.path)
                .map(|b| hex(&Sha256::digest(b)))
                .map_err(|e| {
                    refused(format!(
                        "playbook file {} cannot be read ({e}); the plan was made from it",
                        f.path
                    ))
                })?;
            if now != f.sha256 {
                return Err(refused(format!(
                    "playbook file {} changed since the plan was made (sha256 {} then, {} now)",
                    f.path,
                    short(&f.sha256),
                    short(&now)
                )));
            }
        }
        let inventory: Vec<PathBuf> = if self.inventory.is_empty() {
            saved
                .plan
                .inventory
                .sources
                .iter()
                .map(PathBuf::from)
                .collect()
        } else {
            self.inventory.clone()
        };
        let sources: Vec<String> = inventory.iter().map(|p| absolute(p)).collect();
        if sources != saved.plan.inventory.sources {
            return Err(refused(format!(
                "the plan was made with inventory {}; this run names {}",
                saved.plan.inventory.sources.join(", "),
                sources.join(", ")
            )));
        }
        let files = inventory_files_sha256(&inventory).map_err(|e| {
            refused(format!(
                "the plan's inventory cannot be read: {}",
                e.render(false).trim_end()
            ))
        })?;
        if files != saved.plan.inventory.files_sha256 {
            return Err(refused(format!(
                "the inventory files ({}) changed since the plan was made (sha256 {} then, {} now)",
                sources.join(", "),
                short(&saved.plan.inventory.files_sha256),
                short(&files)
            )));
        }
        if let Some(run) = approval::applied_in(&self.audit, &saved.id) {
            return Err(refused(format!(
                "plan {} was applied already (run {run} changed things); a plan is applied once: make a new one",
                short(&saved.id)
            )));
        }
        let extra = saved.params(&self.extra)?;
        let key = approval::Key::load(self.approval_key.as_deref())?;
        let approvals = if self.require_approval {
            let found = approval::find(&self.audit, &saved.id, key.as_ref())?;
            approval::require(&saved, found, self.four_eyes, &self.audit, key.is_some())?
        } else {
            // Recorded when there are any; not required.
            approval::find(&self.audit, &saved.id, key.as_ref()).unwrap_or_default()
        };
        let link = saved.link(&self.file, approvals);
        Ok(Opened {
            saved,
            inventory,
            extra,
            link,
        })
    }
}

impl Opened {
    /// The plan built again from the plan's playbook, the inventory as resolved now, and the
    /// plan's parameters, limit and tags; refused where it does not match the file.
    pub fn rebuild(&self, inventory: crate::inventory::Inventory) -> Result<Plan, Error> {
        let body = &self.saved.plan;
        // (The files are as hashed, so a failure here is the inventory's: refused.)
        let cannot = |d: crate::error::Diagnostics| {
            refused(format!(
                "the plan cannot be built again: {}",
                Error::Invalid(d).render(false).trim_end()
            ))
        };
        let program = crate::playbook::load(&body.playbook.path)
            .and_then(|l| crate::playbook::compile(&l))
            .map_err(cannot)?;
        let opts = crate::plan::Options {
            extra: self.extra.clone(),
            limit: body.limit.clone(),
            tags: body.tags.clone(),
            validating: false,
        };
        let plan = crate::plan::build(program, inventory, &opts).map_err(cannot)?;
        self.saved.check_inputs(&plan, &self.inventory)?;
        // Each target reached as it was when the plan was made (a target gone is a drift).
        for t in &body.targets {
            if t.host == crate::plan::CONTROLLER {
                continue;
            }
            if let Some(now) = plan.host(&t.host).map(crate::inventory::show::reach) {
                if now != t.reached {
                    return Err(refused(format!(
                        "{} is reached as {now} now; the plan was made when it was reached as {}",
                        t.host, t.reached
                    )));
                }
            }
        }
        Ok(plan)
    }

    pub fn from_plan(&self, on_drift: OnDrift) -> crate::app::FromPlan {
        crate::app::FromPlan {
            saved: self.saved.clone(),
            link: self.link.clone(),
            on_drift,
        }
    }
}

/// SHA-256 of every resolved parameter value (each scope's params and vars), with the values
/// that hold a secret replaced by their salted hash: comparable between the plan and its
/// apply, and no shortcut to guessing a secret.
fn resolved_sha256(plan: &Plan, salt: &str) -> String {
    let mut h = Sha256::new();
    for (i, scope) in plan.scope_values.iter().enumerate() {
        for (k, v) in scope {
            let text = match v {
                J::String(s) => s.clone(),
                other => other.to_string(),
            };
            let shown = if plan.redactor.redact(&text) != text {
                format!("secret:{}", secret_hash(salt, k, &text))
            } else {
                v.to_string()
            };
            h.update(format!("{i}\0{k}\0{shown}\n").as_bytes());
        }
    }
    hex(&h.finalize())
}

/// `a` and `b` apply each other's plans: same major version, and before 1.0 the same minor.
fn compatible(a: &str, b: &str) -> bool {
    let parts = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parts(a), parts(b)) {
        (Some((0, x)), Some((0, y))) => x == y,
        (Some((x, _)), Some((y, _))) => x == y,
        _ => false,
    }
}

fn undo_words(u: &Undo) -> String {
    match u {
        Undo::Auto => "automatic, from the state before".into(),
        Undo::Ssh(t) => format!("its rollback command, `{}`", t.source.trim()),
        Undo::Api { command, .. } => format!("its rollback call, `{command}`"),
        Undo::NotNeeded(why) => format!("none needed: {why}"),
        Undo::Irreversible(why) => format!("IRREVERSIBLE: {why}"),
        Undo::ReadOnly => "read-only".into(),
    }
}

/// In the audit log's `run_start` of `apply --plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanLink {
    pub id: String,
    pub file: String,
    pub made_by: String,
    pub made_at: String,
    /// The `remedy plan` run (its dry-run) in the audit log.
    pub made_in_run: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<approval::ApprovalRef>,
}

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
pub fn compare(saved: &SavedPlan, plan: &Plan, summary: &Summary) -> Vec<Drift> {
    let body = &saved.plan;
    let mut out = Vec::new();
    if body.applies != summary.applies {
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
    for n in &summary.nodes {
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

#[cfg(test)]
mod tests;
