//! CloudStack API actions: signed calls through [`crate::cloudstack::Client`], connecting on
//! first use (for an inventory that says `simulator:`, that starts the simulated zone).
//!
//! The HTTP method follows the step's classification: read-only actions are GETs (retried on
//! transient failures, lists walked to the end), mutating ones POSTs sent exactly once, async
//! jobs awaited within the step's timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use super::{Access, Action, ActionResult, TransportError};
use crate::cloudstack::{self, Connection, Method, Options};
use crate::inventory::CloudStackEndpoint;

#[derive(Debug)]
pub struct ApiTransport {
    endpoint: Option<CloudStackEndpoint>,
    options: Options,
    conn: OnceCell<Arc<Connection>>,
}

impl ApiTransport {
    pub fn new(endpoint: Option<CloudStackEndpoint>, options: Options) -> Self {
        ApiTransport {
            endpoint,
            options,
            conn: OnceCell::new(),
        }
    }

    /// The connection, made on first use. A failure is not cached: the next call tries again.
    pub async fn connection(&self) -> Result<Arc<Connection>, TransportError> {
        let Some(ep) = &self.endpoint else {
            return Err(TransportError::Unsupported(
                "no CloudStack endpoint: set remedy_cloudstack in the inventory's all.vars \
                 (endpoint + api_key + secret_key, cmk_profile, or simulator)"
                    .into(),
            ));
        };
        self.conn
            .get_or_try_init(|| async {
                cloudstack::connect(ep, self.options.clone())
                    .await
                    .map(Arc::new)
                    .map_err(|e| TransportError::Other(e.to_string()))
            })
            .await
            .cloned()
    }

    pub async fn run(
        &self,
        action: &Action,
        access: Access,
        timeout: Duration,
    ) -> Result<ActionResult, TransportError> {
        let Action::Api(call) = action else {
            return Err(TransportError::Unsupported(
                "the API transport only carries API calls".into(),
            ));
        };
        let conn = self.connection().await?;
        let method = match access {
            Access::ReadOnly => Method::Get,
            Access::Mutating => Method::Post,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        conn.client
            .call(&call.command, &call.args, method, deadline, None)
            .await
            .map(ActionResult::Api)
            .map_err(TransportError::from)
    }
}

impl From<cloudstack::CsError> for TransportError {
    fn from(e: cloudstack::CsError) -> Self {
        use cloudstack::CsError as E;
        match e {
            // Never sent: the server cannot have acted.
            E::Transport { sent: false, .. } | E::Deadline { sent: false, .. } => {
                TransportError::Unreachable {
                    host: "the CloudStack API".into(),
                    reason: e.to_string(),
                }
            }
            E::Transport { timeout: true, .. } => TransportError::Other(e.to_string()),
            E::Config(text) => TransportError::Other(text),
            other => match other.code() {
                Some(code) => TransportError::Api {
                    command: command_of(&other),
                    code,
                    text: other.to_string(),
                },
                None => TransportError::Other(other.to_string()),
            },
        }
    }
}

fn command_of(e: &cloudstack::CsError) -> String {
    use cloudstack::CsError as E;
    match e {
        E::Api { command, .. }
        | E::JobFailed { command, .. }
        | E::JobCancelled { command, .. }
        | E::JobDeadline { command, .. }
        | E::JobInterrupted { command, .. }
        | E::Http { command, .. }
        | E::Transport { command, .. }
        | E::Decode { command, .. }
        | E::Deadline { command, .. } => command.clone(),
        E::Config(_) => String::new(),
    }
}
