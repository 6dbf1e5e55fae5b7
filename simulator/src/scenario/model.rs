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
    /// Clusters in order, each with its hosts by name (default: one cluster, `cluster1`,
    /// holding every host; hosts no cluster names join the first).
    #[serde(default)]
    pub clusters: Vec<ClusterSeed>,
    /// Host tags per host name.
    #[serde(default)]
    pub host_tags: BTreeMap<String, Vec<String>>,
    /// Capacity per host name (default: 16 CPUs at 2400 MHz, 65536 MiB).
    #[serde(default)]
    pub host_capacity: BTreeMap<String, CapacitySeed>,
    /// Service offerings besides the default `Small Instance`.
    #[serde(default)]
    pub offerings: Vec<OfferingSeed>,
    /// Templates besides the default one.
    #[serde(default)]
    pub templates: Vec<TemplateSeed>,
    /// Guest VMs placed explicitly, after the VPCs' `vms_per_tier` ones.
    #[serde(default)]
    pub vms: Vec<VmSeed>,
    /// How many management servers (`mgmt1`, `mgmt2`, ...; default 1).
    #[serde(default = "one")]
    pub management_servers: usize,
    /// Async jobs that ran before the zone starts, with their lines in the management
    /// servers' logs.
    #[serde(default)]
    pub past_jobs: Vec<PastJobSeed>,
}

/// A cluster and its hosts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSeed {
    pub name: String,
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// A host's CPUs, their speed (MHz) and its memory (MiB).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacitySeed {
    pub cpunumber: u32,
    pub cpuspeed: u64,
    pub memory: u64,
}

/// A service offering: CPUs, speed (MHz), memory (MiB) and host tags (all must be on a host).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferingSeed {
    pub name: String,
    #[serde(default = "one_u32")]
    pub cpunumber: u32,
    #[serde(default = "default_speed")]
    pub cpuspeed: u64,
    #[serde(default = "default_memory")]
    pub memory: u64,
    #[serde(default)]
    pub hosttags: Vec<String>,
}

/// A template and its template tag (a host must carry it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSeed {
    pub name: String,
    #[serde(default)]
    pub templatetag: String,
}

/// A guest VM placed on a host, with its offering, template and networks (VPC tier names; the
/// first holds its default NIC). `removed_nics` names networks whose NIC was removed with
/// removeNicFromVirtualMachine before the zone starts. `number` is its instance number
/// (`i-2-<number>-VM`), by default the next one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSeed {
    pub name: String,
    pub host: String,
    #[serde(default)]
    pub offering: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    pub networks: Vec<String>,
    #[serde(default)]
    pub removed_nics: Vec<String>,
    #[serde(default)]
    pub number: Option<u32>,
}

/// A job that ended before the zone started: `queryAsyncJobResult` and `listAsyncJobs` show
/// it, and the management server that ran it (`mgmt`, default the first) has its lines in
/// `management-server.log` (rotated and gzipped by day).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PastJobSeed {
    /// Its uuid (`jobid`).
    pub id: String,
    /// Its number in the logs (`job-733`).
    pub number: u64,
    /// The API command; `destroyVirtualMachine` and `stopVirtualMachine` are known.
    pub command: String,
    /// The guest VM it acted on, by name.
    pub vm: String,
    /// The host the VM ran on, by name, and its id in the management server's database as
    /// the logs show it.
    pub host: String,
    pub host_dbid: u64,
    /// When it was submitted and when it completed (RFC 3339).
    pub created: String,
    pub completed: String,
    #[serde(default = "default_resultcode")]
    pub resultcode: u16,
    pub errortext: String,
    #[serde(default)]
    pub mgmt: Option<String>,
}

fn one_u32() -> u32 {
    1
}

fn default_speed() -> u64 {
    500
}

fn default_memory() -> u64 {
    512
}

fn default_resultcode() -> u16 {
    530
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
