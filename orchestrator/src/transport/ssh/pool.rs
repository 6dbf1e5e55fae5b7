//! The connections of a run (or of every run of a daemon): at most one per hop chain, shared
//! by every command and every host tunnelled through it.
//!
//! Owned here: finding or making the connection for a chain of hops (making its jump
//! connections first, reusing them when they exist), making sure concurrent first commands make
//! a single connection (each chain has an async lock held while it connects; commands waiting
//! on a connection attempt that fails get that attempt's error instead of each retrying in
//! turn), dropping a connection that died so the next command reconnects, and counting the
//! connections made per host (per [`Usage`], i.e. per run).
//!
//! A daemon-wide pool ([`Limits`] set, see `warm.rs`) also keys each chain by everything its
//! connections were made with (user, key file, host key policy and pin, `known_hosts` file) and
//! by the inventory the run read (its `source`), and counts what it opened, reused and dropped.
//! Its cap, idle timeout and inventory checks are `warm.rs`'s; they drop connections through
//! [`Pool::retire`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::route::{pool_key, Hop};
use super::session::{self, Connection, Settings};

/// One chain's connection, or the lack of one.
#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) state: tokio::sync::Mutex<SlotState>,
    /// Failed attempts so far; a waiter that sees it change while it waited reports the failure
    /// it waited on rather than dialling again.
    failures: AtomicU64,
    /// The inventory the chain comes from (a daemon-wide pool; empty otherwise).
    pub(crate) source: String,
}

#[derive(Default)]
pub(crate) struct SlotState {
    pub(crate) conn: Option<Arc<Connection>>,
    last_error: Option<String>,
}

/// A daemon-wide pool's limits (`None` in a run's own pool: no cap, no idle timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections kept at most (jump hosts count); the least recently used idle one is
    /// closed to make room.
    pub max: usize,
    /// An idle connection (no command, nothing tunnelled through it used) is closed after this.
    pub idle: Duration,
}

/// Why a pooled connection was dropped (the `reason` label of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    /// Found closed (the server went away, keepalives unanswered).
    Closed,
    /// A command on it failed in a way that may be the connection's (lost, timed out, refused).
    Error,
    /// Idle longer than the idle timeout.
    Idle,
    /// Closed to stay within the cap.
    Cap,
    /// Its inventory changed (the files' digest, or the host's connection settings).
    Inventory,
    /// The daemon stopped.
    Stopped,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Closed => "closed",
            DropReason::Error => "error",
            DropReason::Idle => "idle",
            DropReason::Cap => "cap",
            DropReason::Inventory => "inventory",
            DropReason::Stopped => "stopped",
        }
    }
}

/// Counters of a pool since it was made.
#[derive(Default)]
pub(crate) struct Stats {
    pub opened: AtomicU64,
    pub reused: AtomicU64,
    pub dropped: Mutex<BTreeMap<DropReason, u64>>,
}

impl Stats {
    pub fn dropped(&self, why: DropReason) {
        *self
            .dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(why)
            .or_default() += 1;
    }
}

/// What one transport (one run) did with a pool: the connections it made per host, the chains
/// it used (a first use of a connection it did not make counts as reused), and which inventory
/// it reads (a daemon-wide pool keeps inventories' connections apart).
#[derive(Default)]
pub(crate) struct Usage {
    pub source: String,
    made: Mutex<HashMap<String, usize>>,
    seen: Mutex<HashSet<String>>,
}

impl Usage {
    pub fn new(source: String) -> Usage {
        Usage {
            source,
            ..Usage::default()
        }
    }

    pub fn connections_made(&self, label: &str) -> usize {
        let made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        made.get(label).copied().unwrap_or(0)
    }

    /// Whether this is the run's first use of `key`.
    fn first_use(&self, key: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.insert(key.to_string())
    }
}

pub(crate) struct Pool {
    pub(crate) settings: Settings,
    pub(crate) slots: Mutex<HashMap<String, Arc<Slot>>>,
    pub(crate) limits: Option<Limits>,
    pub(crate) stats: Stats,
}

type ConnFuture<'a> = Pin<Box<dyn Future<Output = Result<Arc<Connection>, String>> + Send + 'a>>;

impl Pool {
    /// A run's own pool (as `remedy apply` uses), or with `limits` a daemon-wide one.
    pub fn new(settings: Settings, limits: Option<Limits>) -> Pool {
        Pool {
            settings,
            slots: Mutex::new(HashMap::new()),
            limits,
            stats: Stats::default(),
        }
    }

    /// The key of the last hop of `hops`: in a run's pool its chain of `label=user@host:port`;
    /// in a daemon-wide pool also its inventory and every setting its connection depends on,
    /// so a host whose settings change never gets a connection made with the old ones.
    pub fn key(&self, hops: &[Hop], source: &str) -> String {
        if self.limits.is_none() {
            return pool_key(hops);
        }
        let chain: Vec<String> = hops.iter().map(|h| format!("{h:?}")).collect();
        format!("{source}\u{1f}{}", chain.join(" > "))
    }

    fn slot(&self, key: &str, source: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Slot {
                    source: source.to_string(),
                    ..Slot::default()
                })
            })
            .clone()
    }

    /// Every slot, with its key.
    pub(crate) fn slots(&self) -> Vec<(String, Arc<Slot>)> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
    }

    /// The live connection for the last hop of `hops`, connecting (and connecting its jump
    /// hosts) if needed. The error names the hop that failed.
    pub fn get<'a>(&'a self, hops: &'a [Hop], usage: &'a Usage) -> ConnFuture<'a> {
        Box::pin(async move {
            let (hop, jumps) = hops.split_last().ok_or("no hop to connect to")?;
            let key = self.key(hops, &usage.source);
            let slot = self.slot(&key, &usage.source);
            let failures_before = slot.failures.load(Ordering::Acquire);
            let mut state = slot.state.lock().await;
            if let Some(conn) = &state.conn {
                if !conn.is_closed() {
                    conn.touch();
                    if usage.first_use(&key) {
                        self.stats.reused.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(conn.clone());
                }
                tracing::debug!(host = %hop.label, "connection closed; reconnecting");
                state.conn = None;
                self.stats.dropped(DropReason::Closed);
            }
            if slot.failures.load(Ordering::Acquire) != failures_before {
                if let Some(e) = &state.last_error {
                    return Err(e.clone());
                }
            }
            match self.connect(hop, jumps, usage, &key).await {
                Ok(conn) => {
                    let conn = Arc::new(conn);
                    state.conn = Some(conn.clone());
                    state.last_error = None;
                    // Marked before the slot is let go: another command of this run waiting
                    // for it must not count the connection this run made as reused.
                    usage.first_use(&key);
                    drop(state);
                    self.stats.opened.fetch_add(1, Ordering::Relaxed);
                    let mut made = usage.made.lock().unwrap_or_else(|e| e.into_inner());
                    *made.entry(hop.label.clone()).or_default() += 1;
                    drop(made);
                    if let Some(limits) = self.limits {
                        self.keep_within(limits.max, &conn);
                    }
                    Ok(conn)
                }
                Err(e) => {
                    state.last_error = Some(e.clone());
                    slot.failures.fetch_add(1, Ordering::AcqRel);
                    Err(e)
                }
            }
        })
    }

    /// Forgets `conn` if it is still the connection of this chain (a dead connection found by
    /// a command; another command may already have replaced it), counting it dropped for `why`.
    pub async fn discard(&self, key: &str, conn: &Arc<Connection>, why: DropReason) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned();
        let Some(slot) = slot else { return };
        let mut state = slot.state.lock().await;
        if state.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            if let Some(c) = state.conn.take() {
                drop(state);
                self.retire(c, why);
            }
        }
    }

    /// Counts `conn` (already taken out of its slot) dropped for `why`, and says goodbye on it
    /// when nothing else holds it; otherwise it closes when its last command ends.
    pub(crate) fn retire(&self, conn: Arc<Connection>, why: DropReason) {
        self.stats.dropped(why);
        tracing::debug!(key = %conn.key, reason = why.as_str(), "pooled connection dropped");
        if Arc::strong_count(&conn) == 1 && !conn.is_closed() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = conn
                        .handle
                        .disconnect(russh::Disconnect::ByApplication, "", "en")
                        .await;
                });
            }
        }
    }

    /// Every live connection (to say goodbye at the end of a run).
    pub async fn all(&self) -> Vec<Arc<Connection>> {
        let mut out = Vec::new();
        for (_, slot) in self.slots() {
            if let Some(conn) = slot.state.lock().await.conn.take() {
                out.push(conn);
            }
        }
        out
    }

    /// Makes a new connection to `hop`, through the (pooled) connection to `jumps` if any.
    async fn connect(
        &self,
        hop: &Hop,
        jumps: &[Hop],
        usage: &Usage,
        key: &str,
    ) -> Result<Connection, String> {
        let timeout = self.settings.connect_timeout;
        let Some((jump, _)) = jumps.split_last() else {
            tracing::debug!(host = %hop.label, address = %hop.address, port = hop.port, "connecting");
            let attempt = async {
                let stream = session::dial(hop).await?;
                session::establish(hop, stream, &self.settings).await
            };
            let handle = tokio::time::timeout(timeout, attempt).await.map_err(|_| {
                format!(
                    "timed out after {}s connecting to {}:{}",
                    timeout.as_secs_f64(),
                    hop.address,
                    hop.port
                )
            })??;
            return Ok(self.wrap(handle, None, key));
        };
        let via = self.get(jumps, usage).await.map_err(|e| {
            if e.starts_with("jump host ") {
                e
            } else {
                format!("jump host {jump}: {e}")
            }
        })?;
        tracing::debug!(
            host = %hop.label, address = %hop.address, port = hop.port, via = %jump.label,
            "connecting through jump host"
        );
        let attempt = async {
            let channel = via
                .handle
                .channel_open_direct_tcpip(hop.address.as_str(), hop.port.into(), "127.0.0.1", 0)
                .await
                .map_err(|e| {
                    format!(
                        "jump host {jump} could not open a tunnel to {}:{}: {}",
                        hop.address,
                        hop.port,
                        session::describe(&e)
                    )
                })?;
            session::establish(hop, channel.into_stream(), &self.settings).await
        };
        let handle = tokio::time::timeout(timeout, attempt).await.map_err(|_| {
            format!(
                "timed out after {}s connecting to {}:{} through jump host {jump}",
                timeout.as_secs_f64(),
                hop.address,
                hop.port
            )
        })??;
        Ok(self.wrap(handle, Some(via), key))
    }

    fn wrap(
        &self,
        handle: russh::client::Handle<session::Client>,
        via: Option<Arc<Connection>>,
        key: &str,
    ) -> Connection {
        Connection {
            handle,
            sessions: Arc::new(Semaphore::new(self.settings.max_sessions.max(1))),
            via,
            key: key.to_string(),
            last_used: Mutex::new(std::time::Instant::now()),
        }
    }
}
