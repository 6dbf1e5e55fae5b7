//! The HTTP front of the simulated management server: this module owns `/client/api`, the fault
//! injection on it, the `/sim/*` admin endpoints and [`Sim`], the handle tests and `remedy lab`
//! hold.
//!
//! `GET /client/api?...` and `POST /client/api` (`application/x-www-form-urlencoded` body; the
//! query string of a POST counts too, as the servlet's parameter map holds both; a trailing `/`
//! is accepted) are handled as the real servlet does: decode, check the command, the API key,
//! the signature and `expires` (see [`crate::signature`]), then hand the call to the [`Zone`].
//!
//! Answers before the zone, with HTTP status = `errorcode`:
//! - a request that does not decode (malformed `%` escape): 401 under `errorresponse` — the real
//!   servlet fails such a request before any command is known;
//! - no `command`: 432 under `errorresponse` (reference §3.5);
//! - an unknown command: 401 under `errorresponse` (§2.2: not 432; what 4.18+'s
//!   `ApiServer.verifyRequest` answers for a command it has no class for), and one warning
//!   `not implemented: NAME` in the log (`remedy lab` prints it on stderr);
//! - no or a wrong `apiKey`, no or a wrong `signature`, a `signatureVersion=3` request whose
//!   `expires` is missing, garbage or past: 401 under the command's envelope;
//! - a value with an ASCII control character: 431 under the command's envelope. This is checked
//!   after the credentials, as the real server validates values only for verified requests.
//!
//! The 401 text is always [`UNAUTHORIZED`]; error replies carry it in `X-Description` too. A
//! later duplicate of a parameter replaces an earlier one. Replies are JSON whatever `response`
//! says (the simulator does not speak XML). Methods other than GET and POST on the API path get
//! 405 (what the servlet container answers); any other path 404.
//!
//! Faults ([`Faults`], kept in the zone so the SSH hosts share them) are applied first:
//! latency, a 503 before the zone is reached, or a dropped connection (no reply at all);
//! `drop_after_apply_next` lets the zone carry out a mutating call and then drops the
//! connection, so the client cannot know it happened; `slow_calls` lets the zone carry out a
//! call and then holds its reply.
//!
//! Admin endpoints, for labs and tests, with no credentials (which is why `remedy lab` listens
//! on loopback only):
//! - `GET /sim/state`: the zone as JSON, after advancing its clock to now as an API request
//!   would (jobs whose end has passed show their result);
//! - `GET /sim/faults`: the fault settings in force, counters as they have counted down;
//! - `PUT /sim/faults`: replaces the whole set with the body ([`Faults`] as JSON; a field left
//!   out is "no fault", so `{}` clears them);
//! - `PATCH /sim/faults`: replaces only the fields the body (a JSON object) names; a list given
//!   replaces the list, rules of `ssh` included ([`Faults::patched`]);
//! - `DELETE /sim/faults`: clears them.
//!
//! The three that change the faults answer with the new set, or 400 and `not a fault setting:
//! ...` (and nothing changed). `GET /sim/requests`: every API request seen.
//! - `POST /sim/events`: records events (`{"type", "level", "state", "description",
//!   "resource", "count"}`), delivered to the webhooks like any other (storm tests);
//! - `POST /sim/break`: breaks the zone at run time (`{"fault": "vr-backup-loop" |
//!   "dnsmasq-dead" | "agent-down", "target": NAME}`, see [`Zone::inject`]).
//!
//! `executeWebhookDelivery` is checked by the zone, then sent here ([`crate::hooks::deliver`])
//! before the reply, as the server waits for it. The webhook delivery task
//! ([`crate::hooks::spawn`]) runs as long as the [`Sim`].
//!
//! Nothing here logs a signature, an API key's secret or a query string.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::faults::Faults;
use crate::scenario::Scenario;
use crate::signature;
use crate::zone::Zone;

/// The text of every credential failure, as the management server words it.
pub const UNAUTHORIZED: &str = "unable to verify user credentials and/or request signature";

/// Parameters that belong to the request's signing, not to the command.
const SIGNING_PARAMS: [&str; 6] = [
    "command",
    "apikey",
    "signature",
    "signatureversion",
    "expires",
    "response",
];

/// What [`Sim::start`] serves, and where.
pub struct SimConfig {
    /// The zone to build; its `faults` are the initial fault settings.
    pub scenario: Scenario,
    /// Port 0 picks a free port ([`Sim::addr`] tells which).
    pub listen: SocketAddr,
    /// `None`: fresh lab-only credentials (`lab-<uuid>`; a 64-character hex secret).
    pub api_key: Option<String>,
    pub secret_key: Option<String>,
}

/// One API request the simulator saw.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub method: String,
    /// The `command` parameter as sent (empty when missing).
    pub command: String,
    /// The HTTP status answered; `None` when the connection was dropped instead.
    pub status: Option<u16>,
}

/// The dice for fault rates.
struct Dice(u64);

impl Dice {
    /// xorshift64*: enough randomness for fault rates, no dependency; a number in `[0, 1)`.
    fn roll(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether a fault with a "next n" `counter` and a `rate` fires: the counter first
    /// (counting down), then the dice.
    fn hit(&mut self, counter: &mut u32, rate: f64) -> bool {
        if *counter > 0 {
            *counter -= 1;
            return true;
        }
        rate > 0.0 && self.roll() < rate
    }
}

/// The fault dice are seeded from the scenario name, so a soak run with fault rates makes the
/// same choices, request for request, every time it is repeated.
fn rng_seed(scenario: &str) -> u64 {
    // FNV-1a; never 0, which xorshift could not leave
    scenario.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1
}

struct Shared {
    /// The zone, with its fault settings ([`Zone::faults`]).
    zone: Arc<Mutex<Zone>>,
    /// The client `executeWebhookDelivery` sends with.
    client: reqwest::Client,
    dice: Mutex<Dice>,
    requests: Mutex<Vec<RequestRecord>>,
    api_key: String,
    secret_key: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running simulator. Dropping it stops the server.
pub struct Sim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    /// `None` once [`Sim::shutdown`] has taken it.
    task: Option<JoinHandle<()>>,
    /// The webhook delivery task ([`crate::hooks`]).
    deliveries: JoinHandle<()>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("addr", &self.addr).finish()
    }
}

/// Why a request gets no reply: the service fails, and hyper closes the connection.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

impl Sim {
    /// Binds, starts serving in the background, and returns at once.
    pub async fn start(cfg: SimConfig) -> std::io::Result<Sim> {
        let listener = TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let random = || uuid::Uuid::new_v4().simple().to_string();
        let api_key = cfg.api_key.unwrap_or_else(|| format!("lab-{}", random()));
        let secret_key = cfg
            .secret_key
            .unwrap_or_else(|| format!("{}{}", random(), random()));
        let seed = rng_seed(&cfg.scenario.name);
        let shared = Arc::new(Shared {
            zone: Arc::new(Mutex::new(Zone::new(&cfg.scenario))),
            dice: Mutex::new(Dice(seed)),
            requests: Mutex::new(Vec::new()),
            api_key,
            secret_key,
            client: crate::hooks::client(),
        });
        let deliveries = crate::hooks::spawn(shared.zone.clone());
        let (stop, mut stopped) = oneshot::channel();
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = &mut stopped => return,
                    accepted = listener.accept() => match accepted {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { handle(&shared, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        tracing::info!(%addr, scenario = %cfg.scenario.name, "simulated zone listening");
        Ok(Sim {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
            deliveries,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/client/api`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/client/api", self.addr)
    }

    pub fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    pub fn secret_key(&self) -> &str {
        &self.shared.secret_key
    }

    /// Replaces the fault settings (counters start afresh), for the HTTP front and the SSH
    /// hosts alike. SSH rules with `next: 0` are dropped.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.zone).faults_mut() = faults.without_spent_rules();
    }

    /// The fault settings in force, counters as they stand.
    pub fn faults(&self) -> Faults {
        lock(&self.shared.zone).faults().clone()
    }

    /// Runs `f` on the zone, under its lock.
    pub fn with_zone<R>(&self, f: impl FnOnce(&mut Zone) -> R) -> R {
        f(&mut lock(&self.shared.zone))
    }

    /// The zone, shared (for the SSH side of the simulator).
    pub fn zone_handle(&self) -> Arc<Mutex<Zone>> {
        self.shared.zone.clone()
    }

    /// Every API request seen so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.requests).clone()
    }

    /// Stops accepting connections and ends the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.deliveries.abort();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.deliveries.abort();
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn json_reply(status: u16, body: &Value, description: Option<&str>) -> Reply {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=UTF-8");
    if let Some(text) = description {
        // header values cannot hold control characters; the text is ours or the zone's
        let clean: String = text.chars().filter(|c| !c.is_control()).collect();
        builder = builder.header("x-description", clean);
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

fn error_reply(status: u16, envelope: &str, text: &str) -> Reply {
    let body = json!({ envelope: {
        "uuidList": [],
        "errorcode": status,
        "cserrorcode": 9999,
        "errortext": text,
    }});
    json_reply(status, &body, Some(text))
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Result<Reply, Dropped> {
    let path = req.uri().path().to_string();
    if let Some(admin) = path.strip_prefix("/sim/") {
        return Ok(admin_endpoint(shared, admin, req).await);
    }
    if path != "/client/api" && path != "/client/api/" {
        return Ok(Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found\n")))
            .expect("a valid response"));
    }
    let method = req.method().clone();
    if method != Method::GET && method != Method::POST {
        return Ok(error_reply(
            405,
            "errorresponse",
            "the API takes GET or POST requests",
        ));
    }
    let raw = match raw_params(req).await {
        Ok(raw) => raw,
        Err(()) => return Err(Dropped),
    };
    let decoded = signature::decode_pairs(&raw);
    let command = decoded
        .as_deref()
        .unwrap_or_default()
        .iter()
        .rev()
        .find(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let record = |status: Option<u16>| {
        lock(&shared.requests).push(RequestRecord {
            method: method.to_string(),
            command: command.clone(),
            status,
        });
    };

    // --- faults, before anything is looked at ---
    let (latency, dropped, unavailable) = {
        let mut zone = lock(&shared.zone);
        let f = zone.faults_mut();
        let mut dice = lock(&shared.dice);
        let drop_it = dice.hit(&mut f.drop_next, f.drop_rate);
        let unavailable = !drop_it && dice.hit(&mut f.http_5xx_next, f.http_5xx_rate);
        (f.latency_ms, drop_it, unavailable)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if dropped {
        record(None);
        tracing::debug!(%method, command, "dropping the connection (fault)");
        return Err(Dropped);
    }
    if unavailable {
        record(Some(503));
        tracing::debug!(%method, command, status = 503, "api request (fault)");
        return Ok(Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", "text/html")
            .body(Full::new(Bytes::from_static(
                b"<html><body><h1>503 Service Unavailable</h1></body></html>\n",
            )))
            .expect("a valid response"));
    }

    let refused = decoded.is_ok() && {
        let mut zone = lock(&shared.zone);
        let list = &mut zone.faults_mut().fail_calls_next;
        match list.iter().position(|c| c.eq_ignore_ascii_case(&command)) {
            Some(i) => {
                list.remove(i);
                true
            }
            None => false,
        }
    };
    if refused {
        let text = lock(&shared.zone)
            .faults()
            .job_error_text
            .clone()
            .unwrap_or_else(|| format!("{command} failed (injected)"));
        record(Some(530));
        let envelope = format!("{}response", command.to_ascii_lowercase());
        return Ok(error_reply(530, &envelope, &text));
    }
    let (status, reply) = match decoded {
        Ok(pairs) => match api_call(shared, pairs, &command) {
            Answer::Now(status, reply) => (status, reply),
            Answer::Deliver(o) => execute_delivery(shared, &o).await,
        },
        Err(_) => (401, error_reply(401, "errorresponse", UNAUTHORIZED)),
    };
    if status == 200 && is_mutating(&command) {
        let mut zone = lock(&shared.zone);
        let f = zone.faults_mut();
        if f.drop_after_apply_next > 0 {
            f.drop_after_apply_next -= 1;
            drop(zone);
            record(None);
            tracing::debug!(%method, command, "applied, then dropping the connection (fault)");
            return Err(Dropped);
        }
    }
    let hold = {
        let zone = lock(&shared.zone);
        let f = zone.faults();
        Faults::matches(&f.slow_calls, &command).then_some(f.slow_call_ms)
    };
    if let Some(ms) = hold.filter(|&ms| ms > 0) {
        tracing::debug!(%method, command, ms, "holding the reply (fault)");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    record(Some(status));
    tracing::debug!(%method, command, status, "api request");
    Ok(reply)
}

/// Reads and lists are safe to repeat; everything else may change the zone.
fn is_mutating(command: &str) -> bool {
    let command = command.to_ascii_lowercase();
    !["list", "query", "get"]
        .iter()
        .any(|p| command.starts_with(p))
}

/// The undecoded parameters: the query string, and for a form POST the body after it. A POST
/// body of another content type is not read as parameters (the servlet container ignores it).
/// `Err` when the body cannot be read.
async fn raw_params(req: Request<Incoming>) -> Result<String, ()> {
    let query = req.uri().query().unwrap_or("").to_string();
    if req.method() != Method::POST {
        return Ok(query);
    }
    let is_form = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let body = req.into_body().collect().await.map_err(|_| ())?.to_bytes();
    if !is_form || body.is_empty() {
        return Ok(query);
    }
    let body = String::from_utf8_lossy(&body);
    Ok(if query.is_empty() {
        body.into_owned()
    } else {
        format!("{query}&{body}")
    })
}

/// What an API call comes to: a reply now, or a webhook delivery to send first.
enum Answer {
    Now(u16, Reply),
    Deliver(Box<crate::zone::webhooks::Outgoing>),
}

/// `executeWebhookDelivery`: sends the delivery (the reply waits for it, as on the server),
/// records it unless it is a test delivery, and answers with its record.
async fn execute_delivery(shared: &Shared, o: &crate::zone::webhooks::Outgoing) -> (u16, Reply) {
    let outcome = crate::hooks::deliver(&shared.client, o).await;
    let item = lock(&shared.zone).record_delivery(o, &outcome);
    let body = json!({"executewebhookdeliveryresponse": {"webhookdelivery": item}});
    (200, json_reply(200, &body, None))
}

/// Checks and runs one API call: the status with the reply, or for a valid
/// `executeWebhookDelivery` the delivery to send first.
fn api_call(shared: &Shared, pairs: Vec<(String, String)>, command: &str) -> Answer {
    // A later duplicate replaces an earlier one, as the servlet's map does.
    let params: Vec<(String, String)> = pairs
        .into_iter()
        .collect::<BTreeMap<String, String>>()
        .into_iter()
        .collect();
    if command.is_empty() {
        return Answer::Now(
            432,
            error_reply(432, "errorresponse", "no command was given"),
        );
    }
    let Some(spec) = crate::apis::get(command) else {
        // an unknown command gets the generic credentials error, like the real server; the
        // log says what it really is, so nobody checks their keys for nothing
        tracing::warn!("not implemented: {command}");
        return Answer::Now(401, error_reply(401, "errorresponse", UNAUTHORIZED));
    };
    let envelope = spec.response_envelope_key.as_str();
    let refuse = |why: &str| {
        tracing::debug!(command, why, "request refused (401)");
        Answer::Now(401, error_reply(401, envelope, UNAUTHORIZED))
    };
    match signature::get_ci(&params, "apiKey") {
        Some(key) if key == shared.api_key => {}
        Some(_) => return refuse("unknown api key"),
        None => return refuse("no api key"),
    }
    if signature::get_ci(&params, "signature").is_none() {
        return refuse("no signature");
    }
    if !signature::verify(&params, &shared.secret_key) {
        return refuse("signature mismatch");
    }
    if let Err(why) = signature::check_expiry(&params, jiff::Timestamp::now()) {
        return refuse(&why);
    }
    if let Some((name, _)) = params
        .iter()
        .find(|(_, v)| v.chars().any(|c| c.is_ascii_control()))
    {
        let text = format!(
            "Unable to execute API command {} due to invalid value: {name} contains control characters",
            command.to_ascii_lowercase()
        );
        return Answer::Now(431, error_reply(431, envelope, &text));
    }
    let args: BTreeMap<String, String> = params
        .into_iter()
        .filter(|(k, _)| !SIGNING_PARAMS.contains(&k.to_ascii_lowercase().as_str()))
        .collect();
    let reply = {
        let mut zone = lock(&shared.zone);
        let now = jiff::Timestamp::now();
        if spec.name == "executeWebhookDelivery" {
            match zone.execute_call(spec, &args, now) {
                Ok(o) => return Answer::Deliver(Box::new(o)),
                Err(reply) => reply,
            }
        } else {
            let faults = zone.faults().clone();
            zone.handle(command, &args, &faults, now)
        }
    };
    let description = if reply.status == 200 {
        None
    } else {
        error_text(&reply.body)
    };
    Answer::Now(
        reply.status,
        json_reply(reply.status, &reply.body, description.as_deref()),
    )
}

async fn admin_endpoint(shared: &Shared, what: &str, req: Request<Incoming>) -> Reply {
    let ok = |v: Value| json_reply(200, &v, None);
    match (req.method().clone(), what) {
        (Method::GET, "state") => {
            let mut zone = lock(&shared.zone);
            zone.advance(jiff::Timestamp::now());
            ok(zone.snapshot())
        }
        (Method::GET, "faults") => ok(faults_json(lock(&shared.zone).faults())),
        (Method::PUT | Method::PATCH, "faults") => {
            let put = req.method() == Method::PUT;
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return error_reply(400, "simresponse", "could not read the body"),
            };
            let mut zone = lock(&shared.zone);
            let new = if put {
                serde_json::from_slice::<Faults>(&body)
                    .map(Faults::without_spent_rules)
                    .map_err(|e| e.to_string())
            } else {
                serde_json::from_slice::<Value>(&body)
                    .map_err(|e| e.to_string())
                    .and_then(|patch| zone.faults().patched(&patch))
            };
            match new {
                Ok(f) => {
                    *zone.faults_mut() = f;
                    ok(faults_json(zone.faults()))
                }
                Err(e) => error_reply(400, "simresponse", &format!("not a fault setting: {e}")),
            }
        }
        (Method::DELETE, "faults") => {
            let mut zone = lock(&shared.zone);
            *zone.faults_mut() = Faults::default();
            ok(faults_json(zone.faults()))
        }
        (Method::POST, "events") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return error_reply(400, "simresponse", "could not read the body"),
            };
            match serde_json::from_slice::<InjectEvent>(&body) {
                Ok(e) => match inject_events(&mut lock(&shared.zone), e) {
                    Ok(ids) => ok(json!({"ids": ids})),
                    Err(e) => error_reply(400, "simresponse", &e),
                },
                Err(e) => error_reply(400, "simresponse", &format!("not an event: {e}")),
            }
        }
        (Method::POST, "break") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return error_reply(400, "simresponse", "could not read the body"),
            };
            let Ok(b) = serde_json::from_slice::<Break>(&body) else {
                return error_reply(
                    400,
                    "simresponse",
                    "a JSON object {\"fault\": ..., \"target\": ...} is needed",
                );
            };
            let mut zone = lock(&shared.zone);
            match zone.inject(&b.fault, &b.target, jiff::Timestamp::now()) {
                Ok(done) => ok(json!({"done": done})),
                Err(e) => error_reply(400, "simresponse", &e),
            }
        }
        (Method::GET, "requests") => {
            ok(serde_json::to_value(&*lock(&shared.requests)).unwrap_or(Value::Null))
        }
        _ => error_reply(404, "simresponse", "unknown admin endpoint"),
    }
}

/// The body of `POST /sim/events`: an event to record `count` times (default 1).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InjectEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    description: Option<String>,
    /// A VM, host, VPC or tier, by name or id.
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    count: Option<u32>,
}

/// The body of `POST /sim/break`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Break {
    fault: String,
    target: String,
}

/// Records the events `POST /sim/events` asks for; their ids, in order.
fn inject_events(zone: &mut Zone, e: InjectEvent) -> Result<Vec<String>, String> {
    use crate::zone::events::NewEvent;
    let level: &'static str = match e.level.as_deref().unwrap_or("INFO") {
        "INFO" => "INFO",
        "WARN" => "WARN",
        "ERROR" => "ERROR",
        other => return Err(format!("level {other}: INFO, WARN or ERROR")),
    };
    let state: &'static str = match e.state.as_deref().unwrap_or("Completed") {
        "Completed" => "Completed",
        "Started" => "Started",
        "Scheduled" => "Scheduled",
        "Created" => "Created",
        other => {
            return Err(format!(
                "state {other}: Completed, Started, Scheduled or Created"
            ))
        }
    };
    let resource = match &e.resource {
        Some(name) => Some(
            zone.resource_named(name)
                .ok_or_else(|| format!("no machine, VPC or tier named {name}"))?,
        ),
        None => None,
    };
    let account = match resource.as_ref().map(|r| r.kind.as_str()) {
        Some("DomainRouter" | "Vpc" | "Network" | "VirtualMachine") => "ops",
        _ => "admin",
    };
    let now = jiff::Timestamp::now();
    let count = e.count.unwrap_or(1).clamp(1, 100_000);
    Ok((0..count)
        .map(|_| {
            let event = NewEvent {
                kind: e.kind.clone(),
                level,
                state,
                description: e.description.clone().unwrap_or_default(),
                account: account.to_string(),
                username: "system",
                resource: resource.clone(),
                parentid: None,
            };
            zone.record_event(event, now)
        })
        .collect())
}

fn faults_json(faults: &Faults) -> Value {
    serde_json::to_value(faults).unwrap_or(Value::Null)
}

/// The `errortext` inside an error envelope, for the `X-Description` header.
fn error_text(body: &Value) -> Option<String> {
    body.as_object()?
        .values()
        .next()?
        .get("errortext")?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dice(scenario: &str) -> Dice {
        Dice(rng_seed(scenario))
    }

    #[test]
    fn the_dice_are_repeatable_and_fair_enough() {
        let (mut a, mut b) = (dice("healthy"), dice("healthy"));
        let rolls: Vec<f64> = (0..1000).map(|_| a.roll()).collect();
        assert!(rolls.iter().all(|&r| (0.0..1.0).contains(&r)));
        assert_eq!(rolls, (0..1000).map(|_| b.roll()).collect::<Vec<_>>());
        assert_ne!(rolls[0], dice("vr-backup-loop").roll());

        let mut d = dice("healthy");
        let mut none = 0;
        let hits = (0..10_000).filter(|_| d.hit(&mut none, 0.25)).count();
        assert!((2_200..2_800).contains(&hits), "{hits}");
        assert_eq!((0..100).filter(|_| d.hit(&mut none, 0.0)).count(), 0);
    }

    #[test]
    fn counters_come_before_rates_and_count_down() {
        let mut d = dice("healthy");
        let mut next = 2;
        assert!(d.hit(&mut next, 0.0));
        assert!(d.hit(&mut next, 0.0));
        assert!(!d.hit(&mut next, 0.0));
        assert_eq!(next, 0);
    }

    #[test]
    fn mutating_commands() {
        for read in ["listZones", "queryAsyncJobResult", "LISTROUTERS", "getUser"] {
            assert!(!is_mutating(read), "{read}");
        }
        for change in ["updateConfiguration", "restartVPC", "rebootRouter"] {
            assert!(is_mutating(change), "{change}");
        }
    }
}
