//! The events' way from acceptance to a run, as the leader's loop (`mod.rs`) drives it:
//! matching an event against the jobs' rules and fetching the rules' lookups (`dispatch`),
//! keeping accepted events and waiting batches in the daemon state (`settle`) so that a new
//! leader takes them over (`take_over_events`), and the pollers a term starts.
//!
//! Not here: the receivers and pollers themselves (`triggers/`), the debounce queue
//! (`triggers/queue.rs`), and when runs start (`mod.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::jobs::{self, Jobs};
use super::observe::Metrics;
use super::run::Env;
use super::state;
use super::triggers::{
    self,
    queue::{Batch, Queue},
    Arrived,
};

/// What one event asked for once matched and looked up: a run of each job whose rule matched
/// (none when no rule matched or the lookups failed).
pub(super) struct Matched {
    /// The event's id (its mark in the state is cleared once this is handled).
    pub(super) id: String,
    pub(super) fires: Vec<Fire>,
}

/// A run an event's rule asks for, once its lookups are fetched.
pub(super) struct Fire {
    pub(super) job: String,
    pub(super) ask: triggers::rules::Ask,
    pub(super) at: std::time::Instant,
    pub(super) origin: triggers::Origin,
    pub(super) about: String,
}

/// How late the mark of an event that joined a waiting batch is cleared at most.
pub(super) const UNMARK_EVERY: Duration = Duration::from_secs(1);

/// One write to the state for events: keeps the batches `opened` as waiting (beyond
/// `state::PENDING_MAX` the oldest are no longer kept: logged; they still run here), forgets
/// the waiting batches `settled`, and clears the marks of the events `unmark`. A failed write is
/// logged (the batches still run here; a new leader would not know them).
/// Returns whether the state was written (when not, the marks are still there: clear them
/// with a later write).
pub(super) async fn settle(
    env: &Env,
    opened: &[state::PendingBatch],
    settled: &[String],
    unmark: &[String],
) -> bool {
    let r = env
        .store
        .update(|s| {
            let mut dropped = Vec::new();
            for b in opened {
                dropped.extend(s.events.keep_pending(b.clone()));
            }
            for id in settled {
                s.events.settle_pending(id);
            }
            for id in unmark {
                s.events.accepted.remove(id);
            }
            dropped
        })
        .await;
    match r {
        Ok(dropped) => {
            for b in dropped {
                tracing::warn!(
                    job = %b.job,
                    first = %b.about,
                    since = %b.first,
                    "more than {} batches of events wait: the oldest is no longer kept in the daemon state (it still runs here, but a new leader would not know it)",
                    state::PENDING_MAX
                );
            }
            true
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "cannot record the waiting batches of events in the daemon state (they still run here, but a new leader would not know them)"
            );
            false
        }
    }
}

/// After a reload: the waiting batches of jobs no longer in the file are not kept either.
pub(super) async fn forget_pending_of_removed(
    env: &Env,
    names: &std::collections::BTreeSet<String>,
) {
    let r = env
        .store
        .update(|s| s.events.pending.retain(|b| names.contains(&b.job)))
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "cannot write the daemon state");
    }
}

/// When something that happened at `at` happened, on the wall clock.
pub(super) fn wall(at: std::time::Instant) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(at.elapsed())
        .ok()
        .and_then(|d| jiff::Timestamp::now().checked_sub(d).ok())
        .unwrap_or_else(jiff::Timestamp::now)
}

/// The instant of the wall-clock time `t` (now, when it is in the future or too old).
pub(super) fn instant_of(t: jiff::Timestamp) -> std::time::Instant {
    let now = std::time::Instant::now();
    Duration::try_from(jiff::Timestamp::now().duration_since(t))
        .ok()
        .and_then(|ago| now.checked_sub(ago))
        .unwrap_or(now)
}

/// On taking over: the events a previous leader (or this daemon before a restart, or in an
/// earlier term) accepted and had not run yet.
/// - Its waiting batches are put in `queue`, due at once (each logged); those of jobs no longer
///   in the file are dropped (logged).
/// - The events it had accepted and not yet put in a batch are returned,
///   to be matched again (each logged); their marks stay until they are in a batch here. Those
///   kept without their body (too many, too big) cannot be matched again: they are forgotten
///   from the replay set, so that a poller (or a new delivery) takes them again (logged).
pub(super) async fn take_over_events(env: &Env, jobs: &Jobs, queue: &mut Queue) -> Vec<Arrived> {
    struct Found {
        batches: Vec<state::PendingBatch>,
        gone: Vec<state::PendingBatch>,
        events: Vec<(triggers::Event, jiff::Timestamp)>,
        forgotten: Vec<String>,
    }
    let r = env
        .store
        .update(|s| {
            let (batches, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut s.events.pending)
                .into_iter()
                .partition(|b| jobs.get(&b.job).is_some());
            s.events.pending = batches.clone();
            let mut found = Found {
                batches,
                gone,
                events: Vec::new(),
                forgotten: Vec::new(),
            };
            let left: Vec<(String, state::Accepted)> = s
                .events
                .accepted
                .iter()
                .map(|(id, a)| (id.clone(), a.clone()))
                .collect();
            for (id, a) in left {
                let event = a
                    .event
                    .and_then(|v| serde_json::from_value::<triggers::Event>(v).ok());
                match event {
                    Some(e) => found.events.push((e, a.at)),
                    None => {
                        s.events.accepted.remove(&id);
                        s.events.seen.remove(&id);
                        found.forgotten.push(id);
                    }
                }
            }
            found
        })
        .await;
    let found = match r {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the events a previous leader left waiting in the daemon state");
            return Vec::new();
        }
    };
    let now = std::time::Instant::now();
    for b in found.gone {
        tracing::warn!(job = %b.job, first = %b.about, since = %b.first, "a batch of events a previous leader left waiting is dropped: its job is no longer in the jobs file");
    }
    for b in found.batches {
        tracing::warn!(
            job = %b.job,
            first = %b.about,
            since = %b.first,
            limit = b.limit.as_deref().unwrap_or("(the job's own targets)"),
            "a batch of events a previous leader accepted had not started its run: running it now"
        );
        queue.restore(Batch {
            id: b.id,
            job: b.job,
            ask: triggers::rules::Ask {
                limit: b.limit,
                params: b.params,
            },
            first: instant_of(b.first),
            due: now,
            events: 1,
            about: b.about,
        });
    }
    if !found.forgotten.is_empty() {
        let again = if jobs.triggers.poll.is_empty() {
            "no poller is configured: only a new delivery of the same id would run them"
        } else {
            "a poller takes them again if its cursor has not passed them"
        };
        tracing::warn!(
            events = %found.forgotten.join(", "),
            "events a previous leader accepted were not yet in a batch and were kept by id only (too many or too big): they are no longer taken for replays; {again}"
        );
    }
    found
        .events
        .into_iter()
        .map(|(event, at)| {
            tracing::warn!(
                event = %format!("{} {}", event.kind_name, event.id),
                accepted = %at,
                "an event a previous leader accepted was not yet in a batch: matching it again"
            );
            let origin = if event.source == triggers::Origin::Alertmanager.word() {
                triggers::Origin::Alertmanager
            } else {
                triggers::Origin::Cloudstack
            };
            Arrived {
                event,
                at: instant_of(at),
                origin,
            }
        })
        .collect()
}

/// The pollers of the jobs file, as tasks of this term.
pub(super) fn start_pollers(
    jobs: &Jobs,
    env: &Arc<Env>,
    tx: &mpsc::Sender<Arrived>,
    metrics: &Arc<Metrics>,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    for p in &jobs.triggers.poll {
        set.spawn(triggers::poll::run(
            env.clone(),
            p.clone(),
            tx.clone(),
            metrics.clone(),
        ));
    }
    set
}

/// Matches an event against every job's rules; for the jobs whose rule matches (each its
/// first such rule) a task fetches the rules' lookups and renders their asks, then hands them
/// to the loop's queue, together. An event no rule matches is counted and logged: `false`.
pub(super) fn dispatch(
    jobs: &Jobs,
    env: &Arc<Env>,
    metrics: &Arc<Metrics>,
    fires: &mpsc::UnboundedSender<Matched>,
    arrived: Arrived,
) -> bool {
    let e = &arrived.event;
    let about = format!("{} {}", e.kind_name, e.id);
    let mut lookups = tokio::task::JoinSet::new();
    for job in &jobs.jobs {
        let Some(rule) = job.on.iter().find(|r| r.matches(e)) else {
            continue;
        };
        let (env, job, rule) = (env.clone(), job.clone(), rule.clone());
        let (event, at, origin, about) = (
            arrived.event.clone(),
            arrived.at,
            arrived.origin,
            about.clone(),
        );
        lookups.spawn(async move {
            match ask_of(&env, &job, &rule, &event).await {
                Ok(ask) => Some(Fire {
                    job: job.name.clone(),
                    ask,
                    at,
                    origin,
                    about,
                }),
                Err(why) => {
                    tracing::warn!(
                        job = %job.name,
                        rule = %rule.name,
                        event = %about,
                        "the rule matched, but no run is asked: {why}"
                    );
                    None
                }
            }
        });
    }
    if lookups.is_empty() {
        metrics.event_unmatched(arrived.origin);
        tracing::info!(source = arrived.origin.word(), event = %about, "no rule matches the event");
        return false;
    }
    let (fires, id) = (fires.clone(), arrived.event.id.clone());
    tokio::spawn(async move {
        let mut asked = Vec::new();
        while let Some(done) = lookups.join_next().await {
            match done {
                Ok(fire) => asked.extend(fire),
                Err(e) => tracing::error!(error = %e, "a rule's lookup task failed"),
            }
        }
        let _ = fires.send(Matched { id, fires: asked });
    });
    true
}

/// What `rule` asks for `event`: its lookups fetched (read-only calls through the job's
/// CloudStack API), then its templates rendered.
pub(super) async fn ask_of(
    env: &Env,
    job: &jobs::Job,
    rule: &triggers::rules::Rule,
    event: &triggers::Event,
) -> Result<triggers::rules::Ask, String> {
    use crate::transport::{Access, Action, ActionResult};
    let mut ctx = triggers::rules::context(event);
    if !rule.lookups.is_empty() {
        let files = crate::inventory::Inventory::load(&job.inventory).map_err(|e| e.to_string())?;
        let api = env.api(&job.inventory, &files);
        for l in &rule.lookups {
            let call = rule.lookup_call(l, &ctx)?;
            let what = call.to_string();
            let reply = api
                .run(
                    &Action::Api(call),
                    Access::ReadOnly,
                    Duration::from_secs(30),
                )
                .await
                .map_err(|e| format!("lookup {}: {what}: {e}", l.name))?;
            let ActionResult::Api(reply) = reply else {
                return Err(format!("lookup {}: {what}: not an API reply", l.name));
            };
            let Some(first) = triggers::poll::items(&reply).into_iter().next() else {
                return Err(format!("lookup {}: {what} found nothing", l.name));
            };
            ctx.insert(l.name.clone(), minijinja::Value::from_serialize(&first));
        }
    }
    rule.ask(&ctx)
}
