//! The emulated commands of the simulated hosts, run against the zone's guest state.
//!
//! Owned here: what each supported command prints, on which stream, and its exit status, as
//! the real tool does in the common cases (`ip`, `systemctl`/`service`, `ovs-vsctl`,
//! `ovs-ofctl`, `stat`, `chmod`, `chown`/`chgrp`, `test`/`[`, `cat`, `ls`, `grep`, `zcat`,
//! `zgrep`, `ss`, `echo`,
//! `true`, `false`, `hostname`, `exit`, CloudStack's `checkrouter.sh` and `ssvm-check.sh`), and
//! running a parsed command line ([`run_line`]). A change (a link, a service, a file, an OVS
//! port or flow) is made in the zone at once, so the API shows it in its next reply; a
//! `systemctl`/`service` verb on a hypervisor's `cloudstack-agent` is also reported to the
//! zone, whose host state then changes over time (`Zone::agent_command`).
//!
//! Not here: `sleep`, which the SSH server runs itself (it really waits), and `head -c N
//! /dev/zero`, whose N zero bytes the server streams in chunks ([`Step::Zeros`]);
//! [`run_line`] treats the first as done at once and builds the second's output. Unknown
//! commands print `bash: X: command not found` and exit 127.
//!
//! Files, by command family: `files.rs` (`stat`, `chmod`, `chown`/`chgrp`, `test`/`[`, `cat`,
//! `ls`, `grep`), `compressed.rs` (`zcat`, `zgrep` over real gzip files), `ip.rs` (`ip
//! link`/`addr`/`route`), `services.rs` (`systemctl`, `service`,
//! and `ss`, which shows what the running services listen on), `ovs.rs` (`ovs-vsctl`,
//! `ovs-ofctl`). This file holds [`Output`], the classification of a simple command
//! ([`step`]), running a line ([`run_line`]), the dispatch by name ([`exec`]) and the small
//! commands (`echo`, `true`, `false`, `hostname`, the CloudStack scripts).

mod compressed;
mod files;
mod ip;
mod ovs;
mod services;

use compressed::{zcat, zgrep};
use files::{cat, chmod, chown, grep, ls, stat, test};
use ip::ip;
use ovs::{ovs_ofctl, ovs_vsctl};
use services::{service, ss, systemctl};

use std::time::Duration;

use super::shell::{self, Join, Simple, Sink};
use crate::zone::{Guest, Zone};

/// What a command (or a command line) printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub status: u32,
}

impl Output {
    /// A command that failed with `status`, printing `stderr`.
    pub fn failed(status: u32, stderr: &str) -> Output {
        Output::err(status, stderr)
    }

    fn ok(stdout: impl Into<String>) -> Output {
        Output {
            stdout: stdout.into(),
            stderr: String::new(),
            status: 0,
        }
    }

    fn err(status: u32, stderr: impl Into<String>) -> Output {
        let mut stderr = stderr.into();
        if !stderr.is_empty() && !stderr.ends_with('\n') {
            stderr.push('\n');
        }
        Output {
            stdout: String::new(),
            stderr,
            status,
        }
    }

    fn status(status: u32) -> Output {
        Output {
            status,
            ..Output::default()
        }
    }

    /// Adds a simple command's output, routed as its redirections say.
    pub fn absorb(&mut self, out: Output, simple: &Simple) {
        for (text, sink) in [(out.stdout, simple.stdout), (out.stderr, simple.stderr)] {
            match sink {
                Sink::Stdout => self.stdout.push_str(&text),
                Sink::Stderr => self.stderr.push_str(&text),
                Sink::Null => {}
            }
        }
        self.status = out.status;
    }
}

/// What the next simple command of a line is, for the server's run loop.
pub enum Step {
    /// Run it with [`exec`].
    Run,
    /// `sleep`: wait this long, then status 0.
    Sleep(Duration),
    /// `exit N`: the line ends with this status.
    Exit(u32),
    /// `head -c N /dev/zero`: N zero bytes on stdout, then status 0.
    Zeros(u64),
}

/// The largest `head -c` count served (1 GiB), so a typo cannot stream for hours.
pub const MAX_ZEROS: u64 = 1 << 30;

/// Classifies a simple command; a bad `sleep`/`exit` argument is an immediate result.
pub fn step(words: &[String]) -> Result<Step, Output> {
    match words.first().map(String::as_str) {
        Some("sleep") => {
            if words.len() < 2 {
                return Err(Output::err(1, "sleep: missing operand"));
            }
            let mut total = 0.0;
            for a in &words[1..] {
                total += parse_sleep(a)
                    .ok_or_else(|| Output::err(1, format!("sleep: invalid time interval '{a}'")))?;
            }
            Ok(Step::Sleep(Duration::from_secs_f64(total.min(86_400.0))))
        }
        Some("exit") => match words.get(1) {
            None => Ok(Step::Exit(0)),
            Some(n) => match n.parse::<i64>() {
                Ok(n) => Ok(Step::Exit((n.rem_euclid(256)) as u32)),
                Err(_) => Err(Output::err(
                    2,
                    format!("bash: line 1: exit: {n}: numeric argument required"),
                )),
            },
        },
        Some("head") => head(&words[1..]),
        _ => Ok(Step::Run),
    }
}

/// `head -c N /dev/zero` (N with an optional `K`, `M` or `G`, powers of 1024), the only form
/// of `head` emulated; anything else is refused with status 2.
fn head(args: &[String]) -> Result<Step, Output> {
    let refused = || {
        Output::err(
            2,
            "sim-ssh: only `head -c N /dev/zero` is emulated (no files, no other options)",
        )
    };
    let [flag, count, file] = args else {
        return Err(refused());
    };
    if flag != "-c" || file != "/dev/zero" {
        return Err(refused());
    }
    let (digits, mult) = match count.chars().last() {
        Some('K') => (&count[..count.len() - 1], 1 << 10),
        Some('M') => (&count[..count.len() - 1], 1 << 20),
        Some('G') => (&count[..count.len() - 1], 1 << 30),
        _ => (count.as_str(), 1),
    };
    match digits.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)) {
        Some(n) if n <= MAX_ZEROS => Ok(Step::Zeros(n)),
        Some(_) => Err(Output::err(
            2,
            format!("sim-ssh: head -c: at most {MAX_ZEROS} bytes"),
        )),
        None => Err(Output::err(
            1,
            format!("head: invalid number of bytes: '{count}'"),
        )),
    }
}

fn parse_sleep(arg: &str) -> Option<f64> {
    let (num, mult) = match arg.chars().last()? {
        's' => (&arg[..arg.len() - 1], 1.0),
        'm' => (&arg[..arg.len() - 1], 60.0),
        'h' => (&arg[..arg.len() - 1], 3600.0),
        'd' => (&arg[..arg.len() - 1], 86400.0),
        _ => (arg, 1.0),
    };
    let n: f64 = num.parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n * mult)
}

/// Whether a simple command runs after the previous status.
pub fn runs(join: Join, previous: u32) -> bool {
    match join {
        Join::Always => true,
        Join::And => previous == 0,
        Join::Or => previous != 0,
    }
}

/// Runs a whole command line on `machine` at once (`sleep` does not wait): the pure form of
/// what the SSH server does, for tests and callers without a clock.
pub fn run_line(zone: &mut Zone, machine: &str, line: &str) -> Output {
    let script = match shell::parse(line) {
        Ok(s) => s,
        Err(e) => return Output::err(2, e.0),
    };
    let mut total = Output::default();
    for simple in &script {
        if !runs(simple.join, total.status) {
            continue;
        }
        let out = match step(&simple.words) {
            Err(out) => out,
            Ok(Step::Sleep(_)) => Output::status(0),
            Ok(Step::Zeros(n)) => Output::ok("\0".repeat(n as usize)),
            Ok(Step::Exit(n)) => {
                total.status = n;
                return total;
            }
            Ok(Step::Run) => exec(zone, machine, &simple.words),
        };
        total.absorb(out, simple);
    }
    total
}

/// Runs one simple command (not `sleep` or `exit`) on `machine`.
pub fn exec(zone: &mut Zone, machine: &str, words: &[String]) -> Output {
    let Some(cmd) = words.first() else {
        return Output::status(0);
    };
    let args = &words[1..];
    let name = cmd.as_str();
    // Scripts that exist only on some machines.
    match name {
        "/opt/cloud/bin/checkrouter.sh" => {
            return match zone.checkrouter(machine) {
                Some(out) => Output::ok(out),
                None => no_such_file(name),
            }
        }
        "/usr/local/cloud/systemvm/ssvm-check.sh" => {
            return match zone.ssvm_check(machine) {
                Some(out) => Output::ok(out),
                None => no_such_file(name),
            }
        }
        _ => {}
    }
    let base = name.rsplit('/').next().unwrap_or(name);
    let known_path = !name.contains('/')
        || [
            "/bin/",
            "/usr/bin/",
            "/sbin/",
            "/usr/sbin/",
            "/usr/local/bin/",
        ]
        .iter()
        .any(|d| name.strip_prefix(d) == Some(base));
    if !known_path {
        return no_such_file(name);
    }
    match base {
        "true" => return Output::status(0),
        "false" => return Output::status(1),
        "echo" => return echo(args),
        _ => {}
    }
    let Some(guest) = zone.guest(machine) else {
        return gone(machine);
    };
    if let Some(out) = read(guest, machine, base, args) {
        return out;
    }
    let agent = agent_verb(base, args);
    let was_active = guest.active(crate::zone::AGENT);
    let Some(guest) = zone.guest_mut(machine) else {
        return gone(machine);
    };
    let out = match base {
        "ip" => ip(guest, machine, args),
        "systemctl" => systemctl(guest, args),
        "service" => service(guest, args),
        "ovs-vsctl" => ovs_vsctl(guest, args),
        "ovs-ofctl" => ovs_ofctl(guest, args),
        "chmod" => chmod(guest, args),
        "chown" => chown(guest, args, false),
        "chgrp" => chown(guest, args, true),
        _ if name.contains('/') => no_such_file(name),
        _ => Output::err(127, format!("bash: {name}: command not found")),
    };
    if let Some(verb) = agent.filter(|_| out.status == 0) {
        zone.agent_command(machine, verb, was_active);
    }
    out
}

/// Runs a command that only reads the machine (`hostname`, `cat`, `test`, ...); `None` for
/// one that may change it. Reads leave the zone untouched, so the look after them is skipped
/// (see [`Zone::touch`]).
fn read(guest: &Guest, machine: &str, base: &str, args: &[String]) -> Option<Output> {
    Some(match base {
        "hostname" => Output::ok(format!("{machine}\n")),
        "stat" => stat(guest, args),
        "test" => test(guest, args, "test"),
        "[" => match args.split_last() {
            Some((last, rest)) if last == "]" => test(guest, rest, "["),
            _ => Output::err(2, "bash: [: missing `]'"),
        },
        "cat" => cat(guest, args),
        "ls" => ls(guest, args),
        "grep" => grep(guest, args),
        "zcat" => zcat(guest, args),
        "zgrep" => zgrep(guest, args),
        "ss" => ss(guest, args),
        _ => return None,
    })
}

fn gone(machine: &str) -> Output {
    Output::err(255, format!("sim-ssh: machine {machine} is gone"))
}

/// The verb of a `systemctl VERB ... cloudstack-agent` or `service cloudstack-agent VERB`
/// command, which the zone follows with the host's API state.
fn agent_verb<'a>(base: &str, args: &'a [String]) -> Option<&'a str> {
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let is_agent = |u: &str| u.strip_suffix(".service").unwrap_or(u) == crate::zone::AGENT;
    match (base, words.as_slice()) {
        ("systemctl", [verb, units @ ..]) if units.iter().any(|u| is_agent(u)) => Some(verb),
        ("service", [unit, verb, ..]) if is_agent(unit) => Some(verb),
        _ => None,
    }
}

fn no_such_file(name: &str) -> Output {
    Output::err(127, format!("bash: {name}: No such file or directory"))
}

fn echo(args: &[String]) -> Output {
    let (newline, args) = match args.first().map(String::as_str) {
        Some("-n") => (false, &args[1..]),
        _ => (true, args),
    };
    let mut text = args.join(" ");
    if newline {
        text.push('\n');
    }
    Output::ok(text)
}

/// Operands after dropping a leading `--`.
fn operands(args: &[String]) -> Vec<&str> {
    let mut out = Vec::new();
    let mut after_dashes = false;
    for a in args {
        if a == "--" && !after_dashes {
            after_dashes = true;
            continue;
        }
        out.push(a.as_str());
    }
    out
}
