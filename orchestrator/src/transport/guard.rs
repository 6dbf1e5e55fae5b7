//! The dry-run guard: a transport wrapper that refuses every mutating action.
//!
//! Dry-run safety does not rest on the runner alone: in a dry-run the real transport is always
//! wrapped in [`DryRunGuard`], so even a bug that asked for a change could not perform it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Access, Action, ActionResult, Transport, TransportError};
use crate::inventory::Host;

pub struct DryRunGuard {
    inner: Arc<dyn Transport>,
}

impl DryRunGuard {
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        DryRunGuard { inner }
    }
}

#[async_trait]
impl Transport for DryRunGuard {
    async fn run(
        &self,
        host: &Host,
        action: &Action,
        access: Access,
        timeout: Duration,
    ) -> Result<ActionResult, TransportError> {
        // API calls are re-classified here from the command name, independently of the caller.
        let api_mutates = matches!(action, Action::Api(call) if call.access() == Access::Mutating);
        if access == Access::Mutating || api_mutates {
            return Err(TransportError::DryRunViolation(format!(
                "{} on {}",
                action, host.name
            )));
        }
        self.inner.run(host, action, access, timeout).await
    }

    fn inventory_changed(&self, inventory: &crate::inventory::Inventory) {
        self.inner.inventory_changed(inventory)
    }
}
