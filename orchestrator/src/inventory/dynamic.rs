//! What the inventory declares about dynamic sources: the settings of the CloudStack inventory
//! source (`remedy_cloudstack_inventory` in `all`'s vars, read into a [`SourceSpec`] when the
//! inventory loads, so a mistake in it is reported with the file), and the naming rule for the
//! groups it generates ([`group_name`]), which templates (the `group_name` filter) and plan
//! checks use too.
//!
//! Not here: reading the zone from the API, generating the hosts and loading the files over them
//! (`cloudstack::inventory`, which sits above both the inventory and the transports).

use std::path::PathBuf;

use serde_json::{Map, Value};

/// The inventory variable (in `all.vars`) that declares this source.
pub const SOURCE_VAR: &str = "remedy_cloudstack_inventory";

/// How the controller reaches system VMs through their jump host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemVmAccess {
    /// A `direct-tcpip` channel on the jump host's connection, authenticating with a key the
    /// controller holds (`system_vm_key`).
    Tunnel { key: PathBuf },
    /// The jump host runs `ssh` itself, with its own key (the key never leaves it).
    JumpHostSsh,
}

/// The settings of the source (`remedy_cloudstack_inventory`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// Only this zone (by name); default: every zone.
    pub zone: Option<String>,
    pub system_vm_access: SystemVmAccess,
}

const SPEC_KEYS: [&str; 3] = ["zone", "system_vm_access", "system_vm_key"];

impl SourceSpec {
    /// Reads the variable's value; an error names the key at fault.
    pub fn from_value(value: &Value, base_dir: &std::path::Path) -> Result<SourceSpec, String> {
        let map = match value {
            Value::Object(m) => m,
            Value::Null => &Map::new(),
            _ => return Err(format!("{SOURCE_VAR}: expected a mapping")),
        };
        for key in map.keys() {
            if !SPEC_KEYS.contains(&key.as_str()) {
                return Err(format!(
                    "{SOURCE_VAR}.{key}: unknown key (known: {})",
                    SPEC_KEYS.join(", ")
                ));
            }
        }
        let text = |key: &str| -> Result<Option<String>, String> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
                Some(_) => Err(format!("{SOURCE_VAR}.{key}: expected a non-empty string")),
            }
        };
        let access = text("system_vm_access")?;
        let key = text("system_vm_key")?;
        let system_vm_access = match (access.as_deref(), key) {
            (Some("jump-host-ssh"), None) => SystemVmAccess::JumpHostSsh,
            (Some("jump-host-ssh"), Some(_)) => {
                return Err(format!(
                    "{SOURCE_VAR}.system_vm_key: not used with system_vm_access: jump-host-ssh \
                     (the jump host's own key is used)"
                ))
            }
            (Some("tunnel") | None, Some(k)) => SystemVmAccess::Tunnel {
                key: expand(&k, base_dir),
            },
            (Some("tunnel") | None, None) => {
                return Err(format!(
                    "{SOURCE_VAR}.system_vm_key: required with system_vm_access: tunnel (the \
                     default): a copy of the system VM key (id_rsa.cloud) on this machine; or \
                     set system_vm_access: jump-host-ssh"
                ))
            }
            (Some(other), _) => {
                return Err(format!(
                    "{SOURCE_VAR}.system_vm_access: {other:?} is not one of tunnel, jump-host-ssh"
                ))
            }
        };
        Ok(SourceSpec {
            zone: text("zone")?,
            system_vm_access,
        })
    }
}

fn expand(path: &str, base_dir: &std::path::Path) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/") {
        if let Some(home) = dirs::home_dir() {
            return home.join(rest);
        }
    }
    let p = PathBuf::from(path);
    if p.is_absolute() {
        p
    } else {
        base_dir.join(p)
    }
}

/// A group name from an API name: lower case, runs of anything but letters and digits
/// become one `_` (`VPC-Prod 1` -> `vpc_prod_1`).
pub fn group_name(prefix: &str, name: &str) -> String {
    let mut out = String::from(prefix);
    let mut gap = !prefix.is_empty();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if gap && !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            gap = false;
            out.push(c.to_ascii_lowercase());
        } else {
            gap = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn group_names_are_lower_snake_case() {
        assert_eq!(group_name("vpc_", "VPC-Prod 1"), "vpc_vpc_prod_1");
        assert_eq!(group_name("zone_", "Zone-1"), "zone_zone_1");
        assert_eq!(group_name("redundant_", "BACKUP"), "redundant_backup");
        assert_eq!(group_name("pod_", "  Pod  1 "), "pod_pod_1");
        assert_eq!(group_name("", "Öl Ä"), "l");
    }

    #[test]
    fn spec_settings_and_their_errors() {
        let base = std::path::Path::new("/inv");
        let spec = SourceSpec::from_value(
            &json!({"system_vm_key": "keys/id_rsa.cloud", "zone": "Z1"}),
            base,
        )
        .unwrap();
        assert_eq!(
            spec.system_vm_access,
            SystemVmAccess::Tunnel {
                key: PathBuf::from("/inv/keys/id_rsa.cloud")
            }
        );
        assert_eq!(spec.zone.as_deref(), Some("Z1"));
        let spec =
            SourceSpec::from_value(&json!({"system_vm_access": "jump-host-ssh"}), base).unwrap();
        assert_eq!(spec.system_vm_access, SystemVmAccess::JumpHostSsh);
        for (bad, needle) in [
            (json!({}), "system_vm_key: required"),
            (
                json!({"system_vm_access": "jump-host-ssh", "system_vm_key": "k"}),
                "not used",
            ),
            (
                json!({"system_vm_access": "magic", "system_vm_key": "k"}),
                "\"magic\" is not one of",
            ),
            (json!({"zones": "x"}), "zones: unknown key"),
            (json!("x"), "expected a mapping"),
        ] {
            let e = SourceSpec::from_value(&bad, base).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
