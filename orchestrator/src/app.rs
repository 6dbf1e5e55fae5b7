//! Running a plan end to end: refusals, the audit log, the run id, the transport (guarded in a
//! dry-run), the scheduler. The CLI and the tests both come through here.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::audit::AuditLog;
use crate::error::Error;
use crate::event::{Event, FileHash, RunMode, Sink};
use crate::plan::Plan;
use crate::playbook::{Phase, Undo};
use crate::runner::Ctx;
use crate::scheduler::{Scheduler, Summary};
use crate::transport::guard::DryRunGuard;
use crate::transport::Transport;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub dry_run: bool,
    pub forks: usize,
    /// Audit log path; `None` = no audit log (tests of pure planning only — `apply` always has one).
    pub audit_log: Option<PathBuf>,
    pub allow_irreversible: bool,
    pub argv: Vec<String>,
    /// What the CloudStack inventory source read, for the audit log's `run_start`.
    pub cloudstack_inventory: Option<serde_json::Value>,
    /// Reads the inventory again for `refresh_inventory` steps (`None`: a static inventory).
    pub reload: Option<Arc<crate::cloudstack::inventory::Reloader>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            dry_run: false,
            forks: 20,
            audit_log: None,
            allow_irreversible: false,
            argv: Vec::new(),
            cloudstack_inventory: None,
            reload: None,
        }
    }
}

/// A fresh run id: UTC time plus 8 random hex digits, sortable and unique enough.
pub fn new_run_id() -> String {
    let now = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{now}-{}", &rand[..8])
}

/// Who is running remedy: the sudo caller if any, else the login name, else the account of the
/// process's real uid (looked up in /etc/passwd), else `uid N`.
pub fn operator() -> String {
    if let Some(u) = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    {
        return u;
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|r| r.split_whitespace().next().map(str::to_string))
        });
    let Some(uid) = uid else {
        return "unknown".into();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Execute a plan. Refuses (nothing runs) when irreversible steps are not allowed or the audit
/// log cannot be opened.
pub async fn execute(
    plan: Plan,
    transport: Arc<dyn Transport>,
    opts: RunOptions,
    tx: Option<mpsc::UnboundedSender<Event>>,
    cancel: watch::Receiver<bool>,
) -> Result<(String, Summary), Error> {
    if !opts.dry_run && !opts.allow_irreversible {
        let irreversible: Vec<String> = plan
            .program
            .steps
            .iter()
            .enumerate()
            .filter(|(i, s)| s.phase == Phase::Steps && !plan.targets[*i].is_empty())
            .filter_map(|(_, s)| match &s.undo {
                Undo::Irreversible(why) => Some(format!("{} ({why})", s.id)),
                _ => None,
            })
            .collect();
        if !irreversible.is_empty() {
            return Err(Error::PlanRefused(format!(
                "irreversible steps need --allow-irreversible or an approved plan: {}",
                irreversible.join(", ")
            )));
        }
    }
    let audit = match &opts.audit_log {
        Some(p) => {
            Some(AuditLog::open(p).map_err(|e| Error::Audit(format!("{e}; refusing to act")))?)
        }
        None => None,
    };
    let run = new_run_id();
    let sink = Sink::new(audit, plan.redactor.clone(), tx);
    sink.emit(Event::RunStart {
        run: run.clone(),
        playbook: plan.program.name.clone(),
        mode: if opts.dry_run {
            RunMode::DryRun
        } else {
            RunMode::Apply
        },
        operator: operator(),
        host: hostname(),
        argv: opts.argv.clone(),
        files: plan
            .program
            .files
            .iter()
            .map(|(p, h)| FileHash {
                path: p.display().to_string(),
                sha256: h.clone(),
            })
            .collect(),
        inventory: plan
            .inventory
            .sources()
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        inventory_sha256: plan.inventory.digest(),
        params_sha256: plan.params_sha256.clone(),
        params: plan.shown_params(),
        remedy_version: env!("CARGO_PKG_VERSION").into(),
        rollback_of: None,
        cloudstack_inventory: opts.cloudstack_inventory.clone(),
    })
    .map_err(|e| Error::Audit(format!("{e}; refusing to act")))?;
    let transport: Arc<dyn Transport> = if opts.dry_run {
        Arc::new(DryRunGuard::new(transport))
    } else {
        transport
    };
    let cx = Ctx {
        plan: Arc::new(plan),
        transport,
        sink,
        run: run.clone(),
        dry_run: opts.dry_run,
        cancel: Some(cancel.clone()),
        reload: opts.reload.clone(),
    };
    let summary = Scheduler::new(cx, opts.forks, cancel).run().await;
    Ok((run, summary))
}
