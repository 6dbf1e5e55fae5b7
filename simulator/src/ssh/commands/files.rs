//! The file commands over a machine's guest files: `stat` (with `-c` formats), `chmod`,
//! `chown`/`chgrp`, `test`/`[`, `cat`, `ls`, `grep`, as the coreutils and GNU grep print them
//! in the common cases (grep matches fixed strings: `-E`/`-F`/`-e` are accepted and change
//! nothing). A gzip file's text is for `zcat`/`zgrep` (`compressed.rs`): `cat` prints its
//! bytes, `grep` finds nothing in them. Paths are normalised against `/root`; directories exist where files
//! lie beneath them.

use super::{operands, Output};
use crate::zone::{File, Guest};

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

pub(super) fn stat(guest: &Guest, args: &[String]) -> Output {
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

pub(super) fn chmod(guest: &mut Guest, args: &[String]) -> Output {
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

pub(super) fn chown(guest: &mut Guest, args: &[String], chgrp: bool) -> Output {
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

pub(super) fn test(guest: &Guest, args: &[String], tool: &str) -> Output {
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

pub(super) fn cat(guest: &Guest, args: &[String]) -> Output {
    let mut out = Output::default();
    for path in operands(args) {
        match lookup(guest, path) {
            Some(Node::File(f)) => match &f.gzip {
                // what a terminal shows of compressed bytes
                Some(bytes) => out.stdout.push_str(&String::from_utf8_lossy(bytes)),
                None => out.stdout.push_str(&f.content),
            },
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

pub(super) fn ls(guest: &Guest, args: &[String]) -> Output {
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

pub(super) fn grep(guest: &Guest, args: &[String]) -> Output {
    grep_with(args, "grep", |file| match lookup(guest, file) {
        Some(Node::File(f)) => Ok(f.content.clone()),
        Some(Node::Dir) => Err(format!("grep: {file}: Is a directory")),
        None => Err(format!("grep: {file}: No such file or directory")),
    })
}

/// A file's text for `zgrep` and `zcat`: a gzip file decompressed, another file as it is
/// (`plain_ok`, as zgrep reads both) or refused (zcat: `not in gzip format`).
pub(super) fn text_of(
    guest: &Guest,
    file: &str,
    tool: &str,
    plain_ok: bool,
) -> Result<String, String> {
    match lookup(guest, file) {
        Some(Node::File(f)) => match &f.gzip {
            Some(bytes) => {
                use std::io::Read as _;
                let mut text = String::new();
                flate2::read::GzDecoder::new(bytes.as_slice())
                    .read_to_string(&mut text)
                    .map_err(|e| format!("gzip: {file}: {e}"))?;
                Ok(text)
            }
            None if plain_ok => Ok(f.content.clone()),
            None => Err(format!("gzip: {file}: not in gzip format")),
        },
        Some(Node::Dir) => Err(format!("{tool}: {file}: Is a directory")),
        None => Err(format!("{tool}: {file}: No such file or directory")),
    }
}

/// grep's options and output over files whose text `load` gives (or the error line to print).
pub(super) fn grep_with(
    args: &[String],
    tool: &str,
    load: impl Fn(&str) -> Result<String, String>,
) -> Output {
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
                    other => return Output::err(2, format!("{tool}: invalid option -- '{other}'")),
                }
            }
        } else {
            rest.push(a.as_str());
        }
    }
    let [pattern, files @ ..] = rest.as_slice() else {
        return Output::err(2, format!("Usage: {tool} [OPTION]... PATTERNS [FILE]..."));
    };
    if files.is_empty() {
        return Output::err(
            2,
            format!("sim-ssh: {tool} needs a file (there is no stdin)"),
        );
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
        let content = match load(file) {
            Ok(text) => text,
            Err(line) => {
                out.stderr.push_str(&line);
                out.stderr.push('\n');
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
