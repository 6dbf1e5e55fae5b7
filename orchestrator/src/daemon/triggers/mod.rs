//! Events that start a job's run at once, rather than at its next scheduled time.
//!
//! - this file: the event as the rules see it ([`Event`], one shape for every source) and the
//!   jobs file's `triggers:` section ([`Triggers`]: the receivers, the pollers, the debounce
//!   window);
//! - `rules`: a job's `on:` rules, compiled and checked when the file is read, matched against
//!   an event and rendered into a run's targets and parameters;
//! - `hooks`: the HTTP receivers on the daemon's listener (CloudStack 4.20 webhooks, signed;
//!   Prometheus Alertmanager), with the replay check;
//! - `poll`: `listEvents` / `listAlerts` on an interval, with a durable cursor (zones before
//!   4.20, and deliveries that were lost);
//! - `queue`: debounce and batching: events for the same job and targets within the window make
//!   one run, and a job that is running gets at most one follow-up.
//!
//! Not here: running a job (`run`), the schedule and the loop (`mod.rs`), the metrics' text
//! (`observe`).

pub mod hooks;
pub mod poll;
pub mod queue;
pub mod rules;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Diagnostic;
use crate::inventory::SecretRef;
use crate::source::Source;
use queue::FirstEvent;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// CloudStack: a webhook delivery (4.20+) or a polled `listEvents`/`listAlerts` item.
    Cloudstack,
    /// A Prometheus Alertmanager webhook notification (one event per alert).
    Alertmanager,
}

impl Origin {
    pub fn word(self) -> &'static str {
        match self {
            Origin::Cloudstack => "cloudstack",
            Origin::Alertmanager => "alertmanager",
        }
    }
}

/// One event, whatever its source: what a rule matches and its templates read (`event.FIELD`).
/// Kept in the daemon's state (as JSON) from its acceptance until it is in a batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Event {
    /// `cloudstack` or `alertmanager`.
    pub source: String,
    /// `event` (CloudStack events) or `alert` (CloudStack alerts, Alertmanager alerts).
    pub kind: String,
    /// The event's id: CloudStack's event uuid (`X-CS-Event-ID`), an alert's id, or for
    /// Alertmanager `FINGERPRINT@STARTSAT@STATUS`. Replays are recognised by it.
    pub id: String,
    /// CloudStack's event type (`ROUTER.HEALTH.CHECKS`) or alert name; Alertmanager's
    /// `alertname` label.
    #[serde(rename = "type")]
    pub kind_name: String,
    /// `INFO`, `WARN`, `ERROR` (CloudStack events); Alertmanager's `severity` label.
    pub level: String,
    /// CloudStack's event state (`Completed`, `Started`...); Alertmanager's `firing`/`resolved`.
    pub status: String,
    /// The resource the event is about: its type (`DomainRouter`, `VirtualMachine`...), id
    /// (uuid) and name, as far as the source tells them.
    pub resource_type: String,
    pub resource_id: String,
    pub resource_name: String,
    pub description: String,
    /// The account (uuid or name) the event belongs to.
    pub account: String,
    /// When it happened, as the source wrote it.
    pub created: String,
    /// Alertmanager's labels and annotations (empty for CloudStack).
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The document as received (the webhook's payload, the list item, the alert).
    pub payload: serde_json::Value,
}

/// The fields of [`Event`], as templates name them (`event.resource_name`).
pub const FIELDS: &[&str] = &[
    "source",
    "kind",
    "id",
    "type",
    "level",
    "status",
    "resource_type",
    "resource_id",
    "resource_name",
    "description",
    "account",
    "created",
    "labels",
    "annotations",
    "payload",
];

/// An event as it arrived: the event, when, and through what (for logs and metrics).
#[derive(Debug, Clone)]
pub struct Arrived {
    pub event: Event,
    pub at: std::time::Instant,
    pub origin: Origin,
}

/// The largest body a receiver reads (a CloudStack event or an Alertmanager group is a few KiB).
pub const MAX_BODY: usize = 256 * 1024;

/// The default debounce window.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_secs(5);

/// The jobs file's `triggers:` section, checked.
#[derive(Debug, Clone, Default)]
pub struct Triggers {
    /// Events for the same job and targets within this window make one run.
    pub debounce: Duration,
    /// Whether the first event of a quiet job and targets runs at once or after the window.
    pub first_event: FirstEvent,
    /// `POST /hooks/cloudstack`: CloudStack webhook deliveries, signed with this secret.
    pub cloudstack: Option<SecretRef>,
    /// `POST /hooks/alertmanager`: Alertmanager notifications (`Some(None)`: no token).
    pub alertmanager: Option<Option<SecretRef>>,
    /// CloudStack APIs polled for events and alerts.
    pub poll: Vec<Poll>,
}

/// One polled CloudStack API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    /// Names the cursor in the state (`poll.N` unless given).
    pub name: String,
    /// The inventory whose `remedy_cloudstack` is the API to poll.
    pub inventory: Vec<PathBuf>,
    pub every: Duration,
    /// Poll `listEvents`.
    pub events: bool,
    /// Poll `listAlerts`.
    pub alerts: bool,
}

// --- as written ---

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggersDoc {
    debounce: Option<String>,
    first_event: Option<String>,
    cloudstack: Option<CloudstackDoc>,
    alertmanager: Option<AlertmanagerDoc>,
    #[serde(default)]
    poll: Vec<PollDoc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloudstackDoc {
    secret: SecretDoc,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertmanagerDoc {
    token: Option<SecretDoc>,
}

/// A secret by reference, as the inventory writes one: `{ env: NAME }` or `{ file: PATH }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretDoc {
    env: Option<String>,
    file: Option<PathBuf>,
}

impl SecretDoc {
    /// The reference (a relative file relative to `base`), or an error at `path`.
    fn check(
        &self,
        source: &Source,
        path: &str,
        base: &Path,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<SecretRef> {
        match (&self.env, &self.file) {
            (Some(name), None) => Some(SecretRef::Env(name.clone())),
            (None, Some(file)) => Some(SecretRef::File(base.join(file))),
            _ => {
                diags.push(Diagnostic::at(
                    source,
                    path,
                    format!("{path}: a secret is given by reference: {{ env: NAME }} or {{ file: PATH }}"),
                ));
                None
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PollDoc {
    name: Option<String>,
    inventory: OneOrMany,
    every: String,
    #[serde(default = "yes")]
    events: bool,
    #[serde(default = "yes")]
    alerts: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
/// One path or a list (`inventory:` here and in a job).
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The paths, relative ones relative to `base`.
    pub(crate) fn paths(&self, base: &Path) -> Vec<PathBuf> {
        match self {
            OneOrMany::One(p) => vec![base.join(p)],
            OneOrMany::Many(ps) => ps.iter().map(|p| base.join(p)).collect(),
        }
    }
}

fn yes() -> bool {
    true
}

impl TriggersDoc {
    /// Checks the section; `base` is the jobs file's directory.
    pub(crate) fn check(
        &self,
        source: &Source,
        base: &Path,
        diags: &mut Vec<Diagnostic>,
    ) -> Triggers {
        let debounce = match &self.debounce {
            None => DEFAULT_DEBOUNCE,
            Some(t) => match humantime::parse_duration(t) {
                Ok(d) => d,
                Err(e) => {
                    diags.push(Diagnostic::at(
                        source,
                        "triggers.debounce",
                        format!("triggers.debounce: {t:?} is not a duration ({e}); e.g. 5s"),
                    ));
                    DEFAULT_DEBOUNCE
                }
            },
        };
        let first_event = match self.first_event.as_deref() {
            None | Some("now") => FirstEvent::Now,
            Some("wait") => FirstEvent::Wait,
            Some(other) => {
                diags.push(Diagnostic::at(
                    source,
                    "triggers.first_event",
                    format!(
                        "triggers.first_event: {other:?} is not `now` (run at once, then one run per window) or `wait` (one run per window, after it)"
                    ),
                ));
                FirstEvent::Now
            }
        };
        let mut poll = Vec::new();
        for (i, p) in self.poll.iter().enumerate() {
            let at = format!("triggers.poll.{i}");
            let every = match humantime::parse_duration(&p.every) {
                Ok(d) if d >= Duration::from_secs(1) => d,
                Ok(_) => {
                    diags.push(Diagnostic::at(
                        source,
                        &format!("{at}.every"),
                        format!("{at}.every: at least 1s"),
                    ));
                    Duration::from_secs(1)
                }
                Err(e) => {
                    diags.push(Diagnostic::at(
                        source,
                        &format!("{at}.every"),
                        format!(
                            "{at}.every: {:?} is not a duration ({e}); e.g. 30s",
                            p.every
                        ),
                    ));
                    Duration::from_secs(60)
                }
            };
            if !p.events && !p.alerts {
                diags.push(Diagnostic::at(
                    source,
                    &at,
                    format!("{at}: polls nothing (`events` and `alerts` are both false)"),
                ));
            }
            let name = p.name.clone().unwrap_or_else(|| format!("poll.{i}"));
            if poll.iter().any(|q: &Poll| q.name == name) {
                diags.push(Diagnostic::at(
                    source,
                    &format!("{at}.name"),
                    format!("{at}.name: {name:?} is used by another poller (it names the cursor)"),
                ));
            }
            poll.push(Poll {
                name,
                inventory: p.inventory.paths(base),
                every,
                events: p.events,
                alerts: p.alerts,
            });
        }
        let cloudstack = self.cloudstack.as_ref().and_then(|c| {
            c.secret
                .check(source, "triggers.cloudstack.secret", base, diags)
        });
        let alertmanager = self.alertmanager.as_ref().map(|a| {
            a.token
                .as_ref()
                .and_then(|t| t.check(source, "triggers.alertmanager.token", base, diags))
        });
        Triggers {
            debounce,
            first_event,
            cloudstack,
            alertmanager,
            poll,
        }
    }
}

impl Triggers {
    /// Whether anything delivers events of `origin`.
    pub fn delivers(&self, origin: Origin) -> bool {
        match origin {
            Origin::Cloudstack => self.cloudstack.is_some() || !self.poll.is_empty(),
            Origin::Alertmanager => self.alertmanager.is_some(),
        }
    }

    /// Whether a receiver needs the HTTP listener.
    pub fn has_receivers(&self) -> bool {
        self.cloudstack.is_some() || self.alertmanager.is_some()
    }
}
