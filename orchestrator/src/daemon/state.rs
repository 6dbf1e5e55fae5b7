//! What `remedy daemon` remembers across restarts: `daemon-state.json` in the state directory.
//!
//! Per job: the last run, its result, the last success, the next run. Per job and target: the
//! fixes within the circuit's window, the cooldown after the last fix, and whether the circuit
//! is open (the job stops fixing that target until `remedy daemon reset`). For the event
//! triggers: the ids seen (replays), the pollers' cursors, the events accepted and not yet in a
//! batch, and the batches waiting for their run (a new leader takes the last two over).
//!
//! The daemon and the `status`/`reset` commands change the file only through [`update`]: an
//! exclusive lock on `daemon-state.lock`, read, change, write to a temporary file, fsync,
//! rename. A reset made while the daemon runs is therefore never lost.
//!
//! With etcd coordination ([`Store::Etcd`]) the same document is the key `PREFIX/daemon/state`,
//! changed by compare-and-swap (read with its revision, change, write if still at that
//! revision, else again), so it is shared by every replica and survives a failover.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::jobs::Job;

const FILE: &str = "daemon-state.json";
const LOCK: &str = "daemon-state.lock";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub jobs: BTreeMap<String, JobState>,
    /// Events seen (replays are recognised across restarts and failovers) and the pollers'
    /// cursors.
    #[serde(default, skip_serializing_if = "Events::is_empty")]
    pub events: Events,
}

/// What the event triggers remember.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Events {
    /// Event ids seen, with when: at most [`SEEN_MAX`], none older than [`SEEN_FOR`].
    #[serde(default)]
    pub seen: BTreeMap<String, Timestamp>,
    /// Each poller's cursor (`NAME/events`, `NAME/alerts`).
    #[serde(default)]
    pub cursors: BTreeMap<String, Cursor>,
    /// Events accepted (answered `200`, or polled) whose run is not yet asked for: set with the
    /// id in [`Events::seen`], cleared once the event is in a batch (opened or joined) or
    /// settled without one (no rule matched, a lookup failed). A new leader takes over those
    /// the last one left.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub accepted: BTreeMap<String, Accepted>,
    /// The batches of events waiting for their run ([`PendingBatch`]): written when a batch
    /// opens, removed by the write that starts its run (or when it is dropped). At most
    /// [`PENDING_MAX`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingBatch>,
}

/// An event accepted but not yet in a batch (see [`Events::accepted`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    pub at: Timestamp,
    /// The event itself, so that a new leader can match it again; `None` when it was too big
    /// or too many events wait already ([`ACCEPTED_KEPT`], [`ACCEPTED_BYTES`]): then only its id
    /// is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
}

/// A batch of events waiting for its run, as the state keeps it: what the run is asked for
/// (the job, its targets and parameters), and its first event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingBatch {
    /// Names the batch (its removal when its run starts).
    pub id: String,
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(String, String)>,
    /// When its first event arrived, and that event in words (`TYPE ID`).
    pub first: Timestamp,
    pub about: String,
}

/// How many waiting batches the state keeps at most (the oldest go first, logged).
pub const PENDING_MAX: usize = 256;
/// How many accepted events the state keeps with their body at most (more: their ids only).
pub const ACCEPTED_KEPT: usize = 64;
/// The largest event (as JSON) the state keeps with its body.
pub const ACCEPTED_BYTES: usize = 8 * 1024;

/// Where a poller (`triggers::poll`) is: the newest item's time and the ids seen at that time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    pub created: Option<jiff::Timestamp>,
    #[serde(default)]
    pub ids: Vec<String>,
}

/// How many event ids are remembered at most (the oldest are forgotten first).
pub const SEEN_MAX: usize = 2048;
/// How long an event id is remembered: longer than CloudStack's and Alertmanager's retries.
pub const SEEN_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

impl Events {
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
            && self.cursors.is_empty()
            && self.accepted.is_empty()
            && self.pending.is_empty()
    }

    /// Marks `id` (just remembered at `now`) as accepted and not yet in a batch, with the event
    /// `event` (JSON) when it is small enough and few enough wait already.
    pub fn accept(&mut self, id: &str, event: serde_json::Value, now: Timestamp) {
        let kept = self.accepted.values().filter(|a| a.event.is_some()).count();
        let small = serde_json::to_vec(&event).is_ok_and(|b| b.len() <= ACCEPTED_BYTES);
        let event = (kept < ACCEPTED_KEPT && small).then_some(event);
        self.accepted
            .insert(id.to_string(), Accepted { at: now, event });
        // Never more than the replay set holds.
        let seen = &self.seen;
        self.accepted.retain(|k, _| seen.contains_key(k));
    }

    /// Keeps `batch` as waiting; beyond [`PENDING_MAX`] the oldest are dropped: returned.
    pub fn keep_pending(&mut self, batch: PendingBatch) -> Vec<PendingBatch> {
        self.pending.push(batch);
        let over = self.pending.len().saturating_sub(PENDING_MAX);
        self.pending.drain(..over).collect()
    }

    /// Forgets the waiting batch `id` (its run starts, or it was dropped).
    pub fn settle_pending(&mut self, id: &str) {
        self.pending.retain(|b| b.id != id);
    }

    /// Remember `id` at `now`: `false` when it was seen already (a replay). Keeps the set
    /// bounded: ids older than [`SEEN_FOR`] go, then the oldest beyond [`SEEN_MAX`].
    pub fn remember(&mut self, id: &str, now: Timestamp) -> bool {
        let horizon = jiff::SignedDuration::try_from(SEEN_FOR)
            .ok()
            .and_then(|d| now.checked_sub(d).ok())
            .unwrap_or(Timestamp::MIN);
        self.seen.retain(|_, t| *t > horizon);
        if self.seen.contains_key(id) {
            return false;
        }
        self.seen.insert(id.to_string(), now);
        while self.seen.len() > SEEN_MAX {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.seen.remove(&k),
                None => break,
            };
        }
        true
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Timestamp>,
    /// The last run's status line and exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<Timestamp>,
    #[serde(default)]
    pub targets: BTreeMap<String, TargetState>,
    /// A run of the job under way: set by the leader before it starts, cleared when its result
    /// is recorded. Still set when a new leader takes over: that run was interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlight>,
    /// Set while the job's runs find the fault and leave every target alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<Degraded>,
}

/// A job's degraded state: its runs find the fault, and leave every target alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Degraded {
    /// The first degraded run of this stretch.
    pub since: Timestamp,
    /// Each target left alone: the reason's kind (`circuit-open`, `cooldown`, `locked`).
    pub targets: BTreeMap<String, String>,
    /// The last run's status (why, in words).
    pub status: String,
    /// When the log last said so (entering, a change, or a reminder).
    pub said: Timestamp,
}

/// The reason's kind of a target someone else's lock leaves alone.
pub const LOCKED: &str = "locked";

/// While a job stays degraded, how often the log says so again.
pub const DEGRADED_REMINDER: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// What a run saw of the fault, for the degraded state.
#[derive(Debug, Clone, Copy)]
pub enum Seen<'a> {
    /// The fault is there and every target is left alone: (target, reason's kind).
    Degraded(&'a [(String, String)]),
    /// The fault is gone, or the run fixed it.
    Gone,
    /// Nothing known (the run failed, or the daemon stopped before a fix).
    Unknown,
}

/// How a run changed its job's degraded state ([`JobState::note_degraded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DegradedChange {
    /// Not degraded before this run.
    Entered,
    /// Still degraded, with other targets or reasons than before.
    Changed,
    /// Still degraded as before, and the last word about it is [`DEGRADED_REMINDER`] old.
    Reminder,
    /// Still degraded as before: nothing new to say.
    Same,
    /// Degraded before; this run found the fault gone or fixed it.
    Left,
}

/// A job's run under way (see [`JobState::in_flight`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    /// The token its locks carry as their holder's run.
    pub token: String,
    /// The daemon running it (`remedy daemon (...) on HOST pid N`).
    pub by: String,
    pub since: Timestamp,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    /// Fixes within the circuit's window, oldest first.
    #[serde(default)]
    pub fixes: Vec<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_until: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_open_since: Option<Timestamp>,
}

/// Why a job leaves a target alone this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    Cooldown { until: Timestamp },
    CircuitOpen { since: Timestamp },
}

impl Blocked {
    /// The reason's kind, as the degraded gauge labels it.
    pub fn kind(&self) -> &'static str {
        match self {
            Blocked::Cooldown { .. } => "cooldown",
            Blocked::CircuitOpen { .. } => "circuit-open",
        }
    }
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocked::Cooldown { until } => write!(f, "cooling down until {until}"),
            Blocked::CircuitOpen { since } => write!(
                f,
                "circuit open since {since}: `remedy daemon reset` to fix it again"
            ),
        }
    }
}

fn add(t: Timestamp, d: std::time::Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

impl JobState {
    /// Whether `target` may be fixed at `now`.
    pub fn blocked(&self, target: &str, now: Timestamp) -> Option<Blocked> {
        let t = self.targets.get(target)?;
        if let Some(since) = t.circuit_open_since {
            return Some(Blocked::CircuitOpen { since });
        }
        match t.cooldown_until {
            Some(until) if now < until => Some(Blocked::Cooldown { until }),
            _ => None,
        }
    }

    /// Record a fix of `target` at `now`: the cooldown starts, and with `job.circuit.fixes`
    /// fixes within its window the circuit opens. Returns whether it opened now.
    pub fn record_fix(&mut self, target: &str, now: Timestamp, job: &Job) -> bool {
        let t = self.targets.entry(target.to_string()).or_default();
        let window_start = jiff::SignedDuration::try_from(job.circuit.window)
            .ok()
            .and_then(|w| now.checked_sub(w).ok())
            .unwrap_or(Timestamp::MIN);
        t.fixes.retain(|f| *f > window_start);
        t.fixes.push(now);
        t.cooldown_until = Some(add(now, job.cooldown));
        if t.circuit_open_since.is_none() && t.fixes.len() as u32 >= job.circuit.fixes {
            t.circuit_open_since = Some(now);
            return true;
        }
        false
    }

    /// Follows the job's degraded state with what a run `seen` (its `status` in words): a
    /// degraded run enters it or stays in it, a run that found the fault gone or fixed it
    /// leaves it, a run that knows nothing changes nothing. Returns how it changed.
    pub fn note_degraded(
        &mut self,
        seen: Seen<'_>,
        status: &str,
        now: Timestamp,
    ) -> Option<DegradedChange> {
        match seen {
            Seen::Degraded(left_alone) => {
                let targets: BTreeMap<String, String> = left_alone.iter().cloned().collect();
                let (change, since) = match &self.degraded {
                    None => (DegradedChange::Entered, now),
                    Some(d) if d.targets != targets => (DegradedChange::Changed, d.since),
                    Some(d) if add(d.said, DEGRADED_REMINDER) <= now => {
                        (DegradedChange::Reminder, d.since)
                    }
                    Some(d) => (DegradedChange::Same, d.since),
                };
                let said = match (change, &self.degraded) {
                    (DegradedChange::Same, Some(d)) => d.said,
                    _ => now,
                };
                self.degraded = Some(Degraded {
                    since,
                    targets,
                    status: status.to_string(),
                    said,
                });
                Some(change)
            }
            Seen::Unknown => None,
            Seen::Gone => self.degraded.take().map(|_| DegradedChange::Left),
        }
    }

    /// Targets whose circuit is open.
    pub fn open_circuits(&self) -> Vec<(&str, Timestamp)> {
        self.targets
            .iter()
            .filter_map(|(k, t)| t.circuit_open_since.map(|s| (k.as_str(), s)))
            .collect()
    }

    /// Forget the fixes, cooldown and circuit of `target` (every target when `None`). Returns
    /// the targets reset.
    pub fn reset(&mut self, target: Option<&str>) -> Vec<String> {
        let names: Vec<String> = match target {
            Some(t) if self.targets.contains_key(t) => vec![t.to_string()],
            Some(_) => Vec::new(),
            None => self.targets.keys().cloned().collect(),
        };
        for n in &names {
            self.targets.remove(n);
        }
        names
    }
}

/// Where the state is kept: the state directory's file, or etcd.
#[derive(Debug, Clone)]
pub enum Store {
    Local(PathBuf),
    Etcd(std::sync::Arc<crate::coord::Coordinator>),
}

/// The etcd document (under the coordination prefix).
const ETCD_DOC: &str = "daemon/state";

impl Store {
    /// The store that goes with `coord`: etcd's document, or the state directory's file.
    pub fn new(coord: &std::sync::Arc<crate::coord::Coordinator>) -> Store {
        match coord.as_ref() {
            crate::coord::Coordinator::Local { dir } => Store::Local(dir.clone()),
            crate::coord::Coordinator::Etcd(_) => Store::Etcd(coord.clone()),
        }
    }

    /// Where, for messages.
    pub fn describe(&self) -> String {
        match self {
            Store::Local(dir) => path(dir).display().to_string(),
            Store::Etcd(c) => format!("{ETCD_DOC} in {}", c.describe()),
        }
    }

    fn etcd(&self) -> Option<&crate::coord::etcd::Etcd> {
        match self {
            Store::Etcd(c) => match c.as_ref() {
                crate::coord::Coordinator::Etcd(e) => Some(e),
                crate::coord::Coordinator::Local { .. } => None,
            },
            Store::Local(_) => None,
        }
    }

    /// The state now (empty when there is none yet).
    pub async fn load(&self) -> Result<State, String> {
        match (self, self.etcd()) {
            (_, Some(e)) => Ok(parse_doc(e.get_doc(ETCD_DOC).await?.0)?),
            (Store::Local(dir), _) => load(dir),
            (Store::Etcd(_), None) => Err("no etcd behind the state store".into()),
        }
    }

    /// Change the state: read, `f`, write; with etcd `f` runs again on the state as it is now
    /// when another replica (or `remedy daemon reset`) wrote in between.
    pub async fn update<R>(&self, mut f: impl FnMut(&mut State) -> R) -> Result<R, String> {
        let Some(e) = self.etcd() else {
            return match self {
                Store::Local(dir) => update(dir, f),
                Store::Etcd(_) => Err("no etcd behind the state store".into()),
            };
        };
        for _ in 0..50 {
            let (doc, revision) = e.get_doc(ETCD_DOC).await?;
            let mut state = parse_doc(doc)?;
            let r = f(&mut state);
            let text = serde_json::to_vec(&state).map_err(|e| e.to_string())?;
            if e.cas_doc(ETCD_DOC, revision, text).await? {
                return Ok(r);
            }
        }
        Err("the daemon state in etcd kept changing under this update (50 tries)".into())
    }
}

fn parse_doc(doc: Option<Vec<u8>>) -> Result<State, String> {
    match doc {
        None => Ok(State::default()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{ETCD_DOC} in etcd: not a daemon state document: {e}")),
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The state as it is on disk (empty when there is none yet).
pub fn load(dir: &Path) -> Result<State, String> {
    let p = path(dir);
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a daemon state file: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Change the state on disk under its lock: read, `f`, write (atomically, durably).
pub fn update<R>(dir: &Path, f: impl FnOnce(&mut State) -> R) -> Result<R, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK))
        .map_err(|e| format!("{}: {e}", dir.join(LOCK).display()))?;
    lock.lock()
        .map_err(|e| format!("{}: {e}", dir.join(LOCK).display()))?;
    let mut state = load(dir)?;
    let r = f(&mut state);
    let p = path(dir);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let text = serde_json::to_string_pretty(&state).map_err(|e| e.to_string())?;
    let mut out = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    out.write_all(text.as_bytes())
        .and_then(|_| out.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::jobs::Jobs;

    fn job() -> Job {
        Jobs::parse(
            Path::new("/j.yml"),
            "jobs:\n  - { name: dns, playbook: p, inventory: i.yml, every: 5s, cooldown: 1m, circuit: { fixes: 3, window: 1h } }\n",
        )
        .unwrap()
        .jobs
        .remove(0)
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_fix_cools_down_and_the_third_in_the_window_opens_the_circuit() {
        let j = job();
        let mut s = JobState::default();
        assert_eq!(s.blocked("r1", at("2026-11-23T10:00:00Z")), None);
        assert!(!s.record_fix("r1", at("2026-11-23T10:00:00Z"), &j));
        assert_eq!(
            s.blocked("r1", at("2026-11-23T10:00:30Z")),
            Some(Blocked::Cooldown {
                until: at("2026-11-23T10:01:00Z")
            })
        );
        assert_eq!(s.blocked("r1", at("2026-11-23T10:01:00Z")), None);
        assert_eq!(
            s.blocked("r2", at("2026-11-23T10:00:30Z")),
            None,
            "per target"
        );
        assert!(!s.record_fix("r1", at("2026-11-23T10:10:00Z"), &j));
        assert!(
            s.record_fix("r1", at("2026-11-23T10:20:00Z"), &j),
            "third fix"
        );
        assert_eq!(
            s.blocked("r1", at("2026-11-23T12:00:00Z")),
            Some(Blocked::CircuitOpen {
                since: at("2026-11-23T10:20:00Z")
            }),
            "open until reset, whatever the time"
        );
        assert_eq!(s.open_circuits(), [("r1", at("2026-11-23T10:20:00Z"))]);
        assert_eq!(s.reset(Some("r1")), ["r1"]);
        assert_eq!(s.blocked("r1", at("2026-11-23T12:00:00Z")), None);
        assert!(s.reset(Some("nothing")).is_empty());
    }

    #[test]
    fn degraded_is_entered_once_said_again_on_a_change_or_a_reminder_and_left_once() {
        let mut s = JobState::default();
        let open = [("r1".to_string(), "circuit-open".to_string())];
        let t0 = at("2026-11-23T10:00:00Z");
        let said = |s: &JobState| s.degraded.as_ref().unwrap().said;
        assert_eq!(s.note_degraded(Seen::Unknown, "failed", t0), None);
        assert_eq!(
            s.note_degraded(Seen::Gone, "healthy", t0),
            None,
            "not degraded"
        );
        assert_eq!(
            s.note_degraded(Seen::Degraded(&open), "degraded: ...", t0),
            Some(DegradedChange::Entered)
        );
        let t1 = at("2026-11-23T10:00:02Z");
        assert_eq!(
            s.note_degraded(Seen::Degraded(&open), "degraded: ...", t1),
            Some(DegradedChange::Same)
        );
        assert_eq!(said(&s), t0, "nothing said for the same state");
        // A failed run knows nothing: still degraded.
        assert_eq!(s.note_degraded(Seen::Unknown, "failed", t1), None);
        assert!(s.degraded.is_some());
        let t2 = at("2026-11-23T10:10:00Z");
        assert_eq!(
            s.note_degraded(Seen::Degraded(&open), "degraded: ...", t2),
            Some(DegradedChange::Reminder),
            "ten minutes on"
        );
        assert_eq!(said(&s), t2);
        let two = [
            ("r1".to_string(), "circuit-open".to_string()),
            ("r2".to_string(), "locked".to_string()),
        ];
        let t3 = at("2026-11-23T10:10:01Z");
        assert_eq!(
            s.note_degraded(Seen::Degraded(&two), "degraded: ...", t3),
            Some(DegradedChange::Changed)
        );
        let d = s.degraded.clone().unwrap();
        assert_eq!((d.since, d.said, d.targets.len()), (t0, t3, 2));
        assert_eq!(
            s.note_degraded(Seen::Gone, "fixed", t3),
            Some(DegradedChange::Left)
        );
        assert_eq!(s.degraded, None);
        assert_eq!(
            s.note_degraded(Seen::Gone, "healthy", t3),
            None,
            "left once"
        );
    }

    #[test]
    fn fixes_outside_the_window_do_not_count() {
        let j = job();
        let mut s = JobState::default();
        for t in ["T08:00:00Z", "T09:30:00Z", "T10:40:00Z", "T11:50:00Z"] {
            assert!(
                !s.record_fix("r1", at(&format!("2026-11-23{t}")), &j),
                "spread over more than the window: {t}"
            );
        }
        // 11:50 is more than an hour after 10:40: only the last fix is kept.
        assert_eq!(s.targets["r1"].fixes.len(), 1);
    }

    #[test]
    fn updates_survive_and_do_not_lose_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let j = job();
        update(dir.path(), |s| {
            let js = s.jobs.entry("dns".into()).or_default();
            for m in 0..3 {
                js.record_fix("r1", at(&format!("2026-11-23T10:0{m}:00Z")), &j);
            }
        })
        .unwrap();
        // Another process (here: threads) resets while the daemon records: both land.
        let d = dir.path().to_path_buf();
        let a = std::thread::spawn({
            let d = d.clone();
            move || {
                for _ in 0..20 {
                    update(&d, |s| {
                        s.jobs.entry("other".into()).or_default().last_exit = Some(0);
                    })
                    .unwrap();
                }
            }
        });
        update(&d, |s| s.jobs.get_mut("dns").unwrap().reset(None)).unwrap();
        a.join().unwrap();
        let s = load(dir.path()).unwrap();
        assert!(s.jobs["dns"].targets.is_empty(), "{s:?}");
        assert_eq!(s.jobs["other"].last_exit, Some(0));
    }

    #[test]
    fn seen_events_are_bounded_in_number_and_age() {
        let mut e = Events::default();
        let t0 = at("2026-12-06T10:00:00Z");
        assert!(e.remember("a", t0));
        assert!(!e.remember("a", t0), "a replay");
        for n in 0..SEEN_MAX {
            e.remember(
                &format!("n{n}"),
                t0 + jiff::SignedDuration::from_secs(n as i64 + 1),
            );
        }
        assert_eq!(e.seen.len(), SEEN_MAX);
        assert!(!e.seen.contains_key("a"), "the oldest went first");
        let later = t0 + jiff::SignedDuration::from_hours(3);
        assert!(e.remember("a", later));
        assert_eq!(e.seen.len(), 1, "the old ones expired");
    }

    fn batch(id: &str, job: &str) -> PendingBatch {
        PendingBatch {
            id: id.into(),
            job: job.into(),
            limit: Some("r-930-VM".into()),
            params: vec![("vpc".into(), "web-vpc".into())],
            first: at("2026-12-06T10:00:00Z"),
            about: "ROUTER.HEALTH.CHECKS ev-1".into(),
        }
    }

    #[test]
    fn waiting_batches_and_accepted_events_survive_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = at("2026-12-06T10:00:00Z");
        let event = serde_json::json!({"id": "ev-1", "type": "ROUTER.HEALTH.CHECKS"});
        update(dir.path(), |s| {
            assert!(s.events.remember("ev-1", t0));
            s.events.accept("ev-1", event.clone(), t0);
            assert!(s.events.keep_pending(batch("b1", "dns")).is_empty());
        })
        .unwrap();
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back.events.pending, [batch("b1", "dns")], "{text}");
        assert_eq!(
            back.events.accepted["ev-1"],
            Accepted {
                at: t0,
                event: Some(event)
            },
            "{text}"
        );
        // The run starts: the batch and the mark go, the id stays a replay.
        update(dir.path(), |s| {
            s.events.settle_pending("b1");
            s.events.accepted.remove("ev-1");
        })
        .unwrap();
        let after = load(dir.path()).unwrap();
        assert!(after.events.pending.is_empty() && after.events.accepted.is_empty());
        assert!(after.events.seen.contains_key("ev-1"));
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(
            !text.contains("pending") && !text.contains("accepted"),
            "nothing left of them in the file: {text}"
        );
        // A document without them (an older daemon's) reads as none waiting.
        let old: State =
            serde_json::from_str(r#"{"jobs": {}, "events": {"seen": {}, "cursors": {}}}"#).unwrap();
        assert!(old.events.pending.is_empty() && old.events.accepted.is_empty());
    }

    #[test]
    fn waiting_batches_and_kept_events_are_bounded() {
        let mut e = Events::default();
        for n in 0..PENDING_MAX {
            assert!(e.keep_pending(batch(&format!("b{n}"), "dns")).is_empty());
        }
        let dropped = e.keep_pending(batch("newest", "dns"));
        assert_eq!(dropped, [batch("b0", "dns")], "the oldest goes");
        assert_eq!(e.pending.len(), PENDING_MAX);
        assert_eq!(e.pending.last().unwrap().id, "newest");
        // Bodies: at most ACCEPTED_KEPT, none over ACCEPTED_BYTES; the rest by id only.
        let t0 = at("2026-12-06T10:00:00Z");
        for n in 0..ACCEPTED_KEPT + 2 {
            let id = format!("ev-{n}");
            e.remember(&id, t0);
            e.accept(&id, serde_json::json!({"id": id}), t0);
        }
        let big = "x".repeat(ACCEPTED_BYTES);
        e.remember("big", t0);
        e.accept("big", serde_json::json!({ "description": big }), t0);
        let kept = e.accepted.values().filter(|a| a.event.is_some()).count();
        assert_eq!(kept, ACCEPTED_KEPT);
        assert_eq!(e.accepted.len(), ACCEPTED_KEPT + 3);
        assert_eq!(e.accepted["big"].event, None);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "{ nope").unwrap();
        assert!(load(dir.path())
            .unwrap_err()
            .contains("not a daemon state file"));
        assert!(update(dir.path(), |_| ()).is_err());
    }
}
