//! The CloudStack API client: one signed HTTP request ([`Client::request`]), and the calls
//! built on it ([`Client::call`]): reads by GET, retried with backoff on transient failures;
//! lists walked page by page; mutating calls by POST, sent exactly once; async jobs polled
//! with backoff until they end or the deadline comes.
//!
//! Not here: which host or step asks (the transport), and the meaning of replies (modules).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::reply::{self, CsError, JobState};
use super::sign;

/// Told the command and job id of each async job as soon as the server has answered with it,
/// while the job is then polled: see [`notifying_jobs`].
pub type JobNotice = std::sync::Arc<dyn Fn(&str, &str) + Send + Sync>;

tokio::task_local! {
    static ON_JOB: JobNotice;
}

/// Runs `work` with `notice` told of every async job that an API call made within it (on the
/// same task) submits. The runner uses it to show what a step waits for; nothing else changes.
pub async fn notifying_jobs<F: Future>(notice: JobNotice, work: F) -> F::Output {
    ON_JOB.scope(notice, work).await
}

/// Tells the task's [`JobNotice`], if it has one, that `command` is now the job `jobid`.
fn job_submitted(command: &str, jobid: &str) {
    let _ = ON_JOB.try_with(|notice| notice(command, jobid));
}

/// Where the API is and the key pair to sign with. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Credentials {
    /// The full API URL, e.g. `https://cloud.example.com:8443/client/api`.
    pub endpoint: String,
    pub api_key: String,
    pub secret_key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key)
            .field("secret_key", &"********")
            .finish()
    }
}

/// Knobs, with the defaults an operator expects.
#[derive(Debug, Clone)]
pub struct Options {
    /// Verify the server's TLS certificate (on unless the inventory says otherwise).
    pub verify_tls: bool,
    /// Extra CA certificate(s), PEM, trusted besides the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Retries of a read after a transient failure (connect error, timeout, 5xx, 429).
    pub read_retries: u32,
    /// First retry delay; doubled each time.
    pub retry_delay: Duration,
    /// First async-job poll delay; grows by half each time up to `poll_max`.
    pub poll_initial: Duration,
    pub poll_max: Duration,
    /// `pagesize` when walking a list.
    pub page_size: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            verify_tls: true,
            ca_file: None,
            request_timeout: Duration::from_secs(30),
            read_retries: 3,
            retry_delay: Duration::from_millis(500),
            poll_initial: Duration::from_secs(1),
            poll_max: Duration::from_secs(10),
            page_size: 500,
        }
    }
}

/// HTTP method: GET for reads, POST (form body) for anything that may change the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

pub struct Client {
    http: reqwest::Client,
    creds: Credentials,
    opts: Options,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("creds", &self.creds)
            .finish()
    }
}

impl Client {
    pub fn new(creds: Credentials, opts: Options) -> Result<Client, CsError> {
        let mut builder = reqwest::Client::builder()
            .timeout(opts.request_timeout)
            .connect_timeout(opts.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("remedy/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(!opts.verify_tls);
        if let Some(path) = &opts.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| CsError::Config(format!("CA file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                CsError::Config(format!(
                    "CA file {}: not PEM certificates: {e}",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(CsError::Config(format!(
                    "CA file {}: no certificate in it",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| CsError::Config(format!("HTTP client: {}", e.without_url())))?;
        Ok(Client { http, creds, opts })
    }

    pub fn endpoint(&self) -> &str {
        &self.creds.endpoint
    }

    /// Registers the secret key with `redactor`, so it can never be printed.
    pub fn register_secret(&self, redactor: &mut crate::redact::Redactor) {
        redactor.add(self.creds.secret_key.clone());
    }

    /// One signed request, valid for [`sign::EXPIRES_AFTER`]; the reply's envelope removed.
    /// No retry.
    pub async fn request(
        &self,
        command: &str,
        args: &BTreeMap<String, String>,
        method: Method,
    ) -> Result<Value, CsError> {
        let expires = jiff::Timestamp::now()
            + jiff::SignedDuration::try_from(sign::EXPIRES_AFTER).expect("ten minutes fit");
        self.request_expiring(command, args, method, Some(expires))
            .await
    }

    /// [`Client::request`] with a chosen `expires` (`None`: signature version 2, no expiry).
    pub async fn request_expiring(
        &self,
        command: &str,
        args: &BTreeMap<String, String>,
        method: Method,
        expires: Option<jiff::Timestamp>,
    ) -> Result<Value, CsError> {
        self.send(command, args, method, expires, None).await
    }

    /// [`Client::request`] that must be answered by `deadline`: the HTTP timeout is cut to the
    /// time left, and nothing is sent once the deadline has passed.
    async fn request_by(
        &self,
        command: &str,
        args: &BTreeMap<String, String>,
        method: Method,
        deadline: Instant,
    ) -> Result<Value, CsError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CsError::Deadline {
                command: command.into(),
                sent: false,
                mutating: method == Method::Post,
            });
        }
        let expires = jiff::Timestamp::now()
            + jiff::SignedDuration::try_from(sign::EXPIRES_AFTER).expect("ten minutes fit");
        let timeout = left.min(self.opts.request_timeout);
        self.send(command, args, method, Some(expires), Some(timeout))
            .await
            .map_err(|e| match e {
                // The per-attempt timeout cut to the deadline: the deadline it is.
                CsError::Transport {
                    timeout: true,
                    sent,
                    ..
                } if Instant::now() >= deadline => CsError::Deadline {
                    command: command.into(),
                    sent,
                    mutating: method == Method::Post,
                },
                other => other,
            })
    }

    async fn send(
        &self,
        command: &str,
        args: &BTreeMap<String, String>,
        method: Method,
        expires: Option<jiff::Timestamp>,
        timeout: Option<Duration>,
    ) -> Result<Value, CsError> {
        let params = sign::signed_params(
            command,
            args.iter().map(|(k, v)| (k.clone(), v.clone())),
            &self.creds.api_key,
            &self.creds.secret_key,
            expires,
        );
        let encoded = sign::wire_encode(&params);
        let req = match method {
            Method::Get => {
                let sep = if self.creds.endpoint.contains('?') {
                    '&'
                } else {
                    '?'
                };
                self.http
                    .get(format!("{}{sep}{encoded}", self.creds.endpoint))
            }
            Method::Post => self
                .http
                .post(&self.creds.endpoint)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(encoded),
        };
        let req = match timeout {
            Some(t) => req.timeout(t),
            None => req,
        };
        tracing::debug!(command, ?method, "cloudstack request");
        let transport = |e: reqwest::Error| CsError::Transport {
            command: command.to_string(),
            // `without_url`: the URL carries the API key and the signature.
            sent: !e.is_connect(),
            timeout: e.is_timeout(),
            reason: describe(&e.without_url()),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let x_description = resp
            .headers()
            .get("x-description")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.bytes().await.map_err(transport)?;
        tracing::debug!(command, status, "cloudstack reply");
        reply::parse(command, status, &body, x_description.as_deref())
    }

    /// A read, retried with backoff on transient failures only, all by `deadline`.
    pub async fn read(
        &self,
        command: &str,
        args: &BTreeMap<String, String>,
        deadline: Instant,
    ) -> Result<Value, CsError> {
        retrying(
            command,
            self.opts.read_retries,
            self.opts.retry_delay,
            deadline,
            || self.request_by(command, args, Method::Get, deadline),
        )
        .await
    }

    /// Carries out one API call as a step needs it: reads by GET (lists walked to the end,
    /// account-scoped lists with `listall=true`), mutating calls by POST exactly once, and an
    /// async job followed to its end. `deadline` bounds the whole call: every request, list
    /// walk, retry and poll.
    /// After a lost reply: the one job of `command` that this account started at or after
    /// `since` (a minute of clock skew allowed), on the object the call named (`id`), from
    /// `listAsyncJobs`; `None` when there is none or more than one (then the outcome stays
    /// unknown).
    async fn find_job(
        &self,
        command: &str,
        args: &BTreeMap<String, String>,
        since: jiff::Timestamp,
        deadline: Instant,
    ) -> Option<String> {
        let from = since - jiff::SignedDuration::from_secs(60);
        let jobs = Box::pin(self.call(
            "listAsyncJobs",
            &BTreeMap::new(),
            Method::Get,
            deadline,
            None,
        ))
        .await
        .ok()?;
        let items = jobs.get("asyncjobs").and_then(Value::as_array)?;
        let found: Vec<&str> = items
            .iter()
            .filter(|j| {
                let created = j
                    .get("created")
                    .and_then(Value::as_str)
                    .and_then(|c| jiff::fmt::strtime::parse("%Y-%m-%dT%H:%M:%S%z", c).ok())
                    .and_then(|t| t.to_timestamp().ok());
                let on = j.get("jobinstanceid").and_then(Value::as_str).unwrap_or("");
                let same_object = match args.get("id") {
                    Some(id) if !on.is_empty() => on == id,
                    _ => true,
                };
                super::reply::job_is_of(j, command)
                    && same_object
                    && created.is_some_and(|t| t >= from)
            })
            .filter_map(|j| j.get("jobid").and_then(Value::as_str))
            .collect();
        match found.as_slice() {
            [one] => Some(one.to_string()),
            _ => None,
        }
    }

    pub async fn call(
        &self,
        command: &str,
        args: &BTreeMap<String, String>,
        method: Method,
        deadline: Instant,
        cancel: Option<watch::Receiver<bool>>,
    ) -> Result<Value, CsError> {
        let spec = cloudstack_sim::apis::get(command);
        if method == Method::Get {
            let is_list = command.starts_with("list");
            let mut args = args.clone();
            if is_list
                && spec.is_some_and(|s| s.params.iter().any(|p| p.name == "listall"))
                && !args.contains_key("listall")
            {
                args.insert("listall".into(), "true".into());
            }
            if is_list && !args.contains_key("page") && !args.contains_key("pagesize") {
                let size = self.opts.page_size;
                let walk = all_pages(size, |page| {
                    let mut a = args.clone();
                    a.insert("page".into(), page.to_string());
                    a.insert("pagesize".into(), size.to_string());
                    async move { self.read(command, &a, deadline).await }
                });
                return tokio::time::timeout_at(deadline, walk)
                    .await
                    .unwrap_or_else(|_| {
                        Err(PageError::Cs(CsError::Deadline {
                            command: command.into(),
                            sent: true,
                            mutating: false,
                        }))
                    })
                    .map_err(|reason| match reason {
                        PageError::Cs(e) => e,
                        PageError::Shape(reason) => CsError::Decode {
                            command: command.into(),
                            reason,
                        },
                    });
            }
            return self.read(command, &args, deadline).await;
        }
        let sent_at = jiff::Timestamp::now();
        let known_async = spec.map(|s| s.isasync).unwrap_or(false);
        let reply = match self.request_by(command, args, Method::Post, deadline).await {
            Ok(r) => r,
            // The request went out, but its reply was lost: an async command may have started
            // a job. Look for it, and follow it as if its jobid had come back.
            Err(
                lost @ (CsError::Transport { sent: true, .. }
                | CsError::Deadline { sent: true, .. }),
            ) if known_async => match self.find_job(command, args, sent_at, deadline).await {
                Some(jobid) => {
                    tracing::warn!(command, jobid, "reply lost; following the job it started");
                    json!({ "jobid": jobid })
                }
                None => return Err(lost),
            },
            Err(e) => return Err(e),
        };
        let is_async = known_async || (spec.is_none() && reply.get("jobid").is_some());
        if !is_async {
            return Ok(reply);
        }
        let Some(jobid) = reply
            .get("jobid")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Err(CsError::Decode {
                command: command.into(),
                reason: "an async command answered without a jobid".into(),
            });
        };
        tracing::debug!(command, jobid, "waiting for async job");
        job_submitted(command, &jobid);
        let mut query = BTreeMap::new();
        query.insert("jobid".to_string(), jobid.clone());
        poll_job(
            command,
            &jobid,
            || self.read("queryAsyncJobResult", &query, deadline),
            self.opts.poll_initial,
            self.opts.poll_max,
            deadline,
            cancel,
        )
        .await
    }
}

/// A reqwest error as one line, without the URL (the caller strips it) and with its cause.
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut s = if e.is_timeout() {
        "request timed out".to_string()
    } else if e.is_connect() {
        "could not connect to the management server".to_string()
    } else if e.is_body() || e.is_decode() {
        "connection lost while reading the reply".to_string()
    } else {
        "connection lost before a reply came; the server may or may not have acted".to_string()
    };
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.contains("://") && !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// Runs `attempt` (a read of `command`) once, then again after `delay`, `2·delay`, ... while
/// it fails transiently, at most `retries` more times. Each attempt ends at `deadline`, and no
/// retry is started that could not begin before it.
pub async fn retrying<F, Fut>(
    command: &str,
    retries: u32,
    delay: Duration,
    deadline: Instant,
    mut attempt: F,
) -> Result<Value, CsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Value, CsError>>,
{
    let mut wait = delay;
    let mut left = retries;
    loop {
        let result = tokio::time::timeout_at(deadline, attempt())
            .await
            .unwrap_or_else(|_| {
                Err(CsError::Deadline {
                    command: command.into(),
                    sent: true,
                    mutating: false,
                })
            });
        match result {
            Err(e) if e.is_transient() && left > 0 && Instant::now() + wait < deadline => {
                tracing::debug!(error = %e, retries_left = left, "transient failure of a read; retrying");
                left -= 1;
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
            other => return other,
        }
    }
}

#[derive(Debug)]
pub enum PageError {
    Cs(CsError),
    Shape(String),
}

/// Walks a list: `page=1,2,...` until the items reach `count` or a page comes back empty
/// (or short). Returns `{"count": N, "<item>": [all]}`, or `{}` when nothing matched.
pub async fn all_pages<F, Fut>(page_size: u32, mut fetch: F) -> Result<Value, PageError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<Value, CsError>>,
{
    let mut items: Vec<Value> = Vec::new();
    let mut key: Option<String> = None;
    let mut count: Option<u64> = None;
    let mut extra = Map::new();
    for page in 1u32.. {
        let reply = fetch(page).await.map_err(PageError::Cs)?;
        let obj = reply
            .as_object()
            .ok_or_else(|| PageError::Shape("a list reply that is not an object".into()))?;
        let Some(k) = reply::list_key(obj) else {
            break; // `{}`: no (more) matches
        };
        if key.as_deref().is_some_and(|known| known != k) {
            return Err(PageError::Shape(format!(
                "page {page} lists `{k}`, not `{}`",
                key.unwrap_or_default()
            )));
        }
        let batch = obj[k].as_array().cloned().unwrap_or_default();
        let n = batch.len();
        key = Some(k.to_string());
        count = obj.get("count").and_then(Value::as_u64).or(count);
        for (name, v) in obj {
            if name != k && name != "count" {
                extra.insert(name.clone(), v.clone());
            }
        }
        items.extend(batch);
        let total = count.unwrap_or(0);
        if n == 0 || (n as u64) < u64::from(page_size) || items.len() as u64 >= total {
            break;
        }
    }
    let Some(key) = key else {
        return Ok(json!({}));
    };
    let mut out = extra;
    out.insert("count".into(), json!(items.len()));
    out.insert(key, Value::Array(items));
    Ok(Value::Object(out))
}

/// Polls a job until it ends: `query` returns the content of a `queryAsyncJobResult` reply.
/// Delays start at `initial` and grow by half up to `max`; the last sleep is cut to the
/// deadline. On success returns `jobresult`.
pub async fn poll_job<F, Fut>(
    command: &str,
    jobid: &str,
    mut query: F,
    initial: Duration,
    max: Duration,
    deadline: Instant,
    mut cancel: Option<watch::Receiver<bool>>,
) -> Result<Value, CsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Value, CsError>>,
{
    let started = Instant::now();
    let mut delay = initial;
    loop {
        // A query cut short by the deadline means the job outlived it.
        let reply = match tokio::time::timeout_at(deadline, query()).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) if !matches!(e, CsError::Deadline { .. }) => return Err(e),
            _ => {
                return Err(CsError::JobDeadline {
                    command: command.into(),
                    jobid: jobid.into(),
                    waited: Instant::now() - started,
                })
            }
        };
        let state = reply::job_state(&reply).map_err(|reason| CsError::Decode {
            command: "queryAsyncJobResult".into(),
            reason,
        })?;
        match state {
            JobState::Succeeded(result) => return Ok(result),
            JobState::Failed { code, text } => {
                return Err(CsError::JobFailed {
                    command: command.into(),
                    jobid: jobid.into(),
                    code,
                    text,
                })
            }
            JobState::Cancelled => {
                return Err(CsError::JobCancelled {
                    command: command.into(),
                    jobid: jobid.into(),
                })
            }
            JobState::Pending => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(CsError::JobDeadline {
                command: command.into(),
                jobid: jobid.into(),
                waited: now - started,
            });
        }
        let sleep = tokio::time::sleep(delay.min(deadline - now));
        tokio::pin!(sleep);
        match cancel.as_mut() {
            Some(rx) if *rx.borrow() => {
                return Err(CsError::JobInterrupted {
                    command: command.into(),
                    jobid: jobid.into(),
                })
            }
            Some(rx) => {
                // Only a `true` seen is an interrupt. `Err` means the sender is gone, so
                // nobody can interrupt any more: keep polling without watching.
                let interrupted = tokio::select! {
                    _ = &mut sleep => None,
                    r = rx.wait_for(|c| *c) => Some(r.is_ok()),
                };
                match interrupted {
                    Some(true) => {
                        return Err(CsError::JobInterrupted {
                            command: command.into(),
                            jobid: jobid.into(),
                        })
                    }
                    Some(false) => {
                        cancel = None;
                        sleep.await;
                    }
                    None => {}
                }
            }
            None => sleep.await,
        }
        delay = (delay + delay / 2).min(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    fn job(status: i64) -> Value {
        match status {
            0 => json!({"jobid": "j", "jobstatus": 0}),
            1 => {
                json!({"jobid": "j", "jobstatus": 1, "jobresultcode": 0, "jobresult": {"router": {"id": "r1"}}})
            }
            2 => {
                json!({"jobid": "j", "jobstatus": 2, "jobresultcode": 530, "jobresult": {"errorcode": 530, "errortext": "router is not running"}})
            }
            _ => json!({"jobid": "j", "jobstatus": 3}),
        }
    }

    type Polls = std::sync::Arc<Mutex<Vec<Instant>>>;

    /// A scripted job: pending `n` times, then `end`. Records when each poll happened.
    fn script(
        n: u32,
        end: i64,
    ) -> (
        impl FnMut() -> std::future::Ready<Result<Value, CsError>>,
        Polls,
    ) {
        let times: Polls = Default::default();
        let t = times.clone();
        let calls = AtomicU32::new(0);
        let f = move || {
            t.lock().unwrap().push(Instant::now());
            let i = calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(if i < n { job(0) } else { job(end) }))
        };
        (f, times)
    }

    const S: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_submitted_job_is_told_to_the_tasks_notice_only() {
        let seen: std::sync::Arc<Mutex<Vec<String>>> = Default::default();
        let s = seen.clone();
        let notice: JobNotice = std::sync::Arc::new(move |command: &str, jobid: &str| {
            s.lock().unwrap().push(format!("{command} {jobid}"))
        });
        notifying_jobs(notice, async {
            job_submitted("restartVPC", "4f2c");
            // another task: not this run's node
            tokio::spawn(async { job_submitted("stopRouter", "elsewhere") })
                .await
                .unwrap();
        })
        .await;
        job_submitted("rebootRouter", "outside");
        assert_eq!(*seen.lock().unwrap(), vec!["restartVPC 4f2c".to_string()]);
    }

    #[tokio::test(start_paused = true)]
    async fn polling_succeeds_with_growing_capped_delays() {
        let (q, times) = script(6, 1);
        let deadline = Instant::now() + Duration::from_secs(600);
        let r = poll_job("rebootRouter", "j", q, S, 3 * S, deadline, None)
            .await
            .unwrap();
        assert_eq!(r, json!({"router": {"id": "r1"}}));
        let t = times.lock().unwrap();
        let gaps: Vec<u64> = t
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis() as u64)
            .collect();
        assert_eq!(gaps, vec![1000, 1500, 2250, 3000, 3000, 3000]);
    }

    #[tokio::test(start_paused = true)]
    async fn polling_surfaces_a_failed_job() {
        let (q, _) = script(2, 2);
        let e = poll_job(
            "rebootRouter",
            "j",
            q,
            S,
            10 * S,
            Instant::now() + 60 * S,
            None,
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Some(530));
        let msg = e.to_string();
        assert!(
            msg.contains("job j failed") && msg.contains("router is not running"),
            "{msg}"
        );
        let (q, _) = script(0, 3);
        assert!(matches!(
            poll_job("x", "j", q, S, S, Instant::now() + S, None).await,
            Err(CsError::JobCancelled { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn polling_stops_at_the_deadline_with_the_jobid() {
        let (q, times) = script(u32::MAX, 1);
        let start = Instant::now();
        let e = poll_job(
            "restartVPC",
            "j-42",
            q,
            S,
            10 * S,
            start + Duration::from_millis(4500),
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, CsError::JobDeadline { .. }), "{e:?}");
        assert!(
            e.to_string().contains("queryAsyncJobResult jobid=j-42"),
            "{e}"
        );
        // polls at 0, 1, 2.5, 4.5 (last sleep cut to the deadline), then gives up
        let last = *times.lock().unwrap().last().unwrap();
        assert_eq!((last - start).as_millis(), 4500);
    }

    #[tokio::test(start_paused = true)]
    async fn polling_can_be_interrupted() {
        let (q, _) = script(u32::MAX, 1);
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            tx.send(true).unwrap();
        });
        let start = Instant::now();
        let e = poll_job("x", "j", q, S, 10 * S, start + 600 * S, Some(rx))
            .await
            .unwrap_err();
        assert!(matches!(e, CsError::JobInterrupted { .. }), "{e:?}");
        assert_eq!((Instant::now() - start).as_millis(), 2500);
    }

    #[tokio::test(start_paused = true)]
    async fn polling_goes_on_when_the_interrupt_sender_is_dropped() {
        let (q, _) = script(3, 1);
        let (tx, rx) = watch::channel(false);
        drop(tx);
        let start = Instant::now();
        let r = poll_job("x", "j", q, S, 10 * S, start + 600 * S, Some(rx)).await;
        assert_eq!(r.unwrap(), json!({"router": {"id": "r1"}}));
        // polls at 0, 1, 2.5, 4.75: the whole job, not stopped at the first sleep
        assert_eq!((Instant::now() - start).as_millis(), 4750);
    }

    #[tokio::test]
    async fn paging_across_three_pages() {
        let all: Vec<Value> = (0..7).map(|i| json!({"id": i})).collect();
        let asked = Mutex::new(Vec::new());
        let r = all_pages(3, |page| {
            asked.lock().unwrap().push(page);
            let start = ((page - 1) * 3) as usize;
            let slice: Vec<Value> = all.iter().skip(start).take(3).cloned().collect();
            let reply = if slice.is_empty() {
                json!({})
            } else {
                json!({"count": 7, "host": slice})
            };
            std::future::ready(Ok(reply))
        })
        .await
        .unwrap();
        assert_eq!(*asked.lock().unwrap(), vec![1, 2, 3]);
        assert_eq!(r["count"], 7);
        assert_eq!(r["host"].as_array().unwrap(), &all);
    }

    #[tokio::test]
    async fn paging_stops_on_an_exact_multiple_and_on_nothing() {
        let asked = AtomicU32::new(0);
        let r = all_pages(2, |page| {
            asked.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(if page <= 2 {
                json!({"count": 4, "zone": [{"p": page}, {"p": page}]})
            } else {
                json!({})
            }))
        })
        .await
        .unwrap();
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "count reached: no third request"
        );
        assert_eq!(r["count"], 4);
        let r = all_pages(2, |_| std::future::ready(Ok(json!({}))))
            .await
            .unwrap();
        assert_eq!(r, json!({}));
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(600)
    }

    fn unavailable() -> std::future::Ready<Result<Value, CsError>> {
        std::future::ready(Err(CsError::Http {
            command: "listZones".into(),
            status: 503,
            excerpt: String::new(),
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_starts_past_the_deadline() {
        let start = Instant::now();
        let n = AtomicU32::new(0);
        let deadline = start + Duration::from_millis(1500);
        let r = retrying("listZones", 3, S, deadline, || {
            n.fetch_add(1, Ordering::SeqCst);
            unavailable()
        })
        .await;
        // attempts at 0 and 1 s; the next would start at 3 s, past the deadline
        assert!(matches!(r, Err(CsError::Http { status: 503, .. })), "{r:?}");
        assert_eq!(n.load(Ordering::SeqCst), 2);
        assert_eq!((Instant::now() - start).as_millis(), 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_read_ends_at_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(7);
        let e = retrying("listRouters", 3, S, deadline, std::future::pending)
            .await
            .unwrap_err();
        assert_eq!(Instant::now() - start, Duration::from_secs(7));
        let msg = e.to_string();
        assert!(
            msg.contains("listRouters") && msg.contains("deadline") && msg.contains("read"),
            "{msg}"
        );
        assert!(!e.is_transient());
        // a hanging job poll too
        let e = poll_job(
            "rebootRouter",
            "j-7",
            std::future::pending,
            S,
            S,
            deadline,
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, CsError::JobDeadline { .. }), "{e:?}");
        assert_eq!(Instant::now() - start, Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn reads_retry_only_transient_failures() {
        let n = AtomicU32::new(0);
        let r = retrying("x", 3, Duration::from_millis(100), far(), || {
            let i = n.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if i < 2 {
                Err(CsError::Http {
                    command: "listZones".into(),
                    status: 503,
                    excerpt: String::new(),
                })
            } else {
                Ok(json!({"ok": true}))
            })
        })
        .await;
        assert!(r.is_ok());
        assert_eq!(n.load(Ordering::SeqCst), 3);
        // a 431 is final
        let n = AtomicU32::new(0);
        let r = retrying("x", 3, Duration::from_millis(100), far(), || {
            n.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Err(CsError::Api {
                command: "x".into(),
                status: 431,
                code: 431,
                cserrorcode: None,
                text: "no".into(),
            }))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(n.load(Ordering::SeqCst), 1);
        // gives up after the retries
        let n = AtomicU32::new(0);
        let _ = retrying("x", 2, Duration::from_millis(100), far(), || {
            n.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Err(CsError::Transport {
                command: "x".into(),
                reason: "reset".into(),
                sent: true,
                timeout: false,
            }))
        })
        .await;
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn ca_file_must_hold_certificates() {
        let creds = Credentials {
            endpoint: "https://ms.example.invalid/client/api".into(),
            api_key: "k".into(),
            secret_key: "s".into(),
        };
        let with = |path: PathBuf| Options {
            ca_file: Some(path),
            ..Options::default()
        };
        let dir = std::env::temp_dir();
        let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/cloudstack/testdata/test-ca.pem");
        assert!(Client::new(creds.clone(), with(ca)).is_ok());
        let junk = dir.join(format!("remedy-not-a-ca-{}.pem", std::process::id()));
        std::fs::write(&junk, "hello\n").unwrap();
        let e = Client::new(creds.clone(), with(junk.clone())).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        std::fs::remove_file(&junk).unwrap();
        let e = Client::new(creds, with(dir.join("remedy-no-such-ca.pem"))).unwrap_err();
        assert!(e.to_string().contains("CA file"), "{e}");
    }

    #[test]
    fn credentials_debug_hides_the_secret() {
        let c = Credentials {
            endpoint: "http://x".into(),
            api_key: "k".into(),
            secret_key: "s3cr3t-value".into(),
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
