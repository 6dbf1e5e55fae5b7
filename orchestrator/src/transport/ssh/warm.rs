//! Warm connections: one pool of SSH connections for every run of a daemon, kept open between
//! runs.
//!
//! Owned here: [`WarmPool`], the daemon-wide pool's rules on top of the pool's own (`pool.rs`):
//! the cap (the least recently used idle connection is closed to make room; connections in use
//! are never closed for it), the idle timeout (a sweeper closes connections nobody used for
//! that long), the inventory check at the start of every run and after every
//! `refresh_inventory` (an inventory whose files changed drops all its connections; a host
//! whose connection settings changed or that is gone drops its own), and the counters
//! `/metrics` shows ([`PoolStats`]).
//!
//! What it never does: accept a host key without checking it. A connection is only ever made by
//! the same handshake as a run's own (`session.rs`), which checks the host key against the
//! policy every time; reusing a connection reuses that check, and nothing about a refused key
//! is remembered. Channels are never shared: each command opens its own exec channel on the
//! shared connection, so two runs' output cannot mix.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::pool::{DropReason, Limits, Pool, Slot};
use super::route;
use super::session::Connection;
use super::{settings_of, SshOptions, NESTED_KEY_VAR};
use crate::inventory::{ConnectionKind, Inventory};

/// The default cap on open connections of a daemon.
pub const DEFAULT_MAX: usize = 256;
/// The default idle timeout of a daemon's connections.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(10 * 60);

/// The pool's counters and gauge, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open in the pool now (jump hosts included).
    pub open: usize,
    /// Connections made since the daemon started.
    pub opened: u64,
    /// A run's first use of a connection it did not make (an earlier or concurrent run did).
    pub reused: u64,
    /// Connections dropped, by reason (`closed`, `error`, `idle`, `cap`, `inventory`,
    /// `stopped`).
    pub dropped: BTreeMap<&'static str, u64>,
}

/// The SSH connections every run of a daemon shares (see the module's doc).
pub struct WarmPool {
    pub(crate) pool: Arc<Pool>,
    /// Each inventory's files' digest when a run last read it.
    digests: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("limits", &self.pool.limits)
            .finish_non_exhaustive()
    }
}

/// A pooled connection and how many pooled connections are tunnelled through it.
struct Pooled {
    slot: Arc<Slot>,
    conn: Arc<Connection>,
}

impl WarmPool {
    /// A pool connecting with `opts`, within `limits`.
    pub fn new(opts: SshOptions, limits: Limits) -> Arc<WarmPool> {
        Arc::new(WarmPool {
            pool: Arc::new(Pool::new(settings_of(opts), Some(limits))),
            digests: Mutex::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> Limits {
        self.pool.limits.unwrap_or(Limits {
            max: DEFAULT_MAX,
            idle: DEFAULT_IDLE,
        })
    }

    /// Closes idle connections every so often (a quarter of the idle timeout, between 1 s and
    /// a minute) until the pool is dropped.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<WarmPool> = Arc::downgrade(self);
        let every = (self.limits().idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = weak.upgrade() else { return };
                pool.sweep();
            }
        })
    }

    /// The counters now.
    pub fn stats(&self) -> PoolStats {
        let s = &self.pool.stats;
        PoolStats {
            open: pooled(&self.pool).len(),
            opened: s.opened.load(Ordering::Relaxed),
            reused: s.reused.load(Ordering::Relaxed),
            dropped: s
                .dropped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect(),
        }
    }

    /// Checks the pool against the inventory a run is about to use: `source` names the
    /// inventory (its paths), `digest` its files' digest. Files that changed drop every
    /// connection made for that inventory; otherwise a connection whose chain no host of
    /// `inventory` has any more (a host gone, moved, or with other keys or host key settings)
    /// is dropped.
    pub async fn sync(&self, source: &str, digest: Option<&str>, inventory: &Inventory) {
        let changed = match digest {
            None => false,
            Some(d) => {
                let mut digests = self.digests.lock().unwrap_or_else(|e| e.into_inner());
                digests
                    .insert(source.to_string(), d.to_string())
                    .is_some_and(|before| before != d)
            }
        };
        if changed {
            tracing::info!(inventory = %source, "the inventory changed: its SSH connections are closed");
        }
        let valid = valid_keys(&self.pool, source, inventory);
        for (key, slot) in self.pool.slots() {
            if slot.source != source || (!changed && valid.contains(&key)) {
                continue;
            }
            let mut state = slot.state.lock().await;
            if let Some(conn) = state.conn.take() {
                drop(state);
                self.pool.retire(conn, DropReason::Inventory);
            }
        }
    }

    /// Closes the connections idle longer than the idle timeout, and forgets empty chains.
    pub fn sweep(&self) {
        let idle = self.limits().idle;
        let all = pooled(&self.pool);
        let old: Vec<Arc<Connection>> = all
            .iter()
            .filter(|p| {
                p.conn.last_used().elapsed() >= idle && evictable(&self.pool, &all, &p.conn)
            })
            .map(|p| p.conn.clone())
            .collect();
        for conn in old {
            evict(&self.pool, &all, &conn, DropReason::Idle);
        }
        let mut slots = self.pool.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|_, s| {
            Arc::strong_count(s) > 1 || s.state.try_lock().map_or(true, |st| st.conn.is_some())
        });
    }

    /// Closes every connection (the daemon stops).
    pub async fn close_all(&self) {
        for (_, slot) in self.pool.slots() {
            let taken = slot.state.lock().await.conn.take();
            if let Some(conn) = taken {
                self.pool.retire(conn, DropReason::Stopped);
            }
        }
    }
}

/// Every chain key `inventory`'s SSH hosts use (jump chains included), in `source`.
fn valid_keys(pool: &Pool, source: &str, inventory: &Inventory) -> HashSet<String> {
    let mut keys = HashSet::new();
    for host in inventory.hosts() {
        if host.conn.kind != ConnectionKind::Ssh {
            continue;
        }
        // A host reached by its jump host's own `ssh` uses the jump host's chain, listed
        // under the jump host itself.
        if host.vars.get(NESTED_KEY_VAR).is_some_and(|v| !v.is_null()) {
            continue;
        }
        let Ok(hops) = route::chain(host, inventory) else {
            continue;
        };
        for n in 1..=hops.len() {
            keys.insert(pool.key(&hops[..n], source));
        }
    }
    keys
}

/// The pooled live connections now (a chain being connected or checked is left out).
fn pooled(pool: &Pool) -> Vec<Pooled> {
    pool.slots()
        .into_iter()
        .filter_map(|(_, slot)| {
            let conn = slot.state.try_lock().ok()?.conn.clone()?;
            (!conn.is_closed()).then_some(Pooled { slot, conn })
        })
        .collect()
}

/// The pooled connections tunnelled through `conn`.
fn dependents<'a>(
    all: &'a [Pooled],
    conn: &'a Arc<Connection>,
) -> impl Iterator<Item = &'a Pooled> {
    all.iter()
        .filter(move |p| p.conn.via.as_ref().is_some_and(|v| Arc::ptr_eq(v, conn)))
}

/// Whether `conn` can be closed now: no command on it, nobody but the pool (and the pooled
/// connections tunnelled through it) holding it, and the same for those.
fn evictable(pool: &Pool, all: &[Pooled], conn: &Arc<Connection>) -> bool {
    let deps: Vec<&Pooled> = dependents(all, conn).collect();
    // The slot, `all`'s copy, and each pooled dependent's `via`.
    let expected = 2 + deps.len();
    !conn.busy(pool.settings.max_sessions)
        && Arc::strong_count(conn) == expected
        && deps.iter().all(|d| evictable(pool, all, &d.conn))
}

/// Takes `conn` and the pooled connections tunnelled through it out of the pool, and closes
/// them.
fn evict(pool: &Pool, all: &[Pooled], conn: &Arc<Connection>, why: DropReason) {
    let deps: Vec<Arc<Connection>> = dependents(all, conn).map(|d| d.conn.clone()).collect();
    for d in &deps {
        evict(pool, all, d, why);
    }
    let Some(p) = all.iter().find(|p| Arc::ptr_eq(&p.conn, conn)) else {
        return;
    };
    let taken = match p.slot.state.try_lock() {
        Ok(mut st) if st.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) => st.conn.take(),
        _ => None,
    };
    if let Some(c) = taken {
        pool.retire(c, why);
    }
}

impl Pool {
    /// Closes least recently used idle connections until at most `max` are open; `newest`
    /// (just made) and the jump connections it goes through are kept. Connections in use are
    /// never closed for the cap, so more may be open while more are in use at once.
    pub(crate) fn keep_within(&self, max: usize, newest: &Arc<Connection>) {
        loop {
            let all = pooled(self);
            if all.len() <= max {
                return;
            }
            let mut kept = Vec::new();
            let mut c = Some(newest);
            while let Some(conn) = c {
                kept.push(conn.clone());
                c = conn.via.as_ref();
            }
            let victim = all
                .iter()
                .filter(|p| !kept.iter().any(|k| Arc::ptr_eq(k, &p.conn)))
                .filter(|p| evictable(self, &all, &p.conn))
                .min_by_key(|p| p.conn.last_used())
                .map(|p| p.conn.clone());
            let Some(victim) = victim else {
                tracing::debug!(
                    open = all.len(),
                    max,
                    "SSH pool over its cap: every connection is in use"
                );
                return;
            };
            evict(self, &all, &victim, DropReason::Cap);
        }
    }
}
