//! How a coordination backend is named: `--coordination URL` (or `$REMEDY_COORDINATION`).
//!
//! - absent, or `local`: per-target `flock` files in the state directory (one machine);
//! - `etcd://HOST:PORT[,HOST:PORT...][/PREFIX][?OPTIONS]`: an etcd cluster over plain HTTP/2;
//! - `etcds://...`: the same over TLS.
//!
//! Options: `ttl=10s` (the lease's time to live), `ca=FILE`, `cert=FILE`, `key=FILE` (TLS: the
//! cluster's CA, and a client certificate and key), `user=NAME` and `password=env:VAR` or
//! `password=file:PATH` (etcd's own auth). A password is given by reference only: an inline
//! `password=...` is refused, so that it never lands in a shell history, a process list or
//! a manifest. The prefix (default `/remedy/default`) keeps zones apart in a shared cluster:
//! give each zone its own (`etcd://h1:2379/remedy/zone-a`).

use std::path::PathBuf;
use std::time::Duration;

/// The environment variable that names the backend when `--coordination` is not given.
pub const ENV_VAR: &str = "REMEDY_COORDINATION";

/// The prefix when the URL names none.
pub const DEFAULT_PREFIX: &str = "/remedy/default";

/// The lease TTL when the URL names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// A parsed `--coordination` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Local,
    Etcd(EtcdSpec),
}

/// Where an etcd cluster is and how to talk to it (no secret in it: the password is a
/// reference, read when connecting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSpec {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub ttl: Duration,
    pub tls: bool,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<SecretRef>,
}

/// Where a secret is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl SecretRef {
    /// The secret's value (a file's trailing newline dropped).
    pub fn read(&self) -> Result<String, String> {
        match self {
            SecretRef::Env(var) => std::env::var(var)
                .map_err(|_| format!("the etcd password's variable ${var} is not set")),
            SecretRef::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("the etcd password file {}: {e}", p.display())),
        }
    }
}

impl Spec {
    /// Parses a `--coordination` value; the error says what is wrong and what is expected.
    pub fn parse(text: &str) -> Result<Spec, String> {
        let text = text.trim();
        if text.is_empty() || text == "local" {
            return Ok(Spec::Local);
        }
        let (tls, rest) = if let Some(r) = text.strip_prefix("etcds://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("etcd://") {
            (false, r)
        } else {
            return Err(format!(
                "--coordination {text:?}: expected `local`, `etcd://HOST:PORT[,HOST:PORT]/PREFIX` \
                 or `etcds://...` (TLS)"
            ));
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if hosts.contains('@') {
            return Err(
                "--coordination: credentials in the URL are refused; give `user=NAME` and \
                 `password=env:VAR` or `password=file:PATH` as options"
                    .into(),
            );
        }
        let mut endpoints = Vec::new();
        for h in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let Some((host, port)) = h.rsplit_once(':') else {
                return Err(format!(
                    "--coordination: endpoint {h:?} has no port (HOST:PORT)"
                ));
            };
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("--coordination: endpoint {h:?} is not HOST:PORT"));
            }
            let scheme = if tls { "https" } else { "http" };
            endpoints.push(format!("{scheme}://{h}"));
        }
        if endpoints.is_empty() {
            return Err("--coordination: no etcd endpoint given".into());
        }
        let prefix = path.trim_end_matches('/');
        let prefix = if prefix.is_empty() {
            DEFAULT_PREFIX.to_string()
        } else {
            prefix.to_string()
        };
        let mut spec = EtcdSpec {
            endpoints,
            prefix,
            ttl: DEFAULT_TTL,
            tls,
            ca: None,
            cert: None,
            key: None,
            user: None,
            password: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "ttl" => {
                    let ttl = humantime::parse_duration(v)
                        .map_err(|e| format!("--coordination: ttl={v}: {e}"))?;
                    if ttl < Duration::from_secs(2) || ttl.subsec_nanos() != 0 {
                        return Err(format!(
                            "--coordination: ttl={v}: give whole seconds, 2s at least"
                        ));
                    }
                    spec.ttl = ttl;
                }
                "ca" => spec.ca = Some(PathBuf::from(v)),
                "cert" => spec.cert = Some(PathBuf::from(v)),
                "key" => spec.key = Some(PathBuf::from(v)),
                "user" => spec.user = Some(v.to_string()),
                "password" => {
                    spec.password = Some(if let Some(var) = v.strip_prefix("env:") {
                        SecretRef::Env(var.to_string())
                    } else if let Some(p) = v.strip_prefix("file:") {
                        SecretRef::File(PathBuf::from(p))
                    } else {
                        return Err("--coordination: an inline password is refused; give \
                             `password=env:VAR` or `password=file:PATH`"
                            .into());
                    })
                }
                other => {
                    return Err(format!(
                        "--coordination: unknown option {other:?} (known: ttl, ca, cert, key, \
                         user, password)"
                    ))
                }
            }
        }
        if spec.user.is_some() != spec.password.is_some() {
            return Err("--coordination: `user` and `password` go together".into());
        }
        if spec.cert.is_some() != spec.key.is_some() {
            return Err("--coordination: `cert` and `key` go together".into());
        }
        if !tls && (spec.ca.is_some() || spec.cert.is_some()) {
            return Err("--coordination: `ca`, `cert` and `key` need TLS: use etcds://".into());
        }
        Ok(Spec::Etcd(spec))
    }
}

impl std::fmt::Display for EtcdSpec {
    /// The endpoints and prefix, for messages (no credentials).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.split_once("://").map_or(e.as_str(), |(_, h)| h))
            .collect();
        write!(f, "etcd at {} (prefix {})", hosts.join(","), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(text: &str) -> EtcdSpec {
        match Spec::parse(text).unwrap() {
            Spec::Etcd(e) => e,
            Spec::Local => panic!("local"),
        }
    }

    #[test]
    fn local_is_the_default() {
        assert_eq!(Spec::parse("").unwrap(), Spec::Local);
        assert_eq!(Spec::parse("local").unwrap(), Spec::Local);
    }

    #[test]
    fn endpoints_prefix_and_options() {
        let e = etcd("etcd://127.0.0.1:2379,h2:2379/remedy/zone-a/?ttl=4s");
        assert_eq!(e.endpoints, ["http://127.0.0.1:2379", "http://h2:2379"]);
        assert_eq!(e.prefix, "/remedy/zone-a");
        assert_eq!(e.ttl, Duration::from_secs(4));
        assert_eq!(
            e.to_string(),
            "etcd at 127.0.0.1:2379,h2:2379 (prefix /remedy/zone-a)"
        );
        let e = etcd(
            "etcds://h:2379?ca=/ca.pem&cert=/c.pem&key=/k.pem&user=remedy&password=env:ETCD_PW",
        );
        assert!(e.tls);
        assert_eq!(e.endpoints, ["https://h:2379"]);
        assert_eq!(e.prefix, DEFAULT_PREFIX);
        assert_eq!(e.password, Some(SecretRef::Env("ETCD_PW".into())));
    }

    #[test]
    fn secrets_are_references_only() {
        for bad in [
            "etcd://h:2379?user=u&password=hunter2",
            "etcd://u:hunter2@h:2379",
        ] {
            let e = Spec::parse(bad).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("refused"), "{e}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        for (bad, says) in [
            ("zk://h:1", "expected `local`"),
            ("etcd://h", "has no port"),
            ("etcd://", "no etcd endpoint"),
            ("etcd://h:1?tll=3s", "unknown option \"tll\""),
            ("etcd://h:1?ttl=500ms", "whole seconds"),
            ("etcd://h:1?user=u", "go together"),
            ("etcd://h:1?ca=/x", "need TLS"),
        ] {
            let e = Spec::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
