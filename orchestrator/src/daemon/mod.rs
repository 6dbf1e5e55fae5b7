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
pub mod leadership;
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
    /// `--coordination`: local (None) or etcd (see `crate::coord`).
    pub coordination: Option<String>,
    /// SSH connections kept open between runs, within these limits; `None`: each run opens
    /// its own (`--ssh-pool-max 0`).
    pub ssh_pool: Option<crate::transport::ssh::PoolLimits>,
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
    let coord = Arc::new(
        crate::coord::Coordinator::connect(opts.coordination.as_deref(), &opts.state_dir)
            .await
            .map_err(|e| Error::Other(format!("coordination: {e}")))?,
    );
    let me = format!(
        "remedy daemon ({}) on {} pid {}",
        opts.jobs.display(),
        crate::identity::hostname(),
        std::process::id()
    );
    // Local: one daemon per state directory. etcd: any number of replicas, one leader.
    let _daemon = match coord.as_ref() {
        crate::coord::Coordinator::Local { .. } => {
            let holder = crate::lock::Holder::new(
                "daemon",
                format!("remedy daemon ({})", opts.jobs.display()),
            );
            Some(
                coord
                    .try_all(&[DAEMON_LOCK.to_string()], &holder)
                    .await
                    .map_err(|e| match e {
                        crate::lock::AcquireError::Busy(b) => Error::LockHeld(format!(
                            "another daemon runs with the state directory {}: {}",
                            opts.state_dir.display(),
                            b.holder.map(|h| h.to_string()).unwrap_or_default()
                        )),
                        crate::lock::AcquireError::Io(e) => Error::Other(e),
                    })?,
            )
        }
        crate::coord::Coordinator::Etcd(_) => None,
    };
    let store = state::Store::new(&coord);
    store.load().await.map_err(Error::Other)?;
    for j in &jobs.jobs {
        metrics.register(&j.name);
    }
    if let Some(addr) = opts.listen.or(jobs.listen) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Other(format!("listen {addr}: {e}")))?;
        tracing::info!(%addr, "serving /healthz and /metrics");
        tokio::spawn(observe::serve(listener, metrics.clone(), store.clone()));
    }
    let apis: run::Apis = Arc::new(std::sync::Mutex::new(apis));
    let ssh_pool = warm_pool(&opts, &metrics);
    loop {
        // Leadership: always ours with local locks; with etcd, won in an election and kept
        // as long as the session's lease is.
        let term = match leadership::win(&coord, &me, &mut ctl).await? {
            leadership::Won::Stopped => return Ok(()),
            leadership::Won::Term(t) => t,
        };
        metrics.set_leader(true);
        let env = Arc::new(Env {
            state_dir: opts.state_dir.clone(),
            audit_log: opts.audit_log.clone(),
            coord: coord.clone(),
            store: store.clone(),
            apis: apis.clone(),
            ssh_pool: ssh_pool.clone(),
            cancel: term.cancel.clone(),
            stop: ctl.stop.clone(),
        });
        let ended = lead(
            &opts,
            &mut ctl,
            &mut jobs,
            &env,
            &metrics,
            &me,
            term.lost.clone(),
        )
        .await;
        metrics.set_leader(false);
        match ended {
            Ended::Stopped => {
                if let Some(p) = &ssh_pool {
                    p.close_all().await;
                }
                term.resign().await;
                coord.close().await;
                tracing::info!("stopped");
                return Ok(());
            }
            Ended::Lost(why) => {
                tracing::error!(reason = %why, "leadership lost: running jobs were cancelled (they roll back); campaigning again");
                drop(term);
            }
        }
    }
}

/// The daemon's SSH connection pool (with its sweeper, and shown on /metrics), unless
/// `--ssh-pool-max 0`.
fn warm_pool(
    opts: &Options,
    metrics: &Arc<Metrics>,
) -> Option<Arc<crate::transport::ssh::WarmPool>> {
    let limits = opts.ssh_pool?;
    let pool = crate::transport::ssh::WarmPool::new(Default::default(), limits);
    pool.spawn_sweeper();
    metrics.set_ssh_pool(pool.clone());
    tracing::info!(max = limits.max, idle = %humantime::format_duration(limits.idle), "SSH connections are kept open between runs");
    Some(pool)
}

/// How a term of leadership ended.
enum Ended {
    /// Stopped by the operator (SIGTERM, SIGINT): running jobs finished or rolled back.
    Stopped,
    /// The session's lease was lost: running jobs were cancelled and rolled back.
    Lost(String),
}

/// One term as leader: schedule the jobs until stopped or until the leadership is lost.
async fn lead(
    opts: &Options,
    ctl: &mut Control,
    jobs: &mut Jobs,
    env: &Arc<Env>,
    metrics: &Arc<Metrics>,
    me: &str,
    mut lost: watch::Receiver<Option<String>>,
) -> Ended {
    // Each job's scheduled time (without jitter) and its next start (with it): as the state
    // says (a previous leader's schedule), else from now.
    let stored = env.store.load().await.unwrap_or_default();
    let mut base = schedule_all(jobs, &stored_next(&stored), &describe(jobs));
    let mut next = jittered(jobs, &base);
    // A run a previous leader (or this daemon before a restart) left in flight is checked
    // before the job runs again.
    let mut interrupted = takeover(env, jobs, &stored, me).await;
    for name in &interrupted {
        next.insert(name.clone(), jiff::Timestamp::now());
    }
    write_next(env, &next).await;
    let mut running: tokio::task::JoinSet<String> = tokio::task::JoinSet::new();
    let mut names: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut busy: std::collections::BTreeSet<String> = Default::default();
    // Whoever sends reloads may go away (no signal handling): then stop listening for them.
    let mut reloads = true;
    tracing::info!(jobs = jobs.jobs.len(), file = %opts.jobs.display(), "daemon started");
    loop {
        let now = jiff::Timestamp::now();
        // A job whose interrupted run still holds locks waits for them.
        if !interrupted.is_empty() {
            interrupted = still_held(env, &interrupted, &stored).await;
            for name in &interrupted {
                next.insert(name.clone(), now + jiff::SignedDuration::from_secs(1));
            }
        }
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
            let token = format!("daemon-{}", uuid::Uuid::new_v4().simple());
            let flight = state::InFlight {
                token: token.clone(),
                by: me.to_string(),
                since: now,
            };
            let marked = env
                .store
                .update(|s| {
                    let js = s.jobs.entry(job.name.clone()).or_default();
                    js.in_flight = Some(flight.clone());
                    // The next run, with this one under way: a new leader does not run this
                    // turn again.
                    js.next_run = next.get(&job.name).copied();
                })
                .await;
            if let Err(e) = marked {
                tracing::error!(job = %job.name, error = %e, "cannot record the run in the state: not starting it");
                continue;
            }
            busy.insert(job.name.clone());
            let (job_env, job, metrics) = (env.clone(), job.clone(), metrics.clone());
            let name = job.name.clone();
            let handle = running.spawn(async move {
                let env = job_env;
                let mut report = run::run_job(&env, &job, &token).await;
                if let Err(e) = run::record(&env, &job, &mut report).await {
                    tracing::error!(job = %job.name, error = %e, "cannot record the run's result");
                }
                metrics.observe(&report);
                run::log(&report);
                observe::notify(&job, &report).await;
                job.name.clone()
            });
            names.insert(handle.id(), name);
            write_next(env, &next).await;
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
                        base = schedule_all(&new, &base, &describe(jobs));
                        next = jittered(&new, &base);
                        *jobs = new;
                        write_next(env, &next).await;
                        tracing::info!(jobs = jobs.jobs.len(), "jobs file read again");
                    }
                    Err(d) => tracing::error!(
                        file = %opts.jobs.display(),
                        "the jobs file is invalid; keeping the jobs as they were:\n{}",
                        d.render(false)
                    ),
                }
            }
            l = lost.changed() => {
                let why = match l {
                    Ok(()) => lost.borrow().clone(),
                    Err(_) => None,
                };
                match why {
                    // The term's cancel is set by the same loss: the running jobs stop and
                    // roll back.
                    Some(why) => {
                        tracing::error!(running = running.len(), reason = %why, "leadership lost: cancelling running jobs");
                        while running.join_next().await.is_some() {}
                        return Ended::Lost(why);
                    }
                    // Never lost (local): stop watching.
                    None => lost = watch::channel(None).1,
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
                return Ended::Stopped;
            }
        }
    }
}

/// The next runs the state records (a previous leader's schedule).
fn stored_next(state: &state::State) -> BTreeMap<String, jiff::Timestamp> {
    state
        .jobs
        .iter()
        .filter_map(|(name, js)| js.next_run.map(|t| (name.clone(), t)))
        .collect()
}

/// On taking over: the jobs whose last run is still recorded in flight. Each is said (it was
/// interrupted: its leader stopped, or this daemon was killed), and is run again as soon as
/// the interrupted run's locks are free: the run starts with detection, so it checks whether
/// the fault is still there before fixing anything.
async fn takeover(env: &Env, jobs: &Jobs, state: &state::State, me: &str) -> Vec<String> {
    let mut out = Vec::new();
    for job in &jobs.jobs {
        let Some(f) = state.jobs.get(&job.name).and_then(|j| j.in_flight.clone()) else {
            continue;
        };
        tracing::warn!(
            job = %job.name,
            run = %f.token,
            by = %f.by,
            since = %f.since,
            now_leader = %me,
            "the job's last run was still in flight when its daemon stopped: checking it again (detection first) once its locks are free"
        );
        let said = format!(
            "interrupted: the run {} started by {} at {} did not finish (its daemon stopped); checked again by {me}",
            f.token, f.by, f.since
        );
        let _ = env
            .store
            .update(|s| {
                let js = s.jobs.entry(job.name.clone()).or_default();
                js.last_result = Some(said.clone());
            })
            .await;
        out.push(job.name.clone());
    }
    out
}

/// Of the interrupted jobs, those whose run still holds a lock (the old leader may still be
/// finishing it, or its lease has not expired yet).
async fn still_held(env: &Env, jobs: &[String], state: &state::State) -> Vec<String> {
    let Ok(locks) = env.coord.list().await else {
        return jobs.to_vec();
    };
    jobs.iter()
        .filter(|name| {
            let token = state
                .jobs
                .get(*name)
                .and_then(|j| j.in_flight.as_ref())
                .map(|f| f.token.clone());
            locks
                .iter()
                .any(|l| token.is_some() && l.holder.as_ref().map(|h| h.run.clone()) == token)
        })
        .cloned()
        .collect()
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

async fn write_next(env: &Env, next: &BTreeMap<String, jiff::Timestamp>) {
    let r = env
        .store
        .update(|s| {
            for (job, t) in next {
                s.jobs.entry(job.clone()).or_default().next_run = Some(*t);
            }
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "cannot write the daemon state");
    }
}
