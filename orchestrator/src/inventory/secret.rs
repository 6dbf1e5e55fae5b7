//! Secret references: the only form a password or an API secret may take in an inventory
//! (`{ env: NAME }` or `{ file: PATH }`), which variables must hold one, and reading the secret
//! itself ([`SecretRef::resolve`]), the one place a secret's value is read.
//!
//! Not here: refusing an inline secret as it is parsed (with its position: `yaml`) and
//! registering resolved values for redaction (the caller, from [`Inventory::secret_refs`]).
//!
//! [`Inventory::secret_refs`]: super::Inventory::secret_refs

use std::fmt;
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::{io_reason, InventoryError, SecretRef};

/// Variables whose value is a password: only references are accepted.
pub(super) const SECRET_VARS: [&str; 5] = [
    "ansible_password",
    "ansible_ssh_pass",
    "ansible_ssh_password",
    "ansible_become_password",
    "ansible_become_pass",
];

/// How a reference is written, for messages.
pub(super) const REF_FORMS: &str = "{ env: NAME } or { file: PATH }";

impl SecretRef {
    /// Reads the secret: the variable's value, or the file's content trimmed. Errors name the
    /// variable or the path, never a value.
    pub fn resolve(&self) -> Result<String, InventoryError> {
        match self {
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(value) if value.is_empty() => Err(InventoryError::Secret {
                    what: format!("env {name}"),
                    message: "environment variable is empty".into(),
                }),
                Ok(value) => Ok(value),
                Err(std::env::VarError::NotPresent) => Err(InventoryError::Secret {
                    what: format!("env {name}"),
                    message: "environment variable is not set".into(),
                }),
                Err(std::env::VarError::NotUnicode(_)) => Err(InventoryError::Secret {
                    what: format!("env {name}"),
                    message: "environment variable is not valid unicode".into(),
                }),
            },
            SecretRef::File(path) => {
                let what = format!("file {}", path.display());
                let text = std::fs::read(path).map_err(|err| InventoryError::Secret {
                    what: what.clone(),
                    message: format!("cannot read: {}", io_reason(&err)),
                })?;
                let text = String::from_utf8(text).map_err(|_| InventoryError::Secret {
                    what: what.clone(),
                    message: "content is not valid utf-8".into(),
                })?;
                let trimmed = text.trim();
                if trimmed.is_empty() {
                    return Err(InventoryError::Secret {
                        what,
                        message: "file is empty".into(),
                    });
                }
                Ok(trimmed.to_string())
            }
        }
    }

    /// The reference as written in YAML (`{ env: NAME }` / `{ file: PATH }`).
    pub(super) fn to_value(&self) -> Value {
        let mut map = Map::new();
        match self {
            SecretRef::Env(name) => map.insert("env".into(), Value::String(name.clone())),
            SecretRef::File(path) => map.insert(
                "file".into(),
                Value::String(path.to_string_lossy().into_owned()),
            ),
        };
        Value::Object(map)
    }

    /// Reads back a reference previously validated by the parser.
    pub(super) fn from_value(value: &Value) -> Option<SecretRef> {
        let map = value.as_object()?;
        if map.len() != 1 {
            return None;
        }
        match (map.get("env"), map.get("file")) {
            (Some(Value::String(name)), None) => Some(SecretRef::Env(name.clone())),
            (None, Some(Value::String(path))) => Some(SecretRef::File(PathBuf::from(path))),
            _ => None,
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env {name}"),
            SecretRef::File(path) => write!(f, "file {}", path.display()),
        }
    }
}
