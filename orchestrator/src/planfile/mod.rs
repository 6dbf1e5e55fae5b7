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

mod apply;
pub mod approval;
mod expect;
mod make;
pub mod render;

pub use apply::{Applying, FromPlan, Opened};
pub use expect::{compare, drift, json_diff, Expect};
pub use make::{DryRun, Making, NodeRecord};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value as J;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::event::{FileHash, Outcome};
use crate::plan::Plan;
pub use crate::planlink::{Drift, OnDrift, PlanLink};
use crate::playbook::{Kind, Phase, Undo};
use crate::redact::Redactor;

/// The file format this remedy writes and reads.
pub const FORMAT: &str = "remedy-plan/1";

/// How long a plan stays valid when `--valid-for` is not given.
pub const DEFAULT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Characters of a read-only step's output kept in the plan.
const OBSERVED_TAIL: usize = 400;

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

pub fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

impl SavedPlan {
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

#[cfg(test)]
mod tests;
