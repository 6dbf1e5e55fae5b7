//! How remedy reaches the world: the [`Transport`] trait and the concrete actions it carries.
//!
//! Everything that leaves the controller is an [`Action`]: a shell command on a host or a
//! CloudStack API call. Every action is tagged with its [`Access`] by the step that asks for it,
//! so a guard ([`guard::DryRunGuard`]) can refuse any mutating call outright in a dry-run, and
//! the test fake ([`fake::FakeTransport`]) can record and fail on them.
//!
//! Owned here: the action/result types and the trait. Not here: what to run (the runner and the
//! modules decide), and the real SSH and CloudStack clients, which plug in behind the trait.

pub mod api;
pub mod fake;
pub mod guard;
pub mod local;
pub mod route;
pub mod ssh;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::inventory::Host;

/// Whether an action can change anything. Decided by the step, never by the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    ReadOnly,
    Mutating,
}

/// One concrete, fully rendered action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A command line run by the remote user's shell (already quoted by the templating layer).
    Ssh { cmd: String },
    /// A CloudStack API call. Async commands are awaited by the transport.
    Api(ApiCall),
}

impl Action {
    pub fn ssh(cmd: impl Into<String>) -> Self {
        Action::Ssh { cmd: cmd.into() }
    }

    pub fn api<K: Into<String>, V: Into<String>>(
        command: &str,
        args: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Action::Api(ApiCall {
            command: command.to_string(),
            args: args
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Ssh { cmd } => write!(f, "{cmd}"),
            Action::Api(call) => write!(f, "{call}"),
        }
    }
}

/// A CloudStack API call: command name and string arguments (lists comma-joined, maps indexed),
/// exactly as they will be signed and sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCall {
    pub command: String,
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

impl ApiCall {
    /// CloudStack's own convention: `list*`, `query*`, `get*` are read-only; anything else may
    /// change the cloud. Exceptions (`NOT_READ_ONLY`): `getUploadParamsFor*` creates upload
    /// state on the server, `listAndSwitchSamlAccount` switches the session's account.
    pub fn access(&self) -> Access {
        let c = self.command.as_str();
        if NOT_READ_ONLY.iter().any(|p| c.starts_with(p)) {
            return Access::Mutating;
        }
        if ["list", "query", "get"].iter().any(|p| {
            c.len() > p.len()
                && c.starts_with(p)
                && c[p.len()..].starts_with(|ch: char| ch.is_ascii_uppercase())
        }) {
            Access::ReadOnly
        } else {
            Access::Mutating
        }
    }
}

/// Command names (or prefixes) that look like reads but change state on the server.
const NOT_READ_ONLY: &[&str] = &["getUploadParamsFor", "listAndSwitchSamlAccount"];

impl fmt::Display for ApiCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.command)?;
        for (k, v) in &self.args {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// What a shell command left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmdOutput {
    /// Exit status; `None` when the command was ended by a signal.
    pub rc: Option<i32>,
    /// The signal that ended the command, e.g. `KILL`.
    pub signal: Option<String>,
    pub stdout: String,
    pub stderr: String,
    /// Bytes of output dropped beyond the capture cap (counted, not kept).
    pub dropped_bytes: u64,
}

impl CmdOutput {
    pub fn ok(stdout: impl Into<String>) -> Self {
        CmdOutput {
            rc: Some(0),
            stdout: stdout.into(),
            ..Default::default()
        }
    }

    pub fn exit(rc: i32, stdout: impl Into<String>, stderr: impl Into<String>) -> Self {
        CmdOutput {
            rc: Some(rc),
            stdout: stdout.into(),
            stderr: stderr.into(),
            ..Default::default()
        }
    }
}

/// The result of one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionResult {
    Ssh(CmdOutput),
    /// The API reply with its envelope removed: the object inside `<command>response`, or for an
    /// async command the job's `jobresult`.
    Api(serde_json::Value),
}

/// Why an action could not be carried out at all (as opposed to a command that ran and failed).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("could not reach {host}: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A CloudStack error with its code; `text` is the complete message (it names the command).
    #[error("{text}")]
    Api {
        command: String,
        code: u16,
        text: String,
    },
    #[error("refused a mutating action during a dry-run: {0}")]
    DryRunViolation(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Other(String),
}

impl TransportError {
    /// Whether the action certainly did not run: it was refused before it reached the host or
    /// the management server (unreachable, not sent, refused by remedy itself), or CloudStack
    /// answered that it failed. Everything else (a timeout after sending, a connection lost
    /// mid-command, a reply that never came) leaves its outcome unknown.
    pub fn never_ran(&self) -> bool {
        matches!(
            self,
            TransportError::Unreachable { .. }
                | TransportError::Api { .. }
                | TransportError::DryRunViolation(_)
                | TransportError::Unsupported(_)
        )
    }
}

/// Carries actions to hosts. One implementation per way of reaching a host; the runner never
/// knows which one it talks to.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Run `action` against `host` (for API calls, the inventory's CloudStack controller host).
    /// `access` is the caller's classification; implementations must not second-guess it but may
    /// refuse (the dry-run guard does).
    async fn run(
        &self,
        host: &Host,
        action: &Action,
        access: Access,
        timeout: Duration,
    ) -> Result<ActionResult, TransportError>;

    /// The run's inventory was read again (`refresh_inventory`): jump hosts named from now on
    /// are looked up in `inventory`. Connections already made stay; a host whose address,
    /// port or user changed gets a new one.
    fn inventory_changed(&self, _inventory: &crate::inventory::Inventory) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_access_follows_cloudstack_verbs() {
        let ro = |c: &str| {
            ApiCall {
                command: c.into(),
                args: Default::default(),
            }
            .access()
        };
        assert_eq!(ro("listRouters"), Access::ReadOnly);
        assert_eq!(ro("queryAsyncJobResult"), Access::ReadOnly);
        // reads by name, but they create upload state or switch the session
        assert_eq!(ro("getUploadParamsForTemplate"), Access::Mutating);
        assert_eq!(ro("getUploadParamsForVolume"), Access::Mutating);
        assert_eq!(ro("getUploadParamsForIso"), Access::Mutating);
        assert_eq!(ro("listAndSwitchSamlAccount"), Access::Mutating);
        assert_eq!(ro("getVMPassword"), Access::ReadOnly);
        assert_eq!(ro("rebootRouter"), Access::Mutating);
        assert_eq!(ro("updatePhysicalNetwork"), Access::Mutating);
        // a name that merely starts with the letters is not a read
        assert_eq!(ro("listen"), Access::Mutating);
        assert_eq!(ro("list"), Access::Mutating);
    }
}
