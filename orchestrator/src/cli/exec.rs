//! `remedy exec`: one ad-hoc command on the hosts matching a pattern, made into a one-step
//! playbook and run through `apply` (`apply.rs`), so it is planned, confirmed, audited and
//! dry-run aware like any change; `--secret` values are shell-quoted into it and masked.

use std::path::PathBuf;

use crate::error::{Error, ExitCode};
use crate::report::Output;

use super::apply::{self, ApplyArgs};
use super::output::fail;
use super::params;
use super::AuditArg;

/// `remedy exec`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Inventory host pattern (host, group, `a:b`, `a:&b`, `!x`).
    pub pattern: String,
    /// Inventory file or directory (repeatable).
    #[arg(short, long = "inventory", env = "REMEDY_INVENTORY")]
    pub inventory: Vec<PathBuf>,
    /// The command only reads: it runs in a dry-run too, and needs no confirmation.
    #[arg(long)]
    pub read_only: bool,
    /// Show what would run, run nothing that changes anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub yes: bool,
    /// How many hosts at once.
    #[arg(long, default_value_t = 20)]
    pub forks: usize,
    /// Per-host limit, e.g. 30s, 5m.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// What to print: terminal lines and a recap (human), or one JSON event per line (json).
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    #[command(flatten)]
    pub audit: AuditArg,
    /// A secret, as NAME=env:VAR or NAME=file:PATH: `{{ NAME }}` in the command stands for it
    /// (shell-quoted), and it is masked in the output and the audit log (repeatable).
    #[arg(long = "secret", value_name = "NAME=SOURCE", value_parser = params::parse_secret)]
    pub secret: Vec<(String, params::SecretSource)>,
    /// The command line, after `--`; run by the remote user's shell as written.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    /// ansible-vault passwords for the inventory.
    #[command(flatten)]
    pub vault: super::VaultArgs,
}

/// `remedy exec`: the command becomes a one-step playbook (the command passed as a parameter
/// and inserted raw, so nothing in it is templated or quoted again) and runs through `apply`:
/// planned against the inventory, confirmed, audited, dry-run aware. Nothing can be undone
/// automatically, and the playbook says so.
///
/// Each `--secret NAME=...` becomes a secret parameter of that playbook, and `{{ NAME }}` in the
/// command its shell-quoted value: the value is masked wherever the run shows or records it.
pub(super) async fn run(req: ExecArgs, argv: Vec<String>) -> ExitCode {
    let mut command = req.command.join(" ");
    if command.trim().is_empty() {
        return fail(&Error::invalid(
            "remedy exec: the command after -- is empty".to_string(),
        ));
    }
    let mut extra = Vec::new();
    let mut declared = String::new();
    for (i, (name, source)) in req.secret.iter().enumerate() {
        let value = match params::read_secret(name, source) {
            Ok(v) => v,
            Err(e) => return fail(&e),
        };
        let quoted = match crate::template::shell_quote(&value) {
            Ok(q) => q,
            Err(e) => return fail(&Error::invalid(format!("--secret {name}: {e}"))),
        };
        let reference = regex::Regex::new(&format!(r"\{{\{{\s*{}\s*\}}\}}", regex::escape(name)))
            .expect("an escaped name makes a valid pattern");
        if !reference.is_match(&command) {
            return fail(&Error::invalid(format!(
                "--secret {name}: the command does not use it; write {{{{ {name} }}}} where it goes"
            )));
        }
        command = reference
            .replace_all(&command, regex::NoExpand(&quoted))
            .into_owned();
        let param = format!("_secret_{i}");
        declared.push_str(&format!("  {param}: {{ secret: true }}\n"));
        extra.push((param, value));
    }
    extra.insert(0, ("cmd".to_string(), command.clone()));
    let on = serde_json::to_string(&req.pattern).unwrap_or_default();
    let kind = if req.read_only {
        "    changes: none\n".to_string()
    } else {
        "    no_rollback: an ad-hoc command (remedy exec); remedy cannot know how to undo it\n"
            .to_string()
    };
    let text = format!(
        "name: exec\ndescription: an ad-hoc command run by remedy exec\nparams:\n  cmd: {{ required: true }}\n{declared}steps:\n  - id: exec\n    on: {on}\n    ssh: \"{{{{ cmd | raw }}}}\"\n{kind}    timeout: {}\n",
        humantime::format_duration(req.timeout)
    );
    let path =
        std::env::temp_dir().join(format!("remedy-exec-{}.yml", uuid::Uuid::new_v4().simple()));
    if let Err(e) = std::fs::write(&path, text) {
        return fail(&Error::Other(format!("{}: {e}", path.display())));
    }
    let args = ApplyArgs {
        vault: super::VaultArgs::default(),
        playbook: Some(path.display().to_string()),
        inventory: req.inventory,
        extra,
        secret: Vec::new(),
        limit: None,
        tags: Vec::new(),
        dry_run: req.dry_run,
        yes: req.yes || req.read_only,
        forks: req.forks,
        allow_irreversible: false,
        output: req.output,
        audit: req.audit,
        plan: None,
        expect_id: None,
        on_drift: None,
        require_approval: false,
        four_eyes: false,
        approval_key: None,
        wait_lock: std::time::Duration::ZERO,
        state_dir: None,
        // As `apply` reads it: from the environment.
        coordination: std::env::var(crate::coord::spec::ENV_VAR)
            .ok()
            .filter(|v| !v.is_empty()),
    };
    let code = apply::run(args, argv, true).await;
    let _ = std::fs::remove_file(&path);
    code
}
