//! Webhooks over HTTP: the simulator's deliveries reach a receiver on loopback, signed like
//! CloudStack 4.20, retried until HTTP 200, recorded; the delivery faults; executeWebhookDelivery;
//! `POST /sim/events` and `/sim/break`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use cloudstack_sim::scenario::Scenario;
use cloudstack_sim::server::{Sim, SimConfig};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

/// One request the receiver got: its headers (lower-case names) and body.
#[derive(Debug, Clone)]
struct Got {
    headers: BTreeMap<String, String>,
    body: String,
}

/// A webhook receiver on 127.0.0.1: records every request, answers with the next scripted
/// status (200 when the script is empty) and body `ok`, after `hold` if set.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    hold: Arc<Mutex<Option<Duration>>>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let r = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let serving = r.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let r = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let r = r.clone();
                            async move {
                                let headers = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| {
                                        (
                                            k.as_str().to_string(),
                                            v.to_str().unwrap_or("").to_string(),
                                        )
                                    })
                                    .collect();
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                r.got.lock().unwrap().push(Got {
                                    headers,
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                });
                                let hold = *r.hold.lock().unwrap();
                                if let Some(d) = hold {
                                    tokio::time::sleep(d).await;
                                }
                                let status = r.script.lock().unwrap().pop_front().unwrap_or(200);
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::from_static(b"ok")))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (r, url)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests came (or panics after 10 s).
    async fn wait_for(&self, n: usize) -> Vec<Got> {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < end,
                "only {} of {n} deliveries came: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn sim() -> Sim {
    Sim::start(SimConfig {
        scenario: Scenario::builtin("healthy").unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        api_key: None,
        secret_key: None,
    })
    .await
    .unwrap()
}

/// A signed API call; the JSON reply and its status.
async fn api(sim: &Sim, command: &str, args: &[(&str, &str)]) -> (u16, Value) {
    let mut params: Vec<(String, String)> = vec![
        ("command".into(), command.into()),
        ("apiKey".into(), sim.api_key().into()),
        ("response".into(), "json".into()),
    ];
    params.extend(args.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(sim.secret_key().as_bytes()).unwrap();
    mac.update(cloudstack_sim::signature::canonical(&params).as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    params.push(("signature".into(), sig));
    let reply = reqwest::Client::new()
        .post(sim.endpoint())
        .form(&params)
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap())
}

/// An admin endpoint call with a JSON body.
async fn admin(sim: &Sim, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let reply = reqwest::Client::new()
        .request(method, format!("http://{}/sim/{path}", sim.addr()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap())
}

fn expected_signature(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

async fn create(sim: &Sim, url: &str, secret: Option<&str>) -> String {
    let mut args = vec![("name", "remedy"), ("payloadurl", url), ("scope", "Global")];
    if let Some(s) = secret {
        args.push(("secretkey", s));
    }
    let (status, body) = api(sim, "createWebhook", &args).await;
    assert_eq!(status, 200, "{body}");
    body["createwebhookresponse"]["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn deliveries(sim: &Sim, webhook: &str) -> Vec<Value> {
    let (_, body) = api(sim, "listWebhookDeliveries", &[("webhookid", webhook)]).await;
    body["listwebhookdeliveriesresponse"]["webhookdelivery"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The deliveries other than the webhook's own WEBHOOK.CREATE.
fn about(got: &[Got], kind: &str) -> Vec<Got> {
    got.iter()
        .filter(|g| g.headers.get("x-cs-event").map(String::as_str) == Some(kind))
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_broken_vpc_is_delivered_signed_to_a_loopback_receiver() {
    let sim = sim().await;
    let (rx, url) = Receiver::start().await;
    let hook = create(&sim, &url, Some("topsecret")).await;
    let (status, done) = admin(
        &sim,
        reqwest::Method::POST,
        "break",
        json!({"fault": "vr-backup-loop", "target": "web-vpc"}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    rx.wait_for(2).await;
    let got = about(&rx.got(), "ROUTER.HEALTH.CHECKS");
    assert_eq!(got.len(), 1, "{got:?}");
    let g = &got[0];
    assert_eq!(
        g.headers["x-cs-signature"],
        expected_signature("topsecret", &g.body)
    );
    assert!(
        g.headers["user-agent"].starts_with("CS-Hookshot/"),
        "{:?}",
        g.headers
    );
    assert_eq!(g.headers["content-type"], "application/json; charset=UTF-8");
    let payload: Value = serde_json::from_str(&g.body).unwrap();
    assert_eq!(
        payload["description"],
        "Redundant virtual router r-930-VM just switch from PRIMARY to BACKUP; no router of VPC web-vpc is PRIMARY"
    );
    let (_, events) = api(
        &sim,
        "listEvents",
        &[("listall", "true"), ("type", "ROUTER.HEALTH.CHECKS")],
    )
    .await;
    let event = &events["listeventsresponse"]["event"][0];
    assert_eq!(g.headers["x-cs-event-id"], event["id"].as_str().unwrap());
    assert_eq!(event["resourcename"], "r-930-VM");
    let (_, alerts) = api(
        &sim,
        "listAlerts",
        &[("name", "ALERT.SERVICE.DOMAINROUTER")],
    )
    .await;
    assert_eq!(
        alerts["listalertsresponse"]["alert"][0]["description"],
        "Redundant virtual router r-930-VM just switch from PRIMARY to BACKUP"
    );
    // recorded, newest first
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = deliveries(&sim, &hook).await;
    assert_eq!(d[0]["eventtype"], "ROUTER.HEALTH.CHECKS");
    assert_eq!(d[0]["success"], true);
    assert_eq!(d[0]["response"], "ok");
    assert!(d[0]["headers"]
        .as_str()
        .unwrap()
        .contains("X-CS-Signature: "));
    // a webhook to anywhere but loopback is refused
    let (status, body) = api(
        &sim,
        "createWebhook",
        &[("name", "out"), ("payloadurl", "http://192.0.2.10/hook")],
    )
    .await;
    assert_eq!(status, 431);
    assert_eq!(
        body["createwebhookresponse"]["errortext"],
        "Invalid payload URL http://192.0.2.10/hook: the simulated zone delivers to loopback addresses only (127.0.0.0/8, localhost, [::1])"
    );
}

#[tokio::test]
async fn a_delivery_is_tried_until_200_and_a_failed_one_is_recorded() {
    let sim = sim().await;
    let (rx, url) = Receiver::start().await;
    let hook = create(&sim, &url, None).await;
    rx.wait_for(1).await; // its own WEBHOOK.CREATE
    rx.script.lock().unwrap().extend([500, 503, 200]);
    let event = json!({"type": "ROUTER.HEALTH.CHECKS", "level": "ERROR", "resource": "r-931-VM", "description": "x"});
    let (status, ids) = admin(&sim, reqwest::Method::POST, "events", event.clone()).await;
    assert_eq!(status, 200, "{ids}");
    let got = rx.wait_for(4).await;
    assert_eq!(
        got[1].headers["x-cs-event-id"],
        ids["ids"][0].as_str().unwrap()
    );
    assert!(
        !got[1].headers.contains_key("x-cs-signature"),
        "no secret: unsigned"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = deliveries(&sim, &hook).await;
    assert_eq!(
        (d[0]["eventtype"].clone(), d[0]["success"].clone()),
        (json!("ROUTER.HEALTH.CHECKS"), json!(true))
    );
    assert_eq!(rx.got().len(), 4, "three tries, the third answered 200");

    rx.script.lock().unwrap().extend([500, 500, 500]);
    admin(&sim, reqwest::Method::POST, "events", event).await;
    rx.wait_for(7).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.got().len(), 7, "no fourth try");
    let d = deliveries(&sim, &hook).await;
    assert_eq!(d[0]["success"], false);
    assert_eq!(d[0]["response"], "ok", "the last reply's body");

    // redelivery of the failed one: a new record, the same event
    let (status, body) = api(
        &sim,
        "executeWebhookDelivery",
        &[("id", d[0]["id"].as_str().unwrap())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let again = &body["executewebhookdeliveryresponse"]["webhookdelivery"];
    assert_eq!(again["eventid"], d[0]["eventid"]);
    assert_eq!(again["success"], true);
    assert_eq!(deliveries(&sim, &hook).await.len(), d.len() + 1);
    // a test delivery: TEST.WEBHOOK, the default payload, not recorded
    let (_, body) = api(&sim, "executeWebhookDelivery", &[("webhookid", &hook)]).await;
    let test = &body["executewebhookdeliveryresponse"]["webhookdelivery"];
    assert_eq!(test["eventtype"], "TEST.WEBHOOK");
    assert_eq!(test["payload"], "{ \"CloudStack\": \"works!\" }");
    assert_eq!(deliveries(&sim, &hook).await.len(), d.len() + 1);
    let last = rx.got().pop().unwrap();
    assert_eq!(
        last.headers["content-type"],
        "application/json; charset=UTF-8"
    );
}

#[tokio::test]
async fn delivery_faults_drop_delay_sign_badly_duplicate_and_time_out() {
    let sim = sim().await;
    let (rx, url) = Receiver::start().await;
    let hook = create(&sim, &url, Some("k")).await;
    rx.wait_for(1).await;
    let (status, f) = admin(
        &sim,
        reqwest::Method::PATCH,
        "faults",
        json!({"webhook_drop_next": 1, "webhook_bad_signature_next": 1, "webhook_duplicate_next": 1}),
    )
    .await;
    assert_eq!(status, 200, "{f}");
    let one = json!({"type": "VM.START", "resource": "kvm01"});
    let (_, dropped) = admin(&sim, reqwest::Method::POST, "events", one.clone()).await;
    let (_, sent) = admin(&sim, reqwest::Method::POST, "events", one.clone()).await;
    let got = rx.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_now = rx.got();
    assert_eq!(
        got_now.len(),
        3,
        "the first dropped, the second sent twice: {got:?}"
    );
    let id = sent["ids"][0].as_str().unwrap();
    assert_eq!(got_now[1].headers["x-cs-event-id"], id);
    assert_eq!(
        got_now[2].headers["x-cs-event-id"], id,
        "the same event id twice"
    );
    assert_ne!(
        got_now[1].headers["x-cs-signature"],
        expected_signature("k", &got_now[1].body)
    );
    assert_eq!(
        (&got_now[2].headers["x-cs-signature"], &got_now[2].body),
        (&got_now[1].headers["x-cs-signature"], &got_now[1].body),
        "a replay is the same request"
    );
    // a replay alone is signed right
    admin(
        &sim,
        reqwest::Method::PATCH,
        "faults",
        json!({"webhook_duplicate_next": 1}),
    )
    .await;
    admin(&sim, reqwest::Method::POST, "events", one.clone()).await;
    let got_now = rx.wait_for(5).await;
    assert_eq!(
        got_now[3].headers["x-cs-event-id"],
        got_now[4].headers["x-cs-event-id"]
    );
    for g in &got_now[3..5] {
        assert_eq!(
            g.headers["x-cs-signature"],
            expected_signature("k", &g.body)
        );
    }
    let d = deliveries(&sim, &hook).await;
    assert!(
        d.iter().all(|x| x["eventid"] != dropped["ids"][0]),
        "a dropped delivery leaves no record"
    );
    let (_, f) = admin(&sim, reqwest::Method::GET, "faults", json!({})).await;
    assert_eq!(
        (
            f["webhook_drop_next"].clone(),
            f["webhook_duplicate_next"].clone()
        ),
        (json!(0), json!(0))
    );

    // a hanging receiver: each try cut at the timeout, the failure recorded
    *rx.hold.lock().unwrap() = Some(Duration::from_secs(3));
    admin(
        &sim,
        reqwest::Method::PATCH,
        "faults",
        json!({"webhook_timeout_ms": 200, "webhook_delay_ms": 300}),
    )
    .await;
    let started = Instant::now();
    admin(&sim, reqwest::Method::POST, "events", one).await;
    let end = Instant::now() + Duration::from_secs(5);
    let failed = loop {
        let d = deliveries(&sim, &hook).await;
        if d.len() > 5 {
            break d[0].clone();
        }
        assert!(Instant::now() < end, "no record of the timed-out delivery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "300 ms delay + 3 x 200 ms"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(failed["success"], false);
    assert!(
        failed["response"]
            .as_str()
            .unwrap()
            .starts_with("Failed due to : "),
        "{failed}"
    );
}

#[tokio::test]
async fn a_storm_of_500_events_is_delivered_in_full() {
    let sim = sim().await;
    let (rx, url) = Receiver::start().await;
    create(&sim, &url, Some("k")).await;
    rx.wait_for(1).await;
    let (status, body) = admin(
        &sim,
        reqwest::Method::POST,
        "events",
        json!({"type": "ROUTER.HEALTH.CHECKS", "level": "ERROR", "resource": "r-930-VM", "count": 500}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["ids"].as_array().unwrap().len(), 500);
    let got = rx.wait_for(501).await;
    let ids: std::collections::BTreeSet<&str> = got[1..]
        .iter()
        .map(|g| g.headers["x-cs-event-id"].as_str())
        .collect();
    assert_eq!(ids.len(), 500, "every event once");
    let (_, events) = api(
        &sim,
        "listEvents",
        &[
            ("listall", "true"),
            ("type", "ROUTER.HEALTH.CHECKS"),
            ("pagesize", "500"),
            ("page", "1"),
        ],
    )
    .await;
    assert_eq!(events["listeventsresponse"]["count"], 500);
    let (status, body) = admin(
        &sim,
        reqwest::Method::POST,
        "events",
        json!({"type": "X", "resource": "nowhere"}),
    )
    .await;
    assert_eq!(
        (status, body["simresponse"]["errortext"].clone()),
        (400, json!("no machine, VPC or tier named nowhere"))
    );
}
