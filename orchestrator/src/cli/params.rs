//! Parameter values that are not typed on the command line: `-e @FILE` (a YAML or JSON map of
//! parameters, as Ansible reads it), `--secret NAME=env:VAR` / `--secret NAME=file:PATH`, and a
//! no-echo prompt on a terminal for a declared secret that was not given. Keeping secrets out of
//! argv keeps them out of `ps`, shell history and the audit log's `argv`.
//!
//! Everything ends up as the `(name, text)` pairs `-e` gives, in command-line order, `--secret`
//! values last: the plan, plan files and `apply --plan` see no difference.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::playbook::compile::json_text;
use crate::playbook::Program;

/// Where a `--secret` value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the controller.
    Env(String),
    /// A file on the controller; its content without the trailing newline.
    File(PathBuf),
}

/// `-e` as given: `NAME=VALUE`, or `@FILE`.
pub const FILE_KEY: &str = "@";

/// Parses `-e NAME=VALUE` or `-e @FILE`. The error never repeats the text: it may be a secret
/// typed with a space instead of `=`.
pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    if let Some(path) = s.strip_prefix('@') {
        if path.is_empty() {
            return Err("expected @FILE: a YAML or JSON file of parameters".into());
        }
        return Ok((FILE_KEY.into(), path.into()));
    }
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(
            "expected name=value or @FILE (what was given is not repeated: it may hold a secret)"
                .into(),
        ),
    }
}

/// Parses `--secret NAME=env:VAR` or `--secret NAME=file:PATH`.
pub fn parse_secret(s: &str) -> Result<(String, SecretSource), String> {
    let Some((name, source)) = s.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
        return Err("expected NAME=env:VAR or NAME=file:PATH".into());
    };
    let source = if let Some(var) = source.strip_prefix("env:").filter(|v| !v.is_empty()) {
        SecretSource::Env(var.into())
    } else if let Some(path) = source.strip_prefix("file:").filter(|p| !p.is_empty()) {
        SecretSource::File(path.into())
    } else {
        return Err(format!(
            "--secret {}: the value must come from env:VAR or file:PATH (what was given is \
             not repeated: a secret itself does not belong on the command line)",
            name.trim()
        ));
    };
    Ok((name.trim().to_string(), source))
}

/// Reads a `--secret` value: the variable's value, or the file's content without its trailing
/// newline (`\n` or `\r\n`).
pub fn read_secret(name: &str, source: &SecretSource) -> Result<String, Error> {
    match source {
        SecretSource::Env(var) => std::env::var(var).map_err(|_| {
            Error::invalid(format!(
                "--secret {name}=env:{var}: the environment variable {var} is not set (or not UTF-8)"
            ))
        }),
        SecretSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::invalid(format!("--secret {name}=file:{}: {e}", path.display()))
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
        }
    }
}

/// Whether parameter `name` is secret: declared `secret: true` in `program`'s root playbook,
/// or named like a secret.
fn is_secret(program: Option<&Program>, name: &str) -> bool {
    crate::redact::is_secret_name(name)
        || program
            .and_then(|p| p.scopes.first())
            .and_then(|root| root.params.get(name))
            .is_some_and(|p| p.secret)
}

/// The `-e` pairs with every `@FILE` read in its place, then the `--secret` values. A file
/// holding a secret (see [`is_secret`]) must be readable by its owner alone; a `--secret` must
/// name a secret parameter of `program` (when known).
pub fn gather(
    extra: &[(String, String)],
    secrets: &[(String, SecretSource)],
    program: Option<&Program>,
) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for (k, v) in extra {
        if k == FILE_KEY {
            out.extend(read_file(Path::new(v), program)?);
        } else {
            out.push((k.clone(), v.clone()));
        }
    }
    for (name, source) in secrets {
        if let Some(p) = program {
            if !is_secret(Some(p), name) && p.scopes[0].params.contains_key(name) {
                return Err(Error::invalid(format!(
                    "--secret {name}: parameter {name} of {} is not secret; declare it \
                     `secret: true`, or give it with -e",
                    p.name
                )));
            }
        }
        out.push((name.clone(), read_secret(name, source)?));
    }
    Ok(out)
}

/// The parameters of `-e @FILE`: a YAML (or JSON) map of names to values. Lists become
/// comma-separated text, maps their JSON text, as `-e` would give them.
fn read_file(path: &Path, program: Option<&Program>) -> Result<Vec<(String, String)>, Error> {
    let at = format!("-e @{}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| Error::invalid(format!("{at}: {e}")))?;
    let map: serde_json::Map<String, serde_json::Value> = match serde_yaml::from_str(&text) {
        Ok(serde_json::Value::Object(m)) => m,
        Ok(serde_json::Value::Null) => serde_json::Map::new(),
        // (serde_yaml's message may quote the file: not repeated.)
        Ok(_) | Err(_) => {
            return Err(Error::invalid(format!(
                "{at}: expected a YAML or JSON map of parameter names to values"
            )))
        }
    };
    let secret: Vec<&String> = map.keys().filter(|k| is_secret(program, k)).collect();
    if !secret.is_empty() {
        check_private(path, &at, &secret)?;
    }
    Ok(map
        .iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::Array(items) => {
                    items.iter().map(json_text).collect::<Vec<_>>().join(",")
                }
                other => json_text(other),
            };
            (k.clone(), text)
        })
        .collect())
}

/// Refuses a file of secrets that its group or others may read.
fn check_private(path: &Path, at: &str, secret: &[&String]) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(|e| Error::invalid(format!("{at}: {e}")))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        let names: Vec<&str> = secret.iter().map(|s| s.as_str()).collect();
        return Err(Error::invalid(format!(
            "{at}: the file holds secrets ({}) but its mode is {:04o}: others than its owner \
             may read it; fix: chmod 600 {}",
            names.join(", "),
            mode & 0o7777,
            path.display()
        )));
    }
    Ok(())
}

/// Asks on the terminal, without echo, for each required secret parameter of `program` that
/// has no default and no value in `extra`; only when standard input is a terminal (otherwise
/// the plan reports the missing parameter as usual).
pub fn prompt_missing(program: &Program, extra: &mut Vec<(String, String)>) -> Result<(), Error> {
    if !std::io::stdin().is_terminal() {
        return Ok(());
    }
    let Some(root) = program.scopes.first() else {
        return Ok(());
    };
    for (name, p) in &root.params {
        let given = extra.iter().any(|(k, _)| k == name);
        if given || !p.secret || !p.required || p.default.is_some() {
            continue;
        }
        let help = if p.help.is_empty() {
            String::new()
        } else {
            format!(" ({})", p.help)
        };
        let value = read_hidden(&format!("{name}{help}: "))
            .map_err(|e| Error::invalid(format!("cannot read {name} from the terminal: {e}")))?;
        extra.push((name.clone(), value));
    }
    Ok(())
}

/// The parameters of `-e` (`@FILE`s read), `--secret`, and the terminal prompt for a required
/// secret not given.
pub fn given_params(
    extra: &[(String, String)],
    secrets: &[(String, SecretSource)],
    program: &Program,
) -> Result<Vec<(String, String)>, Error> {
    let mut given = gather(extra, secrets, Some(program))?;
    prompt_missing(program, &mut given)?;
    Ok(given)
}

/// Reads one line from standard input with the terminal's echo off, `prompt` on stderr.
fn read_hidden(prompt: &str) -> std::io::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).map_err(std::io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    // Echo off before the prompt shows: what is typed (or pasted) at once is not echoed.
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(std::io::Error::from)?;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let restored = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    read?;
    restored.map_err(std::io::Error::from)?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_string())
}

/// The values of `-e` and `--secret` arguments in `args` (and the whole argument, for one
/// without `=`), for keeping them out of an error about the command line.
pub fn argv_values(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut next_is_value = false;
    for a in args {
        let value = if next_is_value {
            next_is_value = false;
            Some(a.as_str())
        } else if a == "-e" || a == "--extra" || a == "--secret" {
            next_is_value = true;
            None
        } else {
            a.strip_prefix("--extra=")
                .or_else(|| a.strip_prefix("--secret="))
                .or_else(|| a.strip_prefix("-e").filter(|v| !v.is_empty()))
        };
        if let Some(v) = value {
            out.push(v.to_string());
            if let Some((_, after)) = v.split_once('=') {
                out.push(after.to_string());
            }
            if let Some((_, after)) = v.split_once(char::is_whitespace) {
                out.push(after.trim().to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_and_secret_arguments_parse() {
        assert_eq!(
            parse_kv("@vars.yml").unwrap(),
            ("@".into(), "vars.yml".into())
        );
        let e = parse_kv("password S3cr3t-Zebra-991").unwrap_err();
        assert!(!e.contains("S3cr3t"), "{e}");
        assert_eq!(
            parse_secret("pw=env:PW").unwrap(),
            ("pw".into(), SecretSource::Env("PW".into()))
        );
        assert_eq!(
            parse_secret("pw=file:/run/pw").unwrap(),
            ("pw".into(), SecretSource::File("/run/pw".into()))
        );
        let e = parse_secret("pw=S3cr3t-Zebra-991").unwrap_err();
        assert!(!e.contains("S3cr3t"), "{e}");
    }

    #[test]
    fn argv_values_finds_every_form() {
        let args: Vec<String> = [
            "remedy",
            "apply",
            "-e",
            "password S3cr3t-Zebra-991",
            "-eword=abcdefg",
            "--extra=x=yyyy",
            "--secret",
            "pw=env:PW",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let v = argv_values(&args);
        for want in [
            "password S3cr3t-Zebra-991",
            "S3cr3t-Zebra-991",
            "abcdefg",
            "yyyy",
        ] {
            assert!(v.iter().any(|x| x == want), "{want}: {v:?}");
        }
    }

    #[test]
    fn secret_files_lose_their_newline_and_must_be_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "S3cr3t-Zebra-991\n").unwrap();
        let v = read_secret("pw", &SecretSource::File(pw.clone())).unwrap();
        assert_eq!(v, "S3cr3t-Zebra-991");
        let vars = dir.path().join("vars.yml");
        std::fs::write(
            &vars,
            "db_password: S3cr3t-Zebra-991\nvlan: 3933\nnics: [eth1, eth2]\n",
        )
        .unwrap();
        std::fs::set_permissions(&vars, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = gather(&[("@".into(), vars.display().to_string())], &[], None).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("chmod 600"), "{text}");
        assert!(
            text.contains("db_password") && !text.contains("S3cr3t"),
            "{text}"
        );
        std::fs::set_permissions(&vars, std::fs::Permissions::from_mode(0o600)).unwrap();
        let got = gather(
            &[
                ("vlan".into(), "1".into()),
                ("@".into(), vars.display().to_string()),
            ],
            &[("pw".into(), SecretSource::File(pw))],
            None,
        )
        .unwrap();
        assert_eq!(
            got,
            [
                ("vlan", "1"),
                ("db_password", "S3cr3t-Zebra-991"),
                ("nics", "eth1,eth2"),
                ("vlan", "3933"),
                ("pw", "S3cr3t-Zebra-991"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }
}
