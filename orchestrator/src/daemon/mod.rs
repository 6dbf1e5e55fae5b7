//! `remedy daemon`: scheduled detection and self-healing that never fights an operator.
//!
//! - `jobs`: the jobs file and its schedules.
//! - `state`: what survives a restart (last results; per job and target the fixes, cooldowns,
//!   open circuits).
//! - `run`: one run of one job (detect; then fix, plan or report), with per-target locks
//!   shared with `remedy apply`.
//! - `observe`: notifications and the metrics; `listen`: the HTTP listener (`/healthz`,
//!   `/readyz`, `/metrics`, the webhook receivers).
//! - `triggers`: events that run a job at once (webhooks, polling, rules, debounce).
//!
//! Here: the loop. One daemon per state directory (a lock). Each job runs at its next
//! scheduled time (plus jitter), never twice at once. A stop (SIGTERM, SIGINT) ends the
//! scheduling and waits for running jobs to finish or roll back; a second one cancels them
//! (they roll back). A reload (SIGHUP) reads the jobs file again, and keeps the old jobs when
//! the new file is invalid. Events (a webhook delivery, a polled event) that a job's rule
//! matches run that job as soon as their debounce window passes, with the rule's targets and
//! parameters, under the same guards as a scheduled run. An accepted event is kept in the
//! state until its run starts (the event until it is in a batch, then its batch): a new leader
//! takes them over before it takes events itself.

pub mod events;
pub mod jobs;
pub mod leadership;
pub mod listen;
pub mod observe;
pub mod run;
pub mod state;
pub mod triggers;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::error::Error;
use events::{
    dispatch, forget_pending_of_removed, settle, start_pollers, take_over_events, wall, Matched,
    UNMARK_EVERY,
};
use jobs::Jobs;
use observe::Metrics;
use run::Env;
use triggers::queue::{Batch, Queue};
use triggers::Arrived;

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
    // Events: from the receivers (on the listener) and the pollers, to the leader's loop.
    let (events_tx, mut events) = mpsc::channel::<Arrived>(triggers::hooks::QUEUE);
    let hub = Arc::new(triggers::hooks::Hub {
        config: std::sync::RwLock::new(Arc::new(hook_config(&jobs).map_err(Error::Other)?)),
        tx: events_tx.clone(),
        metrics: metrics.clone(),
        store: store.clone(),
    });
    let listen = opts.listen.or(jobs.listen);
    if jobs.triggers.has_receivers() && listen.is_none() {
        return Err(Error::Other(
            "the webhook receivers under `triggers:` need an address to listen on: `listen` in the jobs file, or --listen".into(),
        ));
    }
    if let Some(addr) = listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Other(format!("listen {addr}: {e}")))?;
        tracing::info!(%addr, "serving /healthz, /readyz, /metrics and the webhook receivers");
        tokio::spawn(listen::serve(
            listener,
            metrics.clone(),
            store.clone(),
            Some(hub.clone()),
        ));
    }
    let apis: run::Apis = Arc::new(std::sync::Mutex::new(apis));
    let ssh_pool = warm_pool(&opts, &metrics);
    let resolved = Arc::new(crate::cloudstack::inventory::Resolved::default());
    loop {
        // Leadership: always ours with local locks; with etcd, won in an election and kept
        // as long as the session's lease is.
        let term = match leadership::win(&coord, &me, &mut ctl).await? {
            leadership::Won::Stopped => return Ok(()),
            leadership::Won::Term(t) => t,
        };
        // (Leading, ready and taking events once the term has taken over what the state
        // says: in `lead`.)
        let env = Arc::new(Env {
            state_dir: opts.state_dir.clone(),
            audit_log: opts.audit_log.clone(),
            coord: coord.clone(),
            store: store.clone(),
            apis: apis.clone(),
            resolved: resolved.clone(),
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
            Events {
                rx: &mut events,
                tx: &events_tx,
                hub: &hub,
            },
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

/// The receivers' config from the jobs file: the secrets read (an unreadable one stops the
/// daemon, or a reload), and the CloudStack event types the rules name.
fn hook_config(jobs: &Jobs) -> Result<triggers::hooks::Config, String> {
    let read = |what: &str, r: &crate::inventory::SecretRef| {
        r.resolve().map_err(|e| format!("triggers.{what}: {e}"))
    };
    let cloudstack_secret = match &jobs.triggers.cloudstack {
        Some(r) => Some(read("cloudstack.secret", r)?),
        None => None,
    };
    let alertmanager_token = match &jobs.triggers.alertmanager {
        Some(Some(r)) => Some(Some(read("alertmanager.token", r)?)),
        Some(None) => Some(None),
        None => None,
    };
    let mut cloudstack_types: Vec<String> = jobs
        .jobs
        .iter()
        .flat_map(|j| &j.on)
        .filter(|r| r.source == triggers::Origin::Cloudstack)
        .flat_map(|r| r.types.iter().cloned())
        .collect();
    cloudstack_types.sort();
    cloudstack_types.dedup();
    Ok(triggers::hooks::Config {
        cloudstack_secret,
        alertmanager_token,
        cloudstack_types,
    })
}

/// The events' side of a term: the queue from the receivers and pollers, its sender (for the
/// pollers the term starts), and the receivers' shared state (their config follows reloads).
struct Events<'a> {
    rx: &'a mut mpsc::Receiver<Arrived>,
    tx: &'a mpsc::Sender<Arrived>,
    hub: &'a Arc<triggers::hooks::Hub>,
}

/// One term as leader: schedule the jobs until stopped or until the leadership is lost.
#[allow(clippy::too_many_arguments)]
async fn lead(
    opts: &Options,
    ctl: &mut Control,
    jobs: &mut Jobs,
    env: &Arc<Env>,
    metrics: &Arc<Metrics>,
    me: &str,
    mut lost: watch::Receiver<Option<String>>,
    events: Events<'_>,
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
    // Events in a batch (or settled without one) whose mark in the state is not cleared yet:
    // cleared with the next write the loop makes, at the latest a second later.
    let mut unmark: Vec<String> = Vec::new();
    let mut unmarked = std::time::Instant::now();
    let mut names: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut busy: std::collections::BTreeSet<String> = Default::default();
    // Whoever sends reloads may go away (no signal handling): then stop listening for them.
    let mut reloads = true;
    // The same for the term's loss (local locks never lose it).
    let mut watching_lost = true;
    // Events: matched and looked up in tasks (after the receiver answered), then debounced.
    let (fire_tx, mut fires) = mpsc::unbounded_channel::<Matched>();
    let mut queue = Queue::default();
    // The events a previous leader accepted and had not run yet: its waiting batches, and the
    // events it had not put in a batch. Only then does this daemon lead (ready, taking events):
    // every event the state marks as not in a batch yet is the previous leader's.
    // Events still queued from an earlier term of this daemon are in the state's marks, which
    // the takeover reads: from the queue they would run twice.
    while events.rx.try_recv().is_ok() {}
    for arrived in take_over_events(env, jobs, &mut queue).await {
        let id = arrived.event.id.clone();
        if !dispatch(jobs, env, metrics, &fire_tx, arrived) {
            unmark.push(id);
        }
    }
    metrics.set_leader(true);
    let mut pollers = start_pollers(jobs, env, events.tx, metrics);
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
            if matches!(job.schedule, jobs::Schedule::Events) {
                // Due only because its interrupted run is checked again: no next time.
                base.remove(&job.name);
                next.remove(&job.name);
            } else {
                let b = job
                    .schedule
                    .next_after(after)
                    .unwrap_or_else(|| now + jiff::SignedDuration::from_hours(24));
                base.insert(job.name.clone(), b);
                next.insert(job.name.clone(), b + jitter(job));
            }
            if busy.contains(&job.name) {
                tracing::info!(job = %job.name, "still running: this turn is skipped");
                continue;
            }
            let Some(token) =
                begin(env, job, me, next.get(&job.name).copied(), None, &unmark).await
            else {
                continue;
            };
            unmark.clear();
            busy.insert(job.name.clone());
            let handle = running.spawn(one_run(
                env.clone(),
                job.clone(),
                token,
                None,
                metrics.clone(),
            ));
            names.insert(handle.id(), job.name.clone());
            write_next(env, &next).await;
        }
        // Start the runs events asked for whose window has passed (and whose job is free).
        for batch in queue.take_due(std::time::Instant::now(), &busy) {
            let Some(job) = jobs.get(&batch.job) else {
                if settle(env, &[], std::slice::from_ref(&batch.id), &unmark).await {
                    unmark.clear();
                }
                continue;
            };
            let job = asked(job, &batch);
            let Some(token) = begin(
                env,
                &job,
                me,
                next.get(&job.name).copied(),
                Some(&batch.id),
                &unmark,
            )
            .await
            else {
                continue;
            };
            unmark.clear();
            tracing::info!(
                job = %job.name,
                events = batch.events,
                first = %batch.about,
                limit = job.limit.as_deref().unwrap_or("(the job's own targets)"),
                "run started by events"
            );
            metrics.event_run(&job.name, batch.first.elapsed());
            busy.insert(job.name.clone());
            let name = job.name.clone();
            let handle = running.spawn(one_run(
                env.clone(),
                job,
                token,
                Some(batch.first),
                metrics.clone(),
            ));
            names.insert(handle.id(), name);
        }
        // (No scheduled job at all: wake for events and signals only.)
        let wake = match next.values().min() {
            Some(t) => Duration::try_from(t.duration_since(jiff::Timestamp::now()))
                .unwrap_or(Duration::ZERO),
            None => Duration::from_secs(3600),
        }
        .min(Duration::from_secs(3600));
        let wake = match queue.next_due(&busy) {
            Some(due) => wake.min(due.saturating_duration_since(std::time::Instant::now())),
            None => wake,
        };
        // Marks of events already in a batch: cleared at most a second late (one write for
        // every event of a storm that joined a batch meanwhile).
        if !unmark.is_empty()
            && unmarked.elapsed() >= UNMARK_EVERY
            && settle(env, &[], &[], &unmark).await
        {
            unmark.clear();
        }
        if unmark.is_empty() {
            unmarked = std::time::Instant::now();
        }
        let wake = match unmark.is_empty() {
            true => wake,
            false => wake.min(UNMARK_EVERY.saturating_sub(unmarked.elapsed())),
        };
        tokio::select! {
            _ = tokio::time::sleep(wake) => {}
            Some(arrived) = events.rx.recv() => {
                let id = arrived.event.id.clone();
                if !dispatch(jobs, env, metrics, &fire_tx, arrived) {
                    unmark.push(id);
                }
            }
            Some(matched) = fires.recv() => {
                let mut opened = Vec::new();
                for fire in matched.fires {
                    let pending = |id: String| state::PendingBatch {
                        id,
                        job: fire.job.clone(),
                        limit: fire.ask.limit.clone(),
                        params: fire.ask.params.clone(),
                        first: wall(fire.at),
                        about: fire.about.clone(),
                    };
                    let added = queue.add(
                        &fire.job,
                        fire.ask.clone(),
                        fire.about.clone(),
                        fire.at,
                        std::time::Instant::now(),
                        jobs.triggers.debounce,
                        jobs.triggers.first_event,
                    );
                    match added {
                        Some(id) => opened.push(pending(id)),
                        None => metrics.event_deduplicated(fire.origin, "debounced"),
                    }
                }
                unmark.push(matched.id);
                // A batch opened: kept in the state at once (with the marks to clear). An
                // event that only joined batches waits for the next write.
                if !opened.is_empty() && settle(env, &opened, &[], &unmark).await {
                    unmark.clear();
                }
            }
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
                        let config = match hook_config(&new) {
                            Ok(c) => c,
                            Err(e) => {
                                tracing::error!(file = %opts.jobs.display(), "the jobs file's triggers cannot be used; keeping the jobs as they were: {e}");
                                continue;
                            }
                        };
                        for j in &new.jobs {
                            metrics.register(&j.name);
                        }
                        base = schedule_all(&new, &base, &describe(jobs));
                        next = jittered(&new, &base);
                        *events.hub.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
                        let pollers_changed = new.triggers.poll != jobs.triggers.poll;
                        *jobs = new;
                        let names: std::collections::BTreeSet<String> =
                            jobs.jobs.iter().map(|j| j.name.clone()).collect();
                        queue.retain_jobs(&names);
                        forget_pending_of_removed(env, &names).await;
                        if pollers_changed {
                            pollers.abort_all();
                            pollers = start_pollers(jobs, env, events.tx, metrics);
                        }
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
            l = lost.changed(), if watching_lost => {
                if l.is_err() {
                    // Never lost (local locks: the sender is gone): stop watching. (Watching a
                    // closed channel again would wake this loop at once, for ever.)
                    watching_lost = false;
                    continue;
                }
                let why = lost.borrow().clone();
                // The term's cancel is set by the same loss: the running jobs stop and roll
                // back.
                if let Some(why) = why {
                    // No more events from now on (the receivers answer 503): one accepted
                    // during the rollback below would be marked after the next leader took
                    // the marks over, and never run.
                    metrics.set_leader(false);
                    tracing::error!(running = running.len(), reason = %why, "leadership lost: cancelling running jobs");
                    pollers.abort_all();
                    // (The events already in a batch: not matched again by the next leader,
                    // which may take over while the running jobs roll back.)
                    settle(env, &[], &[], &unmark).await;
                    while running.join_next().await.is_some() {}
                    // The events not yet matched are the next leader's (their marks stay in
                    // the state): this daemon, should it lead again, does not run them late.
                    while events.rx.try_recv().is_ok() {}
                    return Ended::Lost(why);
                }
            }
            _ = async {
                // A stop sender gone (no signal handling) never stops the daemon.
                if ctl.stop.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::info!(running = running.len(), "stopping: no new runs; waiting for running jobs to finish or roll back");
                pollers.abort_all();
                while running.join_next().await.is_some() {}
                settle(env, &[], &[], &unmark).await;
                return Ended::Stopped;
            }
        }
    }
}

/// Records a run of `job` as in flight (with the job's next scheduled run): its token, or
/// `None` when the state cannot be written (the run is not started). In the same write: the
/// waiting batch `batch` that asked for the run is no longer kept, and the events `unmark` are
/// no longer marked as waiting for a batch.
async fn begin(
    env: &Env,
    job: &jobs::Job,
    me: &str,
    next_run: Option<jiff::Timestamp>,
    batch: Option<&str>,
    unmark: &[String],
) -> Option<String> {
    let token = format!("daemon-{}", uuid::Uuid::new_v4().simple());
    let flight = state::InFlight {
        token: token.clone(),
        by: me.to_string(),
        since: jiff::Timestamp::now(),
    };
    let marked = env
        .store
        .update(|s| {
            let js = s.jobs.entry(job.name.clone()).or_default();
            js.in_flight = Some(flight.clone());
            // The next run, with this one under way: a new leader does not run this turn again.
            js.next_run = next_run;
            if let Some(id) = batch {
                s.events.settle_pending(id);
            }
            for id in unmark {
                s.events.accepted.remove(id);
            }
        })
        .await;
    match marked {
        Ok(()) => Some(token),
        Err(e) => {
            tracing::error!(job = %job.name, error = %e, "cannot record the run in the state: not starting it");
            None
        }
    }
}

/// One run of `job`: run, record, count, log, notify. `first`: when the first of the events
/// that asked for it arrived (for the latency to the fix).
async fn one_run(
    env: Arc<Env>,
    job: jobs::Job,
    token: String,
    first: Option<std::time::Instant>,
    metrics: Arc<Metrics>,
) -> String {
    let mut report = run::run_job(&env, &job, &token).await;
    if let Err(e) = run::record(&env, &job, &mut report).await {
        tracing::error!(job = %job.name, error = %e, "cannot record the run's result");
    }
    metrics.observe(&report);
    if let (Some(first), run::Verdict::Fixed) = (first, &report.verdict) {
        metrics.latency(&job.name, "fixed", first.elapsed());
    }
    run::log(&report);
    observe::notify(&job, &report).await;
    job.name.clone()
}

/// The job as a batch of events asks it to run: limited to the rule's targets, with the rule's
/// parameters over the job's own.
fn asked(job: &jobs::Job, batch: &Batch) -> jobs::Job {
    let mut job = job.clone();
    job.limit = batch.ask.limit.clone();
    // An event may be about a machine the zone has only just made: read it afresh.
    job.inventory_cache = Duration::ZERO;
    for (k, v) in &batch.ask.params {
        match job.params.iter_mut().find(|(n, _)| n == k) {
            Some(p) => p.1 = v.clone(),
            None => job.params.push((k.clone(), v.clone())),
        }
    }
    job
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
        .filter(|j| !matches!(j.schedule, jobs::Schedule::Events))
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
