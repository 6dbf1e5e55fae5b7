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
    let mut next = schedule_all(&jobs, &BTreeMap::new());
    write_next(&env, &next);
    let mut running: tokio::task::JoinSet<String> = tokio::task::JoinSet::new();
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
            next.insert(job.name.clone(), next_time(job, now));
            if busy.contains(&job.name) {
                tracing::info!(job = %job.name, "still running: this turn is skipped");
                continue;
            }
            busy.insert(job.name.clone());
            let (job_env, job, metrics) = (env.clone(), job.clone(), metrics.clone());
            running.spawn(async move {
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
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok(name) = done {
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
                        next = schedule_all(&new, &next);
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
            _ = async { let _ = ctl.stop.wait_for(|s| *s).await; } => {
                tracing::info!(running = running.len(), "stopping: no new runs; waiting for running jobs to finish or roll back");
                while let Some(done) = running.join_next().await {
                    if let Ok(name) = done {
                        busy.remove(&name);
                    }
                }
                tracing::info!("stopped");
                return Ok(());
            }
        }
    }
}

/// The lock that makes one daemon per state directory.
const DAEMON_LOCK: &str = "remedy-daemon";

/// The next run after `now`, with the job's jitter (a random delay up to it).
fn next_time(job: &jobs::Job, now: jiff::Timestamp) -> jiff::Timestamp {
    let base = job
        .schedule
        .next_after(now)
        .unwrap_or_else(|| now + jiff::SignedDuration::from_hours(24));
    if job.jitter.is_zero() {
        return base;
    }
    let r = uuid::Uuid::new_v4().as_u128() as u64;
    let ms = r % (job.jitter.as_millis().max(1) as u64);
    base + jiff::SignedDuration::from_millis(ms as i64)
}

/// Every job's next run; a job that stays keeps its time.
fn schedule_all(
    jobs: &Jobs,
    before: &BTreeMap<String, jiff::Timestamp>,
) -> BTreeMap<String, jiff::Timestamp> {
    let now = jiff::Timestamp::now();
    jobs.jobs
        .iter()
        .map(|j| {
            let t = before
                .get(&j.name)
                .copied()
                .unwrap_or_else(|| next_time(j, now));
            (j.name.clone(), t)
        })
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
