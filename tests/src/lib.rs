//! Shared helpers for the end-to-end tests: write a playbook and an inventory to a temp dir,
//! plan them, and run them against a transport.

pub mod etcd;
pub mod lab;
pub mod netlab;
pub mod ssh;
pub mod zone;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use remedy::app::{execute, RunOptions};
use remedy::event::Event;
use remedy::inventory::Inventory;
use remedy::plan::{build, Options, Plan};
use remedy::scheduler::Summary;
use remedy::transport::Transport;

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write fixture");
    p
}

pub fn plan(playbook: &Path, inventory: &Path, extra: &[(&str, &str)]) -> Plan {
    plan_with(playbook, inventory, params(extra))
}

/// Plan options with these parameters (`-e name=value`), nothing else.
pub fn params(extra: &[(&str, &str)]) -> Options {
    Options {
        extra: extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// Plan with full options (`--limit`, `--tags`, ...).
pub fn plan_with(playbook: &Path, inventory: &Path, opts: Options) -> Plan {
    let loaded = remedy::playbook::load(playbook.to_str().expect("utf-8 path"))
        .unwrap_or_else(|d| panic!("load: {}", d.render(false)));
    let program = remedy::playbook::compile(&loaded)
        .unwrap_or_else(|d| panic!("compile: {}", d.render(false)));
    let inv = Inventory::load(&[inventory.to_path_buf()]).expect("inventory");
    build(program, inv, &opts).unwrap_or_else(|d| panic!("plan: {}", d.render(false)))
}

/// Run a plan; returns the summary and every event shown.
pub async fn run(
    plan: Plan,
    transport: Arc<dyn Transport>,
    opts: RunOptions,
) -> (String, Summary, Vec<Event>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
    let (run, summary) = execute(plan, transport, opts, Some(tx), cancel)
        .await
        .expect("execute");
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (run, summary, events)
}

/// The API requests a simulated zone saw that may change it (by the command's name, as the
/// dry-run guard classifies them): a dry-run must leave this empty.
pub fn mutating_requests(sim: &cloudstack_sim::server::Sim) -> Vec<String> {
    use remedy::transport::{Access, ApiCall};
    sim.requests()
        .into_iter()
        .map(|r| r.command)
        .filter(|c| {
            ApiCall {
                command: c.clone(),
                args: Default::default(),
            }
            .access()
                == Access::Mutating
        })
        .collect()
}
