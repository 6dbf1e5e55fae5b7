//! What the daemon tells the world: notifications (a webhook, a command) and the metrics
//! `listen` serves on `/metrics` (Prometheus text format 0.0.4): per job, and for the events
//! that trigger runs (received, rejected, deduplicated, unmatched; the latency histograms).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::jobs::Job;
use super::run::{Report, Verdict};
use super::state::State;

/// Counters per job, since the daemon started.
#[derive(Debug, Default, Clone)]
struct JobCounts {
    runs: u64,
    fixes: u64,
    failures: u64,
    rollbacks: u64,
    skipped: u64,
    plans: u64,
    found: u64,
    /// Runs started by events.
    event_runs: u64,
}

/// The buckets of the event latency histograms, in seconds.
pub const BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A Prometheus histogram: counts per bucket (not cumulative), sum, count.
#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        if let Some(i) = BUCKETS.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

/// The event counters: by (source), and by (source, reason).
#[derive(Debug, Default, Clone)]
struct EventCounts {
    received: BTreeMap<String, u64>,
    unmatched: BTreeMap<String, u64>,
    deduplicated: BTreeMap<(String, String), u64>,
    rejected: BTreeMap<(String, String), u64>,
    /// Latencies per (job, stage): `detection` (event received -> detection started) and
    /// `fixed` (event received -> fix finished).
    latency: BTreeMap<(String, String), Histogram>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    jobs: Mutex<BTreeMap<String, JobCounts>>,
    /// Whether this daemon leads (schedules) now.
    leader: std::sync::atomic::AtomicBool,
    events: Mutex<EventCounts>,
    /// The SSH connections kept between runs, when the daemon keeps them.
    ssh_pool: Mutex<Option<Arc<crate::transport::ssh::WarmPool>>>,
}

impl Metrics {
    /// This daemon leads now (or no longer): `remedy_daemon_leader`.
    pub fn set_leader(&self, leads: bool) {
        self.leader
            .store(leads, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether this daemon leads now.
    pub fn is_leader(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn ev(&self) -> std::sync::MutexGuard<'_, EventCounts> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An event delivery (or a polled event) arrived.
    pub fn event_received(&self, source: super::triggers::Origin) {
        *self.ev().received.entry(source.word().into()).or_default() += 1;
    }

    /// A delivery refused, and why (`bad-signature`, `too-large`...).
    pub fn event_rejected(&self, source: super::triggers::Origin, reason: &str) {
        *self
            .ev()
            .rejected
            .entry((source.word().into(), reason.into()))
            .or_default() += 1;
    }

    /// An event that made no new run: seen before (`replay`) or joined a waiting run
    /// (`debounced`).
    pub fn event_deduplicated(&self, source: super::triggers::Origin, reason: &str) {
        *self
            .ev()
            .deduplicated
            .entry((source.word().into(), reason.into()))
            .or_default() += 1;
    }

    /// An accepted event that no rule matched.
    pub fn event_unmatched(&self, source: super::triggers::Origin) {
        *self.ev().unmatched.entry(source.word().into()).or_default() += 1;
    }

    /// A run started by events, `waited` after its first event.
    pub fn event_run(&self, job: &str, waited: Duration) {
        self.lock().entry(job.to_string()).or_default().event_runs += 1;
        self.latency(job, "detection", waited);
    }

    /// A latency of `job`'s events to `stage` (`detection`, `fixed`).
    pub fn latency(&self, job: &str, stage: &str, d: Duration) {
        self.ev()
            .latency
            .entry((job.to_string(), stage.to_string()))
            .or_default()
            .observe(d.as_secs_f64());
    }

    /// Show `pool`'s counters (`remedy_ssh_pool_*`).
    pub fn set_ssh_pool(&self, pool: Arc<crate::transport::ssh::WarmPool>) {
        *self.ssh_pool.lock().unwrap_or_else(|p| p.into_inner()) = Some(pool);
    }

    /// Make every job appear (with zeros) before its first run.
    pub fn register(&self, job: &str) {
        self.lock().entry(job.to_string()).or_default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, JobCounts>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A run that did not even report (it panicked).
    pub fn failed(&self, job: &str) {
        let mut jobs = self.lock();
        let c = jobs.entry(job.to_string()).or_default();
        c.runs += 1;
        c.failures += 1;
    }

    pub fn observe(&self, r: &Report) {
        let mut jobs = self.lock();
        let c = jobs.entry(r.job.clone()).or_default();
        c.runs += 1;
        c.fixes += r.fixed.len() as u64;
        match r.verdict {
            Verdict::Failed => c.failures += 1,
            Verdict::Skipped | Verdict::Degraded => c.skipped += 1,
            Verdict::Planned => c.plans += 1,
            _ => {}
        }
        if r.rolled_back {
            c.rollbacks += 1;
        }
        if r.exit == crate::error::ExitCode::Found.code() {
            c.found += 1;
        }
    }

    /// The exposition: counters from this process, circuits and last successes from the state
    /// file (so they survive a restart and show a reset at once).
    pub fn render(&self, state: &State) -> String {
        let jobs = self.lock().clone();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP remedy_daemon_leader Whether this daemon schedules the jobs now (1), or waits as a replica (0)."
        );
        let _ = writeln!(out, "# TYPE remedy_daemon_leader gauge");
        let _ = writeln!(
            out,
            "remedy_daemon_leader {}",
            u8::from(self.leader.load(std::sync::atomic::Ordering::SeqCst))
        );
        let counter = |out: &mut String, name: &str, help: &str, f: &dyn Fn(&JobCounts) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (job, c) in &jobs {
                let _ = writeln!(out, "{name}{{job=\"{}\"}} {}", label(job), f(c));
            }
        };
        counter(
            &mut out,
            "remedy_job_runs_total",
            "Runs of the job (detection included).",
            &|c| c.runs,
        );
        counter(
            &mut out,
            "remedy_job_fixes_total",
            "Targets fixed by the job.",
            &|c| c.fixes,
        );
        counter(
            &mut out,
            "remedy_job_failures_total",
            "Runs that failed.",
            &|c| c.failures,
        );
        counter(
            &mut out,
            "remedy_job_rollbacks_total",
            "Fixes that were rolled back.",
            &|c| c.rollbacks,
        );
        counter(
            &mut out,
            "remedy_job_skipped_total",
            "Runs that applied but left every target alone (cooldown, open circuit, lock).",
            &|c| c.skipped,
        );
        counter(
            &mut out,
            "remedy_job_plans_total",
            "Plans written (plan mode).",
            &|c| c.plans,
        );
        counter(
            &mut out,
            "remedy_job_found_total",
            "Runs whose reports found problems (exit 8).",
            &|c| c.found,
        );
        counter(
            &mut out,
            "remedy_job_event_runs_total",
            "Runs started by events (rather than by the schedule).",
            &|c| c.event_runs,
        );
        self.render_events(&mut out);
        let _ = writeln!(
            out,
            "# HELP remedy_circuit_open Whether the job's circuit for the target is open (1).\n# TYPE remedy_circuit_open gauge"
        );
        for (job, js) in &state.jobs {
            for (target, t) in &js.targets {
                let _ = writeln!(
                    out,
                    "remedy_circuit_open{{job=\"{}\",target=\"{}\"}} {}",
                    label(job),
                    label(target),
                    u8::from(t.circuit_open_since.is_some())
                );
            }
        }
        render_degraded(&mut out, state);
        let _ = writeln!(
            out,
            "# HELP remedy_job_last_success_timestamp_seconds When the job last ran without failing (a degraded run is not a success).\n# TYPE remedy_job_last_success_timestamp_seconds gauge"
        );
        for (job, js) in &state.jobs {
            if let Some(t) = js.last_success {
                let _ = writeln!(
                    out,
                    "remedy_job_last_success_timestamp_seconds{{job=\"{}\"}} {}",
                    label(job),
                    t.as_second()
                );
            }
        }
        let pool = self
            .ssh_pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(pool) = pool {
            render_pool(&mut out, &pool.stats());
        }
        out
    }
}

impl Metrics {
    fn render_events(&self, out: &mut String) {
        let ev = self.ev().clone();
        let by_source = |out: &mut String, name: &str, help: &str, m: &BTreeMap<String, u64>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (source, n) in m {
                let _ = writeln!(out, "{name}{{source=\"{}\"}} {n}", label(source));
            }
        };
        let by_reason =
            |out: &mut String, name: &str, help: &str, m: &BTreeMap<(String, String), u64>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for ((source, reason), n) in m {
                    let _ = writeln!(
                        out,
                        "{name}{{source=\"{}\",reason=\"{}\"}} {n}",
                        label(source),
                        label(reason)
                    );
                }
            };
        by_source(
            out,
            "remedy_events_received_total",
            "Event deliveries received (and events polled).",
            &ev.received,
        );
        by_reason(
            out,
            "remedy_events_rejected_total",
            "Deliveries refused, by reason (nothing ran).",
            &ev.rejected,
        );
        by_reason(
            out,
            "remedy_events_deduplicated_total",
            "Events that made no new run: seen before (replay) or joined a waiting run (debounced).",
            &ev.deduplicated,
        );
        by_source(
            out,
            "remedy_events_unmatched_total",
            "Events accepted that no rule matched.",
            &ev.unmatched,
        );
        let name = "remedy_event_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From an event received to its run's detection started (stage=detection) or fix finished (stage=fixed).\n# TYPE {name} histogram"
        );
        for ((job, stage), h) in &ev.latency {
            let l = format!("job=\"{}\",stage=\"{}\"", label(job), label(stage));
            let mut cumulative = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cumulative += h.counts.get(i).copied().unwrap_or(0);
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"{b}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{{l}}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{{l}}} {}", h.count);
        }
    }
}

/// `remedy_job_degraded{job,target,reason}`: 1 for each target a degraded job leaves alone,
/// 0 (`reason="none"`) for the job's other known targets.
fn render_degraded(out: &mut String, state: &State) {
    let _ = writeln!(
        out,
        "# HELP remedy_job_degraded Whether the job finds the fault and leaves the target alone (1), and why (circuit-open, cooldown, locked).\n# TYPE remedy_job_degraded gauge"
    );
    for (job, js) in &state.jobs {
        let degraded = js.degraded.as_ref().map(|d| &d.targets);
        let mut targets: std::collections::BTreeSet<&String> = js.targets.keys().collect();
        targets.extend(degraded.into_iter().flat_map(|d| d.keys()));
        for target in targets {
            let (reason, v) = match degraded.and_then(|d| d.get(target)) {
                Some(reason) => (reason.as_str(), 1),
                None => ("none", 0),
            };
            let _ = writeln!(
                out,
                "remedy_job_degraded{{job=\"{}\",target=\"{}\",reason=\"{}\"}} {v}",
                label(job),
                label(target),
                label(reason)
            );
        }
    }
}

/// The SSH pool's gauge and counters.
fn render_pool(out: &mut String, s: &crate::transport::ssh::PoolStats) {
    let mut one = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    one(
        "remedy_ssh_pool_connections_open",
        "gauge",
        "SSH connections kept open between runs now (jump hosts included).",
        s.open as u64,
    );
    one(
        "remedy_ssh_pool_connections_opened_total",
        "counter",
        "SSH connections made (each a handshake and a host key check).",
        s.opened,
    );
    one(
        "remedy_ssh_pool_connections_reused_total",
        "counter",
        "A run's first use of a connection an earlier (or concurrent) run made.",
        s.reused,
    );
    let _ = writeln!(
        out,
        "# HELP remedy_ssh_pool_connections_dropped_total SSH connections closed or found closed, by reason.\n# TYPE remedy_ssh_pool_connections_dropped_total counter"
    );
    for reason in ["closed", "error", "idle", "cap", "inventory", "stopped"] {
        let _ = writeln!(
            out,
            "remedy_ssh_pool_connections_dropped_total{{reason=\"{reason}\"}} {}",
            s.dropped.get(reason).copied().unwrap_or(0)
        );
    }
}

/// A label value, escaped as the text format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Send the notices `report` gives that `job` asks for. Failures are logged, not fatal.
pub async fn notify(job: &Job, report: &Report) {
    for notice in report.notices() {
        if !job.notify.on.contains(&notice) {
            continue;
        }
        let body = serde_json::json!({
            "event": notice,
            "job": job.name,
            "playbook": job.playbook,
            "at": jiff::Timestamp::now().to_string(),
            "report": report,
        });
        if let Some(url) = &job.notify.webhook {
            let sent = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| e.to_string())
                .map(|c| c.post(url).json(&body).send());
            let result = match sent {
                Ok(f) => f
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.error_for_status().map_err(|e| e.to_string())),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(job = %job.name, ?notice, error = %e, "webhook notification failed");
            }
        }
        if let Some(cmd) = &job.notify.command {
            let event = serde_json::to_value(notice)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let run = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("REMEDY_EVENT", event)
                .env("REMEDY_JOB", &job.name)
                .env("REMEDY_STATUS", &report.status)
                .env("REMEDY_RUN", report.run.clone().unwrap_or_default())
                .env("REMEDY_TARGETS", report.fixed.join(","))
                .env("REMEDY_REPORT", body.to_string())
                .kill_on_drop(true)
                .status();
            match tokio::time::timeout(Duration::from_secs(30), run).await {
                Ok(Ok(s)) if s.success() => {}
                Ok(Ok(s)) => {
                    tracing::warn!(job = %job.name, ?notice, status = %s, "notification command failed")
                }
                Ok(Err(e)) => {
                    tracing::warn!(job = %job.name, ?notice, error = %e, "notification command failed")
                }
                Err(_) => {
                    tracing::warn!(job = %job.name, ?notice, "notification command timed out (30s)")
                }
            }
        }
    }
}
