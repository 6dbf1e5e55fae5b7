//! Debounce and batching of the runs events ask for.
//!
//! Events are grouped by key: (job, targets, parameters). Two ways to open a batch
//! ([`FirstEvent`]):
//! - `now` (the default): the first event for a key that has not started a run within the last
//!   window is due at once; an event while a batch of its key waits joins it, and the next
//!   batch of a key is due one window after its last start. So the first alert is acted on
//!   without waiting, and the rest of a burst collapses into one follow-up run per window.
//! - `wait`: the first event opens a batch due one window later, and every event for the key
//!   before it starts joins it (Alertmanager's `group_wait`): one run per burst, later.
//!
//! A due batch starts when its job is not running (a job never runs twice at once); while it
//! runs, further events for it open the next batch, its one follow-up. So a storm makes at most
//! one run per key and window, plus a follow-up, whatever the number of events.
//!
//! Not here: what starts the run (the daemon's loop), and the flap guard (cooldown, circuit,
//! locks), which applies to these runs as to scheduled ones.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::rules::Ask;

/// A run asked for by events, waiting for its window to pass.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Names it in the daemon's state, where it is kept while it waits (`state::PendingBatch`).
    pub id: String,
    pub job: String,
    pub ask: Ask,
    /// When its first event arrived (the start of the latency metrics).
    pub first: Instant,
    /// When it may start.
    pub due: Instant,
    /// How many events it holds.
    pub events: u64,
    /// The first event, in words (for the log): `TYPE ID`.
    pub about: String,
}

/// When the first event of a quiet key runs (`triggers.first_event`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FirstEvent {
    /// At once; the next batch of the key one window after this run started.
    #[default]
    Now,
    /// One window later, with every event of the key until then.
    Wait,
}

/// The waiting batches.
#[derive(Debug, Default)]
pub struct Queue {
    batches: Vec<Batch>,
    /// When a batch of a key last started, while that is less than a window ago (with
    /// [`FirstEvent::Now`], the next batch of the key is due one window after it).
    started: Vec<(String, Ask, Instant)>,
}

impl Queue {
    /// Adds an event's ask for `job`: it joins the waiting batch of the same key (returns
    /// `None`: deduplicated), or opens one (returns its id): due `window` after `now`
    /// ([`FirstEvent::Wait`]), or at once unless a batch of the key started less than `window`
    /// ago, then one window after that start ([`FirstEvent::Now`]).
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        job: &str,
        ask: Ask,
        about: String,
        at: Instant,
        now: Instant,
        window: Duration,
        first: FirstEvent,
    ) -> Option<String> {
        if let Some(b) = self
            .batches
            .iter_mut()
            .find(|b| b.job == job && b.ask == ask)
        {
            b.events += 1;
            b.first = b.first.min(at);
            return None;
        }
        self.started
            .retain(|(_, _, t)| now.saturating_duration_since(*t) < window);
        let due = match first {
            FirstEvent::Wait => now + window,
            FirstEvent::Now => self
                .started
                .iter()
                .find(|(j, a, _)| j == job && *a == ask)
                .map_or(now, |(_, _, t)| (*t + window).max(now)),
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.batches.push(Batch {
            id: id.clone(),
            job: job.to_string(),
            ask,
            first: at,
            due,
            events: 1,
            about,
        });
        Some(id)
    }

    /// Puts back a batch a previous leader left waiting (from the daemon's state), as it is
    /// (with its id and when it is due): events for its key join it like any waiting batch.
    pub fn restore(&mut self, batch: Batch) {
        self.batches.push(batch);
    }

    /// The batches due at `now` whose job is not busy, at most one per job (the others wait
    /// for it): taken out of the queue.
    pub fn take_due(&mut self, now: Instant, busy: &BTreeSet<String>) -> Vec<Batch> {
        let mut taken: Vec<Batch> = Vec::new();
        let mut i = 0;
        while i < self.batches.len() {
            let b = &self.batches[i];
            let free = !busy.contains(&b.job) && !taken.iter().any(|t| t.job == b.job);
            if b.due <= now && free {
                let b = self.batches.remove(i);
                self.started
                    .retain(|(j, a, _)| !(*j == b.job && *a == b.ask));
                self.started.push((b.job.clone(), b.ask.clone(), now));
                taken.push(b);
            } else {
                i += 1;
            }
        }
        taken
    }

    /// When the next batch of a job that is not `busy` falls due. (A busy job's batch waits for
    /// its run to end, which wakes the loop on its own: counting it would make a due batch wake
    /// the loop at once, again and again, while the job runs.)
    pub fn next_due(&self, busy: &BTreeSet<String>) -> Option<Instant> {
        self.batches
            .iter()
            .filter(|b| !busy.contains(&b.job))
            .map(|b| b.due)
            .min()
    }

    /// Forget the batches of jobs no longer in the file (after a reload).
    pub fn retain_jobs(&mut self, jobs: &BTreeSet<String>) {
        self.batches.retain(|b| jobs.contains(&b.job));
        self.started.retain(|(j, _, _)| jobs.contains(j));
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(limit: &str) -> Ask {
        Ask {
            limit: Some(limit.into()),
            params: vec![("vpc".into(), "web".into())],
        }
    }

    #[test]
    fn a_storm_makes_one_run_per_window_and_one_follow_up() {
        let t0 = Instant::now();
        let w = Duration::from_secs(5);
        let mut q = Queue::default();
        let mut busy = BTreeSet::new();
        let mut runs = 0;
        // 500 events over 10 s for one router; a run takes 3 s.
        let mut running_until: Option<Instant> = None;
        for n in 0..500u64 {
            let now = t0 + Duration::from_millis(n * 20);
            if running_until.is_some_and(|u| u <= now) {
                busy.remove("dns");
                running_until = None;
            }
            q.add(
                "dns",
                ask("r-930-VM"),
                "E".into(),
                now,
                now,
                w,
                FirstEvent::Wait,
            );
            for _ in q.take_due(now, &busy) {
                runs += 1;
                busy.insert("dns".to_string());
                running_until = Some(now + Duration::from_secs(3));
            }
        }
        // Then the storm is over: what is left runs once.
        let later = t0 + Duration::from_secs(60);
        busy.clear();
        runs += q.take_due(later, &busy).len();
        assert!(q.is_empty());
        // The first batch runs at 5 s; the events during and after that run make its one
        // follow-up, due 5 s after the first of them (after the storm): two runs for 500 events.
        assert_eq!(runs, 2);
    }

    #[test]
    fn different_targets_are_different_batches_and_a_busy_job_waits() {
        let t0 = Instant::now();
        let w = Duration::from_secs(1);
        let mut q = Queue::default();
        let wait = FirstEvent::Wait;
        assert!(q
            .add("dns", ask("r1"), "a".into(), t0, t0, w, wait)
            .is_some());
        assert!(q
            .add("dns", ask("r1"), "b".into(), t0, t0, w, wait)
            .is_none());
        assert!(q
            .add("dns", ask("r2"), "c".into(), t0, t0, w, wait)
            .is_some());
        assert!(q.take_due(t0, &BTreeSet::new()).is_empty(), "not due yet");
        let busy: BTreeSet<String> = ["dns".to_string()].into();
        assert!(q.take_due(t0 + w, &busy).is_empty(), "the job runs");
        let first = q.take_due(t0 + w, &BTreeSet::new());
        assert_eq!(first.len(), 1, "one per job at a time");
        assert_eq!(first[0].events, 2);
        assert_eq!(first[0].ask.limit.as_deref(), Some("r1"));
        let second = q.take_due(t0 + w, &BTreeSet::new());
        assert_eq!(second[0].ask.limit.as_deref(), Some("r2"));
    }

    #[test]
    fn the_first_event_runs_at_once_and_the_rest_of_a_storm_one_run_per_window() {
        let t0 = Instant::now();
        let w = Duration::from_secs(5);
        let now = FirstEvent::Now;
        let mut q = Queue::default();
        let mut busy = BTreeSet::new();
        let mut starts = Vec::new();
        // 500 events over 10 s for one router; a run takes 3 s.
        let mut running_until: Option<Instant> = None;
        for n in 0..500u64 {
            let t = t0 + Duration::from_millis(n * 20);
            if running_until.is_some_and(|u| u <= t) {
                busy.remove("dns");
                running_until = None;
            }
            q.add("dns", ask("r-930-VM"), "E".into(), t, t, w, now);
            for _ in q.take_due(t, &busy) {
                starts.push(t.duration_since(t0));
                busy.insert("dns".to_string());
                running_until = Some(t + Duration::from_secs(3));
            }
        }
        let later = t0 + Duration::from_secs(60);
        busy.clear();
        for _ in q.take_due(later, &busy) {
            starts.push(later.duration_since(t0));
        }
        assert!(q.is_empty());
        // The first event ran at once; then one run per window while the storm lasted.
        assert_eq!(starts[0], Duration::ZERO);
        assert_eq!(starts[1], w);
        assert_eq!(starts.len(), 3, "{starts:?}");
        for pair in starts.windows(2) {
            assert!(pair[1] - pair[0] >= w, "{starts:?}");
        }
    }

    #[test]
    fn a_restored_batch_keeps_its_id_takes_in_its_key_and_runs_when_due() {
        let t0 = Instant::now();
        let w = Duration::from_secs(5);
        let mut q = Queue::default();
        q.restore(Batch {
            id: "kept-1".into(),
            job: "dns".into(),
            ask: ask("r1"),
            first: t0,
            due: t0,
            events: 1,
            about: "E ev-1".into(),
        });
        // An event for its key joins it.
        let joined = q.add(
            "dns",
            ask("r1"),
            "E ev-2".into(),
            t0,
            t0,
            w,
            FirstEvent::Wait,
        );
        assert_eq!(joined, None);
        let taken = q.take_due(t0, &BTreeSet::new());
        assert_eq!(taken.len(), 1);
        assert_eq!(
            (
                taken[0].id.as_str(),
                taken[0].events,
                taken[0].about.as_str()
            ),
            ("kept-1", 2, "E ev-1")
        );
        assert!(q.is_empty());
    }

    #[test]
    fn a_quiet_key_runs_at_once_again_and_other_keys_are_not_held_back() {
        let t0 = Instant::now();
        let w = Duration::from_secs(2);
        let now = FirstEvent::Now;
        let mut q = Queue::default();
        let free = BTreeSet::new();
        assert!(q
            .add("dns", ask("r1"), "a".into(), t0, t0, w, now)
            .is_some());
        assert_eq!(q.take_due(t0, &free).len(), 1, "at once");
        // Another router is another key: at once too.
        assert!(q
            .add("dns", ask("r2"), "b".into(), t0, t0, w, now)
            .is_some());
        assert_eq!(q.take_due(t0, &free).len(), 1);
        // r1 again within the window: due one window after its start.
        let t1 = t0 + Duration::from_millis(500);
        assert!(q
            .add("dns", ask("r1"), "c".into(), t1, t1, w, now)
            .is_some());
        assert!(q
            .add("dns", ask("r1"), "d".into(), t1, t1, w, now)
            .is_none());
        assert!(q.take_due(t1, &free).is_empty());
        assert_eq!(q.next_due(&free), Some(t0 + w));
        let busy: BTreeSet<String> = ["dns".to_string()].into();
        assert_eq!(
            q.next_due(&busy),
            None,
            "a busy job's batch does not wake the loop"
        );
        let b = q.take_due(t0 + w, &free);
        assert_eq!(b[0].events, 2);
        // Quiet for a window after that start: the next event runs at once.
        let t2 = t0 + w + w;
        assert!(q
            .add("dns", ask("r1"), "e".into(), t2, t2, w, now)
            .is_some());
        assert_eq!(q.take_due(t2, &free).len(), 1);
        assert!(q.started.len() <= 2, "forgotten after a window");
    }
}
