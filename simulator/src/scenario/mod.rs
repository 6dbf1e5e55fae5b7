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
//!
//! Two files, on either side of the zone: `model.rs` is the description as data (the types
//! above, which the zone's `seed` reads; it knows nothing of the zone), `load.rs` reads
//! scenario files and the shipped ones and checks each by building a zone from it once.

mod load;
mod model;

pub use load::ScenarioError;
pub use model::{
    CapacitySeed, ClusterSeed, FileSeed, GuestSeed, OfferingSeed, PastJobSeed, Scenario,
    TemplateSeed, VmSeed, VpcSeed,
};
