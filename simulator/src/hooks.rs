//! Sending webhook deliveries, as CloudStack 4.20's `WebhookDeliveryThread` does; the
//! webhooks, the queue and the records are zone state (`zone::webhooks`), this module owns
//! the I/O.
//!
//! A background task ([`spawn`], started by [`crate::server::Sim::start`]) wakes every
//! [`TICK`]: it advances the zone's clock (jobs that are due end, so their events follow
//! without waiting for an API call), looks at the zone ([`Zone::observe`]), and takes the
//! queued deliveries ([`Zone::take_outgoing`], which applies the delivery faults). Each is
//! sent by its own task, at most [`POOL`] at once (the server's
//! `webhook.delivery.thread.pool.size`).
//!
//! One delivery: an HTTP POST of the payload (the event's JSON) with `Content-Type:
//! application/json` (or `text/plain` when the payload is not JSON), `X-CS-Event-ID`,
//! `X-CS-Event`, `User-Agent: CS-Hookshot/<account uuid>` and, when the webhook has a secret,
//! `X-CS-Signature`: Base64 of HMAC-SHA256 over the payload's bytes as sent, keyed with the
//! secret's UTF-8 bytes. Only HTTP 200 is a success; otherwise it is tried again, up to
//! `tries`, each try bounded by `timeout` (connect and reply). The record keeps the headers
//! sent, the reply's body (or `Failed due to : <why>`) and the last try's start and end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::zone::webhooks::{Outcome, Outgoing};
use crate::zone::Zone;

/// How often the delivery task looks at the zone.
pub const TICK: Duration = Duration::from_millis(50);
/// How many deliveries are sent at once.
pub const POOL: usize = 5;

fn lock(m: &Mutex<Zone>) -> std::sync::MutexGuard<'_, Zone> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The signature of `payload` with `secret`: Base64 (standard, padded) of HMAC-SHA256.
pub fn signature(secret: &str, payload: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(payload.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The HTTP client deliveries go out with (no proxy: payload URLs are loopback).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("an HTTP client")
}

/// Starts the delivery task over `zone`; it runs until aborted.
pub fn spawn(zone: Arc<Mutex<Zone>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = client();
        let pool = Arc::new(Semaphore::new(POOL));
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let out = {
                let mut z = lock(&zone);
                let now = jiff::Timestamp::now();
                z.advance(now);
                z.observe(now);
                z.take_outgoing()
            };
            for o in out {
                let (zone, client, pool) = (zone.clone(), client.clone(), pool.clone());
                tokio::spawn(async move {
                    let Ok(_permit) = pool.acquire_owned().await else {
                        return;
                    };
                    send_and_record(&zone, &client, o).await;
                });
            }
        }
    })
}

/// Sends one delivery (twice under the duplicate fault) and records each.
async fn send_and_record(zone: &Mutex<Zone>, client: &reqwest::Client, o: Outgoing) {
    let outcome = deliver(client, &o).await;
    lock(zone).record_delivery(&o, &outcome);
    if o.duplicate {
        let again = Outgoing {
            duplicate: false,
            delay_ms: 0,
            ..o
        };
        let outcome = deliver(client, &again).await;
        lock(zone).record_delivery(&again, &outcome);
    }
}

/// The headers of a delivery, in the order they are sent.
fn headers(o: &Outgoing) -> Vec<(&'static str, String)> {
    let json = serde_json::from_str::<serde_json::Value>(&o.payload)
        .is_ok_and(|v| v.is_object() || v.is_array());
    let content_type = if json {
        "application/json; charset=UTF-8"
    } else {
        "text/plain; charset=UTF-8"
    };
    let mut h = vec![
        ("X-CS-Event-ID", o.event_id.clone()),
        ("X-CS-Event", o.event_type.clone()),
        ("User-Agent", format!("CS-Hookshot/{}", o.account_uuid)),
    ];
    let key = match (&o.secret, o.bad_signature) {
        (Some(s), false) => Some(s.clone()),
        (Some(s), true) => Some(format!("{s}-not-the-secret")),
        (None, true) => Some("not-the-secret".to_string()),
        (None, false) => None,
    };
    if let Some(key) = key {
        h.push(("X-CS-Signature", signature(&key, &o.payload)));
    }
    h.push(("Content-Length", o.payload.len().to_string()));
    h.push(("Content-Type", content_type.to_string()));
    h
}

/// Sends one delivery: up to `o.tries` tries, each bounded by `o.timeout`, until one gets
/// HTTP 200.
pub async fn deliver(client: &reqwest::Client, o: &Outgoing) -> Outcome {
    if o.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(o.delay_ms)).await;
    }
    let headers = headers(o);
    let text = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut response = String::new();
    let mut success = false;
    let mut start = jiff::Timestamp::now();
    for attempt in 1..=o.tries.max(1) {
        start = jiff::Timestamp::now();
        let mut req = client.post(&o.url).timeout(o.timeout);
        for (k, v) in headers.iter().filter(|(k, _)| *k != "Content-Length") {
            req = req.header(*k, v);
        }
        match req.body(o.payload.clone()).send().await {
            Ok(reply) => {
                let status = reply.status().as_u16();
                response = reply.text().await.unwrap_or_default();
                if status == 200 {
                    success = true;
                    break;
                }
                tracing::debug!(attempt, status, url = %o.url, "webhook delivery refused");
            }
            Err(e) => {
                response = format!("Failed due to : {}", e.without_url());
                tracing::debug!(attempt, url = %o.url, "webhook delivery failed: {response}");
            }
        }
    }
    Outcome {
        headers: text,
        success,
        response,
        start,
        end: jiff::Timestamp::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_base64_of_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
        assert_eq!(
            signature("Jefe", "what do ya want for nothing?"),
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
    }
}
