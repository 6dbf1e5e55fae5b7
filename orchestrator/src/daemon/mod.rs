//! `remedy daemon`: scheduled detection and self-healing that never fights an operator.
//!
//! - `jobs`: the jobs file and its schedules.
//! - `state`: what survives a restart (last results; per job and target the fixes, cooldowns,
//!   open circuits).
//! - `run`: one run of one job (detect; then fix, plan or report), with per-target locks
//!   shared with `remedy apply`.
//! - `observe`: notifications, `/healthz` and `/metrics`.
//!
//! Here: the loop. One daemon per state directory (a lock). Each job runs at its next
//! scheduled time (plus jitter), never twice at once. A stop (SIGTERM, SIGINT) ends the
//! scheduling and waits for running jobs to finish or roll back; a second one cancels them
//! (they roll back). A reload (SIGHUP) reads the jobs file again, and keeps the old jobs when
//! the new file is invalid.

pub mod jobs;
pub mod observe;
pub mod run;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::error::Error;
use jobs::Jobs;
use observe::Metrics;
use run::Env;

/// How the daemon was started.
#[derive(Debug, Clone)]
pub struct Options {
    pub jobs: PathBuf,
    pub state_dir: PathBuf,
    pub audit_log: PathBuf,
    /// Overrides the jobs file's `listen`.
    pub listen: Option<std::net::SocketAddr>,
}

/// What the outside (signals, tests) can ask of a running daemon.
pub struct Control {
    /// Stop scheduling; let running jobs finish (or roll back); then return.
    pub stop: watch::Receiver<bool>,
    /// Cancel running jobs now (they roll back).
    pub kill: watch::Receiver<bool>,
    /// Read the jobs file again.
    pub reload: mpsc::UnboundedReceiver<()>,
}

/// Run until stopped. `apis` may hold API connections to use for given inventories (tests
/// share their simulated zone this way).
pub async fn run(
    opts: Options,
    mut ctl: Control,
    apis: HashMap<Vec<PathBuf>, Arc<crate::transport::api::ApiTransport>>,
    metrics: Arc<Metrics>,
) -> Result<(), Error> {
    let mut jobs = Jobs::load(&opts.jobs).map_err(Error::Invalid)?;
    jobs.check_playbooks().map_err(Error::Invalid)?;
    // One daemon per state directory.
    let holder =
        crate::lock::Holder::new("daemon", format!("remedy daemon ({})", opts.jobs.display()));
    let _daemon = crate::lock::try_all(&opts.state_dir, &[DAEMON_LOCK.to_string()], &holder)
        .map_err(|e| match e {
            crate::lock::AcquireError::Busy(b) => Error::LockHeld(format!(
                "another daemon runs with the state directory {}: {}",
                opts.state_dir.display(),
                b.holder.map(|h| h.to_string()).unwrap_or_default()
            )),
            crate::lock::AcquireError::Io(e) => Error::Other(e),
        })?;
    state::load(&opts.state_dir).map_err(Error::Other)?;
    let env = Arc::new(Env {
        state_dir: opts.state_dir.clone(),
        audit_log: opts.audit_log.clone(),
        apis: std::sync::Mutex::new(apis),
        cancel: ctl.kill.clone(),
        stop: ctl.stop.clone(),
    });
    for j in &jobs.jobs {
        metrics.register(&j.name);
    }
    if let Some(addr) = opts.listen.or(jobs.listen) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Other(format!("listen {addr}: {e}")))?;
        tracing::info!(%addr, "serving /healthz and /metrics");
        tokio::spawn(observe::serve(
            listener,
            metrics.clone(),
            opts.state_dir.clone(),
        ));
    }
    // Each job's scheduled time (without jitter) and its next start (with it).
    let mut base = schedule_all(&jobs, &BTreeMap::new(), &BTreeMap::new());
    let mut next = jittered(&jobs, &base);
    write_next(&env, &next);
    let mut running: tokio::task::JoinSet<String> = tokio::task::JoinSet::new();
    let mut names: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut busy: std::collections::BTreeSet<String> = Default::default();
    // Whoever sends reloads may go away (no signal handling): then stop listening for them.
    let mut reloads = true;
    tracing::info!(jobs = jobs.jobs.len(), file = %opts.jobs.display(), "daemon started");
    loop {
        let now = jiff::Timestamp::now();
        // Start every job that is due and not already running.
        for job in &jobs.jobs {
            let due = next.get(&job.name).is_some_and(|t| *t <= now);
            if !due {
                continue;
            }
            // From the scheduled time, not from when the loop woke: no drift. A job that
            // overran its period starts again at the next time after now.
            let after = base.get(&job.name).copied().unwrap_or(now).max(now);
            let b = job
                .schedule
                .next_after(after)
                .unwrap_or_else(|| now + jiff::SignedDuration::from_hours(24));
            base.insert(job.name.clone(), b);
            next.insert(job.name.clone(), b + jitter(job));
            if busy.contains(&job.name) {
                tracing::info!(job = %job.name, "still running: this turn is skipped");
                continue;
            }
            busy.insert(job.name.clone());
            let (job_env, job, metrics) = (env.clone(), job.clone(), metrics.clone());
            let name = job.name.clone();
            let handle = running.spawn(async move {
                let env = job_env;
                let mut report = run::run_job(&env, &job).await;
                if let Err(e) = run::record(&env, &job, &mut report) {
                    tracing::error!(job = %job.name, error = %e, "cannot record the run's result");
                }
                metrics.observe(&report);
                tracing::info!(
                    job = %job.name,
                    verdict = ?report.verdict,
                    exit = report.exit,
                    run = report.run.as_deref().unwrap_or(""),
                    fixed = ?report.fixed,
                    left_out = ?report.left_out,
                    "{}",
                    report.status
                );
                observe::notify(&job, &report).await;
                job.name.clone()
            });
            names.insert(handle.id(), name);
            write_next(&env, &next);
        }
        let wake = next
            .values()
            .min()
            .map(|t| t.duration_since(jiff::Timestamp::now()))
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep(wake) => {}
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                let id = match &done {
                    Ok((id, _)) => *id,
                    Err(e) => e.id(),
                };
                if let Some(name) = names.remove(&id) {
                    if let Err(e) = &done {
                        tracing::error!(job = %name, error = %e, "the job's run panicked");
                        metrics.failed(&name);
                    }
                    busy.remove(&name);
                }
            }
            r = ctl.reload.recv(), if reloads => {
                if r.is_none() {
                    reloads = false;
                    continue;
                }
                match Jobs::load(&opts.jobs).and_then(|j| j.check_playbooks().map(|()| j)) {
                    Ok(new) => {
                        for j in &new.jobs {
                            metrics.register(&j.name);
                        }
                        base = schedule_all(&new, &base, &describe(&jobs));
                        next = jittered(&new, &base);
                        jobs = new;
                        write_next(&env, &next);
                        tracing::info!(jobs = jobs.jobs.len(), "jobs file read again");
                    }
                    Err(d) => tracing::error!(
                        file = %opts.jobs.display(),
                        "the jobs file is invalid; keeping the jobs as they were:\n{}",
                        d.render(false)
                    ),
                }
            }
            _ = async {
                // A stop sender gone (no signal handling) never stops the daemon.
                if ctl.stop.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::info!(running = running.len(), "stopping: no new runs; waiting for running jobs to finish or roll back");
                while running.join_next().await.is_some() {}
                tracing::info!("stopped");
                return Ok(());
            }
        }
    }
}

/// The lock that makes one daemon per state directory (not a possible host name).
pub const DAEMON_LOCK: &str = "@remedy-daemon";

/// A random delay up to the job's jitter.
fn jitter(job: &jobs::Job) -> jiff::SignedDuration {
    if job.jitter.is_zero() {
        return jiff::SignedDuration::ZERO;
    }
    let r = uuid::Uuid::new_v4().as_u128() as u64;
    let ms = r % (job.jitter.as_millis().max(1) as u64);
    jiff::SignedDuration::from_millis(ms as i64)
}

/// Each job's schedule, in words (to see whether a reload changed it).
fn describe(jobs: &Jobs) -> BTreeMap<String, String> {
    jobs.jobs
        .iter()
        .map(|j| (j.name.clone(), j.schedule.describe()))
        .collect()
}

/// Every job's next scheduled time; a job that stays with the same schedule keeps its time.
fn schedule_all(
    jobs: &Jobs,
    before: &BTreeMap<String, jiff::Timestamp>,
    schedules_before: &BTreeMap<String, String>,
) -> BTreeMap<String, jiff::Timestamp> {
    let now = jiff::Timestamp::now();
    jobs.jobs
        .iter()
        .map(|j| {
            let same = schedules_before.get(&j.name) == Some(&j.schedule.describe());
            let t = before
                .get(&j.name)
                .copied()
                .filter(|_| same)
                .unwrap_or_else(|| {
                    j.schedule
                        .next_after(now)
                        .unwrap_or_else(|| now + jiff::SignedDuration::from_hours(24))
                });
            (j.name.clone(), t)
        })
        .collect()
}

/// The next starts: the scheduled times plus each job's jitter.
fn jittered(
    jobs: &Jobs,
    base: &BTreeMap<String, jiff::Timestamp>,
) -> BTreeMap<String, jiff::Timestamp> {
    jobs.jobs
        .iter()
        .filter_map(|j| base.get(&j.name).map(|t| (j.name.clone(), *t + jitter(j))))
        .collect()
}

fn write_next(env: &Env, next: &BTreeMap<String, jiff::Timestamp>) {
    let r = state::update(&env.state_dir, |s| {
        for (job, t) in next {
            s.jobs.entry(job.clone()).or_default().next_run = Some(*t);
        }
    });
    if let Err(e) = r {
        tracing::error!(error = %e, "cannot write the daemon state");
    }
}
