//! `remedy apply`: a playbook (or a saved plan, `--plan`) planned against the inventory,
//! confirmed, and run with its events printed and audited; before it changes anything, a warning
//! names an interrupted earlier run on the same targets. `remedy exec` runs through here too.
//! The run itself is `crate::app::execute`'s; opening a saved plan is `crate::planfile`'s.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use crate::app::{execute, RunOptions};
use crate::audit::{self, AuditLog};
use crate::error::{Error, ExitCode};
use crate::plan::{self, Options};
use crate::planfile::render::Format;
use crate::planfile::OnDrift;
use crate::playbook;
use crate::report::{self, Output};
use crate::transport::route::Router;

use super::output::{color, fail};
use super::params::{self, given_params};
use super::resolve::{reloader, resolve_inventory};
use super::signal::cancel_on_signal;
use super::AuditArg;

/// `remedy apply`'s arguments (also built by `remedy exec`).
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Playbook name (looked up in ./playbooks, then $REMEDY_PLAYBOOK_PATH) or path; not with
    /// --plan, which names its own.
    #[arg(required_unless_present = "plan", conflicts_with = "plan")]
    pub playbook: Option<String>,
    /// Inventory file or directory (repeatable; Ansible YAML format).
    #[arg(short, long = "inventory", env = "REMEDY_INVENTORY")]
    pub inventory: Vec<PathBuf>,
    /// Parameter, as name=value, or @FILE: a YAML/JSON map of parameters (repeatable).
    #[arg(short = 'e', long = "extra", value_parser = params::parse_kv)]
    pub extra: Vec<(String, String)>,
    /// A secret parameter's value from the environment or a file, as NAME=env:VAR or
    /// NAME=file:PATH (trailing newline dropped), kept out of argv (repeatable).
    #[arg(long = "secret", value_name = "NAME=SOURCE", value_parser = params::parse_secret)]
    pub secret: Vec<(String, params::SecretSource)>,
    /// Only act on hosts matching this pattern.
    #[arg(long)]
    pub limit: Option<String>,
    /// Only run steps with one of these tags (comma-separated); detect and verify always run.
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Run only read-only actions and report what would change.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (asked only when the plan has a step that may change
    /// something; a playbook that only reads runs without it).
    #[arg(short, long)]
    pub yes: bool,
    /// How many step x target nodes run at once.
    #[arg(long, default_value_t = 20)]
    pub forks: usize,
    /// Allow steps declared irreversible.
    #[arg(long)]
    pub allow_irreversible: bool,
    /// What to print: terminal lines and a recap (human), or one JSON event per line (json).
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    #[command(flatten)]
    pub audit: AuditArg,
    /// Apply this saved plan (`remedy plan -o`): its playbook, inventory, parameters and
    /// actions exactly; refused (exit 5) when any of them, or the live state, differs.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["limit", "tags", "allow_irreversible"])]
    pub plan: Option<PathBuf>,
    /// Refuse unless the plan's id is this (or starts with these, 12 at least).
    #[arg(long, value_name = "ID", requires = "plan")]
    pub expect_id: Option<String>,
    /// When a target's state drifted from the plan: abort and undo this run's changes, or
    /// skip that target and go on with the others [default: abort].
    #[arg(long, value_enum, requires = "plan")]
    pub on_drift: Option<OnDrift>,
    /// Refuse unless the audit log holds an approval of the plan (`remedy approve`).
    #[arg(long, requires = "plan")]
    pub require_approval: bool,
    /// With --require-approval: the approval must be by someone other than the plan's author.
    #[arg(long, requires = "require_approval")]
    pub four_eyes: bool,
    /// Count only approvals signed with this key file (default $REMEDY_APPROVAL_KEY).
    #[arg(long, value_name = "FILE", requires = "plan")]
    pub approval_key: Option<PathBuf>,
    /// How long to wait for a target another run (or the daemon) holds; then exit 6.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub wait_lock: std::time::Duration,
    /// State directory (per-target locks), shared with `remedy daemon`.
    #[arg(long, env = crate::lock::ENV_VAR)]
    pub state_dir: Option<PathBuf>,
    /// ansible-vault passwords for the inventory.
    #[command(flatten)]
    pub vault: super::VaultArgs,
    /// Where runs coordinate their locks: `local` (files in the state directory, the default)
    /// or `etcd://HOST:PORT[,HOST:PORT]/PREFIX[?ttl=10s&...]` (docs/coordination.md).
    #[arg(long, env = crate::coord::spec::ENV_VAR, value_name = "URL")]
    pub coordination: Option<String>,
}

/// `remedy apply` (and `remedy exec`, with `show_output`): a playbook, or with `--plan` a saved
/// plan, resolved against the inventory, confirmed, then run.
pub(super) async fn run(req: ApplyArgs, argv: Vec<String>, show_output: bool) -> ExitCode {
    let audit_path = req
        .audit
        .audit_log
        .clone()
        .unwrap_or_else(AuditLog::default_path);
    if req.plan.is_none() {
        // (clap does not enforce `requires` next to an argument that conflicts with --plan.)
        let needs_plan = [
            ("--expect-id", req.expect_id.is_some()),
            ("--on-drift", req.on_drift.is_some()),
            ("--require-approval", req.require_approval),
            ("--four-eyes", req.four_eyes),
            ("--approval-key", req.approval_key.is_some()),
        ];
        if let Some((flag, _)) = needs_plan.iter().find(|(_, set)| *set) {
            return fail(&Error::invalid(format!(
                "{flag} applies to a saved plan: use it with --plan FILE"
            )));
        }
    }
    let opened = match &req.plan {
        Some(file) => {
            let extra = match params::gather(&req.extra, &req.secret, None) {
                Ok(e) => e,
                Err(e) => return fail(&e),
            };
            let applying = crate::planfile::Applying {
                file: file.clone(),
                expect_id: req.expect_id.clone(),
                extra,
                inventory: req.inventory.clone(),
                on_drift: req.on_drift.unwrap_or_default(),
                require_approval: req.require_approval,
                four_eyes: req.four_eyes,
                approval_key: req.approval_key.clone(),
                audit: audit_path.clone(),
            };
            match applying.open(jiff::Timestamp::now()) {
                Ok(o) => Some(o),
                Err(e) => return fail(&e),
            }
        }
        None => None,
    };
    let inv_paths = match &opened {
        Some(o) => o.inventory.clone(),
        None => req.inventory.clone(),
    };
    let (inv, api, cloudstack_inventory) = match resolve_inventory(&inv_paths).await {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    let plan = match &opened {
        Some(o) => match o.rebuild(inv) {
            Ok(p) => p,
            Err(e) => return fail(&e),
        },
        None => {
            let name = req.playbook.clone().unwrap_or_default();
            let program = match playbook::load(&name).and_then(|l| playbook::compile(&l)) {
                Ok(p) => p,
                Err(d) => return fail(&Error::Invalid(d)),
            };
            let extra = match given_params(&req.extra, &req.secret, &program) {
                Ok(e) => e,
                Err(e) => return fail(&e),
            };
            let opts = Options {
                extra,
                limit: req.limit,
                tags: req.tags,
                validating: false,
            };
            match plan::build(program, inv, &opts) {
                Ok(p) => p,
                Err(d) => return fail(&Error::Invalid(d)),
            }
        }
    };
    let reload = match reloader(&plan, &inv_paths, &api) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let state_dir = req
        .state_dir
        .clone()
        .unwrap_or_else(crate::lock::default_state_dir);
    // Locks are taken only by a run that may change something.
    let coord = if req.dry_run {
        Arc::new(crate::coord::Coordinator::Local {
            dir: state_dir.clone(),
        })
    } else {
        match crate::coord::Coordinator::connect(req.coordination.as_deref(), &state_dir).await {
            Ok(c) => Arc::new(c),
            Err(e) => return fail(&Error::Other(format!("coordination: {e}"))),
        }
    };
    if !req.dry_run {
        warn_interrupted(&audit_path, &coord, &plan).await;
    }
    if !req.dry_run && !show_output && req.output == Output::Human {
        match &opened {
            Some(o) => eprint!(
                "{}",
                crate::planfile::render::render(&o.saved, Format::Human, None)
            ),
            None => eprint!("{}", report::plan_text(&plan)),
        }
    }
    if !req.dry_run && !req.yes && may_change(&plan) {
        if !std::io::stdin().is_terminal() {
            return fail(&Error::Other("refusing to change anything without confirmation: pass --yes (or --dry-run to see what would change)".into()));
        }
        eprint!(
            "apply {} to {} target(s)? [y/N] ",
            match &opened {
                Some(o) => format!("plan {}", crate::planfile::short(&o.saved.id)),
                None => plan.program.name.clone(),
            },
            plan.targets
                .iter()
                .flatten()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        );
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() || !matches!(answer.trim(), "y" | "yes")
        {
            eprintln!("not applied");
            return ExitCode::Success;
        }
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let printer = tokio::spawn(report::print_with(rx, req.output, color(), show_output));
    let cancel = cancel_on_signal();
    let run_opts = RunOptions {
        dry_run: req.dry_run,
        forks: req.forks,
        audit_log: Some(audit_path.clone()),
        allow_irreversible: req.allow_irreversible,
        argv,
        cloudstack_inventory,
        reload,
        planning: false,
        from_plan: opened
            .as_ref()
            .map(|o| Arc::new(o.from_plan(req.on_drift.unwrap_or_default()))),
        locks: Some(crate::app::Locks {
            coord: coord.clone(),
            wait: req.wait_lock,
            by: format!(
                "{} (remedy {} {})",
                crate::app::operator(),
                if show_output { "exec" } else { "apply" },
                plan.program.name
            ),
        }),
        inventory_paths: inv_paths.clone(),
        stopped_by: None,
    };
    let router = Arc::new(Router::with_api(&plan.inventory, api));
    let result = execute(plan, router, run_opts, Some(tx), cancel).await;
    coord.close().await;
    let _ = printer.await;
    match result {
        Ok((run, summary)) => {
            if req.output == Output::Human {
                if let (Some(o), false) = (&opened, summary.drift.is_empty()) {
                    eprintln!(
                        "REFUSED: the live state differs from plan {}:",
                        crate::planfile::short(&o.saved.id)
                    );
                    for d in &summary.drift {
                        let at = if d.target.is_empty() {
                            d.step.clone()
                        } else {
                            format!("{} @ {}", d.step, d.target)
                        };
                        eprintln!("  {at}: {}", d.why.replace('\n', "\n      "));
                    }
                }
                eprintln!(
                    "audit log: {} (run {run}; `remedy audit show {run}` tells it)",
                    audit_path.display()
                );
            }
            summary.exit
        }
        Err(e) => fail(&e),
    }
}

/// Whether the plan has a step that may change something (a mutating step not left out by
/// `--tags`): only then does `apply` ask for confirmation. A plan of reads only (reports,
/// probes, checks) runs without `--yes`, as its dry-run would.
fn may_change(plan: &plan::Plan) -> bool {
    plan.program
        .steps
        .iter()
        .zip(&plan.bindings)
        .any(|(step, binding)| step.mutating() && *binding != plan::Binding::TaggedOut)
}

/// Before a run changes anything: a run that ended without an end record (killed) and left
/// changes on some of the same targets is named, with the command that finishes its undo.
async fn warn_interrupted(
    audit_path: &std::path::Path,
    coord: &crate::coord::Coordinator,
    plan: &plan::Plan,
) {
    let Ok(records) = audit::read(audit_path) else {
        return;
    };
    let targets: std::collections::BTreeSet<String> =
        plan.targets.iter().flatten().cloned().collect();
    // A run that is still going holds its targets' locks (the controller's API changes: the
    // CloudStack API lock).
    let mut held = std::collections::BTreeSet::new();
    for t in &targets {
        let lock = if t == plan::CONTROLLER {
            crate::app::CLOUDSTACK_LOCK
        } else {
            t
        };
        if matches!(coord.probe(lock).await, Ok(Some(_))) {
            held.insert(t.clone());
        }
    }
    let alive = |t: &str| held.contains(t);
    for i in crate::rollback::interrupted(&records, &targets, &alive) {
        eprintln!(
            "warning: run {} ({}) ended without an end record (killed?) and may have left \
             changes on {}; see them with `remedy rollback {} --dry-run`, undo them with \
             `remedy rollback {} --yes`",
            i.run,
            i.playbook,
            i.targets.join(", "),
            i.run,
            i.run
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn apply_flags_parse() {
        let c = Cli::try_parse_from([
            "remedy",
            "apply",
            "fix",
            "-i",
            "a.yml",
            "-e",
            "x=1",
            "--dry-run",
            "--forks",
            "5",
            "--tags",
            "a,b",
            "--output",
            "json",
        ])
        .unwrap();
        match c.command {
            Command::Apply(ApplyArgs {
                dry_run,
                forks,
                tags,
                output,
                ..
            }) => {
                assert!(dry_run);
                assert_eq!(forks, 5);
                assert_eq!(tags, ["a", "b"]);
                assert_eq!(output, Output::Json);
            }
            _ => panic!("not apply"),
        }
    }
}
