//! Which `remedy daemon` schedules: with local locks, the one daemon of the state directory;
//! with etcd, the leader elected among the replicas (etcd's election service, on the process's
//! session lease).
//!
//! A replica campaigns until it wins, then leads for a **term**: as long as its lease is kept
//! alive. When the lease is lost (etcd unreachable for half its TTL, or expired) the term ends:
//! the term's cancel is set, so running jobs roll back, and the replica campaigns again on a
//! new lease. Another replica wins once the old lease expires, within one TTL. A stopped
//! leader resigns, so the next one takes over at once.

use std::time::Duration;

use tokio::sync::watch;

use super::Control;
use crate::coord::Coordinator;
use crate::error::Error;

/// The election's name under the coordination prefix.
const ELECTION: &str = "daemon/leader";

/// What a campaign ended with.
pub enum Won {
    /// Stopped while campaigning.
    Stopped,
    Term(Box<Term>),
}

/// A term as leader.
pub struct Term {
    /// Set when the daemon must stop now (the operator's kill) or the term is lost: running
    /// jobs are cancelled and roll back.
    pub cancel: watch::Receiver<bool>,
    /// `Some(why)` once the term is lost (never, with local locks).
    pub lost: watch::Receiver<Option<String>>,
    resign: Option<(etcd_client::Client, etcd_client::LeaderKey)>,
    forward: tokio::task::JoinHandle<()>,
}

impl Term {
    /// Gives the leadership up (etcd), so that another replica takes over at once.
    pub async fn resign(mut self) {
        if let Some((mut c, key)) = self.resign.take() {
            let opts = etcd_client::ResignOptions::new().with_leader(key);
            let _ = tokio::time::timeout(Duration::from_secs(5), c.resign(Some(opts))).await;
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

/// Waits until this daemon may schedule: at once with local locks; with etcd, once elected.
pub async fn win(coord: &Coordinator, me: &str, ctl: &mut Control) -> Result<Won, Error> {
    let Coordinator::Etcd(etcd) = coord else {
        let (_never, lost) = watch::channel(None);
        return Ok(Won::Term(Box::new(term(ctl.kill.clone(), lost, None))));
    };
    let name = etcd.key(ELECTION);
    loop {
        let (lease, lost) = match etcd.lease().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot get a lease from etcd to campaign with; trying again");
                if stopped_within(ctl, Duration::from_secs(1)).await {
                    return Ok(Won::Stopped);
                }
                continue;
            }
        };
        let mut client = etcd.client();
        tracing::info!(election = %name, "campaigning to lead");
        let mut waiting_lost = lost.clone();
        let campaign = client.campaign(name.clone(), me.to_string(), lease);
        let outcome = tokio::select! {
            r = campaign => Some(r),
            _ = async {
                if ctl.stop.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => return Ok(Won::Stopped),
            _ = waiting_lost.wait_for(Option::is_some) => None,
        };
        match outcome {
            Some(Ok(mut r)) => {
                let Some(key) = r.take_leader() else {
                    continue;
                };
                tracing::info!(election = %name, "elected: this daemon leads and schedules");
                let resign = Some((etcd.client(), key));
                return Ok(Won::Term(Box::new(term(ctl.kill.clone(), lost, resign))));
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the campaign failed; trying again");
                if stopped_within(ctl, Duration::from_secs(1)).await {
                    return Ok(Won::Stopped);
                }
            }
            // The lease was lost while campaigning: a new one next time round.
            None => {}
        }
    }
}

/// A term whose cancel follows `kill` and the loss of `lost`.
fn term(
    mut kill: watch::Receiver<bool>,
    mut lost: watch::Receiver<Option<String>>,
    resign: Option<(etcd_client::Client, etcd_client::LeaderKey)>,
) -> Term {
    let (tx, cancel) = watch::channel(*kill.borrow());
    let watching = lost.clone();
    let forward = tokio::spawn(async move {
        // A sender gone (no signal handling; local locks are never lost) never cancels.
        let killed = async {
            if kill.wait_for(|k| *k).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let lost_now = async {
            if lost.wait_for(Option::is_some).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = killed => {}
            () = lost_now => {}
        }
        let _ = tx.send(true);
    });
    Term {
        cancel,
        lost: watching,
        resign,
        forward,
    }
}

/// Sleeps `d`, unless a stop comes first (then `true`).
async fn stopped_within(ctl: &mut Control, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        r = ctl.stop.wait_for(|s| *s) => r.is_ok(),
    }
}

/// Who schedules now, in words: the local daemon of the state directory, or etcd's leader.
pub async fn who_leads(coord: &Coordinator) -> String {
    match coord {
        Coordinator::Local { dir } => crate::lock::probe(dir, super::DAEMON_LOCK)
            .ok()
            .flatten()
            .map(|b| {
                format!(
                    "daemon running: {}",
                    b.holder.map(|h| h.to_string()).unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "no daemon running with this state directory".into()),
        Coordinator::Etcd(e) => {
            let mut c = e.client();
            let asked =
                tokio::time::timeout(Duration::from_secs(5), c.leader(e.key(ELECTION))).await;
            match asked {
                Ok(Ok(r)) => match r.kv() {
                    Some(kv) => format!("leader: {}", String::from_utf8_lossy(kv.value())),
                    None => "no daemon leads (none is running)".into(),
                },
                // etcd answers "no leader" as an error.
                Ok(Err(e)) if e.to_string().contains("no leader") => {
                    "no daemon leads (none is running)".into()
                }
                Ok(Err(e)) => format!("leader unknown: {e}"),
                Err(_) => "leader unknown: etcd did not answer within 5s".into(),
            }
        }
    }
}
