//! Stopping a run from the terminal: Ctrl-C or SIGTERM during `apply`, `exec` or `plan` sets
//! the run's cancel flag, which the engine obeys (no new steps, then the undo). The daemon
//! handles its own signals (`daemon.rs`).

/// Ctrl-C or SIGTERM set the run's cancel flag: no new steps, in-flight ones finish, then
/// completed changes are undone.
pub(super) fn cancel_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (cancel_tx, cancel) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!(
            "\nstopping: no new steps; in-flight steps finish, then completed changes are undone"
        );
        let _ = cancel_tx.send(true);
    });
    cancel
}
