//! The transport the CLI uses: each action goes to the implementation for its kind and host.
//! API calls go to the CloudStack client ([`super::api::ApiTransport`], set up from the
//! inventory's `remedy_cloudstack`); commands on `ansible_connection: local` hosts run through
//! [`super::local::LocalTransport`]; every other host is reached over SSH
//! ([`super::ssh::SshTransport`], one pooled connection per host, jump hosts included).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::api::ApiTransport;
use super::local::LocalTransport;
use super::ssh::{SshOptions, SshTransport};
use super::{Access, Action, ActionResult, Transport, TransportError};
use crate::cloudstack::Options;
use crate::inventory::{ConnectionKind, Host, Inventory};

#[derive(Debug)]
pub struct Router {
    local: LocalTransport,
    api: Arc<ApiTransport>,
    ssh: SshTransport,
}

impl Router {
    /// Routes for this inventory (its CloudStack endpoint, if any).
    pub fn for_inventory(inventory: &Inventory) -> Self {
        Router {
            local: LocalTransport,
            api: Arc::new(ApiTransport::new(
                inventory.cloudstack().cloned(),
                Options::default(),
            )),
            ssh: SshTransport::new(Arc::new(inventory.clone()), SshOptions::default()),
        }
    }

    /// Routes for this inventory, with an API transport already in use (the one that read the
    /// zone for the inventory: with the embedded simulator, the same zone).
    pub fn with_api(inventory: &Inventory, api: Arc<ApiTransport>) -> Self {
        Router {
            local: LocalTransport,
            api,
            ssh: SshTransport::new(Arc::new(inventory.clone()), SshOptions::default()),
        }
    }

    /// Routes for this inventory whose SSH connections come from (and stay in) the daemon's
    /// `pool`; `source` names the inventory (see [`SshTransport::warm`]).
    pub fn warm(
        inventory: &Inventory,
        api: Arc<ApiTransport>,
        pool: &Arc<super::ssh::WarmPool>,
        source: String,
    ) -> Self {
        Router {
            local: LocalTransport,
            api,
            ssh: SshTransport::warm(Arc::new(inventory.clone()), pool, source),
        }
    }

    /// The API side, e.g. to reach the embedded simulator.
    pub fn api(&self) -> &Arc<ApiTransport> {
        &self.api
    }
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
            (Action::Api(_), _) => self.api.run(action, access, timeout).await,
            (Action::Ssh { .. }, ConnectionKind::Local) => {
                self.local.run(host, action, access, timeout).await
            }
            (Action::Ssh { .. }, ConnectionKind::Ssh) => {
                self.ssh.run(host, action, access, timeout).await
            }
        }
    }

    fn inventory_changed(&self, inventory: &Inventory) {
        self.ssh.set_inventory(Arc::new(inventory.clone()));
    }
}
