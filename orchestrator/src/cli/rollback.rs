//! `remedy rollback RUN`: undoes what a finished run changed, from the pre-state the audit log
//! recorded, as a run of its own; the hosts are reached through the inventory given, else the one
//! the run recorded (read again, its changes since warned about). Undos that cannot be replayed
//! (host gone, a secret masked) are reported, not run. The undo itself is `crate::rollback`'s.

use std::path::PathBuf;
use std::sync::Arc;

use crate::audit::{self, AuditLog};
use crate::error::{Error, ExitCode};
use crate::report::{self, Output};
use crate::transport::route::Router;

use super::output::{color, fail};
use super::resolve::{load_inventory, resolve_inventory, resolve_loaded, Resolved};

/// `remedy rollback RUN`: lists what the run left to undo, newest first, and with `--yes`
/// undoes it as a run of its own, audited.
pub(super) async fn run(
    run: String,
    inventory: Vec<PathBuf>,
    dry_run: bool,
    yes: bool,
    audit_log: Option<PathBuf>,
    argv: Vec<String>,
) -> ExitCode {
    use crate::event::{Event, RunMode, Sink};
    let path = audit_log.unwrap_or_else(AuditLog::default_path);
    let records = match audit::read(&path) {
        Ok(r) => r,
        Err(e) => return fail(&Error::Audit(e.to_string())),
    };
    let pending = match crate::rollback::pending_from_audit(&records, &run) {
        Ok(p) => p,
        Err(e) => return fail(&Error::Other(e)),
    };
    if pending.is_empty() {
        outln!("run {run}: nothing left to undo");
        return ExitCode::Success;
    }
    outln!(
        "run {run}: {} change(s) to undo, newest first:",
        pending.len()
    );
    for d in pending.iter().rev() {
        let how = match (&d.undo, &d.irreversible) {
            (Some(u), _) => u
                .actions
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" && "),
            (None, Some(w)) => format!("cannot be undone: irreversible ({w})"),
            (None, None) => "nothing to undo (declared as needing none)".into(),
        };
        outln!("  {} @ {}: {how}", d.step, d.target);
    }
    if dry_run {
        return ExitCode::Success;
    }
    if !yes {
        return fail(&Error::Other("pass --yes to undo these changes".into()));
    }
    let start = records
        .iter()
        .find(|r| r.value["event"] == "run_start" && r.value["run"] == run.as_str())
        .map(|r| r.value.clone())
        .unwrap_or_default();
    let (inv_paths, (inv, api, cloudstack_inventory)) =
        match rollback_inventory(&run, &start, inventory).await {
            Ok(found) => found,
            Err(e) => return fail(&e),
        };
    let mut redactor = crate::redact::Redactor::new();
    crate::cloudstack::register_secrets(&inv, &mut redactor);
    let log = match AuditLog::open(&path) {
        Ok(l) => l,
        Err(e) => return fail(&Error::Audit(format!("{e}; refusing to act"))),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let printer = tokio::spawn(report::print(rx, Output::Human, color()));
    let sink = Sink::new(Some(log), redactor.clone(), Some(tx));
    let id = crate::app::new_run_id();
    let plan = crate::plan::Plan::for_inventory(inv, redactor);
    let (reachable, missing): (Vec<_>, Vec<_>) = pending
        .into_iter()
        .partition(|d| d.undo.is_none() || plan.host(&d.target).is_some());
    // An undo recorded with a secret masked cannot be replayed: `rm -f /tmp/********` would
    // run the mask, a shell glob, instead of the secret.
    let (reachable, masked): (Vec<_>, Vec<_>) =
        reachable.into_iter().partition(|d| !undo_is_masked(d));
    if let Err(e) = sink.emit(Event::RunStart {
        run: id.clone(),
        playbook: format!("rollback of {run}"),
        mode: RunMode::Rollback,
        operator: crate::app::operator(),
        host: crate::app::hostname(),
        argv,
        files: Vec::new(),
        inventory: plan
            .inventory
            .sources()
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        inventory_sha256: plan.inventory.digest(),
        params_sha256: String::new(),
        params: Default::default(),
        remedy_version: env!("CARGO_PKG_VERSION").into(),
        rollback_of: Some(run.clone()),
        plan: None,
        cloudstack_inventory,
        inventory_origin: crate::app::inventory_origin(&inv_paths, &plan.inventory),
    }) {
        return fail(&Error::Audit(format!("{e}; refusing to act")));
    }
    let cx = crate::runner::Ctx {
        transport: Arc::new(Router::with_api(&plan.inventory, api)),
        plan: Arc::new(plan),
        sink: sink.clone(),
        run: id.clone(),
        dry_run: false,
        cancel: None,
        reload: None,
        expect: None,
        halt: Default::default(),
    };
    let mut report = if reachable.is_empty() {
        crate::rollback::Report::default()
    } else {
        crate::rollback::rollback(
            &cx,
            &reachable,
            &format!("operator asked to roll back run {run}"),
        )
        .await
    };
    let why_masked = |_: &crate::scheduler::Done| {
        "its recorded undo holds a secret, masked in the audit log: undo it by hand".to_string()
    };
    let unreplayable = missing
        .iter()
        .map(|d| (d, host_missing(&run, &d.target, &inv_paths)))
        .chain(masked.iter().map(|d| (d, why_masked(d))));
    for (d, why) in unreplayable {
        let _ = sink.emit(Event::UndoEnd {
            run: id.clone(),
            step: d.step.clone(),
            target: d.target.clone(),
            ok: false,
            restored: None,
            error: Some(why.clone()),
            note: None,
            consumed_by: None,
            caveat: None,
        });
        report
            .not_undone
            .push(format!("{}@{}: {why}", d.step, d.target));
    }
    let exit = if report.not_undone.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::RollbackIncomplete
    };
    let _ = sink.emit(Event::RunEnd {
        run: id,
        status: if report.not_undone.is_empty() {
            format!(
                "run {run} rolled back: {} change(s) undone, {} found as before, {} left in \
                 place (no undo needed)",
                report.undone,
                report.unchanged,
                report.left.len()
            )
        } else {
            format!("rollback of {run} INCOMPLETE")
        },
        exit_code: exit.code(),
        changed: 0,
        failed: report.not_undone.len(),
        undone: report.undone,
        not_undone: report.not_undone,
        maybe_changed: 0,
        unchanged: report.unchanged,
        left: report.left,
        found: 0,
    });
    let _ = sink.sync();
    drop(cx);
    drop(sink);
    let _ = printer.await;
    exit
}

/// The inventory `remedy rollback RUN` reaches the run's hosts with: the paths given (`-i`),
/// else the ones the run recorded. Either way resolved as `apply` resolves it
/// ([`resolve_inventory`]): the hosts the CloudStack source generates are read from the zone
/// now, so a host that appeared during the run (after a `refresh_inventory`) is found too.
/// Recorded files that are gone are an error that says to pass `-i`; files changed since the run
/// are a warning.
async fn rollback_inventory(
    run: &str,
    start: &serde_json::Value,
    given: Vec<PathBuf>,
) -> Result<(Vec<PathBuf>, Resolved), Error> {
    if !given.is_empty() {
        let resolved = resolve_inventory(&given).await?;
        return Ok((given, resolved));
    }
    let recorded = RecordedInventory::of(start);
    if let Some(gone) = recorded.paths.iter().find(|p| !p.exists()) {
        return Err(Error::Invalid(
            crate::error::Diagnostic::new(format!(
                "run {run} read its inventory from {}, which is gone",
                gone.display()
            ))
            .with_help(format!(
                "pass the inventory that reaches the run's hosts: remedy rollback {run} -i FILE --yes"
            ))
            .into(),
        ));
    }
    let inv = load_inventory(&recorded.paths).map_err(|e| {
        Error::Invalid(
            crate::error::Diagnostic::new(format!(
                "run {run}'s inventory cannot be read again: {e}"
            ))
            .with_help(format!(
                "pass the inventory that reaches the run's hosts: remedy rollback {run} -i FILE --yes"
            ))
            .into(),
        )
    })?;
    if let Some(was) = recorded.files_sha256.as_deref() {
        if inv.digest() != was {
            eprintln!(
                "warning: the inventory of run {run} changed since the run ({}): its hosts are \
                 looked up as the files say now",
                recorded
                    .paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if recorded.cloudstack_source && inv.cloudstack_source().is_none() {
        eprintln!(
            "warning: run {run} found hosts through the CloudStack API \
             (remedy_cloudstack_inventory), which its inventory no longer declares"
        );
    }
    let resolved = resolve_loaded(inv, &recorded.paths).await?;
    Ok((recorded.paths, resolved))
}

/// A run's inventory, as its `run_start` record tells it.
#[derive(Debug, Default, PartialEq)]
struct RecordedInventory {
    /// The paths to read again.
    paths: Vec<PathBuf>,
    /// The files' digest at the run, when it can be compared with the files alone.
    files_sha256: Option<String>,
    /// The hosts were completed from the CloudStack API.
    cloudstack_source: bool,
}

impl RecordedInventory {
    /// From `inventory_origin` (the absolute paths); in a record written before remedy kept it,
    /// from `inventory`, the files the run read, less the hosts the API generated (`<cloudstack
    /// api>`) and the `group_vars`/`host_vars` files (read again beside the others).
    fn of(start: &serde_json::Value) -> RecordedInventory {
        let origin = start
            .get("inventory_origin")
            .cloned()
            .and_then(|o| serde_json::from_value::<crate::event::InventoryOrigin>(o).ok());
        if let Some(o) = origin {
            return RecordedInventory {
                paths: o.paths.iter().map(|p| PathBuf::from(&p.absolute)).collect(),
                files_sha256: Some(o.files_sha256).filter(|d| !d.is_empty()),
                cloudstack_source: o.cloudstack_source,
            };
        }
        let generated = !start["cloudstack_inventory"].is_null();
        let read: Vec<PathBuf> = start["inventory"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(PathBuf::from))
            .collect();
        let vars_file = |p: &PathBuf| {
            p.components()
                .any(|c| c.as_os_str() == "group_vars" || c.as_os_str() == "host_vars")
        };
        let paths: Vec<PathBuf> = read
            .iter()
            .filter(|p| !p.to_string_lossy().starts_with('<') && !vars_file(p))
            .cloned()
            .collect();
        RecordedInventory {
            paths,
            // With generated hosts the record's digest covers them too: nothing to compare.
            files_sha256: start["inventory_sha256"]
                .as_str()
                .filter(|d| !generated && !d.is_empty())
                .map(str::to_string),
            cloudstack_source: generated,
        }
    }
}

/// Why a change on `host` is left in place: the host is not in the inventory read again.
fn host_missing(run: &str, host: &str, paths: &[PathBuf]) -> String {
    let read = if paths.is_empty() {
        "no inventory (the run had none; pass -i FILE)".to_string()
    } else {
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "not undone: host {host}, changed by run {run}, is not in the inventory now (read from \
         {read}); it may have been removed or renamed since the run. If it still exists, run \
         `remedy rollback {run} -i FILE --yes` with an inventory that has it; otherwise undo the \
         change by hand (`remedy audit show {run}` has its undo)"
    )
}

/// Whether a recorded undo action holds [`crate::redact::Redactor::MASK`] where a secret was.
fn undo_is_masked(d: &crate::scheduler::Done) -> bool {
    d.undo.as_ref().is_some_and(|u| {
        u.actions
            .iter()
            .any(|a| a.to_string().contains(crate::redact::Redactor::MASK))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_inventory_is_read_from_its_absolute_paths() {
        let start = serde_json::json!({
            "event": "run_start", "run": "r1",
            "inventory": ["<cloudstack api>", "lab.yml"],
            "inventory_sha256": "with-generated",
            "cloudstack_inventory": {"hosts": 9},
            "inventory_origin": {
                "paths": [{"given": "lab.yml", "absolute": "/ops/lab.yml"}],
                "files_sha256": "files",
                "cloudstack_source": true,
            },
        });
        assert_eq!(
            RecordedInventory::of(&start),
            RecordedInventory {
                paths: vec![PathBuf::from("/ops/lab.yml")],
                files_sha256: Some("files".into()),
                cloudstack_source: true,
            }
        );
    }

    #[test]
    fn an_older_record_gives_its_files_without_generated_hosts_or_vars_files() {
        let generated = serde_json::json!({
            "event": "run_start", "run": "r1",
            "inventory": ["<cloudstack api>", "inv/lab.yml", "inv/group_vars/all.yml",
                "inv/host_vars/kvm01.yml"],
            "inventory_sha256": "covers the generated hosts too",
            "cloudstack_inventory": {"hosts": 9},
        });
        assert_eq!(
            RecordedInventory::of(&generated),
            RecordedInventory {
                paths: vec![PathBuf::from("inv/lab.yml")],
                files_sha256: None,
                cloudstack_source: true,
            }
        );
        let files = serde_json::json!({
            "event": "run_start", "run": "r2",
            "inventory": ["hosts.yml"],
            "inventory_sha256": "abc",
        });
        assert_eq!(
            RecordedInventory::of(&files),
            RecordedInventory {
                paths: vec![PathBuf::from("hosts.yml")],
                files_sha256: Some("abc".into()),
                cloudstack_source: false,
            }
        );
    }
}
