//! `remedy daemon`: runs the jobs file in the foreground (logging set up, signals turned into
//! stop, kill and reload), and its `status` and `reset` subcommands on the daemon's state. The
//! scheduling itself is `crate::daemon`'s.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;

use crate::audit::AuditLog;
use crate::error::{Error, ExitCode};

use super::output::fail;
use super::AuditArg;

/// `remedy daemon`'s arguments.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DaemonArgs {
    #[command(subcommand)]
    pub command: Option<DaemonCommand>,
    /// The jobs file (see docs/daemon.md).
    #[arg(long, value_name = "FILE")]
    pub jobs: Option<PathBuf>,
    /// Serve /healthz and /metrics here (loopback), over the jobs file's `listen`.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Logs as JSON lines (default: text).
    #[arg(long)]
    pub log_json: bool,
    /// State directory: locks, the daemon's state, plans (shared with `apply`).
    #[arg(long, env = crate::lock::ENV_VAR, global = true)]
    pub state_dir: Option<PathBuf>,
    /// SSH connections kept open between runs at most (jump hosts count); 0 keeps none: each
    /// run opens its own and closes them at its end, as `remedy apply` does.
    #[arg(long, env = "REMEDY_SSH_POOL_MAX", value_name = "N",
          default_value_t = crate::transport::ssh::POOL_DEFAULT_MAX)]
    pub ssh_pool_max: usize,
    /// A kept SSH connection nobody used for this long is closed.
    #[arg(long, env = "REMEDY_SSH_POOL_IDLE", value_name = "DURATION", default_value = "10m",
          value_parser = humantime::parse_duration)]
    pub ssh_pool_idle: std::time::Duration,
    /// Where locks, the leader election and the flap-guard state are: `local` (the state
    /// directory, one daemon) or `etcd://...` (replicas elect a leader; docs/coordination.md).
    #[arg(long, env = crate::coord::spec::ENV_VAR, value_name = "URL", global = true)]
    pub coordination: Option<String>,
    #[command(flatten)]
    pub audit: AuditArg,
}

/// `remedy daemon`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// The jobs, their next runs and last results, and open circuits.
    Status {
        /// The jobs file, to list jobs that have not run yet and their schedules.
        #[arg(long, value_name = "FILE")]
        jobs: Option<PathBuf>,
    },
    /// Close a job's circuit (and forget its fixes and cooldown) for TARGET, or every target.
    Reset {
        /// The job's name in the jobs file.
        job: String,
        /// One target (host) of the job (default: every target).
        target: Option<String>,
    },
}

/// `remedy daemon` and its `status` and `reset`.
pub(super) fn run(a: DaemonArgs) -> ExitCode {
    let state_dir = a
        .state_dir
        .clone()
        .unwrap_or_else(crate::lock::default_state_dir);
    let coordination = a.coordination.clone();
    let on_state = |f: &dyn Fn(
        Arc<crate::coord::Coordinator>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = ExitCode>>,
    >| {
        let rt = match tokio::runtime::Runtime::new() {
            Ok(rt) => rt,
            Err(e) => return fail(&Error::Other(format!("cannot start the runtime: {e}"))),
        };
        rt.block_on(async {
            let coord =
                match crate::coord::Coordinator::connect(coordination.as_deref(), &state_dir).await
                {
                    Ok(c) => Arc::new(c),
                    Err(e) => return fail(&Error::Other(format!("coordination: {e}"))),
                };
            let code = f(coord.clone()).await;
            coord.close().await;
            code
        })
    };
    match a.command {
        Some(DaemonCommand::Status { jobs }) => on_state(&|coord| {
            let jobs = jobs.clone();
            Box::pin(async move { status(&coord, jobs.as_deref()).await })
        }),
        Some(DaemonCommand::Reset { job, target }) => on_state(&|coord| {
            let (job, target) = (job.clone(), target.clone());
            Box::pin(async move { reset(&coord, &job, target.as_deref()).await })
        }),
        None => {
            let Some(jobs) = a.jobs else {
                return fail(&Error::invalid(
                    "remedy daemon needs --jobs FILE (or `status` / `reset`)",
                ));
            };
            let subscriber = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "remedy=info".into()),
                );
            let _ = if a.log_json {
                subscriber.json().try_init()
            } else {
                subscriber.try_init()
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return fail(&Error::Other(format!("cannot start the runtime: {e}"))),
            };
            let opts = crate::daemon::Options {
                jobs,
                state_dir,
                audit_log: a.audit.audit_log.unwrap_or_else(AuditLog::default_path),
                listen: a.listen,
                coordination: a.coordination,
                ssh_pool: (a.ssh_pool_max > 0).then_some(crate::transport::ssh::PoolLimits {
                    max: a.ssh_pool_max,
                    idle: a.ssh_pool_idle,
                }),
            };
            rt.block_on(async move {
                let (stop_tx, stop) = tokio::sync::watch::channel(false);
                let (kill_tx, kill) = tokio::sync::watch::channel(false);
                let (reload_tx, reload) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(async move {
                    use tokio::signal::unix::{signal, SignalKind};
                    let (Ok(mut term), Ok(mut hup)) = (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::hangup()),
                    ) else {
                        return;
                    };
                    let mut stops = 0;
                    loop {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = term.recv() => {}
                            _ = hup.recv() => {
                                let _ = reload_tx.send(());
                                continue;
                            }
                        }
                        stops += 1;
                        if stops == 1 {
                            let _ = stop_tx.send(true);
                        } else {
                            tracing::warn!(
                                "second stop signal: cancelling running jobs (they roll back)"
                            );
                            let _ = kill_tx.send(true);
                        }
                    }
                });
                let ctl = crate::daemon::Control { stop, kill, reload };
                let metrics = Arc::new(crate::daemon::observe::Metrics::default());
                match crate::daemon::run(opts, ctl, Default::default(), metrics).await {
                    Ok(()) => ExitCode::Success,
                    Err(e) => fail(&e),
                }
            })
        }
    }
}

/// `remedy daemon reset JOB [TARGET]`.
async fn reset(
    coord: &Arc<crate::coord::Coordinator>,
    job: &str,
    target: Option<&str>,
) -> ExitCode {
    let store = crate::daemon::state::Store::new(coord);
    let r = store
        .update(|s| {
            s.jobs
                .get_mut(job)
                .map(|js| js.reset(target))
                .unwrap_or_default()
        })
        .await;
    match r {
        Ok(done) if done.is_empty() => {
            outln!(
                "{job}: nothing to reset{}",
                target.map(|t| format!(" for {t}")).unwrap_or_default()
            );
            ExitCode::Success
        }
        Ok(done) => {
            outln!(
                "{job}: reset {} (circuit closed, fixes and cooldown forgotten)",
                done.join(", ")
            );
            ExitCode::Success
        }
        Err(e) => fail(&Error::Other(e)),
    }
}

/// `remedy daemon status`.
async fn status(
    coord: &Arc<crate::coord::Coordinator>,
    jobs: Option<&std::path::Path>,
) -> ExitCode {
    let store = crate::daemon::state::Store::new(coord);
    let state = match store.load().await {
        Ok(s) => s,
        Err(e) => return fail(&Error::Other(e)),
    };
    let defined = match jobs.map(crate::daemon::jobs::Jobs::load) {
        Some(Ok(j)) => Some(j),
        Some(Err(d)) => return fail(&Error::Invalid(d)),
        None => None,
    };
    let mut names: std::collections::BTreeSet<String> = state.jobs.keys().cloned().collect();
    if let Some(j) = &defined {
        names.extend(j.jobs.iter().map(|j| j.name.clone()));
    }
    if names.is_empty() {
        outln!("no jobs in {}", store.describe());
        return ExitCode::Success;
    }
    outln!("{}", crate::daemon::leadership::who_leads(coord).await);
    let empty = crate::daemon::state::JobState::default();
    for name in names {
        let js = state.jobs.get(&name).unwrap_or(&empty);
        let schedule = defined
            .as_ref()
            .and_then(|d| d.get(&name))
            .map(|j| format!(" ({}, {:?} mode)", j.schedule.describe(), j.mode).to_lowercase())
            .unwrap_or_default();
        outln!("{name}{schedule}");
        let show =
            |t: &Option<jiff::Timestamp>| t.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
        outln!("  next run:     {}", show(&js.next_run));
        outln!(
            "  last run:     {}{}",
            show(&js.last_run),
            js.last_result
                .as_ref()
                .map(|r| format!(": {r} (exit {})", js.last_exit.unwrap_or(0)))
                .unwrap_or_default()
        );
        outln!("  last success: {}", show(&js.last_success));
        if let Some(d) = &js.degraded {
            outln!(
                "  degraded:     since {}: {}",
                d.since,
                d.targets
                    .iter()
                    .map(|(t, why)| format!("{t} ({why})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(f) = &js.in_flight {
            outln!(
                "  running:      since {} ({}, run {})",
                f.since,
                f.by,
                f.token
            );
        }
        for (t, b) in crate::daemon::run::blocked_now(js) {
            outln!("  {t}: {b}");
        }
        for b in state.events.pending.iter().filter(|b| b.job == name) {
            outln!(
                "  waiting:      a batch of events since {} (first {}, limit {})",
                b.first,
                b.about,
                b.limit.as_deref().unwrap_or("the job's own targets")
            );
        }
    }
    ExitCode::Success
}
