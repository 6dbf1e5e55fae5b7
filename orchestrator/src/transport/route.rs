//! The transport the CLI uses: each action goes to the implementation for its host's
//! connection. Local hosts run through [`super::local::LocalTransport`]. SSH (russh) and the
//! CloudStack API client are separate pieces of work; until they are built, an action that needs
//! them fails as a result of that step, with a message saying so, and the run rolls back.

use std::time::Duration;

use async_trait::async_trait;

use super::local::LocalTransport;
use super::{Access, Action, ActionResult, Transport, TransportError};
use crate::inventory::{ConnectionKind, Host};

#[derive(Debug, Default)]
pub struct Router {
    local: LocalTransport,
}

#[async_trait]
impl Transport for Router {
    async fn run(
        &self,
        host: &Host,
        action: &Action,
        access: Access,
        timeout: Duration,
    ) -> Result<ActionResult, TransportError> {
        match (action, &host.conn.kind) {
            (Action::Api(call), _) => Err(TransportError::Unsupported(format!(
                "{}: this build has no CloudStack API client yet",
                call.command
            ))),
            (Action::Ssh { .. }, ConnectionKind::Local) => {
                self.local.run(host, action, access, timeout).await
            }
            (Action::Ssh { .. }, ConnectionKind::Ssh) => Err(TransportError::Unsupported(format!(
                "{}: this build has no SSH transport yet; use ansible_connection: local for hosts remedy runs on",
                host.name
            ))),
        }
    }
}
