//! Coordination between runs: who holds which target, chosen in one place.
//!
//! Two backends behind one [`Coordinator`]:
//! - **local** (the default): `flock` files in the state directory ([`crate::lock`]). Protects
//!   runs on one machine.
//! - **etcd** (`--coordination etcd://...`, see [`spec`]): locks as keys bound to a lease the
//!   holder keeps alive ([`etcd`]), so runs on several machines and `remedy daemon` replicas
//!   see each other; the daemon also elects its leader and keeps its flap-guard state there.
//!
//! Either way a run gets a [`Held`]: the targets it holds, released at the end, and a signal
//! that says when they were lost (etcd only: a lease that could not be kept alive, or a lock
//! broken by an operator). A run whose locks are lost starts no new change and rolls back.
//!
//! Not here: which targets a run locks (`app::lock_targets`), how a run stops (scheduler).

pub mod etcd;
pub mod spec;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

pub use crate::lock::{AcquireError, Busy, Holder};
pub use spec::Spec;

/// Where locks live.
#[derive(Debug)]
pub enum Coordinator {
    /// `flock` files under `dir/locks/`.
    Local {
        dir: PathBuf,
    },
    Etcd(Box<etcd::Etcd>),
}

/// One held lock, as `remedy locks` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    pub target: String,
    /// `None` when the holder's record cannot be read.
    pub holder: Option<Holder>,
    /// etcd: the seconds the holder's lease has left unless it is kept alive.
    pub expires_in: Option<i64>,
}

impl Coordinator {
    /// The backend `spec` names (`None` or `local`: the state directory's files).
    pub async fn connect(spec: Option<&str>, state_dir: &Path) -> Result<Coordinator, String> {
        match Spec::parse(spec.unwrap_or(""))? {
            Spec::Local => Ok(Coordinator::Local {
                dir: state_dir.to_path_buf(),
            }),
            Spec::Etcd(e) => Ok(Coordinator::Etcd(Box::new(etcd::Etcd::connect(e).await?))),
        }
    }

    /// For messages: where the locks are.
    pub fn describe(&self) -> String {
        match self {
            Coordinator::Local { dir } => format!("local locks in {}", dir.join("locks").display()),
            Coordinator::Etcd(e) => e.spec().to_string(),
        }
    }

    /// Takes every lock of `targets` now, or none.
    pub async fn try_all(&self, targets: &[String], holder: &Holder) -> Result<Held, AcquireError> {
        match self {
            Coordinator::Local { dir } => {
                crate::lock::try_all(dir, targets, holder).map(Held::local)
            }
            Coordinator::Etcd(e) => e.try_all(targets, holder).await.map(Held::etcd),
        }
    }

    /// [`Coordinator::try_all`], waiting up to `wait` for busy targets (etcd: woken by a watch
    /// the moment the holder lets go).
    pub async fn acquire(
        &self,
        targets: &[String],
        holder: &Holder,
        wait: Duration,
    ) -> Result<Held, AcquireError> {
        match self {
            Coordinator::Local { dir } => crate::lock::acquire(dir, targets, holder, wait)
                .await
                .map(Held::local),
            Coordinator::Etcd(e) => e.acquire(targets, holder, wait).await.map(Held::etcd),
        }
    }

    /// Who holds `target` now, if anyone.
    pub async fn probe(&self, target: &str) -> Result<Option<Busy>, String> {
        match self {
            Coordinator::Local { dir } => crate::lock::probe(dir, target),
            Coordinator::Etcd(e) => e.probe(target).await,
        }
    }

    /// Every lock held now.
    pub async fn list(&self) -> Result<Vec<LockInfo>, String> {
        match self {
            Coordinator::Local { dir } => Ok(crate::lock::held(dir)?
                .into_iter()
                .map(|b| LockInfo {
                    target: b.target,
                    holder: b.holder,
                    expires_in: None,
                })
                .collect()),
            Coordinator::Etcd(e) => Ok(e
                .list()
                .await?
                .into_iter()
                .map(|(target, holder, expires_in)| LockInfo {
                    target,
                    holder,
                    expires_in,
                })
                .collect()),
        }
    }

    /// Breaks `target`'s lock: its holder's run sees it lost, and the target is free. The
    /// holder it had (`None`: it was free). A local `flock` is held by a live process and
    /// cannot be taken from it: that is refused, naming the process to stop.
    pub async fn break_lock(&self, target: &str) -> Result<Option<Holder>, String> {
        match self {
            Coordinator::Local { dir } => match crate::lock::probe(dir, target)? {
                None => Ok(None),
                Some(b) => Err(format!(
                    "{b}: a local lock is held by a live process on this machine and is let go \
                     when it ends; stop it (SIGTERM: it rolls back) instead of breaking the lock"
                )),
            },
            Coordinator::Etcd(e) => e.break_lock(target).await,
        }
    }

    /// Ends this process's session (etcd: its lease is revoked, so nothing it held waits for
    /// the TTL). Nothing for local locks.
    pub async fn close(&self) {
        if let Coordinator::Etcd(e) = self {
            e.close().await;
        }
    }
}

/// Locks held by a run.
#[derive(Debug)]
pub struct Held {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Local(crate::lock::Held),
    Etcd(Box<etcd::EtcdHeld>),
}

impl Held {
    fn local(h: crate::lock::Held) -> Held {
        Held {
            inner: Inner::Local(h),
        }
    }

    fn etcd(h: etcd::EtcdHeld) -> Held {
        Held {
            inner: Inner::Etcd(Box::new(h)),
        }
    }

    pub fn targets(&self) -> Vec<&str> {
        match &self.inner {
            Inner::Local(h) => h.targets(),
            Inner::Etcd(h) => h.targets(),
        }
    }

    /// `Some(why)` once the locks are lost. Local locks are never lost while the process
    /// lives.
    pub fn lost(&self) -> watch::Receiver<Option<String>> {
        match &self.inner {
            Inner::Local(_) => watch::channel(None).1,
            Inner::Etcd(h) => h.lost(),
        }
    }

    /// Lets the locks go now (dropping them does too, in the background for etcd).
    pub async fn release(self) {
        match self.inner {
            Inner::Local(h) => drop(h),
            Inner::Etcd(h) => h.release().await,
        }
    }
}
