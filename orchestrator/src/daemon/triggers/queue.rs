//! Debounce and batching of the runs events ask for.
//!
//! The first event for a (job, targets, parameters) opens a batch due one window later; every
//! event for the same key before the batch starts joins it. A due batch starts when its job is
//! not running (a job never runs twice at once); while it runs, further events for it open the
//! next batch, its one follow-up. So a storm makes at most one run per key and window, plus a
//! follow-up, whatever the number of events.
//!
//! Not here: what starts the run (the daemon's loop), and the flap guard (cooldown, circuit,
//! locks), which applies to these runs as to scheduled ones.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::rules::Ask;

/// A run asked for by events, waiting for its window to pass.
#[derive(Debug, Clone)]
pub struct Batch {
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

/// The waiting batches.
#[derive(Debug, Default)]
pub struct Queue {
    batches: Vec<Batch>,
}

impl Queue {
    /// Adds an event's ask for `job`: it joins the waiting batch of the same key (returns
    /// `true`: deduplicated), or opens one due `window` after `now`.
    pub fn add(
        &mut self,
        job: &str,
        ask: Ask,
        about: String,
        at: Instant,
        now: Instant,
        window: Duration,
    ) -> bool {
        if let Some(b) = self
            .batches
            .iter_mut()
            .find(|b| b.job == job && b.ask == ask)
        {
            b.events += 1;
            b.first = b.first.min(at);
            return true;
        }
        self.batches.push(Batch {
            job: job.to_string(),
            ask,
            first: at,
            due: now + window,
            events: 1,
            about,
        });
        false
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
                taken.push(self.batches.remove(i));
            } else {
                i += 1;
            }
        }
        taken
    }

    /// When the next batch falls due (a busy job's batch counts too: its job may end before).
    pub fn next_due(&self) -> Option<Instant> {
        self.batches.iter().map(|b| b.due).min()
    }

    /// Forget the batches of jobs no longer in the file (after a reload).
    pub fn retain_jobs(&mut self, jobs: &BTreeSet<String>) {
        self.batches.retain(|b| jobs.contains(&b.job));
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
            q.add("dns", ask("r-930-VM"), "E".into(), now, now, w);
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
        assert!(!q.add("dns", ask("r1"), "a".into(), t0, t0, w));
        assert!(q.add("dns", ask("r1"), "b".into(), t0, t0, w));
        assert!(!q.add("dns", ask("r2"), "c".into(), t0, t0, w));
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
}
