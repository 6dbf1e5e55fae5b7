//! Faults the simulator can inject, per scenario (`faults:` in the scenario file) or at run
//! time ([`crate::server::Sim::set_faults`], or `POST /sim/faults` with this struct as JSON).
//!
//! Transport faults (latency, 5xx, dropped connections) are applied by the HTTP front before a
//! request reaches the zone; job faults (failing and slow async jobs) by the zone when it starts
//! a job. "Next n" counters are deterministic, for tests; rates are random, for soak runs.

use serde::{Deserialize, Serialize};

/// Every field defaults to "no fault".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every API reply, in milliseconds.
    pub latency_ms: u64,
    /// Probability (0.0–1.0) that a request is answered with HTTP 503 before it reaches the zone.
    pub http_5xx_rate: f64,
    /// The next `n` requests are answered with HTTP 503 (counts down).
    pub http_5xx_next: u32,
    /// Probability (0.0–1.0) that the connection is closed after the request is read, with no
    /// reply and nothing done.
    pub drop_rate: f64,
    /// The next `n` requests have their connection closed with no reply (counts down).
    pub drop_next: u32,
    /// The next `n` mutating requests are carried out by the zone, then the connection is closed
    /// before the reply is sent: the client cannot know the change happened.
    pub drop_after_apply_next: u32,
    /// Async jobs of these commands (API names, e.g. `restartVPC`; `*` for all) fail with
    /// errorcode 530 and [`Faults::job_error_text`] when they complete.
    pub fail_jobs: Vec<String>,
    /// The errortext of a job failed by [`Faults::fail_jobs`].
    pub job_error_text: Option<String>,
    /// How long an async job runs before it completes, in milliseconds (default: the zone's own
    /// timing, see the zone module).
    pub job_ms: Option<u64>,
    /// Jobs of these commands (`*` for all) take this long instead, in milliseconds: for
    /// "slow job past a deadline" tests.
    pub slow_jobs: Vec<String>,
    pub slow_job_ms: u64,
    /// The next call of each of these commands (API names) is refused with 530 and
    /// [`Faults::job_error_text`] before it reaches the zone, once each: for synchronous calls
    /// such as `updateConfiguration`, which [`Faults::fail_jobs`] cannot fail.
    pub fail_calls_next: Vec<String>,
}

impl Faults {
    /// Whether `command` matches a list of command names (`*` matches all), case-insensitively
    /// as CloudStack matches command names.
    pub fn matches(list: &[String], command: &str) -> bool {
        list.iter()
            .any(|c| c == "*" || c.eq_ignore_ascii_case(command))
    }
}
