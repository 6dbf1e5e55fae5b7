//! The command line: clap types, and one function per subcommand. Each returns an exit code;
//! `main` only calls [`main`] here.
//!
//! Exit codes: remedy's own ([`ExitCode`], documented in the README) for everything a command
//! decides; for a command line clap cannot parse: 0 for `--help` and `--version` and for
//! `remedy` alone (it prints the help), and 4 (invalid input) for a usage error (unknown flag,
//! missing or malformed argument), before anything ran. Not clap's 2: that is remedy's "failed
//! and rolled back cleanly".

use std::io::IsTerminal;

mod fit;
mod params;

/// `print!`/`println!` for a command's output, which is often piped into `head` or `less`: a
/// reader that went away ends the command quietly instead of a panic with a backtrace.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

macro_rules! outln {
    () => { out!("\n") };
    ($($t:tt)*) => {{
        out!($($t)*);
        out!("\n");
    }};
}
use std::path::PathBuf;
use std::sync::Arc;

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::app::{execute, RunOptions};
use crate::audit::{self, AuditLog};
use crate::error::{Error, ExitCode};
use crate::inventory::Inventory;
use crate::plan::{self, Options};
use crate::planfile::render::Format;
use crate::planfile::{OnDrift, SavedPlan};
use crate::playbook::{self, Kind, Undo};
use crate::report::{self, Output};
use crate::transport::route::Router;

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

#[derive(Debug, clap::Args)]
pub struct AuditArg {
    /// Audit log path (default: $REMEDY_AUDIT_LOG, else the user's state dir).
    #[arg(long, global = true, env = audit::ENV_VAR)]
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
    },
    /// Read the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
        #[command(flatten)]
        audit: AuditArg,
    },
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
    /// Do not ask for confirmation.
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
}

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
    #[command(flatten)]
    pub audit: AuditArg,
}

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
}

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowFormat {
    Text,
    Dot,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// One line per run.
    List,
    /// The story of one run.
    Show {
        /// The run's id, as `remedy audit list` shows it.
        run: String,
    },
    /// Check the hash chain; names any edited, deleted or reordered line.
    Verify,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected name=value, got {s:?}")),
    }
}

fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn fail(e: &Error) -> ExitCode {
    eprint!("{}", e.render(std::io::stderr().is_terminal()));
    e.exit_code()
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

/// Runs one parsed command.
fn run(cli: Cli, args: Vec<String>) -> ExitCode {
    // A test build can be made to panic, to prove the panic report masks secrets.
    #[cfg(debug_assertions)]
    if let Ok(text) = std::env::var("REMEDY_TEST_PANIC") {
        panic!("REMEDY_TEST_PANIC: {text}");
    }
    match cli.command {
        Command::Validate {
            playbooks,
            inventory,
            strict,
        } => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(validate(playbooks, &inventory, strict)),
            Err(e) => fail(&Error::Other(format!("cannot start the runtime: {e}"))),
        },
        Command::List => list(),
        Command::Show {
            playbook,
            format,
            transitive,
        } => show(&playbook, format, transitive),
        Command::Completions { shell } => completions(shell),
        Command::Man { out } => man(out.as_deref()),
        Command::Audit { command, audit } => audit_cmd(command, audit.audit_log),
        Command::Rollback {
            run,
            inventory,
            dry_run,
            yes,
            audit,
        } => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(rollback_run(
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
        } => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(api_call(command, args, &inventory, &fields)),
            Err(e) => fail(&Error::Other(format!("cannot start the runtime: {e}"))),
        },
        Command::Inventory {
            inventory,
            list,
            host,
            graph,
        } => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(show_inventory(&inventory, list, host, graph)),
            Err(e) => fail(&Error::Other(format!("cannot start the runtime: {e}"))),
        },
        Command::Exec(a) => on_workers(exec(a, args)),
        Command::Plan(a) => on_workers(make_plan(a, args)),
        Command::ShowPlan { file, format } => show_plan(&file, format),
        Command::Approve {
            file,
            by,
            ticket,
            key,
            audit,
        } => approve(&file, by, ticket, key, audit.audit_log),
        Command::Daemon(a) => daemon(a),
        Command::Apply(a) => on_workers(apply(a, args, false)),
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

/// `remedy api`: one read-only call, the reply as JSON (or a table of `fields`).
async fn api_call(
    command: String,
    args: Vec<(String, String)>,
    inventory: &[PathBuf],
    fields: &[String],
) -> ExitCode {
    use crate::transport::{Access, ApiCall};
    let call = ApiCall {
        command: command.clone(),
        args: args.into_iter().collect(),
    };
    if call.access() != Access::ReadOnly {
        return fail(&Error::invalid(format!(
            "remedy api makes read-only calls only (list*, query*, get*); {command} may change \
             the cloud, so it belongs in a playbook, where it is planned, audited and undone on \
             failure"
        )));
    }
    let inv = match load_inventory(inventory) {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    let Some(ep) = inv.cloudstack() else {
        return fail(&Error::invalid(
            "the inventory has no remedy_cloudstack (give one with -i)".to_string(),
        ));
    };
    let conn = match crate::cloudstack::connect(ep, crate::cloudstack::Options::default()).await {
        Ok(c) => c,
        Err(e) => return fail(&Error::Other(e.to_string())),
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let reply = match conn
        .client
        .call(
            &command,
            &call.args,
            crate::cloudstack::Method::Get,
            deadline,
            None,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return fail(&Error::Other(e.to_string())),
    };
    // Secret-named fields (secretkey, password, privatekey...) and every secret the run knows,
    // the API secret key first, never reach the terminal.
    let mut redactor = crate::redact::Redactor::new();
    crate::cloudstack::register_secrets(&inv, &mut redactor);
    conn.client.register_secret(&mut redactor);
    out!("{}", render_reply(reply, fields, &redactor));
    ExitCode::Success
}

/// `remedy api`'s output: the reply as JSON, or a table of `fields`, redacted.
fn render_reply(
    mut reply: serde_json::Value,
    fields: &[String],
    redactor: &crate::redact::Redactor,
) -> String {
    redactor.redact_json(&mut reply);
    if fields.is_empty() {
        return format!(
            "{}\n",
            serde_json::to_string_pretty(&reply).unwrap_or_default()
        );
    }
    let items: Vec<serde_json::Value> = reply
        .as_object()
        .and_then(crate::cloudstack::reply::list_key)
        .and_then(|k| reply[k].as_array().cloned())
        .unwrap_or_else(|| vec![reply.clone()]);
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| fields.iter().map(|f| cell(&item[f.as_str()])).collect())
        .collect();
    let widths: Vec<usize> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([f.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(fields.to_vec()) + "\n";
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

fn load_inventory(paths: &[PathBuf]) -> Result<Inventory, Error> {
    Inventory::load(paths).map_err(|e| Error::invalid(e.to_string()))
}

/// A resolved inventory: the hosts, the API transport that read the zone (the run keeps using
/// it), and what the CloudStack source read, for the audit log.
type Resolved = (
    Inventory,
    Arc<crate::transport::api::ApiTransport>,
    Option<serde_json::Value>,
);

/// Loads the inventory and, when it declares `remedy_cloudstack_inventory`, adds the zone's
/// machines read through the returned API transport (which the run then keeps using: with the
/// embedded simulator, it is the same zone).
async fn resolve_inventory(paths: &[PathBuf]) -> Result<Resolved, Error> {
    resolve_loaded(load_inventory(paths)?, paths).await
}

/// [`resolve_inventory`] for an inventory already loaded from `paths`.
async fn resolve_loaded(inv: Inventory, paths: &[PathBuf]) -> Result<Resolved, Error> {
    let api = Arc::new(crate::transport::api::ApiTransport::new(
        inv.cloudstack().cloned(),
        crate::cloudstack::Options::default(),
    ));
    let (inv, generated) = crate::cloudstack::inventory::resolve(inv, paths, &api)
        .await
        .map_err(Error::Other)?;
    let record = generated.as_ref().map(|g| g.record());
    for skipped in generated.map(|g| g.skipped).unwrap_or_default() {
        eprintln!("inventory: left out {skipped}");
    }
    Ok((inv, api, record))
}

/// `remedy inventory`.
async fn show_inventory(
    paths: &[PathBuf],
    list: bool,
    host: Option<String>,
    graph: Option<String>,
) -> ExitCode {
    use crate::inventory::show;
    let inv = match resolve_inventory(paths).await {
        Ok((inv, _, _)) => inv,
        Err(e) => return fail(&e),
    };
    let text = if list {
        serde_json::to_string_pretty(&show::list(&inv)).unwrap_or_default()
    } else if let Some(name) = host {
        match inv.host(&name) {
            Some(h) => serde_json::to_string_pretty(&show::host_vars(h)).unwrap_or_default(),
            None => {
                return fail(&Error::invalid(format!(
                    "no host {name:?} in the inventory"
                )))
            }
        }
    } else {
        match show::graph(&inv, graph.as_deref().unwrap_or("all")) {
            Ok(g) => g.trim_end().to_string(),
            Err(e) => return fail(&Error::invalid(e)),
        }
    };
    outln!("{text}");
    ExitCode::Success
}

/// `remedy validate`; with an inventory that declares the CloudStack source, the zone is read
/// so that targets such as `routers` resolve as they would in a run. `strict` also refuses
/// every use of the `raw` filter.
async fn validate(names: Vec<String>, inventory: &[PathBuf], strict: bool) -> ExitCode {
    let inv = if inventory.is_empty() {
        None
    } else {
        match resolve_inventory(inventory).await {
            Ok((i, _, _)) => Some(i),
            Err(e) => return fail(&e),
        }
    };
    let names = if names.is_empty() {
        found_playbooks()
    } else {
        names
    };
    if names.is_empty() {
        return fail(&no_playbooks_found("validate"));
    }
    let mut worst = ExitCode::Success;
    for n in &names {
        let checked = plan::validate(n, inv.as_ref()).and_then(|p| {
            let raw = p.templates.raw_uses();
            if strict && !raw.is_empty() {
                return Err(crate::error::Diagnostics(raw.to_vec()));
            }
            Ok(p)
        });
        match checked {
            Ok(p) => outln!("ok       {n} ({}: {} steps)", p.name, p.steps.len()),
            Err(d) => {
                outln!("invalid  {n}");
                eprint!("{}", d.render(std::io::stderr().is_terminal()));
                worst = ExitCode::InvalidInput;
            }
        }
    }
    worst
}

fn found_playbooks() -> Vec<String> {
    let mut out = Vec::new();
    for dir in playbook::load::search_path() {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("yml" | "yaml")))
                .collect();
            files.sort();
            out.extend(files.into_iter().map(|p| p.display().to_string()));
        }
    }
    out
}

/// The error for a search path that holds no playbook: every directory searched and what was
/// there, and how to point `remedy COMMAND` at playbooks.
fn no_playbooks_found(command: &str) -> Error {
    let cwd = std::env::current_dir().unwrap_or_default();
    let searched: Vec<String> = playbook::load::search_path()
        .iter()
        .map(|dir| {
            let shown = cwd.join(dir);
            let why = if !dir.exists() {
                "does not exist"
            } else if !dir.is_dir() {
                "not a directory"
            } else {
                "no .yml or .yaml file"
            };
            format!("{} ({why})", shown.display())
        })
        .collect();
    let path_var = match std::env::var(playbook::load::PATH_VAR) {
        Ok(v) if !v.is_empty() => String::new(),
        _ => format!("; ${} is not set", playbook::load::PATH_VAR),
    };
    Error::Invalid(
        crate::error::Diagnostic::new(format!(
            "no playbooks found: searched {}{path_var}",
            searched.join(", ")
        ))
        .with_help(format!(
            "run remedy from the checkout (the directory holding playbooks/), or point it at \
             your playbook directories: {}=DIR[:DIR] remedy {command}",
            playbook::load::PATH_VAR
        ))
        .into(),
    )
}

/// `remedy list`: one line per playbook found, its name and the first sentence of its
/// description, cut at a word with `…` to fit the terminal width (see [`fit::terminal_width`]).
fn list() -> ExitCode {
    let paths = found_playbooks();
    if paths.is_empty() {
        return fail(&no_playbooks_found("list"));
    }
    let rows: Vec<(String, String)> = paths
        .iter()
        .map(
            |path| match playbook::load::read(std::path::Path::new(path)) {
                Ok(f) => (f.doc.name, fit::first_sentence(&f.doc.description)),
                Err(d) => (path.clone(), format!("(invalid: {})", d.headline())),
            },
        )
        .collect();
    for line in list_lines(&rows, fit::terminal_width()) {
        outln!("{line}");
    }
    ExitCode::Success
}

/// `remedy list`'s lines: names in a column as wide as the longest, two spaces, then the
/// description fitted into what is left of `width`.
fn list_lines(rows: &[(String, String)], width: usize) -> Vec<String> {
    let name_width = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0);
    let room = width.saturating_sub(name_width + 2);
    rows.iter()
        .map(|(name, about)| {
            let about = fit::ellipsize(about, room);
            if about.is_empty() {
                name.clone()
            } else {
                format!("{name:<name_width$}  {about}")
            }
        })
        .collect()
}

/// Every step that finishes before each step starts: the transitive closure of `needs` (each
/// step's [`playbook::Step::needs`], by step index).
fn predecessors(needs: &[Vec<usize>]) -> Vec<std::collections::BTreeSet<usize>> {
    fn visit(
        i: usize,
        needs: &[Vec<usize>],
        memo: &mut Vec<Option<std::collections::BTreeSet<usize>>>,
    ) {
        if memo[i].is_some() {
            return;
        }
        // Compiled playbooks have no cycles; mark the step first so a cycle could not recurse.
        memo[i] = Some(Default::default());
        let mut all = std::collections::BTreeSet::new();
        for &d in &needs[i] {
            visit(d, needs, memo);
            all.insert(d);
            all.extend(memo[d].iter().flatten().copied());
        }
        memo[i] = Some(all);
    }
    let mut memo = vec![None; needs.len()];
    for i in 0..needs.len() {
        visit(i, needs, &mut memo);
    }
    memo.into_iter().map(Option::unwrap_or_default).collect()
}

/// The steps each step runs after, by index in step order: with `transitive`, every one;
/// otherwise only the direct ones, those not already before another step it needs (the
/// transitive reduction of `needs`, which holds implied edges too: a step after an include
/// needs every step of it).
fn run_after(needs: &[Vec<usize>], transitive: bool) -> Vec<Vec<usize>> {
    let before = predecessors(needs);
    if transitive {
        return before
            .into_iter()
            .map(|b| b.into_iter().collect())
            .collect();
    }
    needs
        .iter()
        .map(|mine| {
            let mut direct: Vec<usize> = mine
                .iter()
                .copied()
                .filter(|&d| !mine.iter().any(|&e| e != d && before[e].contains(&d)))
                .collect();
            direct.sort_unstable();
            direct.dedup();
            direct
        })
        .collect()
}

/// `remedy show`.
fn show(name: &str, format: ShowFormat, transitive: bool) -> ExitCode {
    let program = match playbook::load(name).and_then(|l| playbook::compile(&l)) {
        Ok(p) => p,
        Err(d) => return fail(&Error::Invalid(d)),
    };
    let needs: Vec<Vec<usize>> = program.steps.iter().map(|s| s.needs.clone()).collect();
    let after = run_after(&needs, transitive);
    if format == ShowFormat::Dot {
        outln!("digraph \"{}\" {{\n  rankdir=LR;", program.name);
        for s in &program.steps {
            let shape = if s.mutating() { "box" } else { "ellipse" };
            outln!(
                "  \"{}\" [shape={shape}, label=\"{}\\n{}\"];",
                s.id,
                s.id,
                s.kind.name()
            );
        }
        for (s, after) in program.steps.iter().zip(&after) {
            for &n in after {
                outln!("  \"{}\" -> \"{}\";", program.steps[n].id, s.id);
            }
        }
        outln!("}}");
        return ExitCode::Success;
    }
    outln!(
        "{}\n  {}\n",
        program.name,
        program.description.trim().replace('\n', "\n  ")
    );
    outln!("parameters:");
    for (k, p) in program.params() {
        let mut attrs = vec![p.ty.to_string()];
        if p.required {
            attrs.push("required".into());
        }
        if let Some(d) = &p.default {
            attrs.push(format!(
                "default {}",
                if p.secret {
                    "********".into()
                } else {
                    d.to_string()
                }
            ));
        }
        if let Some(re) = &p.pattern {
            attrs.push(format!("pattern {}", re.as_str()));
        }
        if p.secret {
            attrs.push("secret".into());
        }
        let help = p.help.trim();
        if help.is_empty() {
            outln!("  {k:<20} {}", attrs.join(", "));
        } else {
            outln!("  {k:<20} {} — {help}", attrs.join(", "));
        }
    }
    outln!(
        "\nsteps (phase, id, kind, runs on, {}):",
        if transitive {
            "after: every step before it"
        } else {
            "after: the steps it directly follows; --transitive for all"
        }
    );
    for (s, after) in program.steps.iter().zip(&after) {
        let undo = match &s.undo {
            Undo::ReadOnly => "read-only".to_string(),
            Undo::Auto => "undo: automatic".into(),
            Undo::Ssh(_) | Undo::Api { .. } => "undo: rollback".into(),
            Undo::Irreversible(w) => format!("IRREVERSIBLE: {w}"),
            Undo::NotNeeded(w) => format!("no undo needed: {w}"),
        };
        let undo = if s.consumes.is_empty() {
            undo
        } else {
            format!("{undo}; consumes {}", s.consumes.join(", "))
        };
        let on =
            s.on.as_ref()
                .map(|t| t.source.to_string())
                .unwrap_or_else(|| plan::CONTROLLER.into());
        let after: Vec<&str> = after
            .iter()
            .map(|&n| program.steps[n].id.as_str())
            .collect();
        let kind = match &s.kind {
            Kind::Api { command, .. } => format!("api {command}"),
            k => k.name().to_string(),
        };
        outln!(
            "  {:<7} {:<28} {:<24} on {:<20} [{undo}] after: {}",
            format!("{:?}", s.phase).to_lowercase(),
            s.id,
            kind,
            on,
            if after.is_empty() {
                "-".into()
            } else {
                after.join(", ")
            }
        );
    }
    ExitCode::Success
}

/// `remedy completions SHELL`: the completion script on stdout.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "remedy", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    ExitCode::Success
}

/// The man pages: remedy's own first, then one per subcommand, nested ones included
/// (`remedy-audit-list`), each titled in capitals as man pages are.
fn man_pages() -> Vec<clap_mangen::Man> {
    fn collect(cmd: &clap::Command, pages: &mut Vec<clap_mangen::Man>) {
        let title = cmd
            .get_display_name()
            .unwrap_or_else(|| cmd.get_name())
            .to_uppercase();
        pages.push(
            clap_mangen::Man::new(cmd.clone())
                .title(title)
                .manual("remedy manual"),
        );
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            collect(sub, pages);
        }
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    collect(&cmd, &mut pages);
    pages
}

/// `remedy man`: remedy's page on stdout, or with `--out DIR` every page written into DIR.
fn man(out: Option<&std::path::Path>) -> ExitCode {
    let pages = man_pages();
    let Some(dir) = out else {
        let mut page = Vec::new();
        if let Err(e) = pages[0].render(&mut page) {
            return fail(&Error::Other(format!("cannot render the man page: {e}")));
        }
        out!("{}", String::from_utf8_lossy(&page));
        return ExitCode::Success;
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return fail(&Error::Other(format!("{}: {e}", dir.display())));
    }
    for page in &pages {
        match page.generate_to(dir) {
            Ok(path) => outln!("{}", path.display()),
            Err(e) => {
                return fail(&Error::Other(format!(
                    "{}: {e}",
                    dir.join(page.get_filename()).display()
                )))
            }
        }
    }
    ExitCode::Success
}

/// `remedy exec`: the command becomes a one-step playbook (the command passed as a parameter
/// and inserted raw, so nothing in it is templated or quoted again) and runs through `apply`:
/// planned against the inventory, confirmed, audited, dry-run aware. Nothing can be undone
/// automatically, and the playbook says so.
///
/// Each `--secret NAME=...` becomes a secret parameter of that playbook, and `{{ NAME }}` in the
/// command its shell-quoted value: the value is masked wherever the run shows or records it.
async fn exec(req: ExecArgs, argv: Vec<String>) -> ExitCode {
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
    };
    let code = apply(args, argv, true).await;
    let _ = std::fs::remove_file(&path);
    code
}

/// Ctrl-C or SIGTERM set the run's cancel flag: no new steps, in-flight ones finish, then
/// completed changes are undone.
fn cancel_on_signal() -> tokio::sync::watch::Receiver<bool> {
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

/// The inventory re-reader for a plan with `refresh_inventory` steps.
fn reloader(
    plan: &plan::Plan,
    paths: &[PathBuf],
    api: &Arc<crate::transport::api::ApiTransport>,
) -> Result<Option<Arc<crate::cloudstack::inventory::Reloader>>, Error> {
    if plan.refreshes.is_empty() {
        return Ok(None);
    }
    crate::cloudstack::inventory::Reloader::new(paths, api.clone())
        .map(|r| r.map(Arc::new))
        .map_err(Error::Other)
}

async fn apply(req: ApplyArgs, argv: Vec<String>, show_output: bool) -> ExitCode {
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
    if !req.dry_run {
        let state_dir = req
            .state_dir
            .clone()
            .unwrap_or_else(crate::lock::default_state_dir);
        warn_interrupted(&audit_path, &state_dir, &plan);
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
    if !req.dry_run && !req.yes {
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
            dir: req
                .state_dir
                .clone()
                .unwrap_or_else(crate::lock::default_state_dir),
            wait: req.wait_lock,
            by: format!(
                "{} (remedy {} {})",
                crate::app::operator(),
                if show_output { "exec" } else { "apply" },
                plan.program.name
            ),
        }),
        inventory_paths: inv_paths.clone(),
    };
    let router = Arc::new(Router::with_api(&plan.inventory, api));
    let result = execute(plan, router, run_opts, Some(tx), cancel).await;
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

/// Before a run changes anything: a run that ended without an end record (killed) and left
/// changes on some of the same targets is named, with the command that finishes its undo.
fn warn_interrupted(audit_path: &std::path::Path, state_dir: &std::path::Path, plan: &plan::Plan) {
    let Ok(records) = audit::read(audit_path) else {
        return;
    };
    let targets: std::collections::BTreeSet<String> =
        plan.targets.iter().flatten().cloned().collect();
    // A run that is still going holds its targets' locks (the controller's API changes: the
    // CloudStack API lock).
    let alive = |t: &str| {
        let lock = if t == plan::CONTROLLER {
            crate::app::CLOUDSTACK_LOCK
        } else {
            t
        };
        matches!(crate::lock::probe(state_dir, lock), Ok(Some(_)))
    };
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

/// The parameters of `-e` (`@FILE`s read), `--secret`, and the terminal prompt for a required
/// secret not given.
fn given_params(
    extra: &[(String, String)],
    secrets: &[(String, params::SecretSource)],
    program: &playbook::Program,
) -> Result<Vec<(String, String)>, Error> {
    let mut given = params::gather(extra, secrets, Some(program))?;
    params::prompt_missing(program, &mut given)?;
    Ok(given)
}

/// Whether a recorded undo action holds [`crate::redact::Redactor::MASK`] where a secret was.
fn undo_is_masked(d: &crate::scheduler::Done) -> bool {
    d.undo.as_ref().is_some_and(|u| {
        u.actions
            .iter()
            .any(|a| a.to_string().contains(crate::redact::Redactor::MASK))
    })
}

/// `remedy plan`: a dry-run whose predictions become a plan file.
async fn make_plan(req: PlanArgs, argv: Vec<String>) -> ExitCode {
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

/// `remedy daemon` and its `status` and `reset`.
fn daemon(a: DaemonArgs) -> ExitCode {
    let state_dir = a
        .state_dir
        .clone()
        .unwrap_or_else(crate::lock::default_state_dir);
    match a.command {
        Some(DaemonCommand::Status { jobs }) => daemon_status(&state_dir, jobs.as_deref()),
        Some(DaemonCommand::Reset { job, target }) => {
            let r = crate::daemon::state::update(&state_dir, |s| {
                s.jobs
                    .get_mut(&job)
                    .map(|js| js.reset(target.as_deref()))
                    .unwrap_or_default()
            });
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

/// `remedy daemon status`.
fn daemon_status(state_dir: &std::path::Path, jobs: Option<&std::path::Path>) -> ExitCode {
    let state = match crate::daemon::state::load(state_dir) {
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
        outln!("no jobs in {}", state_dir.display());
        return ExitCode::Success;
    }
    let running = crate::lock::probe(state_dir, crate::daemon::DAEMON_LOCK)
        .ok()
        .flatten()
        .map(|b| {
            format!(
                "daemon running: {}",
                b.holder.map(|h| h.to_string()).unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "no daemon running with this state directory".into());
    outln!("{running}");
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
        for (t, b) in crate::daemon::run::blocked_now(js) {
            outln!("  {t}: {b}");
        }
    }
    ExitCode::Success
}

/// `remedy show-plan`.
fn show_plan(file: &std::path::Path, format: Format) -> ExitCode {
    let saved = match SavedPlan::read(file) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if let Err(e) = saved.check_file(None, jiff::Timestamp::now()) {
        eprintln!("warning: {}", e.render(false).trim_end());
    }
    out!(
        "{}",
        crate::planfile::render::render(&saved, format, Some(&file.display().to_string()))
    );
    ExitCode::Success
}

/// `remedy approve`.
fn approve(
    file: &std::path::Path,
    by: Option<String>,
    ticket: Option<String>,
    key: Option<PathBuf>,
    audit_log: Option<PathBuf>,
) -> ExitCode {
    let saved = match SavedPlan::read(file) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let key = match crate::planfile::approval::Key::load(key.as_deref()) {
        Ok(k) => k,
        Err(e) => return fail(&e),
    };
    let audit_path = audit_log.unwrap_or_else(AuditLog::default_path);
    let by = by.unwrap_or_else(crate::app::operator);
    match crate::planfile::approval::approve(
        &saved,
        &by,
        ticket.as_deref(),
        key.as_ref(),
        &audit_path,
        &crate::app::operator(),
    ) {
        Ok(a) => {
            outln!(
                "approved plan {} ({}) by {}{}; approval {} ({}) recorded in {}",
                crate::planfile::short(&saved.id),
                saved.plan.playbook.name,
                a.by,
                a.ticket
                    .as_deref()
                    .map(|t| format!(" for {t}"))
                    .unwrap_or_default(),
                a.approval,
                if a.alg == "hmac-sha256" {
                    "signed with the key"
                } else {
                    "no key: recorded, not signed"
                },
                audit_path.display()
            );
            ExitCode::Success
        }
        Err(e) => fail(&e),
    }
}

async fn rollback_run(
    run: String,
    inventory: Vec<PathBuf>,
    dry_run: bool,
    yes: bool,
    audit_log: Option<PathBuf>,
    argv: Vec<String>,
) -> ExitCode {
    use crate::event::{Event, RunMode, Sink};
    let path = audit_log.unwrap_or_else(AuditLog::default_path);
    let records = match audit::read(&path) {
        Ok(r) => r,
        Err(e) => return fail(&Error::Audit(e.to_string())),
    };
    let pending = match crate::rollback::pending_from_audit(&records, &run) {
        Ok(p) => p,
        Err(e) => return fail(&Error::Other(e)),
    };
    if pending.is_empty() {
        outln!("run {run}: nothing left to undo");
        return ExitCode::Success;
    }
    outln!(
        "run {run}: {} change(s) to undo, newest first:",
        pending.len()
    );
    for d in pending.iter().rev() {
        let how = match (&d.undo, &d.irreversible) {
            (Some(u), _) => u
                .actions
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" && "),
            (None, Some(w)) => format!("cannot be undone: irreversible ({w})"),
            (None, None) => "nothing to undo (declared as needing none)".into(),
        };
        outln!("  {} @ {}: {how}", d.step, d.target);
    }
    if dry_run {
        return ExitCode::Success;
    }
    if !yes {
        return fail(&Error::Other("pass --yes to undo these changes".into()));
    }
    let start = records
        .iter()
        .find(|r| r.value["event"] == "run_start" && r.value["run"] == run.as_str())
        .map(|r| r.value.clone())
        .unwrap_or_default();
    let (inv_paths, (inv, api, cloudstack_inventory)) =
        match rollback_inventory(&run, &start, inventory).await {
            Ok(found) => found,
            Err(e) => return fail(&e),
        };
    let mut redactor = crate::redact::Redactor::new();
    crate::cloudstack::register_secrets(&inv, &mut redactor);
    let log = match AuditLog::open(&path) {
        Ok(l) => l,
        Err(e) => return fail(&Error::Audit(format!("{e}; refusing to act"))),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let printer = tokio::spawn(report::print(rx, Output::Human, color()));
    let sink = Sink::new(Some(log), redactor.clone(), Some(tx));
    let id = crate::app::new_run_id();
    let plan = crate::plan::Plan::for_inventory(inv, redactor);
    let (reachable, missing): (Vec<_>, Vec<_>) = pending
        .into_iter()
        .partition(|d| d.undo.is_none() || plan.host(&d.target).is_some());
    // An undo recorded with a secret masked cannot be replayed: `rm -f /tmp/********` would
    // run the mask, a shell glob, instead of the secret.
    let (reachable, masked): (Vec<_>, Vec<_>) =
        reachable.into_iter().partition(|d| !undo_is_masked(d));
    if let Err(e) = sink.emit(Event::RunStart {
        run: id.clone(),
        playbook: format!("rollback of {run}"),
        mode: RunMode::Rollback,
        operator: crate::app::operator(),
        host: crate::app::hostname(),
        argv,
        files: Vec::new(),
        inventory: plan
            .inventory
            .sources()
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        inventory_sha256: plan.inventory.digest(),
        params_sha256: String::new(),
        params: Default::default(),
        remedy_version: env!("CARGO_PKG_VERSION").into(),
        rollback_of: Some(run.clone()),
        plan: None,
        cloudstack_inventory,
        inventory_origin: crate::app::inventory_origin(&inv_paths, &plan.inventory),
    }) {
        return fail(&Error::Audit(format!("{e}; refusing to act")));
    }
    let cx = crate::runner::Ctx {
        transport: Arc::new(Router::with_api(&plan.inventory, api)),
        plan: Arc::new(plan),
        sink: sink.clone(),
        run: id.clone(),
        dry_run: false,
        cancel: None,
        reload: None,
        expect: None,
        halt: Default::default(),
    };
    let mut report = if reachable.is_empty() {
        crate::rollback::Report::default()
    } else {
        crate::rollback::rollback(
            &cx,
            &reachable,
            &format!("operator asked to roll back run {run}"),
        )
        .await
    };
    let why_masked = |_: &crate::scheduler::Done| {
        "its recorded undo holds a secret, masked in the audit log: undo it by hand".to_string()
    };
    let unreplayable = missing
        .iter()
        .map(|d| (d, host_missing(&run, &d.target, &inv_paths)))
        .chain(masked.iter().map(|d| (d, why_masked(d))));
    for (d, why) in unreplayable {
        let _ = sink.emit(Event::UndoEnd {
            run: id.clone(),
            step: d.step.clone(),
            target: d.target.clone(),
            ok: false,
            restored: None,
            error: Some(why.clone()),
            note: None,
            consumed_by: None,
            caveat: None,
        });
        report
            .not_undone
            .push(format!("{}@{}: {why}", d.step, d.target));
    }
    let exit = if report.not_undone.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::RollbackIncomplete
    };
    let _ = sink.emit(Event::RunEnd {
        run: id,
        status: if report.not_undone.is_empty() {
            format!(
                "run {run} rolled back: {} change(s) undone, {} found as before, {} left in \
                 place (no undo needed)",
                report.undone,
                report.unchanged,
                report.left.len()
            )
        } else {
            format!("rollback of {run} INCOMPLETE")
        },
        exit_code: exit.code(),
        changed: 0,
        failed: report.not_undone.len(),
        undone: report.undone,
        not_undone: report.not_undone,
        maybe_changed: 0,
        unchanged: report.unchanged,
        left: report.left,
    });
    let _ = sink.sync();
    drop(cx);
    drop(sink);
    let _ = printer.await;
    exit
}

/// The inventory `remedy rollback RUN` reaches the run's hosts with: the paths given (`-i`),
/// else the ones the run recorded. Either way resolved as `apply` resolves it
/// ([`resolve_inventory`]): the hosts the CloudStack source generates are read from the zone
/// now, so a host that appeared during the run (after a `refresh_inventory`) is found too.
/// Recorded files that are gone are an error that says to pass `-i`; files changed since the run
/// are a warning.
async fn rollback_inventory(
    run: &str,
    start: &serde_json::Value,
    given: Vec<PathBuf>,
) -> Result<(Vec<PathBuf>, Resolved), Error> {
    if !given.is_empty() {
        let resolved = resolve_inventory(&given).await?;
        return Ok((given, resolved));
    }
    let recorded = RecordedInventory::of(start);
    if let Some(gone) = recorded.paths.iter().find(|p| !p.exists()) {
        return Err(Error::Invalid(
            crate::error::Diagnostic::new(format!(
                "run {run} read its inventory from {}, which is gone",
                gone.display()
            ))
            .with_help(format!(
                "pass the inventory that reaches the run's hosts: remedy rollback {run} -i FILE --yes"
            ))
            .into(),
        ));
    }
    let inv = load_inventory(&recorded.paths).map_err(|e| {
        Error::Invalid(
            crate::error::Diagnostic::new(format!(
                "run {run}'s inventory cannot be read again: {e}"
            ))
            .with_help(format!(
                "pass the inventory that reaches the run's hosts: remedy rollback {run} -i FILE --yes"
            ))
            .into(),
        )
    })?;
    if let Some(was) = recorded.files_sha256.as_deref() {
        if inv.digest() != was {
            eprintln!(
                "warning: the inventory of run {run} changed since the run ({}): its hosts are \
                 looked up as the files say now",
                recorded
                    .paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if recorded.cloudstack_source && inv.cloudstack_source().is_none() {
        eprintln!(
            "warning: run {run} found hosts through the CloudStack API \
             (remedy_cloudstack_inventory), which its inventory no longer declares"
        );
    }
    let resolved = resolve_loaded(inv, &recorded.paths).await?;
    Ok((recorded.paths, resolved))
}

/// A run's inventory, as its `run_start` record tells it.
#[derive(Debug, Default, PartialEq)]
struct RecordedInventory {
    /// The paths to read again.
    paths: Vec<PathBuf>,
    /// The files' digest at the run, when it can be compared with the files alone.
    files_sha256: Option<String>,
    /// The hosts were completed from the CloudStack API.
    cloudstack_source: bool,
}

impl RecordedInventory {
    /// From `inventory_origin` (the absolute paths); in a record written before remedy kept it,
    /// from `inventory`, the files the run read, less the hosts the API generated (`<cloudstack
    /// api>`) and the `group_vars`/`host_vars` files (read again beside the others).
    fn of(start: &serde_json::Value) -> RecordedInventory {
        let origin = start
            .get("inventory_origin")
            .cloned()
            .and_then(|o| serde_json::from_value::<crate::event::InventoryOrigin>(o).ok());
        if let Some(o) = origin {
            return RecordedInventory {
                paths: o.paths.iter().map(|p| PathBuf::from(&p.absolute)).collect(),
                files_sha256: Some(o.files_sha256).filter(|d| !d.is_empty()),
                cloudstack_source: o.cloudstack_source,
            };
        }
        let generated = !start["cloudstack_inventory"].is_null();
        let read: Vec<PathBuf> = start["inventory"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(PathBuf::from))
            .collect();
        let vars_file = |p: &PathBuf| {
            p.components()
                .any(|c| c.as_os_str() == "group_vars" || c.as_os_str() == "host_vars")
        };
        let paths: Vec<PathBuf> = read
            .iter()
            .filter(|p| !p.to_string_lossy().starts_with('<') && !vars_file(p))
            .cloned()
            .collect();
        RecordedInventory {
            paths,
            // With generated hosts the record's digest covers them too: nothing to compare.
            files_sha256: start["inventory_sha256"]
                .as_str()
                .filter(|d| !generated && !d.is_empty())
                .map(str::to_string),
            cloudstack_source: generated,
        }
    }
}

/// Why a change on `host` is left in place: the host is not in the inventory read again.
fn host_missing(run: &str, host: &str, paths: &[PathBuf]) -> String {
    let read = if paths.is_empty() {
        "no inventory (the run had none; pass -i FILE)".to_string()
    } else {
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "not undone: host {host}, changed by run {run}, is not in the inventory now (read from \
         {read}); it may have been removed or renamed since the run. If it still exists, run \
         `remedy rollback {run} -i FILE --yes` with an inventory that has it; otherwise undo the \
         change by hand (`remedy audit show {run}` has its undo)"
    )
}

/// `remedy audit list`'s lines: a header, then one row per run in log order, its mode in the
/// command line's words ([`crate::event::mode_word`]) and its result from the `run_end` record. Columns are
/// as wide as their widest cell; the result, last, is never padded.
fn audit_list_lines(records: &[&serde_json::Value]) -> Vec<String> {
    let str_of = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let mut ends = std::collections::HashMap::new();
    for r in records.iter().filter(|r| r["event"] == "run_end") {
        ends.insert(str_of(&r["run"]), str_of(&r["status"]));
    }
    let mut rows = vec![[
        "RUN".to_string(),
        "MODE".into(),
        "PLAYBOOK".into(),
        "OPERATOR".into(),
        "RESULT".into(),
    ]];
    for r in records.iter().filter(|r| r["event"] == "run_start") {
        let run = str_of(&r["run"]);
        let argv: Vec<String> = r["argv"]
            .as_array()
            .map(|a| a.iter().map(str_of).collect())
            .unwrap_or_default();
        let result = ends
            .get(&run)
            .cloned()
            .unwrap_or_else(|| "(no end record: interrupted?)".into());
        rows.push([
            run,
            crate::event::mode_word(r["mode"].as_str().unwrap_or(""), &argv).to_string(),
            str_of(&r["playbook"]),
            str_of(&r["operator"]),
            result,
        ]);
    }
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (cell, w) in row.iter().zip(widths) {
                line.push_str(&format!("{cell:<w$}  "));
            }
            line.push_str(&row[4]);
            line
        })
        .collect()
}

/// An `undo_start` record's actions, as the commands and calls they are.
fn undo_actions(actions: &serde_json::Value) -> String {
    let list: Vec<String> = actions
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    serde_json::from_value::<crate::transport::Action>(x.clone())
                        .map(|a| a.to_string())
                        .unwrap_or_else(|_| x.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    if list.is_empty() {
        "nothing".into()
    } else {
        list.join(" && ")
    }
}

fn audit_cmd(cmd: AuditCommand, path: Option<PathBuf>) -> ExitCode {
    let path = path.unwrap_or_else(AuditLog::default_path);
    match cmd {
        AuditCommand::Verify => match audit::verify(&path) {
            Ok(r) if r.problems.is_empty() => {
                outln!("ok: {} records, chain intact ({})", r.lines, path.display());
                ExitCode::Success
            }
            Ok(r) => {
                for p in &r.problems {
                    outln!("{}: {p}", path.display());
                }
                ExitCode::Other
            }
            Err(e) => fail(&Error::Audit(e.to_string())),
        },
        AuditCommand::List => match audit::read(&path) {
            Ok(records) => {
                let values: Vec<&serde_json::Value> = records.iter().map(|r| &r.value).collect();
                for line in audit_list_lines(&values) {
                    outln!("{line}");
                }
                ExitCode::Success
            }
            Err(e) => fail(&Error::Audit(e.to_string())),
        },
        AuditCommand::Show { run } => match audit::read(&path) {
            Ok(records) => {
                let mine: Vec<_> = records
                    .iter()
                    .filter(|r| r.value["run"] == run.as_str())
                    .collect();
                if mine.is_empty() {
                    return fail(&Error::Other(format!("no run {run} in {}", path.display())));
                }
                for r in mine {
                    let v = &r.value;
                    let ts = v["ts"].as_str().unwrap_or("");
                    let line = match v["event"].as_str().unwrap_or("") {
                        "run_start" => {
                            let mut line = format!(
                                "run {} of {} by {} on {} ({})",
                                run,
                                v["playbook"].as_str().unwrap_or(""),
                                v["operator"].as_str().unwrap_or(""),
                                v["host"].as_str().unwrap_or(""),
                                v["mode"].as_str().unwrap_or("")
                            );
                            if let Some(p) = v.get("plan").filter(|p| p.is_object()) {
                                line.push_str(&format!(
                                    "\n    applies plan {} ({}), made by {} at {} in run {}",
                                    p["id"].as_str().unwrap_or(""),
                                    p["file"].as_str().unwrap_or(""),
                                    p["made_by"].as_str().unwrap_or(""),
                                    p["made_at"].as_str().unwrap_or(""),
                                    p["made_in_run"].as_str().unwrap_or("")
                                ));
                                let approvals =
                                    p["approvals"].as_array().cloned().unwrap_or_default();
                                if approvals.is_empty() {
                                    line.push_str("\n    no approval recorded");
                                }
                                for a in approvals {
                                    line.push_str(&format!(
                                        "\n    approved by {}{} at {} ({}, approval {})",
                                        a["by"].as_str().unwrap_or(""),
                                        a["ticket"]
                                            .as_str()
                                            .map(|t| format!(" for {t}"))
                                            .unwrap_or_default(),
                                        a["at"].as_str().unwrap_or(""),
                                        a["alg"].as_str().unwrap_or(""),
                                        a["approval"].as_str().unwrap_or("")
                                    ));
                                }
                            }
                            line
                        }
                        "plan_check" => {
                            let drift = v["drift"].as_array().cloned().unwrap_or_default();
                            if drift.is_empty() {
                                "  plan check: the live state is as planned".to_string()
                            } else {
                                let mut line = format!(
                                    "  plan check: {} node(s) differ from the plan (on drift: {})",
                                    drift.len(),
                                    v["on_drift"].as_str().unwrap_or("")
                                );
                                for d in drift {
                                    line.push_str(&format!(
                                        "\n    {} @ {}: {}",
                                        d["step"].as_str().unwrap_or(""),
                                        d["target"].as_str().unwrap_or(""),
                                        d["why"].as_str().unwrap_or("")
                                    ));
                                }
                                line
                            }
                        }
                        "plan_written" => format!(
                            "plan {} written to {} (valid until {})",
                            v["plan"].as_str().unwrap_or(""),
                            v["file"].as_str().unwrap_or(""),
                            v["expires_at"].as_str().unwrap_or("")
                        ),
                        "step_start" => format!(
                            "  start  {} @ {}: {}",
                            v["step"].as_str().unwrap_or(""),
                            v["target"].as_str().unwrap_or(""),
                            v["action"].as_str().unwrap_or("")
                        ),
                        "step_end" => format!(
                            "  {:<6} {} @ {}{}",
                            v["outcome"].as_str().unwrap_or(""),
                            v["step"].as_str().unwrap_or(""),
                            v["target"].as_str().unwrap_or(""),
                            v["error"]
                                .as_str()
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default()
                        ),
                        "rollback_start" => {
                            format!("  ROLLBACK: {}", v["reason"].as_str().unwrap_or(""))
                        }
                        "undo_start" => format!(
                            "  undo   {} @ {}: runs {}",
                            v["step"].as_str().unwrap_or(""),
                            v["target"].as_str().unwrap_or(""),
                            undo_actions(&v["actions"])
                        ),
                        "undo_end" => format!(
                            "  undo   {} @ {}: {}{}",
                            v["step"].as_str().unwrap_or(""),
                            v["target"].as_str().unwrap_or(""),
                            match (v["ok"] == true, v["note"].as_str()) {
                                (true, Some("unchanged")) => {
                                    "as before, nothing to undo".to_string()
                                }
                                (true, Some("left")) => {
                                    "left in place (declared as needing no undo)".to_string()
                                }
                                (true, Some("consumed")) => format!(
                                    "kept, not undone (consumed by {})",
                                    v["consumed_by"].as_str().unwrap_or("a later step")
                                ),
                                (true, _) => "ok".to_string(),
                                (false, _) => v["error"].as_str().unwrap_or("failed").to_string(),
                            },
                            v["caveat"]
                                .as_str()
                                .map(|c| format!("; not exactly as before: {c}"))
                                .unwrap_or_default()
                        ),
                        "run_end" => format!(
                            "end: {} (exit {})",
                            v["status"].as_str().unwrap_or(""),
                            v["exit_code"]
                        ),
                        _ => continue,
                    };
                    outln!("{ts}  {line}");
                }
                ExitCode::Success
            }
            Err(e) => fail(&Error::Audit(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn api_output_masks_secret_fields_and_known_secrets() {
        let reply = serde_json::json!({"count": 1, "user": [{
            "username": "ops", "apikey": "AK-1", "secretKey": "SK-plain-1",
            "Password": "pw-plain-2", "privatekey": "PK-plain-3",
            "description": "signed with the-api-secret"
        }]});
        let mut r = crate::redact::Redactor::new();
        r.add("the-api-secret");
        let f = |fields: &[&str]| {
            let fields: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
            render_reply(reply.clone(), &fields, &r)
        };
        for out in [
            f(&[]),
            f(&[
                "username",
                "secretKey",
                "Password",
                "privatekey",
                "description",
            ]),
        ] {
            for leak in ["SK-plain-1", "pw-plain-2", "PK-plain-3", "the-api-secret"] {
                assert!(!out.contains(leak), "{out}");
            }
            assert!(out.contains("ops"), "{out}");
            assert!(out.contains("********"), "{out}");
        }
    }

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
    fn list_lines_fit_the_width_and_cut_at_a_word() {
        let rows = vec![
            ("short".to_string(), "Fits.".to_string()),
            (
                "a-longer-name".to_string(),
                "Guest VMs of a network or VPC get no DHCP lease and no DNS answers.".to_string(),
            ),
        ];
        assert_eq!(
            list_lines(&rows, 40),
            [
                "short          Fits.",
                "a-longer-name  Guest VMs of a network…",
            ]
        );
        assert_eq!(
            list_lines(&rows, 200)[1],
            "a-longer-name  Guest VMs of a network or VPC get no DHCP lease and no DNS answers."
        );
        // No room for any description: the names alone.
        assert_eq!(list_lines(&rows, 15), ["short", "a-longer-name"]);
    }

    #[test]
    fn run_after_keeps_direct_predecessors_unless_transitive() {
        // a <- b <- c, and d needs a, b and c (as a step after an include needs all of it).
        let steps = vec![vec![], vec![0], vec![1], vec![0, 1, 2], vec![2, 0]];
        assert_eq!(
            run_after(&steps, false),
            [vec![], vec![0], vec![1], vec![2], vec![2]]
        );
        assert_eq!(
            run_after(&steps, true),
            [vec![], vec![0], vec![0, 1], vec![0, 1, 2], vec![0, 1, 2]]
        );
    }

    #[test]
    fn audit_list_has_a_header_and_the_commands_words() {
        let start = |run: &str, mode: &str, argv: &[&str], playbook: &str| {
            serde_json::json!({"event": "run_start", "run": run, "mode": mode,
                "playbook": playbook, "operator": "ops", "argv": argv})
        };
        let records = [
            start(
                "r1",
                "dry-run",
                &["remedy", "apply", "fix", "--dry-run"],
                "fix",
            ),
            start(
                "r2",
                "apply",
                &["remedy", "exec", "all", "--read-only", "--", "uptime"],
                "exec",
            ),
            // An old record without argv.
            serde_json::json!({"event": "run_start", "run": "r3", "mode": "rollback",
                "playbook": "rollback of r1", "operator": "ops"}),
            serde_json::json!({"event": "run_end", "run": "r1", "status": "ok"}),
            serde_json::json!({"event": "run_end", "run": "r2", "status": "failed"}),
        ];
        let refs: Vec<&serde_json::Value> = records.iter().collect();
        assert_eq!(
            audit_list_lines(&refs),
            [
                "RUN  MODE              PLAYBOOK        OPERATOR  RESULT",
                "r1   dry-run           fix             ops       ok",
                "r2   exec --read-only  exec            ops       failed",
                "r3   rollback          rollback of r1  ops       (no end record: interrupted?)",
            ]
        );
    }

    #[test]
    fn a_recorded_inventory_is_read_from_its_absolute_paths() {
        let start = serde_json::json!({
            "event": "run_start", "run": "r1",
            "inventory": ["<cloudstack api>", "lab.yml"],
            "inventory_sha256": "with-generated",
            "cloudstack_inventory": {"hosts": 9},
            "inventory_origin": {
                "paths": [{"given": "lab.yml", "absolute": "/ops/lab.yml"}],
                "files_sha256": "files",
                "cloudstack_source": true,
            },
        });
        assert_eq!(
            RecordedInventory::of(&start),
            RecordedInventory {
                paths: vec![PathBuf::from("/ops/lab.yml")],
                files_sha256: Some("files".into()),
                cloudstack_source: true,
            }
        );
    }

    #[test]
    fn an_older_record_gives_its_files_without_generated_hosts_or_vars_files() {
        let generated = serde_json::json!({
            "event": "run_start", "run": "r1",
            "inventory": ["<cloudstack api>", "inv/lab.yml", "inv/group_vars/all.yml",
                "inv/host_vars/kvm01.yml"],
            "inventory_sha256": "covers the generated hosts too",
            "cloudstack_inventory": {"hosts": 9},
        });
        assert_eq!(
            RecordedInventory::of(&generated),
            RecordedInventory {
                paths: vec![PathBuf::from("inv/lab.yml")],
                files_sha256: None,
                cloudstack_source: true,
            }
        );
        let files = serde_json::json!({
            "event": "run_start", "run": "r2",
            "inventory": ["hosts.yml"],
            "inventory_sha256": "abc",
        });
        assert_eq!(
            RecordedInventory::of(&files),
            RecordedInventory {
                paths: vec![PathBuf::from("hosts.yml")],
                files_sha256: Some("abc".into()),
                cloudstack_source: false,
            }
        );
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
