//! `remedy plan`: a dry-run of a playbook whose predictions are written as a plan file, for
//! approval and `remedy apply --plan`. The plan file is `crate::planfile`'s (made, rendered);
//! the dry-run is the engine's.

use std::path::PathBuf;
use std::sync::Arc;

use crate::app::RunOptions;
use crate::audit::AuditLog;
use crate::error::{Error, ExitCode};
use crate::plan::{self, Options};
use crate::planfile::render::Format;
use crate::playbook;
use crate::transport::route::Router;

use super::output::fail;
use super::params::{self, given_params};
use super::resolve::{reloader, resolve_inventory};
use super::signal::cancel_on_signal;
use super::AuditArg;

/// `remedy plan`'s arguments.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Playbook name (looked up in ./playbooks, then $REMEDY_PLAYBOOK_PATH) or path.
    pub playbook: String,
    /// Inventory file or directory (repeatable; Ansible YAML format).
    #[arg(short, long = "inventory", env = "REMEDY_INVENTORY")]
    pub inventory: Vec<PathBuf>,
    /// Parameter, as name=value, or @FILE: a YAML/JSON map of parameters (repeatable). Secret
    /// parameters are stored only as a hash.
    #[arg(short = 'e', long = "extra", value_parser = params::parse_kv)]
    pub extra: Vec<(String, String)>,
    /// A secret parameter's value from the environment or a file, as NAME=env:VAR or
    /// NAME=file:PATH (trailing newline dropped), kept out of argv (repeatable).
    #[arg(long = "secret", value_name = "NAME=SOURCE", value_parser = params::parse_secret)]
    pub secret: Vec<(String, params::SecretSource)>,
    /// Only plan for hosts matching this pattern.
    #[arg(long)]
    pub limit: Option<String>,
    /// Only plan steps with one of these tags (comma-separated); detect and verify always run.
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Write the plan to this file (JSON; by convention NAME.plan.json).
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// How long the plan may be applied, e.g. 4h, 2d.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub valid_for: std::time::Duration,
    /// What to print: a summary (human), a page for a change ticket (markdown), the file (json).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// How many step x target nodes run at once.
    #[arg(long, default_value_t = 20)]
    pub forks: usize,
    #[command(flatten)]
    pub audit: AuditArg,
    /// ansible-vault passwords for the inventory.
    #[command(flatten)]
    pub vault: super::VaultArgs,
}

/// `remedy plan`: a dry-run whose predictions become a plan file.
pub(super) async fn run(req: PlanArgs, argv: Vec<String>) -> ExitCode {
    let (inv, api, cloudstack_inventory) = match resolve_inventory(&req.inventory).await {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    let program = match playbook::load(&req.playbook).and_then(|l| playbook::compile(&l)) {
        Ok(p) => p,
        Err(d) => return fail(&Error::Invalid(d)),
    };
    let playbook_path = program.root.clone();
    let extra = match given_params(&req.extra, &req.secret, &program) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    let opts = Options {
        extra: extra.clone(),
        limit: req.limit.clone(),
        tags: req.tags.clone(),
        validating: false,
    };
    let plan = match plan::build(program, inv, &opts) {
        Ok(p) => p,
        Err(d) => return fail(&Error::Invalid(d)),
    };
    let reload = match reloader(&plan, &req.inventory, &api) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let audit_path = req.audit.audit_log.unwrap_or_else(AuditLog::default_path);
    let run_opts = RunOptions {
        dry_run: true,
        forks: req.forks,
        audit_log: Some(audit_path.clone()),
        argv,
        cloudstack_inventory,
        reload,
        planning: true,
        inventory_paths: req.inventory.clone(),
        ..RunOptions::default()
    };
    eprintln!(
        "planning {}: detection and every read-only check, nothing that changes anything",
        plan.program.name
    );
    let router = Arc::new(Router::with_api(&plan.inventory, api));
    let making = crate::planfile::Making {
        playbook_path: &playbook_path,
        inventory: &req.inventory,
        extra: &extra,
        tags: &req.tags,
        valid_for: req.valid_for,
    };
    let made = crate::app::make_plan(
        plan,
        router,
        run_opts,
        &making,
        req.out.as_deref(),
        cancel_on_signal(),
    )
    .await;
    let (run, summary, saved) = match made {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let Some(saved) = saved else {
        eprintln!(
            "no plan written: the dry-run did not succeed: {} (`remedy audit show {run}`)",
            summary.status
        );
        return summary.exit;
    };
    let shown = req.out.as_ref().map(|p| p.display().to_string());
    out!(
        "{}",
        crate::planfile::render::render(&saved, req.format, shown.as_deref())
    );
    match &req.out {
        Some(out) => eprintln!(
            "plan {} written to {} (valid until {}; made in run {run})",
            crate::planfile::short(&saved.id),
            out.display(),
            saved.plan.expires_at
        ),
        None => eprintln!("not saved: pass -o FILE to keep it for approval and `apply --plan`"),
    }
    ExitCode::Success
}
