//! The SSH transport (russh): commands on inventory hosts, directly or through jump hosts.
//!
//! Owned here: [`SshTransport`] and its [`SshOptions`], and what a command goes through on its
//! way to a host: `become` wrapping, getting the host's pooled connection, opening an exec
//! channel (reconnecting once if the connection died while idle), and mapping every failure to a
//! [`TransportError`] an operator can act on.
//!
//! The pieces: [`route`] (the chain of hops reaching a host, `ProxyJump` parsing),
//! [`known_hosts`] (host key policy, `known_hosts` files, fingerprints), `auth` (which
//! identities are offered), `session` (one connection: handshake, host key check, auth),
//! `pool` (one connection per hop chain for the whole run), `warm` (one pool for every run of a
//! daemon: cap, idle timeout, inventory checks, counters) and `exec` (one command on one
//! channel).
//!
//! # Connections
//!
//! A host gets one connection for the whole run, made by its first command (concurrent first
//! commands wait for that one attempt) and shared by all its commands, several at once (up to
//! [`SshOptions::max_sessions`] channels; more wait for a free one). A jump host's connection is
//! shared in the same way by every host behind it. If opening a channel fails because the
//! connection died while idle, the transport reconnects once and opens the channel again; a
//! command whose exec request was sent is never sent again.
//!
//! A daemon's runs share a [`WarmPool`] instead ([`SshTransport::warm`]): connections stay open
//! between runs, and any failed command drops its connection so that the next one reconnects
//! (and checks the host key again).
//!
//! # Timeouts
//!
//! Connecting has its own limit ([`SshOptions::connect_timeout`], per hop). The timeout given
//! to [`Transport::run`] starts once the connection is up and covers waiting for a channel,
//! opening it and the command. When it passes, the server is asked to `KILL` the command, the
//! channel is closed and [`TransportError::Timeout`] returned. OpenSSH honours that signal only
//! in non-root sessions; as root (system VMs) the command loses its output and dies at its next
//! write, or runs until it ends.
//!
//! # become
//!
//! With `ansible_become` and a user other than root, the command line runs as
//! `sudo -n -- /bin/sh -c '<command line>'`: sudo needs a program to run a command line, and
//! `-n` makes a password prompt fail at once with sudo's own message instead of hanging.

pub mod known_hosts;
pub mod route;

mod auth;
mod exec;
mod pool;
mod session;
mod warm;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use russh::client::Msg;
use russh::{Channel, ChannelOpenFailure};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::{Access, Action, ActionResult, Transport, TransportError};
use crate::inventory::{ConnectionKind, Host, Inventory};
use exec::ExecError;
pub use pool::Limits as PoolLimits;
use pool::{DropReason, Pool, Usage};
use route::Hop;
use session::{Connection, Settings};
pub use warm::{
    PoolStats, WarmPool, DEFAULT_IDLE as POOL_DEFAULT_IDLE, DEFAULT_MAX as POOL_DEFAULT_MAX,
};

/// The environment variable read for key passphrases unless configured otherwise.
pub const DEFAULT_PASSPHRASE_ENV: &str = "REMEDY_SSH_PASSPHRASE";

/// How the SSH transport connects.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// Limit for TCP connect, handshake and authentication of one hop (default 10 s).
    pub connect_timeout: Duration,
    /// The `known_hosts` file checked, and appended to under `accept-new`
    /// (default `~/.ssh/known_hosts`).
    pub known_hosts: PathBuf,
    /// Send a keepalive after this long without traffic; three unanswered ones close the
    /// connection (default 15 s; `None` disables).
    pub keepalive: Option<Duration>,
    /// The environment variable holding the passphrase of encrypted keys
    /// (default `REMEDY_SSH_PASSPHRASE`; `None`: encrypted keys cannot be used).
    pub passphrase_env: Option<String>,
    /// Offer the ssh-agent's identities (default: true when `SSH_AUTH_SOCK` is set).
    pub use_agent: bool,
    /// The agent's socket (default `$SSH_AUTH_SOCK`).
    pub agent_socket: Option<PathBuf>,
    /// Keys tried last, when they exist (default `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`).
    pub default_keys: Vec<PathBuf>,
    /// Commands run at once on one connection; sshd refuses more than its `MaxSessions`
    /// (default 10, OpenSSH's default).
    pub max_sessions: usize,
}

impl Default for SshOptions {
    fn default() -> Self {
        let agent_socket = std::env::var_os("SSH_AUTH_SOCK")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        SshOptions {
            connect_timeout: Duration::from_secs(10),
            known_hosts: dirs::home_dir()
                .unwrap_or_default()
                .join(".ssh")
                .join("known_hosts"),
            keepalive: Some(Duration::from_secs(15)),
            passphrase_env: Some(DEFAULT_PASSPHRASE_ENV.to_string()),
            use_agent: agent_socket.is_some(),
            agent_socket,
            default_keys: auth::default_key_paths(),
            max_sessions: 10,
        }
    }
}

/// Runs commands over SSH. One value per run: it holds the run's connections, or uses the
/// daemon's [`WarmPool`].
pub struct SshTransport {
    /// Resolves jump host names; replaced when the run's inventory is read again.
    inventory: std::sync::RwLock<Arc<Inventory>>,
    pool: Arc<Pool>,
    /// What this run did with the pool (connections made, chains used).
    usage: Usage,
    /// The daemon's pool, when the connections outlive the run.
    warm: Option<Arc<WarmPool>>,
}

/// The connection settings of `opts`.
pub(crate) fn settings_of(opts: SshOptions) -> Settings {
    Settings {
        connect_timeout: opts.connect_timeout,
        known_hosts: opts.known_hosts,
        keepalive: opts.keepalive,
        passphrase_env: opts.passphrase_env,
        agent_socket: opts.agent_socket.filter(|_| opts.use_agent),
        default_keys: opts.default_keys,
        max_sessions: opts.max_sessions,
    }
}

impl std::fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTransport").finish_non_exhaustive()
    }
}

impl SshTransport {
    /// A transport for the hosts of `inventory` (which also resolves jump host names).
    pub fn new(inventory: Arc<Inventory>, opts: SshOptions) -> Self {
        SshTransport {
            inventory: std::sync::RwLock::new(inventory),
            pool: Arc::new(Pool::new(settings_of(opts), None)),
            usage: Usage::default(),
            warm: None,
        }
    }

    /// A run's transport on the daemon's `pool`: `source` names the inventory (its paths), so
    /// that runs of one inventory share connections and another inventory's change leaves
    /// them alone. The caller checks the pool against the inventory first
    /// ([`WarmPool::sync`]).
    pub fn warm(inventory: Arc<Inventory>, pool: &Arc<WarmPool>, source: String) -> Self {
        SshTransport {
            inventory: std::sync::RwLock::new(inventory),
            pool: pool.pool.clone(),
            usage: Usage::new(source),
            warm: Some(pool.clone()),
        }
    }

    /// The inventory jump host names are looked up in from now on (after a refresh). Pooled
    /// connections are keyed by address, port and user as well as name, so a host that moved
    /// gets a new connection; on the daemon's pool, the connections of hosts that are gone or
    /// changed are closed.
    pub fn set_inventory(&self, inventory: Arc<Inventory>) {
        *self.inventory.write().unwrap_or_else(|e| e.into_inner()) = inventory.clone();
        if let (Some(warm), Ok(rt)) = (&self.warm, tokio::runtime::Handle::try_current()) {
            let (warm, source) = (warm.clone(), self.usage.source.clone());
            rt.spawn(async move { warm.sync(&source, None, &inventory).await });
        }
    }

    fn inventory(&self) -> Arc<Inventory> {
        self.inventory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many SSH connections this transport has made to `host` (an inventory host name, or
    /// a jump entry as written when it names no inventory host), reconnections included.
    pub fn connections_made(&self, host: &str) -> usize {
        self.usage.connections_made(host)
    }

    /// Says goodbye on every open connection (targets before the jump hosts they go through
    /// is not guaranteed; a jump host's disconnect also ends what it tunnels).
    pub async fn disconnect_all(&self) {
        for conn in self.pool.all().await {
            let _ = conn
                .handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    "remedy run finished",
                    "en",
                )
                .await;
        }
    }

    /// A session channel on the host's connection, with a slot for it, reconnecting once when
    /// the pooled connection turns out to be dead. A server refusing the channel (sshd does so,
    /// as "connect failed", when its `MaxSessions` are taken, e.g. by timed-out commands that
    /// have not exited yet) is asked again with a growing pause until the deadline.
    async fn open_channel(
        &self,
        host: &Host,
        hops: &[Hop],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(Channel<Msg>, OwnedSemaphorePermit, Arc<Connection>), TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable {
            host: host.name.clone(),
            reason,
        };
        let mut reconnected = false;
        let mut pause = Duration::from_millis(50);
        loop {
            let conn = self
                .pool
                .get(hops, &self.usage)
                .await
                .map_err(unreachable)?;
            let permit = tokio::time::timeout_at(deadline, conn.sessions.clone().acquire_owned())
                .await
                .map_err(|_| TransportError::Timeout(timeout))?
                .map_err(|_| TransportError::Other("session slots closed".into()))?;
            let error =
                match tokio::time::timeout_at(deadline, conn.handle.channel_open_session()).await {
                    Err(_) => return Err(TransportError::Timeout(timeout)),
                    Ok(Ok(channel)) => {
                        tracing::debug!(host = %host.name, channel = %channel.id(), "channel open");
                        return Ok((channel, permit, conn));
                    }
                    Ok(Err(e)) => e,
                };
            drop(permit);
            match error {
                e if connection_gone(&e, &conn) => {
                    if reconnected {
                        return Err(unreachable(format!(
                            "the connection was lost before the command was sent: {}",
                            session::describe(&e)
                        )));
                    }
                    tracing::debug!(
                        host = %host.name, error = %e,
                        "connection dropped while idle; reconnecting once"
                    );
                    self.pool
                        .discard(&conn.key, &conn, DropReason::Closed)
                        .await;
                    reconnected = true;
                }
                russh::Error::ChannelOpenFailure(
                    reason @ (ChannelOpenFailure::AdministrativelyProhibited
                    | ChannelOpenFailure::ConnectFailed
                    | ChannelOpenFailure::ResourceShortage),
                ) if Instant::now() + pause < deadline => {
                    tracing::debug!(
                        host = %host.name, ?reason, "no room for a session channel; retrying"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                russh::Error::ChannelOpenFailure(reason) => {
                    return Err(TransportError::Other(format!(
                        "{}: the server refused to open a session channel ({reason:?}); \
                         sshd's MaxSessions may be used up by earlier commands still running",
                        host.name
                    )))
                }
                e => {
                    return Err(TransportError::Other(format!(
                        "{}: cannot open a session channel: {}",
                        host.name,
                        session::describe(&e)
                    )))
                }
            }
        }
    }
}

/// Whether a channel open failed because the connection itself is gone (as opposed to the
/// server refusing the channel).
fn connection_gone(e: &russh::Error, conn: &Connection) -> bool {
    conn.is_closed()
        || matches!(
            e,
            russh::Error::SendError
                | russh::Error::Disconnect
                | russh::Error::HUP
                | russh::Error::RecvError
                | russh::Error::IO(_)
        )
}

/// The command line as sent: unchanged, or wrapped in `sudo -n -- /bin/sh -c` for `become`
/// as a user other than root.
pub fn command_line(cmd: &str, user: &str, become_: bool) -> Result<String, String> {
    if !become_ || user == "root" {
        return Ok(cmd.to_string());
    }
    let quoted = shlex::try_quote(cmd)
        .map_err(|_| "the command line contains a NUL byte and cannot be passed to sudo")?;
    Ok(format!("sudo -n -- /bin/sh -c {quoted}"))
}

/// The host variable that makes the last jump host run `ssh` itself, with this key (a path on
/// the jump host), instead of a tunnel with a key the controller holds.
pub const NESTED_KEY_VAR: &str = "remedy_nested_ssh_key";

/// The command a jump host runs to reach `target` with its own `key`: OpenSSH in batch mode,
/// host keys not checked (as CloudStack's own scripts reach system VMs on the link-local
/// network, whose keys change at every re-creation), the command line as one argument.
fn nested_command(
    key: &str,
    target: &crate::inventory::Connection,
    line: &str,
) -> Result<String, String> {
    let q = crate::quote::shell_quote;
    Ok(format!(
        "ssh -i {} -p {} -o BatchMode=yes -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 -o LogLevel=ERROR -- {} {}",
        q(key)?,
        target.port,
        q(&format!("{}@{}", target.user, target.address))?,
        q(line)?
    ))
}

impl SshTransport {
    /// Runs `line` on `host` through its last jump host's own `ssh` client (see
    /// [`NESTED_KEY_VAR`]). ssh's exit status 255 means it could not reach the host.
    async fn run_nested(
        &self,
        host: &Host,
        key: &serde_json::Value,
        line: &str,
        access: Access,
        timeout: Duration,
    ) -> Result<ActionResult, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable {
            host: host.name.clone(),
            reason,
        };
        let key = key
            .as_str()
            .ok_or_else(|| unreachable(format!("{NESTED_KEY_VAR} must be a path (a string)")))?;
        let jump_name = host.conn.jump.last().ok_or_else(|| {
            unreachable(format!("{NESTED_KEY_VAR} needs a jump host (remedy_jump)"))
        })?;
        let inventory = self.inventory();
        let jump = inventory.host(jump_name).ok_or_else(|| {
            unreachable(format!(
                "{NESTED_KEY_VAR}: the jump host {jump_name:?} must be an inventory host"
            ))
        })?;
        let wrapped = nested_command(key, &host.conn, line).map_err(&unreachable)?;
        match self
            .run(jump, &Action::ssh(wrapped), access, timeout)
            .await?
        {
            ActionResult::Ssh(out) if out.rc == Some(255) => Err(unreachable(format!(
                "{jump_name} could not reach {}@{}:{} with its key {key}: {}",
                host.conn.user,
                host.conn.address,
                host.conn.port,
                out.stderr.trim()
            ))),
            other => Ok(other),
        }
    }
}

#[async_trait]
impl Transport for SshTransport {
    async fn run(
        &self,
        host: &Host,
        action: &Action,
        _access: Access,
        timeout: Duration,
    ) -> Result<ActionResult, TransportError> {
        let Action::Ssh { cmd } = action else {
            return Err(TransportError::Unsupported(format!(
                "{}: the SSH transport runs commands, not API calls",
                host.name
            )));
        };
        if host.conn.kind != ConnectionKind::Ssh {
            return Err(TransportError::Unsupported(format!(
                "{}: ansible_connection is local; the SSH transport does not run its commands",
                host.name
            )));
        }
        let line = command_line(cmd, &host.conn.user, host.conn.become_)
            .map_err(|e| TransportError::Other(format!("{}: {e}", host.name)))?;
        if let Some(key) = host.vars.get(NESTED_KEY_VAR).filter(|v| !v.is_null()) {
            return self.run_nested(host, key, &line, _access, timeout).await;
        }
        let hops = route::chain(host, &self.inventory()).map_err(|reason| {
            TransportError::Unreachable {
                host: host.name.clone(),
                reason,
            }
        })?;

        // The connection has its own limit; the command's timeout starts once it is there.
        self.pool
            .get(&hops, &self.usage)
            .await
            .map_err(|reason| TransportError::Unreachable {
                host: host.name.clone(),
                reason,
            })?;
        let deadline = Instant::now() + timeout;
        let (channel, permit, conn) = self.open_channel(host, &hops, deadline, timeout).await?;
        let result = exec::run(channel, &host.name, &line, deadline).await;
        drop(permit);
        if result.is_err() && self.warm.is_some() {
            // On the daemon's pool, a connection a command failed on is not trusted again.
            self.pool.discard(&conn.key, &conn, DropReason::Error).await;
        }
        drop(conn);
        match result {
            Ok(out) => Ok(ActionResult::Ssh(out)),
            Err(ExecError::Timeout) => Err(TransportError::Timeout(timeout)),
            Err(ExecError::Refused) => Err(TransportError::Other(format!(
                "{}: the server refused to run the command (exec request denied)",
                host.name
            ))),
            Err(ExecError::Lost) => Err(TransportError::Other(format!(
                "{}: the connection was lost mid-command; the command may or may not have run",
                host.name
            ))),
            Err(ExecError::NotSent(e)) => Err(TransportError::Unreachable {
                host: host.name.clone(),
                reason: format!("the connection was lost before the command was sent: {e}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_command_quotes_the_key_target_and_line() {
        let inv = Inventory::from_str(
            "i.yml",
            "all:\n  hosts:\n    r: { ansible_host: 169.254.3.10, ansible_port: 3922 }\n",
        )
        .unwrap();
        let conn = &inv.host("r").unwrap().conn;
        let c = nested_command("/root/.ssh/id_rsa.cloud", conn, "echo 'a b'; exit 3").unwrap();
        assert_eq!(
            c,
            "ssh -i /root/.ssh/id_rsa.cloud -p 3922 -o BatchMode=yes -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 -o LogLevel=ERROR -- \
             root@169.254.3.10 'echo '\\''a b'\\''; exit 3'"
        );
        assert_eq!(
            shlex::split(&c).unwrap().last().unwrap(),
            "echo 'a b'; exit 3"
        );
    }

    #[test]
    fn become_wraps_only_for_non_root_users() {
        assert_eq!(command_line("id -u", "root", true).unwrap(), "id -u");
        assert_eq!(command_line("id -u", "cloud", false).unwrap(), "id -u");
        assert_eq!(
            command_line("id -u", "cloud", true).unwrap(),
            "sudo -n -- /bin/sh -c 'id -u'"
        );
        assert_eq!(
            command_line("echo 'a b' > /tmp/x", "cloud", true).unwrap(),
            r#"sudo -n -- /bin/sh -c "echo 'a b' > /tmp/x""#
        );
        assert!(command_line("a\0b", "cloud", true).is_err());
    }

    #[test]
    fn become_round_trips_through_a_shell_word_split() {
        for cmd in [
            "systemctl restart cloudstack-agent",
            "grep -q 'x=\"y\"' /etc/f && echo $HOME",
            "printf '%s\\n' \"it's\"",
        ] {
            let line = command_line(cmd, "ops", true).unwrap();
            let words = shlex::split(&line).unwrap();
            assert_eq!(words[..5], ["sudo", "-n", "--", "/bin/sh", "-c"]);
            assert_eq!(words[5], cmd);
            assert_eq!(words.len(), 6);
        }
    }

    #[test]
    fn defaults() {
        let o = SshOptions::default();
        assert_eq!(o.connect_timeout, Duration::from_secs(10));
        assert!(o.known_hosts.ends_with(".ssh/known_hosts"));
        assert_eq!(o.passphrase_env.as_deref(), Some(DEFAULT_PASSPHRASE_ENV));
        assert_eq!(o.max_sessions, 10);
    }
}
