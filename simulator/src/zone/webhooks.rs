//! Webhooks (CloudStack 4.20's webhook plugin) as zone state: the registered webhooks, the
//! deliveries made, the queue of deliveries to make, and the API commands over them
//! (`createWebhook`, `listWebhooks`, `updateWebhook`, `deleteWebhook`,
//! `listWebhookDeliveries`, `deleteWebhookDelivery`; `executeWebhookDelivery` is prepared
//! here and sent by the HTTP front). Sending is not here: the zone has no I/O. The server's
//! delivery task (`crate::hooks`) takes [`Outgoing`] deliveries with [`Zone::take_outgoing`]
//! and records what happened with [`Zone::record_delivery`].
//!
//! As in 4.20: an event goes to every Enabled webhook whose scope covers it at the time it is
//! recorded (`Local`: the owner account's events; `Domain`: its domain's; `Global`: all,
//! root admin only); the reply shows the secret key as the server does (`secretkey`); a
//! payload URL without a scheme gets `http://`; one owner cannot use a payload URL twice.
//! The simulator accepts loopback payload URLs only (127.0.0.0/8, `localhost`, `[::1]`):
//! tests and labs never send anywhere else.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::events::{api_time, Event, NewEvent};
use super::model::{id_for, ACCOUNTS, ADMIN_ACCOUNT, DOMAIN};
use super::{Params, Zone};

/// Deliveries waiting to be sent, at most (the oldest are dropped beyond it, with a warning).
const QUEUE_MAX: usize = 10_000;
/// The event type of a test delivery (`executeWebhookDelivery` without a delivery id).
pub const TEST_EVENT_TYPE: &str = "TEST.WEBHOOK";
/// The payload of a test delivery that names none.
pub const TEST_PAYLOAD: &str = "{ \"CloudStack\": \"works!\" }";
/// The part of a reply's body a delivery record keeps.
const RESPONSE_KEPT: usize = 1_000;

/// A registered webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub name: String,
    pub description: String,
    /// `Enabled` or `Disabled`.
    pub state: String,
    /// The owner account's name.
    pub account: String,
    pub payloadurl: String,
    pub secretkey: Option<String>,
    pub sslverification: bool,
    /// `Local`, `Domain` or `Global`.
    pub scope: String,
    pub created: jiff::Timestamp,
}

/// One delivery made (all its tries), as `listWebhookDeliveries` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    /// The request headers, one `Name: value` a line.
    pub headers: String,
    pub payload: String,
    pub success: bool,
    pub response: String,
    pub start: jiff::Timestamp,
    pub end: jiff::Timestamp,
}

/// A delivery to make.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Queued {
    webhook: String,
    event: u64,
}

/// The zone's webhooks, their deliveries and the queue.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hooks {
    pub webhooks: Vec<Webhook>,
    pub deliveries: Vec<Delivery>,
    queue: VecDeque<Queued>,
}

/// A delivery for the sender: where, what, how, and what the faults do to it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub webhook_id: String,
    pub url: String,
    pub secret: Option<String>,
    pub sslverification: bool,
    pub event_id: String,
    pub event_type: String,
    /// The uuid of the account that owns the event's resource (`User-Agent: CS-Hookshot/...`).
    pub account_uuid: String,
    pub payload: String,
    /// Whether the result is kept (a test delivery is not).
    pub record: bool,
    /// How many tries, and how long each may take.
    pub tries: u32,
    pub timeout: std::time::Duration,
    /// Faults: wait this long first; sign with a wrong key; send it twice.
    pub delay_ms: u64,
    pub bad_signature: bool,
    pub duplicate: bool,
}

/// What one delivery came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub headers: String,
    pub success: bool,
    pub response: String,
    pub start: jiff::Timestamp,
    pub end: jiff::Timestamp,
}

/// Whether a payload URL points at this machine: `http(s)://HOST[:PORT]/...` with HOST in
/// 127.0.0.0/8, `localhost` or `[::1]`.
pub fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if host.eq_ignore_ascii_case("localhost") || host == "::1" {
        return true;
    }
    host.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.is_loopback())
}

fn normalized_url(url: &str) -> String {
    if url.is_empty() || url.starts_with("http://") || url.starts_with("https://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

fn bad(text: impl Into<String>) -> (u16, String) {
    (431, text.into())
}

impl Zone {
    /// Queues a delivery of `event` to every Enabled webhook whose scope covers it.
    pub(super) fn queue_deliveries(&mut self, event: &Event) {
        let hooks = &mut self.hooks;
        for w in hooks.webhooks.iter().filter(|w| w.state == "Enabled") {
            let covers = match w.scope.as_str() {
                "Local" => w.account == event.account,
                _ => true, // one domain (ROOT) holds every account
            };
            if covers {
                hooks.queue.push_back(Queued {
                    webhook: w.id.clone(),
                    event: event.seq,
                });
            }
        }
        if hooks.queue.len() > QUEUE_MAX {
            let over = hooks.queue.len() - QUEUE_MAX;
            hooks.queue.drain(..over);
            tracing::warn!(
                dropped = over,
                "webhook delivery queue full: oldest dropped"
            );
        }
    }

    /// How many tries a delivery gets and how long each may take: `webhook.delivery.retries`
    /// and `webhook.delivery.timeout` (seconds), or the `webhook_timeout_ms` fault.
    fn delivery_limits(&self) -> (u32, std::time::Duration) {
        let tries = self
            .world
            .setting("webhook.delivery.retries")
            .parse::<u32>()
            .unwrap_or(3)
            .max(1);
        let timeout = match self.faults.webhook_timeout_ms {
            Some(ms) => std::time::Duration::from_millis(ms),
            None => std::time::Duration::from_secs(
                self.world
                    .setting("webhook.delivery.timeout")
                    .parse::<u64>()
                    .unwrap_or(10)
                    .max(1),
            ),
        };
        (tries, timeout)
    }

    fn outgoing(&self, w: &Webhook, e: &Event) -> Outgoing {
        let (tries, timeout) = self.delivery_limits();
        Outgoing {
            webhook_id: w.id.clone(),
            url: w.payloadurl.clone(),
            secret: w.secretkey.clone(),
            sslverification: w.sslverification,
            event_id: e.id.clone(),
            event_type: e.kind.clone(),
            account_uuid: id_for("account", &e.account),
            payload: self.event_payload(e),
            record: true,
            tries,
            timeout,
            delay_ms: 0,
            bad_signature: false,
            duplicate: false,
        }
    }

    /// The deliveries to send now, with the delivery faults applied (counters count down):
    /// `webhook_drop_next` ones are left out (never sent), `webhook_delay_ms`,
    /// `webhook_bad_signature_next` and `webhook_duplicate_next` are marked on them.
    pub fn take_outgoing(&mut self) -> Vec<Outgoing> {
        let queued: Vec<Queued> = self.hooks.queue.drain(..).collect();
        let mut out = Vec::new();
        for q in queued {
            let Some(w) = self.hooks.webhooks.iter().find(|w| w.id == q.webhook) else {
                continue; // deleted meanwhile
            };
            let Some(e) = self.log.event(q.event) else {
                continue;
            };
            let mut o = self.outgoing(w, e);
            let f = &mut self.faults;
            if f.webhook_drop_next > 0 {
                f.webhook_drop_next -= 1;
                tracing::debug!(event = %o.event_id, "webhook delivery dropped (fault)");
                continue;
            }
            o.delay_ms = f.webhook_delay_ms;
            if f.webhook_bad_signature_next > 0 {
                f.webhook_bad_signature_next -= 1;
                o.bad_signature = true;
            }
            if f.webhook_duplicate_next > 0 {
                f.webhook_duplicate_next -= 1;
                o.duplicate = true;
            }
            out.push(o);
        }
        out
    }

    /// Keeps the record of a delivery made for `o` (not for a test delivery), and the newest
    /// `webhook.deliveries.limit` of its webhook's; returns the record's JSON.
    pub fn record_delivery(&mut self, o: &Outgoing, r: &Outcome) -> Value {
        let response: String = r.response.chars().take(RESPONSE_KEPT).collect();
        let d = Delivery {
            id: uuid::Uuid::new_v4().to_string(),
            webhook_id: o.webhook_id.clone(),
            event_id: o.event_id.clone(),
            event_type: o.event_type.clone(),
            headers: r.headers.clone(),
            payload: o.payload.clone(),
            success: r.success,
            response,
            start: r.start,
            end: r.end,
        };
        let item = self.delivery_json(&d);
        if !o.record {
            return item;
        }
        self.hooks.deliveries.push(d);
        let limit = self
            .world
            .setting("webhook.deliveries.limit")
            .parse::<usize>()
            .unwrap_or(10);
        let mine: Vec<usize> = (0..self.hooks.deliveries.len())
            .filter(|&i| self.hooks.deliveries[i].webhook_id == o.webhook_id)
            .collect();
        if mine.len() > limit {
            let gone: Vec<usize> = mine[..mine.len() - limit].to_vec();
            let mut i = 0;
            self.hooks.deliveries.retain(|_| {
                let keep = !gone.contains(&i);
                i += 1;
                keep
            });
        }
        item
    }

    fn webhook_json(&self, w: &Webhook) -> Value {
        let mut item = json!({
            "id": w.id, "name": w.name, "description": w.description, "state": w.state,
            "domainid": self.world.domain_id, "domain": DOMAIN, "account": w.account,
            "payloadurl": w.payloadurl, "sslverification": w.sslverification, "scope": w.scope,
            "created": api_time(w.created),
        });
        if let Some(s) = &w.secretkey {
            item["secretkey"] = json!(s);
        }
        item
    }

    fn delivery_json(&self, d: &Delivery) -> Value {
        let name = self
            .hooks
            .webhooks
            .iter()
            .find(|w| w.id == d.webhook_id)
            .map_or("", |w| w.name.as_str());
        json!({
            "id": d.id, "eventid": d.event_id, "eventtype": d.event_type,
            "webhookid": d.webhook_id, "webhookname": name,
            "managementserverid": self.world.mgmt.id, "managementservername": self.world.mgmt.name,
            "headers": d.headers, "payload": d.payload, "success": d.success,
            "response": d.response, "startdate": api_time(d.start), "enddate": api_time(d.end),
        })
    }

    /// The owner `account`/`domainid` name (both, or neither: the caller).
    fn webhook_owner(&self, p: &Params) -> Result<&'static str, (u16, String)> {
        match (p.get("account"), p.get("domainid")) {
            (None, _) => Ok(ADMIN_ACCOUNT),
            (Some(_), None) => Err(bad("Account and domainId are needed for resource creation")),
            (Some(name), Some(_)) => ACCOUNTS
                .iter()
                .find(|a| **a == name)
                .copied()
                .ok_or_else(|| bad(format!("Unable to find account {name} in domain ROOT"))),
        }
    }

    fn check_url(&self, url: &str, owner: &str, this: Option<&str>) -> Result<(), (u16, String)> {
        if !is_loopback_url(url) {
            return Err(bad(format!(
                "Invalid payload URL {url}: the simulated zone delivers to loopback addresses only (127.0.0.0/8, localhost, [::1])"
            )));
        }
        let taken = self
            .hooks
            .webhooks
            .iter()
            .any(|w| w.account == owner && w.payloadurl == url && Some(w.id.as_str()) != this);
        if taken {
            return Err(bad(format!(
                "Payload URL: {url} is already in use by another webhook"
            )));
        }
        Ok(())
    }

    /// `createWebhook`.
    pub(super) fn create_webhook(
        &mut self,
        key: &str,
        p: &Params,
        now: jiff::Timestamp,
    ) -> Result<Value, (u16, String)> {
        let owner = self.webhook_owner(p)?;
        let scope = p.get("scope").filter(|s| !s.is_empty()).unwrap_or("Local");
        check_scope(scope, owner)?;
        let state = p
            .get("state")
            .filter(|s| !s.is_empty())
            .unwrap_or("Enabled");
        check_state(state)?;
        let url = normalized_url(p.get("payloadurl").unwrap_or_default());
        self.check_url(&url, owner, None)?;
        let ssl = p.flag("sslverification");
        if ssl && !url.starts_with("https://") {
            return Err(bad(format!(
                "SSL verification can be specified only for HTTPS URLs, {url}"
            )));
        }
        let w = Webhook {
            id: uuid::Uuid::new_v4().to_string(),
            name: p.get("name").unwrap_or_default().to_string(),
            description: p.get("description").unwrap_or_default().to_string(),
            state: state.to_string(),
            account: owner.to_string(),
            payloadurl: url,
            secretkey: p
                .get("secretkey")
                .filter(|s| !s.trim().is_empty())
                .map(str::to_string),
            sslverification: ssl,
            scope: scope.to_string(),
            created: now,
        };
        let reply = json!({ key: {"webhook": self.webhook_json(&w)} });
        let event = NewEvent::completed(
            "WEBHOOK.CREATE",
            format!("Creating Webhook {}", w.name),
            owner,
        );
        self.hooks.webhooks.push(w);
        self.record_event(event, now);
        Ok(reply)
    }

    /// `listWebhooks`: `id`, `name`, `state`, `scope`, `keyword` (in the name), account scope.
    pub(super) fn list_webhooks(&self, p: &Params) -> Result<Vec<Value>, (u16, String)> {
        if let Some(s) = p.get("scope").filter(|s| !s.is_empty()) {
            if !["Local", "Domain", "Global"].contains(&s) {
                return Err(bad("Invalid scope specified"));
            }
        }
        if let Some(s) = p.get("state").filter(|s| !s.is_empty()) {
            check_state(s)?;
        }
        let acl = self.acl(p)?;
        Ok(self
            .hooks
            .webhooks
            .iter()
            .filter(|w| p.get("id").is_none_or(|id| w.id == id))
            .filter(|w| p.get("name").is_none_or(|n| w.name == n))
            .filter(|w| p.get("state").is_none_or(|s| w.state == s))
            .filter(|w| p.get("scope").is_none_or(|s| w.scope == s))
            .filter(|w| {
                p.get("keyword").is_none_or(|k| {
                    w.name
                        .to_ascii_lowercase()
                        .contains(&k.to_ascii_lowercase())
                })
            })
            .map(|w| self.webhook_json(w))
            .filter(|item| acl.admits(item))
            .collect())
    }

    fn webhook_index(&self, id: &str) -> Result<usize, (u16, String)> {
        self.hooks
            .webhooks
            .iter()
            .position(|w| w.id == id)
            .ok_or_else(|| bad("Unable to find the webhook with the specified ID"))
    }

    /// `updateWebhook`: the fields given change, the others stay; `secretkey=` (blank) removes
    /// the secret.
    pub(super) fn update_webhook(
        &mut self,
        key: &str,
        p: &Params,
        now: jiff::Timestamp,
    ) -> Result<Value, (u16, String)> {
        let i = self.webhook_index(p.get("id").unwrap_or_default())?;
        let mut w = self.hooks.webhooks[i].clone();
        if let Some(n) = p.get("name").filter(|n| !n.trim().is_empty()) {
            w.name = n.to_string();
        }
        if let Some(d) = p.get("description") {
            w.description = d.to_string();
        }
        if let Some(s) = p.get("state").filter(|s| !s.is_empty()) {
            check_state(s)?;
            w.state = s.to_string();
        }
        if let Some(s) = p.get("scope").filter(|s| !s.is_empty()) {
            check_scope(s, &w.account)?;
            w.scope = s.to_string();
        }
        if let Some(u) = p.get("payloadurl").filter(|u| !u.is_empty()) {
            let url = normalized_url(u);
            self.check_url(&url, &w.account, Some(&w.id))?;
            w.payloadurl = url;
        }
        if p.get("sslverification").is_some() {
            let ssl = p.flag("sslverification");
            if ssl && !w.payloadurl.starts_with("https://") {
                return Err(bad(format!(
                    "SSL verification can be specified only for HTTPS URLs, {}",
                    w.payloadurl
                )));
            }
            w.sslverification = ssl;
        }
        if let Some(s) = p.get("secretkey") {
            w.secretkey = Some(s.to_string()).filter(|s| !s.trim().is_empty());
        }
        let reply = json!({ key: {"webhook": self.webhook_json(&w)} });
        let event = NewEvent::completed(
            "WEBHOOK.UPDATE",
            format!("Updating Webhook {}", w.name),
            &w.account.clone(),
        );
        self.hooks.webhooks[i] = w;
        self.record_event(event, now);
        Ok(reply)
    }

    /// `deleteWebhook`: the webhook and its deliveries go; queued deliveries are not sent.
    pub(super) fn delete_webhook(
        &mut self,
        key: &str,
        p: &Params,
        now: jiff::Timestamp,
    ) -> Result<Value, (u16, String)> {
        let i = self.webhook_index(p.get("id").unwrap_or_default())?;
        let w = self.hooks.webhooks.remove(i);
        self.hooks.deliveries.retain(|d| d.webhook_id != w.id);
        self.hooks.queue.retain(|q| q.webhook != w.id);
        let event = NewEvent::completed(
            "WEBHOOK.DELETE",
            format!("Deleting Webhook {}", w.name),
            &w.account,
        );
        self.record_event(event, now);
        Ok(json!({ key: {"success": true} }))
    }

    /// The deliveries `listWebhookDeliveries` and `deleteWebhookDelivery` select: `id`,
    /// `webhookid`, `startdate`/`enddate` (a delivery's start at or after, its end at or
    /// before), `eventtype`, `keyword` (in the event type or payload).
    fn selected_deliveries(&self, p: &Params) -> Result<Vec<usize>, (u16, String)> {
        let date = |k: &str| {
            p.get(k)
                .map(|v| {
                    v.parse::<jiff::civil::DateTime>()
                        .or_else(|_| {
                            v.parse::<jiff::civil::Date>()
                                .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
                        })
                        .ok()
                        .and_then(|c| c.to_zoned(jiff::tz::TimeZone::UTC).ok())
                        .map(|z| z.timestamp())
                        .ok_or_else(|| bad(format!("Unable to parse date {v}")))
                })
                .transpose()
        };
        let (start, end) = (date("startdate")?, date("enddate")?);
        if let (Some(s), Some(e)) = (start, end) {
            if e < s {
                return Err(bad("Invalid enddate specified"));
            }
        }
        let keyword = p.get("keyword").map(str::to_ascii_lowercase);
        Ok((0..self.hooks.deliveries.len())
            .rev()
            .filter(|&i| {
                let d = &self.hooks.deliveries[i];
                p.get("id").is_none_or(|id| d.id == id)
                    && p.get("webhookid").is_none_or(|w| d.webhook_id == w)
                    && p.get("eventtype").is_none_or(|t| d.event_type == t)
                    && start.is_none_or(|s| d.start >= s)
                    && end.is_none_or(|e| d.end <= e)
                    && keyword.as_ref().is_none_or(|k| {
                        d.event_type.to_ascii_lowercase().contains(k)
                            || d.payload.to_ascii_lowercase().contains(k)
                    })
            })
            .collect())
    }

    /// `listWebhookDeliveries`, newest first.
    pub(super) fn list_deliveries(&self, p: &Params) -> Result<Vec<Value>, (u16, String)> {
        Ok(self
            .selected_deliveries(p)?
            .into_iter()
            .map(|i| self.delivery_json(&self.hooks.deliveries[i]))
            .collect())
    }

    /// `deleteWebhookDelivery`: removes the selected deliveries.
    pub(super) fn delete_deliveries(
        &mut self,
        key: &str,
        p: &Params,
    ) -> Result<Value, (u16, String)> {
        let gone = self.selected_deliveries(p)?;
        let mut i = 0;
        self.hooks.deliveries.retain(|_| {
            let keep = !gone.contains(&i);
            i += 1;
            keep
        });
        Ok(json!({ key: {"success": true} }))
    }

    /// `executeWebhookDelivery`, up to the sending: `id` redelivers a recorded delivery
    /// (same event, same payload; the result is recorded as a new delivery); `webhookid`
    /// and/or `payloadurl` (with `secretkey`, `payload`) make a test delivery of type
    /// `TEST.WEBHOOK`, not recorded.
    pub fn prepare_execute(&self, p: &Params) -> Result<Outgoing, (u16, String)> {
        let (id, hook) = (p.get("id"), p.get("webhookid"));
        let url = p
            .get("payloadurl")
            .filter(|u| !u.is_empty())
            .map(normalized_url);
        if id.is_none() && hook.is_none() && url.is_none() {
            return Err(bad(
                "One of the id, webhookid or payloadurl must be specified",
            ));
        }
        if id.is_some() && hook.is_some() {
            return Err(bad("Only one of the id or webhookid can be specified"));
        }
        if let Some(u) = &url {
            if !is_loopback_url(u) {
                return Err(bad(format!(
                    "Invalid payload URL {u}: the simulated zone delivers to loopback addresses only (127.0.0.0/8, localhost, [::1])"
                )));
            }
        }
        let (tries, timeout) = self.delivery_limits();
        if let Some(id) = id {
            let d = self
                .hooks
                .deliveries
                .iter()
                .find(|d| d.id == id)
                .ok_or_else(|| bad("Invalid webhook delivery specified"))?;
            let w = &self.hooks.webhooks[self.webhook_index(&d.webhook_id)?];
            let account = w.account.clone();
            return Ok(Outgoing {
                webhook_id: w.id.clone(),
                url: w.payloadurl.clone(),
                secret: w.secretkey.clone(),
                sslverification: w.sslverification,
                event_id: d.event_id.clone(),
                event_type: d.event_type.clone(),
                account_uuid: self
                    .log
                    .events
                    .iter()
                    .find(|e| e.id == d.event_id)
                    .map_or_else(
                        || id_for("account", &account),
                        |e| id_for("account", &e.account),
                    ),
                payload: d.payload.clone(),
                record: true,
                tries,
                timeout,
                delay_ms: 0,
                bad_signature: false,
                duplicate: false,
            });
        }
        let w = hook
            .map(|h| {
                self.hooks
                    .webhooks
                    .iter()
                    .find(|w| w.id == h)
                    .ok_or_else(|| bad("Invalid webhook specified"))
            })
            .transpose()?;
        let secret = p
            .get("secretkey")
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .or_else(|| w.and_then(|w| w.secretkey.clone()));
        Ok(Outgoing {
            webhook_id: w.map(|w| w.id.clone()).unwrap_or_default(),
            url: url
                .or_else(|| w.map(|w| w.payloadurl.clone()))
                .unwrap_or_default(),
            secret,
            sslverification: p.flag("sslverification"),
            event_id: uuid::Uuid::new_v4().to_string(),
            event_type: TEST_EVENT_TYPE.to_string(),
            account_uuid: id_for("account", w.map_or(ADMIN_ACCOUNT, |w| w.account.as_str())),
            payload: p
                .get("payload")
                .filter(|s| !s.trim().is_empty())
                .unwrap_or(TEST_PAYLOAD)
                .to_string(),
            record: false,
            tries,
            timeout,
            delay_ms: 0,
            bad_signature: false,
            duplicate: false,
        })
    }

    /// `executeWebhookDelivery` as the HTTP front receives it (parameters checked as for
    /// any command): the delivery to send, or the error reply.
    pub fn execute_call(
        &mut self,
        spec: &crate::apis::ApiSpec,
        params: &std::collections::BTreeMap<String, String>,
        now: jiff::Timestamp,
    ) -> Result<Outgoing, super::Reply> {
        self.advance(now);
        self.validate(spec, params)?;
        self.prepare_execute(&Params::new(params))
            .map_err(|(status, text)| {
                super::error(
                    &spec.response_envelope_key,
                    status,
                    super::cserrorcode(status),
                    text,
                )
            })
    }

    /// The webhooks registered (for tests and `/sim/state`).
    pub fn webhooks(&self) -> &[Webhook] {
        &self.hooks.webhooks
    }

    /// The deliveries recorded, oldest first.
    pub fn deliveries(&self) -> &[Delivery] {
        &self.hooks.deliveries
    }
}

fn check_scope(scope: &str, owner: &str) -> Result<(), (u16, String)> {
    if !["Local", "Domain", "Global"].contains(&scope) {
        return Err(bad("Invalid scope specified"));
    }
    if scope != "Local" && owner != ADMIN_ACCOUNT {
        return Err(bad(format!(
            "Scope {scope} can not be specified for owner {owner}"
        )));
    }
    Ok(())
}

fn check_state(state: &str) -> Result<(), (u16, String)> {
    if state == "Enabled" || state == "Disabled" {
        Ok(())
    } else {
        Err(bad("Invalid state specified"))
    }
}
