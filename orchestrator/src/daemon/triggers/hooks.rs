//! The HTTP receivers on the daemon's listener: `POST /hooks/cloudstack` (CloudStack 4.20
//! webhook deliveries) and `POST /hooks/alertmanager` (Prometheus Alertmanager's webhook).
//!
//! A delivery is checked in this order, and refused at the first failure, counted in
//! `remedy_events_rejected_total{reason}`, with nothing run:
//! 1. only the leader takes events (`503`, `not-leader`: CloudStack and Alertmanager retry,
//!    and in a replicated deployment the Service sends only to the ready leader);
//! 2. the body's size: at most [`MAX_BODY`] (`413`, `too-large`), by its `Content-Length` and
//!    while reading;
//! 3. authentication: CloudStack's `X-CS-Signature`, base64 of HMAC-SHA256(secret, raw body),
//!    compared in constant time (`401`, `unsigned` / `bad-signature`); Alertmanager's bearer
//!    token when one is set (`401`, `unauthorized`);
//! 4. the body: JSON of the expected shape (`400`, `malformed`); for CloudStack the event type
//!    (`X-CS-Event`, and the payload's `event` when it has one) must be one a rule names
//!    (`400`, `unknown-event`);
//! 5. replays: an event id seen before (kept in the daemon's state, so a restart or a failover
//!    keeps it) is answered `200` and counted in `remedy_events_deduplicated_total{reason="replay"}`;
//! 6. then `200` at once: the event is queued for the daemon's loop, which matches the rules,
//!    fetches their lookups and debounces, after the answer (`503`, `overloaded`, when the
//!    queue is full). The write that records the id also records the event as accepted and not
//!    yet in a batch (`state::Events::accepted`): a new leader takes it over if this one dies
//!    before the loop has put it in a batch.

use std::sync::{Arc, RwLock};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, Response};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{Arrived, Event, Origin, MAX_BODY};
use crate::daemon::observe::Metrics;
use crate::daemon::state::Store;

/// What the receivers check against: the secrets (resolved) and the event types rules name.
#[derive(Default)]
pub struct Config {
    /// `/hooks/cloudstack` is served when set: the webhook's secret key.
    pub cloudstack_secret: Option<String>,
    /// `/hooks/alertmanager` is served when set; the inner value is the bearer token, if any.
    pub alertmanager_token: Option<Option<String>>,
    /// The CloudStack event types (patterns) some rule names; others are refused.
    pub cloudstack_types: Vec<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("Config")
            .field("cloudstack", &self.cloudstack_secret.is_some())
            .field("alertmanager", &self.alertmanager_token.is_some())
            .field("cloudstack_types", &self.cloudstack_types)
            .finish()
    }
}

/// The receivers' shared state: their config (replaced on reload), the queue to the daemon's
/// loop, the metrics, and the state store (for replays).
pub struct Hub {
    pub config: RwLock<Arc<Config>>,
    pub tx: mpsc::Sender<Arrived>,
    pub metrics: Arc<Metrics>,
    pub store: Store,
}

/// How many events may wait for the daemon's loop before receivers answer 503.
pub const QUEUE: usize = 4096;

/// Why a delivery was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotLeader,
    TooLarge,
    Unsigned,
    BadSignature,
    Unauthorized,
    Malformed,
    UnknownEvent,
    Overloaded,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NotLeader => "not-leader",
            Refusal::TooLarge => "too-large",
            Refusal::Unsigned => "unsigned",
            Refusal::BadSignature => "bad-signature",
            Refusal::Unauthorized => "unauthorized",
            Refusal::Malformed => "malformed",
            Refusal::UnknownEvent => "unknown-event",
            Refusal::Overloaded => "overloaded",
        }
    }

    fn status(self) -> u16 {
        match self {
            Refusal::NotLeader | Refusal::Overloaded => 503,
            Refusal::TooLarge => 413,
            Refusal::Unsigned | Refusal::BadSignature | Refusal::Unauthorized => 401,
            Refusal::Malformed | Refusal::UnknownEvent => 400,
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, text: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Answers a request under `/hooks/`.
pub async fn handle(hub: &Hub, req: Request<hyper::body::Incoming>) -> Reply {
    let origin = match req.uri().path() {
        "/hooks/cloudstack" => Origin::Cloudstack,
        "/hooks/alertmanager" => Origin::Alertmanager,
        _ => return reply(404, "not found\n".into()),
    };
    let config = hub.config.read().unwrap_or_else(|p| p.into_inner()).clone();
    let served = match origin {
        Origin::Cloudstack => config.cloudstack_secret.is_some(),
        Origin::Alertmanager => config.alertmanager_token.is_some(),
    };
    if !served {
        return reply(404, format!("no {} receiver here\n", origin.word()));
    }
    if req.method() != hyper::Method::POST {
        return reply(405, "POST only\n".into());
    }
    hub.metrics.event_received(origin);
    match take(hub, &config, origin, req).await {
        Ok(said) => reply(200, said),
        Err((refusal, why)) => {
            hub.metrics.event_rejected(origin, refusal.reason());
            tracing::warn!(
                source = origin.word(),
                reason = refusal.reason(),
                "delivery refused: {why}"
            );
            let mut r = reply(refusal.status(), format!("{why}\n"));
            if refusal.status() == 503 {
                r.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    hyper::header::HeaderValue::from_static("1"),
                );
            }
            r
        }
    }
}

type Refused = (Refusal, String);

async fn take(
    hub: &Hub,
    config: &Config,
    origin: Origin,
    req: Request<hyper::body::Incoming>,
) -> Result<String, Refused> {
    if !hub.metrics.is_leader() {
        return Err((
            Refusal::NotLeader,
            "this replica does not lead; deliver to the leader".into(),
        ));
    }
    let (head, body) = req.into_parts();
    let declared = head
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err((too_large(), format!("the body is over {MAX_BODY} bytes")));
    }
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                (too_large(), format!("the body is over {MAX_BODY} bytes"))
            } else {
                (Refusal::Malformed, format!("reading the body: {e}"))
            }
        })?
        .to_bytes();
    let header = |name: &str| {
        head.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let events = match origin {
        Origin::Cloudstack => {
            let secret = config.cloudstack_secret.as_deref().unwrap_or_default();
            vec![cloudstack(
                secret,
                &config.cloudstack_types,
                header("x-cs-signature").as_deref(),
                header("x-cs-event-id").as_deref(),
                header("x-cs-event").as_deref(),
                header("user-agent").as_deref(),
                &body,
            )?]
        }
        Origin::Alertmanager => {
            if let Some(Some(token)) = &config.alertmanager_token {
                let given = header("authorization").unwrap_or_default();
                let given = given.strip_prefix("Bearer ").unwrap_or("");
                if !same(given.as_bytes(), token.as_bytes()) {
                    return Err((
                        Refusal::Unauthorized,
                        "no valid bearer token (Authorization: Bearer ...)".into(),
                    ));
                }
            }
            alertmanager(&body)?
        }
    };
    // Again: a leader that lost its term while the body was read takes no event (the next
    // leader has already read the marks of the accepted ones).
    if !hub.metrics.is_leader() {
        return Err((
            Refusal::NotLeader,
            "this replica does not lead; deliver to the leader".into(),
        ));
    }
    let now = std::time::Instant::now();
    let (mut queued, mut replayed) = (0, 0);
    for event in events {
        if !remember(&hub.store, &event).await.map_err(|e| {
            (
                Refusal::Overloaded,
                format!("cannot record the event in the daemon state: {e}"),
            )
        })? {
            hub.metrics.event_deduplicated(origin, "replay");
            replayed += 1;
            continue;
        }
        hub.tx
            .try_send(Arrived {
                event,
                at: now,
                origin,
            })
            .map_err(|_| {
                (
                    Refusal::Overloaded,
                    "too many events are waiting; try again".to_string(),
                )
            })?;
        queued += 1;
    }
    Ok(format!(
        "accepted: {queued} queued, {replayed} seen before\n"
    ))
}

fn too_large() -> Refusal {
    Refusal::TooLarge
}

/// Records the event's id as seen, and the event as accepted and not yet in a batch (so that a
/// new leader finds it if this one dies before its run is asked for), in one write; `false`
/// when the id was seen already (a replay).
pub async fn remember(store: &Store, event: &Event) -> Result<bool, String> {
    let now = jiff::Timestamp::now();
    let json = serde_json::to_value(event).unwrap_or_default();
    store
        .update(|s| {
            let new = s.events.remember(&event.id, now);
            if new {
                s.events.accept(&event.id, json.clone(), now);
            }
            new
        })
        .await
}

/// Constant-time equality of two byte strings (the length is not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `X-CS-Signature` for `body` under `secret`: base64 (standard, padded) of HMAC-SHA256 over
/// the raw body, as CloudStack's webhook delivery computes it.
pub fn signature(secret: &str, body: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `given` is the signature of `body` under `secret`, compared in constant time.
fn verify(secret: &str, body: &[u8], given: &str) -> bool {
    use base64::Engine as _;
    use hmac::Mac as _;
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(given.trim()) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&sig).is_ok()
}

/// A CloudStack delivery, checked: the signature, its headers, the payload (the event's
/// description document: `event`, `entity`, `entityuuid`, `status`, `description`, `account`,
/// `eventDateTime`, ...), and that some rule names its type.
pub fn cloudstack(
    secret: &str,
    types: &[String],
    signature: Option<&str>,
    id: Option<&str>,
    kind: Option<&str>,
    agent: Option<&str>,
    body: &[u8],
) -> Result<Event, Refused> {
    let Some(sig) = signature else {
        return Err((
            Refusal::Unsigned,
            "no X-CS-Signature: create the webhook with the secret key the daemon has".into(),
        ));
    };
    if !verify(secret, body, sig) {
        return Err((
            Refusal::BadSignature,
            "X-CS-Signature does not match the body (another secret key?)".into(),
        ));
    }
    let id = id
        .filter(|s| !s.trim().is_empty())
        .ok_or((Refusal::Malformed, "no X-CS-Event-ID header".to_string()))?;
    let kind = kind
        .filter(|s| !s.trim().is_empty())
        .ok_or((Refusal::Malformed, "no X-CS-Event header".to_string()))?;
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| (Refusal::Malformed, format!("the body is not JSON: {e}")))?;
    let Some(doc) = payload.as_object() else {
        return Err((
            Refusal::Malformed,
            "the body is not a JSON object (an event's description document)".into(),
        ));
    };
    let text = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if doc.contains_key("event") && text("event") != kind {
        return Err((
            Refusal::Malformed,
            format!(
                "X-CS-Event says {kind:?} but the payload's event is {:?}",
                text("event")
            ),
        ));
    }
    if !types.iter().any(|p| super::rules::glob(p, kind)) {
        return Err((
            Refusal::UnknownEvent,
            format!("no rule takes the event type {kind:?}"),
        ));
    }
    let account = agent
        .and_then(|a| a.strip_prefix("CS-Hookshot/"))
        .map(str::to_string)
        .unwrap_or_else(|| text("account"));
    Ok(Event {
        source: Origin::Cloudstack.word().into(),
        kind: "event".into(),
        id: id.trim().to_string(),
        kind_name: kind.to_string(),
        level: text("level"),
        status: text("status"),
        resource_type: text("entity"),
        resource_id: text("entityuuid"),
        resource_name: text("entityname"),
        description: text("description"),
        account,
        created: text("eventDateTime"),
        payload,
        ..Event::default()
    })
}

/// An Alertmanager notification (webhook format version 4): one event per alert.
pub fn alertmanager(body: &[u8]) -> Result<Vec<Event>, Refused> {
    let bad = |why: String| (Refusal::Malformed, why);
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    if doc.get("version").and_then(Value::as_str) != Some("4") {
        return Err(bad(
            "not an Alertmanager notification of version \"4\"".into()
        ));
    }
    let alerts = doc
        .get("alerts")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no `alerts` list".into()))?;
    let map = |v: Option<&Value>| -> std::collections::BTreeMap<String, String> {
        v.and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for (i, a) in alerts.iter().enumerate() {
        let text = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let labels = map(a.get("labels"));
        let annotations = map(a.get("annotations"));
        let status = text("status");
        if !matches!(status.as_str(), "firing" | "resolved") {
            return Err(bad(format!("alerts.{i}.status: not firing or resolved")));
        }
        let Some(name) = labels.get("alertname").cloned() else {
            return Err(bad(format!("alerts.{i}: no `alertname` label")));
        };
        let fingerprint = text("fingerprint");
        let starts = text("startsAt");
        if fingerprint.is_empty() || starts.is_empty() {
            return Err(bad(format!("alerts.{i}: no `fingerprint` or `startsAt`")));
        }
        out.push(Event {
            source: Origin::Alertmanager.word().into(),
            kind: "alert".into(),
            id: format!("{fingerprint}@{starts}@{status}"),
            kind_name: name,
            level: labels.get("severity").cloned().unwrap_or_default(),
            status,
            resource_type: String::new(),
            resource_id: String::new(),
            resource_name: labels.get("instance").cloned().unwrap_or_default(),
            description: annotations
                .get("description")
                .or_else(|| annotations.get("summary"))
                .cloned()
                .unwrap_or_default(),
            account: String::new(),
            created: starts,
            labels,
            annotations,
            payload: a.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"event":"ROUTER.HEALTH.CHECKS","entity":"DomainRouter","entityuuid":"u-1","status":"Completed","description":"dnsmasq failed","account":"a-1"}"#;

    fn types() -> Vec<String> {
        vec!["ROUTER.*".into()]
    }

    #[test]
    fn a_signed_delivery_reads_as_an_event() {
        let sig = signature("s3cret", BODY);
        let e = cloudstack(
            "s3cret",
            &types(),
            Some(&sig),
            Some("ev-1"),
            Some("ROUTER.HEALTH.CHECKS"),
            Some("CS-Hookshot/acc-9"),
            BODY,
        )
        .unwrap();
        assert_eq!(e.id, "ev-1");
        assert_eq!(e.kind_name, "ROUTER.HEALTH.CHECKS");
        assert_eq!(e.resource_type, "DomainRouter");
        assert_eq!(e.resource_id, "u-1");
        assert_eq!(e.account, "acc-9");
        assert_eq!(e.description, "dnsmasq failed");
    }

    #[test]
    fn the_signature_is_base64_of_hmac_sha256_over_the_raw_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
    }

    #[test]
    fn refusals_name_their_reason() {
        let sig = signature("s3cret", BODY);
        let run = |secret: &str, sig: Option<&str>, kind: &str, body: &[u8]| {
            cloudstack(secret, &types(), sig, Some("ev-1"), Some(kind), None, body)
                .map(|_| ())
                .unwrap_err()
                .0
        };
        assert_eq!(
            run("s3cret", None, "ROUTER.HEALTH.CHECKS", BODY),
            Refusal::Unsigned
        );
        assert_eq!(
            run("other", Some(&sig), "ROUTER.HEALTH.CHECKS", BODY),
            Refusal::BadSignature
        );
        assert_eq!(
            run("s3cret", Some("not base64!"), "ROUTER.HEALTH.CHECKS", BODY),
            Refusal::BadSignature
        );
        let tampered = [BODY, b" "].concat();
        assert_eq!(
            run("s3cret", Some(&sig), "ROUTER.HEALTH.CHECKS", &tampered),
            Refusal::BadSignature
        );
        assert_eq!(
            run("s3cret", Some(&sig), "VM.START", BODY),
            Refusal::Malformed,
            "the header and the payload disagree"
        );
        let vm = br#"{"event":"VM.START"}"#;
        let vm_sig = signature("s3cret", vm);
        assert_eq!(
            run("s3cret", Some(&vm_sig), "VM.START", vm),
            Refusal::UnknownEvent
        );
        let junk = b"not json";
        let junk_sig = signature("s3cret", junk);
        assert_eq!(
            run("s3cret", Some(&junk_sig), "ROUTER.HEALTH.CHECKS", junk),
            Refusal::Malformed
        );
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }

    #[test]
    fn an_alertmanager_notification_is_one_event_per_alert() {
        let body = serde_json::json!({
            "version": "4", "status": "firing", "receiver": "remedy", "groupKey": "{}:{}",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
            "alerts": [
                {"status": "firing", "labels": {"alertname": "VRBackupLoop", "router": "r-930-VM", "severity": "critical"},
                 "annotations": {"summary": "both routers BACKUP"}, "startsAt": "2026-12-06T10:00:00Z",
                 "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "abc123"},
                {"status": "resolved", "labels": {"alertname": "Other"}, "annotations": {},
                 "startsAt": "2026-12-06T09:00:00Z", "endsAt": "2026-12-06T09:30:00Z", "fingerprint": "def"}
            ]
        });
        let events = alertmanager(body.to_string().as_bytes()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id, "abc123@2026-12-06T10:00:00Z@firing");
        assert_eq!(events[0].kind_name, "VRBackupLoop");
        assert_eq!(events[0].level, "critical");
        assert_eq!(events[0].labels["router"], "r-930-VM");
        assert_eq!(events[0].description, "both routers BACKUP");
        assert_eq!(events[1].status, "resolved");
        let v3 = br#"{"version":"3","alerts":[]}"#;
        assert_eq!(alertmanager(v3).unwrap_err().0, Refusal::Malformed);
    }
}
