//! One authenticated SSH connection to one hop: the transport stream (TCP, or a `direct-tcpip`
//! channel of the previous hop), the handshake with its host key check, and authentication.
//!
//! Owned here: russh's client [`Handler`](russh::client::Handler) (host key verification,
//! nothing else), the russh client configuration, and turning every failure into a sentence an
//! operator understands ("connection refused on 10.0.0.1:22", "timed out after 10s ...",
//! "host key for vr1 (...) changed: ...").
//!
//! Not here: which connections exist and when to reuse them (the pool), running commands.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{Config, Handle};
use russh::keys::{Algorithm, HashAlg, PublicKeyOrCertificate};
use russh::Preferred;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

use super::auth::{self, Identities};
use super::known_hosts::{self, Accepted, CheckTarget, KnownHosts};
use super::route::Hop;
use crate::inventory::HostKeyPolicy;

/// Settings shared by every connection of a transport.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub connect_timeout: Duration,
    pub known_hosts: PathBuf,
    pub keepalive: Option<Duration>,
    pub passphrase_env: Option<String>,
    pub agent_socket: Option<PathBuf>,
    pub default_keys: Vec<PathBuf>,
    pub max_sessions: usize,
}

/// Why a handshake ended early.
#[derive(Debug)]
pub(crate) enum ClientError {
    Ssh(russh::Error),
    /// The host key was refused; the operator-facing explanation.
    HostKey(String),
}

impl From<russh::Error> for ClientError {
    fn from(e: russh::Error) -> Self {
        ClientError::Ssh(e)
    }
}

/// russh's per-connection callbacks: only the host key check is ours.
pub(crate) struct Client {
    label: String,
    address: String,
    port: u16,
    policy: HostKeyPolicy,
    known_hosts: PathBuf,
}

impl russh::client::Handler for Client {
    type Error = ClientError;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // remedy advertises no certificate algorithms (`Preferred::host_key_certificates` is
        // empty), so a server has no business presenting one.
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Err(ClientError::HostKey(format!(
                "{} presented a host certificate, which remedy did not ask for and does not \
                 check; its host key must be pinned in known_hosts",
                self.label
            )));
        };
        let target = CheckTarget {
            label: &self.label,
            address: &self.address,
            port: self.port,
        };
        match known_hosts::verify(&self.policy, &target, key, &self.known_hosts) {
            Ok(how) => {
                let fp = known_hosts::fingerprint(key);
                match how {
                    Accepted::Recorded => tracing::info!(
                        host = %self.label, %fp, file = %self.known_hosts.display(),
                        "new host key recorded (accept-new)"
                    ),
                    _ => tracing::debug!(host = %self.label, %fp, ?how, "host key accepted"),
                }
                Ok(true)
            }
            Err(why) => Err(ClientError::HostKey(why)),
        }
    }
}

/// An authenticated connection, shared by every command (and every tunnelled hop) using it.
pub(crate) struct Connection {
    pub handle: Handle<Client>,
    /// Bounds concurrent exec channels to what sshd allows per connection (`MaxSessions`), so
    /// extra commands wait instead of being refused.
    pub sessions: Arc<Semaphore>,
    /// The jump connection this one is tunnelled through, kept alive as long as this one.
    pub via: Option<Arc<Connection>>,
    /// The pool's key for it (its hop chain).
    pub key: String,
    /// When a command (or a tunnelled connection) last asked for it.
    pub last_used: std::sync::Mutex<std::time::Instant>,
}

impl Connection {
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed() || self.via.as_ref().is_some_and(|parent| parent.is_closed())
    }

    /// Marks it, and the jump connections it goes through, used now.
    pub fn touch(&self) {
        let now = std::time::Instant::now();
        let mut c = Some(self);
        while let Some(conn) = c {
            *conn.last_used.lock().unwrap_or_else(|e| e.into_inner()) = now;
            c = conn.via.as_deref();
        }
    }

    pub fn last_used(&self) -> std::time::Instant {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a command runs on it now (a session slot is taken).
    pub fn busy(&self, max_sessions: usize) -> bool {
        self.sessions.available_permits() < max_sessions.max(1)
    }
}

/// The `known_hosts` file checked for `hop`: its own (`remedy_known_hosts_file`), else the
/// transport's.
fn known_hosts_of<'a>(hop: &'a Hop, settings: &'a Settings) -> &'a std::path::Path {
    hop.known_hosts.as_deref().unwrap_or(&settings.known_hosts)
}

/// Host key algorithms to ask for: those `known_hosts` already has for this hop first (so a
/// host known by its RSA key is not refused for presenting ed25519), then russh's defaults.
fn preferred_for(hop: &Hop, settings: &Settings) -> Preferred {
    let mut preferred = Preferred::default();
    if hop.host_key == HostKeyPolicy::AcceptNew || hop.host_key == HostKeyPolicy::Strict {
        let known = KnownHosts::load(known_hosts_of(hop, settings)).unwrap_or_default();
        let mut first: Vec<Algorithm> = Vec::new();
        for alg in known.algorithms_for(&hop.address, hop.port) {
            let expanded = if alg.clone().is_rsa() {
                vec![
                    Algorithm::Rsa {
                        hash: Some(HashAlg::Sha512),
                    },
                    Algorithm::Rsa {
                        hash: Some(HashAlg::Sha256),
                    },
                    Algorithm::Rsa { hash: None },
                ]
            } else {
                vec![alg]
            };
            for a in expanded {
                if preferred.key.contains(&a) && !first.contains(&a) {
                    first.push(a);
                }
            }
        }
        if !first.is_empty() {
            let rest: Vec<Algorithm> = preferred
                .key
                .iter()
                .filter(|a| !first.contains(a))
                .cloned()
                .collect();
            first.extend(rest);
            preferred.key = first.into();
        }
    }
    preferred
}

fn config_for(hop: &Hop, settings: &Settings) -> Arc<Config> {
    Arc::new(Config {
        keepalive_interval: settings.keepalive,
        keepalive_max: 3,
        nodelay: true,
        preferred: preferred_for(hop, settings),
        ..Config::default()
    })
}

/// Opens the TCP connection for a first hop. The error is the reason for `Unreachable`.
///
/// `TCP_NODELAY` is set here: russh applies its `nodelay` setting only to sockets it opens
/// itself, and with Nagle's algorithm on, a small packet sent while an earlier one is not yet
/// acknowledged waits for the peer's delayed ACK (tens of milliseconds, per command).
pub(crate) async fn dial(hop: &Hop) -> Result<tokio::net::TcpStream, String> {
    let addr = format!("{}:{}", hop.address, hop.port);
    let stream = tokio::net::TcpStream::connect((hop.address.as_str(), hop.port))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => format!("connection refused on {addr}"),
            _ => format!("cannot connect to {addr}: {e}"),
        })?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("cannot set TCP_NODELAY on {addr}: {e}"))?;
    Ok(stream)
}

/// Runs the handshake and authentication for `hop` over `stream`.
pub(crate) async fn establish<S>(
    hop: &Hop,
    stream: S,
    settings: &Settings,
) -> Result<Handle<Client>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = Client {
        label: hop.label.clone(),
        address: hop.address.clone(),
        port: hop.port,
        policy: hop.host_key.clone(),
        known_hosts: known_hosts_of(hop, settings).to_path_buf(),
    };
    let mut handle = russh::client::connect_stream(config_for(hop, settings), stream, client)
        .await
        .map_err(|e| match e {
            ClientError::HostKey(why) => why,
            ClientError::Ssh(e) => format!(
                "SSH handshake with {}:{} failed: {}",
                hop.address,
                hop.port,
                describe(&e)
            ),
        })?;
    let ids = Identities {
        key_file: hop.key_file.clone(),
        agent_socket: settings.agent_socket.clone(),
        default_keys: settings.default_keys.clone(),
        passphrase_env: settings.passphrase_env.clone(),
    };
    let how = auth::authenticate(&mut handle, &hop.user, &ids).await?;
    tracing::debug!(host = %hop.label, user = %hop.user, method = %how, "authenticated");
    Ok(handle)
}

/// russh's error texts, reworded where they would puzzle an operator.
pub(crate) fn describe(e: &russh::Error) -> String {
    match e {
        russh::Error::Disconnect | russh::Error::HUP => {
            "the server closed the connection".to_string()
        }
        russh::Error::IO(io) => io.to_string(),
        other => other.to_string(),
    }
}
