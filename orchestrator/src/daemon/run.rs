//! One run of one job: detect (a dry-run, not audited: it changes nothing), and when the
//! playbook applies, fix (auto), write a plan (plan) or only report (detect). A run whose
//! `report` steps found problems (exit 8) is `found`: not a failure, not a fix.
//!
//! A fix leaves out the targets in their cooldown, with an open circuit, or locked by someone
//! else (an operator's `remedy apply`); it holds the others' locks for the run, is cancelled
//! (and rolled back) at the job's timeout, and is audited like any apply. Then each target it
//! changed counts a fix: the cooldown starts, and the circuit may open.
//!
//! A run that finds the fault but leaves every target alone is `degraded`: the fault is there
//! and nothing fixes it (the reason per target: `circuit-open`, `cooldown`, `locked`). It is
//! not a success. Entering and leaving that state is notified and logged once each; while it
//! lasts, the log says so again every [`DEGRADED_REMINDER`].

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::jobs::{Job, Mode, Notice};
use super::state::{self, Blocked};
use crate::app::{execute, RunOptions};
use crate::error::{Error, ExitCode};
use crate::event::Outcome;
use crate::transport::api::ApiTransport;
use crate::transport::route::Router;

/// One API connection per inventory.
pub type Apis = Arc<std::sync::Mutex<std::collections::HashMap<Vec<PathBuf>, Arc<ApiTransport>>>>;

/// What the runs of jobs share.
pub struct Env {
    /// Where plans are written (`plans/`), and the local backend's files.
    pub state_dir: PathBuf,
    pub audit_log: PathBuf,
    /// Where the locks are (shared with `remedy apply`), and where the state is kept.
    pub coord: Arc<crate::coord::Coordinator>,
    pub store: state::Store,
    /// One API connection per inventory, kept for the daemon's life (an embedded simulated
    /// zone lives as long as its connection).
    pub apis: Apis,
    /// The inventories completed from the zone last, reused while neither the files nor the
    /// zone's lists change.
    pub resolved: Arc<crate::cloudstack::inventory::Resolved>,
    /// The SSH connections kept open between runs (`None`: each run opens its own).
    pub ssh_pool: Option<Arc<crate::transport::ssh::WarmPool>>,
    /// Set when the daemon must stop now: running fixes are cancelled (and rolled back).
    pub cancel: tokio::sync::watch::Receiver<bool>,
    /// Set when the daemon stops scheduling: a run still detecting starts no fix.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

impl Env {
    pub(crate) fn api(
        &self,
        inventory: &[PathBuf],
        inv: &crate::inventory::Inventory,
    ) -> Arc<ApiTransport> {
        let mut apis = self.apis.lock().unwrap_or_else(|p| p.into_inner());
        apis.entry(inventory.to_vec())
            .or_insert_with(|| {
                Arc::new(ApiTransport::new(
                    inv.cloudstack().cloned(),
                    crate::cloudstack::Options::default(),
                ))
            })
            .clone()
    }

    /// The transport of a run of `job` on `inv`: with the daemon's SSH pool (checked against
    /// the inventory first: `digest` is its files'), or with connections of its own.
    async fn router(
        &self,
        job: &Job,
        inv: &crate::inventory::Inventory,
        api: Arc<ApiTransport>,
        digest: &str,
    ) -> Arc<Router> {
        let Some(pool) = &self.ssh_pool else {
            return Arc::new(Router::with_api(inv, api));
        };
        let source = job
            .inventory
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join("\n");
        pool.sync(&source, Some(digest), inv).await;
        Arc::new(Router::warm(inv, api, pool, source))
    }
}

/// How a job's run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The playbook does not apply: healthy.
    Healthy,
    /// Fixed: these targets changed.
    Fixed,
    /// It applies, but the daemon is stopping: no new fix.
    Skipped,
    /// It applies, and every target it would change is left alone (circuit open, cooling
    /// down, locked): the fault is there and is not being fixed. Not a success.
    Degraded,
    /// `detect` mode: it applies, and is only reported.
    Detected,
    /// `plan` mode: a plan was written.
    Planned,
    /// A report found problems (exit 8), and nothing was changed: not a failure, not a fix.
    Found,
    /// The fix failed (rolled back, or not all), or the job could not run.
    Failed,
}

/// What one run of a job did, for the state, the metrics and the notifications.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub job: String,
    pub verdict: Verdict,
    pub status: String,
    pub exit: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Targets changed.
    pub fixed: Vec<String>,
    /// Targets a fix worked on (changed or not, failed or not): they cool down, and count
    /// toward the circuit, so a fix that fails every time does not run every time.
    pub attempted: Vec<String>,
    /// Targets left out, with why.
    pub left_out: Vec<(String, String)>,
    /// A degraded run: each target left alone, with the reason's kind (`circuit-open`,
    /// `cooldown`, `locked`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<(String, String)>,
    /// Set when the run is recorded: how the job's degraded state changed with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded_change: Option<DegradedChange>,
    /// When the job's degraded state began (a degraded run, once recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded_since: Option<jiff::Timestamp>,
    /// Targets whose circuit opened with this run.
    pub circuits_opened: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_file: Option<String>,
    /// The run was rolled back (or tried to be): it changed something and undid it.
    pub rolled_back: bool,
    /// What the run changed and undid (from its end record): a failure that changed nothing
    /// (exit 7) is told apart from one that changed and undid (exit 2).
    pub changes: Changes,
}

pub use super::state::{DegradedChange, DEGRADED_REMINDER};

/// A run's changes, as its end record counts them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Changes {
    pub changed: usize,
    pub maybe_changed: usize,
    pub undone: usize,
    pub unchanged: usize,
    pub left: usize,
    pub not_undone: usize,
}

impl Report {
    fn new(job: &Job, verdict: Verdict, status: impl Into<String>, exit: ExitCode) -> Report {
        Report {
            job: job.name.clone(),
            verdict,
            status: status.into(),
            exit: exit.code(),
            run: None,
            fixed: Vec::new(),
            attempted: Vec::new(),
            left_out: Vec::new(),
            degraded: Vec::new(),
            degraded_change: None,
            degraded_since: None,
            circuits_opened: Vec::new(),
            plan_file: None,
            rolled_back: false,
            changes: Changes::default(),
        }
    }

    /// The notices this run gives.
    pub fn notices(&self) -> Vec<Notice> {
        let mut n = Vec::new();
        match self.verdict {
            Verdict::Fixed => n.push(Notice::Fix),
            Verdict::Failed => n.push(Notice::Failure),
            Verdict::Planned => n.push(Notice::Plan),
            _ => {}
        }
        match self.degraded_change {
            Some(DegradedChange::Entered) => n.push(Notice::Degraded),
            Some(DegradedChange::Left) => n.push(Notice::Recovered),
            _ => {}
        }
        // A fix or a plan whose reports still find problems notifies both.
        if self.exit == ExitCode::Found.code() {
            n.push(Notice::Found);
        }
        if !self.circuits_opened.is_empty() {
            n.push(Notice::CircuitOpen);
        }
        n
    }
}

fn build(
    job: &Job,
    inv: crate::inventory::Inventory,
    limit: Option<String>,
) -> Result<crate::plan::Plan, Error> {
    let program = crate::playbook::load(&job.playbook)
        .and_then(|l| crate::playbook::compile(&l))
        .map_err(Error::Invalid)?;
    let opts = crate::plan::Options {
        extra: job.params.clone(),
        limit,
        tags: Vec::new(),
        validating: false,
    };
    crate::plan::build(program, inv, &opts).map_err(Error::Invalid)
}

/// The job's inventory (completed from its CloudStack source), its API, its files' digest, and
/// whether the zone's part was made at an earlier run (within the job's `inventory_cache`;
/// never when `fresh`).
async fn inventory(
    env: &Env,
    job: &Job,
    fresh: bool,
) -> Result<(crate::inventory::Inventory, Arc<ApiTransport>, String, bool), Error> {
    let files = crate::inventory::Inventory::load(&job.inventory)
        .map_err(|e| Error::Invalid(crate::error::Diagnostic::new(e.to_string()).into()))?;
    let digest = files.digest();
    let api = env.api(&job.inventory, &files);
    if !fresh && !job.inventory_cache.is_zero() && files.cloudstack_source().is_some() {
        let state = crate::inventory::files_state(&job.inventory);
        if let Some(inv) = state.ok().and_then(|state| {
            env.resolved
                .recent(&job.inventory, &state, job.inventory_cache)
        }) {
            return Ok((inv, api, digest, true));
        }
    }
    let (inv, _) = crate::cloudstack::inventory::resolve_with(
        files,
        &job.inventory,
        &api,
        Some(&env.resolved),
    )
    .await
    .map_err(Error::Other)?;
    Ok((inv, api, digest, false))
}

/// Run `job` once.
/// Runs `job` once; `token` names the run in its locks (and in the state's `in_flight`).
pub async fn run_job(env: &Env, job: &Job, token: &str) -> Report {
    match run_inner(env, job, token).await {
        Ok(r) => r,
        Err(e) => Report::new(
            job,
            Verdict::Failed,
            e.render(false).trim_end().to_string(),
            e.exit_code(),
        ),
    }
}

async fn run_inner(env: &Env, job: &Job, token: &str) -> Result<Report, Error> {
    let report = detect_then(env, job, token, false).await;
    if report
        .as_ref()
        .map_or(true, |r| matches!(r.verdict, Verdict::Failed))
    {
        // (Perhaps a machine moved since the zone was read: the next run reads it again.)
        env.resolved.forget(&job.inventory);
    }
    report
}

/// One run: detect, then whatever the job's mode does. Detection on an inventory made at an
/// earlier run that fails, or finds something to fix, is done again on the zone read afresh:
/// only a healthy verdict is given on hosts read earlier, and a fix is always planned on what
/// the zone says now.
async fn detect_then(env: &Env, job: &Job, token: &str, fresh: bool) -> Result<Report, Error> {
    // Detect: a dry-run, not audited (it changes nothing; a healthy zone would fill the log).
    let (inv, api, digest, earlier) = inventory(env, job, fresh).await?;
    // (A run asked for by an event is limited to the rule's targets from detection on.)
    let plan = build(job, inv.clone(), job.limit.clone())?;
    let reload = reloader(&plan, job, &api)?;
    let redactor = plan.redactor.clone();
    let router = env.router(job, &plan.inventory, api.clone(), &digest).await;
    let detect_opts = RunOptions {
        dry_run: true,
        reload: reload.clone(),
        ..RunOptions::default()
    };
    // Detection changes nothing: at the job's timeout it is simply dropped.
    let detection = execute(plan, router, detect_opts, None, env.cancel.clone());
    let (_, detected) = tokio::time::timeout(job.timeout, detection)
        .await
        .map_err(|_| {
            Error::Other(format!(
                "detection did not finish within the job's timeout ({})",
                humantime::format_duration(job.timeout)
            ))
        })??;
    if earlier
        && (!detected.exit.succeeded() || detected.applies || detected.exit == ExitCode::Found)
    {
        tracing::debug!(job = %job.name, "detection on the zone's hosts read earlier found something: again, on the zone read now");
        return Box::pin(detect_then(env, job, token, true)).await;
    }
    if !detected.exit.succeeded() {
        return Ok(Report::new(
            job,
            Verdict::Failed,
            format!("detection failed: {}", redactor.redact(&detected.status)),
            detected.exit,
        ));
    }
    // A report's finding: the detection's own words (`found problems: ...`), exit 8.
    let found =
        (detected.exit == ExitCode::Found).then(|| redactor.redact(&detected.status).into_owned());
    if !detected.applies {
        return Ok(match found {
            Some(status) => Report::new(job, Verdict::Found, status, ExitCode::Found),
            None => Report::new(
                job,
                Verdict::Healthy,
                "healthy (the playbook does not apply)",
                ExitCode::Success,
            ),
        });
    }
    if *env.stop.borrow() && job.mode != Mode::Detect {
        return Ok(Report::new(
            job,
            Verdict::Skipped,
            "it applies, but the daemon is stopping: no new fix",
            ExitCode::Success,
        ));
    }
    match job.mode {
        Mode::Detect => Ok(match found {
            Some(status) => Report::new(
                job,
                Verdict::Found,
                format!("{status} (detect mode: not fixing)"),
                ExitCode::Found,
            ),
            None => Report::new(
                job,
                Verdict::Detected,
                "the playbook applies (detect mode: not fixing)",
                ExitCode::Success,
            ),
        }),
        Mode::Plan => plan_mode(env, job, inv, api, reload, &digest).await,
        Mode::Auto => fix(env, job, inv, api, token, &digest).await,
    }
}

/// Options of a run of `job` that is audited (a fix, a plan).
fn audited(
    env: &Env,
    job: &Job,
    reload: Option<Arc<crate::cloudstack::inventory::Reloader>>,
) -> RunOptions {
    RunOptions {
        audit_log: Some(env.audit_log.clone()),
        reload,
        argv: vec![
            "remedy".into(),
            "daemon".into(),
            format!("job {}", job.name),
        ],
        // Recorded, so that `remedy rollback RUN` reads the job's inventory again.
        inventory_paths: job.inventory.clone(),
        ..RunOptions::default()
    }
}

fn reloader(
    plan: &crate::plan::Plan,
    job: &Job,
    api: &Arc<ApiTransport>,
) -> Result<Option<Arc<crate::cloudstack::inventory::Reloader>>, Error> {
    if plan.refreshes.is_empty() {
        return Ok(None);
    }
    crate::cloudstack::inventory::Reloader::new(&job.inventory, api.clone())
        .map(|r| r.map(Arc::new))
        .map_err(Error::Other)
}

async fn plan_mode(
    env: &Env,
    job: &Job,
    inv: crate::inventory::Inventory,
    api: Arc<ApiTransport>,
    reload: Option<Arc<crate::cloudstack::inventory::Reloader>>,
    digest: &str,
) -> Result<Report, Error> {
    let plan = build(job, inv, job.limit.clone())?;
    let redactor = plan.redactor.clone();
    let router = env.router(job, &plan.inventory, api, digest).await;
    let dir = env.state_dir.join("plans");
    std::fs::create_dir_all(&dir).map_err(|e| Error::Other(format!("{}: {e}", dir.display())))?;
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let file = dir.join(format!("{}-{stamp}.plan.json", job.name));
    let root = plan.program.root.clone();
    let making = crate::planfile::Making {
        playbook_path: &root,
        inventory: &job.inventory,
        extra: &job.params,
        tags: &[],
        valid_for: crate::planfile::DEFAULT_VALIDITY,
    };
    let opts = audited(env, job, reload);
    let (run, summary, saved) =
        crate::app::make_plan(plan, router, opts, &making, Some(&file), env.cancel.clone()).await?;
    let Some(saved) = saved else {
        return Ok(Report::new(
            job,
            Verdict::Failed,
            format!("no plan written: {}", redactor.redact(&summary.status)),
            summary.exit,
        ));
    };
    let mut r = Report::new(
        job,
        Verdict::Planned,
        format!(
            "plan {} written for approval: remedy apply --plan {}",
            crate::planfile::short(&saved.id),
            file.display()
        ),
        // The plan's dry-run found problems: said by the exit code (and a `found` notice).
        summary.exit,
    );
    r.run = Some(run);
    r.plan_file = Some(file.display().to_string());
    Ok(r)
}

async fn fix(
    env: &Env,
    job: &Job,
    inv: crate::inventory::Inventory,
    api: Arc<ApiTransport>,
    token: &str,
    digest: &str,
) -> Result<Report, Error> {
    // The targets the fix would touch, and those it must leave alone.
    let now = jiff::Timestamp::now();
    let st = env
        .store
        .load()
        .await
        .map_err(Error::Other)?
        .jobs
        .remove(&job.name)
        .unwrap_or_default();
    let (targets, locks): (BTreeSet<String>, Vec<String>) = {
        let plan = build(job, inv.clone(), job.limit.clone())?;
        let targets = plan
            .targets
            .iter()
            .enumerate()
            .filter(|(i, _)| plan.program.steps[*i].phase == crate::playbook::Phase::Steps)
            .flat_map(|(_, ts)| ts.iter().cloned())
            .collect();
        (targets, crate::app::lock_targets(&plan))
    };
    // The locks, taken here one by one and held through the run: a target someone else holds
    // is left out (no look-then-take race); the API's lock held by someone else, or the
    // controller cooling down, leaves the whole fix for later (its API side cannot be left out).
    let holder = crate::lock::Holder::new(token, format!("remedy daemon job {}", job.name));
    let mut held: Vec<crate::coord::Held> = Vec::new();
    let mut left_out: Vec<(String, String)> = Vec::new();
    // The reason's kind per target left out (the degraded gauge's label).
    let mut kinds: Vec<(String, String)> = Vec::new();
    let whole = |why: String, kind: &str| {
        let mut r = Report::new(
            job,
            Verdict::Degraded,
            format!("degraded: it applies, but {why}"),
            ExitCode::Success,
        );
        r.degraded = vec![(crate::plan::CONTROLLER.to_string(), kind.to_string())];
        Ok(r)
    };
    if let Some(b) = st.blocked(crate::plan::CONTROLLER, now) {
        return whole(format!("its CloudStack side is {b}"), b.kind());
    }
    if locks.iter().any(|l| l == crate::app::CLOUDSTACK_LOCK) {
        match env
            .coord
            .try_all(&[crate::app::CLOUDSTACK_LOCK.into()], &holder)
            .await
        {
            Ok(h) => held.push(h),
            Err(e) => return whole(e.to_string(), state::LOCKED),
        }
    }
    for t in &targets {
        if let Some(b) = st.blocked(t, now) {
            left_out.push((t.clone(), b.to_string()));
            kinds.push((t.clone(), b.kind().to_string()));
        } else if t != crate::plan::CONTROLLER {
            match env.coord.try_all(std::slice::from_ref(t), &holder).await {
                Ok(h) => held.push(h),
                Err(e) => {
                    left_out.push((t.clone(), e.to_string()));
                    kinds.push((t.clone(), state::LOCKED.to_string()));
                }
            }
        }
    }
    if !targets.is_empty() && left_out.len() == targets.len() {
        let mut r = Report::new(
            job,
            Verdict::Degraded,
            format!(
                "degraded: it applies, but every target is left alone: {}",
                left_out
                    .iter()
                    .map(|(t, why)| format!("{t} ({why})"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            ExitCode::Success,
        );
        r.left_out = left_out;
        r.degraded = kinds;
        return Ok(r);
    }
    let limit = if left_out.is_empty() {
        job.limit.clone()
    } else {
        let mut p = job.limit.clone().unwrap_or_else(|| String::from("all"));
        // With a comma in the pattern only commas separate its terms.
        let sep = if p.contains(',') { ',' } else { ':' };
        for (t, _) in &left_out {
            p.push_str(&format!("{sep}!{t}"));
        }
        Some(p)
    };
    let plan = build(job, inv, limit)?;
    let reload = reloader(&plan, job, &api)?;
    let router = env.router(job, &plan.inventory, api, digest).await;
    // A run's status can quote a command's output: keep the run's secrets out of the report
    // (it is logged and sent to webhooks).
    let redactor = plan.redactor.clone();
    // The job's own cancel: at its timeout, when the daemon must stop now, or when a lock it
    // holds is lost (etcd: its lease not kept alive, a lock broken); the reason is the run's.
    let (cancel_tx, cancel) = tokio::sync::watch::channel(false);
    let mut outer = env.cancel.clone();
    let timeout = job.timeout;
    let why = Arc::new(std::sync::OnceLock::new());
    let reason = why.clone();
    let (lost_tx, mut lost_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for h in &held {
        let (mut lost, tx) = (h.lost(), lost_tx.clone());
        tokio::spawn(async move {
            if let Ok(w) = lost.wait_for(Option::is_some).await {
                let _ = tx.send(w.clone().unwrap_or_default());
            }
        });
    }
    drop(lost_tx);
    let watchdog = tokio::spawn(async move {
        let any_lost = async {
            match lost_rx.recv().await {
                Some(w) => w,
                None => std::future::pending::<String>().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(timeout) => {
                let _ = reason.set(format!(
                    "cancelled at the job's timeout ({})",
                    humantime::format_duration(timeout)
                ));
            }
            _ = async {
                // A kill sender gone never cancels.
                if outer.wait_for(|c| *c).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => {}
            w = any_lost => { let _ = reason.set(format!("locks lost: {w}")); }
        }
        let _ = cancel_tx.send(true);
    });
    // (The locks are held above, for the whole run.)
    let mut opts = audited(env, job, reload);
    opts.stopped_by = Some(why);
    let attempted: Vec<String> = targets
        .iter()
        .filter(|t| !left_out.iter().any(|(l, _)| l == *t))
        .cloned()
        .collect();
    let result = execute(plan, router, opts, None, cancel).await;
    watchdog.abort();
    for h in held {
        h.release().await;
    }
    let (run, summary) = match result {
        Ok(r) => r,
        Err(e @ Error::LockHeld(_)) => {
            // Taken between the look and the run: next time.
            let mut r = Report::new(
                job,
                Verdict::Degraded,
                format!("degraded: {e}"),
                ExitCode::Success,
            );
            r.left_out = left_out;
            r.degraded = kinds;
            r.degraded.extend(
                attempted
                    .iter()
                    .map(|t| (t.clone(), state::LOCKED.to_string())),
            );
            return Ok(r);
        }
        Err(e) => return Err(e),
    };
    let fixed: Vec<String> = summary
        .outcomes
        .iter()
        .filter(|(_, o)| **o == Outcome::Changed)
        .map(|((_, t), _)| t.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let ok = summary.exit.succeeded();
    let mut r = Report::new(
        job,
        if ok { Verdict::Fixed } else { Verdict::Failed },
        redactor.redact(&summary.status).into_owned(),
        summary.exit,
    );
    if ok && fixed.is_empty() {
        r.verdict = if summary.exit == ExitCode::Found {
            Verdict::Found
        } else {
            Verdict::Healthy
        };
    }
    r.run = Some(run);
    r.left_out = left_out;
    r.attempted = attempted;
    r.rolled_back = matches!(
        summary.exit,
        ExitCode::RolledBack | ExitCode::RollbackIncomplete
    );
    r.changes = Changes {
        changed: summary.changed,
        maybe_changed: summary.maybe_changed,
        undone: summary.undone,
        unchanged: summary.unchanged,
        left: summary.left.len(),
        not_undone: summary.not_undone.len(),
    };
    // A failed fix that was rolled back changed nothing; one that was not still counts.
    if ok || summary.exit == ExitCode::RollbackIncomplete {
        r.fixed = fixed;
    }
    Ok(r)
}

/// Record `report` in the state: the job's last result, and per fixed target a fix (which may
/// open its circuit: the report says which did).
pub async fn record(env: &Env, job: &Job, report: &mut Report) -> Result<(), String> {
    let now = jiff::Timestamp::now();
    let mut recorded = report.clone();
    let report_in = &mut recorded;
    let opened = env
        .store
        .update(|s| {
            let report = &mut *report_in;
            let js = s.jobs.entry(job.name.clone()).or_default();
            js.in_flight = None;
            js.last_run = Some(now);
            js.last_result = Some(report.status.clone());
            js.last_exit = Some(report.exit);
            js.last_run_id = report.run.clone();
            if !matches!(report.verdict, Verdict::Failed | Verdict::Degraded) {
                js.last_success = Some(now);
            }
            let seen = match report.verdict {
                Verdict::Degraded => state::Seen::Degraded(&report.degraded),
                // Nothing known about the fault.
                Verdict::Failed | Verdict::Skipped => state::Seen::Unknown,
                _ => state::Seen::Gone,
            };
            let change = js.note_degraded(seen, &report.status, now);
            report.degraded_change = change;
            report.degraded_since = js.degraded.as_ref().map(|d| d.since);
            // A fix that changed something counts its targets; one that failed counts every
            // target it worked on (so a fix that fails every time cools down and trips the
            // circuit too).
            let counted = if report.verdict == Verdict::Failed && !report.attempted.is_empty() {
                &report.attempted
            } else {
                &report.fixed
            };
            counted
                .iter()
                .filter(|t| js.record_fix(t, now, job))
                .cloned()
                .collect::<Vec<_>>()
        })
        .await?;
    report.degraded_change = recorded.degraded_change;
    report.degraded_since = recorded.degraded_since;
    report.circuits_opened = opened;
    Ok(())
}

/// Logs what a recorded run found: every run's line, except a degraded run that has nothing
/// new to say (same targets and reasons as the last, within [`DEGRADED_REMINDER`]), which is
/// only a debug line.
pub fn log(report: &Report) {
    let quiet = report.degraded_change == Some(DegradedChange::Same);
    let status = match (report.degraded_change, report.degraded_since) {
        (Some(DegradedChange::Reminder), Some(since)) => {
            format!("still {} (since {since})", report.status)
        }
        (Some(DegradedChange::Left), _) => {
            format!("no longer degraded: {}", report.status)
        }
        _ => report.status.clone(),
    };
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                job = %report.job,
                verdict = ?report.verdict,
                exit = report.exit,
                run = report.run.as_deref().unwrap_or(""),
                fixed = ?report.fixed,
                left_out = ?report.left_out,
                "{status}"
            )
        };
    }
    if quiet {
        line!(debug);
    } else {
        line!(info);
    }
}

/// Why each target is left alone now (for `remedy daemon status`).
pub fn blocked_now(js: &state::JobState) -> Vec<(String, Blocked)> {
    let now = jiff::Timestamp::now();
    js.targets
        .keys()
        .filter_map(|t| js.blocked(t, now).map(|b| (t.clone(), b)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log lines `log` writes at info level for `report`.
    fn logged(report: &Report) -> String {
        let buf = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || Writer(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || log(report));
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        text
    }

    struct Writer(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn degraded(change: DegradedChange) -> Report {
        Report {
            job: "dns".into(),
            verdict: Verdict::Degraded,
            status: "degraded: it applies, but every target is left alone: r1 (circuit open)"
                .into(),
            exit: 0,
            run: None,
            fixed: Vec::new(),
            attempted: Vec::new(),
            left_out: Vec::new(),
            degraded: vec![("r1".into(), "circuit-open".into())],
            degraded_change: Some(change),
            degraded_since: Some("2026-11-23T10:00:00Z".parse().unwrap()),
            circuits_opened: Vec::new(),
            plan_file: None,
            rolled_back: false,
            changes: Changes::default(),
        }
    }

    #[test]
    fn a_degraded_state_is_logged_on_entering_and_as_a_reminder_not_at_every_run() {
        let entered = logged(&degraded(DegradedChange::Entered));
        assert!(
            entered.contains(" INFO ")
                && entered.contains("degraded: it applies, but every target is left alone"),
            "{entered}"
        );
        assert_eq!(logged(&degraded(DegradedChange::Same)), "");
        let reminder = logged(&degraded(DegradedChange::Reminder));
        assert!(
            reminder.contains("still degraded: it applies")
                && reminder.contains("(since 2026-11-23T10:00:00Z)"),
            "{reminder}"
        );
        let mut left = degraded(DegradedChange::Left);
        left.verdict = Verdict::Healthy;
        left.status = "healthy (the playbook does not apply)".into();
        assert!(logged(&left).contains("no longer degraded: healthy"));
        assert_eq!(left.notices(), [Notice::Recovered]);
        assert_eq!(
            degraded(DegradedChange::Entered).notices(),
            [Notice::Degraded]
        );
        assert!(degraded(DegradedChange::Same).notices().is_empty());
    }
}
