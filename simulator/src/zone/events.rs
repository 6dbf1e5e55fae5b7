//! The zone's event log and alerts: what `listEvents` and `listAlerts` return, and the events
//! webhooks deliver (queued by `webhooks.rs`). This file owns recording and listing; what records
//! an event is elsewhere: jobs (`jobs.rs`: Started when queued, Completed when they end),
//! synchronous changes (`updateConfiguration`, `updateHost`, the webhook APIs), and the
//! watch over derived state (`watch.rs`: a router's redundant state, dnsmasq, a host's agent).
//!
//! Shapes follow the 4.18+ `EventResponse` (`id`, `username`, `type`, `level`, `description`,
//! `account`, `domainid`, `domain`, `resourceid`, `resourcetype`, `resourcename`, `created`,
//! `state`, `parentid`, `archived`) and `AlertResponse` (`id`, `type` as a number, `name`,
//! `description` = the alert's subject, `sent`).
//!
//! Bounded: the newest [`EVENTS_KEPT`] events and [`ALERTS_KEPT`] alerts are kept, so a zone
//! of 1,000 hypervisors under a storm keeps a fixed amount of memory. Each event gets a
//! `created` time strictly after the previous one's (a millisecond later at least), so the
//! order never changes between two listings; the API prints it to the second, as the server
//! does, and lists newest first (ties in order of recording).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::model::{id_for, ADMIN_ACCOUNT, DOMAIN, USER_ACCOUNT};
use super::{Params, Zone};

/// How many events the zone keeps (the oldest go first).
pub const EVENTS_KEPT: usize = 10_000;
/// How many alerts the zone keeps.
pub const ALERTS_KEPT: usize = 1_000;

/// The resource an event is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub id: String,
    /// `DomainRouter`, `Host`, `Vpc`, `Network`, `VirtualMachine`, `SystemVm`, ...
    pub kind: String,
    pub name: String,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Order of recording (1, 2, ...), never shown.
    pub seq: u64,
    pub id: String,
    /// The event type, e.g. `ROUTER.REBOOT`.
    pub kind: String,
    /// `INFO`, `WARN` or `ERROR`.
    pub level: String,
    /// `Started`, `Completed`, ...
    pub state: String,
    pub description: String,
    pub created: jiff::Timestamp,
    /// The account that owns the resource (`admin` or `ops`).
    pub account: String,
    /// Who acted: `admin` for API calls, `system` for what the zone did by itself.
    pub username: String,
    pub resource: Option<Resource>,
    /// The Started event of the same job, for a Completed one.
    pub parentid: Option<String>,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    /// The alert type's number (9 = `ALERT.SERVICE.DOMAINROUTER`, ...).
    pub kind: u16,
    pub name: String,
    pub subject: String,
    pub sent: jiff::Timestamp,
}

/// The alert types the zone raises: (number, name), as `AlertManager.AlertType` has them.
pub const ALERT_HOST: (u16, &str) = (7, "ALERT.COMPUTE.HOST");
pub const ALERT_DOMAIN_ROUTER: (u16, &str) = (9, "ALERT.SERVICE.DOMAINROUTER");
pub const ALERT_SSVM: (u16, &str) = (19, "ALERT.SERVICE.SSVM");

/// What a new event says; [`Zone::record_event`] adds the id, order and time.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    pub kind: String,
    pub level: &'static str,
    pub state: &'static str,
    pub description: String,
    pub account: String,
    pub username: &'static str,
    pub resource: Option<Resource>,
    pub parentid: Option<String>,
}

impl NewEvent {
    /// A Completed INFO event by the root admin about `resource`, owned by `account`.
    pub fn completed(kind: &str, description: String, account: &str) -> NewEvent {
        NewEvent {
            kind: kind.to_string(),
            level: "INFO",
            state: "Completed",
            description,
            account: account.to_string(),
            username: ADMIN_ACCOUNT,
            ..NewEvent::default()
        }
    }

    pub fn about(mut self, resource: Option<Resource>) -> NewEvent {
        self.resource = resource;
        self
    }
}

/// The log: events and alerts, newest at the back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Log {
    pub events: VecDeque<Event>,
    pub alerts: VecDeque<Alert>,
    seq: u64,
    last: Option<jiff::Timestamp>,
}

impl Log {
    /// The next time stamp: `now`, or a millisecond after the previous one if that is not later.
    fn stamp(&mut self, now: jiff::Timestamp) -> jiff::Timestamp {
        let t = match self.last {
            Some(last) if now <= last => last + jiff::SignedDuration::from_millis(1),
            _ => now,
        };
        self.last = Some(t);
        t
    }

    /// The event recorded as `seq`, if still kept.
    pub fn event(&self, seq: u64) -> Option<&Event> {
        let first = self.events.front()?.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.events.get(i).filter(|e| e.seq == seq)
    }
}

/// How the API prints a time: `2026-12-06T10:00:00+0000`.
pub fn api_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S+0000").to_string()
}

impl Zone {
    /// Records an event at `now` (or just after the previous one) and queues it for the
    /// webhooks; returns its id.
    pub fn record_event(&mut self, new: NewEvent, now: jiff::Timestamp) -> String {
        let log = &mut self.log;
        log.seq += 1;
        let created = log.stamp(now);
        let event = Event {
            seq: log.seq,
            id: uuid::Uuid::new_v4().to_string(),
            kind: new.kind,
            level: new.level.to_string(),
            state: new.state.to_string(),
            description: new.description,
            created,
            account: new.account,
            username: new.username.to_string(),
            resource: new.resource,
            parentid: new.parentid,
        };
        let id = event.id.clone();
        self.queue_deliveries(&event);
        let log = &mut self.log;
        log.events.push_back(event);
        while log.events.len() > EVENTS_KEPT {
            log.events.pop_front();
        }
        id
    }

    /// Records an alert of `kind` (see [`ALERT_HOST`] and the others) at `now`.
    pub fn record_alert(&mut self, kind: (u16, &str), subject: String, now: jiff::Timestamp) {
        let sent = self.log.stamp(now);
        self.log.alerts.push_back(Alert {
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.0,
            name: kind.1.to_string(),
            subject,
            sent,
        });
        while self.log.alerts.len() > ALERTS_KEPT {
            self.log.alerts.pop_front();
        }
    }

    /// The events kept, oldest first.
    pub fn events(&self) -> impl DoubleEndedIterator<Item = &Event> {
        self.log.events.iter()
    }

    /// The alerts kept, oldest first.
    pub fn alerts(&self) -> impl DoubleEndedIterator<Item = &Alert> {
        self.log.alerts.iter()
    }

    /// The resource a VM, host, VPC or network id names, for an event.
    pub(super) fn resource(&self, id: &str) -> Option<Resource> {
        let w = &self.world;
        let r = |kind: &str, name: &str| {
            Some(Resource {
                id: id.to_string(),
                kind: kind.to_string(),
                name: name.to_string(),
            })
        };
        if let Some(v) = w.vm(id) {
            let kind = if v.vpcid().is_some() {
                "DomainRouter"
            } else if v.systemvmtype().is_some() {
                "SystemVm"
            } else {
                "VirtualMachine"
            };
            return r(kind, &v.name);
        }
        if let Some(h) = w.host(id) {
            return r("Host", &h.name);
        }
        if let Some(v) = w.vpcs.iter().find(|v| v.id == id) {
            return r("Vpc", &v.name);
        }
        if let Some(n) = w.networks.iter().find(|n| n.id == id) {
            return r("Network", &n.name);
        }
        if let Some(p) = w.physnets.iter().find(|p| p.id == id) {
            return r("PhysicalNetwork", &p.name);
        }
        None
    }

    /// The account owning a resource: the user account for VPCs, tiers, their routers and
    /// guest VMs; the root admin for the rest.
    pub(super) fn owner(&self, resource: Option<&Resource>) -> &'static str {
        match resource.map(|r| r.kind.as_str()) {
            Some("DomainRouter" | "Vpc" | "Network" | "VirtualMachine") => USER_ACCOUNT,
            _ => ADMIN_ACCOUNT,
        }
    }

    /// A resource found by name or id (a VM, host, VPC, tier or physical network), for events
    /// injected by hand.
    pub fn resource_named(&self, name: &str) -> Option<Resource> {
        let w = &self.world;
        let id = w
            .vms
            .iter()
            .filter(|v| v.live())
            .find(|v| v.name == name || v.id == name)
            .map(|v| v.id.clone())
            .or_else(|| {
                w.hosts
                    .iter()
                    .find(|h| h.name == name || h.id == name)
                    .map(|h| h.id.clone())
            })
            .or_else(|| {
                w.vpcs
                    .iter()
                    .find(|v| v.name == name || v.id == name)
                    .map(|v| v.id.clone())
            })
            .or_else(|| {
                w.networks
                    .iter()
                    .find(|n| n.name == name || n.id == name)
                    .map(|n| n.id.clone())
            })?;
        self.resource(&id)
    }

    /// One event as `listEvents` shows it.
    pub(super) fn event_json(&self, e: &Event) -> Value {
        let mut item = json!({
            "id": e.id, "username": e.username, "type": e.kind, "level": e.level,
            "description": e.description, "account": e.account,
            "domainid": self.world.domain_id, "domain": DOMAIN, "domainpath": "/",
            "created": api_time(e.created), "state": e.state, "archived": false,
        });
        if let Some(r) = &e.resource {
            item["resourceid"] = json!(r.id);
            item["resourcetype"] = json!(r.kind);
            item["resourcename"] = json!(r.name);
        }
        if let Some(p) = &e.parentid {
            item["parentid"] = json!(p);
        }
        item
    }

    /// The body a webhook receives for an event: the JSON the server publishes on its event
    /// bus (`ActionEventUtils`), one object of strings.
    pub fn event_payload(&self, e: &Event) -> String {
        let mut body = serde_json::Map::new();
        let mut put = |k: &str, v: &str| {
            body.insert(k.to_string(), Value::String(v.to_string()));
        };
        put("event", &e.kind);
        put("status", &e.state);
        put("description", &e.description);
        put("account", &id_for("account", &e.account));
        let user = if e.username == "system" {
            id_for("user", "system")
        } else {
            id_for("user", &e.username)
        };
        put("user", &user);
        put(
            "eventDateTime",
            &e.created.strftime("%Y-%m-%d %H:%M:%S +0000").to_string(),
        );
        if let Some(r) = &e.resource {
            put("entity", &r.kind);
            put("entityuuid", &r.id);
            put(&r.kind, &r.id);
        }
        Value::Object(body).to_string()
    }

    /// `listEvents`: newest first; `id`, `type`, `level`, `startdate`/`enddate` (inclusive,
    /// `yyyy-MM-dd` or `yyyy-MM-dd HH:mm:ss`, UTC), `startid` (the event and the ones it
    /// started), `resourceid`, `resourcetype`, `keyword` (in the type or description), and the
    /// account scope of the other lists (the caller's own events unless `listall=true`,
    /// `account`, `domainid` or `id`).
    pub(super) fn list_events(&self, p: &Params) -> Result<Vec<Value>, (u16, String)> {
        let start = p.get("startdate").map(parse_date).transpose()?;
        let end = p
            .get("enddate")
            .map(|d| parse_date(d).map(|t| end_of(d, t)))
            .transpose()?;
        if let (Some(s), Some(e)) = (start, end) {
            if e < s {
                return Err((431, "Invalid enddate specified".into()));
            }
        }
        let level = p.get("level");
        if let Some(l) = level {
            if !["INFO", "WARN", "ERROR"].contains(&l) {
                return Err((431, format!("Level {l} is not a valid event level")));
            }
        }
        let startid = p.get("startid");
        let items = self
            .log
            .events
            .iter()
            .rev()
            .filter(|e| p.get("id").is_none_or(|id| e.id == id))
            .filter(|e| p.get("type").is_none_or(|t| e.kind.eq_ignore_ascii_case(t)))
            .filter(|e| level.is_none_or(|l| e.level == l))
            .filter(|e| start.is_none_or(|s| e.created >= s))
            .filter(|e| end.is_none_or(|x| e.created <= x))
            .filter(|e| startid.is_none_or(|s| e.id == s || e.parentid.as_deref() == Some(s)))
            .filter(|e| {
                let r = e.resource.as_ref();
                p.get("resourceid")
                    .is_none_or(|id| r.is_some_and(|r| r.id == id))
                    && p.get("resourcetype")
                        .is_none_or(|t| r.is_some_and(|r| r.kind.eq_ignore_ascii_case(t)))
            })
            .filter(|e| {
                p.get("keyword").is_none_or(|k| {
                    let k = k.to_ascii_lowercase();
                    e.kind.to_ascii_lowercase().contains(&k)
                        || e.description.to_ascii_lowercase().contains(&k)
                })
            })
            .map(|e| self.event_json(e))
            .collect();
        Ok(items)
    }

    /// `listAlerts`: newest first; `id`, `type` (the number), `name`, `keyword` (in the subject).
    pub(super) fn list_alerts(&self, p: &Params) -> Vec<Value> {
        self.log
            .alerts
            .iter()
            .rev()
            .filter(|a| p.get("id").is_none_or(|id| a.id == id))
            .filter(|a| p.get("type").is_none_or(|t| t.trim() == a.kind.to_string()))
            .filter(|a| p.get("name").is_none_or(|n| a.name.eq_ignore_ascii_case(n)))
            .filter(|a| {
                p.get("keyword").is_none_or(|k| {
                    a.subject
                        .to_ascii_lowercase()
                        .contains(&k.to_ascii_lowercase())
                })
            })
            .map(|a| {
                json!({
                    "id": a.id, "type": a.kind, "name": a.name, "description": a.subject,
                    "sent": api_time(a.sent),
                })
            })
            .collect()
    }
}

/// A list command's date parameter as a time (UTC).
fn parse_date(v: &str) -> Result<jiff::Timestamp, (u16, String)> {
    let civil = v
        .parse::<jiff::civil::DateTime>()
        .or_else(|_| {
            v.parse::<jiff::civil::Date>()
                .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
        })
        .map_err(|_| (431, format!("Unable to parse date {v}")))?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp())
        .map_err(|e| (431, e.to_string()))
}

/// An end date given as a day covers the whole day; one with a time covers its whole second.
fn end_of(text: &str, t: jiff::Timestamp) -> jiff::Timestamp {
    let span = if text.trim().len() <= 10 {
        jiff::SignedDuration::from_secs(86_400)
    } else {
        jiff::SignedDuration::from_secs(1)
    };
    t + span - jiff::SignedDuration::from_nanos(1)
}
