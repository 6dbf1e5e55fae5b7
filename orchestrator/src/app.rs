//! Running a plan end to end: refusals, the audit log, the run id, the transport (guarded in a
//! dry-run), the scheduler. The CLI and the tests both come through here.

pub use crate::identity::{hostname, new_run_id, operator};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::audit::AuditLog;
use crate::error::Error;
use crate::error::ExitCode;
use crate::event::{Event, FileHash, InventoryOrigin, InventoryPath, RunMode, Sink};
use crate::inventory::{CloudStackEndpoint, CloudStackSource, Inventory};
use crate::plan::Plan;
pub use crate::planfile::FromPlan;
use crate::planfile::{Drift, OnDrift, SavedPlan};
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
    /// `remedy plan`: a dry-run recorded as the making of a plan.
    pub planning: bool,
    /// `apply --plan`: the plan this run is held to.
    pub from_plan: Option<Arc<FromPlan>>,
    /// Per-target locks to hold for the run (none in a dry-run): see [`crate::lock`].
    pub locks: Option<Locks>,
    /// The inventory paths as given (`-i`), recorded with the run so that its hosts can be
    /// found again ([`inventory_origin`]); empty: not recorded.
    pub inventory_paths: Vec<PathBuf>,
    /// Where whoever sets `cancel` writes why, when it is not a signal (the daemon: a job's
    /// timeout, its locks lost). The run's own locks lost are told here too.
    pub stopped_by: Option<Arc<std::sync::OnceLock<String>>>,
}

/// Where the run's per-target locks live, how long to wait for them, and who takes them.
#[derive(Debug, Clone)]
pub struct Locks {
    pub coord: Arc<crate::coord::Coordinator>,
    pub wait: std::time::Duration,
    /// For the message the other side gets: `alice (remedy apply vr-backup-loop)`.
    pub by: String,
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
            planning: false,
            from_plan: None,
            locks: None,
            inventory_paths: Vec::new(),
            stopped_by: None,
        }
    }
}

/// The lock a run that changes the cloud through its API takes (one per state directory, so
/// one per zone where each zone has its own).
pub const CLOUDSTACK_LOCK: &str = "cloudstack-api";

/// What a run of `plan` locks: every target but the controller, and the CloudStack API when a
/// step may change the cloud through it.
pub fn lock_targets(plan: &Plan) -> Vec<String> {
    let mut out: std::collections::BTreeSet<String> = plan
        .targets
        .iter()
        .flatten()
        .filter(|t| *t != crate::plan::CONTROLLER)
        .cloned()
        .collect();
    let api_changes = plan.program.steps.iter().enumerate().any(|(i, s)| {
        s.mutating()
            && !plan.targets[i].is_empty()
            && match &s.kind {
                crate::playbook::Kind::Api { .. } => true,
                crate::playbook::Kind::Module { kind, .. } => kind.runs_on_api(),
                _ => false,
            }
    });
    if api_changes {
        out.insert(CLOUDSTACK_LOCK.into());
    }
    out.into_iter().collect()
}

/// How to read `inventory` again from `paths` (the `-i` paths it was loaded from), for the
/// run's `run_start` record; `None` without paths. The files' digest is taken over the files
/// read again from the absolute paths, as `remedy rollback RUN` reads them (a digest covers
/// each file's path, and the inventory's own covers the hosts the API added as well).
pub fn inventory_origin(paths: &[PathBuf], inventory: &Inventory) -> Option<InventoryOrigin> {
    if paths.is_empty() {
        return None;
    }
    let absolute: Vec<PathBuf> = paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    Some(InventoryOrigin {
        paths: paths
            .iter()
            .zip(&absolute)
            .map(|(given, absolute)| InventoryPath {
                given: given.display().to_string(),
                absolute: absolute.display().to_string(),
            })
            .collect(),
        files_sha256: Inventory::load(&absolute)
            .map(|i| i.digest())
            .unwrap_or_default(),
        cloudstack_source: inventory.has_generated_hosts(),
        cloudstack_endpoint: inventory.cloudstack().map(endpoint_words),
    })
}

/// Where an endpoint reaches the API, without credentials: the URL (any `user:password@`
/// left out), the cloudmonkey profile, or the simulator's scenario.
fn endpoint_words(endpoint: &CloudStackEndpoint) -> String {
    match &endpoint.source {
        CloudStackSource::Keys { endpoint, .. } => match endpoint.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                format!("{scheme}://{host}{path}")
            }
            None => endpoint.clone(),
        },
        CloudStackSource::Cmk { config, profile } => format!(
            "cloudmonkey profile {} in {}",
            profile.as_deref().unwrap_or("(the default)"),
            config
                .as_ref()
                .map_or("~/.cmk/config".to_string(), |c| c.display().to_string())
        ),
        CloudStackSource::Simulator { scenario } => {
            format!("the embedded simulator (scenario {scenario})")
        }
    }
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
    // A plan lists its irreversible steps, and its approval covers them.
    if !opts.dry_run && !opts.allow_irreversible && opts.from_plan.is_none() {
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
    let run = new_run_id();
    // Held until the run (and its rollback) is over.
    let held = match (&opts.locks, opts.dry_run) {
        (Some(l), false) => {
            let targets = lock_targets(&plan);
            let holder = crate::lock::Holder::new(&run, l.by.clone());
            match l.coord.acquire(&targets, &holder, l.wait).await {
                Ok(h) => Some(h),
                Err(crate::lock::AcquireError::Busy(b)) => {
                    return Err(Error::LockHeld(format!(
                        "{b}; nothing was started (--wait-lock DURATION waits for it)"
                    )))
                }
                Err(crate::lock::AcquireError::Io(e)) => return Err(Error::Other(e)),
            }
        }
        _ => None,
    };
    // Locks that are lost mid-run (etcd: a lease not kept alive, a lock broken) stop the run
    // like a signal: no new change, then the rollback.
    let (cancel, stopped_by) = stop_when_lost(
        cancel,
        held.as_ref().map(|h| h.lost()),
        opts.stopped_by.clone(),
    );
    let result = execute_held(plan, transport, opts, tx, cancel, stopped_by, run).await;
    if let Some(h) = held {
        h.release().await;
    }
    result
}

/// A cancel flag that is set by `cancel`, or by `lost` turning `Some(why)`; in that case the
/// reason is kept, for the run's status.
fn stop_when_lost(
    mut cancel: watch::Receiver<bool>,
    lost: Option<watch::Receiver<Option<String>>>,
    why: Option<Arc<std::sync::OnceLock<String>>>,
) -> (watch::Receiver<bool>, Arc<std::sync::OnceLock<String>>) {
    let why = why.unwrap_or_default();
    let Some(mut lost) = lost else {
        return (cancel, why);
    };
    let (tx, rx) = watch::channel(*cancel.borrow());
    let reason = why.clone();
    tokio::spawn(async move {
        // A sender gone (the signal handler's, or the locks') is only one source fewer.
        let (mut cancel_open, mut lost_open) = (true, true);
        while cancel_open || lost_open {
            tokio::select! {
                c = cancel.changed(), if cancel_open => match c {
                    Ok(()) if *cancel.borrow() => {
                        let _ = tx.send(true);
                        return;
                    }
                    Ok(()) => {}
                    Err(_) => cancel_open = false,
                },
                l = lost.changed(), if lost_open => match l {
                    Ok(()) => {
                        if let Some(w) = lost.borrow().clone() {
                            let _ = reason.set(format!("locks lost: {w}"));
                            let _ = tx.send(true);
                            return;
                        }
                    }
                    Err(_) => lost_open = false,
                },
                () = tx.closed() => return,
            }
        }
    });
    (rx, why)
}

/// [`execute`] once the locks are held.
async fn execute_held(
    plan: Plan,
    transport: Arc<dyn Transport>,
    opts: RunOptions,
    tx: Option<mpsc::UnboundedSender<Event>>,
    cancel: watch::Receiver<bool>,
    stopped_by: Arc<std::sync::OnceLock<String>>,
    run: String,
) -> Result<(String, Summary), Error> {
    let audit = match &opts.audit_log {
        Some(p) => {
            Some(AuditLog::open(p).map_err(|e| Error::Audit(format!("{e}; refusing to act")))?)
        }
        None => None,
    };
    let sink = Sink::new(audit, plan.redactor.clone(), tx);
    sink.emit(Event::RunStart {
        run: run.clone(),
        playbook: plan.program.name.clone(),
        mode: if opts.planning {
            RunMode::Plan
        } else if opts.dry_run {
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
        plan: opts.from_plan.as_ref().map(|f| f.link.clone()),
        inventory_origin: inventory_origin(&opts.inventory_paths, &plan.inventory),
    })
    .map_err(|e| Error::Audit(format!("{e}; refusing to act")))?;
    let mut refused = Vec::new();
    let expect = match &opts.from_plan {
        None => None,
        Some(from) => {
            // Checked when the file was opened; again now (a prompt may have waited).
            if let Err(e) = from.saved.check_file(None, jiff::Timestamp::now()) {
                let drift = vec![Drift {
                    step: "(plan)".into(),
                    target: String::new(),
                    why: e.to_string(),
                }];
                return Ok((run.clone(), refuse(&sink, &run, &from.saved, drift)));
            }
            let drift = check_plan(&plan, &transport, &opts, &run, from, &cancel).await;
            sink.emit(Event::PlanCheck {
                run: run.clone(),
                plan: from.saved.id.clone(),
                on_drift: from.on_drift,
                drift: drift.clone(),
            })
            .map_err(|e| Error::Audit(format!("{e}; refusing to act")))?;
            let whole = drift.iter().any(|d| d.target.is_empty());
            if !drift.is_empty() && (from.on_drift == OnDrift::Abort || whole) {
                return Ok((run.clone(), refuse(&sink, &run, &from.saved, drift)));
            }
            refused = drift;
            Some(Arc::new(from.saved.expect(from.on_drift)))
        }
    };
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
        expect,
        halt: Default::default(),
    };
    let summary = Scheduler::new(cx, opts.forks, cancel)
        .refusing(refused)
        .stopped_by(stopped_by)
        .run()
        .await;
    Ok((run, summary))
}

/// `apply --plan`, before anything changes: a dry-run now, compared node by node with the
/// plan's. A dry-run that fails is a drift of the whole plan (empty target).
async fn check_plan(
    plan: &Plan,
    transport: &Arc<dyn Transport>,
    opts: &RunOptions,
    run: &str,
    from: &FromPlan,
    cancel: &watch::Receiver<bool>,
) -> Vec<Drift> {
    let cx = Ctx {
        plan: Arc::new(plan.clone()),
        transport: Arc::new(DryRunGuard::new(transport.clone())),
        // Not recorded step by step: the audit log gets its verdict (`plan_check`).
        sink: Sink::new(None, plan.redactor.clone(), None),
        run: run.to_string(),
        dry_run: true,
        cancel: Some(cancel.clone()),
        reload: opts.reload.clone(),
        expect: None,
        halt: Default::default(),
    };
    let summary = Scheduler::new(cx, opts.forks, cancel.clone()).run().await;
    // The check may have read the inventory again: the run starts from the plan's.
    transport.inventory_changed(&plan.inventory);
    let drift = if !summary.exit.succeeded() {
        vec![Drift {
            step: "(dry-run)".into(),
            target: String::new(),
            why: format!(
                "the dry-run before applying did not succeed: {}",
                summary.status
            ),
        }]
    } else {
        crate::planfile::compare(&from.saved, plan, &summary)
    };
    drift
        .into_iter()
        .map(|d| Drift {
            why: plan.redactor.redact(&d.why).into_owned(),
            ..d
        })
        .collect()
}

/// End a run the plan check refused: nothing ran that changes anything.
fn refuse(sink: &Sink, run: &str, saved: &SavedPlan, drift: Vec<Drift>) -> Summary {
    let status = format!(
        "refused: the live state differs from plan {} at {} node(s); nothing was changed",
        crate::planfile::short(&saved.id),
        drift.len()
    );
    let summary = Summary {
        exit: ExitCode::PlanRefused,
        status,
        outcomes: Default::default(),
        changed: 0,
        failed: 0,
        undone: 0,
        not_undone: Vec::new(),
        maybe_changed: 0,
        unchanged: 0,
        left: Vec::new(),
        found: Vec::new(),
        findings: 0,
        applies: saved.plan.applies,
        nodes: Vec::new(),
        drift,
    };
    let _ = sink.emit(summary.end_event(run));
    let _ = sink.sync();
    summary
}

/// `remedy plan`: a dry-run of `plan` (recorded in the audit log as the making of a plan),
/// and the plan made from it, written to `out` when given (with a `plan_written` record).
/// No plan when the dry-run did not succeed: the summary says why.
pub async fn make_plan(
    plan: Plan,
    transport: std::sync::Arc<dyn crate::transport::Transport>,
    mut opts: RunOptions,
    making: &crate::planfile::Making<'_>,
    out: Option<&Path>,
    cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<(String, Summary, Option<SavedPlan>), Error> {
    opts.dry_run = true;
    opts.planning = true;
    opts.from_plan = None;
    let audit = opts.audit_log.clone();
    let copy = plan.clone();
    let (run, summary) = execute(plan, transport, opts, None, cancel).await?;
    if !summary.exit.succeeded() {
        return Ok((run, summary, None));
    }
    let saved = SavedPlan::make(&copy, &summary, making, &run)?;
    if let Some(out) = out {
        saved.write(out)?;
        let event = crate::event::Event::PlanWritten {
            run: run.clone(),
            plan: saved.id.clone(),
            file: crate::planfile::absolute(out),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(endpoint: &str) -> CloudStackEndpoint {
        CloudStackEndpoint {
            source: CloudStackSource::Keys {
                endpoint: endpoint.into(),
                api_key: crate::inventory::ApiKey::Inline("k".into()),
                secret_key: crate::inventory::SecretRef::Env("CS_SECRET".into()),
            },
            verify_tls: true,
            ca_file: None,
        }
    }

    #[test]
    fn an_endpoint_is_recorded_without_credentials() {
        assert_eq!(
            endpoint_words(&keys("https://admin:pw@cs.example:8443/client/api")),
            "https://cs.example:8443/client/api"
        );
        assert_eq!(
            endpoint_words(&keys("http://127.0.0.1:8096/client/api")),
            "http://127.0.0.1:8096/client/api"
        );
        let cmk = CloudStackEndpoint {
            source: CloudStackSource::Cmk {
                config: None,
                profile: Some("prod".into()),
            },
            verify_tls: true,
            ca_file: None,
        };
        assert_eq!(
            endpoint_words(&cmk),
            "cloudmonkey profile prod in ~/.cmk/config"
        );
    }

    #[test]
    fn the_origin_holds_the_paths_as_given_and_absolute_and_the_files_digest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts.yml");
        std::fs::write(&file, "all:\n  hosts:\n    kvm01:\n").unwrap();
        let inv = Inventory::load(std::slice::from_ref(&file)).unwrap();
        let origin = inventory_origin(std::slice::from_ref(&file), &inv).unwrap();
        assert_eq!(
            origin.paths,
            [InventoryPath {
                given: file.display().to_string(),
                absolute: file.display().to_string(),
            }]
        );
        assert_eq!(origin.files_sha256, inv.digest());
        assert!(!origin.cloudstack_source);
        assert_eq!(origin.cloudstack_endpoint, None);
        assert_eq!(inventory_origin(&[], &inv), None);
    }

    /// Locks lost stop the run with their reason, even when the signal handler's sender is
    /// gone; a signal stops it without one.
    #[tokio::test]
    async fn lost_locks_set_the_cancel_flag_with_their_reason() {
        let (signal_tx, signal) = watch::channel(false);
        let (lost_tx, lost) = watch::channel(None);
        let (mut cancel, why) = stop_when_lost(signal, Some(lost), None);
        drop(signal_tx);
        lost_tx.send(Some("the lease expired".into())).unwrap();
        cancel.wait_for(|c| *c).await.unwrap();
        assert_eq!(why.get().unwrap(), "locks lost: the lease expired");

        let (signal_tx, signal) = watch::channel(false);
        let (_lost_tx, lost) = watch::channel(None);
        let (mut cancel, why) = stop_when_lost(signal, Some(lost), None);
        signal_tx.send(true).unwrap();
        cancel.wait_for(|c| *c).await.unwrap();
        assert!(why.get().is_none());
    }
}
