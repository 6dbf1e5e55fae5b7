//! `remedy daemon` triggered by events, in-process against the embedded zone (`dnsmasq-dead`):
//! a signed CloudStack webhook delivery fixes the router at once (not at the next schedule) and
//! its replay runs nothing; refused deliveries (bad signature, unsigned, unknown event type,
//! malformed, too large) are counted and run nothing; a storm of 500 deliveries makes one fix
//! and one notification; polling `listEvents` (a small fake API in the real envelope, as the
//! simulator does not serve events yet) finds the event and fixes; an Alertmanager alert fixes.
//!
//! Deliveries are built here as CloudStack builds them: the event's JSON as the body, with
//! `X-CS-Event-ID`, `X-CS-Event`, `User-Agent: CS-Hookshot/<account>` and `X-CS-Signature`,
//! base64 of HMAC-SHA256 over the body with the webhook's secret key.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudstack_sim::faults::Faults;
use remedy::daemon::state;
use remedy_tests::zone::ApiZone;

use crate::daemon::{
    dnsmasq, fixes, options, parse_metrics, playbook, receiver, sample, start_with, until, Running,
};

const SECRET: &str = "webhook-secret-of-the-test";

/// A free loopback port (bound, then released for the daemon).
fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The daemon on `zone` with the jobs file `text`, listening on a free port: it and its base URL.
async fn daemon(zone: &ApiZone, text: &str) -> (Running, String) {
    let addr = free_addr();
    std::fs::write(zone.dir.path().join("cs-secret"), SECRET).unwrap();
    let jobs = remedy_tests::write(zone.dir.path(), "jobs.yml", text);
    let mut opts = options(zone, &jobs);
    opts.listen = Some(addr);
    let d = start_with(zone, opts);
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let health = format!("{base}/readyz");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(&health).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the daemon never led");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (d, base)
}

/// A jobs file: the CloudStack receiver, and the job `dns` (restart-dnsmasq on the zone's
/// inventory, scheduled only hourly) with a rule for router health check events that finds the
/// router's VPC with a lookup.
fn webhook_jobs(zone: &ApiZone, debounce: &str, extra: &str) -> String {
    let inv = zone.inventory.file_name().unwrap().to_str().unwrap();
    format!(
        "triggers:\n  debounce: {debounce}\n  cloudstack: {{ secret: {{ file: cs-secret }} }}\n\
         jobs:\n  - name: dns\n    playbook: {}\n    inventory: {inv}\n    every: 1h\n    cooldown: 10m\n{extra}\
         \x20   on:\n      - name: router-health\n        match:\n          source: cloudstack\n          type: ROUTER.HEALTH.CHECKS\n          resource_type: DomainRouter\n          description: dnsmasq\n\
         \x20       lookup:\n          router: {{ api: listRouters, args: {{ id: \"{{{{ event.resource_id }}}}\" }} }}\n\
         \x20       limit: \"{{{{ router.name }}}}\"\n        params: {{ vpc: \"{{{{ router.vpcname }}}}\" }}\n",
        playbook("restart-dnsmasq")
    )
}

/// The uuid of the router `name` in the zone.
fn router_id(zone: &ApiZone, name: &str) -> String {
    zone.world()["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["id"].as_str())
        .unwrap()
        .to_string()
}

/// A CloudStack event description document, as the webhook's payload.
pub(crate) fn payload(kind: &str, router: &str, description: &str) -> String {
    serde_json::json!({
        "event": kind, "status": "Completed", "entity": "DomainRouter", "entityuuid": router,
        "description": description, "account": "acc-1", "user": "u-1",
        "eventDateTime": "2026-12-06 10:00:00 +0000"
    })
    .to_string()
}

pub(crate) fn sign(secret: &str, body: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// POSTs a delivery; `signature` `None` sends none. Returns the status and body.
async fn deliver(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    kind: &str,
    body: &str,
    signature: Option<String>,
) -> (u16, String) {
    let mut req = client
        .post(format!("{base}/hooks/cloudstack"))
        .header("X-CS-Event-ID", id)
        .header("X-CS-Event", kind)
        .header("User-Agent", "CS-Hookshot/acc-1")
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(s) = signature {
        req = req.header("X-CS-Signature", s);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

async fn scrape(base: &str) -> prometheus_parse::Scrape {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    parse_metrics(&text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_webhook_fixes_at_once_and_its_replay_runs_nothing() {
    let zone = ApiZone::start("dnsmasq-dead", Faults::default()).await;
    // A minute's debounce: the first event of a quiet router runs at once all the same
    // (`first_event: now`, the default); only what follows it waits for the window.
    let (d, base) = daemon(&zone, &webhook_jobs(&zone, "1m", "")).await;
    let client = reqwest::Client::new();
    let body = payload(
        "ROUTER.HEALTH.CHECKS",
        &router_id(&zone, "r-930-VM"),
        "dnsmasq: service not running",
    );
    let sent = Instant::now();
    let answer = deliver(
        &client,
        &base,
        "ev-1",
        "ROUTER.HEALTH.CHECKS",
        &body,
        Some(sign(SECRET, body.as_bytes())),
    )
    .await;
    assert_eq!(answer.0, 200, "{answer:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "answered fast: {:?}",
        sent.elapsed()
    );
    assert_eq!(answer.1, "accepted: 1 queued, 0 seen before\n");
    until("dnsmasq fixed", 30, || dnsmasq(&zone) == "active").await;
    // Scheduled hourly, debounced by a minute: it is the event that ran it, at once.
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
    until("the run recorded", 10, || {
        state::load(&zone.dir.path().join("state"))
            .ok()
            .and_then(|s| s.jobs.get("dns").and_then(|j| j.last_run_id.clone()))
            .is_some()
    })
    .await;
    // The same delivery again (CloudStack retries, or an operator redelivers): 200, no run.
    let again = deliver(
        &client,
        &base,
        "ev-1",
        "ROUTER.HEALTH.CHECKS",
        &body,
        Some(sign(SECRET, body.as_bytes())),
    )
    .await;
    assert_eq!(
        again,
        (200, "accepted: 0 queued, 1 seen before\n".to_string())
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = scrape(&base).await;
    let metrics = d.stop().await;
    assert_eq!(fixes(&zone), 1, "one fix");
    let st = state::load(&zone.dir.path().join("state")).unwrap();
    assert_eq!(st.jobs["dns"].targets["r-930-VM"].fixes.len(), 1);
    assert!(
        st.events.seen.contains_key("ev-1"),
        "the id is kept in the state"
    );
    let _ = metrics;
    let s = |name: &str, labels: &[(&str, &str)]| sample(&m, name, labels);
    assert_eq!(
        s("remedy_events_received_total", &[("source", "cloudstack")]),
        Some(2.0)
    );
    assert_eq!(
        s(
            "remedy_events_deduplicated_total",
            &[("source", "cloudstack"), ("reason", "replay")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s("remedy_job_event_runs_total", &[("job", "dns")]),
        Some(1.0)
    );
    assert_eq!(s("remedy_job_fixes_total", &[("job", "dns")]), Some(1.0));
    let count = |stage: &str| {
        m.samples
            .iter()
            .find(|x| {
                x.metric == "remedy_event_latency_seconds"
                    && x.labels.get("stage") == Some(stage)
                    && x.labels.get("job") == Some("dns")
            })
            .map(|x| match &x.value {
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                _ => f64::NAN,
            })
    };
    assert_eq!(count("detection"), Some(1.0));
    assert_eq!(count("fixed"), Some(1.0));
    zone.audit_verifies();
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_deliveries_are_counted_and_run_nothing() {
    let zone = ApiZone::start("dnsmasq-dead", Faults::default()).await;
    let (d, base) = daemon(&zone, &webhook_jobs(&zone, "1s", "")).await;
    let client = reqwest::Client::new();
    let body = payload(
        "ROUTER.HEALTH.CHECKS",
        &router_id(&zone, "r-930-VM"),
        "dnsmasq down",
    );
    let kind = "ROUTER.HEALTH.CHECKS";
    let bad = deliver(
        &client,
        &base,
        "ev-a",
        kind,
        &body,
        Some(sign("another secret", body.as_bytes())),
    )
    .await;
    assert_eq!(bad.0, 401, "{bad:?}");
    assert!(bad.1.contains("X-CS-Signature does not match"), "{bad:?}");
    let unsigned = deliver(&client, &base, "ev-b", kind, &body, None).await;
    assert_eq!(unsigned.0, 401, "{unsigned:?}");
    let vm = payload("VM.START", "vm-1", "started");
    let unknown = deliver(
        &client,
        &base,
        "ev-c",
        "VM.START",
        &vm,
        Some(sign(SECRET, vm.as_bytes())),
    )
    .await;
    assert_eq!(
        unknown,
        (
            400,
            "no rule takes the event type \"VM.START\"\n".to_string()
        )
    );
    let junk = "{not json";
    let malformed = deliver(
        &client,
        &base,
        "ev-d",
        kind,
        junk,
        Some(sign(SECRET, junk.as_bytes())),
    )
    .await;
    assert_eq!(malformed.0, 400, "{malformed:?}");
    let huge = format!(
        "{{\"event\":\"{kind}\",\"description\":\"{}\"}}",
        "x".repeat(300 * 1024)
    );
    let large = deliver(
        &client,
        &base,
        "ev-e",
        kind,
        &huge,
        Some(sign(SECRET, huge.as_bytes())),
    )
    .await;
    assert_eq!(large.0, 413, "{large:?}");
    // A GET, and a path with no receiver.
    let get = client
        .get(format!("{base}/hooks/cloudstack"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    let none = client
        .post(format!("{base}/hooks/alertmanager"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 404, "no Alertmanager receiver configured");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = scrape(&base).await;
    d.stop().await;
    assert_eq!(fixes(&zone), 0, "nothing ran");
    assert_eq!(dnsmasq(&zone), "failed", "still broken");
    let rejected = |reason: &str| {
        sample(
            &m,
            "remedy_events_rejected_total",
            &[("source", "cloudstack"), ("reason", reason)],
        )
    };
    assert_eq!(rejected("bad-signature"), Some(1.0));
    assert_eq!(rejected("unsigned"), Some(1.0));
    assert_eq!(rejected("unknown-event"), Some(1.0));
    assert_eq!(rejected("malformed"), Some(1.0));
    assert_eq!(rejected("too-large"), Some(1.0));
    assert_eq!(
        sample(
            &m,
            "remedy_events_received_total",
            &[("source", "cloudstack")]
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(&m, "remedy_job_event_runs_total", &[("job", "dns")]),
        Some(0.0)
    );
    let st = state::load(&zone.dir.path().join("state")).unwrap();
    assert!(
        st.events.seen.is_empty(),
        "refused deliveries are not remembered: {:?}",
        st.events
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_storm_of_500_deliveries_makes_one_fix_and_one_notification() {
    let zone = ApiZone::start("dnsmasq-dead", Faults::default()).await;
    let (hook, got) = receiver().await;
    let notify =
        format!("    notify: {{ webhook: \"{hook}\", on: [fix, failure, circuit-open] }}\n");
    let (d, base) = daemon(&zone, &webhook_jobs(&zone, "2s", &notify)).await;
    let client = reqwest::Client::new();
    let router = router_id(&zone, "r-930-VM");
    let start = Instant::now();
    let mut statuses = std::collections::BTreeMap::new();
    for n in 0..500 {
        // Distinct events (ids), all about the same router, over ~10 s.
        let body = payload(
            "ROUTER.HEALTH.CHECKS",
            &router,
            &format!("dnsmasq check {n} failed"),
        );
        let (status, _) = deliver(
            &client,
            &base,
            &format!("storm-{n}"),
            "ROUTER.HEALTH.CHECKS",
            &body,
            Some(sign(SECRET, body.as_bytes())),
        )
        .await;
        *statuses.entry(status).or_insert(0) += 1;
        let due = start + Duration::from_millis(20 * (n + 1));
        tokio::time::sleep(due.saturating_duration_since(Instant::now())).await;
    }
    assert_eq!(statuses.get(&200), Some(&500), "{statuses:?}");
    let storm = start.elapsed();
    until("dnsmasq fixed", 30, || dnsmasq(&zone) == "active").await;
    // Let the follow-up runs end.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let m = scrape(&base).await;
    d.stop().await;
    assert_eq!(fixes(&zone), 1, "exactly one fix");
    let notes = got.lock().unwrap().clone();
    let fix_notes: Vec<_> = notes.iter().filter(|n| n["event"] == "fix").collect();
    assert_eq!(fix_notes.len(), 1, "one notification: {notes:?}");
    assert_eq!(notes.len(), 1, "{notes:?}");
    let runs = sample(&m, "remedy_job_event_runs_total", &[("job", "dns")]).unwrap();
    // At most one run per 2 s window of the storm, plus the follow-up.
    let bound = (storm.as_secs_f64() / 2.0).ceil() + 1.0;
    assert!(
        runs >= 1.0 && runs <= bound,
        "{runs} runs for a {storm:?} storm (bound {bound})"
    );
    let debounced = sample(
        &m,
        "remedy_events_deduplicated_total",
        &[("source", "cloudstack"), ("reason", "debounced")],
    )
    .unwrap();
    assert_eq!(
        debounced + runs,
        500.0,
        "every event either ran or joined a run"
    );
    zone.audit_verifies();
}

/// A fake CloudStack API on loopback that answers `listEvents` with `events` in the real
/// envelope, and every other list with nothing; returns its endpoint and the commands asked.
async fn fake_api(events: Arc<Mutex<Vec<serde_json::Value>>>) -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/client/api", listener.local_addr().unwrap());
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (events, seen) = (events.clone(), seen.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !String::from_utf8_lossy(&buf).contains("\r\n\r\n") {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let line = head.lines().next().unwrap_or("").to_string();
                let command = line
                    .split(['?', '&', ' '])
                    .find_map(|kv| kv.strip_prefix("command="))
                    .unwrap_or("")
                    .to_string();
                seen.lock().unwrap().push(line);
                let body = if command == "listEvents" {
                    let list = events.lock().unwrap().clone();
                    serde_json::json!({"listeventsresponse": {"count": list.len(), "event": list}})
                } else {
                    serde_json::json!({ format!("{}response", command.to_lowercase()): {} })
                }
                .to_string();
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (url, asked)
}

#[tokio::test(flavor = "multi_thread")]
async fn polling_list_events_finds_the_event_and_fixes() {
    // The simulator does not serve listEvents yet: the poller reads a fake API in the real
    // envelope, and the fix runs against the simulated zone.
    let zone = ApiZone::start("dnsmasq-dead", Faults::default()).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let (endpoint, asked) = fake_api(events.clone()).await;
    std::fs::write(zone.dir.path().join("fake-key"), "fake-secret").unwrap();
    remedy_tests::write(
        zone.dir.path(),
        "events-api.yml",
        &format!(
            "all:\n  vars:\n    remedy_cloudstack:\n      endpoint: {endpoint}\n      api_key: fake-api-key\n      secret_key: {{ file: {} }}\n",
            zone.dir.path().join("fake-key").display()
        ),
    );
    let inv = zone.inventory.file_name().unwrap().to_str().unwrap();
    let text = format!(
        "triggers:\n  debounce: 1s\n  poll:\n    - {{ name: zone1, inventory: events-api.yml, every: 1s, alerts: false }}\n\
         jobs:\n  - name: dns\n    playbook: {}\n    inventory: {inv}\n    cooldown: 10m\n    on:\n      - match: {{ source: cloudstack, kind: event, type: ROUTER.HEALTH.CHECKS, level: ERROR, resource_name: \"^r-\\\\d+-VM$\" }}\n        limit: \"{{{{ event.resource_name }}}}\"\n        params: {{ routers: \"{{{{ event.resource_name }}}}\" }}\n",
        playbook("restart-dnsmasq")
    );
    // No webhook receiver: no listener needed, but serve /metrics anyway.
    let (d, base) = daemon(&zone, &text).await;
    until("the first poll", 10, || {
        asked
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("command=listEvents"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        fixes(&zone),
        0,
        "the history before the cursor is not acted on"
    );
    let created = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S+0000")
        .to_string();
    let added = Instant::now();
    events.lock().unwrap().push(serde_json::json!({
        "id": "poll-ev-1", "type": "ROUTER.HEALTH.CHECKS", "level": "ERROR", "state": "Completed",
        "description": "health check dns_check failed", "account": "admin", "domain": "ROOT",
        "created": created, "resourcetype": "DomainRouter", "resourcename": "r-930-VM", "username": "system"
    }));
    until("dnsmasq fixed", 30, || dnsmasq(&zone) == "active").await;
    assert!(
        added.elapsed() < Duration::from_secs(15),
        "{:?}",
        added.elapsed()
    );
    // Polled again and again: the same event runs nothing more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = scrape(&base).await;
    d.stop().await;
    assert_eq!(fixes(&zone), 1);
    assert_eq!(
        sample(&m, "remedy_job_event_runs_total", &[("job", "dns")]),
        Some(1.0)
    );
    let st = state::load(&zone.dir.path().join("state")).unwrap();
    let cursor = &st.events.cursors["zone1/events"];
    assert_eq!(cursor.ids, ["poll-ev-1"], "{cursor:?}");
    let later = asked.lock().unwrap().clone();
    assert!(
        later.iter().any(|l| l.contains("startdate=")),
        "the cursor is asked for: {later:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alertmanager_alert_fixes_and_a_wrong_token_is_refused() {
    let zone = ApiZone::start("dnsmasq-dead", Faults::default()).await;
    std::fs::write(zone.dir.path().join("am-token"), "am-token-of-the-test").unwrap();
    let inv = zone.inventory.file_name().unwrap().to_str().unwrap();
    let text = format!(
        "triggers:\n  debounce: 1s\n  alertmanager: {{ token: {{ file: am-token }} }}\n\
         jobs:\n  - name: dns\n    playbook: {}\n    inventory: {inv}\n    cooldown: 10m\n    on:\n      - match: {{ source: alertmanager, status: firing, labels: {{ alertname: ^DnsmasqDown$ }} }}\n        limit: \"{{{{ event.labels.router }}}}\"\n        params: {{ routers: \"{{{{ event.labels.router }}}}\" }}\n",
        playbook("restart-dnsmasq")
    );
    let (d, base) = daemon(&zone, &text).await;
    let body = serde_json::json!({
        "version": "4", "groupKey": "{}:{alertname=\"DnsmasqDown\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "remedy", "groupLabels": {"alertname": "DnsmasqDown"},
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "DnsmasqDown", "router": "r-930-VM", "severity": "critical"},
            "annotations": {"summary": "dnsmasq is down on r-930-VM"},
            "startsAt": "2026-12-06T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": "f00d"
        }]
    })
    .to_string();
    let client = reqwest::Client::new();
    let url = format!("{base}/hooks/alertmanager");
    let wrong = client
        .post(&url)
        .bearer_auth("nope")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = client
        .post(&url)
        .bearer_auth("am-token-of-the-test")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    until("dnsmasq fixed", 30, || dnsmasq(&zone) == "active").await;
    let m = scrape(&base).await;
    d.stop().await;
    assert_eq!(fixes(&zone), 1);
    assert_eq!(
        sample(
            &m,
            "remedy_events_rejected_total",
            &[("source", "alertmanager"), ("reason", "unauthorized")]
        ),
        Some(1.0)
    );
    zone.audit_verifies();
}

/// The state of `service` on the machine `name`, as the zone has it.
fn service_on(zone: &ApiZone, name: &str, service: &str) -> String {
    zone.world()["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["guest"]["services"][service]["state"].as_str())
        .unwrap_or("")
        .to_string()
}

/// web-vpc's PRIMARY router now (its public link is up).
fn primary_router(zone: &ApiZone) -> String {
    remedy_tests::zone::router_states(&zone.world())
        .into_iter()
        .find(|(name, eth1_up, _, _)| *eth1_up && (name == "r-930-VM" || name == "r-931-VM"))
        .map(|(name, ..)| name)
        .expect("web-vpc has a PRIMARY router")
}

/// Registers a 4.20 webhook in the zone (`createWebhook`, Global scope, signed with SECRET)
/// that delivers to the daemon at `base`.
async fn create_webhook(zone: &ApiZone, base: &str) {
    use remedy::transport::{Access, Action};
    let url = format!("{base}/hooks/cloudstack");
    let create = Action::api(
        "createWebhook",
        [
            ("name", "remedy"),
            ("payloadurl", url.as_str()),
            ("secretkey", SECRET),
            ("scope", "Global"),
            ("state", "Enabled"),
        ],
    );
    zone.api
        .run(&create, Access::Mutating, Duration::from_secs(10))
        .await
        .expect("createWebhook");
}

/// The zone's own webhook deliveries so far (`listWebhookDeliveries`).
async fn deliveries(zone: &ApiZone) -> Vec<serde_json::Value> {
    use remedy::transport::{Access, Action, ActionResult};
    let list = Action::api("listWebhookDeliveries", [("listall", "true")]);
    match zone
        .api
        .run(&list, Access::ReadOnly, Duration::from_secs(10))
        .await
    {
        Ok(ActionResult::Api(v)) => v["webhookdelivery"].as_array().cloned().unwrap_or_default(),
        other => panic!("listWebhookDeliveries: {other:?}"),
    }
}

/// The zone itself raises the event and delivers it: dnsmasq dies on the PRIMARY router, the
/// zone records a ROUTER.HEALTH.CHECKS ERROR event and POSTs it, signed, to the webhook the
/// test registered with `createWebhook`; the daemon verifies it and fixes the router at once
/// (its schedule is hourly).
#[tokio::test(flavor = "multi_thread")]
async fn the_zone_delivers_its_own_signed_webhook_and_the_daemon_fixes() {
    let zone = ApiZone::start("healthy", Faults::default()).await;
    let (d, base) = daemon(&zone, &webhook_jobs(&zone, "1s", "")).await;
    create_webhook(&zone, &base).await;
    let router = primary_router(&zone);
    let broke = Instant::now();
    let said = zone
        .sim()
        .zone_handle()
        .lock()
        .unwrap()
        .inject("dnsmasq-dead", &router, jiff::Timestamp::now())
        .unwrap();
    assert!(said.contains("dnsmasq failed"), "{said}");
    until("the daemon fixes dnsmasq", 30, || {
        service_on(&zone, &router, "dnsmasq") == "active"
    })
    .await;
    let took = broke.elapsed();
    assert!(took < Duration::from_secs(20), "fixed after {took:?}");
    assert_eq!(fixes(&zone), 1);
    // The delivery that did it: signed by the zone, answered 200.
    let ok: Vec<serde_json::Value> = deliveries(&zone)
        .await
        .into_iter()
        .filter(|d| d["success"] == true && d["eventtype"] == "ROUTER.HEALTH.CHECKS")
        .collect();
    assert!(!ok.is_empty(), "{:?}", deliveries(&zone).await);
    let m = scrape(&base).await;
    assert!(
        sample(
            &m,
            "remedy_events_received_total",
            &[("source", "cloudstack")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        sample(
            &m,
            "remedy_events_rejected_total",
            &[("source", "cloudstack"), ("reason", "bad-signature")]
        ),
        None,
        "the zone's signature verifies"
    );
    d.stop().await;
}

/// The zone's deliveries are dropped (never sent): the poller, reading `listEvents` every
/// second from its cursor, finds the event and the daemon fixes all the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_delivery_is_caught_up_by_the_poller() {
    let zone = ApiZone::start("healthy", Faults::default()).await;
    let inv = zone
        .inventory
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let poll =
        format!("  poll:\n    - {{ name: zone, inventory: {inv}, every: 1s, alerts: false }}\n");
    let jobs = webhook_jobs(&zone, "1s", "").replacen("jobs:\n", &format!("{poll}jobs:\n"), 1);
    let (d, base) = daemon(&zone, &jobs).await;
    create_webhook(&zone, &base).await;
    // Every delivery from now on is dropped.
    zone.sim().set_faults(Faults {
        job_ms: Some(100),
        webhook_drop_next: 1000,
        ..Faults::default()
    });
    let sent_before = deliveries(&zone).await.len();
    let router = primary_router(&zone);
    zone.sim()
        .zone_handle()
        .lock()
        .unwrap()
        .inject("dnsmasq-dead", &router, jiff::Timestamp::now())
        .unwrap();
    until(
        "the poller finds the event and the daemon fixes",
        30,
        || service_on(&zone, &router, "dnsmasq") == "active",
    )
    .await;
    assert_eq!(fixes(&zone), 1);
    assert_eq!(
        deliveries(&zone).await.len(),
        sent_before,
        "no delivery reached the daemon"
    );
    d.stop().await;
}
