//! Approvals: `remedy approve FILE --by NAME [--ticket CHG]` appends a record to the audit
//! log naming the plan's id; `apply --plan --require-approval` looks for one.
//!
//! With a key file (`--key`, or `$REMEDY_APPROVAL_KEY`) the record carries an HMAC-SHA256 of
//! what it says, and `apply --approval-key` counts only approvals that verify with that key:
//! only someone holding the key can approve. Without a key the record carries a plain SHA-256:
//! it is a record in a tamper-evident log, not a proof of who wrote it.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{short, SavedPlan};
use crate::audit::AuditLog;
use crate::error::Error;
use crate::event::Event;
pub use crate::planlink::ApprovalRef;

/// Where the approval key file is named when `--key` / `--approval-key` is not given.
pub const KEY_ENV: &str = "REMEDY_APPROVAL_KEY";

const HMAC: &str = "hmac-sha256";
const PLAIN: &str = "sha256";

/// An approval key: the bytes of a file only its owner can read.
pub struct Key(Vec<u8>);

impl Key {
    /// Read `path`, or the file `$REMEDY_APPROVAL_KEY` names; `None` when neither is set.
    pub fn load(path: Option<&Path>) -> Result<Option<Key>, Error> {
        let path: PathBuf = match path {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os(KEY_ENV) {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => return Ok(None),
            },
        };
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(&path)
            .map_err(|e| Error::invalid(format!("approval key {}: {e}", path.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::invalid(format!(
                "approval key {} is readable by others (mode {mode:o}): chmod 600 it",
                path.display()
            )));
        }
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::invalid(format!("approval key {}: {e}", path.display())))?;
        let trimmed = bytes.trim_ascii_end().to_vec();
        if trimmed.len() < 16 {
            return Err(Error::invalid(format!(
                "approval key {} is too short ({} bytes; use at least 16, e.g. `head -c 32 /dev/urandom | base64`)",
                path.display(),
                trimmed.len()
            )));
        }
        Ok(Some(Key(trimmed)))
    }
}

/// The text an approval signs.
fn message(plan: &str, by: &str, ticket: Option<&str>, at: &str, operator: &str) -> String {
    format!(
        "remedy-approval/1\nplan {plan}\nby {by}\nticket {}\nat {at}\noperator {operator}\n",
        ticket.unwrap_or("")
    )
}

fn sign(msg: &str, key: Option<&Key>) -> (String, String) {
    match key {
        Some(Key(k)) => {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(k)
                .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
            mac.update(msg.as_bytes());
            (
                HMAC.into(),
                crate::playbook::load::hex(&mac.finalize().into_bytes()),
            )
        }
        None => (
            PLAIN.into(),
            crate::playbook::load::hex(&Sha256::digest(msg.as_bytes())),
        ),
    }
}

/// Record an approval of `saved` by `by` in the audit log, made from the account `operator`
/// (`app::operator()`). Refused for an expired plan.
pub fn approve(
    saved: &SavedPlan,
    by: &str,
    ticket: Option<&str>,
    key: Option<&Key>,
    audit: &Path,
    operator: &str,
) -> Result<ApprovalRef, Error> {
    let by = by.trim();
    if by.is_empty() {
        return Err(Error::invalid("--by needs the approver's name"));
    }
    saved.check_file(None, jiff::Timestamp::now())?;
    let at = jiff::Timestamp::now().to_string();
    let operator = operator.to_string();
    let msg = message(&saved.id, by, ticket, &at, &operator);
    let (alg, signature) = sign(&msg, key);
    let approval = short(&crate::playbook::load::hex(&Sha256::digest(msg.as_bytes()))).to_string();
    let log = AuditLog::open(audit).map_err(|e| Error::Audit(e.to_string()))?;
    let event = Event::Approval {
        approval: approval.clone(),
        plan: saved.id.clone(),
        playbook: saved.plan.playbook.name.clone(),
        by: by.to_string(),
        ticket: ticket.map(str::to_string),
        at: at.clone(),
        plan_made_by: saved.plan.created_by.clone(),
        alg: alg.clone(),
        signature,
        operator: operator.clone(),
    };
    let value = serde_json::to_value(&event).map_err(|e| Error::Other(e.to_string()))?;
    log.append(value, true)
        .map_err(|e| Error::Audit(e.to_string()))?;
    Ok(ApprovalRef {
        approval,
        by: by.to_string(),
        ticket: ticket.map(str::to_string),
        at,
        alg,
        operator,
    })
}

/// The approvals of plan `id` in the audit log that hold: the log's chain verifies, and each
/// signature matches what the record says (with `key`: only HMAC approvals made with it).
pub fn find(audit: &Path, id: &str, key: Option<&Key>) -> Result<Vec<ApprovalRef>, Error> {
    let report = crate::audit::verify(audit).map_err(|e| {
        Error::PlanRefused(format!(
            "cannot read approvals from {}: {e}",
            audit.display()
        ))
    })?;
    if !report.problems.is_empty() {
        return Err(Error::PlanRefused(format!(
            "the audit log {} does not verify ({}), so its approvals cannot be trusted",
            audit.display(),
            report.problems[0]
        )));
    }
    let records = crate::audit::read(audit).map_err(|e| Error::PlanRefused(e.to_string()))?;
    let mut out = Vec::new();
    for r in records {
        let v = &r.value;
        if v["event"] != "approval" || v["plan"] != id {
            continue;
        }
        let Ok(Event::Approval {
            approval,
            plan,
            by,
            ticket,
            at,
            alg,
            signature,
            operator,
            ..
        }) = serde_json::from_value::<Event>(v.clone())
        else {
            continue;
        };
        let msg = message(&plan, &by, ticket.as_deref(), &at, &operator);
        let holds = match (alg.as_str(), key) {
            (HMAC, Some(k)) => sign(&msg, Some(k)).1 == signature,
            // Without the key an HMAC cannot be checked; it is still a record.
            (HMAC, None) => true,
            (PLAIN, None) => sign(&msg, None).1 == signature,
            // A key was asked for: an unkeyed approval does not count.
            _ => false,
        };
        if holds {
            out.push(ApprovalRef {
                approval,
                by,
                ticket,
                at,
                alg,
                operator,
            });
        }
    }
    Ok(out)
}

/// The approvals that let `saved` run under `--require-approval` (and `--four-eyes`: not by
/// the plan's author), or the refusal.
pub fn require(
    saved: &SavedPlan,
    found: Vec<ApprovalRef>,
    four_eyes: bool,
    audit: &Path,
    keyed: bool,
) -> Result<Vec<ApprovalRef>, Error> {
    let id = short(&saved.id);
    if found.is_empty() {
        return Err(Error::PlanRefused(format!(
            "plan {id} has no approval{} in {}: `remedy approve PLAN --by NAME` first",
            if keyed { " signed with this key" } else { "" },
            audit.display()
        )));
    }
    if !four_eyes {
        return Ok(found);
    }
    // Neither the name given nor the account that recorded it may be the author's.
    let author = &saved.plan.created_by;
    let others: Vec<ApprovalRef> = found
        .into_iter()
        .filter(|a| &a.by != author && &a.operator != author)
        .collect();
    if others.is_empty() {
        return Err(Error::PlanRefused(format!(
            "plan {id} is approved only by {author}, who made it (by name or by the account that recorded the approval); --four-eyes needs an approval by someone else"
        )));
    }
    Ok(others)
}

/// The run that already applied plan `id` and changed something, if any: a plan is applied
/// once.
pub fn applied_in(audit: &Path, id: &str) -> Option<String> {
    let records = crate::audit::read(audit).ok()?;
    let runs: Vec<&str> = records
        .iter()
        .filter(|r| {
            r.value["event"] == "run_start"
                && r.value["mode"] == "apply"
                && r.value["plan"]["id"] == id
        })
        .filter_map(|r| r.value["run"].as_str())
        .collect();
    records
        .iter()
        .filter(|r| r.value["event"] == "run_end")
        .find(|r| {
            r.value["run"]
                .as_str()
                .is_some_and(|run| runs.contains(&run))
                && r.value["changed"].as_u64().unwrap_or(0) > 0
        })
        .and_then(|r| r.value["run"].as_str().map(str::to_string))
}
