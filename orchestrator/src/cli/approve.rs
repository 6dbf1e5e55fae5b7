//! `remedy approve`: records an approval of a saved plan in the audit log, signed with a key
//! file when there is one. The approval's rules are `crate::planfile::approval`'s.

use std::path::PathBuf;

use crate::audit::AuditLog;
use crate::error::ExitCode;
use crate::planfile::SavedPlan;

use super::output::fail;

/// `remedy approve`.
pub(super) fn run(
    file: &std::path::Path,
    by: Option<String>,
    ticket: Option<String>,
    key: Option<PathBuf>,
    audit_log: Option<PathBuf>,
) -> ExitCode {
    let saved = match SavedPlan::read(file) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let key = match crate::planfile::approval::Key::load(key.as_deref()) {
        Ok(k) => k,
        Err(e) => return fail(&e),
    };
    let audit_path = audit_log.unwrap_or_else(AuditLog::default_path);
    let by = by.unwrap_or_else(crate::app::operator);
    match crate::planfile::approval::approve(
        &saved,
        &by,
        ticket.as_deref(),
        key.as_ref(),
        &audit_path,
        &crate::app::operator(),
    ) {
        Ok(a) => {
            outln!(
                "approved plan {} ({}) by {}{}; approval {} ({}) recorded in {}",
                crate::planfile::short(&saved.id),
                saved.plan.playbook.name,
                a.by,
                a.ticket
                    .as_deref()
                    .map(|t| format!(" for {t}"))
                    .unwrap_or_default(),
                a.approval,
                if a.alg == "hmac-sha256" {
                    "signed with the key"
                } else {
                    "no key: recorded, not signed"
                },
                audit_path.display()
            );
            ExitCode::Success
        }
        Err(e) => fail(&e),
    }
}
