//! A scripted transport for tests: answers from a table, records every call.
//!
//! Each rule matches an action by host (or any host) and by the command text (exact, or a
//! prefix) or the API command name, and returns a canned result. An action no rule answers is
//! an error, and is recorded as such, so a test can assert that nothing unexpected ran. Rules may
//! change the fake's own state (a small key/value map) so that a check after a change observes
//! the change, the way a real host would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{Access, Action, ActionResult, CmdOutput, Transport, TransportError};
use crate::inventory::Host;

/// One recorded call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub host: String,
    pub action: Action,
    pub access: Access,
}

type Responder = dyn Fn(&Action, &mut BTreeMap<String, String>) -> Result<ActionResult, TransportError>
    + Send
    + Sync;

struct Rule {
    host: Option<String>,
    matcher: Matcher,
    respond: Arc<Responder>,
}

enum Matcher {
    Exact(String),
    Prefix(String),
    Api(String),
}

impl Matcher {
    fn matches(&self, action: &Action) -> bool {
        match (self, action) {
            (Matcher::Exact(c), Action::Ssh { cmd }) => cmd == c,
            (Matcher::Prefix(p), Action::Ssh { cmd }) => cmd.starts_with(p.as_str()),
            (Matcher::Api(name), Action::Api(call)) => &call.command == name,
            _ => false,
        }
    }
}

#[derive(Default)]
struct Inner {
    rules: Vec<Rule>,
    calls: Vec<Call>,
    unexpected: Vec<Call>,
    state: BTreeMap<String, String>,
}

/// The fake. Cheap to clone: clones share rules, state and the call log.
#[derive(Clone, Default)]
pub struct FakeTransport {
    inner: Arc<Mutex<Inner>>,
}

impl FakeTransport {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&self, host: Option<&str>, matcher: Matcher, respond: Arc<Responder>) {
        self.lock().rules.push(Rule {
            host: host.map(str::to_string),
            matcher,
            respond,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking test thread must not hide the log from the assertions that follow.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answer an exact command on any host with a fixed output.
    pub fn on_cmd(&self, cmd: &str, out: CmdOutput) -> &Self {
        self.push(
            None,
            Matcher::Exact(cmd.into()),
            Arc::new(move |_, _| Ok(ActionResult::Ssh(out.clone()))),
        );
        self
    }

    /// Answer an exact command on one host.
    pub fn on_host_cmd(&self, host: &str, cmd: &str, out: CmdOutput) -> &Self {
        self.push(
            Some(host),
            Matcher::Exact(cmd.into()),
            Arc::new(move |_, _| Ok(ActionResult::Ssh(out.clone()))),
        );
        self
    }

    /// Answer commands starting with `prefix` with a function of the action and the fake state.
    pub fn on_prefix<F>(&self, prefix: &str, f: F) -> &Self
    where
        F: Fn(&Action, &mut BTreeMap<String, String>) -> Result<ActionResult, TransportError>
            + Send
            + Sync
            + 'static,
    {
        self.push(None, Matcher::Prefix(prefix.into()), Arc::new(f));
        self
    }

    /// Same, limited to one host.
    pub fn on_host_prefix<F>(&self, host: &str, prefix: &str, f: F) -> &Self
    where
        F: Fn(&Action, &mut BTreeMap<String, String>) -> Result<ActionResult, TransportError>
            + Send
            + Sync
            + 'static,
    {
        self.push(Some(host), Matcher::Prefix(prefix.into()), Arc::new(f));
        self
    }

    /// Answer an API command with a function of the call and the fake state.
    pub fn on_api<F>(&self, command: &str, f: F) -> &Self
    where
        F: Fn(&Action, &mut BTreeMap<String, String>) -> Result<ActionResult, TransportError>
            + Send
            + Sync
            + 'static,
    {
        self.push(None, Matcher::Api(command.into()), Arc::new(f));
        self
    }

    pub fn set_state(&self, key: &str, value: &str) {
        self.lock().state.insert(key.into(), value.into());
    }

    pub fn state(&self, key: &str) -> Option<String> {
        self.lock().state.get(key).cloned()
    }

    /// Every call, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Calls tagged mutating.
    pub fn mutating_calls(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| {
                c.access == Access::Mutating
                    || matches!(&c.action, Action::Api(a) if a.access() == Access::Mutating)
            })
            .collect()
    }

    /// Calls no rule answered.
    pub fn unexpected(&self) -> Vec<Call> {
        self.lock().unexpected.clone()
    }
}

#[async_trait]
impl Transport for FakeTransport {
    async fn run(
        &self,
        host: &Host,
        action: &Action,
        access: Access,
        _timeout: Duration,
    ) -> Result<ActionResult, TransportError> {
        let call = Call {
            host: host.name.clone(),
            action: action.clone(),
            access,
        };
        let mut inner = self.lock();
        inner.calls.push(call.clone());
        let rule = inner
            .rules
            .iter()
            .rev()
            .find(|r| r.host.as_deref().is_none_or(|h| h == host.name) && r.matcher.matches(action))
            .map(|r| r.respond.clone());
        match rule {
            Some(respond) => respond(action, &mut inner.state),
            None => {
                inner.unexpected.push(call);
                Err(TransportError::Other(format!(
                    "fake transport: no rule for `{action}` on {}",
                    host.name
                )))
            }
        }
    }
}
