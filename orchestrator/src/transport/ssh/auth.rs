//! Public key authentication of one SSH connection.
//!
//! Owned here: the order in which identities are offered (the host's `key_file`, then the
//! ssh-agent's identities, then the default keys `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`),
//! loading private keys (decrypting them with the passphrase from the configured environment
//! variable), choosing the RSA signature hash (the best the server announces, falling back to
//! `ssh-rsa` for old system VMs), and a refusal message listing what was tried.
//!
//! Never in a message or a log line: key material or a passphrase. Only paths, key types and
//! fingerprints.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};

use super::known_hosts::fingerprint;

/// Where identities come from for one connection.
#[derive(Debug, Clone)]
pub(crate) struct Identities {
    /// The host's `ansible_ssh_private_key_file`.
    pub key_file: Option<PathBuf>,
    /// The agent's socket, when the agent is to be used.
    pub agent_socket: Option<PathBuf>,
    /// Default keys tried last, if they exist.
    pub default_keys: Vec<PathBuf>,
    /// The environment variable holding the passphrase of encrypted keys.
    pub passphrase_env: Option<String>,
}

/// `~/.ssh/id_ed25519`, `~/.ssh/id_ecdsa`, `~/.ssh/id_rsa` (existing or not; checked when used).
pub(crate) fn default_key_paths() -> Vec<PathBuf> {
    let Some(home) = dirs::home_dir() else {
        return Vec::new();
    };
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|name| home.join(".ssh").join(name))
        .collect()
}

/// A key loaded once per file for the whole process: a fleet run authenticates hundreds of
/// connections with the same key, and decoding it (for an encrypted key, the bcrypt KDF) is
/// the same work each time. The file's length and modification time are checked at every
/// use, so a key replaced during a long run (the daemon) is read again.
fn cached_key(path: &Path, passphrase_env: Option<&str>) -> Result<Arc<PrivateKey>, String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Stamp = (Option<std::time::SystemTime>, u64);
    type Keys = HashMap<PathBuf, (Stamp, Arc<PrivateKey>)>;
    static KEYS: OnceLock<Mutex<Keys>> = OnceLock::new();
    let stamp: Option<Stamp> = std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len()));
    let keys = KEYS.get_or_init(Default::default);
    if let Some(stamp) = stamp {
        let cache = keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, key)) = cache.get(path) {
            if *seen == stamp {
                return Ok(key.clone());
            }
        }
    }
    let key = Arc::new(load_key(path, passphrase_env)?);
    if let Some(stamp) = stamp {
        keys.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_path_buf(), (stamp, key.clone()));
    }
    Ok(key)
}

/// Loads a private key, decrypting it with the passphrase from `passphrase_env` when it is
/// encrypted. Errors name the file and, for an encrypted key, the variable.
pub(crate) fn load_key(path: &Path, passphrase_env: Option<&str>) -> Result<PrivateKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read key {}: {e}", path.display()))?;
    match russh::keys::decode_secret_key(&text, None) {
        Ok(key) => Ok(key),
        Err(e) if is_encrypted(&e, &text) => {
            let Some(var) = passphrase_env else {
                return Err(format!(
                    "key {} is encrypted and no passphrase variable is configured",
                    path.display()
                ));
            };
            let Ok(passphrase) = std::env::var(var) else {
                return Err(format!(
                    "key {} is encrypted: set its passphrase in the environment variable {var}",
                    path.display()
                ));
            };
            russh::keys::decode_secret_key(&text, Some(&passphrase)).map_err(|_| {
                format!(
                    "key {} could not be decrypted with the passphrase in {var} \
                     (wrong passphrase?)",
                    path.display()
                )
            })
        }
        Err(e) => Err(format!("cannot load key {}: {e}", path.display())),
    }
}

/// OpenSSH-format keys say so in the error; PEM keys (`BEGIN ENCRYPTED PRIVATE KEY`,
/// `Proc-Type: 4,ENCRYPTED`) only in their text.
fn is_encrypted(err: &russh::keys::Error, text: &str) -> bool {
    matches!(err, russh::keys::Error::KeyIsEncrypted) || text.contains("ENCRYPTED")
}

/// The RSA signature hashes to try with this server, best first: the best one `server-sig-algs`
/// announces (SHA-256 when the server announces nothing, as old OpenSSH does), then `ssh-rsa`
/// (SHA-1), which old system VMs may be the only one to accept.
async fn rsa_hashes<H: russh::client::Handler>(handle: &Handle<H>) -> Vec<Option<HashAlg>> {
    let best = match handle.best_supported_rsa_hash().await {
        Ok(Some(best)) => best,
        _ => Some(HashAlg::Sha256),
    };
    let mut hashes = vec![best];
    if best.is_some() {
        hashes.push(None);
    }
    hashes
}

fn hash_name(hash: Option<HashAlg>) -> &'static str {
    match hash {
        Some(HashAlg::Sha512) => "rsa-sha2-512",
        Some(HashAlg::Sha256) => "rsa-sha2-256",
        _ => "ssh-rsa",
    }
}

/// Offers identities in order until the server accepts one. Returns how it authenticated
/// (for the debug log), or a refusal naming everything that was tried.
pub(crate) async fn authenticate<H: russh::client::Handler>(
    handle: &mut Handle<H>,
    user: &str,
    ids: &Identities,
) -> Result<String, String> {
    let mut tried: Vec<String> = Vec::new();
    let mut rsa: Option<Vec<Option<HashAlg>>> = None;

    if let Some(path) = &ids.key_file {
        match cached_key(path, ids.passphrase_env.as_deref()) {
            Ok(key) => {
                if let Some(how) = offer_key(handle, user, key, path, &mut rsa).await? {
                    return Ok(how);
                }
                tried.push(format!("key {} (refused)", path.display()));
            }
            Err(e) => tried.push(e),
        }
    }

    if let Some(socket) = &ids.agent_socket {
        match offer_agent(handle, user, socket, &mut rsa).await? {
            AgentOutcome::Accepted(how) => return Ok(how),
            AgentOutcome::Refused(n) => tried.push(format!("agent: {n} keys (refused)")),
            AgentOutcome::Unavailable(e) => tried.push(format!("agent: {e}")),
        }
    }

    for path in &ids.default_keys {
        if ids.key_file.as_deref() == Some(path.as_path()) || !path.exists() {
            continue;
        }
        match cached_key(path, ids.passphrase_env.as_deref()) {
            Ok(key) => {
                if let Some(how) = offer_key(handle, user, key, path, &mut rsa).await? {
                    return Ok(how);
                }
                tried.push(format!("key {} (refused)", path.display()));
            }
            Err(e) => tried.push(e),
        }
    }

    if tried.is_empty() {
        return Err(format!(
            "no SSH identity to offer as {user}: no key file, no agent, no default key in ~/.ssh"
        ));
    }
    Err(format!(
        "authentication refused for user {user} (tried: {})",
        tried.join("; ")
    ))
}

/// `Ok(Some(how))` when accepted, `Ok(None)` when refused, `Err` when the connection failed.
async fn offer_key<H: russh::client::Handler>(
    handle: &mut Handle<H>,
    user: &str,
    key: Arc<PrivateKey>,
    path: &Path,
    rsa: &mut Option<Vec<Option<HashAlg>>>,
) -> Result<Option<String>, String> {
    let fp = fingerprint(key.public_key());
    let hashes = if key.algorithm().is_rsa() {
        if rsa.is_none() {
            *rsa = Some(rsa_hashes(handle).await);
        }
        rsa.clone().unwrap_or_default()
    } else {
        vec![None]
    };
    for hash in hashes {
        let alg = if key.algorithm().is_rsa() {
            hash_name(hash).to_string()
        } else {
            key.algorithm().as_str().to_string()
        };
        tracing::debug!(key = %path.display(), %fp, %alg, "offering key");
        let res = handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
            .await
            .map_err(|e| format!("connection failed during authentication: {e}"))?;
        if let AuthResult::Success = res {
            return Ok(Some(format!("key {} ({alg} {fp})", path.display())));
        }
    }
    Ok(None)
}

enum AgentOutcome {
    Accepted(String),
    Refused(usize),
    Unavailable(String),
}

async fn offer_agent<H: russh::client::Handler>(
    handle: &mut Handle<H>,
    user: &str,
    socket: &Path,
    rsa: &mut Option<Vec<Option<HashAlg>>>,
) -> Result<AgentOutcome, String> {
    let mut agent = match AgentClient::connect_uds(socket).await {
        Ok(a) => a,
        Err(e) => {
            return Ok(AgentOutcome::Unavailable(format!(
                "cannot connect to {}: {e}",
                socket.display()
            )))
        }
    };
    // Agent certificates are skipped: remedy authenticates with plain keys only.
    let keys: Vec<PublicKey> = match agent.request_identities().await {
        Ok(ids) => ids
            .into_iter()
            .filter_map(|id| match id {
                AgentIdentity::PublicKey { key, .. } => Some(key),
                AgentIdentity::Certificate { .. } => None,
            })
            .collect(),
        Err(e) => return Ok(AgentOutcome::Unavailable(format!("cannot list keys: {e}"))),
    };
    for key in &keys {
        let fp = fingerprint(key);
        let hashes = if key.algorithm().is_rsa() {
            if rsa.is_none() {
                *rsa = Some(rsa_hashes(handle).await);
            }
            rsa.clone().unwrap_or_default()
        } else {
            vec![None]
        };
        for hash in hashes {
            tracing::debug!(%fp, "offering agent key");
            match handle
                .authenticate_publickey_with(user, key.clone(), hash, &mut agent)
                .await
            {
                Ok(AuthResult::Success) => {
                    return Ok(AgentOutcome::Accepted(format!(
                        "agent key {} {fp}",
                        key.algorithm().as_str()
                    )))
                }
                Ok(AuthResult::Failure { .. }) => {}
                // The agent could not sign (e.g. a locked or removed key): try the next one.
                Err(russh::AgentAuthError::Key(e)) => {
                    tracing::debug!(%fp, error = %e, "agent could not sign");
                    break;
                }
                Err(russh::AgentAuthError::Send(_)) => {
                    return Err("connection failed during authentication".to_string())
                }
            }
        }
    }
    Ok(AgentOutcome::Refused(keys.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_passphrase_names_file_and_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_enc");
        // An OpenSSH key encrypted with passphrase "secret" (ssh-keygen -N secret).
        std::fs::write(&path, ENCRYPTED_ED25519).unwrap();
        let err = load_key(&path, Some("REMEDY_TEST_NO_SUCH_VAR_1")).unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("REMEDY_TEST_NO_SUCH_VAR_1"), "{err}");
        assert!(!err.contains("PRIVATE KEY"), "{err}");
        let err = load_key(&path, None).unwrap_err();
        assert!(err.contains("encrypted"), "{err}");
    }

    #[test]
    fn unreadable_key_is_named() {
        let err = load_key(Path::new("/nonexistent/id_x"), None).unwrap_err();
        assert!(err.contains("/nonexistent/id_x"), "{err}");
    }

    #[test]
    fn a_key_is_decoded_once_until_its_file_changes() {
        use russh::keys::ssh_key::LineEnding;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_ed25519");
        let write = |key: &PrivateKey, secs: u64| {
            std::fs::write(&path, key.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .unwrap();
        };
        let first = PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519).unwrap();
        let second = PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519).unwrap();
        write(&first, 1_000);
        let a = cached_key(&path, None).unwrap();
        let b = cached_key(&path, None).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the second use decodes nothing");
        assert_eq!(a.public_key(), first.public_key());
        // Replaced (same length, another time): read again.
        write(&second, 2_000);
        let c = cached_key(&path, None).unwrap();
        assert_eq!(c.public_key(), second.public_key());
        // Gone: an error naming the file, not the old key.
        std::fs::remove_file(&path).unwrap();
        let err = cached_key(&path, None).unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn rsa_hash_names() {
        assert_eq!(hash_name(Some(HashAlg::Sha512)), "rsa-sha2-512");
        assert_eq!(hash_name(None), "ssh-rsa");
    }

    const ENCRYPTED_ED25519: &str = include_str!("testdata/id_ed25519_encrypted");
}
