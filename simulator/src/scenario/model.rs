//! A scenario as data: the zone's parts as a scenario file names them ([`Scenario`], one
//! [`VpcSeed`] per VPC, [`GuestSeed`] guest-state overrides per machine), with their defaults.
//!
//! Below the zone, which builds itself from one (`zone/seed.rs`). Reading and checking files
//! is `load.rs`.

use std::collections::BTreeMap;

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
