//! The command line: the clap tree (the [`Cli`] parser, the [`Command`] enum, the arguments
//! several commands share) and the dispatch: [`main`] parses, `run` hands each command to its
//! file. Each subcommand's arguments (when it has its own struct) and body live in a file named
//! for it (`apply.rs`, `plan.rs`, `rollback.rs`, `audit.rs`, ...); what several of them share
//! has a file named for what it does: `output.rs` (printing and failing), `resolve.rs` (loading
//! and resolving the inventory), `signal.rs` (Ctrl-C during a run), `playbooks.rs` (the playbooks
//! on the search path), `params.rs` (parameter values), `fit.rs` (the terminal width). `main`
//! (the binary) only calls [`main`] here.
//!
//! Exit codes: remedy's own ([`ExitCode`], documented in the README) for everything a command
//! decides; for a command line clap cannot parse: 0 for `--help` and `--version` and for
//! `remedy` alone (it prints the help), and 4 (invalid input) for a usage error (unknown flag,
//! missing or malformed argument), before anything ran. Not clap's 2: that is remedy's "failed
//! and rolled back cleanly".

#[macro_use]
mod output;

mod api;
mod apply;
mod approve;
mod audit;
mod completions;
mod daemon;
mod exec;
pub(crate) mod fit;
mod inventory;
mod list;
mod locks;
mod man;
mod params;
mod plan;
mod playbooks;
mod resolve;
mod rollback;
mod show;
mod show_plan;
mod signal;
mod validate;

use std::path::PathBuf;

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::error::{Error, ExitCode};
use crate::planfile::render::Format;

pub use apply::ApplyArgs;
pub use audit::AuditCommand;
pub use daemon::{DaemonArgs, DaemonCommand};
pub use exec::ExecArgs;
pub use plan::PlanArgs;
pub use show::ShowFormat;

pub use inventory::VaultArgs;
use output::fail;

#[derive(Debug, Parser)]
#[command(
    name = "remedy",
    version,
    about = "Remediation orchestrator for Apache CloudStack operators",
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The audit log to write or read, for every command that has one.
#[derive(Debug, clap::Args)]
pub struct AuditArg {
    /// Audit log path (default: $REMEDY_AUDIT_LOG, else the user's state dir).
    #[arg(long, global = true, env = crate::audit::ENV_VAR)]
    pub audit_log: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a playbook: detect, change, verify; roll back on failure. With --plan, apply a
    /// saved plan exactly, or refuse (exit 5).
    Apply(ApplyArgs),
    /// Run detection and every read-only check (a dry-run) and write what would change as a
    /// plan, for approval and `remedy apply --plan`.
    Plan(PlanArgs),
    /// Print a saved plan: for people (human), for a change ticket (markdown), or as JSON.
    ShowPlan {
        /// The plan file (written by `remedy plan -o FILE`).
        file: PathBuf,
        /// How to print it: for people (human), for a change ticket (markdown), or the file
        /// itself (json).
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Record an approval of a saved plan in the audit log (signed with a key file, if any).
    Approve {
        /// The plan file to approve (written by `remedy plan -o FILE`).
        file: PathBuf,
        /// Who approves (default: the user running remedy).
        #[arg(long)]
        by: Option<String>,
        /// The change ticket, e.g. CHG1234.
        #[arg(long)]
        ticket: Option<String>,
        /// Approval key file (HMAC-SHA256); default $REMEDY_APPROVAL_KEY. Without one the
        /// approval is recorded with a plain hash.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        #[command(flatten)]
        audit: AuditArg,
    },
    /// Check playbooks without running anything (all of ./playbooks when none is given).
    Validate {
        /// Playbook names or paths (default: every playbook in ./playbooks and
        /// $REMEDY_PLAYBOOK_PATH).
        playbooks: Vec<String>,
        /// Also check targets and host variables against this inventory.
        #[arg(short, long = "inventory", env = "REMEDY_INVENTORY")]
        inventory: Vec<PathBuf>,
        /// Also refuse every `| raw`, the one way to insert a value into a shell command
        /// unquoted.
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// List the playbooks found (in ./playbooks, then $REMEDY_PLAYBOOK_PATH), one line each.
    List,
    /// Show a playbook: parameters, steps and their order.
    Show {
        /// Playbook name (looked up in ./playbooks, then $REMEDY_PLAYBOOK_PATH) or path.
        playbook: String,
        /// text for people, or dot: the step graph for Graphviz (`| dot -Tsvg`).
        #[arg(long, value_enum, default_value_t = ShowFormat::Text)]
        format: ShowFormat,
        /// Name every step that runs before each step, not only the ones it directly follows.
        #[arg(long)]
        transitive: bool,
    },
    /// Undo what a finished run changed, from its recorded pre-state, newest first.
    Rollback {
        /// The run to undo: its id, as `remedy audit list` shows it.
        run: String,
        /// Inventory (default: the one the run recorded).
        #[arg(short, long = "inventory")]
        inventory: Vec<PathBuf>,
        /// Only list what would be undone.
        #[arg(long)]
        dry_run: bool,
        /// Undo the changes; without it remedy lists them, undoes nothing and asks for --yes.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        audit: AuditArg,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Run the simulated CloudStack zone in the foreground, for trying playbooks and clients.
    Lab(crate::lab::LabArgs),
    /// Run jobs on a schedule: detect known failures and fix them (or write plans), with
    /// per-target locks shared with `apply`, cooldowns and circuit breakers.
    Daemon(DaemonArgs),
    /// Make one read-only CloudStack API call (list*, query*, get*) and print the reply.
    Api {
        /// The API command, e.g. listRouters.
        command: String,
        /// Arguments, as name=value.
        #[arg(value_parser = parse_kv)]
        args: Vec<(String, String)>,
        /// Inventory whose remedy_cloudstack says where the API is.
        #[arg(short, long = "inventory", env = "REMEDY_INVENTORY")]
        inventory: Vec<PathBuf>,
        /// Print only these fields of each listed item, as a table (comma-separated).
        #[arg(long, value_delimiter = ',')]
        fields: Vec<String>,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Run one ad-hoc command on the hosts matching PATTERN, in parallel, audited like any
    /// change (as `ansible -a` does, with remedy's audit log and dry-run).
    Exec(ExecArgs),
    /// Show what an inventory resolves to, hosts from the CloudStack API included, and how
    /// each host is reached (as ansible-inventory does; --graph when no option is given).
    Inventory {
        /// Inventory file or directory (repeatable; Ansible YAML format).
        #[arg(short, long = "inventory", env = "REMEDY_INVENTORY")]
        inventory: Vec<PathBuf>,
        /// Every group and host as JSON, with `_meta.hostvars`.
        #[arg(long, conflicts_with_all = ["host", "graph"])]
        list: bool,
        /// One host's variables as JSON.
        #[arg(long, conflicts_with = "graph")]
        host: Option<String>,
        /// The group tree from GROUP (default all).
        #[arg(long, num_args = 0..=1, default_missing_value = "all")]
        graph: Option<String>,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Read the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
        #[command(flatten)]
        audit: AuditArg,
    },
    /// List who holds which target's lock (local state directory, or etcd with
    /// --coordination); `remedy locks break TARGET --yes` takes one from its holder.
    Locks(locks::LocksArgs),
    /// Print a shell completion script (see docs/cli.md for where to put it).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print remedy's man page (roff), or write one page per command into a directory.
    Man {
        /// Write remedy.1 and one page per subcommand (remedy-apply.1, ...) into DIR instead.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// `remedy api`'s arguments, as name=value.
fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected name=value, got {s:?}")),
    }
}

/// Parses `args` and runs the command; returns the process exit code.
///
/// What clap rejects exits with clap's own code: 0 after `--help` or `--version`, 2 for a usage
/// error (and for `remedy` alone, which prints the help). 2 is also [`ExitCode::RolledBack`];
/// a usage error is told apart by its `error:` and usage lines on stderr, and nothing ran.
pub fn main(args: Vec<String>) -> i32 {
    crate::redact::install_panic_hook(params::argv_values(&args));
    match Cli::try_parse_from(&args) {
        Ok(cli) => run(cli, args).code(),
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                // `remedy` alone asks for orientation: the help, on stdout; nothing to do.
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    outln!("{}", Cli::command().render_help());
                    ExitCode::Success.code()
                }
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::Success.code()
                }
                // A command line remedy cannot read is invalid input, like any other: exit 4
                // (2 means "failed and rolled back", which a script must be able to trust).
                // clap repeats the value it refused: not a `-e` or `--secret` one, which may
                // be a secret typed wrongly (`-e "password hunter22"`).
                _ => {
                    let redactor = crate::redact::Redactor::new();
                    for v in params::argv_values(&args) {
                        redactor.register(v);
                    }
                    eprint!("{}", redactor.redact(&e.render().to_string()));
                    ExitCode::InvalidInput.code()
                }
            }
        }
    }
}

/// The vault passwords of a command that reads inventories.
fn vault_args(command: &Command) -> Option<&VaultArgs> {
    match command {
        Command::Apply(a) => Some(&a.vault),
        Command::Plan(a) => Some(&a.vault),
        Command::Exec(a) => Some(&a.vault),
        Command::Validate { vault, .. }
        | Command::Rollback { vault, .. }
        | Command::Api { vault, .. }
        | Command::Inventory { vault, .. } => Some(vault),
        _ => None,
    }
}

/// Runs one parsed command.
fn run(cli: Cli, args: Vec<String>) -> ExitCode {
    // A test build can be made to panic, to prove the panic report masks secrets.
    #[cfg(debug_assertions)]
    if let Ok(text) = std::env::var("REMEDY_TEST_PANIC") {
        panic!("REMEDY_TEST_PANIC: {text}");
    }
    if let Some(vault) = vault_args(&cli.command) {
        if let Err(e) = vault.install() {
            return fail(&e);
        }
    }
    match cli.command {
        Command::Validate {
            playbooks,
            inventory,
            strict,
            vault: _,
        } => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(validate::run(playbooks, &inventory, strict)),
            Err(e) => fail(&Error::Other(format!("cannot start the runtime: {e}"))),
        },
        Command::List => list::run(),
        Command::Show {
            playbook,
            format,
            transitive,
        } => show::run(&playbook, format, transitive),
        Command::Completions { shell } => completions::run(shell),
        Command::Man { out } => man::run(out.as_deref()),
        Command::Audit { command, audit } => audit::run(command, audit.audit_log),
        Command::Rollback {
            run,
            inventory,
            dry_run,
            yes,
            audit,
            vault: _,
        } => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(rollback::run(
                run,
                inventory,
                dry_run,
                yes,
                audit.audit_log,
                args,
            )),
            Err(e) => fail(&Error::Other(format!("cannot start the runtime: {e}"))),
        },
        Command::Lab(a) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(crate::lab::run(a)),
            Err(e) => fail(&Error::Other(format!("cannot start the runtime: {e}"))),
        },
        Command::Api {
            command,
            args,
            inventory,
            fields,
            vault: _,
        } => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(api::run(command, args, &inventory, &fields)),
            Err(e) => fail(&Error::Other(format!("cannot start the runtime: {e}"))),
        },
        Command::Inventory {
            inventory,
            list,
            host,
            graph,
            vault: _,
        } => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(inventory::run(&inventory, list, host, graph)),
            Err(e) => fail(&Error::Other(format!("cannot start the runtime: {e}"))),
        },
        Command::Locks(a) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(locks::run(a)),
            Err(e) => fail(&Error::Other(format!("cannot start the runtime: {e}"))),
        },
        Command::Exec(a) => on_workers(exec::run(a, args)),
        Command::Plan(a) => on_workers(plan::run(a, args)),
        Command::ShowPlan { file, format } => show_plan::run(&file, format),
        Command::Approve {
            file,
            by,
            ticket,
            key,
            audit,
        } => approve::run(&file, by, ticket, key, audit.audit_log),
        Command::Daemon(a) => daemon::run(a),
        Command::Apply(a) => on_workers(apply::run(a, args, false)),
    }
}

/// Runs a fleet command as a task of the runtime's worker threads rather than on the main
/// thread: the run's own future is woken once per finished node, and a wakeup between worker
/// threads is cheaper than unparking the main thread each time. A panic goes on as a panic.
fn on_workers<F>(run: F) -> ExitCode
where
    F: std::future::Future<Output = ExitCode> + Send + 'static,
{
    match tokio::runtime::Runtime::new() {
        Ok(rt) => match rt.block_on(rt.spawn(run)) {
            Ok(code) => code,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => fail(&Error::Other(format!("the run was cancelled: {e}"))),
        },
        Err(e) => fail(&Error::Other(format!("cannot start the runtime: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    /// Every subcommand and every argument of every subcommand, nested ones too, says what it
    /// is for in `--help` (clap's own `--help`, `--version` and `help` aside).
    #[test]
    fn every_command_and_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                let help = arg
                    .get_help()
                    .or(arg.get_long_help())
                    .map(|h| h.to_string());
                if help.is_none_or(|h| h.trim().is_empty()) {
                    missing.push(format!("{path}: {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{sub_path} (the subcommand itself)"));
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "remedy", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
        // The walk does reach nested subcommands' arguments.
        let audit = cmd.find_subcommand("audit").unwrap();
        let show = audit.find_subcommand("show").unwrap();
        assert!(show.get_arguments().any(|a| a.get_id() == "run"));
    }

    #[test]
    fn extra_vars_parse() {
        assert_eq!(
            parse_kv("vpc=web vpc").unwrap(),
            ("vpc".into(), "web vpc".into())
        );
        assert_eq!(parse_kv("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_kv("novalue").is_err());
    }
}
