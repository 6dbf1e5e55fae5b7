//! How each host is reached: the [`Connection`] derived from the `ansible_*` connection
//! variables (aliases, Ansible booleans and ports, plain `{{ var }}` references), the host key
//! settings (`remedy_host_key_policy`, `remedy_host_key_fingerprint`,
//! `remedy_known_hosts_file`) and jump hosts (`remedy_jump` chains, or a `ProxyJump` in the ssh
//! arguments), refusing unknown jump hosts and cycles.
//!
//! Not here: which value a variable has (precedence: `vars`) and connecting (the transports).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::files::expand_tilde;
use super::vars::{as_integer, show, Builder, VarLayer};
use super::{Connection, ConnectionKind, HostKeyPolicy, InventoryError};

impl Builder {
    fn var_error(&self, host: &str, var: &str, origin: usize, message: String) -> InventoryError {
        let path = if origin == usize::MAX {
            PathBuf::from("<implicit localhost>")
        } else {
            self.origin_path(origin)
        };
        InventoryError::invalid(&path, format!("host \"{host}\": {var}: {message}"))
    }

    /// A string connection variable, `{{ var }}` references expanded; the last alias set wins.
    fn conn_string(
        &self,
        host: &str,
        vars: &VarLayer,
        names: &[&'static str],
    ) -> Result<Option<(String, usize, &'static str)>, InventoryError> {
        let Some((name, value, origin)) = pick(vars, names) else {
            return Ok(None);
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(self.var_error(
                    host,
                    name,
                    origin,
                    format!("expected a string, got {}", show(other)),
                ))
            }
        };
        let text = render_simple(&text, vars, host, 0)
            .map_err(|message| self.var_error(host, name, origin, message))?;
        Ok(Some((text, origin, name)))
    }

    pub(super) fn connection(
        &self,
        host: &str,
        vars: &VarLayer,
    ) -> Result<(Connection, JumpSpec), InventoryError> {
        let kind = match self.conn_string(host, vars, &["ansible_connection"])? {
            None => ConnectionKind::Ssh,
            Some((text, origin, name)) => match text.as_str() {
                "ssh" | "smart" | "paramiko" | "paramiko_ssh" => ConnectionKind::Ssh,
                "local" => ConnectionKind::Local,
                other => {
                    return Err(self.var_error(
                        host,
                        name,
                        origin,
                        format!("unsupported connection \"{other}\" (expected ssh or local)"),
                    ))
                }
            },
        };
        let address = match self.conn_string(host, vars, &["ansible_host", "ansible_ssh_host"])? {
            Some((text, origin, name)) if text.trim().is_empty() => {
                return Err(self.var_error(host, name, origin, "empty address".into()))
            }
            Some((text, _, _)) => text,
            None => host.to_string(),
        };
        let port = match pick(vars, &["ansible_port", "ansible_ssh_port"]) {
            None => 22,
            Some((name, value, origin)) => as_port(value).ok_or_else(|| {
                self.var_error(
                    host,
                    name,
                    origin,
                    format!("expected a port number (1-65535), got {}", show(value)),
                )
            })?,
        };
        let user = match self.conn_string(host, vars, &["ansible_user", "ansible_ssh_user"])? {
            Some((text, origin, name)) if text.is_empty() => {
                return Err(self.var_error(host, name, origin, "empty user".into()))
            }
            Some((text, _, _)) => text,
            None => "root".to_string(),
        };
        let key_file = self
            .conn_string(
                host,
                vars,
                &["ansible_private_key_file", "ansible_ssh_private_key_file"],
            )?
            .filter(|(text, _, _)| !text.is_empty())
            .map(|(text, _, _)| expand_tilde(&text));
        let become_ = match pick(vars, &["ansible_become"]) {
            None => false,
            Some((name, value, origin)) => ansible_bool(value).ok_or_else(|| {
                self.var_error(
                    host,
                    name,
                    origin,
                    format!("expected a boolean, got {}", show(value)),
                )
            })?,
        };
        let host_key = self.host_key_policy(host, vars)?;
        let known_hosts_file = self.known_hosts_file(host, vars)?;
        let jump = if kind == ConnectionKind::Local {
            JumpSpec::Direct
        } else {
            self.jump_spec(host, vars)?
        };
        Ok((
            Connection {
                kind,
                address,
                port,
                user,
                key_file,
                jump: Vec::new(),
                host_key,
                known_hosts_file,
                become_,
            },
            jump,
        ))
    }

    fn host_key_policy(
        &self,
        host: &str,
        vars: &VarLayer,
    ) -> Result<HostKeyPolicy, InventoryError> {
        let fingerprint = match self.conn_string(host, vars, &["remedy_host_key_fingerprint"])? {
            None => None,
            Some((text, origin, name)) => {
                let body = text.strip_prefix("SHA256:").unwrap_or("");
                let valid = !body.is_empty()
                    && body
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
                if !valid {
                    return Err(self.var_error(
                        host,
                        name,
                        origin,
                        format!(
                            "expected an OpenSSH SHA256 fingerprint (\"SHA256:...\", as printed \
                             by ssh-keygen -lf), got \"{text}\""
                        ),
                    ));
                }
                Some(text)
            }
        };
        let policy = self.conn_string(host, vars, &["remedy_host_key_policy"])?;
        match policy {
            // A fingerprint alone pins the key.
            None => Ok(fingerprint.map_or(HostKeyPolicy::Strict, HostKeyPolicy::Pinned)),
            Some((text, origin, name)) => match text.as_str() {
                "strict" => Ok(HostKeyPolicy::Strict),
                "accept-new" => Ok(HostKeyPolicy::AcceptNew),
                "pinned" => fingerprint.map(HostKeyPolicy::Pinned).ok_or_else(|| {
                    self.var_error(
                        host,
                        name,
                        origin,
                        "pinned needs remedy_host_key_fingerprint (\"SHA256:...\")".into(),
                    )
                }),
                other => Err(self.var_error(
                    host,
                    name,
                    origin,
                    format!("unknown policy \"{other}\" (expected strict, accept-new, pinned)"),
                )),
            },
        }
    }

    /// `remedy_known_hosts_file`: `~` expanded; a relative path is taken from the directory of
    /// the inventory file that set it, so the inventory works whatever the current directory.
    fn known_hosts_file(
        &self,
        host: &str,
        vars: &VarLayer,
    ) -> Result<Option<PathBuf>, InventoryError> {
        let Some((text, origin, name)) =
            self.conn_string(host, vars, &["remedy_known_hosts_file"])?
        else {
            return Ok(None);
        };
        if text.trim().is_empty() {
            return Err(self.var_error(host, name, origin, "empty path".into()));
        }
        let path = expand_tilde(text.trim());
        if path.is_absolute() || origin == usize::MAX {
            return Ok(Some(path));
        }
        let base = self
            .origin_path(origin)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Ok(Some(base.join(path)))
    }

    fn jump_spec(&self, host: &str, vars: &VarLayer) -> Result<JumpSpec, InventoryError> {
        if let Some((name, value, origin)) = pick(vars, &["remedy_jump"]) {
            return match value {
                Value::String(target) if target.is_empty() => Ok(JumpSpec::Direct),
                Value::String(target) => {
                    let target = render_simple(target, vars, host, 0)
                        .map_err(|message| self.var_error(host, name, origin, message))?;
                    Ok(JumpSpec::Host { target, origin })
                }
                other => Err(self.var_error(
                    host,
                    name,
                    origin,
                    format!("expected an inventory host name, got {}", show(other)),
                )),
            };
        }
        // As ssh sees them: ansible_ssh_args, then common args, then extra args; the first
        // ProxyJump (-J) or ProxyCommand wins, as in OpenSSH.
        for var in [
            "ansible_ssh_args",
            "ansible_ssh_common_args",
            "ansible_ssh_extra_args",
        ] {
            let Some((text, origin, name)) = self.conn_string(host, vars, &[var])? else {
                continue;
            };
            let words = shell_words(&text)
                .map_err(|message| self.var_error(host, name, origin, message))?;
            match proxy_option(&words) {
                Proxy::None => {}
                Proxy::Jump(chain) => {
                    if chain.eq_ignore_ascii_case("none") {
                        return Ok(JumpSpec::Direct);
                    }
                    let hops: Vec<String> =
                        chain.split(',').map(|h| h.trim().to_string()).collect();
                    if hops.iter().any(String::is_empty) {
                        return Err(self.var_error(
                            host,
                            name,
                            origin,
                            format!("empty hop in ProxyJump \"{chain}\""),
                        ));
                    }
                    return Ok(JumpSpec::Chain(hops));
                }
                Proxy::Command(command) => {
                    if command.eq_ignore_ascii_case("none") {
                        return Ok(JumpSpec::Direct);
                    }
                    return Err(self.var_error(
                        host,
                        name,
                        origin,
                        "ProxyCommand is not supported; use -o ProxyJump=HOST, or set \
                         remedy_jump to an inventory host"
                            .into(),
                    ));
                }
            }
        }
        Ok(JumpSpec::Direct)
    }

    /// Expands `remedy_jump` chains (the jump host's own chain comes first), refusing unknown
    /// hosts, local hosts and cycles.
    pub(super) fn resolve_jumps(
        &self,
        specs: &[JumpSpec],
        conns: &[Connection],
    ) -> Result<Vec<Vec<String>>, InventoryError> {
        let mut memo: Vec<Option<Vec<String>>> = vec![None; specs.len()];
        for start in 0..specs.len() {
            self.jump_chain(start, specs, conns, &mut memo, &mut Vec::new())?;
        }
        Ok(memo.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn jump_chain(
        &self,
        index: usize,
        specs: &[JumpSpec],
        conns: &[Connection],
        memo: &mut Vec<Option<Vec<String>>>,
        stack: &mut Vec<usize>,
    ) -> Result<Vec<String>, InventoryError> {
        if let Some(Some(chain)) = memo.get(index) {
            return Ok(chain.clone());
        }
        let name = self
            .hosts
            .get(index)
            .map(|h| h.name.clone())
            .unwrap_or_default();
        let chain = match specs.get(index) {
            None | Some(JumpSpec::Direct) => Vec::new(),
            Some(JumpSpec::Chain(hops)) => hops.clone(),
            Some(JumpSpec::Host { target, origin }) => {
                let origin = *origin;
                let Some(&target_index) = self.host_index.get(target) else {
                    return Err(self.var_error(
                        &name,
                        "remedy_jump",
                        origin,
                        format!("unknown host \"{target}\" (not in the inventory)"),
                    ));
                };
                if let Some(at) = stack.iter().position(|&i| i == target_index) {
                    let mut cycle: Vec<&str> = stack[at..]
                        .iter()
                        .filter_map(|&i| self.hosts.get(i).map(|h| h.name.as_str()))
                        .collect();
                    cycle.push(&name);
                    cycle.push(target);
                    return Err(self.var_error(
                        &name,
                        "remedy_jump",
                        origin,
                        format!("jump cycle: {}", cycle.join(" -> ")),
                    ));
                }
                if target_index == index {
                    return Err(self.var_error(
                        &name,
                        "remedy_jump",
                        origin,
                        format!(
                            "jump cycle: {name} -> {name} (set remedy_jump: ~ on \"{name}\" to \
                             connect to it directly)"
                        ),
                    ));
                }
                if conns.get(target_index).map(|c| &c.kind) == Some(&ConnectionKind::Local) {
                    return Err(self.var_error(
                        &name,
                        "remedy_jump",
                        origin,
                        format!("jump host \"{target}\" has a local connection"),
                    ));
                }
                stack.push(index);
                let mut chain = self.jump_chain(target_index, specs, conns, memo, stack)?;
                stack.pop();
                chain.push(target.clone());
                chain
            }
        };
        if let Some(slot) = memo.get_mut(index) {
            *slot = Some(chain.clone());
        }
        Ok(chain)
    }
}

pub(super) enum JumpSpec {
    Direct,
    /// `remedy_jump`: an inventory host.
    Host {
        target: String,
        origin: usize,
    },
    /// An SSH ProxyJump chain, as written.
    Chain(Vec<String>),
}

/// The value of the last of `names` that is set (not null), as Ansible resolves aliases.
fn pick<'a>(
    vars: &'a VarLayer,
    names: &[&'static str],
) -> Option<(&'static str, &'a Value, usize)> {
    names.iter().rev().find_map(|name| match vars.get(*name) {
        Some((value, origin)) if !value.is_null() => Some((*name, value, *origin)),
        _ => None,
    })
}

fn as_port(value: &Value) -> Option<u16> {
    as_integer(value)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&p| p > 0)
}

/// Ansible's boolean conversion.
fn ansible_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => {
            let x = n.as_f64()?;
            if x == 1.0 {
                Some(true)
            } else if x == 0.0 {
                Some(false)
            } else {
                None
            }
        }
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "on" | "1" | "true" | "t" => Some(true),
            "n" | "no" | "off" | "0" | "false" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Expands plain `{{ var }}` references (and `inventory_hostname`) in a connection variable.
fn render_simple(text: &str, vars: &VarLayer, host: &str, depth: u8) -> Result<String, String> {
    if !text.contains("{{") && !text.contains("{%") {
        return Ok(text.to_string());
    }
    if text.contains("{%") {
        return Err("template statements ({% %}) are not supported in connection variables".into());
    }
    if depth > 8 {
        return Err("variable references nest too deeply".into());
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("unterminated {{".into());
        };
        let expr = after[..end].trim();
        let is_ident = !expr.is_empty()
            && !expr.starts_with(|c: char| c.is_ascii_digit())
            && expr.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !is_ident {
            return Err(format!(
                "only plain {{{{ variable }}}} references are supported in connection \
                 variables, not {{{{ {expr} }}}}"
            ));
        }
        let value = match expr {
            "inventory_hostname" => host.to_string(),
            "inventory_hostname_short" => host.split('.').next().unwrap_or(host).to_string(),
            _ => match vars.get(expr) {
                Some((Value::String(s), _)) => render_simple(s, vars, host, depth + 1)?,
                Some((Value::Number(n), _)) => n.to_string(),
                Some((Value::Bool(b), _)) => b.to_string(),
                Some(_) => return Err(format!("variable \"{expr}\" is not a string")),
                None => return Err(format!("undefined variable \"{expr}\"")),
            },
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits an ssh argument string as a POSIX shell would (quotes and backslashes).
pub(super) fn shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

enum Proxy {
    None,
    Jump(String),
    Command(String),
}

/// The first ProxyJump (`-J`, `-o ProxyJump=`) or ProxyCommand in ssh arguments.
fn proxy_option(words: &[String]) -> Proxy {
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        let option = if word == "-J" {
            match iter.next() {
                Some(value) => return Proxy::Jump(value.clone()),
                None => continue,
            }
        } else if let Some(value) = word.strip_prefix("-J") {
            return Proxy::Jump(value.to_string());
        } else if word == "-o" {
            match iter.next() {
                Some(option) => option.as_str(),
                None => continue,
            }
        } else if let Some(option) = word.strip_prefix("-o") {
            option
        } else {
            continue;
        };
        let option = option.trim();
        let split = option
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(option.len());
        let (key, value) = option.split_at(split);
        let value = value
            .trim_start_matches(|c: char| c.is_whitespace())
            .trim_start_matches('=')
            .trim();
        if key.eq_ignore_ascii_case("proxyjump") {
            return Proxy::Jump(value.to_string());
        }
        if key.eq_ignore_ascii_case("proxycommand") {
            return Proxy::Command(value.to_string());
        }
    }
    Proxy::None
}
