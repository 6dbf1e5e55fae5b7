//! ansible-vault: reading files and `!vault` values Ansible users encrypt their secrets in, with
//! the passwords given as Ansible's CLI takes them (`--vault-password-file FILE`,
//! `--vault-id [label@]FILE`, or `$ANSIBLE_VAULT_PASSWORD_FILE`).
//!
//! The format (`$ANSIBLE_VAULT;1.1;AES256`, or `1.2` with a vault id label): the lines after the
//! header are the hex of `hex(salt) \n hex(hmac) \n hex(ciphertext)`; PBKDF2-HMAC-SHA256 over
//! the password and the 32-byte salt, 10000 rounds, gives 80 bytes: the AES-256 key, the
//! HMAC-SHA256 key and the 16-byte initial counter of AES-256-CTR; the HMAC covers the
//! ciphertext and is checked (in constant time) before anything is decrypted; the plaintext is
//! PKCS#7-padded.
//!
//! Owned here: the passwords of this process ([`use_passwords`]), decrypting ([`decrypt`]).
//! Not here: where vaulted text may appear (`vars` reads whole files, `yaml` reads `!vault`
//! values) and masking what was decrypted (the caller registers
//! [`super::Inventory::vault_values`] with its redactor).

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How every vaulted text starts.
pub(super) const HEADER: &str = "$ANSIBLE_VAULT;";
/// PBKDF2 rounds ansible-vault uses.
const ROUNDS: u32 = 10_000;
/// `$ANSIBLE_VAULT_PASSWORD_FILE`, read when no password was given on the command line.
pub const PASSWORD_FILE_ENV: &str = "ANSIBLE_VAULT_PASSWORD_FILE";

/// One vault password: its vault id label (`default` when given without one) and the bytes.
#[derive(Clone)]
pub struct VaultPassword {
    pub label: String,
    password: Vec<u8>,
    /// Where it came from, for messages.
    pub source: PathBuf,
}

impl std::fmt::Debug for VaultPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultPassword({}@{})", self.label, self.source.display())
    }
}

impl VaultPassword {
    /// Reads a password file as Ansible does: its content, surrounding whitespace removed.
    /// `spec` is `FILE` or `label@FILE` (a `--vault-id`).
    pub fn from_spec(spec: &str) -> Result<VaultPassword, String> {
        let (label, file) = match spec.split_once('@') {
            Some((label, file)) if !label.is_empty() && !file.is_empty() => (label, file),
            _ => ("default", spec),
        };
        if file == "prompt" {
            return Err(format!(
                "vault id {spec}: prompting for a vault password is not supported; give a \
                 password file"
            ));
        }
        let path = PathBuf::from(file);
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "vault password file {}: {}",
                path.display(),
                super::io_reason(&e)
            )
        })?;
        let text = String::from_utf8_lossy(&bytes);
        let password = text.trim().as_bytes().to_vec();
        if password.is_empty() {
            return Err(format!("vault password file {}: empty", path.display()));
        }
        Ok(VaultPassword {
            label: label.to_string(),
            password,
            source: path,
        })
    }
}

/// The passwords given to this process; `None` until [`use_passwords`].
static PASSWORDS: RwLock<Option<Vec<VaultPassword>>> = RwLock::new(None);

/// Sets the vault passwords every inventory this process loads is decrypted with.
pub fn use_passwords(passwords: Vec<VaultPassword>) {
    let mut slot = PASSWORDS.write().unwrap_or_else(|e| e.into_inner());
    *slot = Some(passwords);
}

/// The passwords given, and the one `$ANSIBLE_VAULT_PASSWORD_FILE` names (Ansible adds it to
/// those of the command line too).
fn passwords() -> Result<Vec<VaultPassword>, String> {
    let mut list = PASSWORDS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default();
    if let Ok(file) = std::env::var(PASSWORD_FILE_ENV) {
        if !file.is_empty() {
            list.push(VaultPassword::from_spec(&format!("default@{file}"))?);
        }
    }
    Ok(list)
}

/// Decrypts vaulted `text` (a whole file, or a `!vault` value) with this process's passwords.
/// Errors never contain the plaintext.
pub(super) fn decrypt(text: &str) -> Result<Vec<u8>, String> {
    decrypt_with(text, &passwords()?)
}

/// [`decrypt`] with the given passwords: those whose label matches the text's vault id first.
pub(super) fn decrypt_with(text: &str, passwords: &[VaultPassword]) -> Result<Vec<u8>, String> {
    let envelope = Envelope::parse(text)?;
    if passwords.is_empty() {
        return Err(
            "encrypted with ansible-vault, and no vault password was given (use \
             --vault-password-file FILE or --vault-id [LABEL@]FILE, or set \
             ANSIBLE_VAULT_PASSWORD_FILE)"
                .into(),
        );
    }
    let mut order: Vec<&VaultPassword> = passwords
        .iter()
        .filter(|p| envelope.label.as_deref() == Some(p.label.as_str()))
        .collect();
    order.extend(
        passwords
            .iter()
            .filter(|p| envelope.label.as_deref() != Some(p.label.as_str())),
    );
    for password in order {
        if let Some(plain) = envelope.open(&password.password)? {
            return Ok(plain);
        }
    }
    let ids: Vec<String> = passwords
        .iter()
        .map(|p| format!("{}@{}", p.label, p.source.display()))
        .collect();
    Err(format!(
        "cannot decrypt (ansible-vault{}): wrong vault password (tried {})",
        envelope
            .label
            .as_ref()
            .map(|l| format!(", vault id {l}"))
            .unwrap_or_default(),
        ids.join(", ")
    ))
}

/// Whether `text` is vaulted (a whole file).
pub(super) fn is_vaulted(text: &str) -> bool {
    text.trim_start().starts_with(HEADER)
}

/// The parts of a vaulted text.
struct Envelope {
    label: Option<String>,
    salt: Vec<u8>,
    mac: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl Envelope {
    fn parse(text: &str) -> Result<Envelope, String> {
        let mut lines = text.trim().lines();
        let header = lines.next().unwrap_or_default().trim();
        let fields: Vec<&str> = header.split(';').collect();
        let label = match fields.as_slice() {
            ["$ANSIBLE_VAULT", "1.1", "AES256"] => None,
            ["$ANSIBLE_VAULT", "1.2", "AES256", label] => Some(label.to_string()),
            ["$ANSIBLE_VAULT", version, cipher, ..] => {
                return Err(format!(
                    "ansible-vault format {version} with cipher {cipher} is not supported \
                     (1.1 and 1.2 with AES256 are)"
                ))
            }
            _ => return Err("not an ansible-vault text (bad header)".into()),
        };
        let body: String = lines.flat_map(|l| l.split_whitespace()).collect();
        let inner = unhex(&body).ok_or("ansible-vault text is damaged (not hex)")?;
        let inner = String::from_utf8(inner).map_err(|_| "ansible-vault text is damaged")?;
        let parts: Vec<&str> = inner.split('\n').map(str::trim).collect();
        let [salt, mac, ciphertext] = parts.as_slice() else {
            return Err("ansible-vault text is damaged (expected salt, hmac, ciphertext)".into());
        };
        let part = |p: &str| unhex(p).ok_or("ansible-vault text is damaged (not hex)");
        Ok(Envelope {
            label,
            salt: part(salt)?,
            mac: part(mac)?,
            ciphertext: part(ciphertext)?,
        })
    }

    /// The plaintext, or `None` when `password` is not the one (the HMAC does not match).
    fn open(&self, password: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let mut keys = [0u8; 80];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, &self.salt, ROUNDS, &mut keys);
        let (cipher_key, rest) = keys.split_at(32);
        let (mac_key, counter) = rest.split_at(32);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(mac_key)
            .map_err(|_| "ansible-vault: bad hmac key length")?;
        mac.update(&self.ciphertext);
        if mac.verify_slice(&self.mac).is_err() {
            return Ok(None);
        }
        let mut plain = self.ciphertext.clone();
        let mut cipher = ctr::Ctr128BE::<Aes256>::new_from_slices(cipher_key, counter)
            .map_err(|_| "ansible-vault: bad key length")?;
        cipher.apply_keystream(&mut plain);
        let pad = plain.last().copied().unwrap_or(0) as usize;
        let valid = (1..=16).contains(&pad)
            && pad <= plain.len()
            && plain[plain.len() - pad..]
                .iter()
                .all(|&b| b as usize == pad);
        if !valid {
            return Err("ansible-vault text is damaged (bad padding)".into());
        }
        plain.truncate(plain.len() - pad);
        Ok(Some(plain))
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Decrypts a whole vaulted file's text; `path` names it in errors.
pub(super) fn decrypt_file(path: &Path, text: &str) -> Result<String, super::InventoryError> {
    let plain = decrypt(text).map_err(|m| super::InventoryError::invalid(path, m))?;
    String::from_utf8(plain)
        .map_err(|_| super::InventoryError::invalid(path, "decrypted content is not valid utf-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixtures written by ansible-vault (ansible-core 2.19.14): see testdata/vault/README.md.
    const V11: &str = include_str!("testdata/vault/secrets-1.1.yml");
    const V12: &str = include_str!("testdata/vault/secrets-1.2.yml");
    const PLAIN: &str = include_str!("testdata/vault/secrets.plain.yml");

    fn password(label: &str, file: &str) -> VaultPassword {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/inventory/testdata/vault")
            .join(file);
        VaultPassword::from_spec(&format!("{label}@{}", path.display())).unwrap()
    }

    #[test]
    fn decrypts_files_written_by_ansible_vault() {
        let default = password("default", "password");
        let prod = password("prod", "prod.password");
        let plain = decrypt_with(V11, std::slice::from_ref(&default)).unwrap();
        assert_eq!(String::from_utf8(plain).unwrap(), PLAIN);
        // 1.2 with a vault id: the labelled password is tried first, any other after.
        let plain = decrypt_with(V12, &[default.clone(), prod.clone()]).unwrap();
        assert_eq!(String::from_utf8(plain).unwrap(), PLAIN);
        let plain = decrypt_with(V12, &[password("other", "prod.password")]).unwrap();
        assert_eq!(String::from_utf8(plain).unwrap(), PLAIN);
    }

    #[test]
    fn a_wrong_or_missing_password_says_so_without_the_plaintext() {
        let e = decrypt_with(V12, &[password("default", "password")]).unwrap_err();
        assert!(
            e.starts_with(
                "cannot decrypt (ansible-vault, vault id prod): wrong vault password (tried default@"
            ),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = decrypt_with(V11, &[]).unwrap_err();
        assert!(e.contains("no vault password was given"), "{e}");
    }

    #[test]
    fn a_tampered_text_is_refused_by_its_hmac() {
        // Flip one hex digit of the ciphertext's encoding: the HMAC no longer matches.
        let mut lines: Vec<String> = V11.lines().map(String::from).collect();
        let last = lines.len() - 2;
        let flipped: String = lines[last]
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i == 5 {
                    if c == '3' {
                        '4'
                    } else {
                        '3'
                    }
                } else {
                    c
                }
            })
            .collect();
        lines[last] = flipped;
        let e = decrypt_with(&lines.join("\n"), &[password("default", "password")]);
        assert!(e.is_err());
    }
}
