//! The emulated commands of the simulated hosts, run against the zone's guest state.
//!
//! Owned here: what each supported command prints, on which stream, and its exit status, as
//! the real tool does in the common cases (`ip`, `systemctl`/`service`, `ovs-vsctl`,
//! `ovs-ofctl`, `stat`, `chmod`, `chown`/`chgrp`, `test`/`[`, `cat`, `ls`, `grep`, `ss`, `echo`,
//! `true`, `false`, `hostname`, `exit`, CloudStack's `checkrouter.sh` and `ssvm-check.sh`), and
//! running a parsed command line ([`run_line`]). A change (a link, a service, a file, an OVS
//! port or flow) is made in the zone at once, so the API shows it in its next reply.
//!
//! Not here: `sleep`, which the SSH server runs itself (it really waits), and `head -c N
//! /dev/zero`, whose N zero bytes the server streams in chunks ([`Step::Zeros`]);
//! [`run_line`] treats the first as done at once and builds the second's output. Unknown
//! commands print `bash: X: command not found` and exit 127.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::shell::{self, Join, Simple, Sink};
use crate::zone::{File, Guest, Service, ServiceState, Zone};

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
    let Some(guest) = zone.guest_mut(machine) else {
        return Output::err(255, format!("sim-ssh: machine {machine} is gone"));
    };
    match base {
        "hostname" => Output::ok(format!("{machine}\n")),
        "ip" => ip(guest, machine, args),
        "systemctl" => systemctl(guest, args),
        "service" => service(guest, args),
        "ovs-vsctl" => ovs_vsctl(guest, args),
        "ovs-ofctl" => ovs_ofctl(guest, args),
        "stat" => stat(guest, args),
        "chmod" => chmod(guest, args),
        "chown" => chown(guest, args, false),
        "chgrp" => chown(guest, args, true),
        "test" => test(guest, args, "test"),
        "[" => match args.split_last() {
            Some((last, rest)) if last == "]" => test(guest, rest, "["),
            _ => Output::err(2, "bash: [: missing `]'"),
        },
        "cat" => cat(guest, args),
        "ls" => ls(guest, args),
        "grep" => grep(guest, args),
        "ss" => ss(guest, args),
        _ if name.contains('/') => no_such_file(name),
        _ => Output::err(127, format!("bash: {name}: command not found")),
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

// --- files ------------------------------------------------------------------------------------

enum Node<'a> {
    File(&'a File),
    Dir,
}

fn lookup<'a>(guest: &'a Guest, path: &str) -> Option<Node<'a>> {
    let path = normalize(path);
    if let Some(f) = guest.files.get(&path) {
        return Some(Node::File(f));
    }
    is_dir(guest, &path).then_some(Node::Dir)
}

fn normalize(path: &str) -> String {
    if path == "/" {
        return "/".into();
    }
    let trimmed = path.trim_end_matches('/');
    let absolute = if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/root/{trimmed}")
    };
    absolute.replace("//", "/")
}

fn is_dir(guest: &Guest, path: &str) -> bool {
    if path == "/" || path == "/root" || path == "/tmp" {
        return true;
    }
    let prefix = format!("{path}/");
    guest.files.keys().any(|k| k.starts_with(&prefix))
}

fn uid(name: &str) -> String {
    match name {
        "root" => "0".into(),
        "cloud" => "996".into(),
        n if n.chars().all(|c| c.is_ascii_digit()) => n.into(),
        n => (1000 + n.bytes().map(u32::from).sum::<u32>() % 1000).to_string(),
    }
}

fn mode_string(mode: u32, dir: bool) -> String {
    let mut s = String::from(if dir { "d" } else { "-" });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn stat(guest: &Guest, args: &[String]) -> Output {
    let mut format: Option<String> = None;
    let mut paths = Vec::new();
    let mut i = 0;
    let mut dashes = false;
    while i < args.len() {
        let a = args[i].as_str();
        if dashes {
            paths.push(a);
        } else if a == "--" {
            dashes = true;
        } else if a == "-c" || a == "--format" {
            i += 1;
            match args.get(i) {
                Some(f) => format = Some(f.clone()),
                None => return Output::err(1, "stat: option requires an argument -- 'c'"),
            }
        } else if let Some(f) = a.strip_prefix("--format=") {
            format = Some(f.to_string());
        } else if a == "-L" || a == "--dereference" {
        } else if a.starts_with('-') && a.len() > 1 {
            return Output::err(1, format!("stat: invalid option -- '{}'", &a[1..]));
        } else {
            paths.push(a);
        }
        i += 1;
    }
    if paths.is_empty() {
        return Output::err(1, "stat: missing operand");
    }
    let mut out = Output::default();
    for path in paths {
        let (mode, owner, group, size, kind, dir) = match lookup(guest, path) {
            Some(Node::File(f)) => (
                f.mode,
                f.owner.clone(),
                f.group.clone(),
                f.content.len(),
                if f.content.is_empty() {
                    "regular empty file"
                } else {
                    "regular file"
                },
                false,
            ),
            Some(Node::Dir) => (0o755, "root".into(), "root".into(), 4096, "directory", true),
            None => {
                out.stderr.push_str(&format!(
                    "stat: cannot statx '{path}': No such file or directory\n"
                ));
                out.status = 1;
                continue;
            }
        };
        let Some(fmt) = &format else {
            out.stdout.push_str(&format!(
                "  File: {path}\n  Size: {size}\t{kind}\nAccess: ({mode:04o}/{}) Uid: ({}/{owner}) Gid: ({}/{group})\n",
                mode_string(mode, dir),
                uid(&owner),
                uid(&group)
            ));
            continue;
        };
        let mut line = String::new();
        let mut chars = fmt.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                line.push(c);
                continue;
            }
            match chars.next() {
                Some('a') => line.push_str(&format!("{mode:o}")),
                Some('A') => line.push_str(&mode_string(mode, dir)),
                Some('U') => line.push_str(&owner),
                Some('G') => line.push_str(&group),
                Some('u') => line.push_str(&uid(&owner)),
                Some('g') => line.push_str(&uid(&group)),
                Some('n') => line.push_str(path),
                Some('s') => line.push_str(&size.to_string()),
                Some('F') => line.push_str(kind),
                Some('%') => line.push('%'),
                Some(_) => line.push('?'),
                None => line.push('%'),
            }
        }
        line.push('\n');
        out.stdout.push_str(&line);
    }
    out
}

fn chmod(guest: &mut Guest, args: &[String]) -> Output {
    let ops = operands(args);
    let [mode, paths @ ..] = ops.as_slice() else {
        return Output::err(1, "chmod: missing operand");
    };
    if paths.is_empty() {
        return Output::err(1, format!("chmod: missing operand after '{mode}'"));
    }
    let Some(bits) = (mode.len() <= 4 && !mode.is_empty())
        .then(|| u32::from_str_radix(mode, 8).ok())
        .flatten()
    else {
        return Output::err(
            1,
            format!("chmod: invalid mode: '{mode}' (the simulator supports octal modes only)"),
        );
    };
    let mut out = Output::default();
    for path in paths {
        let key = normalize(path);
        if let Some(f) = guest.files.get_mut(&key) {
            f.mode = bits;
        } else if !is_dir(guest, &key) {
            out.stderr.push_str(&format!(
                "chmod: cannot access '{path}': No such file or directory\n"
            ));
            out.status = 1;
        }
    }
    out
}

fn chown(guest: &mut Guest, args: &[String], chgrp: bool) -> Output {
    let tool = if chgrp { "chgrp" } else { "chown" };
    let ops = operands(args);
    let [spec, paths @ ..] = ops.as_slice() else {
        return Output::err(1, format!("{tool}: missing operand"));
    };
    if paths.is_empty() {
        return Output::err(1, format!("{tool}: missing operand after '{spec}'"));
    }
    let (owner, group) = if chgrp {
        (None, Some(spec.to_string()))
    } else {
        match spec.split_once(':').or_else(|| spec.split_once('.')) {
            Some((o, g)) => (
                (!o.is_empty()).then(|| o.to_string()),
                (!g.is_empty()).then(|| g.to_string()),
            ),
            None => (Some(spec.to_string()), None),
        }
    };
    let mut out = Output::default();
    for path in paths {
        let key = normalize(path);
        if let Some(f) = guest.files.get_mut(&key) {
            if let Some(o) = &owner {
                f.owner = o.clone();
            }
            if let Some(g) = &group {
                f.group = g.clone();
            }
        } else if !is_dir(guest, &key) {
            out.stderr.push_str(&format!(
                "{tool}: cannot access '{path}': No such file or directory\n"
            ));
            out.status = 1;
        }
    }
    out
}

fn test(guest: &Guest, args: &[String], tool: &str) -> Output {
    let (negate, args) = match args.first().map(String::as_str) {
        Some("!") => (true, &args[1..]),
        _ => (false, args),
    };
    let truth = match args {
        [] => Some(false),
        [s] => Some(!s.is_empty()),
        [op, path] => {
            let node = lookup(guest, path);
            match op.as_str() {
                "-e" | "-r" | "-w" => Some(node.is_some()),
                "-f" => Some(matches!(node, Some(Node::File(_)))),
                "-d" => Some(matches!(node, Some(Node::Dir))),
                "-s" => Some(match node {
                    Some(Node::File(f)) => !f.content.is_empty(),
                    Some(Node::Dir) => true,
                    None => false,
                }),
                "-x" => Some(match node {
                    Some(Node::File(f)) => f.mode & 0o111 != 0,
                    Some(Node::Dir) => true,
                    None => false,
                }),
                "-n" => Some(!path.is_empty()),
                "-z" => Some(path.is_empty()),
                _ => None,
            }
        }
        [a, op, b] => match op.as_str() {
            "=" | "==" => Some(a == b),
            "!=" => Some(a != b),
            _ => None,
        },
        _ => None,
    };
    match truth {
        Some(t) => Output::status(if t != negate { 0 } else { 1 }),
        None => Output::err(
            2,
            format!("bash: {tool}: unsupported expression: {}", args.join(" ")),
        ),
    }
}

fn cat(guest: &Guest, args: &[String]) -> Output {
    let mut out = Output::default();
    for path in operands(args) {
        match lookup(guest, path) {
            Some(Node::File(f)) => out.stdout.push_str(&f.content),
            Some(Node::Dir) => {
                out.stderr
                    .push_str(&format!("cat: {path}: Is a directory\n"));
                out.status = 1;
            }
            None => {
                out.stderr
                    .push_str(&format!("cat: {path}: No such file or directory\n"));
                out.status = 1;
            }
        }
    }
    out
}

fn ls(guest: &Guest, args: &[String]) -> Output {
    let mut paths: Vec<&str> = operands(args)
        .into_iter()
        .filter(|a| !a.starts_with('-') || *a == "-")
        .collect();
    if paths.is_empty() {
        paths.push("/root");
    }
    let mut out = Output::default();
    let many = paths.len() > 1;
    for path in paths {
        match lookup(guest, path) {
            Some(Node::File(_)) => out.stdout.push_str(&format!("{path}\n")),
            Some(Node::Dir) => {
                let dir = normalize(path);
                let prefix = if dir == "/" {
                    "/".to_string()
                } else {
                    format!("{dir}/")
                };
                let mut names: Vec<&str> = guest
                    .files
                    .keys()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .map(|rest| rest.split('/').next().unwrap_or(rest))
                    .collect();
                names.dedup();
                if many {
                    out.stdout.push_str(&format!("{path}:\n"));
                }
                for n in names {
                    out.stdout.push_str(n);
                    out.stdout.push('\n');
                }
            }
            None => {
                out.stderr.push_str(&format!(
                    "ls: cannot access '{path}': No such file or directory\n"
                ));
                out.status = 2;
            }
        }
    }
    out
}

/// `ss -l[ntup]`: the listening sockets of the running services (dnsmasq: DNS on 53 over UDP
/// and TCP, DHCP on 67 over UDP; sshd: TCP 22, or 3922 on a system VM).
fn ss(guest: &Guest, args: &[String]) -> Output {
    let mut flags = String::new();
    for a in args {
        match a.strip_prefix('-') {
            Some(f) if !f.starts_with('-') && f.chars().all(|c| "lntupa4".contains(c)) => {
                flags.push_str(f)
            }
            _ => {
                return Output::err(
                    1,
                    format!("ss: bad option or filter {a:?} (the simulator knows -l -n -t -u -p)"),
                )
            }
        }
    }
    let (tcp, udp) = match (flags.contains('t'), flags.contains('u')) {
        (false, false) => (true, true),
        t => t,
    };
    let mut rows: Vec<(&str, &str, String, &str)> = Vec::new();
    if flags.contains('l') {
        if guest.active("dnsmasq") {
            if udp {
                rows.push(("udp", "UNCONN", "0.0.0.0:53".into(), "dnsmasq"));
                rows.push(("udp", "UNCONN", "0.0.0.0:67".into(), "dnsmasq"));
            }
            if tcp {
                rows.push(("tcp", "LISTEN", "0.0.0.0:53".into(), "dnsmasq"));
            }
        }
        if guest.active("ssh") && tcp {
            let port = if guest.has_file("/var/cache/cloud/cmdline") {
                3922
            } else {
                22
            };
            rows.push(("tcp", "LISTEN", format!("0.0.0.0:{port}"), "sshd"));
        }
    }
    let mut out =
        String::from("Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process\n");
    for (net, state, local, process) in rows {
        let users = if flags.contains('p') {
            format!("users:((\"{process}\",pid=1,fd=4))")
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{net:<5} {state:<6} 0      0      {local:>18} {:>18} {users}\n",
            "0.0.0.0:*"
        ));
    }
    Output::ok(out)
}

fn grep(guest: &Guest, args: &[String]) -> Output {
    let (mut quiet, mut count, mut invert, mut ignore_case) = (false, false, false, false);
    let mut rest = Vec::new();
    let mut dashes = false;
    for a in args {
        if !dashes && a == "--" {
            dashes = true;
        } else if !dashes && a.starts_with('-') && a.len() > 1 && rest.is_empty() {
            for flag in a[1..].chars() {
                match flag {
                    'q' | 's' => quiet |= flag == 'q',
                    'c' => count = true,
                    'v' => invert = true,
                    'i' => ignore_case = true,
                    'F' | 'E' | 'e' => {}
                    other => return Output::err(2, format!("grep: invalid option -- '{other}'")),
                }
            }
        } else {
            rest.push(a.as_str());
        }
    }
    let [pattern, files @ ..] = rest.as_slice() else {
        return Output::err(2, "Usage: grep [OPTION]... PATTERNS [FILE]...");
    };
    if files.is_empty() {
        return Output::err(2, "sim-ssh: grep needs a file (there is no stdin)");
    }
    let needle = if ignore_case {
        pattern.to_lowercase()
    } else {
        pattern.to_string()
    };
    let mut out = Output::default();
    let mut matched = false;
    let mut missing = false;
    for file in files {
        let content = match lookup(guest, file) {
            Some(Node::File(f)) => &f.content,
            Some(Node::Dir) => {
                out.stderr
                    .push_str(&format!("grep: {file}: Is a directory\n"));
                missing = true;
                continue;
            }
            None => {
                out.stderr
                    .push_str(&format!("grep: {file}: No such file or directory\n"));
                missing = true;
                continue;
            }
        };
        let prefix = if files.len() > 1 {
            format!("{file}:")
        } else {
            String::new()
        };
        let mut n = 0;
        for line in content.lines() {
            let hay = if ignore_case {
                line.to_lowercase()
            } else {
                line.to_string()
            };
            if hay.contains(&needle) != invert {
                n += 1;
                if !count && !quiet {
                    out.stdout.push_str(&format!("{prefix}{line}\n"));
                }
            }
        }
        matched |= n > 0;
        if count && !quiet {
            out.stdout.push_str(&format!("{prefix}{n}\n"));
        }
        if quiet && matched {
            return Output::status(0);
        }
    }
    out.status = if missing && !(quiet && matched) {
        2
    } else if matched {
        0
    } else {
        1
    };
    out
}

// --- ip -----------------------------------------------------------------------------------------

/// A stable MAC for a machine's link.
fn mac(machine: &str, dev: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in machine.bytes().chain([0]).chain(dev.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    format!("1e:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

fn parse_cidr(addr: &str) -> Option<(Ipv4Addr, u32)> {
    let (ip, len) = addr.split_once('/').unwrap_or((addr, "32"));
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((ip.parse().ok()?, len))
}

fn mask(len: u32) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

fn link_header(guest: &Guest, machine: &str, index: usize, dev: &str, addr_view: bool) -> String {
    let link = &guest.links[dev];
    let (flags, state) = if link.up {
        ("BROADCAST,MULTICAST,UP,LOWER_UP", "UP")
    } else {
        ("BROADCAST,MULTICAST", "DOWN")
    };
    let mode = if addr_view { "" } else { "mode DEFAULT " };
    format!(
        "{index}: {dev}: <{flags}> mtu 1500 qdisc pfifo_fast state {state} {mode}group default qlen 1000\n    link/ether {} brd ff:ff:ff:ff:ff:ff\n",
        mac(machine, dev)
    )
}

const LO_LINK: &str = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\n    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n";
const LO_ADDR: &str = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default qlen 1000\n    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n    inet 127.0.0.1/8 scope host lo\n       valid_lft forever preferred_lft forever\n";

fn ip(guest: &mut Guest, machine: &str, args: &[String]) -> Output {
    // Options such as -4 / -o are accepted and ignored (the output is always the long form).
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .skip_while(|a| a.starts_with('-'))
        .collect();
    let Some((object, rest)) = args.split_first() else {
        return Output::err(255, "Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }");
    };
    let object = match *object {
        "l" | "li" | "lin" | "link" => "link",
        "a" | "ad" | "add" | "addr" | "addre" | "addres" | "address" => "addr",
        "r" | "ro" | "rou" | "rout" | "route" => "route",
        other => {
            return Output::err(
                255,
                format!("Object \"{other}\" is unknown, try \"ip help\"."),
            )
        }
    };
    let (verb, rest) = match rest.split_first() {
        Some((v, r)) => (*v, r),
        None => ("show", &[][..]),
    };
    match (object, verb) {
        ("link" | "addr", "show" | "list" | "ls" | "sh" | "s" | "l") => {
            let dev = match rest {
                [] => None,
                ["dev", d] | [d] => Some(*d),
                _ => {
                    return Output::err(
                        255,
                        format!(
                            "Error: either \"dev\" is duplicate, or \"{}\" is a garbage.",
                            rest.join(" ")
                        ),
                    )
                }
            };
            let addr_view = object == "addr";
            let mut text = String::new();
            if dev.is_none() || dev == Some("lo") {
                text.push_str(if addr_view { LO_ADDR } else { LO_LINK });
            }
            let mut found = dev.is_none() || dev == Some("lo");
            for (i, name) in guest.links.keys().enumerate() {
                if dev.is_some_and(|d| d != name) {
                    continue;
                }
                found = true;
                text.push_str(&link_header(guest, machine, i + 2, name, addr_view));
                if addr_view {
                    for addr in &guest.links[name].addrs {
                        let brd = parse_cidr(addr)
                            .filter(|(_, len)| *len < 31)
                            .map(|(ip, len)| {
                                format!(" brd {}", Ipv4Addr::from(u32::from(ip) | !mask(len)))
                            })
                            .unwrap_or_default();
                        text.push_str(&format!(
                            "    inet {addr}{brd} scope global {name}\n       valid_lft forever preferred_lft forever\n"
                        ));
                    }
                }
            }
            if !found {
                return Output::err(
                    1,
                    format!("Device \"{}\" does not exist.", dev.unwrap_or_default()),
                );
            }
            Output::ok(text)
        }
        ("link", "set") => {
            let (dev, state) = match rest {
                ["dev", d, s] | [d, s] => (*d, *s),
                _ => return Output::err(255, "Usage: ip link set DEVICE { up | down }"),
            };
            let up = match state {
                "up" => true,
                "down" => false,
                other => {
                    return Output::err(
                        255,
                        format!("Error: either \"dev\" is duplicate, or \"{other}\" is a garbage."),
                    )
                }
            };
            if !guest.links.contains_key(dev) {
                return Output::err(1, format!("Cannot find device \"{dev}\""));
            }
            guest.set_link(dev, up);
            if !up {
                // The kernel drops routes through a link that goes down.
                let tail = format!(" dev {dev}");
                for routes in guest.routes.values_mut() {
                    routes.retain(|r| !r.ends_with(&tail) && !r.contains(&format!("{tail} ")));
                }
                guest.routes.retain(|_, routes| !routes.is_empty());
            }
            Output::status(0)
        }
        ("route", "show" | "list" | "ls" | "sh" | "s" | "l") => {
            let table = match rest {
                [] => "main",
                ["table", t] => *t,
                _ => {
                    return Output::err(255, format!("Error: \"{}\" is a garbage.", rest.join(" ")))
                }
            };
            // A table with no routes does not exist for the kernel (local and main always do).
            if !["main", "local"].contains(&table)
                && guest.routes.get(table).is_none_or(|r| r.is_empty())
            {
                return Output::err(2, "Error: ipv4: FIB table does not exist.\nDump terminated");
            }
            let mut text = String::new();
            for r in guest.routes.get(table).into_iter().flatten() {
                text.push_str(r);
                text.push('\n');
            }
            if table == "main" {
                for (name, link) in &guest.links {
                    if !link.up {
                        continue;
                    }
                    for addr in &link.addrs {
                        if let Some((ip, len)) = parse_cidr(addr) {
                            let net = Ipv4Addr::from(u32::from(ip) & mask(len));
                            text.push_str(&format!(
                                "{net}/{len} dev {name} proto kernel scope link src {ip}\n"
                            ));
                        }
                    }
                }
            }
            Output::ok(text)
        }
        ("route", verb @ ("add" | "replace" | "del" | "delete")) => route_change(guest, verb, rest),
        (_, other) => Output::err(
            255,
            format!("Command \"{other}\" is unknown, try \"ip {object} help\"."),
        ),
    }
}

fn route_change(guest: &mut Guest, verb: &str, args: &[&str]) -> Output {
    let Some((prefix, mut rest)) = args.split_first() else {
        return Output::err(255, "Usage: ip route { add | del | replace } ROUTE");
    };
    let (mut via, mut dev, mut table) = (None, None, "main");
    while let [key, value, tail @ ..] = rest {
        match *key {
            "via" => via = Some(*value),
            "dev" => dev = Some(*value),
            "table" => table = value,
            "proto" | "metric" | "src" | "scope" => {}
            other => return Output::err(255, format!("Error: \"{other}\" is a garbage.")),
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return Output::err(255, format!("Error: \"{}\" is a garbage.", rest.join(" ")));
    }
    if *prefix != "default" && parse_cidr(prefix).is_none() {
        return Output::err(
            1,
            format!("Error: inet prefix is expected rather than \"{prefix}\"."),
        );
    }
    let prefix_of = |r: &str| r.split(' ').next().unwrap_or("").to_string();
    if verb == "del" || verb == "delete" {
        let Some(routes) = guest.routes.get_mut(table) else {
            return Output::err(2, "RTNETLINK answers: No such process");
        };
        let before = routes.len();
        routes.retain(|r| {
            !(prefix_of(r) == *prefix
                && via.is_none_or(|v| r.contains(&format!("via {v} ")))
                && dev.is_none_or(|d| r.ends_with(&format!(" dev {d}"))))
        });
        let (after, empty) = (routes.len(), routes.is_empty());
        // An empty table is no table, as the kernel shows it.
        if empty {
            guest.routes.remove(table);
        }
        if after == before {
            return Output::err(2, "RTNETLINK answers: No such process");
        }
        return Output::status(0);
    }
    if let Some(d) = dev {
        if !guest.links.contains_key(d) {
            return Output::err(1, format!("Cannot find device \"{d}\""));
        }
    }
    // The next hop must be on the subnet of a link that is up (the one named, if any).
    let out_dev = match via {
        Some(gw) => {
            let Ok(gw) = gw.parse::<Ipv4Addr>() else {
                return Output::err(
                    1,
                    format!("Error: inet address is expected rather than \"{gw}\"."),
                );
            };
            let found = guest.links.iter().find(|(name, link)| {
                link.up
                    && dev.is_none_or(|d| d == name.as_str())
                    && link
                        .addrs
                        .iter()
                        .filter_map(|a| parse_cidr(a))
                        .any(|(ip, len)| u32::from(ip) & mask(len) == u32::from(gw) & mask(len))
            });
            match found {
                Some((name, _)) => name.clone(),
                None => return Output::err(2, "Error: Nexthop has invalid gateway."),
            }
        }
        None => match dev {
            Some(d) if guest.link_up(d) => d.to_string(),
            Some(_) => return Output::err(2, "Error: Device for nexthop is not up."),
            None => return Output::err(2, "Error: Device for nexthop is not up."),
        },
    };
    let text = match via {
        Some(gw) => format!("{prefix} via {gw} dev {out_dev}"),
        None => format!("{prefix} dev {out_dev} scope link"),
    };
    let routes = guest.routes.entry(table.to_string()).or_default();
    let existing = routes.iter().position(|r| prefix_of(r) == *prefix);
    match (verb, existing) {
        ("add", Some(_)) => Output::err(2, "RTNETLINK answers: File exists"),
        (_, Some(i)) => {
            routes[i] = text;
            Output::status(0)
        }
        (_, None) => {
            routes.push(text);
            Output::status(0)
        }
    }
}

// --- services -----------------------------------------------------------------------------------

fn unit(name: &str) -> &str {
    name.strip_suffix(".service").unwrap_or(name)
}

fn state_word(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Active => "active",
        ServiceState::Inactive => "inactive",
        ServiceState::Failed => "failed",
    }
}

fn systemctl(guest: &mut Guest, args: &[String]) -> Output {
    let quiet = args.iter().any(|a| a == "-q" || a == "--quiet");
    let mut out = systemctl_verb(guest, args);
    if quiet {
        out.stdout.clear();
    }
    out
}

fn systemctl_verb(guest: &mut Guest, args: &[String]) -> Output {
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let Some((verb, units)) = args.split_first() else {
        return Output::err(1, "sim-ssh: systemctl without a command lists nothing here");
    };
    if units.is_empty() {
        return Output::err(1, "Too few arguments.");
    }
    let mut out = Output::default();
    for name in units.iter().map(|u| unit(u)) {
        let service = guest.services.get(name).cloned();
        let one = match (*verb, service) {
            ("is-active", Some(s)) => Output {
                stdout: format!("{}\n", state_word(s.state)),
                stderr: String::new(),
                status: if s.state == ServiceState::Active {
                    0
                } else {
                    3
                },
            },
            ("is-active", None) => Output {
                stdout: "inactive\n".into(),
                stderr: String::new(),
                status: 3,
            },
            ("is-failed", s) => {
                let failed = s.as_ref().is_some_and(|s| s.state == ServiceState::Failed);
                Output {
                    stdout: format!("{}\n", s.map_or("inactive", |s| state_word(s.state))),
                    stderr: String::new(),
                    status: if failed { 0 } else { 1 },
                }
            }
            ("status", Some(s)) => {
                let (enabled, active) = (
                    if s.enabled { "enabled" } else { "disabled" },
                    match s.state {
                        ServiceState::Active => "active (running)",
                        ServiceState::Inactive => "inactive (dead)",
                        ServiceState::Failed => "failed (Result: exit-code)",
                    },
                );
                Output {
                    stdout: format!(
                        "● {name}.service - {name}\n     Loaded: loaded (/lib/systemd/system/{name}.service; {enabled}; vendor preset: enabled)\n     Active: {active}\n"
                    ),
                    stderr: String::new(),
                    status: if s.state == ServiceState::Active { 0 } else { 3 },
                }
            }
            ("status", None) => Output::err(4, format!("Unit {name}.service could not be found.")),
            ("start" | "stop" | "restart" | "reload" | "try-restart", None) => Output::err(
                5,
                format!("Failed to {verb} {name}.service: Unit {name}.service not found."),
            ),
            ("start" | "restart", Some(_)) => {
                guest.set_service(name, ServiceState::Active);
                Output::status(0)
            }
            ("try-restart", Some(s)) => {
                if s.state == ServiceState::Active {
                    guest.set_service(name, ServiceState::Active);
                }
                Output::status(0)
            }
            ("reload", Some(s)) => {
                if s.state == ServiceState::Active {
                    Output::status(0)
                } else {
                    Output::err(1, format!("{name}.service is not active, cannot reload."))
                }
            }
            ("stop", Some(_)) => {
                guest.set_service(name, ServiceState::Inactive);
                Output::status(0)
            }
            ("enable" | "disable", None) => Output::err(
                1,
                format!("Failed to {verb} unit: Unit file {name}.service does not exist."),
            ),
            ("enable" | "disable", Some(s)) => {
                guest.services.insert(
                    name.to_string(),
                    Service {
                        state: s.state,
                        enabled: *verb == "enable",
                    },
                );
                Output::status(0)
            }
            ("is-enabled", Some(s)) => Output {
                stdout: format!("{}\n", if s.enabled { "enabled" } else { "disabled" }),
                stderr: String::new(),
                status: if s.enabled { 0 } else { 1 },
            },
            ("is-enabled", None) => Output::err(
                1,
                format!(
                    "Failed to get unit file state for {name}.service: No such file or directory"
                ),
            ),
            (other, _) => {
                return Output::err(1, format!("Unknown command verb {other}."));
            }
        };
        out.stdout.push_str(&one.stdout);
        out.stderr.push_str(&one.stderr);
        if one.status != 0 || out.status == 0 {
            out.status = out.status.max(one.status);
        }
    }
    out
}

fn service(guest: &mut Guest, args: &[String]) -> Output {
    let [name, verb, ..] = args else {
        return Output::err(1, "Usage: service < option > | --status-all | [ service_name [ command | --full-restart ] ]");
    };
    if !guest.services.contains_key(unit(name)) {
        return Output::err(1, format!("{name}: unrecognized service"));
    }
    match verb.as_str() {
        "start" | "stop" | "restart" | "status" | "reload" => {
            systemctl(guest, &[verb.clone(), name.clone()])
        }
        other => Output::err(
            1,
            format!("Usage: /etc/init.d/{name} {{start|stop|restart|status}} (not {other})"),
        ),
    }
}

// --- Open vSwitch -------------------------------------------------------------------------------

fn no_bridge(bridge: &str) -> Output {
    Output::err(1, format!("ovs-vsctl: no bridge named {bridge}"))
}

fn ovs_vsctl(guest: &mut Guest, args: &[String]) -> Output {
    let may_exist = args.iter().any(|a| a == "--may-exist");
    let if_exists = args.iter().any(|a| a == "--if-exists");
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.as_slice() {
        ["list-br"] => Output::ok(
            guest
                .ovs
                .keys()
                .map(|b| format!("{b}\n"))
                .collect::<String>(),
        ),
        ["br-exists", br] => Output::status(if guest.ovs.contains_key(*br) { 0 } else { 2 }),
        ["list-ports", br] => match guest.ovs.get(*br) {
            Some(b) => {
                let mut ports = b.ports.clone();
                ports.sort();
                Output::ok(ports.iter().map(|p| format!("{p}\n")).collect::<String>())
            }
            None => no_bridge(br),
        },
        ["add-port", br, port] => {
            if may_exist
                && guest
                    .ovs
                    .get(*br)
                    .is_some_and(|b| b.ports.iter().any(|p| p == port))
            {
                return Output::status(0);
            }
            if let Some((owner, _)) = guest
                .ovs
                .iter()
                .find(|(_, b)| b.ports.iter().any(|p| p == port))
            {
                return Output::err(
                    1,
                    format!("ovs-vsctl: cannot create a port named {port} because a port named {port} already exists on bridge {owner}"),
                );
            }
            match guest.ovs.get_mut(*br) {
                Some(b) => {
                    b.ports.push(port.to_string());
                    Output::status(0)
                }
                None => no_bridge(br),
            }
        }
        ["del-port", br, port] => match guest.ovs.get_mut(*br) {
            Some(b) if b.ports.iter().any(|p| p == port) => {
                b.ports.retain(|p| p != port);
                Output::status(0)
            }
            Some(_) if if_exists => Output::status(0),
            Some(_) => Output::err(
                1,
                format!("ovs-vsctl: bridge {br} does not have a port {port}"),
            ),
            None => no_bridge(br),
        },
        ["del-port", port] => {
            match guest
                .ovs
                .values_mut()
                .find(|b| b.ports.iter().any(|p| p == port))
            {
                Some(b) => {
                    b.ports.retain(|p| p != port);
                    Output::status(0)
                }
                None => Output::err(1, format!("ovs-vsctl: no port named {port}")),
            }
        }
        ["show"] => {
            let mut text = String::from("6f1c5a4e-0d3b-4c7e-9a51-3f2b8d7e6c10\n");
            for (name, b) in &guest.ovs {
                text.push_str(&format!("    Bridge {name}\n"));
                let mut ports = b.ports.clone();
                ports.push(name.clone());
                ports.sort();
                for p in ports {
                    text.push_str(&format!("        Port {p}\n            Interface {p}\n"));
                    if &p == name {
                        text.push_str("                type: internal\n");
                    }
                }
            }
            text.push_str("    ovs_version: \"2.17.9\"\n");
            Output::ok(text)
        }
        [] => Output::err(1, "ovs-vsctl: missing command name (use --help for help)"),
        [cmd, ..] => Output::err(
            1,
            format!("ovs-vsctl: unknown command '{cmd}'; use --help for help"),
        ),
    }
}

fn not_a_bridge(bridge: &str) -> Output {
    Output::err(
        1,
        format!("ovs-ofctl: {bridge} is not a bridge or a socket"),
    )
}

/// The match fields of a flow, without its actions.
fn match_fields(flow: &str) -> Vec<String> {
    flow.split(',')
        .map(str::trim)
        .take_while(|f| !f.starts_with("actions="))
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect()
}

fn ovs_ofctl(guest: &mut Guest, args: &[String]) -> Output {
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("-"))
        .collect();
    match args.as_slice() {
        ["show", br] => match guest.ovs.get(*br) {
            Some(b) => {
                let mut text = format!(
                    "OFPT_FEATURES_REPLY (xid=0x2): dpid:0000{}\nn_tables:254, n_buffers:0\n",
                    mac(br, "dpid").replace(':', "")
                );
                for (i, p) in b.ports.iter().enumerate() {
                    text.push_str(&format!(
                        " {}({p}): addr:{}\n     config:     0\n     state:      0\n",
                        i + 1,
                        mac(br, p)
                    ));
                }
                text.push_str(&format!(
                    " LOCAL({br}): addr:{}\n     config:     0\n     state:      0\nOFPT_GET_CONFIG_REPLY (xid=0x4): frags=normal miss_send_len=0\n",
                    mac(br, br)
                ));
                Output::ok(text)
            }
            None => not_a_bridge(br),
        },
        ["dump-flows", br] => match guest.ovs.get(*br) {
            Some(b) => Output::ok(
                b.flows
                    .iter()
                    .map(|f| format!(" cookie=0x0, duration=0s, n_packets=0, n_bytes=0, {f}\n"))
                    .collect::<String>(),
            ),
            None => not_a_bridge(br),
        },
        ["add-flow", br, flow] => match guest.ovs.get_mut(*br) {
            Some(b) => {
                if !flow.contains("actions=") {
                    return Output::err(1, "ovs-ofctl: must specify an action");
                }
                if !b.flows.iter().any(|f| f == flow) {
                    b.flows.push(flow.to_string());
                }
                Output::status(0)
            }
            None => not_a_bridge(br),
        },
        ["del-flows", br] => match guest.ovs.get_mut(*br) {
            Some(b) => {
                b.flows.clear();
                Output::status(0)
            }
            None => not_a_bridge(br),
        },
        ["del-flows", br, flow] => match guest.ovs.get_mut(*br) {
            Some(b) => {
                let wanted = match_fields(flow);
                b.flows.retain(|f| {
                    let have = match_fields(f);
                    !wanted.iter().all(|w| have.contains(w))
                });
                Output::status(0)
            }
            None => not_a_bridge(br),
        },
        [] => Output::err(1, "ovs-ofctl: missing command name; use --help for help"),
        [cmd, ..] => Output::err(
            1,
            format!("ovs-ofctl: unknown command '{cmd}'; use --help for help"),
        ),
    }
}
