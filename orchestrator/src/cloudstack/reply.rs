//! What the management server answers: envelopes, async job records and errors (reference §3).
//!
//! Every JSON reply is an object with one top-level key (`<command>response`, or
//! `errorresponse`); robust clients look inside whichever single key is there. Errors carry
//! `errorcode` (also the HTTP status), `cserrorcode` and `errortext`.
//!
//! Owned here: unwrapping, the typed error ([`CsError`]) and its messages. Messages never hold
//! the API key's secret, the signature or a URL with them.

use std::time::Duration;

use serde_json::{Map, Value};

/// Everything that can go wrong talking to CloudStack. Each variant names the command.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CsError {
    /// The server answered with an error envelope.
    #[error("{command}: CloudStack error {code}{}: {text}{}", cs_code(*cserrorcode), hint(*code))]
    Api {
        command: String,
        /// The HTTP status (normally equal to `code`).
        status: u16,
        code: u16,
        cserrorcode: Option<i64>,
        text: String,
    },
    /// An async job ended in failure (jobstatus 2).
    #[error("{command}: async job {jobid} failed with error {code}: {text}")]
    JobFailed {
        command: String,
        jobid: String,
        code: u16,
        text: String,
    },
    /// An async job was cancelled on the server (jobstatus 3).
    #[error("{command}: async job {jobid} was cancelled on the management server")]
    JobCancelled { command: String, jobid: String },
    /// The job was still running when the step's deadline came.
    #[error(
        "{command}: async job {jobid} still running after {}; it may yet complete — check it with \
         queryAsyncJobResult jobid={jobid}",
        humantime::format_duration(*waited)
    )]
    JobDeadline {
        command: String,
        jobid: String,
        waited: Duration,
    },
    /// We stopped waiting for a running job because the run was interrupted.
    #[error("{command}: stopped waiting for async job {jobid} (interrupted); it may yet complete")]
    JobInterrupted { command: String, jobid: String },
    /// The step's deadline passed before the call was answered. `sent`: the request may have
    /// reached the server; for a `mutating` call that means it may have acted.
    #[error(
        "{command}: no reply before the step's deadline; {}",
        match (*mutating, *sent) {
            (true, true) => "the server may or may not have acted on this change — check before retrying",
            (true, false) => "the change was not sent",
            (false, _) => "a read: nothing was changed",
        }
    )]
    Deadline {
        command: String,
        sent: bool,
        mutating: bool,
    },
    /// An HTTP reply that is not a CloudStack envelope (a proxy's 502, an HTML page...).
    #[error("{command}: HTTP {status} from the management server: {excerpt}")]
    Http {
        command: String,
        status: u16,
        excerpt: String,
    },
    /// The request could not be delivered or the reply not read. `sent` is false when the
    /// connection was never made, so the server cannot have acted.
    #[error("{command}: {reason}{}", if *sent { "" } else { " (not sent)" })]
    Transport {
        command: String,
        reason: String,
        sent: bool,
        timeout: bool,
    },
    /// A 200 reply we cannot read.
    #[error("{command}: unexpected reply: {reason}")]
    Decode { command: String, reason: String },
    /// The client cannot be set up (credentials, TLS).
    #[error("{0}")]
    Config(String),
}

fn cs_code(c: Option<i64>) -> String {
    c.map(|c| format!(" (cserrorcode {c})")).unwrap_or_default()
}

fn hint(code: u16) -> &'static str {
    match code {
        401 => " — check the API key and secret key, and that this machine's clock is right",
        429 => " — API rate limit reached",
        432 => " — the API is not available on this server or for this account",
        _ => "",
    }
}

impl CsError {
    /// The CloudStack error code, when the server gave one.
    pub fn code(&self) -> Option<u16> {
        match self {
            CsError::Api { code, .. } | CsError::JobFailed { code, .. } => Some(*code),
            CsError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether repeating the same *read* could succeed: connection problems, timeouts, 5xx and
    /// 429. Never consulted for mutating calls.
    pub fn is_transient(&self) -> bool {
        match self {
            CsError::Transport { .. } => true,
            CsError::Api { status, .. } | CsError::Http { status, .. } => {
                *status == 429 || (500..600).contains(status) && *status != 530
            }
            _ => false,
        }
    }
}

/// The object inside the single top-level key of a reply.
pub fn inner(body: &Value) -> Option<&Map<String, Value>> {
    let obj = body.as_object()?;
    let value = if obj.len() == 1 {
        obj.values().next()
    } else {
        obj.iter()
            .find(|(k, _)| k.ends_with("response"))
            .map(|(_, v)| v)
    }?;
    value.as_object()
}

/// Turns an HTTP reply into the envelope's content, or the error it carries.
pub fn parse(
    command: &str,
    status: u16,
    body: &[u8],
    x_description: Option<&str>,
) -> Result<Value, CsError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let content = json.as_ref().and_then(inner);
    if let Some(map) = content {
        if let Some(code) = map.get("errorcode").and_then(as_u16) {
            return Err(CsError::Api {
                command: command.into(),
                status,
                code,
                cserrorcode: map.get("cserrorcode").and_then(Value::as_i64),
                text: map
                    .get("errortext")
                    .and_then(Value::as_str)
                    .or(x_description)
                    .unwrap_or("(no errortext)")
                    .to_string(),
            });
        }
        if status == 200 {
            return Ok(Value::Object(map.clone()));
        }
    }
    if status == 200 {
        return Err(CsError::Decode {
            command: command.into(),
            reason: match json {
                None => "the body is not JSON (is response=json being ignored by a proxy?)".into(),
                Some(_) => "expected an object with one `...response` key".into(),
            },
        });
    }
    Err(CsError::Http {
        command: command.into(),
        status,
        excerpt: scrub(
            &x_description
                .map(str::to_string)
                .unwrap_or_else(|| excerpt(body)),
        ),
    })
}

fn as_u16(v: &Value) -> Option<u16> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The first line of a body, at most 200 characters, for messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut s: String = line.chars().take(200).collect();
    if line.chars().count() > 200 {
        s.push('…');
    }
    if s.is_empty() {
        "(empty body)".into()
    } else {
        s
    }
}

/// Removes what a proxy's error page may echo of a signed request: the query string after
/// `/client/api?`, and the values of `signature=` and `apiKey=` (any case) anywhere.
fn scrub(text: &str) -> String {
    let mut out = text.to_string();
    if let Some(at) = out.find("/client/api?") {
        let start = at + "/client/api?".len();
        let end = out[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
            .map_or(out.len(), |n| start + n);
        out.replace_range(start..end, "…");
    }
    for name in ["signature=", "apikey="] {
        let mut from = 0;
        while let Some(at) = out[from..].to_ascii_lowercase().find(name) {
            let start = from + at + name.len();
            let end = out[start..]
                .find(|c: char| {
                    c.is_whitespace() || matches!(c, '&' | '"' | '\'' | '<' | '>' | ';')
                })
                .map_or(out.len(), |n| start + n);
            out.replace_range(start..end, "********");
            from = start + "********".len();
        }
    }
    out
}

/// Where an async job stands, read from a `queryAsyncJobResult` reply.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Pending,
    Succeeded(Value),
    Failed { code: u16, text: String },
    Cancelled,
}

/// Reads `jobstatus` 0/1/2/3 and the result or error (reference §3.4).
/// Whether a `listAsyncJobs` item is a job of `command`: its `cmd` is the Java class named
/// after the command (`migrateVirtualMachine` -> `...MigrateVirtualMachineCmd`), compared
/// without case.
pub fn job_is_of(job: &Value, command: &str) -> bool {
    let cmd = job.get("cmd").and_then(Value::as_str).unwrap_or("");
    let class = cmd.rsplit('.').next().unwrap_or(cmd);
    class.eq_ignore_ascii_case(&format!("{command}cmd"))
}

pub fn job_state(reply: &Value) -> Result<JobState, String> {
    let status = reply
        .get("jobstatus")
        .and_then(Value::as_i64)
        .ok_or("no jobstatus in the reply")?;
    match status {
        0 => Ok(JobState::Pending),
        1 => Ok(JobState::Succeeded(
            reply.get("jobresult").cloned().unwrap_or(Value::Null),
        )),
        2 => {
            let result = reply.get("jobresult");
            let code = result
                .and_then(|r| r.get("errorcode"))
                .and_then(as_u16)
                .or_else(|| reply.get("jobresultcode").and_then(as_u16))
                .unwrap_or(530);
            let text = result
                .and_then(|r| r.get("errortext"))
                .and_then(Value::as_str)
                .unwrap_or("(no errortext)")
                .to_string();
            Ok(JobState::Failed { code, text })
        }
        3 => Ok(JobState::Cancelled),
        other => Err(format!("unknown jobstatus {other}")),
    }
}

/// The key of the item array in a list reply (`router`, `asyncjobs`...): the one array next
/// to `count`.
pub fn list_key(reply: &Map<String, Value>) -> Option<&str> {
    reply
        .iter()
        .find(|(k, v)| v.is_array() && k.as_str() != "uuidList")
        .map(|(k, _)| k.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_job_is_of_the_command_its_class_is_named_after() {
        let job = json!({"cmd": "org.apache.cloudstack.api.command.admin.vm.MigrateVMCmd"});
        assert!(!job_is_of(&job, "migrateVirtualMachine"));
        let job = json!({"cmd": "org.apache.cloudstack.api.command.admin.network.UpdatePhysicalNetworkCmd"});
        assert!(job_is_of(&job, "updatePhysicalNetwork"));
        assert!(!job_is_of(&job, "updatePhysical"));
        assert!(!job_is_of(&json!({}), "updatePhysicalNetwork"));
    }

    fn bytes(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn list_reply_is_unwrapped() {
        let body = bytes(json!({"listroutersresponse": {"count": 1, "router": [{"id": "r1"}]}}));
        let v = parse("listRouters", 200, &body, None).unwrap();
        assert_eq!(v, json!({"count": 1, "router": [{"id": "r1"}]}));
    }

    #[test]
    fn empty_list_is_an_empty_object() {
        let body = bytes(json!({"listroutersresponse": {}}));
        assert_eq!(parse("listRouters", 200, &body, None).unwrap(), json!({}));
    }

    #[test]
    fn sync_object_and_async_jobid() {
        let body = bytes(
            json!({"updateconfigurationresponse": {"configuration": {"name": "a", "value": "b"}}}),
        );
        assert_eq!(
            parse("updateConfiguration", 200, &body, None).unwrap()["configuration"]["value"],
            "b"
        );
        let body = bytes(json!({"restartvpcresponse": {"jobid": "j-1"}}));
        assert_eq!(
            parse("restartVPC", 200, &body, None).unwrap()["jobid"],
            "j-1"
        );
    }

    #[test]
    fn error_envelopes_of_every_shape() {
        // the command's own key, with uuidList and cserrorcode
        let body = bytes(
            json!({"listroutersresponse": {"uuidList": [], "errorcode": 431, "cserrorcode": 9999, "errortext": "bad page"}}),
        );
        match parse("listRouters", 431, &body, None).unwrap_err() {
            CsError::Api {
                code,
                cserrorcode,
                text,
                status,
                ..
            } => {
                assert_eq!(
                    (code, cserrorcode, text.as_str(), status),
                    (431, Some(9999), "bad page", 431)
                );
            }
            e => panic!("{e:?}"),
        }
        // errorresponse (unknown command) and the 401 hint, no secrets in it
        let body = bytes(
            json!({"errorresponse": {"errorcode": 401, "errortext": "unable to verify user credentials and/or request signature"}}),
        );
        let e = parse("listRouters", 401, &body, None).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("401") && msg.contains("secret key") && msg.contains("clock"),
            "{msg}"
        );
        assert!(!e.is_transient());
        // 530 sync error: not transient (the server did run the command)
        let body = bytes(json!({"x": {"errorcode": 530, "errortext": "boom"}}));
        assert!(!parse("x", 530, &body, None).unwrap_err().is_transient());
        // errorcode as a string, 429 transient
        let body =
            bytes(json!({"listzonesresponse": {"errorcode": "429", "errortext": "slow down"}}));
        let e = parse("listZones", 429, &body, None).unwrap_err();
        assert_eq!(e.code(), Some(429));
        assert!(e.is_transient());
        // non-JSON 503 from a proxy: transient, with an excerpt
        let e = parse(
            "listZones",
            503,
            b"<html>\nService Unavailable</html>",
            None,
        )
        .unwrap_err();
        assert!(e.is_transient());
        assert!(e.to_string().contains("HTTP 503"), "{e}");
        // X-Description used when the body has no text
        let e = parse(
            "listZones",
            432,
            b"",
            Some("The given command does not exist"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not exist"));
        // a 200 that is not JSON
        assert!(matches!(
            parse("listZones", 200, b"<xml/>", None),
            Err(CsError::Decode { .. })
        ));
    }

    #[test]
    fn proxy_pages_do_not_echo_the_signed_url() {
        let page = b"<html><body>502 Bad Gateway: upstream failed for GET /client/api?apiKey=AKxyz&command=listZones&signature=Zm9vYmFy%2B%3D&signatureVersion=3</body></html>";
        let msg = parse("listZones", 502, page, None).unwrap_err().to_string();
        assert!(
            msg.contains("HTTP 502") && msg.contains("/client/api?"),
            "{msg}"
        );
        for leak in ["AKxyz", "Zm9vYmFy", "signatureVersion"] {
            assert!(!msg.contains(leak), "{msg}");
        }
        // outside a /client/api URL too, any case, and in X-Description
        let e = parse(
            "x",
            502,
            b"bad request: SIGNATURE=abc123; apikey=KEY9 rejected",
            None,
        );
        let msg = e.unwrap_err().to_string();
        assert!(!msg.contains("abc123") && !msg.contains("KEY9"), "{msg}");
        assert!(msg.contains("rejected"), "{msg}");
        let e = parse("x", 502, b"", Some("denied signature=s3cr3t&x=1"));
        assert!(!e.unwrap_err().to_string().contains("s3cr3t"));
    }

    #[test]
    fn job_states() {
        assert_eq!(
            job_state(&json!({"jobstatus": 0})).unwrap(),
            JobState::Pending
        );
        assert_eq!(
            job_state(&json!({"jobstatus": 1, "jobresult": {"router": {"id": "r"}}})).unwrap(),
            JobState::Succeeded(json!({"router": {"id": "r"}}))
        );
        assert_eq!(
            job_state(&json!({"jobstatus": 2, "jobresultcode": 530, "jobresult": {"errorcode": 533, "errortext": "no vlan"}})).unwrap(),
            JobState::Failed { code: 533, text: "no vlan".into() }
        );
        assert_eq!(
            job_state(&json!({"jobstatus": 3})).unwrap(),
            JobState::Cancelled
        );
        assert!(job_state(&json!({})).is_err());
        assert!(job_state(&json!({"jobstatus": 7})).is_err());
    }
}
