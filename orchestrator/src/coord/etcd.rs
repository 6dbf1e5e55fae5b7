//! The etcd backend: per-target locks as keys bound to a lease the holder keeps alive, leader
//! election for `remedy daemon` replicas, and compare-and-swap documents (the daemon's state).
//!
//! Keys, under the prefix of the `--coordination` URL:
//! - `PREFIX/locks/TARGET`: a held lock; its value is the [`Holder`] as JSON, its lease the
//!   holder's session lease. All of a run's locks are taken in one transaction (every key
//!   absent, then every key put), so two runs never hold half each.
//! - `PREFIX/daemon/leader/...`: the election of `remedy daemon` replicas (etcd's election
//!   service).
//! - `PREFIX/daemon/state`: the daemon's flap-guard state (one JSON document).
//!
//! A process keeps one **session**: a lease of `ttl`, kept alive every `ttl/3`. When the lease
//! cannot be kept alive (no answer for `ttl/2`, or etcd says it expired) the session is
//! **lost**: every lock taken under it reports it ([`EtcdHeld::lost`]), the run that holds them
//! starts no new change and rolls back, and the next acquisition starts a new session. A lock
//! whose key is deleted while held (`remedy locks break`) is lost the same way.
//!
//! Not here: what a run does when its locks are lost (app, scheduler), and the local backend
//! (`crate::lock`).

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::watch;

use super::spec::EtcdSpec;
use crate::lock::{AcquireError, Busy, Holder};

/// How long one request may take before etcd counts as unreachable for it.
const REQUEST: Duration = Duration::from_secs(5);

/// A connected etcd backend.
pub struct Etcd {
    client: Client,
    spec: EtcdSpec,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Etcd({})", self.spec)
    }
}

/// One lease, kept alive by a task, and whether it is lost (and why).
struct Session {
    lease: i64,
    lost: watch::Receiver<Option<String>>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Wraps an etcd call with [`REQUEST`] as its deadline; the error says what was being done.
async fn within<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("etcd: {what}: {e}")),
        Err(_) => Err(format!(
            "etcd: {what}: no answer within {}s",
            REQUEST.as_secs()
        )),
    }
}

impl Etcd {
    /// Connects (the first endpoint that answers; the client balances over all of them).
    pub async fn connect(spec: EtcdSpec) -> Result<Etcd, String> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        if let (Some(user), Some(pw)) = (&spec.user, &spec.password) {
            opts = opts.with_user(user.clone(), pw.read()?);
        }
        if spec.tls {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &spec.ca {
                let pem =
                    std::fs::read(ca).map_err(|e| format!("etcd CA file {}: {e}", ca.display()))?;
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&spec.cert, &spec.key) {
                let c = std::fs::read(cert)
                    .map_err(|e| format!("etcd client certificate {}: {e}", cert.display()))?;
                let k = std::fs::read(key)
                    .map_err(|e| format!("etcd client key {}: {e}", key.display()))?;
                tls = tls.identity(etcd_client::Identity::from_pem(c, k));
            }
            opts = opts.with_tls(tls);
        }
        let client = tokio::time::timeout(
            Duration::from_secs(10),
            Client::connect(spec.endpoints.clone(), Some(opts)),
        )
        .await
        .map_err(|_| format!("{spec}: no endpoint answered within 10s"))?
        .map_err(|e| format!("{spec}: {e}"))?;
        let etcd = Etcd {
            client,
            spec,
            session: tokio::sync::Mutex::new(None),
        };
        // An unreachable cluster (or bad credentials) is told now, not at the first lock.
        let mut c = etcd.client.clone();
        within("status", c.status())
            .await
            .map_err(|e| format!("{}: {e}", etcd.spec))?;
        Ok(etcd)
    }

    pub fn spec(&self) -> &EtcdSpec {
        &self.spec
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    fn lock_key(&self, target: &str) -> String {
        format!("{}/locks/{target}", self.spec.prefix)
    }

    fn locks_prefix(&self) -> String {
        format!("{}/locks/", self.spec.prefix)
    }

    /// The key of a document under the prefix (e.g. `daemon/state`).
    pub fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.spec.prefix)
    }

    /// This process's session: the current one, or a new lease when there is none or it was
    /// lost.
    async fn session(&self) -> Result<Arc<Session>, String> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            if s.lost.borrow().is_none() {
                return Ok(s.clone());
            }
        }
        let mut c = self.client.clone();
        let ttl = self.spec.ttl.as_secs() as i64;
        let grant = within("granting a lease", c.lease_grant(ttl, None)).await?;
        let lease = grant.id();
        let (tx, lost) = watch::channel(None);
        let keeper = tokio::spawn(keep_alive(self.client.clone(), lease, self.spec.ttl, tx));
        let s = Arc::new(Session {
            lease,
            lost,
            keeper,
        });
        *slot = Some(s.clone());
        Ok(s)
    }

    /// The session's lease id, granting one if needed (the daemon's election uses it).
    pub async fn lease(&self) -> Result<(i64, watch::Receiver<Option<String>>), String> {
        let s = self.session().await?;
        Ok((s.lease, s.lost.clone()))
    }

    /// Ends the session: its lease is revoked, so every key under it goes at once.
    pub async fn close(&self) {
        let s = self.session.lock().await.take();
        if let Some(s) = s {
            let mut c = self.client.clone();
            let _ = within("revoking the lease", c.lease_revoke(s.lease)).await;
        }
    }

    /// Takes every lock of `targets` now, or none.
    pub async fn try_all(
        &self,
        targets: &[String],
        holder: &Holder,
    ) -> Result<EtcdHeld, AcquireError> {
        self.try_once(targets, holder)
            .await
            .map(|(h, _)| h)
            .map_err(|(e, _)| e)
    }

    /// One transaction: every key absent -> every key put under the session's lease; else the
    /// first held key's holder, and the revision to watch from.
    async fn try_once(
        &self,
        targets: &[String],
        holder: &Holder,
    ) -> Result<(EtcdHeld, i64), (AcquireError, i64)> {
        let mut names: Vec<&String> = targets.iter().collect();
        names.sort();
        names.dedup();
        let session = self.session().await.map_err(|e| (AcquireError::Io(e), 0))?;
        let value = serde_json::to_string(holder).unwrap_or_default();
        let keys: Vec<String> = names.iter().map(|t| self.lock_key(t)).collect();
        let txn = Txn::new()
            .when(
                keys.iter()
                    .map(|k| Compare::create_revision(k.clone(), CompareOp::Equal, 0))
                    .collect::<Vec<_>>(),
            )
            .and_then(
                keys.iter()
                    .map(|k| {
                        TxnOp::put(
                            k.clone(),
                            value.clone(),
                            Some(PutOptions::new().with_lease(session.lease)),
                        )
                    })
                    .collect::<Vec<_>>(),
            )
            .or_else(
                keys.iter()
                    .map(|k| TxnOp::get(k.clone(), None))
                    .collect::<Vec<_>>(),
            );
        let mut c = self.client.clone();
        let resp = within("taking locks", c.txn(txn))
            .await
            .map_err(|e| (AcquireError::Io(e), 0))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        if resp.succeeded() {
            let held = EtcdHeld::start(
                self.client.clone(),
                self.locks_prefix(),
                names.iter().map(|t| t.to_string()).collect(),
                session,
                revision,
            )
            .await;
            return Ok((held, revision));
        }
        for (name, r) in names.iter().zip(resp.op_responses()) {
            if let TxnOpResponse::Get(g) = r {
                if let Some(kv) = g.kvs().first() {
                    let holder = serde_json::from_slice(kv.value()).ok();
                    return Err((
                        AcquireError::Busy(Busy {
                            target: name.to_string(),
                            holder,
                        }),
                        revision,
                    ));
                }
            }
        }
        // Released between the compare and the read: try again.
        Err((
            AcquireError::Busy(Busy {
                target: names.first().map(|s| s.to_string()).unwrap_or_default(),
                holder: None,
            }),
            revision,
        ))
    }

    /// [`Etcd::try_all`], waiting up to `wait` for a busy target: a watch on its key wakes the
    /// wait the moment it is deleted (released, broken, or its holder's lease expired).
    pub async fn acquire(
        &self,
        targets: &[String],
        holder: &Holder,
        wait: Duration,
    ) -> Result<EtcdHeld, AcquireError> {
        let deadline = Instant::now() + wait;
        loop {
            let (busy, revision) = match self.try_once(targets, holder).await {
                Ok((h, _)) => return Ok(h),
                Err((AcquireError::Busy(b), rev)) if Instant::now() < deadline => (b, rev),
                Err((e, _)) => return Err(e),
            };
            let key = self.lock_key(&busy.target);
            let mut c = self.client.clone();
            let opts = WatchOptions::new().with_start_revision(revision + 1);
            let (_watcher, mut stream) =
                match within("watching a lock", c.watch(key, Some(opts))).await {
                    Ok(w) => w,
                    Err(e) => return Err(AcquireError::Io(e)),
                };
            let left = deadline.saturating_duration_since(Instant::now());
            let gone = async {
                loop {
                    match stream.message().await {
                        Ok(Some(m)) => {
                            if m.events()
                                .iter()
                                .any(|e| e.event_type() == EventType::Delete)
                            {
                                return;
                            }
                        }
                        // The watch ended: look again.
                        _ => return,
                    }
                }
            };
            if tokio::time::timeout(left, gone).await.is_err() {
                return Err(AcquireError::Busy(busy));
            }
        }
    }

    /// Who holds `target` now, if anyone.
    pub async fn probe(&self, target: &str) -> Result<Option<Busy>, String> {
        let mut c = self.client.clone();
        let r = within("reading a lock", c.get(self.lock_key(target), None)).await?;
        Ok(r.kvs().first().map(|kv| Busy {
            target: target.to_string(),
            holder: serde_json::from_slice(kv.value()).ok(),
        }))
    }

    /// Every held lock: its target, holder, and the seconds its lease has left.
    pub async fn list(&self) -> Result<Vec<(String, Option<Holder>, Option<i64>)>, String> {
        let mut c = self.client.clone();
        let prefix = self.locks_prefix();
        let r = within(
            "listing locks",
            c.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let mut out = Vec::new();
        for kv in r.kvs() {
            let key = String::from_utf8_lossy(kv.key()).to_string();
            let target = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
            let ttl = match kv.lease() {
                0 => None,
                id => within("reading a lease", c.lease_time_to_live(id, None))
                    .await
                    .ok()
                    .map(|t| t.ttl()),
            };
            out.push((target, serde_json::from_slice(kv.value()).ok(), ttl));
        }
        Ok(out)
    }

    /// Deletes `target`'s lock (whoever holds it): the holder's run sees its lock lost. The
    /// holder it had, or `None` when it was free.
    pub async fn break_lock(&self, target: &str) -> Result<Option<Holder>, String> {
        let key = self.lock_key(target);
        let mut c = self.client.clone();
        let r = within("reading a lock", c.get(key.clone(), None)).await?;
        let Some(kv) = r.kvs().first() else {
            return Ok(None);
        };
        let holder: Option<Holder> = serde_json::from_slice(kv.value()).ok();
        // Only the lock as read: one taken since by someone else is not broken.
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([TxnOp::delete(key, None)]);
        let r = within("breaking a lock", c.txn(txn)).await?;
        if !r.succeeded() {
            return Err(format!(
                "{target} changed hands while it was being broken; look again with `remedy locks`"
            ));
        }
        Ok(holder.or_else(|| {
            Some(Holder {
                pid: 0,
                run: "?".into(),
                by: "an unreadable holder".into(),
                since: "?".into(),
                host: None,
            })
        }))
    }

    /// A JSON document and its revision (0: absent).
    pub async fn get_doc(&self, name: &str) -> Result<(Option<Vec<u8>>, i64), String> {
        let mut c = self.client.clone();
        let r = within("reading state", c.get(self.key(name), None)).await?;
        Ok(match r.kvs().first() {
            Some(kv) => (Some(kv.value().to_vec()), kv.mod_revision()),
            None => (None, 0),
        })
    }

    /// Writes a document if it is still at `revision` (0: still absent); `false` when someone
    /// changed it in between.
    pub async fn cas_doc(&self, name: &str, revision: i64, value: Vec<u8>) -> Result<bool, String> {
        let key = self.key(name);
        let cmp = if revision == 0 {
            Compare::create_revision(key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key.clone(), CompareOp::Equal, revision)
        };
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(key, value, None)]);
        let mut c = self.client.clone();
        Ok(within("writing state", c.txn(txn)).await?.succeeded())
    }
}

/// Keeps `lease` alive every `ttl/3` until it is lost; then says why on `lost`.
async fn keep_alive(
    mut client: Client,
    lease: i64,
    ttl: Duration,
    lost: watch::Sender<Option<String>>,
) {
    // Every sixth of the TTL, so that after a success several tries fit before the lease
    // counts as lost (at half the TTL), even when one of them hangs.
    let every = ttl / 6;
    // After a failure the next try comes at once (a killed member's stream breaks; a new one
    // reaches another member), not a tick later: one slow tick must not use up the margin.
    const RETRY: Duration = Duration::from_millis(200);
    let mut last_ok = Instant::now();
    let mut stream = None;
    let mut failing = false;
    loop {
        tokio::time::sleep(if failing { RETRY.min(every) } else { every }).await;
        // A try may take half of what is left before the lease counts as lost (at most a
        // tick): a hung one leaves room for another.
        let wait = every.min(((ttl / 2).saturating_sub(last_ok.elapsed()) / 2).max(RETRY));
        if stream.is_none() {
            stream = tokio::time::timeout(wait, client.lease_keep_alive(lease))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let answer = match stream.as_mut() {
            Some((keeper, answers)) => {
                tokio::time::timeout(wait, async {
                    keeper.keep_alive().await?;
                    answers.message().await
                })
                .await
            }
            None => Ok(Ok(None)),
        };
        match answer {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                last_ok = Instant::now();
                failing = false;
            }
            Ok(Ok(Some(_))) => {
                let _ = lost.send(Some(format!(
                    "etcd says the lock lease {lease:x} has expired"
                )));
                return;
            }
            // No answer, or the stream broke: a new stream, soon.
            _ => {
                stream = None;
                failing = true;
            }
        }
        if last_ok.elapsed() >= ttl / 2 {
            let _ = lost.send(Some(format!(
                "the lock lease could not be kept alive: etcd did not answer for {}s (lease \
                 TTL {}s); the locks may be taken by someone else",
                last_ok.elapsed().as_secs(),
                ttl.as_secs()
            )));
            return;
        }
    }
}

/// Locks held in etcd. Released with [`EtcdHeld::release`]; dropped, they are deleted in the
/// background (or expire with the session's lease).
pub struct EtcdHeld {
    client: Client,
    keys: Vec<(String, String)>,
    lease: i64,
    lost: watch::Receiver<Option<String>>,
    releasing: Arc<StdMutex<bool>>,
    watcher: tokio::task::JoinHandle<()>,
    /// Keeps the session (its keep-alive task) going while the locks are held.
    _session: Arc<Session>,
}

impl std::fmt::Debug for EtcdHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EtcdHeld({:?})", self.targets())
    }
}

impl EtcdHeld {
    async fn start(
        client: Client,
        prefix: String,
        targets: Vec<String>,
        session: Arc<Session>,
        revision: i64,
    ) -> EtcdHeld {
        let keys: Vec<(String, String)> = targets
            .into_iter()
            .map(|t| (format!("{prefix}{t}"), t))
            .collect();
        let (tx, lost) = watch::channel(None);
        let releasing = Arc::new(StdMutex::new(false));
        let watcher = tokio::spawn(watch_held(
            client.clone(),
            prefix,
            keys.clone(),
            revision,
            session.lost.clone(),
            releasing.clone(),
            tx,
        ));
        EtcdHeld {
            client,
            keys,
            lease: session.lease,
            lost,
            releasing,
            watcher,
            _session: session,
        }
    }

    pub fn targets(&self) -> Vec<&str> {
        self.keys.iter().map(|(_, t)| t.as_str()).collect()
    }

    /// `Some(why)` once the locks are lost (lease not kept alive, or a lock deleted).
    pub fn lost(&self) -> watch::Receiver<Option<String>> {
        self.lost.clone()
    }

    fn delete_txn(&self) -> Txn {
        // Only keys still under this lease: a lock lost and taken by someone else stays theirs.
        Txn::new().and_then(
            self.keys
                .iter()
                .map(|(k, _)| {
                    TxnOp::txn(
                        Txn::new()
                            .when([Compare::lease(k.clone(), CompareOp::Equal, self.lease)])
                            .and_then([TxnOp::delete(k.clone(), None)]),
                    )
                })
                .collect::<Vec<_>>(),
        )
    }

    /// Lets the locks go now.
    pub async fn release(mut self) {
        *self.releasing.lock().unwrap() = true;
        self.watcher.abort();
        let txn = self.delete_txn();
        let _ = within("releasing locks", self.client.txn(txn)).await;
        self.keys.clear();
    }
}

impl Drop for EtcdHeld {
    fn drop(&mut self) {
        *self.releasing.lock().unwrap() = true;
        self.watcher.abort();
        if self.keys.is_empty() {
            return;
        }
        let txn = self.delete_txn();
        let mut c = self.client.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = within("releasing locks", c.txn(txn)).await;
            });
        }
    }
}

/// Watches the held keys and the session: the first deletion of a held key (not by its own
/// release) or the session's loss is sent on `lost`.
async fn watch_held(
    mut client: Client,
    prefix: String,
    keys: Vec<(String, String)>,
    revision: i64,
    mut session_lost: watch::Receiver<Option<String>>,
    releasing: Arc<StdMutex<bool>>,
    lost: watch::Sender<Option<String>>,
) {
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let watch = tokio::time::timeout(REQUEST, client.watch(prefix, Some(opts))).await;
    let mut stream = match watch {
        Ok(Ok((w, s))) => Some((w, s)),
        _ => None,
    };
    loop {
        let deleted = async {
            let Some((_, s)) = stream.as_mut() else {
                return std::future::pending::<Option<String>>().await;
            };
            loop {
                match s.message().await {
                    Ok(Some(m)) => {
                        for e in m.events() {
                            if e.event_type() != EventType::Delete {
                                continue;
                            }
                            let key = e.kv().map(|kv| kv.key().to_vec()).unwrap_or_default();
                            if let Some((_, t)) = keys.iter().find(|(k, _)| k.as_bytes() == key) {
                                return Some(t.clone());
                            }
                        }
                    }
                    // The watch broke (etcd unreachable): the session's keep-alive decides.
                    _ => return None,
                }
            }
        };
        tokio::select! {
            gone = deleted => match gone {
                Some(t) => {
                    if !*releasing.lock().unwrap() {
                        let _ = lost.send(Some(format!(
                            "the lock on {t} was removed while this run held it (`remedy locks \
                             break`, or its lease expired)"
                        )));
                    }
                    return;
                }
                None => stream = None,
            },
            changed = session_lost.changed() => {
                // The session's keeper is gone: the session was closed (the locks released),
                // and there is nothing left to watch. (Watching on would wake at once, for ever.)
                if changed.is_err() {
                    return;
                }
                if let Some(why) = session_lost.borrow().clone() {
                    let _ = lost.send(Some(why));
                    return;
                }
            }
        }
    }
}
