//! Host key verification: OpenSSH `known_hosts` files and pinned fingerprints.
//!
//! Owned here: parsing `known_hosts` (plain host patterns, comma lists, `[host]:port` for ports
//! other than 22, `*`/`?` wildcards and `!` negation, hashed `|1|salt|hash` entries, `@revoked`
//! lines; `@cert-authority` lines are ignored), deciding whether a presented key is acceptable
//! under a [`HostKeyPolicy`], recording a new host under `accept-new`, and SHA256 fingerprints in
//! the format `ssh-keygen -lf` prints.
//!
//! Not here: the SSH handshake itself (the session module calls [`verify`] from russh's
//! `check_server_key`).

use std::fmt;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use russh::keys::{Algorithm, PublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::inventory::HostKeyPolicy;

/// Serialises appends to `known_hosts` files from concurrent connections in this process.
static APPEND_LOCK: Mutex<()> = Mutex::new(());

/// `SHA256:<base64 without padding>` of the key's wire encoding, as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    let blob = key_blob(key);
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(&blob)))
}

/// The wire encoding of a public key (what the base64 column of `known_hosts` holds).
fn key_blob(key: &PublicKey) -> Vec<u8> {
    key.to_bytes().unwrap_or_default()
}

/// The name OpenSSH looks up for a host: `host` on port 22, `[host]:port` otherwise.
pub fn host_string(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    }
}

/// Which hosts one `known_hosts` line applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatcher {
    /// Comma-separated patterns, possibly negated with `!`.
    Patterns(Vec<String>),
    /// `|1|salt|hash`: HMAC-SHA1 of the host string keyed with the salt.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

impl HostMatcher {
    fn parse(field: &str) -> Option<HostMatcher> {
        if let Some(rest) = field.strip_prefix("|1|") {
            let (salt, hash) = rest.split_once('|')?;
            return Some(HostMatcher::Hashed {
                salt: STANDARD.decode(salt).ok()?,
                hash: STANDARD.decode(hash).ok()?,
            });
        }
        Some(HostMatcher::Patterns(
            field
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_ascii_lowercase)
                .collect(),
        ))
    }

    /// Whether the line applies to `name` (a [`host_string`]).
    fn matches(&self, name: &str) -> bool {
        match self {
            HostMatcher::Hashed { salt, hash } => {
                let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            HostMatcher::Patterns(patterns) => {
                let mut matched = false;
                for pattern in patterns {
                    match pattern.strip_prefix('!') {
                        // A matching negated pattern excludes the host whatever else matches.
                        Some(negated) if wildcard_match(negated, name) => return false,
                        Some(_) => {}
                        None => matched |= wildcard_match(pattern, name),
                    }
                }
                matched
            }
        }
    }
}

/// OpenSSH pattern matching: `*` is any run of characters, `?` exactly one.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Greedy matching with backtracking to the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug, Clone)]
struct Entry {
    /// 1-based line number, for messages.
    line: usize,
    marker: Marker,
    hosts: HostMatcher,
    algorithm: String,
    blob: Vec<u8>,
}

/// A parsed `known_hosts` file. Lines that cannot be parsed are skipped, as OpenSSH does.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

/// What `known_hosts` says about a presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A line for this host holds this key.
    Known,
    /// No line names this host.
    Unknown,
    /// Lines name this host, none with this key: `(line, fingerprint)` of each.
    Changed(Vec<(usize, String)>),
    /// The key is on a `@revoked` line.
    Revoked(usize),
}

impl KnownHosts {
    pub fn parse(text: &str) -> KnownHosts {
        let entries = text
            .lines()
            .enumerate()
            .filter_map(|(i, line)| parse_line(i + 1, line))
            .collect();
        KnownHosts { entries }
    }

    /// Reads a file; a missing file is an empty list.
    pub fn load(path: &Path) -> std::io::Result<KnownHosts> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(KnownHosts::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KnownHosts::default()),
            Err(e) => Err(e),
        }
    }

    /// Looks up `key` as presented by `host` on `port`.
    pub fn lookup(&self, host: &str, port: u16, key: &PublicKey) -> Lookup {
        let name = host_string(host, port);
        let blob = key_blob(key);
        // A revoked key is refused whatever host pattern its line carries.
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.blob == blob)
        {
            return Lookup::Revoked(e.line);
        }
        let mut others = Vec::new();
        for e in self
            .entries
            .iter()
            .filter(|e| e.marker == Marker::None && e.hosts.matches(&name))
        {
            if e.blob == blob {
                return Lookup::Known;
            }
            others.push((e.line, blob_fingerprint(&e.blob)));
        }
        if others.is_empty() {
            Lookup::Unknown
        } else {
            Lookup::Changed(others)
        }
    }

    /// The key algorithms recorded for this host, in file order (so a connection can ask the
    /// server for a key it can check, as OpenSSH does).
    pub fn algorithms_for(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let name = host_string(host, port);
        let mut out: Vec<Algorithm> = Vec::new();
        for e in self
            .entries
            .iter()
            .filter(|e| e.marker == Marker::None && e.hosts.matches(&name))
        {
            let Ok(alg) = Algorithm::new(&e.algorithm) else {
                continue;
            };
            if !out.contains(&alg) {
                out.push(alg);
            }
        }
        out
    }
}

fn blob_fingerprint(blob: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(blob)))
}

fn parse_line(line_no: usize, line: &str) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        m if m.starts_with('@') => return None,
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next()?;
    }
    let hosts = HostMatcher::parse(first)?;
    let algorithm = fields.next()?.to_string();
    let blob = STANDARD.decode(fields.next()?).ok()?;
    Some(Entry {
        line: line_no,
        marker,
        hosts,
        algorithm,
        blob,
    })
}

/// The host a key check is about, for messages and for `known_hosts` lookups.
#[derive(Debug, Clone)]
pub struct CheckTarget<'a> {
    /// The inventory name (or the jump spec as written).
    pub label: &'a str,
    /// The address as dialled (for a host behind a jump host: as the jump host dials it).
    pub address: &'a str,
    pub port: u16,
}

impl fmt::Display for CheckTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.label, self.address, self.port)
    }
}

/// What a successful check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// The key was already in `known_hosts`.
    Known,
    /// The key matched the pinned fingerprint.
    Pinned,
    /// An unknown host under `accept-new`: the key was appended to `known_hosts`.
    Recorded,
}

/// Decides whether `key`, presented by `target`, is acceptable under `policy`; appends it to
/// `known_hosts_path` for a new host under `accept-new`. The error is an operator-facing
/// sentence naming the host and both fingerprints.
pub fn verify(
    policy: &HostKeyPolicy,
    target: &CheckTarget<'_>,
    key: &PublicKey,
    known_hosts_path: &Path,
) -> Result<Accepted, String> {
    let presented = fingerprint(key);
    if let HostKeyPolicy::Pinned(pin) = policy {
        return if normalise_fingerprint(pin) == presented {
            Ok(Accepted::Pinned)
        } else {
            Err(format!(
                "host key for {target} does not match the pinned fingerprint: \
                 remedy_host_key_policy pins {}, the server presented {presented} — \
                 if the system VM was recreated, update the pin",
                normalise_fingerprint(pin)
            ))
        };
    }
    let known = KnownHosts::load(known_hosts_path)
        .map_err(|e| format!("cannot read {}: {e}", known_hosts_path.display()))?;
    match known.lookup(target.address, target.port, key) {
        Lookup::Known => Ok(Accepted::Known),
        Lookup::Revoked(line) => Err(format!(
            "host key for {target} is revoked ({}:{line}); refusing {presented}",
            known_hosts_path.display()
        )),
        Lookup::Changed(lines) => {
            let was = lines
                .iter()
                .map(|(line, fp)| format!("{fp} (line {line})"))
                .collect::<Vec<_>>()
                .join(", ");
            Err(format!(
                "host key for {target} changed: {} has {was}, the server presented {presented} — \
                 if the system VM was recreated, remove the old line (ssh-keygen -R '{}') \
                 or use remedy_host_key_policy: accept-new for this group",
                known_hosts_path.display(),
                host_string(target.address, target.port),
            ))
        }
        Lookup::Unknown => match policy {
            HostKeyPolicy::AcceptNew => {
                append(known_hosts_path, target.address, target.port, key).map_err(|e| {
                    format!(
                        "cannot record the host key of {target} in {}: {e}",
                        known_hosts_path.display()
                    )
                })?;
                Ok(Accepted::Recorded)
            }
            _ => Err(format!(
                "host key for {target} is not known: {} has no entry for {}, the server \
                 presented {presented} — add it (ssh-keyscan -p {} {} >> {}) after checking \
                 the fingerprint, or use remedy_host_key_policy: accept-new",
                known_hosts_path.display(),
                host_string(target.address, target.port),
                target.port,
                target.address,
                known_hosts_path.display(),
            )),
        },
    }
}

/// Accepts `SHA256:abc=`, `sha256:abc` and bare base64; returns `SHA256:abc`.
fn normalise_fingerprint(pin: &str) -> String {
    let pin = pin.trim();
    let body = match pin.split_once(':') {
        Some((alg, body)) if alg.eq_ignore_ascii_case("sha256") => body,
        _ => pin,
    };
    format!("SHA256:{}", body.trim_end_matches('='))
}

/// The `known_hosts` line recording `key` for `host`:`port`.
pub fn format_line(host: &str, port: u16, key: &PublicKey) -> String {
    format!(
        "{} {} {}",
        host_string(host, port),
        key.algorithm().as_str(),
        STANDARD.encode(key_blob(key))
    )
}

fn append(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    let _guard = APPEND_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let mut existing = Vec::new();
    file.read_to_end(&mut existing)?;
    let mut line = String::new();
    if existing.last().is_some_and(|&b| b != b'\n') {
        line.push('\n');
    }
    line.push_str(&format_line(host, port, key));
    line.push('\n');
    file.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with ssh-keygen; fingerprints as `ssh-keygen -lf` printed them.
    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP2dnTwqf8fMmLb7mjRCSYioHmRV0n/09esHrsWESNaz";
    const K1_FP: &str = "SHA256:7/BDeaifYgYrE7Pe2BdVxs4E8Wfjz+r1DjdkP/h4h7g";
    const K2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIdTDKc+ynZ7ZParAXnYxxDjwnFtxrNNDZnqqj6y1Dcu";
    const K2_FP: &str = "SHA256:8kYteut/E6kPsRP5Nrah5eMS67ekUfgYoWENgN85Z3s";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn fingerprint_matches_ssh_keygen() {
        assert_eq!(fingerprint(&key(K1)), K1_FP);
        assert_eq!(fingerprint(&key(K2)), K2_FP);
    }

    #[test]
    fn host_string_brackets_non_default_ports() {
        assert_eq!(host_string("VR1.example", 22), "vr1.example");
        assert_eq!(host_string("169.254.0.11", 3922), "[169.254.0.11]:3922");
    }

    #[test]
    fn plain_comma_list_and_port() {
        let kh = KnownHosts::parse(&format!(
            "# comment\n\nhv1.example.com,10.0.0.1 {K1}\n[10.0.0.2]:3922 {K1} a comment\n"
        ));
        assert_eq!(kh.lookup("hv1.example.com", 22, &key(K1)), Lookup::Known);
        assert_eq!(kh.lookup("HV1.Example.com", 22, &key(K1)), Lookup::Known);
        assert_eq!(kh.lookup("10.0.0.1", 22, &key(K1)), Lookup::Known);
        assert_eq!(kh.lookup("10.0.0.2", 3922, &key(K1)), Lookup::Known);
        // The same address on another port is another host.
        assert_eq!(kh.lookup("10.0.0.2", 22, &key(K1)), Lookup::Unknown);
        assert_eq!(kh.lookup("10.0.0.1", 3922, &key(K1)), Lookup::Unknown);
        assert_eq!(
            kh.lookup("10.0.0.1", 22, &key(K2)),
            Lookup::Changed(vec![(3, K1_FP.to_string())])
        );
    }

    #[test]
    fn hashed_entries_from_ssh_keygen_h() {
        // `ssh-keygen -H` of "host1.example.com,10.0.0.1 K1" and "[10.0.0.2]:3922 K1".
        let kh = KnownHosts::parse(&format!(
            "|1|g8uyff1Ook7RoG5DcyUr0/9u9f8=|9M5UTyiMQ+BhSjM21ZmBOy/j/dY= {K1}\n\
             |1|QvYRKFawpAAjF7FPyTssHPqTLpE=|EcwWIlTbhI1EFiY+5740uVZ/heM= {K1}\n\
             |1|HzdgrFSPOJtP9Ug4Tvbi12JPUhE=|DmAy/wttyaqbJl7tz50wqdQQlDo= {K1}\n"
        ));
        assert_eq!(kh.lookup("host1.example.com", 22, &key(K1)), Lookup::Known);
        assert_eq!(kh.lookup("10.0.0.1", 22, &key(K1)), Lookup::Known);
        assert_eq!(kh.lookup("10.0.0.2", 3922, &key(K1)), Lookup::Known);
        assert_eq!(kh.lookup("10.0.0.2", 22, &key(K1)), Lookup::Unknown);
        assert_eq!(
            kh.lookup("host2.example.com", 22, &key(K1)),
            Lookup::Unknown
        );
        assert!(matches!(
            kh.lookup("10.0.0.2", 3922, &key(K2)),
            Lookup::Changed(v) if v == vec![(3, K1_FP.to_string())]
        ));
    }

    #[test]
    fn wildcards_and_negation() {
        let kh = KnownHosts::parse(&format!(
            "*.pod1.example,!bad.pod1.example {K1}\n[169.254.?.*]:3922 {K1}\n"
        ));
        assert_eq!(kh.lookup("hv3.pod1.example", 22, &key(K1)), Lookup::Known);
        assert_eq!(kh.lookup("bad.pod1.example", 22, &key(K1)), Lookup::Unknown);
        assert_eq!(kh.lookup("pod1.example", 22, &key(K1)), Lookup::Unknown);
        assert_eq!(kh.lookup("169.254.3.200", 3922, &key(K1)), Lookup::Known);
        assert_eq!(kh.lookup("169.254.33.200", 3922, &key(K1)), Lookup::Unknown);
    }

    #[test]
    fn wildcard_matcher() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match("*.example", "x.y.example"));
        assert!(!wildcard_match("*.example", "example"));
        assert!(wildcard_match("a*", "a"));
    }

    #[test]
    fn revoked_refused_and_cert_authority_ignored() {
        let kh = KnownHosts::parse(&format!(
            "@cert-authority *.example {K2}\n@revoked * {K1}\nhv1 {K1}\n"
        ));
        assert_eq!(kh.lookup("hv1", 22, &key(K1)), Lookup::Revoked(2));
        // A CA line neither makes the host known nor makes another key a change.
        assert_eq!(kh.lookup("x.example", 22, &key(K2)), Lookup::Unknown);
    }

    #[test]
    fn algorithms_for_known_host() {
        let kh = KnownHosts::parse(&format!("hv1 {K1}\nhv1 {K2}\nhv2 ssh-rsa AAAA\n"));
        assert_eq!(kh.algorithms_for("hv1", 22), vec![Algorithm::Ed25519]);
        assert!(kh.algorithms_for("hv9", 22).is_empty());
    }

    #[test]
    fn pinned_fingerprints() {
        let t = CheckTarget {
            label: "vr1",
            address: "169.254.0.11",
            port: 3922,
        };
        let nowhere = Path::new("/nonexistent/known_hosts");
        for pin in [
            K1_FP,
            &format!("{K1_FP}="),
            &K1_FP.replace("SHA256", "sha256"),
        ] {
            let policy = HostKeyPolicy::Pinned(pin.to_string());
            assert_eq!(verify(&policy, &t, &key(K1), nowhere), Ok(Accepted::Pinned));
        }
        let err = verify(&HostKeyPolicy::Pinned(K1_FP.into()), &t, &key(K2), nowhere).unwrap_err();
        assert!(err.contains("vr1 (169.254.0.11:3922)"), "{err}");
        assert!(err.contains(K1_FP) && err.contains(K2_FP), "{err}");
    }

    #[test]
    fn strict_accept_new_and_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        let t = CheckTarget {
            label: "vr1",
            address: "169.254.0.11",
            port: 3922,
        };
        let err = verify(&HostKeyPolicy::Strict, &t, &key(K1), &path).unwrap_err();
        assert!(err.contains("not known") && err.contains(K1_FP), "{err}");
        assert!(!path.exists());

        assert_eq!(
            verify(&HostKeyPolicy::AcceptNew, &t, &key(K1), &path),
            Ok(Accepted::Recorded)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("[169.254.0.11]:3922 {K1}\n"));
        assert_eq!(
            verify(&HostKeyPolicy::Strict, &t, &key(K1), &path),
            Ok(Accepted::Known)
        );
        for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
            let err = verify(&policy, &t, &key(K2), &path).unwrap_err();
            assert!(
                err.starts_with("host key for vr1 (169.254.0.11:3922) changed"),
                "{err}"
            );
            assert!(err.contains(K1_FP) && err.contains(K2_FP), "{err}");
            assert!(err.contains("ssh-keygen -R '[169.254.0.11]:3922'"), "{err}");
        }
        // A file without a final newline still gets a line of its own.
        std::fs::write(&path, format!("hv1 {K2}")).unwrap();
        let t22 = CheckTarget {
            label: "hv2",
            address: "hv2",
            port: 22,
        };
        verify(&HostKeyPolicy::AcceptNew, &t22, &key(K1), &path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("hv1 {K2}\nhv2 {K1}\n")
        );
    }
}
