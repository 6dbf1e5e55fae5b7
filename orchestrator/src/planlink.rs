//! What ties a run to the plan it applies: the link `apply --plan` records in its `run_start`
//! ([`PlanLink`], with the approvals it was applied under, [`ApprovalRef`]), and the nodes it
//! refuses because the live state differs from the plan ([`Drift`], and [`OnDrift`], what the
//! run does then).
//!
//! Owns only these data types, the vocabulary shared by the events ([`crate::event`]), the
//! plan file ([`crate::planfile`]) and the code that runs plans ([`crate::app`]). Making,
//! sealing, approving and checking a plan stay in `planfile`.

use serde::{Deserialize, Serialize};

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
    pub approvals: Vec<ApprovalRef>,
}

/// An approval, as a run that applies the plan records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRef {
    pub approval: String,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    pub at: String,
    /// `hmac-sha256` (verified with the key) or `sha256` (a record only).
    pub alg: String,
    /// The account that ran `remedy approve` (signed with the rest).
    #[serde(default)]
    pub operator: String,
}
