//! What is inside a machine, as SSH would see it: links, systemd services, files and (on
//! hypervisors) Open vSwitch bridges. The API derives some fields from it (see the zone
//! module doc), so a change made here shows in the next API reply.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::scenario::GuestSeed;

/// A network link inside a machine (`ip link` / `ip addr`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub up: bool,
    /// Addresses with prefix length, e.g. `169.254.0.11/16`.
    pub addrs: Vec<String>,
}

/// A systemd unit's active state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Active,
    Inactive,
    Failed,
}

impl ServiceState {
    /// `active`, `inactive` or `failed`, as the scenario files write them.
    pub fn parse(text: &str) -> Option<ServiceState> {
        match text {
            "active" => Some(ServiceState::Active),
            "inactive" => Some(ServiceState::Inactive),
            "failed" => Some(ServiceState::Failed),
            _ => None,
        }
    }
}

/// A systemd service inside a machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub state: ServiceState,
    /// Started at boot (`systemctl enable`).
    pub enabled: bool,
}

/// A regular file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct File {
    /// Permission bits, e.g. `0o644`.
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub content: String,
    /// A gzip file's bytes (real gzip: `zcat` and `zgrep` decompress them); `content` is
    /// then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip: Option<Vec<u8>>,
}

/// An Open vSwitch bridge: its ports and its OpenFlow flows (as `ovs-ofctl dump-flows` text,
/// without counters).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bridge {
    pub ports: Vec<String>,
    pub flows: Vec<String>,
}

/// The guest state of one machine (router, system VM, guest VM, hypervisor, management server).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Guest {
    pub links: BTreeMap<String, Link>,
    pub services: BTreeMap<String, Service>,
    pub files: BTreeMap<String, File>,
    /// Open vSwitch bridges (hypervisors only).
    pub ovs: BTreeMap<String, Bridge>,
    /// Routes added with `ip route add`, per routing table (`main`, `Table_eth1`, ...), as
    /// `ip route show` prints them. Routes of the links' own subnets are not stored.
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
}

impl Guest {
    /// Whether link `name` exists and is up.
    pub fn link_up(&self, name: &str) -> bool {
        self.links.get(name).is_some_and(|l| l.up)
    }

    /// Sets a link up or down, creating it (without addresses) if needed.
    pub fn set_link(&mut self, name: &str, up: bool) {
        self.links
            .entry(name.to_string())
            .or_insert(Link {
                up,
                addrs: Vec::new(),
            })
            .up = up;
    }

    /// Creates or replaces a link with its addresses.
    pub fn put_link(&mut self, name: &str, up: bool, addrs: &[String]) {
        self.links.insert(
            name.to_string(),
            Link {
                up,
                addrs: addrs.to_vec(),
            },
        );
    }

    /// The state of a service; `None` when the unit does not exist.
    pub fn service(&self, name: &str) -> Option<ServiceState> {
        self.services.get(name).map(|s| s.state)
    }

    /// Whether a service exists and is active.
    pub fn active(&self, name: &str) -> bool {
        self.service(name) == Some(ServiceState::Active)
    }

    /// Sets a service's state, creating it (enabled) if needed.
    pub fn set_service(&mut self, name: &str, state: ServiceState) {
        self.services
            .entry(name.to_string())
            .or_insert(Service {
                state,
                enabled: true,
            })
            .state = state;
    }

    /// Whether a file exists.
    pub fn has_file(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// Creates or replaces a file; the group is the owner's.
    pub fn put_file(&mut self, path: &str, mode: u32, owner: &str, content: &str) {
        self.files.insert(
            path.to_string(),
            File {
                mode,
                owner: owner.to_string(),
                group: owner.to_string(),
                content: content.to_string(),
                gzip: None,
            },
        );
    }

    /// Creates or replaces a gzip file holding `text`, compressed for real.
    pub fn put_gzip(&mut self, path: &str, owner: &str, text: &str) {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(text.as_bytes()).expect("writing to memory");
        let bytes = enc.finish().expect("writing to memory");
        self.files.insert(
            path.to_string(),
            File {
                mode: 0o644,
                owner: owner.to_string(),
                group: owner.to_string(),
                content: String::new(),
                gzip: Some(bytes),
            },
        );
    }

    /// Adds a port (and its flow) to an OVS bridge, creating the bridge if needed.
    pub fn add_ovs_port(&mut self, bridge: &str, port: &str, flow: Option<String>) {
        let b = self.ovs.entry(bridge.to_string()).or_default();
        if !b.ports.iter().any(|p| p == port) {
            b.ports.push(port.to_string());
        }
        if let Some(flow) = flow {
            if !b.flows.contains(&flow) {
                b.flows.push(flow);
            }
        }
    }

    /// Applies a scenario's overrides. Fails (naming the item) when an override removes
    /// something that is not there, so a scenario cannot silently break nothing.
    pub fn apply(&mut self, seed: &GuestSeed) -> Result<(), String> {
        for (name, state) in &seed.links {
            self.set_link(name, state == "up");
        }
        for (name, state) in &seed.services {
            let state = ServiceState::parse(state)
                .ok_or_else(|| format!("services.{name}: unknown state {state:?}"))?;
            self.set_service(name, state);
        }
        for (path, f) in &seed.files {
            let entry = self.files.entry(path.clone()).or_insert(File {
                mode: 0o644,
                owner: "root".into(),
                group: "root".into(),
                content: String::new(),
                gzip: None,
            });
            if let Some(m) = &f.mode {
                entry.mode = u32::from_str_radix(m, 8)
                    .map_err(|_| format!("files.{path}.mode: {m:?} is not octal"))?;
            }
            if let Some(o) = &f.owner {
                entry.owner = o.clone();
            }
            if let Some(g) = &f.group {
                entry.group = g.clone();
            }
            if let Some(c) = &f.content {
                entry.content = c.clone();
            }
        }
        for path in &seed.absent {
            self.files
                .remove(path)
                .ok_or_else(|| format!("absent: {path} does not exist"))?;
        }
        for (bridge, ports) in &seed.ovs_missing_ports {
            let b = self
                .ovs
                .get_mut(bridge)
                .ok_or_else(|| format!("ovs_missing_ports: no bridge {bridge}"))?;
            for port in ports {
                let before = b.ports.len();
                b.ports.retain(|p| p != port);
                if b.ports.len() == before {
                    return Err(format!(
                        "ovs_missing_ports: bridge {bridge} has no port {port} (it has {})",
                        b.ports.join(", ")
                    ));
                }
            }
        }
        for (bridge, flows) in &seed.ovs_missing_flows {
            let b = self
                .ovs
                .get_mut(bridge)
                .ok_or_else(|| format!("ovs_missing_flows: no bridge {bridge}"))?;
            for flow in flows {
                let before = b.flows.len();
                b.flows.retain(|f| f != flow);
                if b.flows.len() == before {
                    return Err(format!(
                        "ovs_missing_flows: bridge {bridge} has no flow {flow:?}"
                    ));
                }
            }
        }
        Ok(())
    }
}
