//! The chain of SSH hops that reaches a host: its jump hosts, outermost first, then itself.
//!
//! Owned here: parsing a `ProxyJump` entry (`[ssh://][user@]host[:port]`, `[v6addr]:port`),
//! resolving each jump entry to connection settings (an inventory host's own settings, else the
//! parsed entry with the target's user and key), and the key that identifies a hop's connection
//! in the pool (the whole chain up to it, so a hypervisor reached directly and the same
//! hypervisor used as a jump host share one connection).

use std::fmt;
use std::path::PathBuf;

use crate::inventory::{ConnectionKind, Host, HostKeyPolicy, Inventory};

/// A `ProxyJump` entry as written: `[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpSpec {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl JumpSpec {
    /// Parses `[ssh://][user@]host[:port]`; IPv6 addresses with a port are written `[addr]:port`.
    pub fn parse(spec: &str) -> Result<JumpSpec, String> {
        let bad = |why: &str| format!("bad jump host {spec:?}: {why}");
        let s = spec.trim();
        let s = s.strip_prefix("ssh://").unwrap_or(s).trim_end_matches('/');
        let (user, rest) = match s.rsplit_once('@') {
            Some(("", _)) => return Err(bad("empty user")),
            Some((u, r)) => (Some(u.to_string()), r),
            None => (None, s),
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (addr, after) = inner.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after {
                "" => (addr, None),
                p => (
                    addr,
                    Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
                ),
            }
        } else {
            match rest.split_once(':') {
                // More than one colon and no brackets: a bare IPv6 address.
                Some((_, p)) if p.contains(':') => (rest, None),
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port = port
            .map(|p| p.parse::<u16>().ok().filter(|&p| p != 0))
            .map(|p| p.ok_or_else(|| bad("port is not a number in 1-65535")))
            .transpose()?;
        Ok(JumpSpec {
            user,
            host: host.to_string(),
            port,
        })
    }
}

/// Everything needed to open one SSH connection of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The inventory host name, or the jump entry as written.
    pub label: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub key_file: Option<PathBuf>,
    pub host_key: HostKeyPolicy,
    /// The `known_hosts` file for this hop (`remedy_known_hosts_file`); `None`: the
    /// transport's default.
    pub known_hosts: Option<PathBuf>,
}

impl Hop {
    fn from_host(host: &Host) -> Hop {
        Hop {
            label: host.name.clone(),
            address: host.conn.address.clone(),
            port: host.conn.port,
            user: host.conn.user.clone(),
            key_file: host.conn.key_file.clone(),
            host_key: host.conn.host_key.clone(),
            known_hosts: host.conn.known_hosts_file.clone(),
        }
    }

    /// `label=user@address:port`, the identity of this hop's connection. The label is part
    /// of it so that two inventory names for one address get a connection each, with host
    /// key messages and connection counts under their own names.
    fn id(&self) -> String {
        format!(
            "{}={}@{}:{}",
            self.label, self.user, self.address, self.port
        )
    }
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.label, self.address, self.port)
    }
}

/// The hops reaching `host`, outermost jump first, `host` last.
pub fn chain(host: &Host, inventory: &Inventory) -> Result<Vec<Hop>, String> {
    let mut hops = host
        .conn
        .jump
        .iter()
        .map(|entry| jump_hop(entry, host, inventory))
        .collect::<Result<Vec<_>, _>>()?;
    hops.push(Hop::from_host(host));
    Ok(hops)
}

/// One jump entry: an inventory host (by name, or by the host part of `user@host:port`, with
/// the written user and port taking precedence), or else the entry itself with the target's
/// user and key. A jump host that is not in the inventory is checked against the target's
/// `known_hosts` file (`accept-new` if the target is `accept-new`; a target's pinned
/// fingerprint is not the jump host's, so a pinned target's jump host is checked strictly).
fn jump_hop(entry: &str, target: &Host, inventory: &Inventory) -> Result<Hop, String> {
    // Only SSH hosts count: `127.0.0.1` would otherwise find the implicit local host.
    let ssh_host = |name: &str| {
        inventory
            .host(name)
            .filter(|h| h.conn.kind == ConnectionKind::Ssh)
    };
    if let Some(h) = ssh_host(entry) {
        return Ok(Hop::from_host(h));
    }
    let spec = JumpSpec::parse(entry)?;
    if let Some(h) = ssh_host(&spec.host) {
        let mut hop = Hop::from_host(h);
        hop.label = entry.to_string();
        hop.user = spec.user.unwrap_or(hop.user);
        hop.port = spec.port.unwrap_or(hop.port);
        return Ok(hop);
    }
    Ok(Hop {
        label: entry.to_string(),
        address: spec.host,
        port: spec.port.unwrap_or(22),
        user: spec.user.unwrap_or_else(|| target.conn.user.clone()),
        key_file: target.conn.key_file.clone(),
        host_key: match target.conn.host_key {
            HostKeyPolicy::AcceptNew => HostKeyPolicy::AcceptNew,
            _ => HostKeyPolicy::Strict,
        },
        known_hosts: target.conn.known_hosts_file.clone(),
    })
}

/// The pool key of the last hop of `hops`: every hop's identity, outermost first, joined by
/// ` > `.
pub fn pool_key(hops: &[Hop]) -> String {
    hops.iter().map(Hop::id).collect::<Vec<_>>().join(" > ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(user: Option<&str>, host: &str, port: Option<u16>) -> JumpSpec {
        JumpSpec {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn parses_jump_specs() {
        assert_eq!(JumpSpec::parse("hv1").unwrap(), spec(None, "hv1", None));
        assert_eq!(
            JumpSpec::parse("admin@hv1:2222").unwrap(),
            spec(Some("admin"), "hv1", Some(2222))
        );
        assert_eq!(
            JumpSpec::parse("10.0.0.5:22").unwrap(),
            spec(None, "10.0.0.5", Some(22))
        );
        assert_eq!(
            JumpSpec::parse("ssh://root@[fd00::5]:3922").unwrap(),
            spec(Some("root"), "fd00::5", Some(3922))
        );
        assert_eq!(
            JumpSpec::parse("fd00::5").unwrap(),
            spec(None, "fd00::5", None)
        );
        assert_eq!(
            JumpSpec::parse("[fd00::5]").unwrap(),
            spec(None, "fd00::5", None)
        );
        for bad in ["", "@hv1", "hv1:x", "hv1:0", "hv1:70000", "[fd00::5", "u@"] {
            assert!(JumpSpec::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    const INVENTORY: &str = r#"
all:
  hosts:
    hv1:
      ansible_host: 10.0.0.1
      ansible_user: admin
      ansible_ssh_private_key_file: /keys/hv
      remedy_host_key_policy: accept-new
    vr1:
      ansible_host: 169.254.0.11
      ansible_port: 3922
      ansible_ssh_private_key_file: /keys/cloud
      remedy_jump: hv1
    vr2:
      ansible_host: 169.254.0.12
      ansible_port: 3922
      ansible_ssh_private_key_file: /keys/cloud
      ansible_ssh_common_args: "-J ops@bastion.example:2200,hv1"
"#;

    #[test]
    fn chains_use_inventory_settings_for_known_jump_hosts() {
        let inv = Inventory::from_str("inv.yml", INVENTORY).unwrap();
        let vr1 = inv.host("vr1").unwrap();
        let hops = chain(vr1, &inv).unwrap();
        assert_eq!(hops.len(), 2);
        assert_eq!(hops[0].label, "hv1");
        assert_eq!(hops[0].address, "10.0.0.1");
        assert_eq!(hops[0].user, "admin");
        assert_eq!(hops[0].key_file, Some(PathBuf::from("/keys/hv")));
        assert_eq!(hops[0].host_key, HostKeyPolicy::AcceptNew);
        assert_eq!(hops[1].address, "169.254.0.11");
        assert_eq!(hops[1].port, 3922);
        assert_eq!(
            pool_key(&hops),
            "hv1=admin@10.0.0.1:22 > vr1=root@169.254.0.11:3922"
        );
        // hv1 reached directly shares the jump connection's key.
        let hv1 = chain(inv.host("hv1").unwrap(), &inv).unwrap();
        assert_eq!(pool_key(&hv1), pool_key(&hops[..1]));
    }

    #[test]
    fn unknown_jump_hosts_take_the_targets_user_and_key() {
        let inv = Inventory::from_str("inv.yml", INVENTORY).unwrap();
        let vr2 = inv.host("vr2").unwrap();
        assert_eq!(vr2.conn.jump, ["ops@bastion.example:2200", "hv1"]);
        let hops = chain(vr2, &inv).unwrap();
        let bastion = &hops[0];
        assert_eq!(bastion.address, "bastion.example");
        assert_eq!(bastion.port, 2200);
        assert_eq!(bastion.user, "ops");
        assert_eq!(bastion.key_file, Some(PathBuf::from("/keys/cloud")));
        assert_eq!(bastion.host_key, HostKeyPolicy::Strict);
        assert_eq!(hops[1].label, "hv1");
        assert_eq!(hops[1].user, "admin");
    }

    /// Each hop checks its own host's `known_hosts` file; a jump host outside the inventory
    /// uses the target's.
    #[test]
    fn hops_carry_their_own_known_hosts_file() {
        let text = format!(
            "{INVENTORY}    vr3:\n      ansible_host: 169.254.0.13\n      remedy_jump: hv1\n      \
             remedy_known_hosts_file: /lab/known_hosts\n      \
             ansible_ssh_common_args: \"-J bastion.example\"\n"
        );
        let inv = Inventory::from_str("inv.yml", &text).unwrap();
        let hops = chain(inv.host("vr1").unwrap(), &inv).unwrap();
        assert_eq!(hops[0].known_hosts, None);
        assert_eq!(hops[1].known_hosts, None);
        let vr3 = inv.host("vr3").unwrap();
        let hops = chain(vr3, &inv).unwrap();
        let files: Vec<(&str, Option<PathBuf>)> = hops
            .iter()
            .map(|h| (h.label.as_str(), h.known_hosts.clone()))
            .collect();
        assert_eq!(
            files,
            [
                ("hv1", None),
                ("vr3", Some(PathBuf::from("/lab/known_hosts")))
            ]
        );
        let bastion = jump_hop("bastion.example", vr3, &inv).unwrap();
        assert_eq!(bastion.known_hosts, Some(PathBuf::from("/lab/known_hosts")));
    }

    #[test]
    fn spec_naming_an_inventory_host_keeps_its_settings() {
        let inv = Inventory::from_str("inv.yml", INVENTORY).unwrap();
        let vr1 = inv.host("vr1").unwrap();
        let hop = jump_hop("root@hv1:2022", vr1, &inv).unwrap();
        assert_eq!(hop.address, "10.0.0.1");
        assert_eq!(hop.user, "root");
        assert_eq!(hop.port, 2022);
        assert_eq!(hop.key_file, Some(PathBuf::from("/keys/hv")));
        let hop = jump_hop("jump.example", vr1, &inv).unwrap();
        assert_eq!(hop.address, "jump.example");
        assert_eq!(hop.user, "root");
        assert_eq!(hop.port, 22);
        // Not the implicit local host of the inventory.
        let hop = jump_hop("127.0.0.1:2222", vr1, &inv).unwrap();
        assert_eq!(hop.address, "127.0.0.1");
        assert_eq!(hop.key_file, Some(PathBuf::from("/keys/cloud")));
    }
}
