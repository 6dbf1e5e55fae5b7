//! The simulator's HTTP front over a real socket: signed requests reach the zone, bad ones get
//! the management server's 401s, and the transport faults (503, dropped connections, latency,
//! drop after apply) behave as documented in `server.rs`.
//!
//! The client here is deliberately dumb — HTTP/1.1 written by hand on a `TcpStream`, one request
//! per connection — and signs with its own few lines (a third implementation of the algorithm,
//! next to remedy's client and the simulator's check), so the tests see exactly the bytes on
//! the wire.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use cloudstack_sim::faults::Faults;
use cloudstack_sim::scenario::Scenario;
use cloudstack_sim::server::{Sim, SimConfig};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha1::Sha1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long anything may take before a test gives up.
const T: Duration = Duration::from_secs(10);

// --- a test-only client ----------------------------------------------------------------------

/// `URLEncoder`-style escaping for the string to sign: keep `A-Z a-z 0-9 . - * _`, space as
/// `%20`, every other byte `%XX`.
fn sign_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Escaping for the wire, different on purpose: space as `+`, `~` literal.
fn wire_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn signature(params: &[(String, String)], secret: &str) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let text = sorted
        .iter()
        .map(|(k, v)| format!("{k}={}", sign_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
        .to_lowercase();
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The full parameter list of a signed call: `command`, `apiKey`, `response`, the given
/// parameters, and `signature` last.
fn signed(
    command: &str,
    params: &[(&str, &str)],
    key: &str,
    secret: &str,
) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = vec![
        ("command".into(), command.into()),
        ("apiKey".into(), key.into()),
        ("response".into(), "json".into()),
    ];
    all.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let sig = signature(&all, secret);
    all.push(("signature".into(), sig));
    all
}

fn encode(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", wire_escape(k), wire_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `expires` `minutes` from now, in the `+0000` form.
fn expires_in(minutes: i64) -> String {
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(minutes);
    at.strftime("%Y-%m-%dT%H:%M:%S+0000").to_string()
}

#[derive(Debug)]
struct HttpReply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl HttpReply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Sends one request on a fresh connection and reads until the server closes it. `None` when
/// the connection ended without a single byte of reply.
async fn exchange(sim: &Sim, head: &str, body: &str) -> Option<HttpReply> {
    let mut stream = TcpStream::connect(sim.addr()).await.unwrap();
    let request = format!(
        "{head}\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        sim.addr(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers or closes within 10 s");
    if raw.is_empty() {
        // a clean close or a reset: either way, no reply
        let _ = read;
        return None;
    }
    let text = String::from_utf8(raw).expect("a UTF-8 reply");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete reply");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(HttpReply {
        status: status.parse().unwrap(),
        headers,
        body: body.to_string(),
    })
}

async fn get(sim: &Sim, params: &[(String, String)]) -> Option<HttpReply> {
    get_raw(sim, &encode(params)).await
}

async fn get_raw(sim: &Sim, query: &str) -> Option<HttpReply> {
    exchange(sim, &format!("GET /client/api?{query} HTTP/1.1"), "").await
}

async fn post(sim: &Sim, params: &[(String, String)]) -> Option<HttpReply> {
    let body = encode(params);
    exchange(
        sim,
        "POST /client/api HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
        &body,
    )
    .await
}

async fn start() -> Sim {
    Sim::start(SimConfig {
        scenario: Scenario::builtin("healthy").unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        api_key: None,
        secret_key: None,
    })
    .await
    .unwrap()
}

fn call(sim: &Sim, command: &str, params: &[(&str, &str)]) -> Vec<(String, String)> {
    signed(command, params, sim.api_key(), sim.secret_key())
}

fn recorded(sim: &Sim) -> Vec<(String, String, Option<u16>)> {
    sim.requests()
        .into_iter()
        .map(|r| (r.method, r.command, r.status))
        .collect()
}

fn rec(method: &str, command: &str, status: Option<u16>) -> (String, String, Option<u16>) {
    (method.into(), command.into(), status)
}

fn setting(sim: &Sim, name: &str) -> Option<String> {
    sim.with_zone(|z| {
        z.world()
            .settings
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value.clone())
    })
}

fn assert_unauthorized(reply: &HttpReply, envelope: &str) {
    assert_eq!(reply.status, 401, "{}", reply.body);
    let text = "unable to verify user credentials and/or request signature";
    let body = reply.json();
    let inner = &body[envelope];
    assert_eq!(inner["errorcode"], 401, "{}", reply.body);
    assert_eq!(inner["errortext"], text, "{}", reply.body);
    assert_eq!(body.as_object().unwrap().len(), 1, "one envelope key");
    assert_eq!(reply.headers["x-description"], text);
    assert_eq!(
        reply.headers["content-type"],
        "application/json; charset=UTF-8"
    );
}

// --- the tests -------------------------------------------------------------------------------

#[test]
fn the_handle_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Sim>();
}

#[tokio::test]
async fn a_signed_request_reaches_the_zone() {
    let sim = start().await;
    assert_eq!(sim.endpoint(), format!("http://{}/client/api", sim.addr()));
    assert!(sim.api_key().starts_with("lab-"));
    assert!(sim.secret_key().len() >= 64);
    let reply = get(&sim, &call(&sim, "listZones", &[("available", "true")]))
        .await
        .expect("a reply");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.headers["content-type"],
        "application/json; charset=UTF-8"
    );
    assert!(reply.json()["listzonesresponse"]["count"].as_u64() >= Some(1));
    assert_eq!(recorded(&sim), vec![rec("GET", "listZones", Some(200))]);
}

#[tokio::test]
async fn the_given_credentials_are_used() {
    let sim = Sim::start(SimConfig {
        scenario: Scenario::builtin("healthy").unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        api_key: Some("my-key".into()),
        secret_key: Some("my-secret".into()),
    })
    .await
    .unwrap();
    assert_eq!((sim.api_key(), sim.secret_key()), ("my-key", "my-secret"));
    let reply = get(&sim, &signed("listZones", &[], "my-key", "my-secret"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn bad_credentials_get_401_under_the_commands_envelope() {
    let sim = start().await;
    let key = sim.api_key().to_string();
    let wrong_secret = signed("listZones", &[], &key, "not-the-secret");
    assert_unauthorized(
        &get(&sim, &wrong_secret).await.unwrap(),
        "listzonesresponse",
    );
    let wrong_key = signed("listZones", &[], "someone-else", sim.secret_key());
    assert_unauthorized(&get(&sim, &wrong_key).await.unwrap(), "listzonesresponse");
    let mut unsigned = call(&sim, "listZones", &[]);
    unsigned.pop();
    assert_unauthorized(&get(&sim, &unsigned).await.unwrap(), "listzonesresponse");
    let no_key: Vec<(String, String)> = call(&sim, "listZones", &[])
        .into_iter()
        .filter(|(k, _)| k != "apiKey")
        .collect();
    assert_unauthorized(&get(&sim, &no_key).await.unwrap(), "listzonesresponse");
    // a tampered value
    let mut tampered = call(&sim, "listZones", &[("name", "zone1")]);
    tampered[3].1 = "zone2".into();
    assert_unauthorized(&get(&sim, &tampered).await.unwrap(), "listzonesresponse");
    assert!(recorded(&sim)
        .iter()
        .all(|r| r == &rec("GET", "listZones", Some(401))));
}

#[tokio::test]
async fn signature_version_3_needs_a_future_expires() {
    let sim = start().await;
    let fresh = expires_in(10);
    let ok = call(
        &sim,
        "listZones",
        &[("signatureVersion", "3"), ("expires", &fresh)],
    );
    assert_eq!(get(&sim, &ok).await.unwrap().status, 200);
    let iso = (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(5)).to_string();
    let ok = call(
        &sim,
        "listZones",
        &[("signatureVersion", "3"), ("expires", &iso)],
    );
    assert_eq!(get(&sim, &ok).await.unwrap().status, 200, "{iso}");

    let stale = expires_in(-1);
    let expired = call(
        &sim,
        "listZones",
        &[("signatureVersion", "3"), ("expires", &stale)],
    );
    assert_unauthorized(&get(&sim, &expired).await.unwrap(), "listzonesresponse");
    let missing = call(&sim, "listZones", &[("signatureVersion", "3")]);
    assert_unauthorized(&get(&sim, &missing).await.unwrap(), "listzonesresponse");
    let garbage = call(
        &sim,
        "listZones",
        &[("signatureVersion", "3"), ("expires", "tomorrow")],
    );
    assert_unauthorized(&get(&sim, &garbage).await.unwrap(), "listzonesresponse");
    // without version 3 a past expires is just a signed parameter
    let v2 = call(&sim, "listZones", &[("expires", &stale)]);
    assert_eq!(get(&sim, &v2).await.unwrap().status, 200);
}

#[tokio::test]
async fn unknown_and_missing_commands() {
    let sim = start().await;
    let unknown = call(&sim, "deployVirtualMachine", &[]);
    let reply = get(&sim, &unknown).await.unwrap();
    assert_unauthorized(&reply, "errorresponse");

    let no_command: Vec<(String, String)> = call(&sim, "listZones", &[])
        .into_iter()
        .filter(|(k, _)| k != "command")
        .collect();
    let reply = get(&sim, &no_command).await.unwrap();
    assert_eq!(reply.status, 432, "{}", reply.body);
    assert_eq!(reply.json()["errorresponse"]["errorcode"], 432);

    // a malformed escape: nothing can be verified
    let reply = get_raw(&sim, "command=listZones&name=%zz").await.unwrap();
    assert_unauthorized(&reply, "errorresponse");
    assert_eq!(
        recorded(&sim),
        vec![
            rec("GET", "deployVirtualMachine", Some(401)),
            rec("GET", "", Some(432)),
            rec("GET", "", Some(401)),
        ]
    );
}

#[tokio::test]
async fn the_command_name_is_matched_ignoring_case() {
    let sim = start().await;
    let reply = get(&sim, &call(&sim, "LISTZONES", &[])).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn a_503_fault_answers_once_then_the_zone_is_reached() {
    let sim = start().await;
    sim.set_faults(Faults {
        http_5xx_next: 1,
        ..Faults::default()
    });
    let first = get(&sim, &call(&sim, "listZones", &[])).await.unwrap();
    assert_eq!(first.status, 503);
    assert_eq!(sim.faults().http_5xx_next, 0, "the counter counts down");
    let second = get(&sim, &call(&sim, "listZones", &[])).await.unwrap();
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(
        recorded(&sim),
        vec![
            rec("GET", "listZones", Some(503)),
            rec("GET", "listZones", Some(200)),
        ]
    );
}

#[tokio::test]
async fn a_drop_fault_closes_the_connection_without_a_reply() {
    let sim = start().await;
    sim.set_faults(Faults {
        drop_next: 1,
        ..Faults::default()
    });
    let dropped = get(&sim, &call(&sim, "listZones", &[])).await;
    assert!(dropped.is_none(), "expected no reply, got {dropped:?}");
    let next = get(&sim, &call(&sim, "listZones", &[])).await.unwrap();
    assert_eq!(next.status, 200);
    assert_eq!(
        recorded(&sim),
        vec![
            rec("GET", "listZones", None),
            rec("GET", "listZones", Some(200)),
        ]
    );
}

#[tokio::test]
async fn rates_of_one_always_fault() {
    let sim = start().await;
    sim.set_faults(Faults {
        http_5xx_rate: 1.0,
        ..Faults::default()
    });
    for _ in 0..3 {
        let reply = get(&sim, &call(&sim, "listZones", &[])).await.unwrap();
        assert_eq!(reply.status, 503);
    }
    sim.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    assert!(get(&sim, &call(&sim, "listZones", &[])).await.is_none());
}

#[tokio::test]
async fn latency_delays_the_reply() {
    let sim = start().await;
    sim.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let started = Instant::now();
    let reply = get(&sim, &call(&sim, "listZones", &[])).await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn drop_after_apply_changes_the_zone_but_sends_nothing() {
    let sim = start().await;
    sim.set_faults(Faults {
        drop_after_apply_next: 1,
        ..Faults::default()
    });
    // reads are not affected
    let list = call(
        &sim,
        "listConfigurations",
        &[("name", "network.gc.interval")],
    );
    assert_eq!(get(&sim, &list).await.unwrap().status, 200);
    let change = call(
        &sim,
        "updateConfiguration",
        &[("name", "network.gc.interval"), ("value", "900")],
    );
    assert!(post(&sim, &change).await.is_none(), "no reply");
    assert_eq!(setting(&sim, "network.gc.interval").as_deref(), Some("900"));
    assert_eq!(sim.faults().drop_after_apply_next, 0);
    assert_eq!(
        recorded(&sim),
        vec![
            rec("GET", "listConfigurations", Some(200)),
            rec("POST", "updateConfiguration", None),
        ]
    );
}

#[tokio::test]
async fn a_form_post_works_and_other_bodies_are_not_parameters() {
    let sim = start().await;
    let change = call(
        &sim,
        "updateConfiguration",
        &[("name", "network.gc.interval"), ("value", "700 s+1/2*x~")],
    );
    let reply = post(&sim, &change).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json()["updateconfigurationresponse"]["configuration"]["value"],
        "700 s+1/2*x~"
    );
    assert_eq!(
        setting(&sim, "network.gc.interval").as_deref(),
        Some("700 s+1/2*x~")
    );
    // the same body as JSON is not a form: the servlet sees no parameters
    let reply = exchange(
        &sim,
        "POST /client/api/ HTTP/1.1\r\nContent-Type: application/json",
        &encode(&change),
    )
    .await
    .unwrap();
    assert_ne!(reply.status, 200);
    assert_eq!(
        recorded(&sim),
        vec![
            rec("POST", "updateConfiguration", Some(200)),
            rec("POST", "", Some(432)),
        ]
    );
}

#[tokio::test]
async fn a_plus_in_a_value_must_be_sent_as_percent_2b() {
    let sim = start().await;
    let params = call(
        &sim,
        "updateConfiguration",
        &[("name", "network.gc.interval"), ("value", "a+b")],
    );
    // encode() writes %2B: accepted, and the zone gets a `+`
    let reply = get(&sim, &params).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(setting(&sim, "network.gc.interval").as_deref(), Some("a+b"));
    // a literal `+` decodes to a space, so the signature no longer matches
    let literal = encode(&params).replace("a%2Bb", "a+b");
    assert!(literal.contains("value=a+b&"), "{literal}");
    let reply = get_raw(&sim, &literal).await.unwrap();
    assert_unauthorized(&reply, "updateconfigurationresponse");
}

#[tokio::test]
async fn a_later_duplicate_wins() {
    let sim = start().await;
    let params = call(&sim, "listZones", &[("name", "zone1")]);
    // the signed value comes last, so the earlier one is ignored
    let query = format!("name=elsewhere&{}", encode(&params));
    let reply = get_raw(&sim, &query).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn control_characters_in_values_get_431() {
    let sim = start().await;
    let params = call(&sim, "listZones", &[("name", "zone\n1")]);
    let reply = get(&sim, &params).await.unwrap();
    assert_eq!(reply.status, 431, "{}", reply.body);
    assert_eq!(reply.json()["listzonesresponse"]["errorcode"], 431);
    assert!(reply.headers["x-description"].contains("control characters"));
}

#[tokio::test]
async fn zone_errors_keep_their_status_and_describe_themselves() {
    let sim = start().await;
    // a non-ASCII value echoed in the error text must not break the header
    let params = call(&sim, "listRouters", &[("id", "Zürich")]);
    let reply = get(&sim, &params).await.unwrap();
    assert_eq!(reply.status, 431, "{}", reply.body);
    let inner = &reply.json()["listroutersresponse"];
    assert!(
        inner["errortext"].as_str().unwrap().contains("Zürich"),
        "{}",
        reply.body
    );
    assert_eq!(inner["errorcode"], 431);
    assert_eq!(
        reply.headers["x-description"],
        inner["errortext"].as_str().unwrap()
    );
}

#[tokio::test]
async fn other_paths_and_methods() {
    let sim = start().await;
    let reply = exchange(&sim, "GET /client/other HTTP/1.1", "")
        .await
        .unwrap();
    assert_eq!(reply.status, 404);
    let reply = exchange(&sim, "DELETE /client/api HTTP/1.1", "")
        .await
        .unwrap();
    assert_eq!(reply.status, 405);
    let query = encode(&call(&sim, "listZones", &[]));
    let reply = exchange(&sim, &format!("GET /client/api/?{query} HTTP/1.1"), "")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "a trailing slash is fine");
    // `response=xml` still gets JSON
    let params = call(&sim, "listZones", &[]);
    let xml: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "response" && k != "signature")
        .cloned()
        .chain([("response".to_string(), "xml".to_string())])
        .collect();
    let sig = signature(&xml, sim.secret_key());
    let mut xml = xml;
    xml.push(("signature".into(), sig));
    let reply = get(&sim, &xml).await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.json()["listzonesresponse"].is_object());
}

#[tokio::test]
async fn admin_endpoints() {
    let sim = start().await;
    let state = exchange(&sim, "GET /sim/state HTTP/1.1", "").await.unwrap();
    assert_eq!(state.status, 200);
    assert_eq!(state.json(), sim.with_zone(|z| z.snapshot()));

    let body = r#"{"http_5xx_next": 2, "latency_ms": 5}"#;
    let put = exchange(&sim, "PUT /sim/faults HTTP/1.1", body)
        .await
        .unwrap();
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(sim.faults().http_5xx_next, 2);
    let got = exchange(&sim, "GET /sim/faults HTTP/1.1", "")
        .await
        .unwrap();
    assert_eq!(got.json()["http_5xx_next"], 2);
    assert_eq!(got.json()["latency_ms"], 5);
    let bad = exchange(&sim, "PUT /sim/faults HTTP/1.1", r#"{"nope": 1}"#)
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    assert_eq!(sim.faults().http_5xx_next, 2, "unchanged by a bad body");

    assert_eq!(
        get(&sim, &call(&sim, "listZones", &[]))
            .await
            .unwrap()
            .status,
        503
    );
    let seen = exchange(&sim, "GET /sim/requests HTTP/1.1", "")
        .await
        .unwrap();
    assert_eq!(
        seen.json(),
        serde_json::json!([{"method": "GET", "command": "listZones", "status": 503}])
    );
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let sim = start().await;
    let addr = sim.addr();
    assert_eq!(
        get(&sim, &call(&sim, "listZones", &[]))
            .await
            .unwrap()
            .status,
        200
    );
    sim.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());

    let sim = start().await;
    let addr = sim.addr();
    drop(sim);
    // the aborted task releases the listener shortly after
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "dropping the handle stops the server");
}

#[tokio::test]
async fn patch_merges_put_replaces_and_delete_clears_the_faults() {
    let sim = start().await;
    let faults = |body: &HttpReply| -> Faults { serde_json::from_str(&body.body).unwrap() };
    let put = exchange(
        &sim,
        "PUT /sim/faults HTTP/1.1",
        r#"{"latency_ms": 1, "fail_jobs": ["restartVPC", "rebootRouter"], "http_5xx_next": 1}"#,
    )
    .await
    .unwrap();
    assert_eq!(put.status, 200, "{}", put.body);
    let patch = exchange(
        &sim,
        "PATCH /sim/faults HTTP/1.1",
        r#"{"http_5xx_next": 3, "fail_jobs": ["stopRouter"]}"#,
    )
    .await
    .unwrap();
    assert_eq!(patch.status, 200, "{}", patch.body);
    let merged = Faults {
        latency_ms: 1,
        fail_jobs: vec!["stopRouter".into()],
        http_5xx_next: 3,
        ..Faults::default()
    };
    assert_eq!(faults(&patch), merged, "named fields replaced, lists too");
    assert_eq!(sim.faults(), merged);

    // GET shows the counters as they count down
    let list = call(&sim, "listZones", &[]);
    assert_eq!(get(&sim, &list).await.unwrap().status, 503);
    let got = exchange(&sim, "GET /sim/faults HTTP/1.1", "")
        .await
        .unwrap();
    assert_eq!(got.json()["http_5xx_next"], 2);

    for bad in [r#"{"latency": 1}"#, r#"{"latency_ms": "soon"}"#, "[1]", "{"] {
        let reply = exchange(&sim, "PATCH /sim/faults HTTP/1.1", bad)
            .await
            .unwrap();
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        assert!(
            reply.json()["simresponse"]["errortext"]
                .as_str()
                .unwrap()
                .starts_with("not a fault setting: "),
            "{}",
            reply.body
        );
    }
    assert_eq!(sim.faults().http_5xx_next, 2, "unchanged by bad bodies");
    assert_eq!(sim.faults().latency_ms, 1);

    let put = exchange(&sim, "PUT /sim/faults HTTP/1.1", r#"{"drop_next": 0}"#)
        .await
        .unwrap();
    assert_eq!(
        faults(&put),
        Faults::default(),
        "PUT replaces the whole set"
    );

    sim.set_faults(merged);
    let deleted = exchange(&sim, "DELETE /sim/faults HTTP/1.1", "")
        .await
        .unwrap();
    assert_eq!(deleted.status, 200);
    assert_eq!(faults(&deleted), Faults::default());
    assert_eq!(sim.faults(), Faults::default());
    assert_eq!(get(&sim, &list).await.unwrap().status, 200);
}

#[tokio::test]
async fn a_state_read_completes_the_jobs_that_are_due() {
    let sim = start().await;
    sim.set_faults(Faults {
        job_ms: Some(1000),
        ..Faults::default()
    });
    let (id, name) = sim.with_zone(|z| {
        let r = z.world().vms.iter().find(|v| v.vpcid().is_some()).unwrap();
        (r.id.clone(), r.name.clone())
    });
    let reply = get(&sim, &call(&sim, "stopRouter", &[("id", &id)]))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let state = || async {
        exchange(&sim, "GET /sim/state HTTP/1.1", "")
            .await
            .unwrap()
            .json()
    };
    let router_state = |s: &Value| {
        s["world"]["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name.as_str())
            .unwrap()["state"]
            .clone()
    };
    let before = state().await;
    assert_eq!(before["jobs"][0]["status"], 0, "pending");
    assert_eq!(router_state(&before), "Stopping");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // no API request in between: the read itself advances the clock
    let after = state().await;
    assert_eq!(after["jobs"][0]["status"], 1, "{}", after["jobs"]);
    assert_eq!(router_state(&after), "Stopped");
}

#[tokio::test]
async fn a_slow_call_is_carried_out_at_once_and_its_reply_held() {
    let sim = start().await;
    let patch = exchange(
        &sim,
        "PATCH /sim/faults HTTP/1.1",
        r#"{"slow_calls": ["updateConfiguration"], "slow_call_ms": 1000}"#,
    )
    .await
    .unwrap();
    assert_eq!(patch.status, 200, "{}", patch.body);
    let started = Instant::now();
    let list = call(
        &sim,
        "listConfigurations",
        &[("name", "network.gc.interval")],
    );
    assert_eq!(get(&sim, &list).await.unwrap().status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "other calls are not held"
    );

    let change = |value: &str| {
        call(
            &sim,
            "updateConfiguration",
            &[("name", "network.gc.interval"), ("value", value)],
        )
    };
    let started = Instant::now();
    assert_eq!(post(&sim, &change("900")).await.unwrap().status, 200);
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(setting(&sim, "network.gc.interval").as_deref(), Some("900"));

    // a client that gives up while the reply is held: the change is made all the same
    let waited =
        tokio::time::timeout(Duration::from_millis(300), post(&sim, &change("1200"))).await;
    assert!(waited.is_err(), "still held after 300 ms");
    let gave_up = Instant::now();
    while setting(&sim, "network.gc.interval").as_deref() != Some("1200") {
        assert!(gave_up.elapsed() < T, "the change was not made");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --- issue 21: the seeds' cases over HTTP -----------------------------------------------------

async fn start_scenario(name: &str) -> Sim {
    let sim = Sim::start(SimConfig {
        scenario: Scenario::builtin(name).unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        api_key: None,
        secret_key: None,
    })
    .await
    .unwrap();
    sim.set_faults(Faults {
        job_ms: Some(50),
        ..Faults::default()
    });
    sim
}

/// A signed GET of `command`, its reply body as JSON (the status must be `status`).
async fn api(sim: &Sim, command: &str, params: &[(&str, &str)], status: u16) -> Value {
    let reply = get(sim, &call(sim, command, params))
        .await
        .expect("a reply");
    assert_eq!(reply.status, status, "{command}: {}", reply.body);
    reply.json()
}

/// Starts an async command and polls `queryAsyncJobResult` until it ends: the job record.
async fn api_job(sim: &Sim, command: &str, params: &[(&str, &str)]) -> Value {
    let started = api(sim, command, params, 200).await;
    let key = format!("{}response", command.to_ascii_lowercase());
    let jobid = started[&key]["jobid"]
        .as_str()
        .expect("a jobid")
        .to_string();
    let since = Instant::now();
    loop {
        let q = api(sim, "queryAsyncJobResult", &[("jobid", &jobid)], 200).await;
        let job = q["queryasyncjobresultresponse"].clone();
        if job["jobstatus"] != 0 {
            return job;
        }
        assert!(since.elapsed() < T, "job {jobid} did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn host_named(sim: &Sim, name: &str) -> Value {
    let r = api(sim, "listHosts", &[("name", name)], 200).await;
    r["listhostsresponse"]["host"][0].clone()
}

async fn vm_named(sim: &Sim, name: &str) -> Value {
    let r = api(
        sim,
        "listVirtualMachines",
        &[("listall", "true"), ("name", name)],
        200,
    )
    .await;
    r["listvirtualmachinesresponse"]["virtualmachine"][0].clone()
}

#[tokio::test]
async fn maintenance_fails_over_http_until_the_vms_are_migrated_by_hand() {
    let sim = start_scenario("host-maintenance-firstfit").await;
    let a1 = host_named(&sim, "kvm-a1").await;
    let a1 = a1["id"].as_str().unwrap().to_string();
    let job = api_job(&sim, "prepareHostForMaintenance", &[("id", &a1)]).await;
    assert_eq!(
        (job["jobstatus"].as_u64(), job["jobresultcode"].as_u64()),
        (Some(2), Some(530))
    );
    assert!(job["jobresult"]["errortext"]
        .as_str()
        .unwrap()
        .contains("No suitable host found for vm VM[User|i-2-"));
    assert_eq!(
        host_named(&sim, "kvm-a1").await["resourcestate"],
        "ErrorInMaintenance"
    );
    for (vm, to) in [("app-1", "kvm-c1"), ("app-2", "kvm-c2")] {
        let id = vm_named(&sim, vm).await["id"].as_str().unwrap().to_string();
        let host = host_named(&sim, to).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let job = api_job(
            &sim,
            "migrateVirtualMachine",
            &[("virtualmachineid", &id), ("hostid", &host)],
        )
        .await;
        assert_eq!(job["jobresult"]["virtualmachine"]["hostname"], to, "{job}");
    }
    let job = api_job(&sim, "prepareHostForMaintenance", &[("id", &a1)]).await;
    assert_eq!(
        job["jobresult"]["host"]["resourcestate"], "Maintenance",
        "{job}"
    );
    // a bad uuid is refused before any job, as the dispatcher does
    let r = api(
        &sim,
        "migrateVirtualMachine",
        &[("virtualmachineid", "nope")],
        431,
    )
    .await;
    assert_eq!(r["migratevirtualmachineresponse"]["cserrorcode"], 4350);
}

#[tokio::test]
async fn the_stale_listing_and_the_failed_job_over_http() {
    let sim = start_scenario("stale-nics").await;
    let backend = sim.with_zone(|z| {
        z.world()
            .networks
            .iter()
            .find(|n| n.name == "backend")
            .unwrap()
            .id
            .clone()
    });
    let r = api(
        &sim,
        "listVirtualMachines",
        &[("listall", "true"), ("networkid", &backend)],
        200,
    )
    .await;
    assert_eq!(r["listvirtualmachinesresponse"]["count"], 3);
    let web1 = vm_named(&sim, "web-1").await;
    let id = web1["id"].as_str().unwrap();
    let nics = api(
        &sim,
        "listNics",
        &[("virtualmachineid", id), ("networkid", &backend)],
        200,
    )
    .await;
    assert_eq!(nics, serde_json::json!({"listnicsresponse": {}}));

    let sim = start_scenario("job-triage").await;
    let q = api(
        &sim,
        "queryAsyncJobResult",
        &[("jobid", "5b1f2c9e-7d43-4a8e-9c61-2f0e8d7a3b10")],
        200,
    )
    .await;
    let job = &q["queryasyncjobresultresponse"];
    assert_eq!(job["jobresultcode"], 530);
    assert_eq!(job["jobresult"]["errortext"], "Failed to destroy vm");
}

#[tokio::test]
async fn a_restarted_agent_comes_up_by_the_wall_clock() {
    let sim = start_scenario("agent-disconnected").await;
    // Connecting after 200 ms, Up after 800 ms: room for a loaded machine to see each
    sim.set_faults(Faults {
        job_ms: Some(400),
        ..Faults::default()
    });
    assert_eq!(host_named(&sim, "kvm02").await["state"], "Disconnected");
    let out = sim.with_zone(|z| {
        z.advance(jiff::Timestamp::now());
        cloudstack_sim::ssh::commands::run_line(z, "kvm02", "systemctl restart cloudstack-agent")
    });
    assert_eq!(out.status, 0);
    let since = Instant::now();
    let mut seen = Vec::new();
    loop {
        let state = host_named(&sim, "kvm02").await["state"]
            .as_str()
            .unwrap()
            .to_string();
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if state == "Up" {
            break;
        }
        assert!(since.elapsed() < T, "still {state}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, ["Disconnected", "Connecting", "Up"]);
}
