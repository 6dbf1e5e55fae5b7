//! Helpers for the tests that drive remedy's SSH transport (against the simulated hosts, the
//! real lab and the benchmark): options without agent or default keys, a transport for an
//! inventory's text, one command, and the reason of an `Unreachable` error.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use remedy::inventory::Inventory;
use remedy::transport::ssh::{SshOptions, SshTransport};
use remedy::transport::{Access, Action, ActionResult, CmdOutput, Transport as _, TransportError};

/// Options that use only the inventory's keys and this `known_hosts` file.
pub fn options(known_hosts: &Path) -> SshOptions {
    SshOptions {
        connect_timeout: Duration::from_secs(10),
        known_hosts: known_hosts.to_path_buf(),
        keepalive: Some(Duration::from_secs(5)),
        passphrase_env: None,
        use_agent: false,
        agent_socket: None,
        default_keys: Vec::new(),
        max_sessions: 10,
    }
}

/// A fresh transport (no pooled connections) for an inventory's text.
pub fn transport(inventory: &str, known_hosts: &Path) -> (Arc<Inventory>, SshTransport) {
    let inv = Arc::new(Inventory::from_str("test-inventory.yml", inventory).expect("inventory"));
    let t = SshTransport::new(inv.clone(), options(known_hosts));
    (inv, t)
}

/// One read-only command on an inventory host.
pub async fn run(
    t: &SshTransport,
    inv: &Inventory,
    host: &str,
    cmd: &str,
    timeout: Duration,
) -> Result<CmdOutput, TransportError> {
    let h = inv.host(host).unwrap_or_else(|| panic!("no host {host}"));
    match t
        .run(h, &Action::ssh(cmd), Access::ReadOnly, timeout)
        .await?
    {
        ActionResult::Ssh(out) => Ok(out),
        other => panic!("unexpected result {other:?}"),
    }
}

/// The reason of an `Unreachable` error (any other error fails the test).
pub fn unreachable_reason(e: TransportError) -> String {
    match e {
        TransportError::Unreachable { reason, .. } => reason,
        other => panic!("expected Unreachable, got {other:?}"),
    }
}
