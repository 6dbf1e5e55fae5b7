//! The connections of one run: at most one per hop chain, shared by every command and every
//! host tunnelled through it.
//!
//! Owned here: finding or making the connection for a chain of hops (making its jump
//! connections first, reusing them when they exist), making sure concurrent first commands make
//! a single connection (each chain has an async lock held while it connects; commands waiting
//! on a connection attempt that fails get that attempt's error instead of each retrying in
//! turn), dropping a connection that died so the next command reconnects, and counting the
//! connections made per host.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use super::route::{pool_key, Hop};
use super::session::{self, Connection, Settings};

/// One chain's connection, or the lack of one.
#[derive(Default)]
struct Slot {
    state: tokio::sync::Mutex<SlotState>,
    /// Failed attempts so far; a waiter that sees it change while it waited reports the failure
    /// it waited on rather than dialling again.
    failures: AtomicU64,
}

#[derive(Default)]
struct SlotState {
    conn: Option<Arc<Connection>>,
    last_error: Option<String>,
}

pub(crate) struct Pool {
    settings: Settings,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// Connections made, by hop label (inventory host name, or jump entry as written).
    made: Mutex<HashMap<String, usize>>,
}

type ConnFuture<'a> = Pin<Box<dyn Future<Output = Result<Arc<Connection>, String>> + Send + 'a>>;

impl Pool {
    pub fn new(settings: Settings) -> Pool {
        Pool {
            settings,
            slots: Mutex::new(HashMap::new()),
            made: Mutex::new(HashMap::new()),
        }
    }

    pub fn connections_made(&self, label: &str) -> usize {
        let made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        made.get(label).copied().unwrap_or(0)
    }

    fn slot(&self, key: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(key.to_string()).or_default().clone()
    }

    /// The live connection for the last hop of `hops`, connecting (and connecting its jump
    /// hosts) if needed. The error names the hop that failed.
    pub fn get<'a>(&'a self, hops: &'a [Hop]) -> ConnFuture<'a> {
        Box::pin(async move {
            let (hop, jumps) = hops.split_last().ok_or("no hop to connect to")?;
            let slot = self.slot(&pool_key(hops));
            let failures_before = slot.failures.load(Ordering::Acquire);
            let mut state = slot.state.lock().await;
            if let Some(conn) = &state.conn {
                if !conn.is_closed() {
                    return Ok(conn.clone());
                }
                tracing::debug!(host = %hop.label, "connection closed; reconnecting");
                state.conn = None;
            }
            if slot.failures.load(Ordering::Acquire) != failures_before {
                if let Some(e) = &state.last_error {
                    return Err(e.clone());
                }
            }
            match self.connect(hop, jumps).await {
                Ok(conn) => {
                    let conn = Arc::new(conn);
                    state.conn = Some(conn.clone());
                    state.last_error = None;
                    let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
                    *made.entry(hop.label.clone()).or_default() += 1;
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
    /// a command; another command may already have replaced it).
    pub async fn discard(&self, hops: &[Hop], conn: &Arc<Connection>) {
        let slot = self.slot(&pool_key(hops));
        let mut state = slot.state.lock().await;
        if state.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            state.conn = None;
        }
    }

    /// Every live connection (to say goodbye at the end of a run).
    pub async fn all(&self) -> Vec<Arc<Connection>> {
        let slots: Vec<Arc<Slot>> = {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.values().cloned().collect()
        };
        let mut out = Vec::new();
        for slot in slots {
            if let Some(conn) = slot.state.lock().await.conn.take() {
                out.push(conn);
            }
        }
        out
    }

    /// Makes a new connection to `hop`, through the (pooled) connection to `jumps` if any.
    async fn connect(&self, hop: &Hop, jumps: &[Hop]) -> Result<Connection, String> {
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
            return Ok(self.wrap(handle, None));
        };
        let via = self.get(jumps).await.map_err(|e| {
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
        Ok(self.wrap(handle, Some(via)))
    }

    fn wrap(
        &self,
        handle: russh::client::Handle<session::Client>,
        via: Option<Arc<Connection>>,
    ) -> Connection {
        Connection {
            handle,
            sessions: Arc::new(Semaphore::new(self.settings.max_sessions.max(1))),
            via,
        }
    }
}
