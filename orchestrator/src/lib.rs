//! remedy: a remediation orchestrator for Apache CloudStack operators.
//!
//! The pipeline, in the order of the modules below:
//!
//! ```text
//! load (playbook::load) -> validate + compile (playbook::compile) -> plan (inventory + params:
//! targets, DAG of step x target) -> execute (runner, through a transport::Transport) ->
//! on failure: rollback -> every event -> report (terminal) + audit (JSON lines)
//! ```
//!
//! Anything a user wrote is checked before anything runs, and errors point at file:line:column
//! ([`error::Diagnostic`]). Dry-run executes only read-only actions, and the transport is wrapped
//! in [`transport::guard::DryRunGuard`] so a mutating action cannot slip through.

// Diagnostics are large (they carry the source text for a snippet) but only travel on the cold
// path of rejecting input; boxing them everywhere would buy nothing.
#![allow(clippy::result_large_err)]

pub mod app;
pub mod audit;
pub mod cli;
pub mod cloudstack;
pub mod coord;
pub mod daemon;
pub mod error;
pub mod event;
pub mod identity;
pub mod inventory;
pub mod lab;
pub mod lock;
pub mod masked;
pub mod modules;
pub mod plan;
pub mod planfile;
pub mod planlink;
pub mod playbook;
pub mod preflight;
pub mod quote;
pub mod redact;
pub mod report;
pub mod rollback;
pub mod runner;
pub mod scheduler;
pub mod source;
pub mod table;
pub mod template;
pub mod transport;
