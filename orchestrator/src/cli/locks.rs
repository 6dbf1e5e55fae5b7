//! `remedy locks`: who holds which target, in the local state directory or in etcd; and
//! `remedy locks break TARGET --yes`, which takes a lock from its holder (etcd), audited.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::audit::AuditLog;
use crate::coord::Coordinator;
use crate::error::{Error, ExitCode};
use crate::event::Event;

use super::output::fail;
use super::AuditArg;

#[derive(Debug, Args)]
pub struct LocksArgs {
    #[command(subcommand)]
    pub command: Option<LocksCommand>,
    /// State directory (the local backend's lock files).
    #[arg(long, env = crate::lock::ENV_VAR, global = true)]
    pub state_dir: Option<PathBuf>,
    /// Where the locks are: `local` (default) or `etcd://...` (docs/coordination.md).
    #[arg(long, env = crate::coord::spec::ENV_VAR, value_name = "URL", global = true)]
    pub coordination: Option<String>,
    /// Print the locks as JSON, one object per lock.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum LocksCommand {
    /// Take TARGET's lock from its holder (etcd): its run sees the lock lost, starts no new
    /// change and rolls back. Recorded in the audit log. Refused without --yes.
    Break {
        /// The locked target, as `remedy locks` lists it (a host, or `cloudstack-api`).
        target: String,
        /// Break it; without --yes remedy only says who holds it.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        audit: AuditArg,
    },
}

/// `remedy locks` and `remedy locks break`.
pub(super) async fn run(args: LocksArgs) -> ExitCode {
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(crate::lock::default_state_dir);
    let coord = match Coordinator::connect(args.coordination.as_deref(), &state_dir).await {
        Ok(c) => c,
        Err(e) => return fail(&Error::Other(format!("coordination: {e}"))),
    };
    let code = match args.command {
        None => list(&coord, args.json).await,
        Some(LocksCommand::Break { target, yes, audit }) => {
            breaking(&coord, &target, yes, audit.audit_log).await
        }
    };
    coord.close().await;
    code
}

async fn list(coord: &Coordinator, json: bool) -> ExitCode {
    let locks = match coord.list().await {
        Ok(l) => l,
        Err(e) => return fail(&Error::Other(e)),
    };
    if json {
        for l in &locks {
            outln!(
                "{}",
                serde_json::json!({
                    "target": l.target,
                    "holder": l.holder,
                    "expires_in_s": l.expires_in,
                })
            );
        }
        return ExitCode::Success;
    }
    if locks.is_empty() {
        outln!("no locks held ({})", coord.describe());
        return ExitCode::Success;
    }
    outln!("{} lock(s) held ({}):", locks.len(), coord.describe());
    for l in &locks {
        let who = l
            .holder
            .as_ref()
            .map_or("an unreadable holder".to_string(), |h| h.to_string());
        let ttl = l
            .expires_in
            .map(|s| format!("; its lease ends in {s}s unless kept alive"))
            .unwrap_or_default();
        outln!("  {}: {who}{ttl}", l.target);
    }
    ExitCode::Success
}

async fn breaking(
    coord: &Coordinator,
    target: &str,
    yes: bool,
    audit_log: Option<PathBuf>,
) -> ExitCode {
    let busy = match coord.probe(target).await {
        Ok(b) => b,
        Err(e) => return fail(&Error::Other(e)),
    };
    let Some(busy) = busy else {
        outln!(
            "{target} is not locked ({}): nothing to break",
            coord.describe()
        );
        return ExitCode::Success;
    };
    if !yes {
        return fail(&Error::Other(format!(
            "refusing to break the lock without --yes: {busy}; its run would stop and roll back"
        )));
    }
    let audit_path = audit_log.unwrap_or_else(AuditLog::default_path);
    // The audit log must take the record before the lock is broken.
    let log = match AuditLog::open(&audit_path) {
        Ok(l) => l,
        Err(e) => {
            return fail(&Error::Audit(format!(
                "{e}; refusing to break the lock unrecorded"
            )))
        }
    };
    let holder = match coord.break_lock(target).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            outln!("{target} was let go before it could be broken: nothing to break");
            return ExitCode::Success;
        }
        Err(e) => return fail(&Error::Other(e)),
    };
    let event = Event::LockBroken {
        target: target.to_string(),
        holder: holder.to_string(),
        backend: coord.describe(),
        operator: crate::app::operator(),
        host: crate::app::hostname(),
        at: jiff::Timestamp::now().to_string(),
    };
    let appended = serde_json::to_value(&event)
        .map_err(|e| e.to_string())
        .and_then(|v| log.append(v, true).map_err(|e| e.to_string()));
    if let Err(e) = appended {
        return fail(&Error::Audit(format!(
            "the lock on {target} was broken, but the audit log did not take the record: {e}"
        )));
    }
    outln!(
        "broke the lock on {target}, held by {holder}; its run stops and rolls back. Recorded in {}",
        audit_path.display()
    );
    ExitCode::Success
}
