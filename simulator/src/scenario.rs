//! Scenario files: what a simulated zone looks like when it starts, and which faults it has.
//!
//! A scenario names the zone's parts compactly; the zone fills in ids (deterministic, derived
//! from names, so runs are reproducible), addresses and the fields CloudStack would show (see
//! the zone's `seed` module for numbering). Guest-state overrides (`guest:`) break things the
//! way the shipped failures do.
//!
//! ```yaml
//! name: ovs-port-missing
//! description: ...
//! guest_vlan: "1000-1999"        # the physical network's guest VLAN ranges ("" = none)
//! template_server: 10.20.0.15     # where the SSVM downloads templates from (the default)
//! hosts: [kvm01, kvm02]           # hypervisors (KVM), the default
//! host_states: { kvm02: Disconnected }
//! vpcs:                           # routers: 2 = a redundant pair (default); vms_per_tier: 1
//!   - { name: web-vpc, tiers: [web, db], routers: 2, vms_per_tier: 1 }
//!   - { name: app-vpc, tiers: [app], router_hosts: [kvm02] }   # routers' hypervisors, in turn
//! settings: { secstorage.allowed.internal.sites: 10.30.0.0/16 }   # default 10.20.0.0/16
//! guest:                          # per machine: r-930-VM, s-1-VM, web-vm1, kvm01, mgmt1, ...
//!   kvm01:
//!     links: { eth0: up }
//!     services: { openvswitch-switch: active }          # active | inactive | failed
//!     files: { /etc/motd: { mode: "0600", owner: root, group: root, content: "hi" } }
//!     absent: [/root/.ssh/id_rsa.cloud]
//!     ovs_missing_ports: { cloudbr1: [vnet3] }
//!     ovs_missing_flows: { cloudbr1: ["table=0,priority=100,in_port=vnet3,actions=NORMAL"] }
//! job_ms: 1500                    # async job duration unless faults say otherwise
//! faults:                        # see crate::faults
//!   fail_jobs: [restartVPC]
//!   ssh: [{ command: systemctl restart keepalived, host: r-930-VM, effect: fail }]
//! ```
//! Unknown keys are errors with file:line:column. A scenario is also built once when parsed:
//! a setting, host or machine that does not exist, or an override that removes something
//! absent, is an error too. Shipped scenarios live in `scenarios/*.yml` and are built in.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::faults::Faults;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub faults: Faults,
    /// The physical network's guest VLAN ranges (`a-b,c-d`), empty for none.
    #[serde(default)]
    pub guest_vlan: String,
    /// The IPv4 address of the internal template server the SSVM downloads from.
    #[serde(default = "default_template_server")]
    pub template_server: String,
    /// Hypervisor names.
    #[serde(default = "default_hosts")]
    pub hosts: Vec<String>,
    /// Hypervisors whose state is not `Up` (e.g. `Disconnected`), by name.
    #[serde(default)]
    pub host_states: BTreeMap<String, String>,
    #[serde(default)]
    pub vpcs: Vec<VpcSeed>,
    /// Global settings that differ from their defaults.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Guest-state overrides, per machine name.
    #[serde(default)]
    pub guest: BTreeMap<String, GuestSeed>,
    /// Async job duration in milliseconds when no fault says otherwise.
    #[serde(default)]
    pub job_ms: Option<u64>,
}

fn default_template_server() -> String {
    "10.20.0.15".into()
}

fn default_hosts() -> Vec<String> {
    vec!["kvm01".into(), "kvm02".into()]
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpcSeed {
    pub name: String,
    #[serde(default)]
    pub tiers: Vec<String>,
    /// How many routers (2 = a redundant pair).
    #[serde(default = "two")]
    pub routers: usize,
    /// The hypervisors its routers run on, by name, taken in turn (default: the zone's first
    /// hosts, one router each).
    #[serde(default)]
    pub router_hosts: Vec<String>,
    /// Guest VMs per tier.
    #[serde(default = "one")]
    pub vms_per_tier: usize,
}

fn two() -> usize {
    2
}

fn one() -> usize {
    1
}

/// Changes to one machine's guest state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSeed {
    /// Link name -> `up` | `down`.
    #[serde(default)]
    pub links: BTreeMap<String, String>,
    /// Service name -> `active` | `inactive` | `failed`.
    #[serde(default)]
    pub services: BTreeMap<String, String>,
    /// Files to create or change.
    #[serde(default)]
    pub files: BTreeMap<String, FileSeed>,
    /// Files that must not exist.
    #[serde(default)]
    pub absent: Vec<String>,
    /// OVS bridge -> ports to remove.
    #[serde(default)]
    pub ovs_missing_ports: BTreeMap<String, Vec<String>>,
    /// OVS bridge -> flows (as `ovs-ofctl add-flow` text) to remove.
    #[serde(default)]
    pub ovs_missing_flows: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSeed {
    /// Octal, as text: "0644".
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScenarioError(pub String);

const BUILTIN: [(&str, &str); 7] = [
    ("healthy", include_str!("../scenarios/healthy.yml")),
    (
        "vr-backup-loop",
        include_str!("../scenarios/vr-backup-loop.yml"),
    ),
    ("ssvm-broken", include_str!("../scenarios/ssvm-broken.yml")),
    (
        "dnsmasq-dead",
        include_str!("../scenarios/dnsmasq-dead.yml"),
    ),
    (
        "ovs-port-missing",
        include_str!("../scenarios/ovs-port-missing.yml"),
    ),
    (
        "catalina-perms",
        include_str!("../scenarios/catalina-perms.yml"),
    ),
    (
        "vr-keepalived-lost",
        include_str!("../scenarios/vr-keepalived-lost.yml"),
    ),
];

impl Scenario {
    /// The names of the scenarios shipped with the simulator.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// A shipped scenario by name.
    pub fn builtin(name: &str) -> Option<Scenario> {
        BUILTIN.iter().find(|(n, _)| *n == name).map(|(n, text)| {
            Scenario::parse(text, &format!("scenarios/{n}.yml"))
                .unwrap_or_else(|e| panic!("shipped scenario {n} is invalid: {e}"))
        })
    }

    /// A scenario file; errors name the file (and line when known).
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError(format!("{}: {e}", path.display())))?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Parses scenario text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = serde_yaml::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default();
            ScenarioError(format!("{origin}{at}: {e}"))
        })?;
        if s.name.trim().is_empty() {
            return Err(ScenarioError(format!("{origin}: name is empty")));
        }
        for (host, state) in &s.host_states {
            if !HOST_STATES.contains(&state.as_str()) {
                return Err(ScenarioError(format!(
                    "{origin}: host_states.{host}: expected one of {}",
                    HOST_STATES.join(", ")
                )));
            }
        }
        for (machine, g) in &s.guest {
            for (link, state) in &g.links {
                if state != "up" && state != "down" {
                    return Err(ScenarioError(format!(
                        "{origin}: guest.{machine}.links.{link}: expected up or down"
                    )));
                }
            }
            for (svc, state) in &g.services {
                if !["active", "inactive", "failed"].contains(&state.as_str()) {
                    return Err(ScenarioError(format!(
                        "{origin}: guest.{machine}.services.{svc}: expected active, inactive or failed"
                    )));
                }
            }
            for (path, f) in &g.files {
                if let Some(mode) = &f.mode {
                    if u32::from_str_radix(mode, 8).is_err() {
                        return Err(ScenarioError(format!(
                            "{origin}: guest.{machine}.files.{path}.mode: expected octal text such as \"0644\""
                        )));
                    }
                }
            }
        }
        crate::zone::Zone::try_new(&s).map_err(|e| ScenarioError(format!("{origin}: {e}")))?;
        Ok(s)
    }
}

/// Host states a scenario may give (`com.cloud.host.Status`).
const HOST_STATES: [&str; 6] = ["Up", "Down", "Disconnected", "Alert", "Connecting", "Error"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_parses() {
        for name in Scenario::builtin_names() {
            let s = Scenario::builtin(name).unwrap();
            assert_eq!(s.name, name);
            assert!(!s.description.is_empty(), "{name}");
        }
    }

    #[test]
    fn unknown_keys_are_errors_with_a_location() {
        let e = Scenario::parse("name: x\nvpc: []\n", "f.yml").unwrap_err();
        assert!(e.0.starts_with("f.yml:2:"), "{e}");
        assert!(e.0.contains("unknown field `vpc`"), "{e}");
        let e = Scenario::parse(
            "name: x\nguest: { r1: { links: { eth1: sideways } } }\n",
            "f.yml",
        )
        .unwrap_err();
        assert!(e.0.contains("guest.r1.links.eth1"), "{e}");
    }

    #[test]
    fn names_that_do_not_exist_are_errors() {
        for (text, want) in [
            (
                "name: x\nguest: { r-999-VM: { links: { eth1: up } } }\n",
                "no machine named r-999-VM",
            ),
            (
                "name: x\nsettings: { no.such: 1 }\n",
                "unknown setting no.such",
            ),
            ("name: x\nhost_states: { kvm09: Down }\n", "no host kvm09"),
            (
                "name: x\nvpcs: [{ name: v, router_hosts: [kvm01, kvm07] }]\n",
                "vpcs.v.router_hosts: no host kvm07",
            ),
            ("name: x\nguest_vlan: \"5\"\n", "guest_vlan"),
            (
                "name: x\nguest: { kvm01: { ovs_missing_ports: { cloudbr1: [vnet77] } } }\n",
                "has no port vnet77",
            ),
        ] {
            let e = Scenario::parse(text, "f.yml").unwrap_err();
            assert!(e.0.starts_with("f.yml: "), "{e}");
            assert!(e.0.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn routers_run_on_the_hypervisors_named() {
        let s = Scenario::parse(
            "name: x\nhosts: [kvm01, kvm02, kvm03]\n\
             vpcs: [{ name: a, tiers: [t] }, { name: b, tiers: [t], router_hosts: [kvm03] }]\n",
            "f.yml",
        )
        .unwrap();
        let zone = crate::zone::Zone::new(&s);
        let w = zone.world();
        let hosts_of = |vpc: &str| -> Vec<String> {
            let id = w.vpcs.iter().find(|v| v.name == vpc).unwrap().id.clone();
            w.vms
                .iter()
                .filter(|v| v.vpcid() == Some(id.as_str()))
                .map(|v| w.host(&v.hostid).unwrap().name.clone())
                .collect()
        };
        assert_eq!(hosts_of("a"), ["kvm01", "kvm02"]);
        assert_eq!(hosts_of("b"), ["kvm03", "kvm03"]);
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("cs-sim-scenario-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.yml");
        std::fs::write(&path, "name: bad\nvpcs:\n  - { name: v, tierz: [a] }\n").unwrap();
        let e = Scenario::load(&path).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.0.starts_with(&format!("{}:3:", path.display())), "{e}");
        assert!(e.0.contains("unknown field `tierz`"), "{e}");
    }
}
